//! `kiln init`.

use crate::{TestTree, examples, kiln};

#[test]
fn init_writes_the_bundled_example_and_it_plans() {
    let tree = TestTree::new(&[]);
    let run = kiln(tree.path(), &["init", "new"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let new = tree.path().join("new");
    for rel in [
        "kiln.toml",
        "images/base/image.toml",
        "images/base/setup.sh",
        "images/base/rootfs/etc/motd",
        "images/app/image.toml",
    ] {
        let written = std::fs::read(new.join(rel)).expect("written");
        let bundled = std::fs::read(examples().join("basic").join(rel)).expect("bundled");
        assert_eq!(written, bundled, "{rel} differs from examples/basic");
    }
    let plan_new = kiln(&new, &["plan", "--json"]);
    let plan_bundled = kiln(&examples().join("basic"), &["plan", "--json"]);
    assert_eq!(plan_new.code, 0, "{}", plan_new.stderr);
    // Same content, another path: same digests.
    assert_eq!(plan_new.stdout, plan_bundled.stdout);
}

#[test]
fn init_refuses_to_overwrite() {
    let tree = TestTree::new(&[("kiln.toml", "# mine\n")]);
    let run = kiln(tree.path(), &["init", "."]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("does not overwrite"), "{}", run.stderr);
    assert_eq!(
        std::fs::read_to_string(tree.path().join("kiln.toml")).expect("kept"),
        "# mine\n"
    );
}
