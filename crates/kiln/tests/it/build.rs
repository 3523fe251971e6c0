//! `kiln build` against the real Debian archive this machine reaches (the
//! host's apt sources), checked with Debian's own tools.
//!
//! These tests need root (chroot, mounts) and the network; set
//! `KILN_SKIP_NETWORK_TESTS=1` to skip them.

use std::path::Path;
use std::process::Command;

use crate::{TestTree, assert_no_mount_under, assert_store_verifies, have, kiln, skip_end_to_end};

/// Each test tree has its own cache (and so its own layer store), so tests
/// never see each other's layers.
fn cache_of(t: &TestTree) -> std::path::PathBuf {
    t.path().join("cache")
}

fn chroot(root: &Path, args: &[&str]) -> std::process::Output {
    Command::new("chroot")
        .arg(root)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .expect("chroot runs")
}

/// A tree with one image; its root is exported as `out/img/rootfs`.
fn tree(image: &str) -> TestTree {
    let image = format!("{image}outputs = [\"dir\"]\n");
    TestTree::new(&[
        ("kiln.toml", "[output]\ndir = \"out\"\n"),
        ("img/image.toml", &image),
    ])
}

fn build(t: &TestTree, extra: &[&str]) -> crate::Run {
    let cache = cache_of(t);
    let mut args = vec!["build", ".", "--cache-dir", cache.to_str().expect("utf-8")];
    args.extend(extra);
    kiln(t.path(), &args)
}

