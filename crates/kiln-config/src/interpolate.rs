//! `{name}` placeholders in strings.
//!
//! `{dimension}` is replaced by the variant's key of that dimension,
//! `{image}` by the image name, `{keys}` by the keys joined with `-`, and
//! `{variant}` by the variant's name. `{{` and `}}` write a literal brace.
//! Only `{identifier}` is a placeholder: `${HOME}` (shell), `{}` and
//! `{1..3}` are left alone, so inline scripts need no escaping.

use crate::diagnostic::{Diagnostic, Diagnostics, Origin};
use crate::value::{Kind, Table, Value};

/// What a placeholder name stands for in one variant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Replace with this text.
    Text(String),
    /// A dimension the image does not vary by.
    NotVaried,
    /// No such name.
    Unknown,
}

/// Replaces placeholders in one string; problems are reported at `origin`.
pub fn interpolate_str(
    s: &str,
    origin: &Origin,
    lookup: &dyn Fn(&str) -> Lookup,
    known: &[&str],
    diags: &mut Diagnostics,
) -> String {
    if !s.contains(['{', '}']) {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let c = bytes[i];
        if c == b'{' && bytes.get(i + 1) == Some(&b'{') {
            out.push('{');
            i += 2;
            continue;
        }
        if c == b'}' && bytes.get(i + 1) == Some(&b'}') {
            out.push('}');
            i += 2;
            continue;
        }
        if c == b'{' && (i == 0 || bytes[i - 1] != b'$') {
            let rest = &s[i + 1..];
            let ident_len = rest
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_' || ch == '-'))
                .unwrap_or(rest.len());
            let ident = &rest[..ident_len];
            if ident_len > 0
                && rest[ident_len..].starts_with('}')
                && ident.starts_with(|ch: char| ch.is_ascii_alphabetic() || ch == '_')
            {
                match lookup(ident) {
                    Lookup::Text(t) => out.push_str(&t),
                    Lookup::NotVaried => {
                        diags.push(
                            Diagnostic::at(
                                origin,
                                format!("`{{{ident}}}` names a dimension this image does not vary by"),
                                "not in this variant",
                            )
                            .with_help(format!("the image opted out of `{ident}` in its `[matrix]`; remove the placeholder or the opt-out")),
                        );
                        out.push_str(&s[i..i + ident_len + 2]);
                    }
                    Lookup::Unknown => {
                        let hint = crate::diagnostic::did_you_mean(ident, known.iter().copied());
                        diags.push(
                            Diagnostic::at(
                                origin,
                                format!("unknown placeholder `{{{ident}}}`"),
                                hint,
                            )
                            .with_help(format!(
                                "placeholders: {}; write `{{{{` for a literal brace",
                                known
                                    .iter()
                                    .map(|k| format!("{{{k}}}"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )),
                        );
                        out.push_str(&s[i..i + ident_len + 2]);
                    }
                }
                i += ident_len + 2;
                continue;
            }
        }
        let ch = s[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// Replaces placeholders in every string value of a table (not in keys).
pub fn interpolate_table(
    t: &mut Table,
    lookup: &dyn Fn(&str) -> Lookup,
    known: &[&str],
    diags: &mut Diagnostics,
) {
    for entry in t.values_mut() {
        interpolate_value(&mut entry.value, lookup, known, diags);
    }
}

fn interpolate_value(
    v: &mut Value,
    lookup: &dyn Fn(&str) -> Lookup,
    known: &[&str],
    diags: &mut Diagnostics,
) {
    match &mut v.kind {
        Kind::String(s) => *s = interpolate_str(s, &v.origin, lookup, known, diags),
        Kind::Array(items) => items
            .iter_mut()
            .for_each(|i| interpolate_value(i, lookup, known, diags)),
        Kind::Table(t) => interpolate_table(t, lookup, known, diags),
        _ => {}
    }
}
