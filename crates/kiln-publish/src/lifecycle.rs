//! The image lifecycle: last used, permanent, obsolete, prune.
//!
//! State lives in the registry, beside each image, as referrer artifacts
//! of type [`LIFECYCLE_TYPE`](crate::LIFECYCLE_TYPE) whose annotations say
//! what happened and when (`dev.kiln.lifecycle.event`, `…at`,
//! `…delete-after`). An image's state is the fold of its events in time
//! order, so every machine reading the registry sees the same state, and
//! recording is an append (a new manifest), never an edit.
//!
//! The safety rules follow the CI image system's: never obsolete a
//! permanent image or the newest revision of a variant; at most `max` per
//! run, and nothing at all when more would qualify; prune deletes only
//! manifests whose deletion date has passed, and refuses permanent ones
//! even when they carry an older obsolete mark. Blobs are left to the
//! registry's own garbage collection.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::annotations as a;
use crate::catalog::Published;
use crate::client::{Client, MANIFEST};
use crate::error::Error;

/// What happened to an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Event {
    /// Something booted or pulled it.
    Used,
    /// Keep it forever.
    Permanent,
    /// `permanent --unset`.
    NotPermanent,
    /// Marked for deletion.
    Obsolete,
}

impl Event {
    fn word(self) -> &'static str {
        match self {
            Event::Used => "used",
            Event::Permanent => "permanent",
            Event::NotPermanent => "not-permanent",
            Event::Obsolete => "obsolete",
        }
    }
}

/// An image's lifecycle state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct State {
    /// The last recorded use.
    pub last_used: Option<jiff::Timestamp>,
    /// Kept forever.
    pub permanent: bool,
    /// Marked obsolete: when prune may delete it.
    pub delete_after: Option<jiff::Timestamp>,
    /// The event manifests (deleted with the image).
    #[serde(skip)]
    pub events: Vec<String>,
}

impl State {
    /// `active`, `permanent`, `obsolete`.
    #[must_use]
    pub fn word(&self) -> &'static str {
        if self.permanent {
            "permanent"
        } else if self.delete_after.is_some() {
            "obsolete"
        } else {
            "active"
        }
    }
}

/// The lifecycle state of `digest` in `repo`, and its other referrers.
pub fn state(client: &Client, repo: &str, digest: &str) -> Result<(State, Vec<String>), Error> {
    let mut events = Vec::new();
    let mut others = Vec::new();
    for d in client.referrers(repo, digest)? {
        let Some(ref_digest) = d["digest"].as_str().map(str::to_owned) else {
            continue;
        };
        if d["artifactType"].as_str() != Some(crate::LIFECYCLE_TYPE) {
            others.push(ref_digest);
            continue;
        }
        let ann = &d["annotations"];
        let at: Option<jiff::Timestamp> = ann[a::AT].as_str().and_then(|t| t.parse().ok());
        let event = ann[a::EVENT].as_str().map(str::to_owned);
        let delete_after: Option<jiff::Timestamp> =
            ann[a::DELETE_AFTER].as_str().and_then(|t| t.parse().ok());
        if let (Some(at), Some(event)) = (at, event) {
            events.push((at, event, delete_after, ref_digest));
        }
    }
    events.sort_by(|x, y| x.0.cmp(&y.0).then_with(|| x.3.cmp(&y.3)));
    let mut s = State::default();
    for (at, event, delete_after, d) in events {
        match event.as_str() {
            "used" => s.last_used = Some(s.last_used.map_or(at, |l| l.max(at))),
            "permanent" => s.permanent = true,
            "not-permanent" => s.permanent = false,
            "obsolete" => s.delete_after = delete_after,
            _ => {}
        }
        s.events.push(d);
    }
    Ok((s, others))
}

/// A manifest an event is recorded on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// Its digest.
    pub digest: String,
    /// Its size.
    pub size: u64,
    /// Its media type.
    pub media_type: String,
}

