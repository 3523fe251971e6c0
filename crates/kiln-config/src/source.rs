//! Package sources: the `[[sources]]` of `kiln.toml`, or the host's apt
//! sources when the tree names none.
//!
//! The host's sources are read from `etc/apt/sources.list.d/*.sources`
//! (deb822), `etc/apt/sources.list` and `etc/apt/sources.list.d/*.list`
//! (one-line format) below a configurable root, so tests can point the
//! reader at a fixture instead of `/`.

use std::path::{Path, PathBuf};

use crate::diagnostic::{Diagnostic, Diagnostics, FileId, Origin, SourceMap};

/// The keyring Debian's archive is signed with, used when a source names none.
pub const DEFAULT_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The distributions kiln can bootstrap (closed set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Distribution {
    /// Debian and its derivatives' apt repositories.
    Debian,
}

impl Distribution {
    /// Every distribution.
    pub const ALL: &'static [Distribution] = &[Distribution::Debian];

    /// The name used in `from = "<name>:<suite>"` and `distribution = ...`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Debian => "debian",
        }
    }

    /// The distribution with this name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|d| d.name() == name)
    }
}

/// The key that signs a source's `InRelease`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Keyring {
    /// A keyring file (binary or armored).
    File(PathBuf),
    /// An armored key block written inline (deb822 `Signed-By:` may hold one).
    Inline(String),
}

/// One package source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageSource {
    /// The distribution it serves.
    pub distribution: Distribution,
    /// Mirror URIs, tried in order.
    pub uris: Vec<String>,
    /// Suites (`bookworm`, `bookworm-updates`, ...).
    pub suites: Vec<String>,
    /// Components (`main`, ...).
    pub components: Vec<String>,
    /// The signing key.
    pub keyring: Keyring,
    /// Architectures the source restricts itself to; empty means any.
    pub architectures: Vec<String>,
    /// Where the source was written.
    pub origin: Option<Origin>,
}

/// Reads the host's apt sources below `apt_root` (normally `/`).
///
/// Only `deb` entries that are not disabled are kept. Files that cannot be
/// read or parsed are reported; the others are still used.
pub fn host_sources(
    apt_root: &Path,
    map: &mut SourceMap,
    diags: &mut Diagnostics,
) -> Vec<PackageSource> {
    let etc = apt_root.join("etc/apt");
    let mut out = Vec::new();
    let list = etc.join("sources.list");
    if list.is_file() {
        if let Some(id) = read(&list, map, diags) {
            out.extend(parse_one_line(id, map, diags));
        }
    }
    let dir = etc.join("sources.list.d");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    entries.sort();
    for path in entries {
        let ext = path.extension().and_then(|e| e.to_str());
        match ext {
            Some("sources") => {
                if let Some(id) = read(&path, map, diags) {
                    out.extend(parse_deb822(id, map, diags));
                }
            }
            Some("list") => {
                if let Some(id) = read(&path, map, diags) {
                    out.extend(parse_one_line(id, map, diags));
                }
            }
            _ => {}
        }
    }
    out
}

fn read(path: &Path, map: &mut SourceMap, diags: &mut Diagnostics) -> Option<FileId> {
    match std::fs::read_to_string(path) {
        Ok(text) => Some(map.add(path.display().to_string(), path.to_path_buf(), text)),
        Err(e) => {
            diags.push(
                Diagnostic::new(format!(
                    "failed to read apt source `{}`: {e}",
                    path.display()
                ))
                .with_path(path),
            );
            None
        }
    }
}

/// Parses a deb822 `.sources` file.
pub fn parse_deb822(id: FileId, map: &SourceMap, diags: &mut Diagnostics) -> Vec<PackageSource> {
    let text = &map.get(id).text;
    let mut out = Vec::new();
    let mut fields: Vec<(String, String, usize)> = Vec::new();
    let mut start = 0usize;
    let mut offset = 0usize;
    for line in text.split_inclusive('\n') {
        let here = offset;
        offset += line.len();
        let trimmed = line.trim_end_matches(['\n', '\r']);
        if trimmed.starts_with('#') {
            continue;
        }
        if trimmed.trim().is_empty() {
            if !fields.is_empty() {
                out.extend(deb822_stanza(id, &fields, start..here, diags));
                fields.clear();
            }
            continue;
        }
        if trimmed.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                let cont = trimmed.trim();
                last.1.push('\n');
                if cont != "." {
                    last.1.push_str(cont);
                }
            } else {
                diags.push(Diagnostic::at(
                    &Origin {
                        file: id,
                        span: here..here + trimmed.len(),
                    },
                    "continuation line without a field in apt source".to_string(),
                    "",
                ));
            }
            continue;
        }
        if fields.is_empty() {
            start = here;
        }
        match trimmed.split_once(':') {
            Some((name, value)) => fields.push((
                name.trim().to_ascii_lowercase(),
                value.trim().to_string(),
                here,
            )),
            None => diags.push(Diagnostic::at(
                &Origin {
                    file: id,
                    span: here..here + trimmed.len(),
                },
                "malformed line in apt source".to_string(),
                "expected `Field: value`",
            )),
        }
    }
    if !fields.is_empty() {
        out.extend(deb822_stanza(id, &fields, start..text.len(), diags));
    }
    out
}

