//! Random TOML and random trees never make the loader or the planner panic.

use std::fmt::Write;

use proptest::prelude::*;

use crate::write;

/// Keys a fuzzed document draws from: real field names, near misses and junk.
const KEYS: &[&str] = &[
    "from",
    "variant",
    "packages",
    "remove",
    "rootfs",
    "files",
    "hostname",
    "users",
    "services",
    "run",
    "env",
    "cleanup",
    "outputs",
    "kernel",
    "labels",
    "when",
    "exclude",
    "matrix",
    "name",
    "description",
    "arch",
    "pakages",
    "packages!",
    "sources",
    "output",
    "dimensions",
    "defaults",
    "mandatory",
    "cache",
    "uris",
    "suites",
    "suite",
    "bookworm",
    "x",
    "format",
    "path",
    "source",
    "content",
    "mode",
    "script",
    "inline",
    "enable",
    "dir",
    "epoch",
];

const STRINGS: &[&str] = &[
    "debian:bookworm",
    "debian:{suite}",
    "base",
    "app",
    "{arch}",
    "{{",
    "}",
    "${HOME}",
    "../x",
    "/etc/x",
    "curl=1.0",
    "minbase",
    "squashfs",
    "ext4",
    "bookworm trixie",
    "",
    "ü",
    "debian:",
    ":",
    "a",
    "0755",
];

fn toml_value(depth: u32) -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        proptest::sample::select(STRINGS).prop_map(|s| format!("{s:?}")),
        any::<i64>().prop_map(|i| i.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("1.5".to_string()),
        Just("1979-05-27T07:32:00Z".to_string()),
    ];
    if depth == 0 {
        return leaf.boxed();
    }
    prop_oneof![
        3 => leaf,
        1 => proptest::collection::vec(toml_value(depth - 1), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
        1 => proptest::collection::vec((proptest::sample::select(KEYS), toml_value(depth - 1)), 0..4)
            .prop_map(|kv| format!("{{ {} }}", dedup(kv).join(", "))),
    ]
    .boxed()
}

fn dedup(kv: Vec<(&str, String)>) -> Vec<String> {
    let mut seen = Vec::new();
    kv.into_iter()
        .filter(|(k, _)| {
            let new = !seen.contains(k);
            seen.push(k);
            new
        })
        .map(|(k, v)| format!("{k:?} = {v}"))
        .collect()
}

fn document() -> impl Strategy<Value = String> {
    proptest::collection::vec((proptest::sample::select(KEYS), toml_value(3)), 0..8)
        .prop_map(|kv| dedup(kv).join("\n"))
}

fn load_and_plan(root: &std::path::Path) {
    let options = kiln_config::LoadOptions {
        host_root: root.join("no-host"),
    };
    match kiln_config::load(root, &options) {
        Ok(tree) => {
            let _ = kiln_plan::plan(&tree, &kiln_plan::Selection::default());
        }
        Err(failure) => {
            if let Some(partial) = failure.partial {
                let _ = kiln_plan::plan(&partial, &kiln_plan::Selection::default());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_documents_do_not_panic(root in document(), images in proptest::collection::vec(document(), 0..4)) {
        let dir = tempfile::tempdir().expect("tmp");
        write(dir.path(), &[("kiln.toml", &root)]);
        for (i, img) in images.iter().enumerate() {
            write(dir.path(), &[(&format!("i{i}/image.toml"), img)]);
        }
        load_and_plan(dir.path());
    }

    #[test]
    fn random_bytes_do_not_panic(root in proptest::collection::vec(any::<u8>(), 0..200), img in ".{0,200}") {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("kiln.toml"), &root).expect("write");
        write(dir.path(), &[("a/image.toml", &img)]);
        load_and_plan(dir.path());
    }

    #[test]
    fn random_valid_trees_plan_or_report(
        n in 1usize..6,
        parents in proptest::collection::vec(0usize..8, 6),
        dims in proptest::collection::vec(proptest::collection::vec("[a-c]{1,2}", 1..3), 0..3),
    ) {
        let dir = tempfile::tempdir().expect("tmp");
        let mut kiln = String::from("[[sources]]\nuris = [\"http://x.invalid\"]\nsuites = [\"s\"]\n");
        for (i, keys) in dims.iter().enumerate() {
            for k in keys {
                let _ = writeln!(kiln, "[dimensions.d{i}.\"{k}{i}\"]");
            }
        }
        write(dir.path(), &[("kiln.toml", &kiln)]);
        for (i, &p) in parents.iter().enumerate().take(n) {
            // Parents may point anywhere, cycles and unknown images included.
            let from = if p >= n { "debian:bookworm".to_string() } else { format!("i{p}") };
            write(dir.path(), &[(&format!("i{i}/image.toml"), &format!("from = \"{from}\"\n"))]);
        }
        load_and_plan(dir.path());
    }
}
