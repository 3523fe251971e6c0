//! The shape of every fragment field, checked before any merge.
//!
//! Each fragment (`[defaults]`, a dimension key, a `when` block, an
//! `image.toml`, `[mandatory]`) is checked on its own against this schema, so
//! an unknown field or a wrong type is reported once, at the line that wrote
//! it, however many variants the fragment ends up in.

use std::collections::BTreeSet;

use crate::diagnostic::{Diagnostic, Diagnostics, did_you_mean};
use crate::output::OutputFormat;
use crate::value::{Kind, Table, Value};

/// What a field holds.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Shape {
    String,
    OneOf(&'static [&'static str]),
    Bool,
    Integer,
    /// A file mode: an octal string such as `"0755"` or an integer.
    Mode,
    StringList,
    /// `name` or `name=version` package names.
    PackageList,
    /// A table of strings; keys are user data (environment names, labels).
    StringMap {
        env_names: bool,
    },
    Table(&'static [Field]),
    TableList(&'static [Field]),
    /// A list whose entries are a string (the `short` field) or a table.
    StringOrTableList {
        short: &'static str,
        fields: &'static [Field],
    },
    Outputs,
    /// A duration such as `"45m"`, `"3s"`, `"1h30m"`.
    Duration,
}

/// One field of a table.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Field {
    pub name: &'static str,
    pub shape: Shape,
}

const fn f(name: &'static str, shape: Shape) -> Field {
    Field { name, shape }
}

/// The bootstrap variants a `debian:` image may ask for.
pub const BOOTSTRAP_VARIANTS: &[&str] = &["minbase", "essential", "required"];

const FILE_FIELDS: &[Field] = &[
    f("path", Shape::String),
    f("source", Shape::String),
    f("content", Shape::String),
    f("mode", Shape::Mode),
    f("owner", Shape::String),
    f("group", Shape::String),
];

const USER_FIELDS: &[Field] = &[
    f("name", Shape::String),
    f("uid", Shape::Integer),
    f("group", Shape::String),
    f("groups", Shape::StringList),
    f("shell", Shape::String),
    f("home", Shape::String),
    f("password", Shape::String),
    f("ssh_authorized_keys", Shape::StringList),
    f("system", Shape::Bool),
];

const SERVICE_FIELDS: &[Field] = &[
    f("enable", Shape::StringList),
    f("disable", Shape::StringList),
];

const RUN_FIELDS: &[Field] = &[
    f("name", Shape::String),
    f("script", Shape::String),
    f("inline", Shape::String),
    f("network", Shape::Bool),
];

const CLEANUP_FIELDS: &[Field] = &[
    f("apt", Shape::Bool),
    f("docs", Shape::Bool),
    f("man", Shape::Bool),
    f("locales", Shape::Bool),
    f("keep_locales", Shape::StringList),
    f("tmp", Shape::Bool),
    f("logs", Shape::Bool),
    f("machine_id", Shape::Bool),
    f("ssh_host_keys", Shape::Bool),
];

/// How `kiln test` boots an image.
pub const TEST_BOOTS: &[&str] = &["bios", "uefi", "direct", "netboot"];

const TEST_FIELDS: &[Field] = &[
    f("boot", Shape::OneOf(TEST_BOOTS)),
    f("timeout", Shape::Duration),
    f("expect", Shape::String),
    f("script", Shape::String),
    f("memory", Shape::String),
];

const CONTAINER_FIELDS: &[Field] = &[
    f("entrypoint", Shape::StringList),
    f("cmd", Shape::StringList),
    f("env", Shape::StringMap { env_names: true }),
    f("workdir", Shape::String),
    f("user", Shape::String),
];

const PUBLISH_FIELDS: &[Field] = &[
    f("registry", Shape::String),
    f("repository", Shape::String),
    f("tags", Shape::StringList),
    f("id", Shape::String),
];