/// Records `event` on `subject` in `repo`.
pub fn record(
    client: &Client,
    repo: &str,
    subject: &Subject,
    event: Event,
    at: jiff::Timestamp,
    delete_after: Option<jiff::Timestamp>,
) -> Result<(), Error> {
    let mut ann = BTreeMap::new();
    ann.insert(a::EVENT.to_owned(), event.word().to_owned());
    ann.insert(a::AT.to_owned(), at.to_string());
    ann.insert(a::CREATED.to_owned(), at.to_string());
    if let Some(d) = delete_after {
        ann.insert(a::DELETE_AFTER.to_owned(), d.to_string());
    }
    let subject =
        json!({"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size});
    crate::push_referrer(client, repo, &subject, crate::LIFECYCLE_TYPE, &ann, None).map(|_| ())
}

/// `host/repository:tag` or `host/repository@sha256:…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The registry host.
    pub host: String,
    /// The repository.
    pub repository: String,
    /// A tag or a digest.
    pub reference: String,
}

impl std::str::FromStr for Reference {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |problem: &str| Error::Reference {
            reference: s.to_owned(),
            problem: problem.to_owned(),
        };
        let (host, rest) = s
            .split_once('/')
            .ok_or_else(|| bad("it names no registry (write `host[:port]/repository:tag`)"))?;
        let (repository, reference) = if let Some((r, d)) = rest.split_once('@') {
            if !d.starts_with("sha256:") || d.len() != 71 {
                return Err(bad("a digest is `sha256:` and 64 hex digits"));
            }
            (r, d)
        } else {
            let (r, t) = rest
                .rsplit_once(':')
                .filter(|(_, t)| !t.contains('/'))
                .ok_or_else(|| bad("it names no tag or digest (`…:tag` or `…@sha256:…`)"))?;
            crate::template::check_tag(t).map_err(|p| bad(&p))?;
            (r, t)
        };
        crate::template::check_repository(repository).map_err(|p| bad(&p))?;
        Ok(Reference {
            host: host.to_owned(),
            repository: repository.to_owned(),
            reference: reference.to_owned(),
        })
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sep = if self.reference.starts_with("sha256:") {
            '@'
        } else {
            ':'
        };
        write!(
            f,
            "{}/{}{sep}{}",
            self.host, self.repository, self.reference
        )
    }
}

/// One published image with its lifecycle state: a row of `kiln images`.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The registry host.
    pub host: String,
    /// The manifest.
    #[serde(flatten)]
    pub published: Published,
    /// Its lifecycle state.
    pub state: State,
    /// `active`, `permanent` or `obsolete`.
    pub lifecycle: &'static str,
    /// Its other referrers (manifest entry, SBOM), deleted with it.
    #[serde(skip)]
    pub referrers: Vec<String>,
    /// The client of its registry.
    #[serde(skip)]
    pub client: std::sync::Arc<Client>,
}

/// Every kiln image of `repos` (host, repository), with its state.
pub fn rows(clients: &[(std::sync::Arc<Client>, String)]) -> Result<Vec<Row>, Error> {
    let mut out = Vec::new();
    for (client, repo) in clients {
        for p in crate::catalog::read(client, repo)? {
            let (state, referrers) = state(client, repo, &p.digest)?;
            out.push(Row {
                host: client.host().to_owned(),
                lifecycle: state.word(),
                state,
                published: p,
                referrers,
                client: client.clone(),
            });
        }
    }
    Ok(out)
}

/// The limits of `kiln lifecycle obsolete`.
#[derive(Debug, Clone)]
pub struct ObsoleteOptions {
    /// Only images published longer ago than this.
    pub older_than: Duration,
    /// Only images not used for this long.
    pub unused_for: Duration,
    /// At most this many per run.
    pub max: usize,
    /// How long after marking prune may delete.
    pub grace: Duration,
    /// Now.
    pub now: jiff::Timestamp,
    /// List, mark nothing.
    pub dry_run: bool,
}

/// What `obsolete` or `prune` did with one image.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// `host/repository@digest`.
    pub reference: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its variant.
    pub variant: String,
    /// Its revision.
    pub revision: u32,
    /// `obsoleted`, `would-obsolete`, `deleted`, `would-delete`, `refused`.
    pub action: &'static str,
    /// Why (ages, the rule that kept it).
    pub reason: String,
    /// For obsolete marks: the deletion date.
    pub delete_after: Option<jiff::Timestamp>,
}

fn age(now: jiff::Timestamp, then: jiff::Timestamp) -> Duration {
    Duration::from_secs(u64::try_from((now - then).get_seconds()).unwrap_or(0))
}

fn days(d: Duration) -> String {
    format!("{}d", d.as_secs() / 86_400)
}

