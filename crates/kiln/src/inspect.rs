//! `kiln inspect`: a variant's manifest entry, its layer chain, and the
//! largest packages and directories of its root.

use std::collections::BTreeMap;
use std::path::Path;

use kiln_formats::{NodeKind, Tree};
use kiln_layers::LayerStack;
use kiln_store::{InputKey, Store};
use serde_json::json;

use crate::cli::InspectArgs;
use crate::report::Style;
use crate::store_cmd::mb;
use crate::{Failure, Outcome};
use kiln_build::manifest::{Manifest, VariantEntry};

pub fn run(args: &InspectArgs, style: Style) -> Outcome {
    let (ws, _) = crate::build_cmd::open(
        &args.dir,
        args.cache_dir.as_deref(),
        &kiln_plan::Selection::default(),
        style,
    )?;
    let tree = ws.tree();
    let out_dir = tree.root.join(&tree.output.dir);
    let manifest = Manifest::read(&out_dir);
    let (entry, artifact) = find(&manifest, &args.target, &out_dir).ok_or_else(|| {
        Failure::Config(format!(
            "error: `{}` is neither a variant nor an artifact in `{}`\n  help: `kiln build` writes the manifest; variants there: {}\n",
            args.target,
            out_dir.join(kiln_build::manifest::MANIFEST_FILE).display(),
            if manifest.variants.is_empty() {
                "none".to_string()
            } else {
                manifest
                    .variants
                    .iter()
                    .map(|v| v.variant.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ))
    })?;
    let cache = ws
        .require_cache_dir()
        .map_err(|e| crate::build_cmd::failure(&e, style))?;
    let store = Store::open_read_only(&cache.join("store"))
        .map_err(|e| Failure::Build(format!("error: {}\n", kiln_build::chain(&e))))?;
    let chain = layer_chain(&manifest, entry, &store);
    let mut packages = entry.packages.clone();
    packages.sort_by(|a, b| {
        b.installed_size_kib
            .cmp(&a.installed_size_kib)
            .then(a.name.cmp(&b.name))
    });
    packages.truncate(args.top);
    let dirs = match chain
        .iter()
        .map(|l| l.tree.clone())
        .collect::<Option<Vec<_>>>()
    {
        Some(mut layers) => {
            layers.reverse();
            largest_dirs(&LayerStack::new(layers), args.top)
        }
        None => Vec::new(),
    };
    if args.json {
        let value = json!({
            "variant": entry,
            "artifact": artifact,
            "layers": chain.iter().map(|l| json!({
                "variant": l.variant,
                "key": l.key,
                "size": l.size,
                "files": l.files,
                "in_store": l.tree.is_some(),
            })).collect::<Vec<_>>(),
            "largest_packages": packages.iter().map(|p| json!({
                "name": p.name,
                "version": p.version,
                "installed_size": p.installed_size_kib * 1024,
            })).collect::<Vec<_>>(),
            "largest_directories": dirs.iter().map(|(d, s)| json!({"path": d, "size": s})).collect::<Vec<_>>(),
        });
        return Ok(serde_json::to_string_pretty(&value).expect("serializable") + "\n");
    }
    let mut out = String::new();
    let keys: Vec<String> = entry.keys.iter().map(|(d, k)| format!("{d}={k}")).collect();
    out.push_str(&format!("variant       {}\n", entry.variant));
    out.push_str(&format!("image         {}\n", entry.image));
    out.push_str(&format!("keys          {}\n", keys.join(" ")));
    out.push_str(&format!("input digest  {}\n", entry.input_digest));
    out.push_str(&format!("layer key     {}\n", entry.layer_key));
    if let Some(p) = &entry.parent {
        out.push_str(&format!("parent        {p}\n"));
    }
    out.push_str(&format!(
        "epoch         {} ({})\n",
        entry.epoch,
        kiln_build::manifest::rfc3339(entry.epoch)
    ));
    out.push_str(&format!("built         {}\n", entry.build_time));
    if let Some(sbom) = &entry.sbom {
        out.push_str(&format!("sbom          {}\n", out_dir.join(sbom).display()));
    }
    out.push_str("\nartifacts\n");
    for a in &entry.artifacts {
        let mark = if artifact.is_some_and(|x| x.name == a.name) {
            "*"
        } else {
            " "
        };
        out.push_str(&format!(
            "{mark} {:<40} {:<16} {:>10}  sha256:{}\n",
            a.name,
            a.format,
            mb(a.size),
            a.sha256
        ));
    }
    out.push_str("\nlayers (top first)\n");
    for l in &chain {
        let state = if l.tree.is_some() {
            ""
        } else {
            "  (not in the store)"
        };
        out.push_str(&format!(
            "  {:<30} {}  {:>10}  {:>7} entries{state}\n",
            l.variant,
            &l.key[..l.key.len().min(16)],
            mb(l.size),
            l.files
        ));
    }
    out.push_str(&format!(
        "\nlargest packages ({} installed)\n",
        entry.packages.len()
    ));
    for p in &packages {
        out.push_str(&format!(
            "  {:<30} {:<28} {:>10}\n",
            p.name,
            p.version,
            mb(p.installed_size_kib * 1024)
        ));
    }
    if !dirs.is_empty() {
        out.push_str("\nlargest directories\n");
        for (d, size) in &dirs {
            out.push_str(&format!("  /{d:<50} {:>10}\n", mb(*size)));
        }
    }
    Ok(out)
}

/// The variant entry and, if the target names one, the artifact.
fn find<'a>(
    manifest: &'a Manifest,
    target: &str,
    out_dir: &Path,
) -> Option<(
    &'a VariantEntry,
    Option<&'a kiln_build::manifest::ArtifactEntry>,
)> {
    if let Some(v) = manifest.variant(target) {
        return Some((v, None));
    }
    let by_name = |name: &str| {
        manifest.variants.iter().find_map(|v| {
            v.artifacts
                .iter()
                .find(|a| a.name == name || out_dir.join(&a.path) == Path::new(name))
                .map(|a| (v, Some(a)))
        })
    };
    if let Some(found) = by_name(target) {
        return Some(found);
    }
    let path = Path::new(target);
    if path.is_file() {
        let (_, sha) = kiln_store::sha256_of(path).ok()?;
        return manifest.variants.iter().find_map(|v| {
            v.artifacts
                .iter()
                .find(|a| a.sha256 == sha)
                .map(|a| (v, Some(a)))
        });
    }
    None
}

struct ChainLayer {
    variant: String,
    key: String,
    size: u64,
    files: u64,
    tree: Option<std::path::PathBuf>,
}

/// The variant's layer and its ancestors', top first.
fn layer_chain(manifest: &Manifest, entry: &VariantEntry, store: &Store) -> Vec<ChainLayer> {
    let mut out = Vec::new();
    let mut next = Some((entry.variant.clone(), entry.layer_key.clone()));
    while let Some((variant, key)) = next.take() {
        let layer = InputKey::from_hex(&key)
            .ok()
            .and_then(|k| store.get(&k).ok().flatten());
        next = layer.as_ref().and_then(|l| l.parent).map(|p| {
            let hex = p.to_hex();
            let name = manifest
                .variants
                .iter()
                .find(|v| v.layer_key == hex)
                .map_or_else(|| "?".to_string(), |v| v.variant.clone());
            (name, hex)
        });
        out.push(ChainLayer {
            variant: layer.as_ref().map_or(variant, |l| l.meta.variant.clone()),
            key,
            size: layer.as_ref().map_or(0, |l| l.meta.size),
            files: layer.as_ref().map_or(0, |l| l.meta.files),
            tree: layer.map(|l| l.tree),
        });
        if out.len() > 64 {
            break;
        }
    }
    out
}

/// The `n` directories (up to three levels deep) holding the most bytes
/// of regular files, largest first.
fn largest_dirs(stack: &LayerStack, n: usize) -> Vec<(String, u64)> {
    let Ok(tree) = Tree::merged(stack, i64::MAX) else {
        return Vec::new();
    };
    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    for node in &tree.nodes {
        let NodeKind::File { size, .. } = node.kind else {
            continue;
        };
        let parts: Vec<&str> = node.path.split('/').collect();
        for depth in 1..parts.len().min(4) {
            *sizes.entry(parts[..depth].join("/")).or_default() += size;
        }
    }
    let mut list: Vec<(String, u64)> = sizes.into_iter().collect();
    // Deepest first among equals, so `usr/lib/x86_64-linux-gnu` shows
    // rather than only `usr`.
    list.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.len().cmp(&a.0.len())));
    list.truncate(n);
    list
}
