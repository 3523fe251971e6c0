//! A tree's files are read beneath its root: a symbolic link that leads
//! out of the tree (to a host file such as `/etc/shadow`) is a
//! configuration error at the setting that named it, and nothing of the
//! file it points at is read into the output; links that stay inside the
//! tree work.

use std::os::unix::fs::symlink;
use std::path::Path;

use crate::{SOURCES, TestTree, kiln};

/// What the host file outside the tree holds; it must never be printed.
const SECRET: &str = "host-secret-5f3a9c";

/// A file outside every tree, as `/etc/shadow` would be.
fn host_file() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("shadow");
    std::fs::write(&path, format!("root:{SECRET}:19000:0:99999:7:::\n")).expect("write");
    (dir, path)
}

fn kiln_toml(extra: &str) -> String {
    format!("{extra}\n{SOURCES}")
}

/// `kiln plan` and `kiln build` both fail with exit code 2; returns the
/// plan's stderr with the tree and host paths blanked.
fn refused(tree: &TestTree, host: &Path) -> String {
    let plan = kiln(tree.path(), &["plan", "."]);
    assert_eq!(plan.code, 2, "plan: exit code 2 expected:\n{}", plan.stderr);
    let build = kiln(tree.path(), &["build", "."]);
    assert_eq!(
        build.code, 2,
        "build: exit code 2 expected:\n{}",
        build.stderr
    );
    for text in [&plan.stdout, &plan.stderr, &build.stdout, &build.stderr] {
        assert!(!text.contains(SECRET), "the host file was read:\n{text}");
    }
    assert_no_secret(tree.path());
    plan.stderr
        .replace(&host.display().to_string(), "[HOST FILE]")
        .replace(&tree.path().display().to_string(), "[TREE]")
}

/// Nothing below `dir` but the host file's link holds its content.
fn assert_no_secret(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        let meta = std::fs::symlink_metadata(&path).expect("lstat");
        if meta.is_dir() {
            assert_no_secret(&path);
        } else if meta.is_file() {
            let bytes = std::fs::read(&path).expect("read");
            assert!(
                !String::from_utf8_lossy(&bytes).contains(SECRET),
                "`{}` holds the host file's content",
                path.display()
            );
        }
    }
}

#[test]
fn a_files_source_linked_to_a_host_file_is_refused() {
    let (_host_dir, host) = host_file();
    let tree = TestTree::new(&[
        ("kiln.toml", &kiln_toml("")),
        (
            "base/image.toml",
            "from = \"debian:bookworm\"\nfiles = [{ path = \"/etc/x\", source = \"link\" }]\n",
        ),
    ]);
    symlink(&host, tree.path().join("base/link")).expect("symlink");
    insta::assert_snapshot!(refused(&tree, &host));
}

#[test]
fn a_relative_link_climbing_out_of_the_tree_is_refused() {
    let (_host_dir, host) = host_file();
    let tree = TestTree::new(&[
        ("kiln.toml", &kiln_toml("")),
        (
            "base/image.toml",
            "from = \"debian:bookworm\"\nfiles = [{ path = \"/etc/x\", source = \"link\" }]\n",
        ),
    ]);
    // `../../…/<host dir>/shadow` from `base/`: up to `/`, then down.
    let depth = tree.path().components().count();
    let target = (0..depth)
        .fold(std::path::PathBuf::new(), |p, _| p.join(".."))
        .join(host.strip_prefix("/").expect("absolute"));
    symlink(&target, tree.path().join("base/link")).expect("symlink");
    assert!(
        std::fs::read_to_string(tree.path().join("base/link")).is_ok_and(|t| t.contains(SECRET))
    );
    let err = refused(&tree, &host);
    assert!(
        err.contains("`link` is a symbolic link leading out of the tree"),
        "{err}"
    );
}

#[test]
fn an_image_toml_linked_out_of_the_tree_is_refused() {
    let outside = tempfile::tempdir().expect("temp dir");
    let foreign = outside.path().join("image.toml");
    std::fs::write(
        &foreign,
        format!("from = \"debian:bookworm\"\n# {SECRET}\n"),
    )
    .expect("write");
    let tree = TestTree::new(&[("kiln.toml", &kiln_toml(""))]);
    std::fs::create_dir_all(tree.path().join("base")).expect("mkdir");
    symlink(&foreign, tree.path().join("base/image.toml")).expect("symlink");
    insta::assert_snapshot!(refused(&tree, &foreign));
}

#[test]
fn a_kiln_toml_linked_out_of_the_tree_is_refused() {
    let outside = tempfile::tempdir().expect("temp dir");
    let foreign = outside.path().join("kiln.toml");
    std::fs::write(&foreign, kiln_toml(&format!("# {SECRET}"))).expect("write");
    let tree = TestTree::new(&[("base/image.toml", "from = \"debian:bookworm\"\n")]);
    symlink(&foreign, tree.path().join("kiln.toml")).expect("symlink");
    let err = refused(&tree, &foreign);
    assert!(
        err.contains("failed to read `kiln.toml`: it is a symbolic link leading out of"),
        "{err}"
    );
}

