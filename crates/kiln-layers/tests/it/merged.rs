//! `MergedView` against the kernel: the same stacks mounted with overlayfs
//! and walked with `std::fs` must give the same tree.

use kiln_layers::{LayerStack, MergedView, private_mount_namespace};
use proptest::prelude::*;

use crate::support::{Mounted, Node, make_layer, snapshot_fs, snapshot_view, tempdir};

/// A layer's entries.
type Layer = Vec<(String, Node)>;

fn file(content: &str) -> Node {
    Node::File(content.as_bytes().to_vec(), 0o644)
}

fn entries(list: &[(&str, Node)]) -> Layer {
    list.iter()
        .map(|(p, n)| ((*p).to_owned(), n.clone()))
        .collect()
}

/// Builds `layers` (bottom first), mounts them and compares the mount with
/// the view; returns the view's snapshot.
fn compare(layers: &[Layer]) -> Vec<crate::support::Item> {
    let dir = tempdir();
    let mut stack = LayerStack::default();
    for (i, layer) in layers.iter().enumerate() {
        let path = dir.path().join(format!("layer{i}"));
        make_layer(&path, layer);
        stack.layers.push(path);
    }
    let mounted = Mounted::new(&stack);
    let expected = snapshot_fs(&mounted.merged());
    let actual = snapshot_view(&MergedView::new(&stack));
    assert_eq!(actual, expected, "layers: {layers:#?}");
    actual
}

fn paths(items: &[crate::support::Item]) -> Vec<&str> {
    items.iter().map(|i| i.path.as_str()).collect()
}

#[test]
fn table_of_stacks_matches_overlayfs() {
    if kiln_testkit::require::lacks_root("overlay mounts") {
        return;
    }
    private_mount_namespace().unwrap();
    let cases: Vec<(&str, Vec<Layer>, Vec<&str>)> = vec![
        (
            "a higher file hides a lower one",
            vec![
                entries(&[("etc/motd", file("old")), ("etc/keep", file("k"))]),
                entries(&[("etc/motd", file("new!"))]),
            ],
            vec!["etc", "etc/keep", "etc/motd"],
        ),
        (
            "a whiteout hides the lower file and is not listed",
            vec![
                entries(&[("a/x", file("x")), ("a/y", file("y"))]),
                entries(&[("a/x", Node::Whiteout)]),
            ],
            vec!["a", "a/y"],
        ),
        (
            "a whiteout hides a whole lower directory",
            vec![
                entries(&[("a/x", file("x")), ("b", file("b"))]),
                entries(&[("a", Node::Whiteout)]),
            ],
            vec!["b"],
        ),
        (
            "directories merge",
            vec![
                entries(&[("d/low", file("1")), ("d/sub/deep", file("2"))]),
                entries(&[("d/mid", file("3")), ("d/sub/other", file("4"))]),
                entries(&[("d/high", file("5"))]),
            ],
            vec![
                "d",
                "d/high",
                "d/low",
                "d/mid",
                "d/sub",
                "d/sub/deep",
                "d/sub/other",
            ],
        ),
        (
            "an opaque directory hides what is below",
            vec![
                entries(&[("d/low", file("1")), ("e", file("e"))]),
                entries(&[("d", Node::Opaque(0o700)), ("d/new", file("n"))]),
            ],
            vec!["d", "d/new", "e"],
        ),
        (
            "an opaque directory in a middle layer",
            vec![
                entries(&[("d/bottom", file("1"))]),
                entries(&[("d", Node::Opaque(0o755)), ("d/middle", file("2"))]),
                entries(&[("d/top", file("3"))]),
            ],
            vec!["d", "d/middle", "d/top"],
        ),
        (
            "a file replaces a directory",
            vec![
                entries(&[("x/inner", file("1")), ("x/sub/deeper", file("2"))]),
                entries(&[("x", file("now a file"))]),
            ],
            vec!["x"],
        ),
        (
            "a directory replaces a file, and stops the merge there",
            vec![
                entries(&[("x/below", file("hidden by the file"))]),
                entries(&[("x", file("a file"))]),
                entries(&[("x", Node::Dir(0o750)), ("x/top", file("t"))]),
            ],
            vec!["x", "x/top"],
        ),
        (
            "a symlink replaces a directory and is not followed",
            vec![
                entries(&[("lib/libc.so", file("elf")), ("usr/lib/real", file("r"))]),
                entries(&[("lib", Node::Link("usr/lib".to_owned()))]),
            ],
            vec!["lib", "usr", "usr/lib", "usr/lib/real"],
        ),
        (
            "a whiteout in a lower layer hides the layers below it",
            vec![
                entries(&[("f", file("bottom"))]),
                entries(&[("f", Node::Whiteout)]),
                entries(&[("g", file("top"))]),
            ],
            vec!["g"],
        ),
        (
            "a file over a whiteout comes back",
            vec![
                entries(&[("f", file("bottom"))]),
                entries(&[("f", Node::Whiteout)]),
                entries(&[("f", file("again"))]),
            ],
            vec!["f"],
        ),
        (
            "modes of the topmost directory win",
            vec![
                entries(&[("d", Node::Dir(0o755)), ("d/a", file("a"))]),
                entries(&[("d", Node::Dir(0o700)), ("d/b", file("b"))]),
            ],
            vec!["d", "d/a", "d/b"],
        ),
        (
            "sibling order is by bytes, a directory before its content",
            vec![entries(&[
                ("a-b", file("1")),
                ("a/b", file("2")),
                ("B", file("3")),
                ("a.c", file("4")),
            ])],
            vec!["B", "a", "a/b", "a-b", "a.c"],
        ),
    ];
    for (name, layers, expected) in cases {
        let items = compare(&layers);
        assert_eq!(paths(&items), expected, "{name}");
    }
}

