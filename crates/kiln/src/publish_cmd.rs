//! `kiln publish`, `kiln images` and `kiln lifecycle`: arguments to the
//! publish library's calls, its reports to text.
//!
//! The only place that reads the environment for publishing:
//! `KILN_REGISTRY_USER`/`KILN_REGISTRY_PASSWORD`, `DOCKER_CONFIG` (or
//! `~/.docker/config.json`) and `KILN_NOW` (a fixed clock, for tests).

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use kiln_build::CancelToken;
use kiln_publish::lifecycle::{self, Event, ObsoleteOptions, Reference};
use kiln_publish::{Client, ClientOptions, Credentials, Registries, UnitAction};

use crate::build_cmd::{open, selection};
use crate::cli::{
    ImagesArgs, LifecycleCommand, ObsoleteArgs, PermanentArgs, PruneArgs, PublishArgs, RefsArgs,
    RegistryArgs,
};
use crate::report::Style;
use crate::{Failure, Outcome};

/// A publish library error as the CLI reports it.
fn failure(e: &kiln_publish::Error) -> Failure {
    use kiln_publish::Error as E;
    let text = format!("error: {e}\n");
    match e {
        E::Connect { .. }
        | E::Unauthorized { .. }
        | E::Status { .. }
        | E::Protocol { .. }
        | E::Read { .. }
        | E::Artifact { .. } => Failure::Build(text),
        _ => Failure::Config(text),
    }
}

/// The clock: `KILN_NOW` (RFC 3339, for tests) or now.
fn now() -> Result<jiff::Timestamp, Failure> {
    match std::env::var("KILN_NOW") {
        Ok(t) if !t.is_empty() => t.parse().map_err(|e| {
            Failure::Config(format!(
                "error: KILN_NOW=`{t}` is not an RFC 3339 time such as 2026-12-07T10:00:00Z: {e}\n"
            ))
        }),
        _ => Ok(jiff::Timestamp::now()),
    }
}

/// Credentials from `$DOCKER_CONFIG/config.json` or
/// `~/.docker/config.json`: `auths.<host>.auth` (base64 `user:password`)
/// or `username`/`password`.
fn docker_credentials() -> BTreeMap<String, Credentials> {
    let path = std::env::var_os("DOCKER_CONFIG")
        .map(|d| std::path::PathBuf::from(d).join("config.json"))
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| std::path::PathBuf::from(h).join(".docker/config.json"))
        });
    let Some(json) = path
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
    else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for (host, entry) in json["auths"].as_object().into_iter().flatten() {
        let host = host
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let pair = entry["auth"]
            .as_str()
            .and_then(|a| base64::engine::general_purpose::STANDARD.decode(a).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned())))
            .or_else(|| {
                Some((
                    entry["username"].as_str()?.to_owned(),
                    entry["password"].as_str()?.to_owned(),
                ))
            });
        if let Some((user, password)) = pair {
            out.insert(host, Credentials { user, password });
        }
    }
    out
}

fn client_options(args: &RegistryArgs) -> ClientOptions {
    let credentials = match (
        std::env::var("KILN_REGISTRY_USER"),
        std::env::var("KILN_REGISTRY_PASSWORD"),
    ) {
        (Ok(user), Ok(password)) if !user.is_empty() => Some(Credentials { user, password }),
        _ => None,
    };
    ClientOptions {
        plain_http: args.plain_http,
        ca_file: args.ca_file.clone(),
        credentials,
        host_credentials: docker_credentials(),
        ..ClientOptions::default()
    }
}

fn short(digest: &str) -> String {
    let hex = digest.trim_start_matches("sha256:");
    format!("sha256:{}", &hex[..hex.len().min(12)])
}

