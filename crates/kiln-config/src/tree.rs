//! Loading an image tree from disk: `kiln.toml`, every `image.toml` below it,
//! and an inventory of each image folder's files.
//!
//! This is the only module of the configuration crates that touches the file
//! system for the tree itself. It reports every problem it finds and returns
//! a [`Tree`] only when there were none.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::diagnostic::{Diagnostic, Diagnostics, FileId, Origin, SourceMap, did_you_mean};
use crate::schema::{self, FragmentKind, Known, unknown_field};
use crate::source::{self, DEFAULT_KEYRING, Distribution, Keyring, PackageSource};
use crate::tree_fs::{OUTSIDE_HELP, OpenError, TreeRoot, hash_reader};
use crate::value::{Kind, Table, Value, parse_document};

/// The name of the file at the root of a tree.
pub const ROOT_FILE: &str = "kiln.toml";
/// The name of the file that makes a folder an image.
pub const IMAGE_FILE: &str = "image.toml";
/// The default output folder, relative to the root.
pub const DEFAULT_OUTPUT_DIR: &str = "out";
/// The default variant name template.
pub const DEFAULT_NAME_TEMPLATE: &str = "{image}-{keys}";

/// How to load a tree.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// The root below which the host's `etc/apt` is read when `kiln.toml`
    /// names no sources. `/` in production; a fixture in tests.
    pub host_root: PathBuf,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            host_root: PathBuf::from("/"),
        }
    }
}

/// A loaded, checked image tree.
#[derive(Clone, Debug)]
pub struct Tree {
    /// The folder holding `kiln.toml`.
    pub root: PathBuf,
    /// Every file read, for diagnostics.
    pub files: SourceMap,
    /// Package sources.
    pub sources: Vec<PackageSource>,
    /// True when `sources` came from the host's apt configuration.
    pub sources_from_host: bool,
    /// Output settings.
    pub output: OutputSettings,
    /// The package/layer cache folder, if the tree sets one (relative to root).
    pub cache_dir: Option<PathBuf>,
    /// `[defaults]`.
    pub defaults: Table,
    /// Dimensions in declared order.
    pub dimensions: Vec<Dimension>,
    /// `[mandatory]`.
    pub mandatory: Table,
    /// Key combinations that are not viable.
    pub excludes: Vec<ExcludeRule>,
    /// Images, sorted by name.
    pub images: Vec<ImageDef>,
    /// `kiln.toml` itself.
    pub root_file: FileId,
    /// Image folders whose `image.toml` could not be read; only set on a
    /// partial tree, so that images built on them report nothing more.
    pub broken_images: Vec<String>,
    /// Files of the tree that fragments of `kiln.toml` name (scripts,
    /// sources of `files`, a shared `rootfs`), with paths relative to the
    /// root; folders are listed with their content.
    pub shared_files: Vec<FileEntry>,
}

/// `[output]` of `kiln.toml`.
#[derive(Clone, Debug)]
pub struct OutputSettings {
    /// Output folder, relative to the root unless absolute.
    pub dir: PathBuf,
    /// Variant name template, and where it was written.
    pub name: Option<(String, Origin)>,
    /// `SOURCE_DATE_EPOCH` for every build of the tree.
    pub epoch: Option<i64>,
}

/// One dimension of the variant matrix.
#[derive(Clone, Debug)]
pub struct Dimension {
    /// Its name (`suite`, `arch`, ...).
    pub name: String,
    /// Where it was declared.
    pub origin: Origin,
    /// Its keys in declared order.
    pub keys: Vec<DimensionKey>,
}

/// One key of a dimension and its fragment.
#[derive(Clone, Debug)]
pub struct DimensionKey {
    /// The key (`bookworm`, `uefi`, ...).
    pub name: String,
    /// Where it was declared.
    pub origin: Origin,
    /// The configuration it contributes.
    pub fragment: Table,
}

/// A combination of keys no variant may hold together.
#[derive(Clone, Debug)]
pub struct ExcludeRule {
    /// The keys; a variant holding all of them is excluded.
    pub keys: Vec<String>,
    /// Where the rule was written.
    pub origin: Origin,
}

/// An image folder.
#[derive(Clone, Debug)]
pub struct ImageDef {
    /// The folder's name.
    pub name: String,
    /// The folder, relative to the root.
    pub dir: PathBuf,
    /// Its `image.toml`.
    pub manifest: FileId,
    /// `image.toml` without `[matrix]`.
    pub fragment: Table,
    /// `[matrix]`: how the image restricts the dimensions.
    pub matrix: Vec<MatrixRule>,
    /// Every file of the folder but `image.toml` and nested image folders.
    pub files: Vec<FileEntry>,
}

