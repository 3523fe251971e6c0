//! Placeholders in strings.

use kiln_config::interpolate::{Lookup, interpolate_str};
use kiln_config::{Diagnostics, FileId, Origin};

fn run(s: &str) -> (String, Vec<String>) {
    let mut d = Diagnostics::default();
    let origin = Origin {
        file: FileId::from_index(0),
        span: 0..0,
    };
    let lookup = |n: &str| match n {
        "suite" => Lookup::Text("bookworm".into()),
        "arch" => Lookup::NotVaried,
        _ => Lookup::Unknown,
    };
    let out = interpolate_str(s, &origin, &lookup, &["suite", "arch"], &mut d);
    (out, d.iter().map(|x| x.message.clone()).collect())
}

#[test]
fn placeholders_escapes_and_shell_syntax() {
    let cases = [
        ("debian:{suite}", "debian:bookworm"),
        ("{{suite}}", "{suite}"),
        ("echo ${suite} $HOME", "echo ${suite} $HOME"),
        ("for i in {1..3}; do :; done", "for i in {1..3}; do :; done"),
        ("find . -exec rm {} \\;", "find . -exec rm {} \\;"),
        ("awk '{print $1}'", "awk '{print $1}'"),
        ("ü{suite}ü", "übookwormü"),
        ("{suite", "{suite"),
    ];
    for (input, want) in cases {
        let (got, errors) = run(input);
        assert_eq!(got, want, "{input}");
        assert!(errors.is_empty(), "{input}: {errors:?}");
    }
}

#[test]
fn unknown_and_not_varied_names_are_reported() {
    let (_, errors) = run("{sute} {arch}");
    assert_eq!(
        errors,
        [
            "unknown placeholder `{sute}`",
            "`{arch}` names a dimension this image does not vary by"
        ]
    );
}
