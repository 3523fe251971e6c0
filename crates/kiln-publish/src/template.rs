//! `[publish]` templates: `repository`, `tags` and `id`.
//!
//! Placeholders: `{image}`, `{variant}`, `{keys}` (the variant's keys
//! joined by `-`), `{<dimension>}` (that dimension's key), `{arch}`,
//! `{format}`, `{id}`, `{revision}` (the number), `{time}` or
//! `{time:<strftime>}` (the publish time in UTC; `{time}` is
//! `%Y%m%dt%H%M%Sz`), `{version:<package>}` (an installed package's
//! version, with characters a tag cannot hold as `_`).

use std::collections::BTreeMap;

/// What a template may name.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    /// Plain placeholders (`image`, `variant`, `keys`, dimensions, …).
    pub plain: BTreeMap<String, String>,
    /// Package versions.
    pub versions: BTreeMap<String, String>,
    /// The publish time.
    pub time: Option<jiff::Timestamp>,
}

/// The default `{time}` format.
pub const TIME_FORMAT: &str = "%Y%m%dt%H%M%Sz";

/// Renders `template`; errs with what is wrong.
pub fn render(template: &str, vars: &Vars) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("`{{` at byte {start} is never closed"))?;
        let name = &after[..end];
        out.push_str(&value(name, vars)?);
        rest = &after[end + 1..];
    }
    if rest.contains('}') {
        return Err("a `}` without its `{`".into());
    }
    out.push_str(rest);
    Ok(out)
}

fn value(name: &str, vars: &Vars) -> Result<String, String> {
    let fmt = match name.strip_prefix("time:") {
        Some(f) if !f.is_empty() => Some(f),
        _ => (name == "time" || name == "time:").then_some(TIME_FORMAT),
    };
    if let Some(fmt) = fmt {
        let time = vars.time.ok_or("{time} has no value here")?;
        let zoned = time.to_zoned(jiff::tz::TimeZone::UTC);
        return jiff::fmt::strtime::format(fmt, &zoned).map_err(|e| format!("`{{{name}}}`: {e}"));
    }
    if let Some(package) = name.strip_prefix("version:") {
        return vars
            .versions
            .get(package)
            .map(|v| {
                v.chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '.' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect()
            })
            .ok_or_else(|| {
                format!("`{{{name}}}`: package `{package}` is not installed in this variant")
            });
    }
    vars.plain.get(name).cloned().ok_or_else(|| {
        let known: Vec<_> = vars
            .plain
            .keys()
            .map(|k| format!("{{{k}}}"))
            .chain(["{time}".into(), "{version:PKG}".into()])
            .collect();
        format!(
            "unknown placeholder `{{{name}}}`; known: {}",
            known.join(", ")
        )
    })
}

/// Collapses the `-` a missing value leaves (`-{id}` with no keys).
#[must_use]
pub fn tidy(s: &str) -> String {
    let mut out = String::new();
    for part in s.split('-').filter(|p| !p.is_empty()) {
        if !out.is_empty() {
            out.push('-');
        }
        out.push_str(part);
    }
    out
}

/// A tag the distribution spec accepts: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn check_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "renders to `{tag}`, which is not a tag (letters, digits, `.`, `_`, `-`; at most 128; not starting with `.` or `-`)"
        ))
    }
}

/// A repository name the spec accepts: lowercase path components.
pub fn check_repository(name: &str) -> Result<(), String> {
    let component = |c: &str| {
        !c.is_empty()
            && c.chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
            && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
            && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
    };
    if name.split('/').all(component) {
        Ok(())
    } else {
        Err(format!(
            "renders to `{name}`, which is not a repository name (lowercase letters, digits, `.`, `_`, `-` between them, `/` between components)"
        ))
    }
}

/// Compares ids as a person reads them: runs of digits by value.
#[must_use]
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let na = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let nb = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let da = trim_zeros(&a[..na]);
                let db = trim_zeros(&b[..nb]);
                let order = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
                if order != std::cmp::Ordering::Equal {
                    return order;
                }
                a = &a[na..];
                b = &b[nb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let start = d.iter().take_while(|&&c| c == b'0').count();
    &d[start..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vars() -> Vars {
        let mut v = Vars::default();
        v.plain.insert("image".into(), "base".into());
        v.plain.insert("keys".into(), "bookworm".into());
        v.plain.insert("suite".into(), "bookworm".into());
        v.versions.insert("libc6".into(), "2.36-9+deb12u4".into());
        v.time = Some("2026-12-07T10:04:05Z".parse().unwrap());
        v
    }

    #[test]
    fn renders_placeholders() {
        assert_eq!(
            render("{time}-d{suite}", &vars()).unwrap(),
            "20261207t100405z-dbookworm"
        );
        assert_eq!(render("{time:%Y%m%d}", &vars()).unwrap(), "20261207");
        assert_eq!(
            render("libc{version:libc6}", &vars()).unwrap(),
            "libc2.36_9_deb12u4"
        );
        assert!(
            render("{nope}", &vars())
                .unwrap_err()
                .contains("unknown placeholder `{nope}`")
        );
        assert!(
            render("{version:zsh}", &vars())
                .unwrap_err()
                .contains("not installed")
        );
        assert!(render("{image", &vars()).is_err());
        assert_eq!(tidy("-x--y-"), "x-y");
    }

    #[test]
    fn tags_and_repositories() {
        assert!(check_tag("bookworm-20261207t100405z").is_ok());
        assert!(check_tag("-x").is_err());
        assert!(check_tag("a:b").is_err());
        assert!(check_repository("kiln/base").is_ok());
        assert!(check_repository("kiln/Base").is_err());
        assert!(check_repository("kiln//base").is_err());
    }

    #[test]
    fn natural_order() {
        use std::cmp::Ordering::*;
        assert_eq!(natural_cmp("r9", "r10"), Less);
        assert_eq!(natural_cmp("20261207t1", "20261206t9"), Greater);
        assert_eq!(natural_cmp("a", "a"), Equal);
        assert_eq!(natural_cmp("r09", "r9"), Equal);
    }

    proptest! {
        // A total order: antisymmetric and consistent with numbers.
        #[test]
        fn natural_cmp_orders_numbers(a in 0u64..1_000_000, b in 0u64..1_000_000, p in "[a-z]{0,3}") {
            prop_assert_eq!(natural_cmp(&format!("{p}{a}"), &format!("{p}{b}")), a.cmp(&b));
            prop_assert_eq!(natural_cmp(&format!("{a}"), &format!("{b}")).reverse(), natural_cmp(&format!("{b}"), &format!("{a}")));
        }
    }
}