/// The fields an image configuration has, in documentation order.
pub(crate) const IMAGE_FIELDS: &[Field] = &[
    f("from", Shape::String),
    f("variant", Shape::OneOf(BOOTSTRAP_VARIANTS)),
    f("description", Shape::String),
    f("name", Shape::String),
    f("arch", Shape::String),
    f("packages", Shape::PackageList),
    f("remove", Shape::StringList),
    f("rootfs", Shape::String),
    f("files", Shape::TableList(FILE_FIELDS)),
    f("hostname", Shape::String),
    f("users", Shape::TableList(USER_FIELDS)),
    f("services", Shape::Table(SERVICE_FIELDS)),
    f(
        "run",
        Shape::StringOrTableList {
            short: "script",
            fields: RUN_FIELDS,
        },
    ),
    f("env", Shape::StringMap { env_names: true }),
    f("cleanup", Shape::Table(CLEANUP_FIELDS)),
    f("outputs", Shape::Outputs),
    f("kernel", Shape::Bool),
    f("netboot", Shape::Bool),
    f("container", Shape::Table(CONTAINER_FIELDS)),
    f("labels", Shape::StringMap { env_names: false }),
    f("exclude", Shape::StringList),
    f("timeout", Shape::Duration),
    f("publish", Shape::Table(PUBLISH_FIELDS)),
    f("test", Shape::Table(TEST_FIELDS)),
];

/// Keys of a fragment that steer the matrix rather than configure an image.
pub(crate) const WHEN: &str = "when";
pub(crate) const MATRIX: &str = "matrix";

/// Where a fragment was written; decides which structural keys it may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FragmentKind {
    /// `[defaults]`, a dimension key, `[mandatory]` or a `when` block.
    Shared,
    /// An `image.toml`.
    Image,
}

/// Splits the replace marker off a key: `"packages!"` is `packages`, replacing.
#[must_use]
pub fn split_replace(key: &str) -> (&str, bool) {
    match key.strip_suffix('!') {
        Some(k) => (k, true),
        None => (key, false),
    }
}

/// Everything a fragment check needs to know about the tree.
pub(crate) struct Known<'a> {
    /// Every dimension key, for `when` and `exclude`.
    pub keys: &'a BTreeSet<String>,
    /// Dimension names, for `[matrix]`.
    pub dimensions: &'a [String],
}

/// Checks a fragment table against the image schema, and drops every entry
/// it reported, so later stages see only well-typed values and report no
/// follow-on problems.
pub(crate) fn check_fragment(
    table: &mut Table,
    kind: FragmentKind,
    known: &Known<'_>,
    diags: &mut Diagnostics,
) {
    let mut names: Vec<&str> = IMAGE_FIELDS.iter().map(|f| f.name).collect();
    names.push(WHEN);
    if kind == FragmentKind::Image {
        names.push(MATRIX);
    }
    let mut bad = Vec::new();
    for (key, entry) in table.iter_mut() {
        let before = diags.reported();
        let (name, _) = split_replace(key);
        match name {
            WHEN => check_when(&mut entry.value, known, diags),
            MATRIX if kind == FragmentKind::Image => check_matrix(&entry.value, known, diags),
            _ => match IMAGE_FIELDS.iter().find(|f| f.name == name) {
                Some(field) => {
                    check_value(field.shape, &entry.value, diags);
                    if name == "exclude" {
                        check_key_list(&entry.value, known, "exclude", diags);
                    }
                }
                None => diags.push(unknown_field(name, &entry.key, &names, "an image")),
            },
        }
        if diags.reported() != before && name != WHEN {
            bad.push(key.clone());
        }
    }
    for key in bad {
        table.shift_remove(&key);
    }
}

pub(crate) fn unknown_field(
    name: &str,
    at: &crate::diagnostic::Origin,
    names: &[&str],
    what: &str,
) -> Diagnostic {
    let hint = did_you_mean(name, names.iter().copied());
    let d = Diagnostic::at(at, format!("unknown field `{name}` in {what}"), hint);
    d.with_help(format!("known fields: {}", names.join(", ")))
}

fn check_when(v: &mut Value, known: &Known<'_>, diags: &mut Diagnostics) {
    let Kind::Table(t) = &mut v.kind else {
        diags.push(type_error(
            v,
            "a table of `\"key other-key\" = { ... }` blocks",
        ));
        v.kind = Kind::Table(Table::new());
        return;
    };
    let mut bad = Vec::new();
    for (cond, entry) in t.iter_mut() {
        let before = diags.reported();
        check_key_names(cond, &entry.key, known, "when", diags);
        if diags.reported() != before {
            bad.push(cond.clone());
        }
        match &mut entry.value.kind {
            Kind::Table(frag) => check_fragment(frag, FragmentKind::Shared, known, diags),
            _ => {
                diags.push(type_error(&entry.value, "a table"));
                bad.push(cond.clone());
            }
        }
    }
    for key in bad {
        t.shift_remove(&key);
    }
}