pub fn run_publish(args: &PublishArgs, style: Style, cancel: &CancelToken) -> Outcome {
    let now = now()?;
    let selection = selection(&args.select);
    let (ws, plan) = open(
        &args.dir,
        args.fetch.cache_dir.as_deref(),
        &selection,
        style,
    )?;
    // Where every variant goes is checked before a long build, not after.
    kiln_publish::targets(&plan, &selection, args.registry.registry.as_deref())
        .map_err(|e| failure(&e))?;
    // Publishing implies building what is missing (cached layers and
    // artifacts are reused as they are).
    let report = crate::build_cmd::build_first(
        &ws,
        &plan,
        args.progress,
        args.fetch.offline,
        style,
        cancel,
    )?;
    let options = kiln_publish::PublishOptions {
        registry: args.registry.registry.clone(),
        client: ClientOptions {
            chunk_size: args.chunk_size,
            ..client_options(&args.registry)
        },
        now,
        revise: args.revise,
        dry_run: args.dry_run,
    };
    let registries = Registries::default();
    let published = kiln_publish::publish(
        &ws,
        &plan,
        &selection,
        &report.manifest,
        &options,
        &registries,
    )
    .map_err(|e| failure(&e))?;
    if args.json {
        return Ok(serde_json::to_string_pretty(&published).expect("serializable") + "\n");
    }
    let mut out = String::new();
    out.push_str(&format!(
        "{:<14} {:<24} {:<10} {:<5} {:<26} {}\n",
        "ACTION", "VARIANT", "FORMAT", "REV", "DIGEST", "TAGS"
    ));
    let mut counts = [0usize; 3];
    for u in &published.units {
        let word = match u.action {
            UnitAction::Pushed => {
                counts[0] += 1;
                "pushed"
            }
            UnitAction::UpToDate => {
                counts[1] += 1;
                "up to date"
            }
            UnitAction::WouldPush => {
                counts[2] += 1;
                "would push"
            }
        };
        out.push_str(&format!(
            "{:<14} {:<24} {:<10} {:<5} {:<26} {}\n",
            word,
            u.variant,
            u.format,
            format!("r{}", u.revision),
            u.digest.as_deref().map_or_else(|| "-".to_owned(), short),
            u.tags
                .iter()
                .map(|t| format!("{}:{t}", u.repository))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    for u in &published.units {
        for b in &u.blocks {
            out.push_str(&format!(
                "flist blocks of {} to {}: {} ({} sent, {} already there)\n",
                u.variant, b.route, b.blocks, b.uploaded, b.present
            ));
        }
    }
    out.push_str(&format!(
        "\n{} pushed, {} up to date{}; {} blobs uploaded ({}), {} mounted, {} already there\n",
        counts[0],
        counts[1],
        if counts[2] > 0 {
            format!(", {} would be pushed (dry run)", counts[2])
        } else {
            String::new()
        },
        published.blobs_uploaded,
        crate::store_cmd::mb(published.bytes_uploaded),
        published.blobs_mounted,
        published.blobs_present,
    ));
    Ok(out)
}

/// The clients of every repository the selected variants publish to.
fn tree_clients(
    dir: &std::path::Path,
    select: &crate::cli::SelectArgs,
    registry: &RegistryArgs,
    style: Style,
    registries: &Registries,
) -> Result<Vec<(Arc<Client>, String)>, Failure> {
    let selection = selection(select);
    let (_, plan) = open(dir, None, &selection, style)?;
    let options = client_options(registry);
    kiln_publish::targets(&plan, &selection, registry.registry.as_deref())
        .and_then(|targets| {
            targets
                .into_iter()
                .map(|(host, repo)| Ok((registries.client(&host, &options)?, repo)))
                .collect()
        })
        .map_err(|e| failure(&e))
}

fn day(t: Option<jiff::Timestamp>) -> String {
    t.map_or_else(
        || "-".to_owned(),
        |t| t.strftime("%Y-%m-%d %H:%M").to_string(),
    )
}

pub fn run_images(args: &ImagesArgs, style: Style) -> Outcome {
    let registries = Registries::default();
    let clients = tree_clients(&args.dir, &args.select, &args.registry, style, &registries)?;
    let rows = lifecycle::rows(&clients).map_err(|e| failure(&e))?;
    if args.json {
        return Ok(serde_json::to_string_pretty(&rows).expect("serializable") + "\n");
    }
    if rows.is_empty() {
        return Ok("no images published yet (kiln publish pushes them)\n".into());
    }
    let mut out = format!(
        "{:<34} {:<20} {:<8} {:<4} {:<20} {:<9} {:>9} {:<16} {:<16} {}\n",
        "REPOSITORY",
        "VARIANT",
        "FORMAT",
        "REV",
        "ID",
        "STATE",
        "SIZE",
        "PUBLISHED",
        "LAST USED",
        "TAGS"
    );
    for r in &rows {
        let p = &r.published;
        let state = match (r.lifecycle, r.state.delete_after) {
            ("obsolete", Some(d)) => format!("obsolete (delete after {})", d.strftime("%Y-%m-%d")),
            (w, _) => w.to_owned(),
        };
        out.push_str(&format!(
            "{:<34} {:<20} {:<8} {:<4} {:<20} {:<9} {:>9} {:<16} {:<16} {}\n",
            format!("{}/{}", r.host, p.repository),
            p.variant().unwrap_or_default(),
            p.format().unwrap_or_default(),
            format!("r{}", p.revision().unwrap_or(0)),
            p.id().unwrap_or_default(),
            state,
            crate::store_cmd::mb(p.size),
            day(p.published()),
            day(r.state.last_used),
            p.tags.join(" "),
        ));
    }
    Ok(out)
}

pub fn run_lifecycle(cmd: &LifecycleCommand, style: Style) -> Outcome {
    match cmd {
        LifecycleCommand::Used(args) => record(args, &[Event::Used]),
        LifecycleCommand::Permanent(PermanentArgs { refs, unset }) => record(
            refs,
            &[if *unset {
                Event::NotPermanent
            } else {
                Event::Permanent
            }],
        ),
        LifecycleCommand::Obsolete(args) => obsolete(args, style),
        LifecycleCommand::Prune(args) => prune(args, style),
    }
}

fn record(args: &RefsArgs, events: &[Event]) -> Outcome {
    let at = now()?;
    let registries = Registries::default();
    let options = client_options(&args.registry);
    // Every reference is checked before anything is recorded.
    let mut resolved = Vec::new();
    for r in &args.refs {
        let reference: Reference = r.parse().map_err(|e| failure(&e))?;
        let client = registries
            .client(&reference.host, &options)
            .map_err(|e| failure(&e))?;
        let subject = lifecycle::resolve(&client, &reference).map_err(|e| failure(&e))?;
        resolved.push((reference, client, subject));
    }
    let mut out = String::new();
    for (reference, client, subject) in resolved {
        for &event in events {
            lifecycle::record(&client, &reference.repository, &subject, event, at, None)
                .map_err(|e| failure(&e))?;
            let word = match event {
                Event::Used => "used",
                Event::Permanent => "permanent",
                Event::NotPermanent => "not permanent",
                Event::Obsolete => "obsolete",
            };
            out.push_str(&format!(
                "{reference} ({}): {word} at {at}\n",
                short(&subject.digest)
            ));
        }
    }
    Ok(out)
}

fn decisions(list: &[lifecycle::Decision], json: bool, none: &str) -> String {
    if json {
        return serde_json::to_string_pretty(list).expect("serializable") + "\n";
    }
    if list.is_empty() {
        return format!("{none}\n");
    }
    let mut out = format!(
        "{:<15} {:<20} {:<4} {:<40} {}\n",
        "ACTION", "VARIANT", "REV", "REASON", "IMAGE"
    );
    for d in list {
        out.push_str(&format!(
            "{:<15} {:<20} {:<4} {:<40} {} ({})\n",
            d.action,
            d.variant,
            format!("r{}", d.revision),
            d.reason,
            d.reference,
            d.tags.join(" ")
        ));
    }
    out
}

fn obsolete(args: &ObsoleteArgs, style: Style) -> Outcome {
    let now = now()?;
    let registries = Registries::default();
    let clients = tree_clients(&args.dir, &args.select, &args.registry, style, &registries)?;
    let list = lifecycle::obsolete(
        &clients,
        &ObsoleteOptions {
            older_than: args.older_than,
            unused_for: args.unused_for,
            max: args.max,
            grace: args.grace,
            now,
            dry_run: args.dry_run,
        },
    )
    .map_err(|e| failure(&e))?;
    Ok(decisions(
        &list,
        args.json,
        "no image qualifies as obsolete",
    ))
}

fn prune(args: &PruneArgs, style: Style) -> Outcome {
    let now = now()?;
    let registries = Registries::default();
    let clients = tree_clients(&args.dir, &args.select, &args.registry, style, &registries)?;
    let list = lifecycle::prune(&clients, now, args.dry_run).map_err(|e| failure(&e))?;
    let text = decisions(&list, args.json, "nothing to prune");
    if !args.json && list.iter().any(|d| d.action == "deleted") {
        return Ok(
            text + "blobs stay until the registry's garbage collection (docker-registry: `registry garbage-collect CONFIG`)\n"
        );
    }
    Ok(text)
}