/// An image's restriction of one dimension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MatrixRule {
    /// The image does not vary by this dimension.
    OptOut {
        /// The dimension.
        dimension: String,
    },
    /// The image varies only by these keys of the dimension.
    Only {
        /// The dimension.
        dimension: String,
        /// The keys kept.
        keys: Vec<String>,
    },
}

/// A file in an image folder, as far as the input digest is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Path relative to the image folder, `/`-separated.
    pub path: String,
    /// What it is.
    pub kind: FileKind,
}

/// The kinds of file an image folder may hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file.
    File {
        /// Permission bits.
        mode: u32,
        /// Size in bytes.
        size: u64,
        /// BLAKE3 of the content.
        digest: [u8; 32],
    },
    /// A directory.
    Dir {
        /// Permission bits.
        mode: u32,
    },
    /// A symbolic link (not followed when copied, as in `rootfs`).
    Symlink {
        /// Its target, as written.
        target: String,
        /// Where it leads when followed, resolved beneath the tree root
        /// (a `files` source or a `run` script may be a link).
        leads: LinkTarget,
    },
}

/// Where a symbolic link of the tree leads when followed beneath the tree
/// root ([`crate::tree_fs::TreeRoot::follow`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkTarget {
    /// A regular file inside the tree.
    File {
        /// Permission bits.
        mode: u32,
        /// Size in bytes.
        size: u64,
        /// BLAKE3 of the content.
        digest: [u8; 32],
    },
    /// A folder inside the tree.
    Dir,
    /// Out of the tree: an absolute target, or `..` above the root.
    Outside,
    /// Nothing that can be read: dangling, a loop, or not a file or folder.
    Missing,
}

/// Why a tree could not be loaded: every problem found, and the files they
/// point into.
#[derive(Debug)]
pub struct LoadFailure {
    /// The files read.
    pub files: SourceMap,
    /// The problems.
    pub diagnostics: Vec<Diagnostic>,
    /// What could be read despite them (bad entries dropped), so that a
    /// caller can look for further problems (a plan's) and report all of
    /// them at once. Never build from it.
    pub partial: Option<Box<Tree>>,
}

const ROOT_FIELDS: &[&str] = &[
    "sources",
    "output",
    "cache",
    "defaults",
    "dimensions",
    "mandatory",
    "exclude",
];
const SOURCE_FIELDS: &[&str] = &[
    "distribution",
    "uris",
    "suites",
    "components",
    "keyring",
    "architectures",
];
const OUTPUT_FIELDS: &[&str] = &["dir", "name", "epoch"];
const CACHE_FIELDS: &[&str] = &["dir"];

/// Loads the tree rooted at `root` (the folder holding `kiln.toml`).
pub fn load(root: &Path, options: &LoadOptions) -> Result<Tree, LoadFailure> {
    let mut files = SourceMap::default();
    let mut diags = Diagnostics::default();
    let tree = load_inner(root, options, &mut files, &mut diags);
    match tree {
        Some(tree) if diags.is_empty() => Ok(Tree { files, ..tree }),
        tree => Err(LoadFailure {
            partial: tree.map(|t| {
                Box::new(Tree {
                    files: files.clone(),
                    ..t
                })
            }),
            files,
            diagnostics: diags.into_vec(),
        }),
    }
}

fn read_text(
    tree: &TreeRoot,
    path: &Path,
    display: String,
    files: &mut SourceMap,
    diags: &mut Diagnostics,
) -> Option<FileId> {
    let rel = tree.relative(path).unwrap_or(path);
    match tree.read(rel) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => Some(files.add(display, path.to_path_buf(), text)),
            Err(e) => {
                // Kept (lossily) so the error points at a line and column.
                let at = e.utf8_error().valid_up_to();
                let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
                let id = files.add(display.clone(), path.to_path_buf(), text);
                let span = at..at + '\u{fffd}'.len_utf8();
                diags.push(
                    Diagnostic::at(
                        &Origin { file: id, span },
                        format!("failed to read `{display}`: not valid UTF-8"),
                        "not UTF-8 from here",
                    )
                    .with_help(
                        "kiln's configuration files are UTF-8 text; re-save the file as UTF-8",
                    ),
                );
                None
            }
        },
        Err(OpenError::Outside) => {
            diags.push(
                Diagnostic::new(format!(
                    "failed to read `{display}`: it is a symbolic link leading out of the tree"
                ))
                .with_path(path)
                .with_help(OUTSIDE_HELP),
            );
            None
        }
        Err(OpenError::Io(e)) => {
            diags.push(
                Diagnostic::new(format!("failed to read `{display}`: {}", io_reason(&e)))
                    .with_path(path),
            );
            None
        }
    }
}

fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        io::ErrorKind::IsADirectory => "it is a directory".to_string(),
        _ => e.to_string(),
    }
}

fn load_inner(
    root: &Path,
    options: &LoadOptions,
    files: &mut SourceMap,
    diags: &mut Diagnostics,
) -> Option<Tree> {
    let root_file = root.join(ROOT_FILE);
    if !root_file.exists() && !root_file.is_symlink() {
        diags.push(
            Diagnostic::new(format!(
                "failed to find `{ROOT_FILE}` in `{}`",
                root.display()
            ))
            .with_help(
                "point kiln at the folder that holds kiln.toml, or create one with `kiln init`",
            ),
        );
        return None;
    }
    let tree = match TreeRoot::open_root(root) {
        Ok(t) => t,
        Err(e) => {
            diags.push(
                Diagnostic::new(format!(
                    "failed to read folder `{}`: {}",
                    root.display(),
                    io_reason(&e)
                ))
                .with_path(root),
            );
            return None;
        }
    };
    let root_id = read_text(&tree, &root_file, ROOT_FILE.to_string(), files, diags)?;
    let doc = parse_document(root_id, &files.get(root_id).text.clone(), diags)?;
    let Kind::Table(top) = doc.kind else {
        unreachable!("a document is a table")
    };

    for (key, entry) in &top {
        if !ROOT_FIELDS.contains(&key.as_str()) {
            diags.push(unknown_field(key, &entry.key, ROOT_FIELDS, "kiln.toml"));
        }
    }

    // Dimensions first: fragments are checked against their keys.
    let dimensions = read_dimensions(top.get("dimensions").map(|e| &e.value), diags);
    let mut all_keys = BTreeSet::new();
    let mut seen: BTreeMap<&str, &DimensionKey> = BTreeMap::new();
    for dim in &dimensions {
        for key in &dim.keys {
            if let Some(first) = seen.get(key.name.as_str()) {
                diags.push(
                    Diagnostic::at(
                        &key.origin,
                        format!("dimension key `{}` is declared twice", key.name),
                        "declared again here",
                    )
                    .with_secondary(&first.origin, "first declared here")
                    .with_help("keys are used without their dimension in `when`, `exclude` and `--only`, so they must be unique across dimensions"),
                );
            } else {
                seen.insert(&key.name, key);
            }
            all_keys.insert(key.name.clone());
        }
    }
    let dim_names: Vec<String> = dimensions.iter().map(|d| d.name.clone()).collect();
    let known = Known {
        keys: &all_keys,
        dimensions: &dim_names,
    };
    let mut dimensions = dimensions;
    for dim in &mut dimensions {
        for key in &mut dim.keys {
            schema::check_fragment(&mut key.fragment, FragmentKind::Shared, &known, diags);
        }
    }
    let defaults = fragment(top.get("defaults").map(|e| &e.value), &known, diags);
    let mandatory = fragment(top.get("mandatory").map(|e| &e.value), &known, diags);
    let excludes = read_excludes(top.get("exclude").map(|e| &e.value), &known, diags);

    let output = read_output(top.get("output").map(|e| &e.value), diags);
    let cache_dir = read_cache(top.get("cache").map(|e| &e.value), diags);

    let (sources, from_host) = match top.get("sources") {
        Some(e) => (read_sources(&tree, &e.value, diags), false),
        None => {
            let host = source::host_sources(&options.host_root, files, diags);
            if host.is_empty() {
                diags.push(
                    Diagnostic::new(format!(
                        "failed to find package sources: `kiln.toml` has no `[[sources]]` and `{}` lists no `deb` source",
                        options.host_root.join("etc/apt").display()
                    ))
                    .with_help("add a `[[sources]]` table with `uris`, `suites` and `components`"),
                );
            }
            (host, true)
        }
    };

    let mut skip = vec![root.join(&output.dir)];
    if let Some(c) = &cache_dir {
        skip.push(root.join(c));
    }
    let (images, broken_images) = read_images(&tree, &skip, &known, files, diags);

    let mut shared_paths = Vec::new();
    collect_paths(&defaults, &mut shared_paths);
    collect_paths(&mandatory, &mut shared_paths);
    for dim in &dimensions {
        for key in &dim.keys {
            collect_paths(&key.fragment, &mut shared_paths);
        }
    }
    let shared_files = shared_inventory(&tree, &shared_paths, &skip, diags);

    Some(Tree {
        root_file: root_id,
        broken_images,
        shared_files,
        root: root.to_path_buf(),
        files: SourceMap::default(),
        sources,
        sources_from_host: from_host,
        output,
        cache_dir,
        defaults,
        dimensions,
        mandatory,
        excludes,
        images,
    })
}