fn check_key_names(
    cond: &str,
    at: &crate::diagnostic::Origin,
    known: &Known<'_>,
    what: &str,
    diags: &mut Diagnostics,
) {
    let words: Vec<&str> = cond.split_whitespace().collect();
    if words.is_empty() {
        diags.push(Diagnostic::at(
            at,
            format!("empty key list in `{what}`"),
            "name one or more dimension keys",
        ));
    }
    for w in words {
        if !known.keys.contains(w) {
            diags.push(
                Diagnostic::at(
                    at,
                    format!("unknown dimension key `{w}` in `{what}`"),
                    did_you_mean(w, known.keys.iter().map(String::as_str)),
                )
                .with_help(format!(
                    "dimension keys: {}",
                    known.keys.iter().cloned().collect::<Vec<_>>().join(", ")
                )),
            );
        }
    }
}

fn check_key_list(v: &Value, known: &Known<'_>, what: &str, diags: &mut Diagnostics) {
    for item in v.as_array().unwrap_or_default() {
        if let Some(s) = item.as_str() {
            check_key_names(s, &item.origin, known, what, diags);
        }
    }
}

fn check_matrix(v: &Value, known: &Known<'_>, diags: &mut Diagnostics) {
    let Some(t) = v.as_table() else {
        diags.push(type_error(v, "a table of dimension = [keys] or false"));
        return;
    };
    for (dim, entry) in t {
        if !known.dimensions.contains(dim) {
            diags.push(Diagnostic::at(
                &entry.key,
                format!("unknown dimension `{dim}` in `matrix`"),
                did_you_mean(dim, known.dimensions.iter().map(String::as_str)),
            ));
            continue;
        }
        match &entry.value.kind {
            Kind::Bool(false) => {}
            Kind::Array(items) => {
                for item in items {
                    match item.as_str() {
                        Some(s) => check_key_names(s, &item.origin, known, "matrix", diags),
                        None => diags.push(type_error(item, "a dimension key (string)")),
                    }
                }
            }
            _ => diags.push(type_error(
                &entry.value,
                "a list of keys, or `false` to opt out of the dimension",
            )),
        }
    }
}

/// "expected X, found Y" at a value.
pub(crate) fn type_error(v: &Value, expected: &str) -> Diagnostic {
    Diagnostic::at(
        &v.origin,
        format!("expected {expected}, found {}", v.kind.type_name()),
        "wrong type",
    )
}

pub(crate) fn check_value(shape: Shape, v: &Value, diags: &mut Diagnostics) {
    match shape {
        Shape::String => {
            if v.as_str().is_none() {
                diags.push(type_error(v, "a string"));
            }
        }
        Shape::OneOf(options) => match v.as_str() {
            Some(s) if options.contains(&s) => {}
            Some(s) => diags.push(
                Diagnostic::at(
                    &v.origin,
                    format!("`{s}` is not one of {}", quote_list(options)),
                    did_you_mean(s, options.iter().copied()),
                )
                .with_help(format!("use one of {}", quote_list(options))),
            ),
            None => diags.push(type_error(v, &format!("one of {}", quote_list(options)))),
        },
        Shape::Bool => {
            if v.as_bool().is_none() {
                diags.push(type_error(v, "a boolean (`true` or `false`)"));
            }
        }
        Shape::Integer => {
            if v.as_integer().is_none() {
                diags.push(type_error(v, "an integer"));
            }
        }
        Shape::Mode => check_mode(v, diags),
        Shape::StringList | Shape::PackageList => match v.as_array() {
            Some(items) => {
                for item in items {
                    match item.as_str() {
                        Some(s) if matches!(shape, Shape::PackageList) => {
                            check_package(item, s, diags);
                        }
                        Some(_) => {}
                        None => diags.push(type_error(item, "a string")),
                    }
                }
            }
            None => diags.push(type_error(v, "a list of strings")),
        },
        Shape::StringMap { env_names } => match v.as_table() {
            Some(t) => {
                for (k, e) in t {
                    if e.value.as_str().is_none() {
                        diags.push(type_error(&e.value, "a string"));
                    }
                    if env_names {
                        check_env_name(split_replace(k).0, &e.key, diags);
                    }
                }
            }
            None => diags.push(type_error(v, "a table of strings")),
        },
        Shape::Table(fields) => match v.as_table() {
            Some(t) => check_table(t, fields, diags),
            None => diags.push(type_error(v, "a table")),
        },
        Shape::TableList(fields) => match v.as_array() {
            Some(items) => {
                for item in items {
                    match item.as_table() {
                        Some(t) => check_table(t, fields, diags),
                        None => diags.push(type_error(item, "a table")),
                    }
                }
            }
            None => diags.push(type_error(v, "a list of tables")),
        },
        Shape::StringOrTableList { short, fields } => match v.as_array() {
            Some(items) => {
                for item in items {
                    match &item.kind {
                        Kind::String(_) => {}
                        Kind::Table(t) => check_table(t, fields, diags),
                        _ => diags.push(type_error(
                            item,
                            &format!("a string (the `{short}`) or a table"),
                        )),
                    }
                }
            }
            None => diags.push(type_error(v, "a list")),
        },
        Shape::Outputs => crate::output::check_outputs(v, diags),
        Shape::Duration => {
            if v.as_str().and_then(parse_duration).is_none() {
                diags.push(Diagnostic::at(
                    &v.origin,
                    "expected a duration".to_string(),
                    "such as \"45m\", \"90s\" or \"1h30m\"",
                ));
            }
        }
    }
}

