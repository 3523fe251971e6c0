//! `kiln plan` on good trees.

use crate::{SOURCES, TestTree, examples, filters, kiln};

#[test]
fn the_bundled_example_plans() {
    let run = kiln(&examples().join("basic"), &["plan"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    filters().bind(|| insta::assert_snapshot!(run.stdout));
}

#[test]
fn json_has_the_documented_shape() {
    let run = kiln(&examples().join("basic"), &["plan", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("valid JSON");
    let variants = v["variants"].as_array().expect("variants array");
    assert_eq!(variants.len(), 4);
    for var in variants {
        let obj = var.as_object().expect("object");
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["action", "digest", "image", "keys", "name", "parent"]
        );
        assert_eq!(var["digest"].as_str().expect("digest").len(), 64);
        assert_eq!(var["action"], "build");
    }
    assert_eq!(variants[1]["name"], "app-bookworm");
    assert_eq!(variants[1]["parent"], "base-bookworm");
    assert_eq!(variants[1]["keys"]["suite"], "bookworm");
    assert!(variants[0]["parent"].is_null());
}

const TREE: &[(&str, &str)] = &[
    (
        "kiln.toml",
        r#"
[[sources]]
uris = ["http://mirror.invalid/debian"]
suites = ["bookworm"]

[dimensions.suite.bookworm]
[dimensions.suite.trixie]
[dimensions.firmware.bios]
[dimensions.firmware.uefi]
"#,
    ),
    (
        "base/image.toml",
        "from = \"debian:{suite}\"\n[matrix]\nfirmware = false\n",
    ),
    ("disk/image.toml", "from = \"base\"\n"),
    (
        "other/image.toml",
        "from = \"debian:bookworm\"\n[matrix]\nsuite = false\nfirmware = false\n",
    ),
];

fn names(run: &crate::Run) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    v["variants"]
        .as_array()
        .expect("array")
        .iter()
        .map(|x| x["name"].as_str().expect("name").to_string())
        .collect()
}

#[test]
fn only_and_skip_select_with_ancestors() {
    let tree = TestTree::new(TREE);
    let all = kiln(tree.path(), &["plan", "--json"]);
    assert_eq!(
        names(&all),
        [
            "base-bookworm",
            "base-trixie",
            "disk-bookworm-bios",
            "disk-bookworm-uefi",
            "disk-trixie-bios",
            "disk-trixie-uefi",
            "other"
        ]
    );
    // Keys of different dimensions: all must hold; the parent comes along.
    let run = kiln(tree.path(), &["plan", "--json", "--only", "trixie", "uefi"]);
    assert_eq!(names(&run), ["base-trixie", "disk-trixie-uefi"]);
    // Keys of one dimension are alternatives.
    let run = kiln(
        tree.path(),
        &[
            "plan", "--json", "--only", "disk", "bios", "uefi", "--skip", "trixie",
        ],
    );
    assert_eq!(
        names(&run),
        ["base-bookworm", "disk-bookworm-bios", "disk-bookworm-uefi"]
    );
    // Skipping an image skips what is built on it.
    let run = kiln(tree.path(), &["plan", "--json", "--skip", "base"]);
    assert_eq!(names(&run), ["other"]);
    // An image name alone.
    let run = kiln(tree.path(), &["plan", "--json", "--only", "other"]);
    assert_eq!(names(&run), ["other"]);
    // A selection of nothing is an error.
    let run = kiln(tree.path(), &["plan", "--only", "other", "uefi"]);
    assert_eq!(run.code, 2);
    insta::assert_snapshot!(run.stderr);
}

#[test]
fn table_shows_tree_and_opted_out_images() {
    let tree = TestTree::new(TREE);
    let run = kiln(tree.path(), &["plan"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    filters().bind(|| insta::assert_snapshot!(run.stdout));
}

#[test]
fn sources_default_to_the_tree_when_given() {
    let tree = TestTree::new(&[
        ("kiln.toml", SOURCES),
        ("x/image.toml", "from = \"debian:bookworm\"\n"),
    ]);
    let run = kiln(tree.path(), &["plan", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(names(&run), ["x"]);
}

#[test]
fn a_github_matrix_puts_parents_in_earlier_stages_and_selects_each_variant() {
    let dir = examples().join("basic");
    let run = kiln(&dir, &["plan", "--format", "github-matrix"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout.lines().count(),
        1,
        "one line, for $GITHUB_OUTPUT"
    );
    let m: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    let stages = m["stages"].as_array().expect("stages");
    assert_eq!(stages.len(), 2);
    let names = |s: &serde_json::Value| -> Vec<String> {
        s["include"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["variant"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&stages[0]), ["base-bookworm", "base-trixie"]);
    assert_eq!(names(&stages[1]), ["app-bookworm", "app-trixie"]);
    assert_eq!(m["include"].as_array().unwrap().len(), 4);
    // `only` selects exactly the entry's variant (and what it builds on).
    for entry in m["include"].as_array().unwrap() {
        let only = entry["only"].as_str().unwrap();
        let mut args = vec!["plan", "--json", "--only"];
        args.extend(only.split(' '));
        let plan: serde_json::Value =
            serde_json::from_str(&kiln(&dir, &args).stdout).expect("plan JSON");
        let last = plan["variants"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["name"], entry["variant"], "--only {only}");
    }
}

#[test]
fn a_markdown_plan_is_a_table_for_a_pull_request_comment() {
    let run = kiln(&examples().join("basic"), &["plan", "--format", "markdown"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    filters().bind(|| insta::assert_snapshot!(run.stdout));
}