#[test]
fn run_scripts_linked_out_of_the_tree_are_refused() {
    let (_host_dir, host) = host_file();
    let tree = TestTree::new(&[
        (
            "kiln.toml",
            &kiln_toml("[defaults]\nrun = [\"shared/setup.sh\"]\n"),
        ),
        (
            "base/image.toml",
            "from = \"debian:bookworm\"\nrun = [{ name = \"s\", script = \"setup.sh\" }]\n",
        ),
    ]);
    std::fs::create_dir_all(tree.path().join("shared")).expect("mkdir");
    symlink(&host, tree.path().join("base/setup.sh")).expect("symlink");
    symlink(&host, tree.path().join("shared/setup.sh")).expect("symlink");
    insta::assert_snapshot!(refused(&tree, &host));
}

#[test]
fn a_rootfs_linked_out_of_the_tree_is_refused() {
    let (host_dir, host) = host_file();
    let tree = TestTree::new(&[
        ("kiln.toml", &kiln_toml("")),
        (
            "base/image.toml",
            "from = \"debian:bookworm\"\nrootfs = \"root\"\n",
        ),
    ]);
    symlink(host_dir.path(), tree.path().join("base/root")).expect("symlink");
    let err = refused(&tree, &host);
    assert!(
        err.contains("`root` is a symbolic link leading out of the tree"),
        "{err}"
    );
}

#[test]
fn links_inside_the_tree_work() {
    let tree = TestTree::new(&[
        ("kiln.toml", &kiln_toml("")),
        (
            "base/image.toml",
            "from = \"debian:bookworm\"\nfiles = [{ path = \"/etc/motd\", source = \"motd\" }]\nrun = [\"setup.sh\"]\n",
        ),
        ("common/motd", "hello\n"),
        ("common/setup.sh", "echo hi\n"),
        // Links out of the tree are fine where nothing follows them.
        ("base/rootfs/etc/issue", "kiln\n"),
    ]);
    symlink("../common/motd", tree.path().join("base/motd")).expect("symlink");
    symlink("../common/setup.sh", tree.path().join("base/setup.sh")).expect("symlink");
    symlink(
        "/etc/shadow",
        tree.path().join("base/rootfs/etc/shadow-link"),
    )
    .expect("symlink");
    let digest = || {
        let run = kiln(tree.path(), &["plan", ".", "--json"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
        v["variants"][0]["digest"]
            .as_str()
            .expect("digest")
            .to_string()
    };
    let before = digest();
    // What the link leads to is an input of the variant.
    std::fs::write(tree.path().join("common/motd"), "changed\n").expect("write");
    assert_ne!(before, digest());
}

#[test]
fn a_shared_path_below_a_folder_linked_out_of_the_tree_is_refused() {
    let (host_dir, host) = host_file();
    let tree = TestTree::new(&[
        (
            "kiln.toml",
            &kiln_toml("[defaults]\nfiles = [{ path = \"/etc/x\", source = \"shared/shadow\" }]\n"),
        ),
        ("base/image.toml", "from = \"debian:bookworm\"\n"),
    ]);
    symlink(host_dir.path(), tree.path().join("shared")).expect("symlink");
    let err = refused(&tree, &host);
    assert!(
        err.contains("`shared/shadow` is below `shared`, a symbolic link leading out of the tree"),
        "{err}"
    );
}

#[test]
fn a_kiln_lock_linked_out_of_the_tree_is_never_read() {
    let (_host_dir, host) = host_file();
    let tree = TestTree::new(&[
        ("kiln.toml", &kiln_toml("")),
        ("base/image.toml", "from = \"debian:bookworm\"\n"),
    ]);
    symlink(&host, tree.path().join("kiln.lock")).expect("symlink");
    let build = kiln(tree.path(), &["build", ".", "--offline"]);
    assert_ne!(build.code, 0, "{}", build.stderr);
    assert!(!build.stderr.contains(SECRET), "{}", build.stderr);
    assert!(!build.stdout.contains(SECRET), "{}", build.stdout);
    assert!(
        build
            .stderr
            .contains("it is a symbolic link leading out of the tree"),
        "{}",
        build.stderr
    );
}

#[test]
fn an_image_folders_rootfs_linked_out_of_the_tree_is_refused() {
    let (host_dir, host) = host_file();
    let tree = TestTree::new(&[
        ("kiln.toml", &kiln_toml("")),
        ("base/image.toml", "from = \"debian:bookworm\"\n"),
    ]);
    symlink(host_dir.path(), tree.path().join("base/rootfs")).expect("symlink");
    let err = refused(&tree, &host);
    assert!(
        err.contains("`rootfs` is a symbolic link leading out of the tree"),
        "{err}"
    );
}
