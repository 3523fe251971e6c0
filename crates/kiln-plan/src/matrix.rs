//! Expanding one image over the variant matrix.
//!
//! For each combination of one key per dimension the image varies by (the
//! Cartesian product, first dimension outermost), the fragments are merged
//! in this order: `[defaults]`, each held key's fragment in dimension order,
//! the image's `image.toml`, `[mandatory]`. A fragment's `when` blocks are
//! applied right after the fragment itself when the variant holds any of
//! the block's space-separated keys; a `when` inside a `when` needs both.
//! A combination is dropped as non-viable when it holds every key of a
//! root `exclude` rule, or any key listed in its merged `exclude`.

use std::collections::BTreeSet;

use kiln_config::diagnostic::{Diagnostic, Diagnostics};
use kiln_config::interpolate::{Lookup, interpolate_str, interpolate_table};

/// Placeholders of `[publish]` templates that `kiln publish` fills.
const PUBLISH_PLACEHOLDERS: [&str; 5] = ["id", "revision", "format", "time", "arch"];
use kiln_config::merge::merge;
use kiln_config::settings::{ConfigPath, ImageSettings, read_settings};
use kiln_config::tree::{DEFAULT_NAME_TEMPLATE, FileKind, MatrixRule};
use kiln_config::{Dimension, ImageDef, Origin, Table, Tree};

/// A variant before it is linked into the graph.
#[derive(Clone, Debug)]
pub(crate) struct Expanded {
    pub name: String,
    pub name_origin: Option<Origin>,
    pub image: usize,
    pub keys: Vec<(String, String)>,
    pub config: Table,
    pub settings: ImageSettings,
}

/// The dimensions an image varies by, with the keys it keeps.
fn image_dimensions<'t>(tree: &'t Tree, image: &ImageDef) -> Vec<(&'t Dimension, Vec<usize>)> {
    tree.dimensions
        .iter()
        .filter_map(|d| {
            let rule = image.matrix.iter().find(|r| match r {
                MatrixRule::OptOut { dimension } | MatrixRule::Only { dimension, .. } => {
                    *dimension == d.name
                }
            });
            match rule {
                Some(MatrixRule::OptOut { .. }) => None,
                Some(MatrixRule::Only { keys, .. }) => Some((
                    d,
                    (0..d.keys.len())
                        .filter(|&i| keys.contains(&d.keys[i].name))
                        .collect(),
                )),
                None => Some((d, (0..d.keys.len()).collect())),
            }
        })
        .collect()
}

fn apply(into: &mut Table, fragment: &Table, held: &BTreeSet<&str>) {
    let mut plain = fragment.clone();
    let when = plain.shift_remove("when");
    merge(into, &plain);
    if let Some(when) = when.and_then(|e| e.value.as_table().cloned()) {
        for (cond, block) in &when {
            if cond.split_whitespace().any(|k| held.contains(k)) {
                if let Some(frag) = block.value.as_table() {
                    apply(into, frag, held);
                }
            }
        }
    }
}