#[test]
fn lookups_follow_symlinks_inside_the_view() {
    let dir = tempdir();
    let bottom = dir.path().join("bottom");
    let top = dir.path().join("top");
    make_layer(
        &bottom,
        &entries(&[
            ("usr/lib/os-release", file("ID=debian\n")),
            ("lib", Node::Link("usr/lib".to_owned())),
            (
                "etc/os-release",
                Node::Link("../usr/lib/os-release".to_owned()),
            ),
            (
                "etc/escape",
                Node::Link("../../../../etc/hostname".to_owned()),
            ),
            ("etc/hostname", file("inside\n")),
        ]),
    );
    make_layer(&top, &entries(&[("usr/lib/os-release", file("ID=kiln\n"))]));
    let view = MergedView::new(&LayerStack::new(vec![bottom, top]));
    let read = |p: &str| {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut view.open(p).unwrap(), &mut s).unwrap();
        s
    };
    assert_eq!(read("etc/os-release"), "ID=kiln\n");
    assert_eq!(read("/lib/os-release"), "ID=kiln\n");
    // `..` stops at the merged root, as in a chroot.
    assert_eq!(read("etc/escape"), "inside\n");
    assert!(
        view.metadata("etc/os-release")
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        view.read_link("etc/os-release").unwrap(),
        std::path::Path::new("../usr/lib/os-release")
    );
    assert_eq!(view.entry("lib/os-release").unwrap().unwrap().layer, 1);
    assert!(view.entry("etc/nothing").unwrap().is_none());
    let names: Vec<String> = view
        .read_dir("lib")
        .unwrap()
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(names, ["usr/lib/os-release"]);
    assert!(matches!(
        view.metadata("etc/nothing"),
        Err(kiln_layers::Error::NotFound { .. })
    ));
}

/// Small random layers over the names `a`, `b`, `c`, three levels deep.
fn layer_strategy() -> impl Strategy<Value = Layer> {
    let name = prop::sample::select(vec!["a", "b", "c"]);
    let path = prop::collection::vec(name, 1..=3).prop_map(|c| c.join("/"));
    let node = prop_oneof![
        3 => (prop::sample::select(vec!["", "x", "hello\n", "other content"]),
              prop::sample::select(vec![0o644_u32, 0o755, 0o600]))
            .prop_map(|(c, m)| Node::File(c.as_bytes().to_vec(), m)),
        3 => prop::sample::select(vec![0o755_u32, 0o700]).prop_map(Node::Dir),
        1 => Just(Node::Opaque(0o755)),
        1 => prop::sample::select(vec!["a", "../b", "/c/a", "nowhere"])
            .prop_map(|t| Node::Link(t.to_owned())),
        2 => Just(Node::Whiteout),
    ];
    prop::collection::vec((path, node), 0..8)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_stacks_match_overlayfs(layers in prop::collection::vec(layer_strategy(), 1..5)) {
        if kiln_testkit::require::lacks_root("overlay mounts") {
            return Ok(());
        }
        // Once per thread; a second unshare only makes a fresh namespace.
        private_mount_namespace().unwrap();
        compare(&layers);
    }
}