fn deb822_stanza(
    id: FileId,
    fields: &[(String, String, usize)],
    span: std::ops::Range<usize>,
    diags: &mut Diagnostics,
) -> Option<PackageSource> {
    let get = |name: &str| fields.iter().find(|f| f.0 == name).map(|f| f.1.as_str());
    let words = |name: &str| -> Vec<String> {
        get(name)
            .map(|v| v.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    };
    let origin = Origin { file: id, span };
    if get("enabled").is_some_and(|v| v.eq_ignore_ascii_case("no")) {
        return None;
    }
    if !words("types").iter().any(|t| t == "deb") {
        return None;
    }
    let uris = words("uris");
    let suites = words("suites");
    if uris.is_empty() || suites.is_empty() {
        diags.push(Diagnostic::at(
            &origin,
            "apt source without `URIs` or `Suites`".to_string(),
            "incomplete entry",
        ));
        return None;
    }
    let keyring = match get("signed-by") {
        Some(v) if v.contains("BEGIN PGP") => Keyring::Inline(v.trim().to_string()),
        Some(v) if !v.trim().is_empty() => {
            Keyring::File(PathBuf::from(v.split_whitespace().next().unwrap_or(v)))
        }
        _ => Keyring::File(PathBuf::from(DEFAULT_KEYRING)),
    };
    Some(PackageSource {
        distribution: Distribution::Debian,
        uris,
        suites,
        components: words("components"),
        keyring,
        architectures: words("architectures"),
        origin: Some(origin),
    })
}

/// Parses a one-line-format `sources.list`.
pub fn parse_one_line(id: FileId, map: &SourceMap, diags: &mut Diagnostics) -> Vec<PackageSource> {
    let text = &map.get(id).text;
    let mut out = Vec::new();
    let mut offset = 0usize;
    for line in text.split_inclusive('\n') {
        let here = offset;
        offset += line.len();
        let content = line.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let origin = Origin {
            file: id,
            span: here..here + line.trim_end().len(),
        };
        let (kind, rest) = content
            .split_once(char::is_whitespace)
            .unwrap_or((content, ""));
        if kind == "deb-src" {
            continue;
        }
        if kind != "deb" {
            diags.push(Diagnostic::at(
                &origin,
                format!("unknown apt source type `{kind}`"),
                "expected `deb`",
            ));
            continue;
        }
        let mut rest = rest.trim();
        let mut options: Vec<(String, String)> = Vec::new();
        if let Some(after) = rest.strip_prefix('[') {
            let Some((opts, tail)) = after.split_once(']') else {
                diags.push(Diagnostic::at(
                    &origin,
                    "unclosed `[` in apt source".to_string(),
                    "",
                ));
                continue;
            };
            for opt in opts.split_whitespace() {
                if let Some((k, v)) = opt.split_once('=') {
                    options.push((k.to_ascii_lowercase(), v.to_string()));
                }
            }
            rest = tail.trim();
        }
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            diags.push(Diagnostic::at(
                &origin,
                "apt source line without URI and suite".to_string(),
                "",
            ));
            continue;
        };
        let opt = |k: &str| options.iter().find(|o| o.0 == k).map(|o| o.1.clone());
        out.push(PackageSource {
            distribution: Distribution::Debian,
            uris: vec![uri.to_string()],
            suites: vec![suite.to_string()],
            components: words.map(str::to_string).collect(),
            keyring: Keyring::File(PathBuf::from(
                opt("signed-by").unwrap_or_else(|| DEFAULT_KEYRING.to_string()),
            )),
            architectures: opt("arch")
                .map(|a| a.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
            origin: Some(origin),
        });
    }
    out
}
