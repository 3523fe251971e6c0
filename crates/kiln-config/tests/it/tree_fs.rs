//! Every file of a tree is opened beneath its root: links out of the tree
//! are refused, links inside it work.

use std::os::unix::fs::symlink;
use std::path::Path;

use kiln_config::tree_fs::OpenError;
use kiln_config::{FileKind, LinkTarget, LoadOptions, TreeRoot, load};

const SOURCES: &str =
    "[[sources]]\nuris = [\"http://mirror.invalid/debian\"]\nsuites = [\"bookworm\"]\n";

fn write(root: &Path, path: &str, content: &[u8]) {
    let p = root.join(path);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, content).expect("write");
}

#[test]
fn open_refuses_links_out_of_the_tree_and_follows_links_inside() {
    let outside = tempfile::tempdir().expect("tmp");
    write(outside.path(), "secret", b"secret");
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path();
    write(root, "a/real", b"real");
    symlink(outside.path().join("secret"), root.join("abs")).expect("symlink");
    symlink(
        "../../../../../../../../../../../../../../etc/passwd",
        root.join("a/up"),
    )
    .expect("symlink");
    symlink(outside.path(), root.join("dir")).expect("symlink");
    symlink("real", root.join("a/same")).expect("symlink");
    symlink("../a/real", root.join("a/back")).expect("symlink");
    symlink("a", root.join("alias")).expect("symlink");

    let tree = TreeRoot::open_root(root).expect("open");
    for rel in ["abs", "a/up", "dir/secret", "dir"] {
        assert!(
            matches!(tree.open(Path::new(rel)), Err(OpenError::Outside)),
            "{rel} must be refused"
        );
    }
    for rel in ["a/real", "a/same", "a/back", "alias/real", "alias/same"] {
        assert_eq!(tree.read(Path::new(rel)).expect(rel), b"real", "{rel}");
    }
    assert_eq!(tree.follow(Path::new("abs")), LinkTarget::Outside);
    assert_eq!(tree.follow(Path::new("alias")), LinkTarget::Dir);
    assert!(matches!(
        tree.follow(Path::new("a/same")),
        LinkTarget::File { size: 4, .. }
    ));
}

#[test]
fn the_inventory_records_where_links_lead() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path();
    write(root, "kiln.toml", SOURCES.as_bytes());
    write(root, "base/image.toml", b"from = \"debian:bookworm\"\n");
    write(root, "base/real", b"real");
    symlink("real", root.join("base/same")).expect("symlink");
    symlink("/etc/passwd", root.join("base/host")).expect("symlink");
    symlink("missing", root.join("base/dangling")).expect("symlink");
    let tree = load(root, &LoadOptions::default()).expect("loads");
    let leads = |name: &str| {
        let entry = tree.images[0]
            .files
            .iter()
            .find(|f| f.path == name)
            .expect(name);
        match &entry.kind {
            FileKind::Symlink { leads, .. } => leads.clone(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        leads("same"),
        LinkTarget::File {
            mode: 0o644 & !umask(),
            size: 4,
            digest: *blake3::hash(b"real").as_bytes()
        }
    );
    assert_eq!(leads("host"), LinkTarget::Outside);
    assert_eq!(leads("dangling"), LinkTarget::Missing);
}

fn umask() -> u32 {
    let probe = tempfile::tempdir().expect("tmp");
    write(probe.path(), "f", b"");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(probe.path().join("f"))
            .expect("stat")
            .permissions(),
    );
    0o666 & !mode & 0o777
}

#[test]
fn a_tree_keyring_linked_out_of_the_tree_is_refused_where_it_is_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path();
    write(
        root,
        "kiln.toml",
        format!("{SOURCES}keyring = \"keys/debian.gpg\"\n").as_bytes(),
    );
    write(root, "base/image.toml", b"from = \"debian:bookworm\"\n");
    std::fs::create_dir_all(root.join("keys")).expect("mkdir");
    symlink("/etc/passwd", root.join("keys/debian.gpg")).expect("symlink");
    let failure = load(root, &LoadOptions::default()).expect_err("refused");
    assert_eq!(failure.diagnostics.len(), 1, "{:?}", failure.diagnostics);
    let d = &failure.diagnostics[0];
    assert_eq!(
        d.message,
        "`keys/debian.gpg` is a symbolic link leading out of the tree"
    );
    let label = d.primary.as_ref().expect("at the setting");
    let (line, col) = failure
        .files
        .line_col(label.origin.file, label.origin.span.start);
    assert_eq!((line, col), (4, 11));
}

#[test]
fn invalid_utf8_is_reported_at_its_line_and_column() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path();
    write(root, "kiln.toml", b"# ok\n[output]\ndir = \"o\xffut\"\n");
    let failure = load(root, &LoadOptions::default()).expect_err("refused");
    let d = &failure.diagnostics[0];
    assert_eq!(d.message, "failed to read `kiln.toml`: not valid UTF-8");
    let label = d.primary.as_ref().expect("at the byte");
    let (line, col) = failure
        .files
        .line_col(label.origin.file, label.origin.span.start);
    assert_eq!((line, col), (3, 9));
}
