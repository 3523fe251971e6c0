//! `kiln store du|gc|verify`.

use kiln_store::{GcPolicy, InputKey, Store};

use crate::cli::{GcArgs, StoreArgs, StoreCommand};
use crate::report::Style;
use crate::{Failure, Outcome};

pub fn run(cmd: &StoreCommand, style: Style) -> Outcome {
    match cmd {
        StoreCommand::Du(a) => du(a, style),
        StoreCommand::Gc(a) => gc(a, style),
        StoreCommand::Verify(a) => verify(a, style),
    }
}

/// The store, the layers the tree's current plan references (none when
/// `DIR` holds no tree) and the cache folder holding the store.
fn open(
    args: &StoreArgs,
    style: Style,
) -> Result<(Store, Vec<InputKey>, std::path::PathBuf), Failure> {
    let has_tree = args.dir.join(kiln_config::tree::ROOT_FILE).exists();
    let (cache, referenced) = if has_tree {
        let (ws, plan) = crate::build_cmd::open(
            &args.dir,
            args.cache_dir.as_deref(),
            &kiln_plan::Selection::default(),
            style,
        )?;
        let cache = ws
            .require_cache_dir()
            .map_err(|e| crate::build_cmd::failure(&e, style))?
            .to_path_buf();
        // Layers are keyed through kiln.lock; a variant without a
        // current entry references no layer yet.
        (cache, ws.known_keys(&plan).into_iter().flatten().collect())
    } else {
        let cache = args
            .cache_dir
            .clone()
            .or_else(crate::build_cmd::default_cache_dir)
            .ok_or_else(|| {
                crate::build_cmd::failure(
                    &kiln_build::Error::Config {
                        message: "failed to choose a package cache: neither `--cache-dir`, `[cache] dir`, XDG_CACHE_HOME nor HOME is set".into(),
                    },
                    style,
                )
            })?;
        (cache, Vec::new())
    };
    let store = Store::open(&cache.join("store"))
        .map_err(|e| Failure::Build(format!("error: {}\n", kiln_build::chain(&e))))?;
    Ok((store, referenced, cache))
}

pub(crate) fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn du(args: &StoreArgs, style: Style) -> Outcome {
    let (store, referenced, _) = open(args, style)?;
    let usage = store
        .du(&referenced)
        .map_err(|e| Failure::Build(format!("error: {}\n", kiln_build::chain(&e))))?;
    if args.json {
        let layers: Vec<serde_json::Value> = usage
            .layers
            .iter()
            .map(|l| {
                serde_json::json!({
                    "input": l.input.to_hex(), "variant": l.variant, "parent": l.parent.map(|p| p.to_hex()),
                    "created": l.created, "size": l.size, "shared": l.shared, "files": l.files, "referenced": l.referenced,
                })
            })
            .collect();
        let v = serde_json::json!({
            "layers": layers, "total": usage.total, "full_copies": usage.full_copies,
            "referenced": usage.referenced, "unreferenced": usage.unreferenced, "saved": usage.saved(),
        });
        return Ok(format!(
            "{}\n",
            serde_json::to_string_pretty(&v).expect("plain data")
        ));
    }
    let mut out = format!(
        "{:<14} {:<28} {:>10} {:>10} {:>8}  {}\n",
        "LAYER", "VARIANT", "SIZE", "SHARED", "FILES", "REFERENCED"
    );
    for l in &usage.layers {
        out.push_str(&format!(
            "{:<14} {:<28} {:>10} {:>10} {:>8}  {}\n",
            l.input.short(),
            l.variant,
            mb(l.size),
            mb(l.shared),
            l.files,
            if l.referenced { "yes" } else { "no" }
        ));
    }
    out.push_str(&format!(
        "\ntotal {} for {} layers; full copies would take {} ({} saved, {:.2}x); referenced {}, unreferenced {}\n",
        mb(usage.total),
        usage.layers.len(),
        mb(usage.full_copies),
        mb(usage.saved()),
        if usage.total == 0 { 1.0 } else { usage.full_copies as f64 / usage.total as f64 },
        mb(usage.referenced),
        mb(usage.unreferenced)
    ));
    Ok(out)
}

fn gc(args: &GcArgs, style: Style) -> Outcome {
    let (store, referenced, cache) = open(&args.store, style)?;
    let policy = GcPolicy {
        keep_last: args.keep_last,
        max_size: args.max_size,
    };
    let failed =
        |e: &dyn std::error::Error| Failure::Build(format!("error: {}\n", kiln_build::chain(e)));
    let report = store.gc(&referenced, &policy).map_err(|e| failed(&e))?;
    // The writers' caches: what no layer still here was written with.
    let oldest = store
        .layers()
        .map_err(|e| failed(&e))?
        .iter()
        .map(|l| l.meta.created)
        .min()
        .map(|secs| {
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0).unsigned_abs())
        });
    let caches =
        kiln_formats::writer_cache::gc(&cache.join("blocks"), oldest).map_err(|e| failed(&e))?;
    if args.store.json {
        let v = serde_json::json!({
            "removed": report.removed.iter().map(|l| serde_json::json!({"input": l.input.to_hex(), "variant": l.meta.variant})).collect::<Vec<_>>(),
            "in_use": report.in_use.iter().map(kiln_store::InputKey::to_hex).collect::<Vec<_>>(),
            "freed": report.freed, "size_before": report.size_before, "size_after": report.size_after,
            "writer_caches": {"removed": caches.removed, "freed": caches.freed, "kept": caches.kept, "kept_bytes": caches.kept_bytes},
        });
        return Ok(format!(
            "{}\n",
            serde_json::to_string_pretty(&v).expect("plain data")
        ));
    }
    let mut out = String::new();
    for l in &report.removed {
        out.push_str(&format!(
            "removed {} ({})\n",
            l.input.short(),
            l.meta.variant
        ));
    }
    for k in &report.in_use {
        out.push_str(&format!("kept {} (in use)\n", k.short()));
    }
    out.push_str(&format!(
        "{} layers removed, {} freed; the store now takes {}\n",
        report.removed.len(),
        mb(report.freed),
        mb(report.size_after)
    ));
    out.push_str(&format!(
        "writer caches: {} entries removed ({} freed), {} kept ({})\n",
        caches.removed,
        mb(caches.freed),
        caches.kept,
        mb(caches.kept_bytes)
    ));
    Ok(out)
}

fn verify(args: &StoreArgs, style: Style) -> Outcome {
    let (store, _, _) = open(args, style)?;
    let problems = store
        .verify()
        .map_err(|e| Failure::Build(format!("error: {}\n", kiln_build::chain(&e))))?;
    if problems.is_empty() {
        let n = store.layers().map_or(0, |l| l.len());
        return Ok(format!(
            "{n} layers verified: every tree matches its content digest\n"
        ));
    }
    let mut out = String::new();
    for p in &problems {
        out.push_str(&format!("{p}\n"));
    }
    Err(Failure::Build(out))
}
