//! How fragments combine into one configuration.
//!
//! The rules, applied key by key when a later fragment is merged over an
//! earlier result:
//!
//! - a key the result does not have yet is added;
//! - lists concatenate (earlier entries first);
//! - tables merge deeply, key by key, by these same rules;
//! - any other value (string, number, boolean), or a value of another type,
//!   replaces the earlier one: later scalars win;
//! - an empty list (`packages = []`) or empty table (`env = {}`) clears what
//!   came before;
//! - a key written with a `!` suffix (`"packages!" = ["curl"]`) replaces the
//!   earlier value instead of merging with it.
//!
//! Fragments are folded left to right in a fixed order (defaults, dimension
//! keys in dimension order, the image, mandatory). The empty table is the
//! identity, and for fragments without resets (no empty collections, no `!`)
//! whose keys each hold one type (which the schema check guarantees)
//! merging is associative; property tests check both. Resets are deliberately
//! not associative: a reset clears what came *before it in the fold*.

use crate::schema::split_replace;
use crate::value::{Entry, Kind, Table, Value};

/// Merges `over` into `base` by the rules above.
pub fn merge(base: &mut Table, over: &Table) {
    for (key, entry) in over {
        let (name, replace) = split_replace(key);
        let incoming = normalized(&entry.value);
        match base.get_mut(name) {
            Some(existing) if !replace => merge_value(&mut existing.value, incoming),
            Some(existing) => {
                existing.value = incoming;
                existing.key = entry.key.clone();
            }
            None => {
                base.insert(
                    name.to_string(),
                    Entry {
                        key: entry.key.clone(),
                        value: incoming,
                    },
                );
            }
        }
    }
}

fn merge_value(existing: &mut Value, incoming: Value) {
    match (&mut existing.kind, incoming.kind) {
        (Kind::Array(a), Kind::Array(b)) => {
            if b.is_empty() {
                a.clear();
                existing.origin = incoming.origin;
            } else {
                a.extend(b);
            }
        }
        (Kind::Table(a), Kind::Table(b)) => {
            if b.is_empty() {
                a.clear();
                existing.origin = incoming.origin;
            } else {
                merge(a, &b);
            }
        }
        (_, kind) => {
            *existing = Value {
                kind,
                origin: incoming.origin,
            };
        }
    }
}

/// A copy of `v` with replace markers taken off nested keys.
fn normalized(v: &Value) -> Value {
    match &v.kind {
        Kind::Table(t) => {
            let mut out = Table::new();
            merge(&mut out, t);
            Value {
                kind: Kind::Table(out),
                origin: v.origin.clone(),
            }
        }
        Kind::Array(items) => Value {
            kind: Kind::Array(items.iter().map(normalized).collect()),
            origin: v.origin.clone(),
        },
        _ => v.clone(),
    }
}