fn check_table(t: &Table, fields: &[Field], diags: &mut Diagnostics) {
    let names: Vec<&str> = fields.iter().map(|f| f.name).collect();
    for (key, entry) in t {
        let (name, _) = split_replace(key);
        match fields.iter().find(|f| f.name == name) {
            Some(field) => check_value(field.shape, &entry.value, diags),
            None => diags.push(unknown_field(name, &entry.key, &names, "this table")),
        }
    }
}

fn check_mode(v: &Value, diags: &mut Diagnostics) {
    let ok = match &v.kind {
        Kind::String(s) => parse_mode(s).is_some(),
        Kind::Integer(i) => (0..=0o7777).contains(i),
        _ => false,
    };
    if !ok {
        diags.push(Diagnostic::at(
            &v.origin,
            "invalid file mode".to_string(),
            "expected an octal string such as \"0644\"",
        ));
    }
}

/// Parses an octal mode string such as `"0755"`.
#[must_use]
pub fn parse_mode(s: &str) -> Option<u32> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || digits.len() > 4 {
        return None;
    }
    u32::from_str_radix(digits, 8).ok()
}

fn check_env_name(name: &str, at: &crate::diagnostic::Origin, diags: &mut Diagnostics) {
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        diags.push(Diagnostic::at(
            at,
            format!("`{name}` is not a valid environment variable name"),
            "use letters, digits and `_`, not starting with a digit",
        ));
    } else if name.starts_with("KILN_") {
        diags.push(Diagnostic::at(
            at,
            format!("`{name}` is reserved: kiln sets `KILN_*` variables itself"),
            "choose another name",
        ));
    }
}

/// Whether `name` is a valid Debian package name.
#[must_use]
pub fn is_package_name(name: &str) -> bool {
    name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

fn check_package(item: &Value, s: &str, diags: &mut Diagnostics) {
    let (name, version) = match s.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (s, None),
    };
    if !is_package_name(name) {
        diags.push(
            Diagnostic::at(
                &item.origin,
                format!("`{name}` is not a valid Debian package name"),
                "invalid package name",
            )
            .with_help("package names use lower-case letters, digits and `+-.`; pin a version as `name=version`"),
        );
    }
    if version.is_some_and(|v| v.is_empty() || v.contains(char::is_whitespace)) {
        diags.push(Diagnostic::at(
            &item.origin,
            format!("empty or malformed version in pin `{s}`"),
            "write `name=version`",
        ));
    }
}

fn quote_list(options: &[&str]) -> String {
    options
        .iter()
        .map(|o| format!("`{o}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The names of the image fields, for documentation and suggestions.
#[must_use]
pub fn image_field_names() -> Vec<&'static str> {
    IMAGE_FIELDS.iter().map(|f| f.name).collect()
}

/// Kept for symmetry with [`OutputFormat`]: every format name.
#[must_use]
pub fn output_format_names() -> Vec<&'static str> {
    OutputFormat::ALL.iter().map(|f| f.name()).collect()
}

/// Parses a duration: `"45m"`, `"90s"`, `"1h30m"`, `"2h 5m"` (jiff's
/// friendly format); zero and negative durations are refused.
#[must_use]
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let d: jiff::SignedDuration = s.trim().parse().ok()?;
    std::time::Duration::try_from(d)
        .ok()
        .filter(|d| !d.is_zero())
}