fn fragment(v: Option<&Value>, known: &Known<'_>, diags: &mut Diagnostics) -> Table {
    match v {
        None => Table::new(),
        Some(v) => match &v.kind {
            Kind::Table(t) => {
                let mut t = t.clone();
                schema::check_fragment(&mut t, FragmentKind::Shared, known, diags);
                t
            }
            _ => {
                diags.push(schema::type_error(v, "a table"));
                Table::new()
            }
        },
    }
}

fn read_dimensions(v: Option<&Value>, diags: &mut Diagnostics) -> Vec<Dimension> {
    let Some(v) = v else { return Vec::new() };
    let Some(t) = v.as_table() else {
        diags.push(schema::type_error(v, "a table of dimensions"));
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, entry) in t {
        if !is_word(name) {
            diags.push(Diagnostic::at(
                &entry.key,
                format!("invalid dimension name `{name}`"),
                "use letters, digits, `_` and `-`",
            ));
            continue;
        }
        let Some(keys) = entry.value.as_table() else {
            diags.push(schema::type_error(
                &entry.value,
                "a table of keys, each with a fragment table",
            ));
            continue;
        };
        if keys.is_empty() {
            diags.push(Diagnostic::at(
                &entry.key,
                format!("dimension `{name}` has no keys"),
                "add at least one key",
            ));
            continue;
        }
        let mut dim = Dimension {
            name: name.clone(),
            origin: entry.key.clone(),
            keys: Vec::new(),
        };
        for (key, k) in keys {
            if key.is_empty() || key.contains(char::is_whitespace) || key.contains(['{', '}', '/'])
            {
                diags.push(Diagnostic::at(
                    &k.key,
                    format!("invalid dimension key `{key}`"),
                    "keys may not be empty or hold spaces, braces or `/`",
                ));
                continue;
            }
            match k.value.as_table() {
                Some(frag) => dim.keys.push(DimensionKey {
                    name: key.clone(),
                    origin: k.key.clone(),
                    fragment: frag.clone(),
                }),
                None => diags.push(schema::type_error(
                    &k.value,
                    "a table (the key's configuration fragment; `{}` for none)",
                )),
            }
        }
        out.push(dim);
    }
    out
}

