//! Linking variants to their parents, finding cycles, ordering and digesting.

use std::collections::{BTreeMap, BTreeSet};

use kiln_config::diagnostic::{Diagnostic, Diagnostics, did_you_mean};
use kiln_config::settings::{Base, ConfigPath, FileContent, RunBody};
use kiln_config::tree::{FileEntry, FileKind, LinkTarget};
use kiln_config::tree_fs::OUTSIDE_HELP;
use kiln_config::{Origin, Tree};

use crate::digest::Encoder;
use crate::matrix::Expanded;
use crate::{InputDigest, Plan, Variant};

pub(crate) fn build(tree: &Tree, expanded: Vec<Expanded>, diags: &mut Diagnostics) -> Plan {
    // Unique names.
    let mut by_name: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, v) in expanded.iter().enumerate() {
        if let Some(&first) = by_name.get(v.name.as_str()) {
            let other = &expanded[first];
            let at = v.name_origin.clone().unwrap_or(Origin {
                file: tree.images[v.image].manifest,
                span: 0..0,
            });
            diags.push(
                Diagnostic::at(&at, format!("two variants are named `{}`", v.name), "this template gives the same name twice")
                    .with_help(format!(
                        "`{}` ({}) and `{}` ({}) need distinct names: put their keys in the name template, e.g. \"{{image}}-{{keys}}\"",
                        other.image,
                        keys_text(&other.keys),
                        v.image,
                        keys_text(&v.keys)
                    )),
            );
        } else {
            by_name.insert(&v.name, i);
        }
    }

    // Parents.
    let image_index: BTreeMap<&str, usize> = tree
        .images
        .iter()
        .enumerate()
        .map(|(i, im)| (im.name.as_str(), i))
        .collect();
    let mut parent: Vec<Option<usize>> = vec![None; expanded.len()];
    let mut image_edges: BTreeMap<usize, BTreeMap<usize, Origin>> = BTreeMap::new();
    for (i, v) in expanded.iter().enumerate() {
        let Base::Image(p) = &v.settings.base else {
            continue;
        };
        let Some(&pi) = image_index.get(p.as_str()) else {
            if tree.broken_images.contains(p) {
                continue; // its own problem is reported already
            }
            diags.push(
                Diagnostic::at(&v.settings.from_origin, format!("unknown parent image `{p}`"), did_you_mean(p, image_index.keys().copied()))
                    .with_help(format!(
                        "`from` names another image (a folder with an image.toml) or `debian:<suite>`; images: {}",
                        image_index.keys().copied().collect::<Vec<_>>().join(", ")
                    )),
            );
            continue;
        };
        image_edges
            .entry(v.image)
            .or_default()
            .entry(pi)
            .or_insert_with(|| v.settings.from_origin.clone());
        if pi == v.image {
            continue; // a cycle of one; reported below
        }
        let candidates: Vec<usize> = expanded
            .iter()
            .enumerate()
            .filter(|(_, c)| c.image == pi && c.keys.iter().all(|k| v.keys.contains(k)))
            .map(|(j, _)| j)
            .collect();
        match candidates.as_slice() {
            [one] => parent[i] = Some(*one),
            [] => {
                if expanded.iter().any(|c| c.image == pi) {
                    diags.push(
                        Diagnostic::at(&v.settings.from_origin, format!("no variant of `{p}` for `{}` ({})", v.name, keys_text(&v.keys)), "parent has no matching variant")
                            .with_help(format!(
                                "`{p}` has no variant with these keys (its `[matrix]` or an `exclude` rule leaves it out); restrict `{}` the same way in its `[matrix]`",
                                tree.images[v.image].name
                            )),
                    );
                }
            }
            many => {
                let names: Vec<&str> = many.iter().map(|&j| expanded[j].name.as_str()).collect();
                diags.push(
                    Diagnostic::at(&v.settings.from_origin, format!("`{}` could build on any of {} variants of `{p}`", v.name, names.len()), "ambiguous parent")
                        .with_help(format!(
                            "`{p}` varies by a dimension `{}` opted out of ({}); vary `{}` by it too, or restrict `{p}` to one key",
                            tree.images[v.image].name,
                            names.join(", "),
                            tree.images[v.image].name
                        )),
                );
            }
        }
    }

    // Cycles among images.
    report_cycles(tree, &image_edges, diags);

    // Referenced paths must exist.
    for v in &expanded {
        check_paths(tree, v, diags);
    }

    if !diags.is_empty() {
        return Plan {
            variants: Vec::new(),
        };
    }

    // Build order: Kahn's algorithm, ready variants by name.
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); expanded.len()];
    let mut pending: Vec<usize> = vec![0; expanded.len()];
    for (i, p) in parent.iter().enumerate() {
        if let Some(p) = p {
            children[*p].push(i);
            pending[i] = 1;
        }
    }
    let mut ready: BTreeSet<(&str, usize)> = expanded
        .iter()
        .enumerate()
        .filter(|(i, _)| pending[*i] == 0)
        .map(|(i, v)| (v.name.as_str(), i))
        .collect();
    let mut order = Vec::with_capacity(expanded.len());
    while let Some(&first) = ready.iter().next() {
        ready.remove(&first);
        order.push(first.1);
        for &c in &children[first.1] {
            pending[c] -= 1;
            if pending[c] == 0 {
                ready.insert((expanded[c].name.as_str(), c));
            }
        }
    }
    debug_assert_eq!(order.len(), expanded.len(), "no cycles remain");

    let mut new_index = vec![0usize; expanded.len()];
    for (pos, &old) in order.iter().enumerate() {
        new_index[old] = pos;
    }
    let mut slots: Vec<Option<Expanded>> = expanded.into_iter().map(Some).collect();
    let mut variants: Vec<Variant> = Vec::with_capacity(order.len());
    for &old in &order {
        let e = slots[old].take().expect("each variant placed once");
        let parent_id = parent[old].map(|p| new_index[p]);
        let parent_digest = parent_id.map(|p| variants[p].digest);
        let digest = digest_of(tree, &e, parent_digest);
        variants.push(Variant {
            name: e.name,
            image: tree.images[e.image].name.clone(),
            keys: e.keys,
            parent: parent_id,
            config: e.config,
            settings: e.settings,
            digest,
        });
    }
    Plan { variants }
}

