//! Provisioning reads the tree's files as the loader recorded them: a file
//! edited after the tree was loaded (and the plan's digests made) fails the
//! build instead of being built under the old digest. No Debian root is
//! needed: the checks come before anything runs in the root.

use std::fs;
use std::path::Path;

use kiln_config::settings::{ConfigPath, FileContent, FileSpec, RunBody, RunStep};
use kiln_config::{FileId, Origin, TreeInputs};
use kiln_layers::{Error, ProvisionContext, provision};

use crate::provision::settings;
use crate::support::tempdir;

fn image_path(path: &str) -> ConfigPath {
    ConfigPath {
        path: path.to_owned(),
        origin: Origin {
            file: FileId::from_index(1),
            span: 0..0,
        },
    }
}

/// A tree with an image folder `images/web` holding `files`, and an empty
/// root with the accounts files `files` needs.
fn tree(files: &[(&str, &str)]) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempdir();
    let tree = dir.path().join("tree");
    for (path, content) in files {
        let p = tree.join("images/web").join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("usr/sbin")).unwrap();
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    (dir, tree, root)
}

fn changed(error: &Error, path: &Path) {
    assert!(
        matches!(error, Error::Changed { path: p } if p == path),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "`{}` changed since the build started; run the build again",
            path.display()
        )
    );
}

fn run(root: &Path, inputs: &TreeInputs, s: &kiln_config::ImageSettings) -> Result<(), Error> {
    provision(root, inputs, s, &ProvisionContext::default(), &|_, _| {}).map(|_| ())
}

#[test]
fn a_files_source_edited_after_loading_fails_the_build() {
    let (_dir, tree, root) = tree(&[("motd", "old\n")]);
    let inputs = TreeInputs::scan(&tree, Path::new("images/web")).unwrap();
    fs::write(tree.join("images/web/motd"), "new\n").unwrap();
    let mut s = settings();
    s.files = vec![FileSpec {
        path: "/etc/motd".to_owned(),
        content: FileContent::Source(image_path("motd")),
        mode: 0o644,
        owner: "root".to_owned(),
        group: "root".to_owned(),
    }];
    let error = run(&root, &inputs, &s).unwrap_err();
    changed(&error, &tree.join("images/web/motd"));
    assert!(!root.join("etc/motd").exists(), "nothing written");
}

#[test]
fn an_unchanged_files_source_is_written() {
    let (_dir, tree, root) = tree(&[("motd", "old\n")]);
    let inputs = TreeInputs::scan(&tree, Path::new("images/web")).unwrap();
    let mut s = settings();
    s.files = vec![FileSpec {
        path: "/etc/motd".to_owned(),
        content: FileContent::Source(image_path("motd")),
        mode: 0o644,
        owner: "root".to_owned(),
        group: "root".to_owned(),
    }];
    run(&root, &inputs, &s).unwrap();
    assert_eq!(fs::read_to_string(root.join("etc/motd")).unwrap(), "old\n");
}

#[test]
fn a_rootfs_file_edited_after_loading_fails_the_build() {
    let (_dir, tree, root) = tree(&[("rootfs/etc/issue", "old\n")]);
    let inputs = TreeInputs::scan(&tree, Path::new("images/web")).unwrap();
    fs::write(tree.join("images/web/rootfs/etc/issue"), "new\n").unwrap();
    let mut s = settings();
    s.rootfs = Some(image_path("rootfs"));
    let error = run(&root, &inputs, &s).unwrap_err();
    changed(&error, &tree.join("images/web/rootfs/etc/issue"));
    assert!(!root.join("etc/issue").exists(), "nothing written");
}

#[test]
fn a_rootfs_file_replaced_by_a_link_out_of_the_tree_fails_the_build() {
    let (_dir, tree, root) = tree(&[("rootfs/etc/issue", "old\n")]);
    let inputs = TreeInputs::scan(&tree, Path::new("images/web")).unwrap();
    let issue = tree.join("images/web/rootfs/etc/issue");
    fs::remove_file(&issue).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &issue).unwrap();
    let mut s = settings();
    s.rootfs = Some(image_path("rootfs"));
    let error = run(&root, &inputs, &s).unwrap_err();
    changed(&error, &issue);
}

#[test]
fn rootfs_links_are_copied_as_links() {
    let (_dir, tree, root) = tree(&[("rootfs/etc/issue", "hello\n")]);
    std::os::unix::fs::symlink(
        "/etc/shadow",
        tree.join("images/web/rootfs/etc/shadow-link"),
    )
    .unwrap();
    let inputs = TreeInputs::scan(&tree, Path::new("images/web")).unwrap();
    let mut s = settings();
    s.rootfs = Some(image_path("rootfs"));
    run(&root, &inputs, &s).unwrap();
    assert_eq!(
        fs::read_link(root.join("etc/shadow-link")).unwrap(),
        Path::new("/etc/shadow")
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/issue")).unwrap(),
        "hello\n"
    );
}

#[test]
fn a_script_edited_after_loading_fails_the_build() {
    let (_dir, tree, root) = tree(&[("setup.sh", "echo old\n")]);
    let inputs = TreeInputs::scan(&tree, Path::new("images/web")).unwrap();
    fs::write(tree.join("images/web/setup.sh"), "echo new\n").unwrap();
    let mut s = settings();
    s.run = vec![RunStep {
        name: "setup.sh".to_owned(),
        body: RunBody::Script(image_path("setup.sh")),
        network: false,
    }];
    let error = run(&root, &inputs, &s).unwrap_err();
    changed(&error, &tree.join("images/web/setup.sh"));
}