#[test]
fn minbase_matches_mmdebstrap_and_passes_dpkg_and_apt_checks() {
    if skip_end_to_end() {
        return;
    }
    let t = tree("from = \"debian:bookworm\"\nvariant = \"minbase\"\n");
    let run = build(&t, &[]);
    assert_eq!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let root = t.path().join("out/img/rootfs");
    assert!(t.path().join("kiln.lock").is_file(), "the lock is written");
    // Before apt runs in it (which makes them again).
    let bins: Vec<_> = std::fs::read_dir(root.join("var/cache/apt"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !bins.iter().any(|n| n.to_string_lossy().ends_with(".bin")),
        "apt's caches removed: {bins:?}"
    );

    let ours = chroot(
        &root,
        &[
            "dpkg-query",
            "-W",
            "-f",
            "${Package}\t${Version}\t${db:Status-Status}\n",
        ],
    );
    assert!(ours.status.success());
    let ours = String::from_utf8(ours.stdout).expect("utf-8");
    assert!(
        ours.lines().all(|l| l.ends_with("\tinstalled")),
        "every package configured:\n{ours}"
    );

    let audit = chroot(&root, &["dpkg", "--audit"]);
    assert!(
        audit.status.success() && audit.stdout.is_empty(),
        "dpkg --audit: {}",
        String::from_utf8_lossy(&audit.stdout)
    );
    let check = chroot(&root, &["apt-get", "check"]);
    assert!(
        check.status.success(),
        "apt-get check: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        !root.join("usr/sbin/policy-rc.d").exists(),
        "policy-rc.d removed"
    );
    assert_no_mount_under(&root);
    // The files no package ships, host-independent.
    let read = |rel: &str| std::fs::read_to_string(root.join(rel)).expect(rel);
    assert_eq!(read("etc/fstab"), "# UNCONFIGURED FSTAB FOR BASE SYSTEM\n");
    assert_eq!(read("etc/hostname"), "localhost\n");
    assert_eq!(read("etc/resolv.conf"), "");
    let showauto = |root: &std::path::Path| {
        let out = chroot(root, &["apt-mark", "showauto"]);
        assert!(out.status.success(), "apt-mark showauto");
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let auto = showauto(&root);
    assert!(
        auto.lines().any(|l| l == "libgnutls30") && !auto.lines().any(|l| l == "apt"),
        "dependencies are automatically installed, apt is not:\n{auto}"
    );

    // The same package set, versions and auto-installed marks as
    // mmdebstrap with the same sources.
    if have("mmdebstrap") {
        let mm = tempfile::tempdir().expect("tmp");
        let target = mm.path().join("root");
        let status = Command::new("mmdebstrap")
            .args(["--variant=minbase", "--mode=root", "--quiet", "bookworm"])
            .arg(&target)
            .status()
            .expect("mmdebstrap runs");
        assert!(status.success());
        let theirs = chroot(
            &target,
            &[
                "dpkg-query",
                "-W",
                "-f",
                "${Package}\t${Version}\t${db:Status-Status}\n",
            ],
        );
        assert_eq!(
            ours,
            String::from_utf8(theirs.stdout).expect("utf-8"),
            "dpkg-query -W differs from mmdebstrap's"
        );
        assert_eq!(auto, showauto(&target), "apt-mark showauto differs");
        assert_eq!(
            read("etc/fstab"),
            std::fs::read_to_string(target.join("etc/fstab")).expect("fstab")
        );
    }
}

#[test]
fn openssh_server_and_busybox_build_and_sshd_config_is_valid() {
    if skip_end_to_end() {
        return;
    }
    // Apt lists kept (cleanup removes them by default) so apt in the image resolves.
    let t = tree(
        "from = \"debian:bookworm\"\npackages = [\"openssh-server\", \"busybox\"]\ncleanup = { apt = false }\n",
    );
    let run = build(&t, &[]);
    assert_eq!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let root = t.path().join("out/img/rootfs");
    // The image ships no host keys (cleanup's `ssh_host_keys`): they are
    // made where it boots, as `ssh-keygen -A` (what kiln's first-boot unit
    // runs on an image with systemd) does here.
    let keys: Vec<_> = std::fs::read_dir(root.join("etc/ssh"))
        .expect("etc/ssh")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ssh_host_"))
        .collect();
    assert!(keys.is_empty(), "host keys in the image: {keys:?}");
    let keygen = chroot(&root, &["/usr/bin/ssh-keygen", "-A"]);
    assert!(keygen.status.success(), "{keygen:?}");
    // At boot, the unit's RuntimeDirectory= creates /run/sshd; sshd -t wants it.
    std::fs::create_dir_all(root.join("run/sshd")).expect("mkdir");
    let sshd = chroot(&root, &["/usr/sbin/sshd", "-t"]);
    assert!(
        sshd.status.success(),
        "sshd -t: {}",
        String::from_utf8_lossy(&sshd.stderr)
    );
    let bb = chroot(&root, &["busybox", "true"]);
    assert!(bb.status.success());
    let dry = chroot(&root, &["apt-get", "install", "--dry-run", "-q", "curl"]);
    assert!(
        dry.status.success(),
        "apt-get install --dry-run curl: {}",
        String::from_utf8_lossy(&dry.stderr)
    );
}

#[test]
fn user_errors_stop_the_build_and_install_nothing() {
    if skip_end_to_end() {
        return;
    }
    for (image, needle) in [
        (
            "from = \"debian:bookworm\"\npackages = [\"no-such-package-kiln\"]\n",
            "no-such-package-kiln",
        ),
        (
            "from = \"debian:bookworm\"\npackages = [\"busybox=0.0-nope\"]\n",
            "0.0-nope",
        ),
    ] {
        let t = tree(image);
        let run = build(&t, &[]);
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(run.stderr.contains(needle), "{}", run.stderr);
        assert!(
            !t.path().join("out/img/rootfs").exists(),
            "nothing installed"
        );
        let plan = kiln(
            t.path(),
            &[
                "plan",
                ".",
                "--cache-dir",
                cache_of(&t).to_str().expect("utf-8"),
            ],
        );
        assert!(
            plan.stdout.contains("0 cached"),
            "no layer stored:\n{}",
            plan.stdout
        );
        assert!(!t.path().join("kiln.lock").exists(), "no lock written");
    }
}

#[test]
fn locked_builds_install_exactly_the_lock_and_offline_works_warm() {
    if skip_end_to_end() {
        return;
    }
    let t = tree("from = \"debian:bookworm\"\nvariant = \"essential\"\n");
    // No lock yet: --locked refuses.
    let run = build(&t, &["--locked"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("kiln lock"), "{}", run.stderr);
    let lock = kiln(
        t.path(),
        &[
            "lock",
            ".",
            "--cache-dir",
            cache_of(&t).to_str().expect("utf-8"),
        ],
    );
    assert_eq!(lock.code, 0, "{}", lock.stderr);
    let run = build(&t, &["--locked"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // Warm and offline: no network needed.
    let run = build(&t, &["--locked", "--offline"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lock_text = std::fs::read_to_string(t.path().join("kiln.lock")).expect("lock");
    let listed = chroot(
        &t.path().join("out/img/rootfs"),
        &["dpkg-query", "-W", "-f", "${Package}=${Version}\n"],
    );
    for line in String::from_utf8(listed.stdout).expect("utf-8").lines() {
        let (name, version) = line.split_once('=').expect("name=version");
        assert!(
            lock_text.contains(&format!("name = \"{name}\"\nversion = \"{version}\"")),
            "{name} {version} not in the lock"
        );
    }
}

/// Starts a build with a fresh cache, kills it with SIGKILL once its
/// stderr shows `marker`, then checks that the next build succeeds and that
/// every cache entry is intact.
fn killed_at(marker: &str, delay: std::time::Duration) {
    use std::io::{BufRead, BufReader};
    let t = tree("from = \"debian:bookworm\"\nvariant = \"essential\"\n");
    let cache = t.path().join("cache");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", ".", "--cache-dir"])
        .arg(&cache)
        .current_dir(t.path())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("kiln starts");
    let stderr = child.stderr.take().expect("piped");
    let mut seen = String::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("utf-8");
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(marker) {
            break;
        }
    }
    std::thread::sleep(delay);
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    assert!(seen.contains(marker), "never reached `{marker}`:\n{seen}");

    let run = kiln(
        t.path(),
        &["build", ".", "--cache-dir", cache.to_str().expect("utf-8")],
    );
    assert_eq!(
        run.code, 0,
        "after a kill at `{marker}`:\n{}\n{}",
        run.stdout, run.stderr
    );
    assert!(t.path().join("out/img/rootfs/usr/bin/dpkg").exists());
    // Every cached .deb is complete: its name is its SHA256.
    for e in std::fs::read_dir(cache.join("debs")).expect("debs") {
        let p = e.expect("entry").path();
        let name = p.file_stem().expect("stem").to_string_lossy().into_owned();
        let out = Command::new("sha256sum")
            .arg(&p)
            .output()
            .expect("sha256sum");
        let sum = String::from_utf8(out.stdout).expect("utf-8");
        assert!(
            sum.starts_with(&name),
            "corrupt cache entry {}",
            p.display()
        );
    }
    // No staging folder or mount is left behind.
    let mut left: Vec<_> = std::fs::read_dir(t.path().join("out"))
        .expect("out")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    left.sort();
    // The variant's folder and the manifest of the build that finished.
    assert_eq!(
        left,
        [
            std::ffi::OsString::from("img"),
            std::ffi::OsString::from("manifest.json")
        ]
    );
    assert_store_verifies(t.path(), &cache);
    assert_no_mount_under(t.path());
}

#[test]
fn sigkill_during_download_unpack_and_configure_leaves_nothing_untrusted() {
    if skip_end_to_end() {
        return;
    }
    let ms = std::time::Duration::from_millis;
    // Downloads start right after resolution; unpacking and configuring are
    // steps kiln-dpkg reports.
    for (marker, delay) in [
        ("download", ms(100)),
        ("unpack", ms(200)),
        ("configure", ms(500)),
    ] {
        killed_at(marker, delay);
    }
}

/// A tmpfs mounted for a test, unmounted when dropped (even on failure).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Self {
        std::fs::create_dir_all(at).expect("mkdir");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                "size=4g",
                "kiln-test",
                at.to_str().expect("utf-8"),
            ])
            .status()
            .expect("mount runs");
        assert!(status.success(), "mount a tmpfs at {}", at.display());
        Self(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn cache_and_output_on_different_file_systems() {
    if skip_end_to_end() {
        return;
    }
    // The cache (layer store, artifacts) on a tmpfs, the output on the
    // test's disk: artifacts cannot be copied with copy_file_range there.
    let t = TestTree::new(&[
        ("kiln.toml", "[output]\ndir = \"out\"\n"),
        (
            "img/image.toml",
            "from = \"debian:bookworm\"\nvariant = \"essential\"\noutputs = [\"dir\", \"tar\", \"squashfs\"]\n",
        ),
    ]);
    let cache = cache_of(&t);
    let _tmpfs = Tmpfs::mount(&cache);
    let run = build(&t, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    for format in ["tar", "squashfs"] {
        let artifact = t.path().join(format!("out/img/img-r0.{format}"));
        let size = std::fs::metadata(&artifact).map_or(0, |m| m.len());
        assert!(size > 1 << 20, "{} is {size} bytes", artifact.display());
    }
    let listed = Command::new("tar")
        .arg("-tf")
        .arg(t.path().join("out/img/img-r0.tar"))
        .output()
        .expect("tar runs");
    assert!(listed.status.success());
    assert!(String::from_utf8_lossy(&listed.stdout).contains("./usr/bin/dpkg"));
    assert!(t.path().join("out/img/rootfs/usr/bin/dpkg").is_file());
    assert_store_verifies(t.path(), &cache);
}

#[test]
fn a_root_of_a_foreign_abi_fails_saying_the_sandbox_refuses_it() {
    if skip_end_to_end() {
        return;
    }
    // i386 binaries make i386 system calls, which the seccomp filter
    // (native ABI only) kills: the error must say so, not name no step.
    let t = tree("from = \"debian:bookworm\"\nvariant = \"essential\"\narch = \"i386\"\n");
    let run = build(&t, &[]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("/bin/sh of the root, before the first preinst")
            || run
                .stderr
                .contains("/bin/sh of the root, before the first preinst"),
        "{}{}",
        run.stdout,
        run.stderr
    );
    assert!(
        format!("{}{}", run.stdout, run.stderr).contains("SIGSYS: the sandbox's seccomp filter"),
        "{}{}",
        run.stdout,
        run.stderr
    );
    assert_no_mount_under(t.path());
}