fn keys_text(keys: &[(String, String)]) -> String {
    if keys.is_empty() {
        return "no keys".to_string();
    }
    keys.iter()
        .map(|(d, k)| format!("{d}={k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reports each cycle once, as `a → b → a`.
fn report_cycles(
    tree: &Tree,
    edges: &BTreeMap<usize, BTreeMap<usize, Origin>>,
    diags: &mut Diagnostics,
) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    fn visit(
        n: usize,
        edges: &BTreeMap<usize, BTreeMap<usize, Origin>>,
        marks: &mut [Mark],
        stack: &mut Vec<usize>,
        cycles: &mut Vec<Vec<usize>>,
    ) {
        marks[n] = Mark::Active;
        stack.push(n);
        for &m in &edges
            .get(&n)
            .map(|e| e.keys().copied().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            match marks[m] {
                Mark::New => visit(m, edges, marks, stack, cycles),
                Mark::Active => {
                    let start = stack
                        .iter()
                        .position(|&s| s == m)
                        .expect("active nodes are on the stack");
                    cycles.push(stack[start..].to_vec());
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks[n] = Mark::Done;
    }
    let mut marks = vec![Mark::New; tree.images.len()];
    let mut cycles = Vec::new();
    for n in 0..tree.images.len() {
        if marks[n] == Mark::New {
            visit(n, edges, &mut marks, &mut Vec::new(), &mut cycles);
        }
    }
    for cycle in cycles {
        let names: Vec<&str> = cycle
            .iter()
            .map(|&i| tree.images[i].name.as_str())
            .collect();
        let mut path = names.join(" → ");
        path.push_str(" → ");
        path.push_str(names[0]);
        let first = cycle[0];
        let next = cycle.get(1).copied().unwrap_or(first);
        let at = edges[&first][&next].clone();
        let mut d = Diagnostic::at(&at, format!("images build on each other in a cycle: {path}"), "this `from` closes the cycle")
            .with_help("an image cannot be its own ancestor; one of these must start from `debian:<suite>` or another image");
        for w in cycle.windows(2).skip(1) {
            d = d.with_secondary(&edges[&w[0]][&w[1]], "");
        }
        if cycle.len() > 1 {
            let last = *cycle.last().expect("non-empty");
            d = d.with_secondary(&edges[&last][&first], "");
        }
        diags.push(d);
    }
}

fn config_paths(v: &Expanded) -> Vec<&ConfigPath> {
    let s = &v.settings;
    let mut out: Vec<&ConfigPath> = Vec::new();
    out.extend(s.rootfs.iter());
    out.extend(s.files.iter().filter_map(|f| match &f.content {
        FileContent::Source(p) => Some(p),
        FileContent::Inline(_) => None,
    }));
    out.extend(s.run.iter().filter_map(|r| match &r.body {
        RunBody::Script(p) => Some(p),
        RunBody::Inline(_) => None,
    }));
    out
}

fn check_paths(tree: &Tree, v: &Expanded, diags: &mut Diagnostics) {
    let image = &tree.images[v.image];
    let folders: Vec<&ConfigPath> = v.settings.rootfs.iter().collect();
    for p in config_paths(v) {
        let folder = folders.iter().any(|f| std::ptr::eq(*f, p));
        let (list, whose): (&[FileEntry], String) = if p.origin.file == tree.root_file {
            (&tree.shared_files, "the tree root".to_string())
        } else {
            (
                &image.files,
                format!("the folder of image `{}`", image.name),
            )
        };
        let Some(entry) = list.iter().find(|f| f.path == p.path) else {
            diags.push(Diagnostic::at(
                &p.origin,
                format!("`{}` does not exist in {whose}", p.path),
                "no such file",
            ));
            continue;
        };
        // The image folder's own `rootfs/` is named by no setting.
        let named = if p.origin.span.is_empty() {
            "this image's `rootfs`"
        } else {
            "named here"
        };
        let problem = match (&entry.kind, folder) {
            (FileKind::Dir { .. }, true)
            | (
                FileKind::File { .. }
                | FileKind::Symlink {
                    leads: LinkTarget::File { .. },
                    ..
                },
                false,
            ) => None,
            (FileKind::Symlink { leads: LinkTarget::Outside, target }, _) => Some(
                Diagnostic::at(
                    &p.origin,
                    format!("`{}` is a symbolic link leading out of the tree (to `{target}`)", p.path),
                    named,
                )
                .with_help(OUTSIDE_HELP),
            ),
            (FileKind::Symlink { target, .. }, true) => Some(
                Diagnostic::at(
                    &p.origin,
                    format!("`{}` is a symbolic link (to `{target}`), not a folder", p.path),
                    named,
                )
                .with_help("kiln copies a folder of the tree itself, not one a link leads to; name the folder"),
            ),
            (FileKind::Symlink { target, leads: LinkTarget::Dir }, false) => Some(Diagnostic::at(
                &p.origin,
                format!("`{}` is a symbolic link to a folder (`{target}`), not a file", p.path),
                named,
            )),
            (FileKind::Symlink { target, .. }, false) => Some(Diagnostic::at(
                &p.origin,
                format!("`{}` is a symbolic link (to `{target}`) that leads to no file", p.path),
                named,
            )),
            (_, true) => Some(Diagnostic::at(
                &p.origin,
                format!("`{}` is not a folder", p.path),
                named,
            )),
            (FileKind::Dir { .. }, false) => Some(Diagnostic::at(
                &p.origin,
                format!("`{}` is a folder, not a file", p.path),
                named,
            )),
        };
        diags.extend(problem);
    }
}

fn digest_of(tree: &Tree, v: &Expanded, parent: Option<InputDigest>) -> InputDigest {
    let image = &tree.images[v.image];
    let mut e = Encoder::new();
    e.field("image");
    e.str(&image.name);
    e.field("variant");
    e.str(&v.name);
    e.field("keys");
    e.list(&v.keys, |e, (d, k)| {
        e.str(d);
        e.str(k);
    });
    e.field("config");
    // How long a build may take, where it is published and how it is
    // tested is not what it builds: a new `timeout`, `publish` or `test`
    // keeps the layer.
    let mut config = v.config.clone();
    config.shift_remove("timeout");
    config.shift_remove("publish");
    config.shift_remove("test");
    let netboot = config
        .get("netboot")
        .is_some_and(|n| n.value.as_bool() == Some(true));
    e.table(&config);
    if netboot {
        // What `netboot = true` writes into the root is part of it.
        e.field("netboot");
        e.list(kiln_config::netboot::FILES, |e, (path, mode, text)| {
            e.str(path);
            e.u64(u64::from(*mode));
            e.str(text);
        });
    }
    e.field("sources");
    e.list(&tree.sources, |e, s| {
        e.str(s.distribution.name());
        e.list(&s.suites, |e, x| e.str(x));
        e.list(&s.components, |e, x| e.str(x));
        e.list(&s.architectures, |e, x| e.str(x));
        match &s.keyring {
            kiln_config::Keyring::File(p) => e.str(&p.to_string_lossy()),
            kiln_config::Keyring::Inline(k) => e.str(k),
        }
    });
    e.field("epoch");
    e.u64(tree.output.epoch.map_or(u64::MAX, i64::unsigned_abs));
    e.field("files");
    e.list(&image.files, Encoder::file);
    e.field("shared");
    let shared: Vec<&FileEntry> = config_paths(v)
        .into_iter()
        .filter(|p| p.origin.file == tree.root_file)
        .flat_map(|p| {
            tree.shared_files
                .iter()
                .filter(move |f| f.path == p.path || f.path.starts_with(&format!("{}/", p.path)))
        })
        .map(|f| (f.path.as_str(), f))
        .collect::<BTreeMap<_, _>>()
        .into_values()
        .collect();
    e.list(&shared, |e, f| e.file(f));
    e.field("parent");
    match parent {
        Some(p) => e.bytes(&p.0),
        None => e.str(""),
    }
    e.finish()
}