/// Every viable variant of one image.
pub(crate) fn expand(tree: &Tree, index: usize, diags: &mut Diagnostics) -> Vec<Expanded> {
    let image = &tree.images[index];
    let dims = image_dimensions(tree, image);
    let whole = Origin {
        file: image.manifest,
        span: 0..0,
    };
    if let Some((d, _)) = dims.iter().find(|(_, keys)| keys.is_empty()) {
        diags.push(
            Diagnostic::at(
                &whole,
                format!(
                    "image `{}` keeps no key of dimension `{}`",
                    image.name, d.name
                ),
                "",
            )
            .with_help(format!(
                "list keys of `{}` in `[matrix]`, or opt out with `{} = false`",
                d.name, d.name
            )),
        );
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut excluded = 0usize;
    let mut total = 0usize;
    let mut combo = vec![0usize; dims.len()];
    loop {
        total += 1;
        let keys: Vec<(String, String)> = dims
            .iter()
            .zip(&combo)
            .map(|((d, idx), &c)| (d.name.clone(), d.keys[idx[c]].name.clone()))
            .collect();
        match variant(tree, index, &dims, &combo, keys, diags) {
            Outcome::Viable(v) => out.push(*v),
            Outcome::Excluded => excluded += 1,
            Outcome::Failed => {}
        }
        // Odometer: last dimension fastest.
        let mut i = dims.len();
        loop {
            if i == 0 {
                if excluded == total {
                    diags.push(
                        Diagnostic::at(
                            &whole,
                            format!(
                                "the matrix excludes every variant of image `{}`",
                                image.name
                            ),
                            "no viable variant",
                        )
                        .with_help("check `exclude` rules and the image's `[matrix]`"),
                    );
                }
                return out;
            }
            i -= 1;
            combo[i] += 1;
            if combo[i] < dims[i].1.len() {
                break;
            }
            combo[i] = 0;
        }
    }
}

enum Outcome {
    Viable(Box<Expanded>),
    Excluded,
    Failed,
}

fn variant(
    tree: &Tree,
    index: usize,
    dims: &[(&Dimension, Vec<usize>)],
    combo: &[usize],
    keys: Vec<(String, String)>,
    diags: &mut Diagnostics,
) -> Outcome {
    let image = &tree.images[index];
    let held: BTreeSet<&str> = keys.iter().map(|(_, k)| k.as_str()).collect();
    if tree
        .excludes
        .iter()
        .any(|r| r.keys.iter().all(|k| held.contains(k.as_str())))
    {
        return Outcome::Excluded;
    }
    let mut config = Table::new();
    apply(&mut config, &tree.defaults, &held);
    for ((d, idx), &c) in dims.iter().zip(combo) {
        apply(&mut config, &d.keys[idx[c]].fragment, &held);
    }
    apply(&mut config, &image.fragment, &held);
    apply(&mut config, &tree.mandatory, &held);

    if let Some(ex) = config.shift_remove("exclude") {
        let excluded = ex
            .value
            .as_array()
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v.as_str())
            .any(|k| held.contains(k));
        if excluded {
            return Outcome::Excluded;
        }
    }

    let joined = keys
        .iter()
        .map(|(_, k)| k.as_str())
        .collect::<Vec<_>>()
        .join("-");
    let all_dims: Vec<&str> = tree.dimensions.iter().map(|d| d.name.as_str()).collect();
    let mut known: Vec<&str> = vec!["image", "keys", "variant"];
    known.extend(&all_dims);
    let base_lookup = |name: &str, variant: Option<&str>| -> Lookup {
        if let Some((_, k)) = keys.iter().find(|(d, _)| d == name) {
            return Lookup::Text(k.clone());
        }
        match name {
            "image" => Lookup::Text(image.name.clone()),
            "keys" => Lookup::Text(joined.clone()),
            "variant" => variant.map_or(Lookup::Unknown, |v| Lookup::Text(v.to_string())),
            _ if all_dims.contains(&name) => Lookup::NotVaried,
            _ => Lookup::Unknown,
        }
    };

    let (template, name_origin) = match config.shift_remove("name") {
        Some(e) => (
            e.value.as_str().unwrap_or_default().to_string(),
            Some(e.value.origin.clone()),
        ),
        None => match &tree.output.name {
            Some((t, o)) => (t.clone(), Some(o.clone())),
            None => (DEFAULT_NAME_TEMPLATE.to_string(), None),
        },
    };
    let name_known: Vec<&str> = known.iter().copied().filter(|k| *k != "variant").collect();
    let before_name = diags.reported();
    let raw = match &name_origin {
        Some(o) => interpolate_str(&template, o, &|n| base_lookup(n, None), &name_known, diags),
        None => format!("{}-{joined}", image.name),
    };
    // `{keys}` is empty for an image that varies by nothing: drop the
    // separators it leaves behind.
    let name = raw
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    if diags.reported() != before_name {
        return Outcome::Failed;
    }
    if !is_variant_name(&name) {
        let at = name_origin.clone().unwrap_or(Origin {
            file: image.manifest,
            span: 0..0,
        });
        diags.push(
            Diagnostic::at(
                &at,
                format!("variant name `{name}` is not usable as a file name"),
                "from this template",
            )
            .with_help("variant names use letters, digits and `._-+`"),
        );
        return Outcome::Failed;
    }
    let before = diags.reported();
    // `publish` templates also name what only a publish knows (`{id}`,
    // `{revision}`, `{format}`, `{time}`, `{arch}`): those stay for
    // kiln-publish to fill; the tree's own placeholders are filled here.
    let mut publish = config.shift_remove("publish");
    interpolate_table(&mut config, &|n| base_lookup(n, Some(&name)), &known, diags);
    if let Some(entry) = publish.as_mut() {
        let mut publish_known = known.clone();
        publish_known.extend(PUBLISH_PLACEHOLDERS);
        let lookup = |n: &str| {
            if PUBLISH_PLACEHOLDERS.contains(&n) {
                Lookup::Text(format!("{{{n}}}"))
            } else {
                base_lookup(n, Some(&name))
            }
        };
        if let kiln_config::Kind::Table(t) = &mut entry.value.kind {
            interpolate_table(t, &lookup, &publish_known, diags);
        }
    }
    if let Some(entry) = publish {
        config.insert("publish".to_owned(), entry);
    }
    if diags.reported() != before {
        return Outcome::Failed;
    }
    let Some(mut settings) = read_settings(&config, image.manifest, diags) else {
        return Outcome::Failed;
    };
    // An image folder's `rootfs/` is copied in unless `rootfs` says otherwise.
    if settings.rootfs.is_none()
        && image
            .files
            .iter()
            // A link named `rootfs` too: the plan refuses it rather than
            // leaving it out silently.
            .any(|f| {
                f.path == "rootfs"
                    && matches!(f.kind, FileKind::Dir { .. } | FileKind::Symlink { .. })
            })
    {
        settings.rootfs = Some(ConfigPath {
            path: "rootfs".to_string(),
            origin: Origin {
                file: image.manifest,
                span: 0..0,
            },
        });
    }
    Outcome::Viable(Box::new(Expanded {
        name,
        name_origin,
        image: index,
        keys,
        config,
        settings,
    }))
}

fn is_variant_name(s: &str) -> bool {
    !s.is_empty()
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c))
}
