//! `Overlay`: changes land in the upper directory, as whiteouts and opaque
//! directories where they delete.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use kiln_layers::{LayerStack, MergedView, Overlay, private_mount_namespace, whiteouts};

use crate::support::{Mounted, Node, make_layer, snapshot_fs, snapshot_view, tempdir};

fn base_layer(dir: &std::path::Path) {
    make_layer(
        dir,
        &[
            (
                "etc/motd".to_owned(),
                Node::File(b"hello\n".to_vec(), 0o644),
            ),
            (
                "etc/old".to_owned(),
                Node::File(b"remove me\n".to_vec(), 0o644),
            ),
            ("srv/data/a".to_owned(), Node::File(b"a".to_vec(), 0o644)),
            ("srv/data/b".to_owned(), Node::File(b"b".to_vec(), 0o644)),
        ],
    );
}

#[test]
fn changes_land_in_the_upper_directory() {
    if kiln_testkit::require::lacks_root("overlay mounts") {
        return;
    }
    private_mount_namespace().unwrap();
    let dir = tempdir();
    let lower = dir.path().join("lower");
    base_layer(&lower);
    let stack = LayerStack::new(vec![lower.clone()]);
    let mut mounted = Mounted::new(&stack);
    let merged = mounted.merged();

    fs::write(merged.join("etc/new"), "new\n").unwrap();
    fs::remove_file(merged.join("etc/old")).unwrap();
    fs::remove_dir_all(merged.join("srv/data")).unwrap();
    fs::create_dir(merged.join("srv/data")).unwrap();
    fs::write(merged.join("srv/data/c"), "c").unwrap();
    let through_mount = snapshot_fs(&merged);
    mounted.overlay.try_unmount().unwrap();
    assert!(fs::read_dir(&merged).unwrap().next().is_none(), "unmounted");

    // The lower layer is untouched.
    assert_eq!(fs::read(lower.join("etc/old")).unwrap(), b"remove me\n");
    let upper = mounted.upper();
    assert_eq!(fs::read(upper.join("etc/new")).unwrap(), b"new\n");
    assert!(
        !upper.join("etc/motd").exists(),
        "unchanged files stay below"
    );
    let meta = fs::symlink_metadata(upper.join("etc/old")).unwrap();
    assert!(meta.file_type().is_char_device());
    assert_eq!(meta.rdev(), 0);
    assert_eq!(whiteouts(&upper).unwrap(), ["etc/old", "srv/data/"]);

    // The new layer on its stack reads as the mount did.
    let view = MergedView::new(&stack.with(upper));
    assert_eq!(snapshot_view(&view), through_mount);
    let paths: Vec<String> = view.walk().map(|e| e.unwrap().path).collect();
    assert_eq!(
        paths,
        [
            "",
            "etc",
            "etc/motd",
            "etc/new",
            "srv",
            "srv/data",
            "srv/data/c"
        ]
    );
}

#[test]
fn unmount_fails_while_busy_and_drop_unmounts() {
    if kiln_testkit::require::lacks_root("overlay mounts") {
        return;
    }
    private_mount_namespace().unwrap();
    let dir = tempdir();
    let lower = dir.path().join("lower");
    base_layer(&lower);
    let stack = LayerStack::new(vec![lower]);
    let mut mounted = Mounted::new(&stack);
    let merged = mounted.merged();
    let busy = fs::File::open(merged.join("etc/motd")).unwrap();
    let error = mounted.overlay.try_unmount().unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("Failed to unmount the layers on `"),
        "{error}"
    );
    assert!(merged.join("etc/motd").exists(), "still mounted");
    drop(busy);
    mounted.overlay.try_unmount().unwrap();
    mounted.overlay.try_unmount().unwrap();

    let target = dir.path().join("again");
    for d in ["up", "wk", "again"] {
        fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    let overlay = Overlay::mount(
        &stack,
        &dir.path().join("up"),
        &dir.path().join("wk"),
        &target,
    )
    .unwrap();
    assert!(target.join("etc/motd").exists());
    assert_eq!(overlay.target(), target);
    drop(overlay);
    assert!(!target.join("etc/motd").exists(), "unmounted on drop");

    // Consuming `unmount` on a busy mount fails and detaches it.
    let overlay = Overlay::mount(
        &stack,
        &dir.path().join("up"),
        &dir.path().join("wk"),
        &target,
    )
    .unwrap();
    let busy = fs::File::open(target.join("etc/motd")).unwrap();
    assert!(overlay.unmount().is_err());
    assert!(!target.join("etc/motd").exists(), "detached");
    drop(busy);
}

#[test]
fn read_only_mounts_match_the_view() {
    if kiln_testkit::require::lacks_root("overlay mounts") {
        return;
    }
    private_mount_namespace().unwrap();
    let dir = tempdir();
    let (bottom, top) = (dir.path().join("bottom"), dir.path().join("top"));
    base_layer(&bottom);
    make_layer(
        &top,
        &[
            ("etc/old".to_owned(), Node::Whiteout),
            ("etc/new".to_owned(), Node::File(b"new".to_vec(), 0o600)),
        ],
    );
    let target = dir.path().join("ro");
    fs::create_dir(&target).unwrap();
    for stack in [
        LayerStack::new(vec![bottom.clone()]),
        LayerStack::new(vec![bottom.clone(), top.clone()]),
    ] {
        let overlay = Overlay::mount_read_only(&stack, &target).unwrap();
        assert_eq!(
            snapshot_fs(&target),
            snapshot_view(&MergedView::new(&stack))
        );
        let error = fs::write(target.join("etc/x"), "x").unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::EROFS));
        overlay.unmount().unwrap();
    }
}

#[test]
fn paths_with_separators_mount() {
    if kiln_testkit::require::lacks_root("overlay mounts") {
        return;
    }
    private_mount_namespace().unwrap();
    let dir = tempdir();
    let lower = dir.path().join("odd:name,with\\chars");
    base_layer(&lower);
    let mounted = Mounted::new(&LayerStack::new(vec![lower]));
    assert!(mounted.merged().join("etc/motd").exists());
}

#[test]
fn mount_errors_name_the_target() {
    if kiln_testkit::require::lacks_root("overlay mounts") {
        return;
    }
    private_mount_namespace().unwrap();
    let dir = tempdir();
    let missing = dir.path().join("missing");
    let error = Overlay::mount(
        &LayerStack::new(vec![missing.clone()]),
        &missing,
        &missing,
        &missing,
    )
    .unwrap_err();
    let text = error.to_string();
    assert!(
        text.starts_with("Failed to mount the layers on `"),
        "{text}"
    );
    assert!(std::error::Error::source(&error).is_some());
}
