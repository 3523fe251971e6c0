//! The merge algebra: identity, associativity without resets, and the rules
//! for lists, tables, scalars and resets.

use kiln_config::merge::merge;
use kiln_config::value::Entry;
use kiln_config::{FileId, Kind, Origin, Table, Value};
use proptest::prelude::*;

fn origin() -> Origin {
    Origin {
        file: FileId::from_index(0),
        span: 0..0,
    }
}

fn v(kind: Kind) -> Value {
    Value {
        kind,
        origin: origin(),
    }
}

fn entry(value: Value) -> Entry {
    Entry {
        key: origin(),
        value,
    }
}

fn leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        "[a-c]{1,2}".prop_map(|s| v(Kind::String(s))),
        (0i64..4).prop_map(|i| v(Kind::Integer(i))),
        any::<bool>().prop_map(|b| v(Kind::Bool(b))),
    ]
    .boxed()
}

/// A table without resets (no empty lists or tables), in which each key
/// always holds one type, as the schema guarantees for real fragments:
/// `l*` lists, `t*` tables, `s*` scalars.
fn table(depth: u32, min: usize) -> BoxedStrategy<Table> {
    let field = prop_oneof![
        ("l[ab]", proptest::collection::vec(leaf(), 1..3))
            .prop_map(|(k, a)| (k, v(Kind::Array(a))))
            .boxed(),
        ("s[ab]", leaf()).prop_map(|(k, x)| (k, x)).boxed(),
        if depth == 0 {
            ("s[cd]", leaf()).prop_map(|(k, x)| (k, x)).boxed()
        } else {
            ("t[ab]", table(depth - 1, 1))
                .prop_map(|(k, t)| (k, v(Kind::Table(t))))
                .boxed()
        },
    ];
    proptest::collection::vec(field, min..4)
        .prop_map(|kv| kv.into_iter().map(|(k, val)| (k, entry(val))).collect())
        .boxed()
}

/// Values without origins, for comparing results.
fn plain(t: &Table) -> String {
    fn val(v: &Value) -> String {
        match &v.kind {
            Kind::Array(a) => format!("[{}]", a.iter().map(val).collect::<Vec<_>>().join(",")),
            Kind::Table(t) => plain(t),
            k => format!("{k:?}"),
        }
    }
    let mut keys: Vec<&String> = t.keys().collect();
    keys.sort();
    format!(
        "{{{}}}",
        keys.iter()
            .map(|k| format!("{k}={}", val(&t[k.as_str()].value)))
            .collect::<Vec<_>>()
            .join(",")
    )
}

fn merged(parts: &[&Table]) -> Table {
    let mut out = Table::new();
    for p in parts {
        merge(&mut out, p);
    }
    out
}

proptest! {
    #[test]
    fn empty_table_is_the_identity(a in table(2, 0)) {
        let mut left = Table::new();
        merge(&mut left, &a);
        let mut right = a.clone();
        merge(&mut right, &Table::new());
        prop_assert_eq!(plain(&left), plain(&a));
        prop_assert_eq!(plain(&right), plain(&a));
    }

    #[test]
    fn merging_without_resets_is_associative(a in table(2, 0), b in table(2, 0), c in table(2, 0)) {
        let left = merged(&[&merged(&[&a, &b]), &c]);
        let right = merged(&[&a, &merged(&[&b, &c])]);
        prop_assert_eq!(plain(&left), plain(&right));
    }

    #[test]
    fn lists_concatenate(x in proptest::collection::vec(leaf(), 1..4), y in proptest::collection::vec(leaf(), 1..4)) {
        let a: Table = [("l".to_string(), entry(v(Kind::Array(x.clone()))))].into_iter().collect();
        let b: Table = [("l".to_string(), entry(v(Kind::Array(y.clone()))))].into_iter().collect();
        let m = merged(&[&a, &b]);
        let got = m["l"].value.as_array().expect("array").to_vec();
        let mut want = x;
        want.extend(y);
        prop_assert_eq!(got, want);
    }

    #[test]
    fn an_empty_list_or_a_bang_key_resets(x in proptest::collection::vec(leaf(), 1..4), y in proptest::collection::vec(leaf(), 1..4)) {
        let a: Table = [("l".to_string(), entry(v(Kind::Array(x))))].into_iter().collect();
        let empty: Table = [("l".to_string(), entry(v(Kind::Array(vec![]))))].into_iter().collect();
        let b: Table = [("l".to_string(), entry(v(Kind::Array(y.clone()))))].into_iter().collect();
        let bang: Table = [("l!".to_string(), entry(v(Kind::Array(y.clone()))))].into_iter().collect();
        let cleared = merged(&[&a, &empty, &b]);
        prop_assert_eq!(cleared["l"].value.as_array().expect("array"), &y[..]);
        let replaced = merged(&[&a, &bang]);
        prop_assert_eq!(replaced["l"].value.as_array().expect("array"), &y[..]);
        prop_assert!(!replaced.contains_key("l!"));
    }
}

#[test]
fn tables_merge_deeply_and_later_scalars_win() {
    let parse = |s: &str| -> Table {
        let mut map = kiln_config::SourceMap::default();
        let id = map.add("t".into(), "t".into(), s.into());
        let mut d = kiln_config::Diagnostics::default();
        match kiln_config::value::parse_document(id, s, &mut d)
            .expect("parses")
            .kind
        {
            Kind::Table(t) => t,
            _ => unreachable!(),
        }
    };
    let a = parse("hostname = \"a\"\n[env]\nA = \"1\"\nB = \"1\"\n[cleanup]\ndocs = true\n");
    let b = parse("hostname = \"b\"\n[env]\nB = \"2\"\nC = \"2\"\n[\"cleanup!\"]\nman = true\n");
    let m = merged(&[&a, &b]);
    assert_eq!(
        plain(&m),
        r#"{cleanup={man=Bool(true)},env={A=String("1"),B=String("2"),C=String("2")},hostname=String("b")}"#
    );
}
