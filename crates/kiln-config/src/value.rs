//! A TOML value tree that remembers where every value came from.
//!
//! Fragments from several files are merged into one configuration per
//! variant; each value keeps its [`Origin`] so that a problem found after the
//! merge still points at the line that wrote it.

use indexmap::IndexMap;
use toml::de::{DeTable, DeValue};

use crate::diagnostic::{Diagnostic, Diagnostics, FileId, Origin};

/// A table: keys in file order, each with the origin of the key itself.
pub type Table = IndexMap<String, Entry>;

/// One key of a table.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Where the key was written.
    pub key: Origin,
    /// Its value.
    pub value: Value,
}

/// A value and where it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    /// The value.
    pub kind: Kind,
    /// Where it was written.
    pub origin: Origin,
}

/// The kinds of TOML value.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// A string.
    String(String),
    /// An integer.
    Integer(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A date-time, kept as written.
    Datetime(String),
    /// An array.
    Array(Vec<Value>),
    /// A table.
    Table(Table),
}

impl Kind {
    /// What a user calls this kind of value.
    #[must_use]
    pub fn type_name(&self) -> &'static str {
        match self {
            Kind::String(_) => "a string",
            Kind::Integer(_) => "an integer",
            Kind::Float(_) => "a float",
            Kind::Bool(_) => "a boolean",
            Kind::Datetime(_) => "a date-time",
            Kind::Array(_) => "an array",
            Kind::Table(_) => "a table",
        }
    }
}

impl Value {
    /// The string, if this is one.
    #[must_use]
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::String(s) => Some(s),
            _ => None,
        }
    }

    /// The table, if this is one.
    #[must_use]
    pub fn as_table(&self) -> Option<&Table> {
        match &self.kind {
            Kind::Table(t) => Some(t),
            _ => None,
        }
    }

    /// The array, if this is one.
    #[must_use]
    pub fn as_array(&self) -> Option<&[Value]> {
        match &self.kind {
            Kind::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    #[must_use]
    pub fn as_bool(&self) -> Option<bool> {
        match self.kind {
            Kind::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The integer, if this is one.
    #[must_use]
    pub fn as_integer(&self) -> Option<i64> {
        match self.kind {
            Kind::Integer(i) => Some(i),
            _ => None,
        }
    }

    /// An empty table at an origin.
    #[must_use]
    pub fn empty_table(origin: Origin) -> Self {
        Self {
            kind: Kind::Table(Table::new()),
            origin,
        }
    }
}

/// Parses a TOML document into a spanned table, recording every syntax error.
///
/// Returns `None` when the document has syntax errors (after recording all of
/// them); a half-parsed document is not trusted.
pub fn parse_document(file: FileId, text: &str, diags: &mut Diagnostics) -> Option<Value> {
    let (doc, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        for e in errors {
            let span = e.span().unwrap_or(0..0);
            let origin = Origin { file, span };
            diags.push(Diagnostic::at(
                &origin,
                format!("invalid TOML: {}", e.message().trim_end()),
                "",
            ));
        }
        return None;
    }
    let span = doc.span();
    let mut out = Table::new();
    for (k, v) in doc.into_inner() {
        let key = Origin {
            file,
            span: k.span(),
        };
        out.insert(
            k.into_inner().into_owned(),
            Entry {
                key,
                value: convert(file, v, diags),
            },
        );
    }
    Some(Value {
        kind: Kind::Table(out),
        origin: Origin { file, span },
    })
}

fn convert(file: FileId, v: toml::Spanned<DeValue<'_>>, diags: &mut Diagnostics) -> Value {
    let origin = Origin {
        file,
        span: v.span(),
    };
    let kind = match v.into_inner() {
        DeValue::String(s) => Kind::String(s.into_owned()),
        DeValue::Integer(i) => {
            let digits = i.as_str().replace('_', "");
            let digits = digits
                .strip_prefix("0x")
                .or_else(|| digits.strip_prefix("0o"))
                .or_else(|| digits.strip_prefix("0b"))
                .unwrap_or(&digits);
            if let Ok(n) = i64::from_str_radix(digits, i.radix()) {
                Kind::Integer(n)
            } else {
                diags.push(Diagnostic::at(
                    &origin,
                    format!("integer `{}` does not fit in 64 bits", i.as_str()),
                    "too large",
                ));
                Kind::Integer(0)
            }
        }
        DeValue::Float(f) => Kind::Float(f.as_str().replace('_', "").parse().unwrap_or(f64::NAN)),
        DeValue::Boolean(b) => Kind::Bool(b),
        DeValue::Datetime(d) => Kind::Datetime(d.to_string()),
        DeValue::Array(a) => Kind::Array(a.into_iter().map(|e| convert(file, e, diags)).collect()),
        DeValue::Table(t) => {
            let mut out = Table::new();
            for (k, v) in t {
                let key = Origin {
                    file,
                    span: k.span(),
                };
                out.insert(
                    k.into_inner().into_owned(),
                    Entry {
                        key,
                        value: convert(file, v, diags),
                    },
                );
            }
            Kind::Table(out)
        }
    };
    Value { kind, origin }
}