fn is_word(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn read_excludes(
    v: Option<&Value>,
    known: &Known<'_>,
    diags: &mut Diagnostics,
) -> Vec<ExcludeRule> {
    let Some(v) = v else { return Vec::new() };
    let Some(items) = v.as_array() else {
        diags.push(schema::type_error(
            v,
            "a list of key lists, such as [[\"arm64\", \"bios\"]]",
        ));
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in items {
        let Some(keys) = item.as_array() else {
            diags.push(schema::type_error(item, "a list of dimension keys"));
            continue;
        };
        let mut rule = ExcludeRule {
            keys: Vec::new(),
            origin: item.origin.clone(),
        };
        for k in keys {
            match k.as_str() {
                Some(s) if known.keys.contains(s) => rule.keys.push(s.to_string()),
                Some(s) => diags.push(
                    Diagnostic::at(
                        &k.origin,
                        format!("unknown dimension key `{s}` in `exclude`"),
                        did_you_mean(s, known.keys.iter().map(String::as_str)),
                    )
                    .with_help(format!(
                        "dimension keys: {}",
                        known.keys.iter().cloned().collect::<Vec<_>>().join(", ")
                    )),
                ),
                None => diags.push(schema::type_error(k, "a dimension key (string)")),
            }
        }
        if keys.is_empty() {
            diags.push(Diagnostic::at(
                &item.origin,
                "empty `exclude` rule".to_string(),
                "it would exclude every variant",
            ));
        }
        out.push(rule);
    }
    out
}

fn read_output(v: Option<&Value>, diags: &mut Diagnostics) -> OutputSettings {
    let mut out = OutputSettings {
        dir: PathBuf::from(DEFAULT_OUTPUT_DIR),
        name: None,
        epoch: None,
    };
    let Some(v) = v else { return out };
    let Some(t) = v.as_table() else {
        diags.push(schema::type_error(v, "a table"));
        return out;
    };
    for (key, e) in t {
        match key.as_str() {
            "dir" => match e.value.as_str() {
                Some(s) if !s.is_empty() => out.dir = PathBuf::from(s),
                _ => diags.push(schema::type_error(&e.value, "a non-empty folder path")),
            },
            "name" => match e.value.as_str() {
                Some(s) => out.name = Some((s.to_string(), e.value.origin.clone())),
                None => diags.push(schema::type_error(
                    &e.value,
                    "a name template such as \"{image}-{keys}\"",
                )),
            },
            "epoch" => match e.value.as_integer() {
                Some(n) if n >= 0 => out.epoch = Some(n),
                _ => diags.push(
                    Diagnostic::at(
                        &e.value.origin,
                        "invalid `epoch`".to_string(),
                        "expected seconds since 1970 (a non-negative integer)",
                    )
                    .with_help("`epoch` is used as SOURCE_DATE_EPOCH for every build of the tree"),
                ),
            },
            _ => diags.push(unknown_field(key, &e.key, OUTPUT_FIELDS, "[output]")),
        }
    }
    out
}

fn read_cache(v: Option<&Value>, diags: &mut Diagnostics) -> Option<PathBuf> {
    let v = v?;
    let Some(t) = v.as_table() else {
        diags.push(schema::type_error(v, "a table"));
        return None;
    };
    let mut dir = None;
    for (key, e) in t {
        if key == "dir" {
            match e.value.as_str() {
                Some(s) if !s.is_empty() => dir = Some(PathBuf::from(s)),
                _ => diags.push(schema::type_error(&e.value, "a non-empty folder path")),
            }
        } else {
            diags.push(unknown_field(key, &e.key, CACHE_FIELDS, "[cache]"));
        }
    }
    dir
}

fn string_list(v: &Value, diags: &mut Diagnostics) -> Vec<String> {
    match v.as_array() {
        Some(items) => items
            .iter()
            .filter_map(|i| {
                let s = i.as_str();
                if s.is_none() {
                    diags.push(schema::type_error(i, "a string"));
                }
                s.map(str::to_string)
            })
            .collect(),
        None => {
            diags.push(schema::type_error(v, "a list of strings"));
            Vec::new()
        }
    }
}

fn read_sources(tree: &TreeRoot, v: &Value, diags: &mut Diagnostics) -> Vec<PackageSource> {
    let Some(items) = v.as_array() else {
        diags.push(schema::type_error(v, "a list of `[[sources]]` tables"));
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in items {
        let Some(t) = item.as_table() else {
            diags.push(schema::type_error(item, "a table"));
            continue;
        };
        let mut src = PackageSource {
            distribution: Distribution::Debian,
            uris: Vec::new(),
            suites: Vec::new(),
            components: vec!["main".to_string()],
            keyring: Keyring::File(PathBuf::from(DEFAULT_KEYRING)),
            architectures: Vec::new(),
            origin: Some(item.origin.clone()),
        };
        for (key, e) in t {
            match key.as_str() {
                "distribution" => match e.value.as_str().map(|s| (s, Distribution::from_name(s))) {
                    Some((_, Some(d))) => src.distribution = d,
                    Some((s, None)) => diags.push(Diagnostic::at(
                        &e.value.origin,
                        format!("unknown distribution `{s}`"),
                        "kiln knows `debian`",
                    )),
                    None => diags.push(schema::type_error(&e.value, "a string")),
                },
                "uris" => src.uris = string_list(&e.value, diags),
                "suites" => src.suites = string_list(&e.value, diags),
                "components" => src.components = string_list(&e.value, diags),
                "architectures" => src.architectures = string_list(&e.value, diags),
                "keyring" => match e.value.as_str() {
                    Some(s) => {
                        check_keyring(tree, s, &e.value.origin, diags);
                        src.keyring = Keyring::File(PathBuf::from(s));
                    }
                    None => diags.push(schema::type_error(&e.value, "a keyring file path")),
                },
                _ => diags.push(unknown_field(key, &e.key, SOURCE_FIELDS, "[[sources]]")),
            }
        }
        for (field, empty) in [
            ("uris", src.uris.is_empty()),
            ("suites", src.suites.is_empty()),
        ] {
            if empty {
                diags.push(Diagnostic::at(
                    &item.origin,
                    format!("source without `{field}`"),
                    format!("add `{field} = [...]`"),
                ));
            }
        }
        out.push(src);
    }
    out
}

/// A keyring named by a relative path is a file of the tree: it must be
/// there, beneath the root. (An absolute path names one of the host's
/// keyrings, as `/usr/share/keyrings/debian-archive-keyring.gpg`.)
fn check_keyring(tree: &TreeRoot, path: &str, origin: &Origin, diags: &mut Diagnostics) {
    if Path::new(path).is_absolute() {
        return;
    }
    if path.split('/').any(|c| c == "..") {
        diags.push(
            Diagnostic::at(origin, format!("path `{path}` leaves the tree"), "must not hold `..`")
                .with_help("a relative keyring path is relative to the tree root; name a host keyring by its absolute path"),
        );
        return;
    }
    match tree.read(Path::new(path)) {
        Ok(_) => {}
        Err(OpenError::Outside) => diags.push(
            Diagnostic::at(
                origin,
                format!("`{path}` is a symbolic link leading out of the tree"),
                "named here",
            )
            .with_help(OUTSIDE_HELP),
        ),
        Err(OpenError::Io(e)) => diags.push(
            Diagnostic::at(
                origin,
                format!("failed to read keyring `{path}`: {}", io_reason(&e)),
                "named here",
            )
            .with_help("a relative keyring path is relative to the tree root; name a host keyring by its absolute path"),
        ),
    }
}

/// Image folder names: path- and template-safe.
fn is_image_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

fn read_images(
    tree: &TreeRoot,
    skip: &[PathBuf],
    known: &Known<'_>,
    files: &mut SourceMap,
    diags: &mut Diagnostics,
) -> (Vec<ImageDef>, Vec<String>) {
    let root = tree.path();
    let mut broken = Vec::new();
    let mut dirs = Vec::new();
    discover(root, root, skip, &mut dirs, diags);
    let mut images: Vec<ImageDef> = Vec::new();
    let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
    for dir in dirs {
        let rel = dir.strip_prefix(root).unwrap_or(&dir).to_path_buf();
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let display = format!("{}/{IMAGE_FILE}", rel.display());
        let Some(id) = read_text(tree, &dir.join(IMAGE_FILE), display.clone(), files, diags) else {
            broken.push(name);
            continue;
        };
        let whole = Origin {
            file: id,
            span: 0..0,
        };
        if !is_image_name(&name) {
            diags.push(
                Diagnostic::new(format!("invalid image name `{name}` (the folder `{}`)", rel.display()))
                    .with_path(dir.join(IMAGE_FILE))
                    .with_help("image folder names use letters, digits and `._-`, starting with a letter or digit"),
            );
            continue;
        }
        if let Some(&first) = by_name.get(&name) {
            let first_display = files.get(images[first].manifest).display.clone();
            diags.push(
                Diagnostic::at(
                    &whole,
                    format!("two images are named `{name}`: `{first_display}` and `{display}`"),
                    "second image named so",
                )
                .with_secondary(
                    &Origin {
                        file: images[first].manifest,
                        span: 0..0,
                    },
                    "first image named so",
                )
                .with_help("an image's name is its folder's name; rename one of the folders"),
            );
            continue;
        }
        let text = files.get(id).text.clone();
        let Some(doc) = parse_document(id, &text, diags) else {
            broken.push(name);
            continue;
        };
        let Kind::Table(mut table) = doc.kind else {
            continue;
        };
        schema::check_fragment(&mut table, FragmentKind::Image, known, diags);
        let matrix = table
            .shift_remove(schema::MATRIX)
            .map(|e| matrix_rules(&e.value))
            .unwrap_or_default();
        let inventory = inventory(tree, &dir, skip, diags);
        by_name.insert(name.clone(), images.len());
        images.push(ImageDef {
            name,
            dir: rel,
            manifest: id,
            fragment: table,
            matrix,
            files: inventory,
        });
    }
    images.sort_by(|a, b| a.name.cmp(&b.name));
    (images, broken)
}

fn matrix_rules(v: &Value) -> Vec<MatrixRule> {
    let Some(t) = v.as_table() else {
        return Vec::new();
    };
    t.iter()
        .filter_map(|(dim, e)| match &e.value.kind {
            Kind::Bool(false) => Some(MatrixRule::OptOut {
                dimension: dim.clone(),
            }),
            Kind::Array(items) => Some(MatrixRule::Only {
                dimension: dim.clone(),
                keys: items
                    .iter()
                    .filter_map(|i| i.as_str().map(str::to_string))
                    .collect(),
            }),
            _ => None,
        })
        .collect()
}

fn sorted_entries(dir: &Path, diags: &mut Diagnostics) -> Vec<fs::DirEntry> {
    match fs::read_dir(dir) {
        Ok(rd) => {
            let mut entries: Vec<fs::DirEntry> = Vec::new();
            for e in rd {
                match e {
                    Ok(e) => entries.push(e),
                    Err(e) => diags.push(
                        Diagnostic::new(format!(
                            "failed to read folder `{}`: {}",
                            dir.display(),
                            io_reason(&e)
                        ))
                        .with_path(dir),
                    ),
                }
            }
            entries.sort_by_key(fs::DirEntry::file_name);
            entries
        }
        Err(e) => {
            diags.push(
                Diagnostic::new(format!(
                    "failed to read folder `{}`: {}",
                    dir.display(),
                    io_reason(&e)
                ))
                .with_path(dir),
            );
            Vec::new()
        }
    }
}

fn discover(
    root: &Path,
    dir: &Path,
    skip: &[PathBuf],
    out: &mut Vec<PathBuf>,
    diags: &mut Diagnostics,
) {
    if dir != root && dir.join(IMAGE_FILE).symlink_metadata().is_ok() {
        out.push(dir.to_path_buf());
    }
    for e in sorted_entries(dir, diags) {
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = e.path();
        if skip.contains(&path) {
            continue;
        }
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            discover(root, &path, skip, out, diags);
        }
    }
}

fn inventory(
    tree: &TreeRoot,
    dir: &Path,
    skip: &[PathBuf],
    diags: &mut Diagnostics,
) -> Vec<FileEntry> {
    let mut out = Vec::new();
    walk_image(tree, dir, dir, skip, &mut out, diags);
    out.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    out
}

fn walk_image(
    tree: &TreeRoot,
    base: &Path,
    dir: &Path,
    skip: &[PathBuf],
    out: &mut Vec<FileEntry>,
    diags: &mut Diagnostics,
) {
    for e in sorted_entries(dir, diags) {
        let path = e.path();
        if e.file_name().to_str().is_none() {
            // Recorded lossily, it could be neither digested nor copied.
            diags.push(
                Diagnostic::new(format!(
                    "unsupported file name at `{}`: it is not UTF-8",
                    path.display()
                ))
                .with_path(&path)
                .with_help("rename the file; kiln's inventory of a folder holds UTF-8 names"),
            );
            continue;
        }
        let rel = path.strip_prefix(base).unwrap_or(&path);
        let rel_str = rel.to_string_lossy().replace('\\', "/");
        if dir == base && (rel_str == IMAGE_FILE || rel_str == ".git") {
            continue;
        }
        if skip.contains(&path) {
            continue;
        }
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(err) => {
                diags.push(
                    Diagnostic::new(format!(
                        "failed to read `{}`: {}",
                        path.display(),
                        io_reason(&err)
                    ))
                    .with_path(&path),
                );
                continue;
            }
        };
        let ft = meta.file_type();
        let mode = meta.permissions().mode() & 0o7777;
        if ft.is_symlink() {
            match fs::read_link(&path) {
                Ok(t) => out.push(FileEntry {
                    path: rel_str,
                    kind: FileKind::Symlink {
                        target: t.to_string_lossy().into_owned(),
                        leads: tree.follow(tree.relative(&path).unwrap_or(&path)),
                    },
                }),
                Err(err) => diags.push(
                    Diagnostic::new(format!(
                        "failed to read link `{}`: {}",
                        path.display(),
                        io_reason(&err)
                    ))
                    .with_path(&path),
                ),
            }
        } else if ft.is_dir() {
            if path.join(IMAGE_FILE).symlink_metadata().is_ok() {
                continue; // another image's folder
            }
            out.push(FileEntry {
                path: rel_str,
                kind: FileKind::Dir { mode },
            });
            walk_image(tree, base, &path, skip, out, diags);
        } else if ft.is_file() {
            match hash_file(tree, &path) {
                Ok(digest) => out.push(FileEntry {
                    path: rel_str,
                    kind: FileKind::File {
                        mode,
                        size: meta.len(),
                        digest,
                    },
                }),
                Err(err) => diags.push(
                    Diagnostic::new(format!(
                        "failed to read `{}`: {}",
                        path.display(),
                        io_reason(&err)
                    ))
                    .with_path(&path),
                ),
            }
        } else {
            diags.push(
                Diagnostic::new(format!("unsupported file type at `{}` (a device, socket or FIFO)", path.display()))
                    .with_path(&path)
                    .with_help("image folders hold regular files, folders and symbolic links; create special files with a `run` script"),
            );
        }
    }
}

/// BLAKE3 of a regular file of the tree, opened beneath its root.
fn hash_file(tree: &TreeRoot, path: &Path) -> io::Result<[u8; 32]> {
    let rel = tree.relative(path).unwrap_or(path);
    match tree.open(rel) {
        Ok(file) => hash_reader(file),
        Err(OpenError::Outside) => Err(io::Error::other(
            "it is a symbolic link leading out of the tree",
        )),
        Err(OpenError::Io(e)) => Err(e),
    }
}

/// Every entry below `dir` (a folder of the tree `tree`), as an image
/// folder's inventory lists them; the first problem is the error.
pub(crate) fn scan_folder(tree: &TreeRoot, dir: &Path) -> io::Result<Vec<FileEntry>> {
    let mut diags = Diagnostics::default();
    let out = inventory(tree, dir, &[], &mut diags);
    match diags.into_vec().into_iter().next() {
        Some(d) => Err(io::Error::other(d.message)),
        None => Ok(out),
    }
}

/// Relative paths a fragment names: `rootfs`, `run` scripts, `files` sources,
/// in `when` blocks too.
fn collect_paths(t: &Table, out: &mut Vec<(String, Origin)>) {
    fn push(out: &mut Vec<(String, Origin)>, v: &Value) {
        if let Some(s) = v.as_str() {
            out.push((s.trim_start_matches("./").to_string(), v.origin.clone()));
        }
    }
    for (key, e) in t {
        match schema::split_replace(key).0 {
            "rootfs" => push(out, &e.value),
            "run" => {
                for item in e.value.as_array().unwrap_or_default() {
                    match &item.kind {
                        Kind::String(_) => push(out, item),
                        Kind::Table(step) => {
                            if let Some(s) = step.get("script") {
                                push(out, &s.value);
                            }
                        }
                        _ => {}
                    }
                }
            }
            "files" => {
                for item in e.value.as_array().unwrap_or_default() {
                    if let Some(s) = item.as_table().and_then(|f| f.get("source")) {
                        push(out, &s.value);
                    }
                }
            }
            schema::WHEN => {
                for block in e.value.as_table().into_iter().flat_map(|w| w.values()) {
                    if let Some(frag) = block.value.as_table() {
                        collect_paths(frag, out);
                    }
                }
            }
            _ => {}
        }
    }
}

fn shared_inventory(
    tree: &TreeRoot,
    paths: &[(String, Origin)],
    skip: &[PathBuf],
    diags: &mut Diagnostics,
) -> Vec<FileEntry> {
    let root = tree.path();
    let mut out: Vec<FileEntry> = Vec::new();
    for (rel, origin) in paths {
        if rel.is_empty() || rel.starts_with('/') || rel.split('/').any(|c| c == "..") {
            continue; // reported by the settings check
        }
        // A folder on the way that is a link out of the tree: refused
        // before anything below it is listed.
        let parent = Path::new(rel).parent().unwrap_or(Path::new(""));
        if !parent.as_os_str().is_empty() {
            if let Err(OpenError::Outside) = tree.open(parent) {
                diags.push(
                    Diagnostic::at(
                        origin,
                        format!(
                            "`{rel}` is below `{}`, a symbolic link leading out of the tree",
                            parent.display()
                        ),
                        "named here",
                    )
                    .with_help(OUTSIDE_HELP),
                );
                continue;
            }
        }
        let path = root.join(rel);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                out.push(FileEntry {
                    path: rel.clone(),
                    kind: FileKind::Dir {
                        mode: meta.permissions().mode() & 0o7777,
                    },
                });
                let mut inner = Vec::new();
                walk_image(tree, &path, &path, skip, &mut inner, diags);
                out.extend(inner.into_iter().map(|e| FileEntry {
                    path: format!("{rel}/{}", e.path),
                    kind: e.kind,
                }));
            }
            Ok(meta) if meta.is_file() => match hash_file(tree, &path) {
                Ok(digest) => out.push(FileEntry {
                    path: rel.clone(),
                    kind: FileKind::File {
                        mode: meta.permissions().mode() & 0o7777,
                        size: meta.len(),
                        digest,
                    },
                }),
                Err(e) => diags.push(Diagnostic::at(
                    origin,
                    format!("failed to read `{rel}`: {}", io_reason(&e)),
                    "named here",
                )),
            },
            Ok(meta) if meta.is_symlink() => match fs::read_link(&path) {
                Ok(t) => out.push(FileEntry {
                    path: rel.clone(),
                    kind: FileKind::Symlink {
                        target: t.to_string_lossy().into_owned(),
                        leads: tree.follow(Path::new(rel)),
                    },
                }),
                Err(e) => diags.push(Diagnostic::at(
                    origin,
                    format!("failed to read link `{rel}`: {}", io_reason(&e)),
                    "named here",
                )),
            },
            Ok(_) => diags.push(Diagnostic::at(
                origin,
                format!("`{rel}` is not a regular file or folder"),
                "named here",
            )),
            Err(e) => diags.push(
                Diagnostic::at(
                    origin,
                    format!("failed to read `{rel}`: {}", io_reason(&e)),
                    "named here",
                )
                .with_help("paths in kiln.toml are relative to the tree root"),
            ),
        }
    }
    out.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    out.dedup_by(|a, b| a.path == b.path);
    out
}