/// Marks images obsolete (see the module's rules).
pub fn obsolete(
    clients: &[(std::sync::Arc<Client>, String)],
    options: &ObsoleteOptions,
) -> Result<Vec<Decision>, Error> {
    let rows = rows(clients)?;
    // The newest revision of each variant's unit, per repository.
    let mut newest: BTreeMap<(String, String, String, String), u32> = BTreeMap::new();
    for r in &rows {
        let key = (
            r.host.clone(),
            r.published.repository.clone(),
            r.published.variant().unwrap_or_default().to_owned(),
            r.published.format().unwrap_or_default().to_owned(),
        );
        let rev = r.published.revision().unwrap_or(0);
        let e = newest.entry(key).or_insert(rev);
        *e = (*e).max(rev);
    }
    let mut qualifying = Vec::new();
    for r in &rows {
        let p = &r.published;
        let key = (
            r.host.clone(),
            p.repository.clone(),
            p.variant().unwrap_or_default().to_owned(),
            p.format().unwrap_or_default().to_owned(),
        );
        if r.state.permanent || r.state.delete_after.is_some() {
            continue;
        }
        if newest.get(&key) == Some(&p.revision().unwrap_or(0)) {
            continue;
        }
        let Some(published) = p.published() else {
            continue;
        };
        let old = age(options.now, published);
        let unused = age(
            options.now,
            r.state.last_used.unwrap_or(published).max(published),
        );
        if old < options.older_than || unused < options.unused_for {
            continue;
        }
        qualifying.push((r, old, unused));
    }
    if qualifying.len() > options.max {
        return Err(Error::Refused(format!(
            "{} images qualify as obsolete, more than --max {}: nothing was marked. A jump like this usually means a clock or a use-recording job is wrong; check with --dry-run --max {} and raise --max if it is right",
            qualifying.len(),
            options.max,
            qualifying.len()
        )));
    }
    let delete_after =
        options.now + jiff::SignedDuration::try_from(options.grace).unwrap_or_default();
    let mut out = Vec::new();
    for (r, old, unused) in qualifying {
        let p = &r.published;
        if !options.dry_run {
            record(
                &r.client,
                &p.repository,
                &Subject {
                    digest: p.digest.clone(),
                    size: p.manifest_size,
                    media_type: p.media_type.clone(),
                },
                Event::Obsolete,
                options.now,
                Some(delete_after),
            )?;
        }
        out.push(Decision {
            reference: format!("{}/{}@{}", r.host, p.repository, p.digest),
            tags: p.tags.clone(),
            variant: p.variant().unwrap_or_default().to_owned(),
            revision: p.revision().unwrap_or(0),
            action: if options.dry_run {
                "would-obsolete"
            } else {
                "obsoleted"
            },
            reason: format!("published {} ago, unused for {}", days(old), days(unused)),
            delete_after: Some(delete_after),
        });
    }
    Ok(out)
}

/// Deletes obsolete images whose date has passed; refuses permanent ones.
pub fn prune(
    clients: &[(std::sync::Arc<Client>, String)],
    now: jiff::Timestamp,
    dry_run: bool,
) -> Result<Vec<Decision>, Error> {
    let rows = rows(clients)?;
    let mut out = Vec::new();
    for r in &rows {
        let p = &r.published;
        let Some(date) = r.state.delete_after else {
            continue;
        };
        let decision = |action, reason: String| Decision {
            reference: format!("{}/{}@{}", r.host, p.repository, p.digest),
            tags: p.tags.clone(),
            variant: p.variant().unwrap_or_default().to_owned(),
            revision: p.revision().unwrap_or(0),
            action,
            reason,
            delete_after: Some(date),
        };
        if r.state.permanent {
            out.push(decision(
                "refused",
                "marked obsolete, but permanent since: not deleted (`kiln lifecycle permanent --unset` first)".into(),
            ));
            continue;
        }
        if date > now {
            continue;
        }
        if !dry_run {
            let client = &r.client;
            // The image first (its tags go with it), then what refers to it.
            client.delete_manifest(&p.repository, &p.digest)?;
            for d in r.state.events.iter().chain(&r.referrers) {
                client.delete_manifest(&p.repository, d)?;
            }
            if let Some(index) =
                client.manifest(&p.repository, &crate::client::fallback_tag(&p.digest))?
            {
                client.delete_manifest(&p.repository, &index.digest)?;
            }
        }
        out.push(decision(
            if dry_run { "would-delete" } else { "deleted" },
            format!("obsolete, to delete after {date}"),
        ));
    }
    Ok(out)
}

/// Resolves `reference` to its manifest.
pub fn resolve(client: &Client, reference: &Reference) -> Result<Subject, Error> {
    let fetched = client
        .manifest(&reference.repository, &reference.reference)?
        .ok_or_else(|| Error::Reference {
            reference: reference.to_string(),
            problem: "the registry has no such manifest".into(),
        })?;
    let media_type = if fetched.media_type.is_empty() {
        MANIFEST.to_owned()
    } else {
        fetched.media_type.clone()
    };
    Ok(Subject {
        size: fetched.bytes.len() as u64,
        digest: fetched.digest,
        media_type,
    })
}
