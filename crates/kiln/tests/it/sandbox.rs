//! The build sandbox, tried as a hostile tree would: every `run` step
//! below attempts an escape that worked before the sandbox (writing
//! through `/proc/1/root`, a bind mount, perl's chroot escape, reading the
//! host's disks, reaching the host's loopback) and writes what happened
//! into the image, which the test then reads back together with the host
//! folder the attempts aimed at.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use crate::{TestTree, kiln, skip_end_to_end};

/// The attempts, as a POSIX shell script; `@HOST@` is a host folder,
/// `@PORT@` a port the test listens on at the host's 127.0.0.1.
const ESCAPES: &str = r#"
r=/root/sandbox
mkdir -p $r
H=@HOST@
if echo x > /proc/1/root$H/through-proc1 2>/dev/null; then echo written; else echo refused; fi > $r/proc1
ls /proc/1/root > $r/proc1-root
mkdir -p /mnt/host
if mount --bind /proc/1/root$H /mnt/host 2>/dev/null || mount --bind / /mnt/host 2>/dev/null; then
  echo x > /mnt/host/through-mount; echo mounted
else echo refused; fi > $r/mount
if unshare --mount true 2>/dev/null; then echo unshared; else echo refused; fi > $r/unshare
perl -e 'mkdir "/escape"; chroot "/escape" or exit 3; chdir ".." for 1..64; chroot "." or exit 4;
  open(my $f, ">", "@HOST@/through-chroot") or exit 5; print $f "x\n"; close $f; exit 0'
echo $? > $r/perl
ls /dev > $r/dev
if mknod /root/disk b 8 0 2>/dev/null; then echo made; else echo refused; fi > $r/mknod
grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status > $r/status
tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' > $r/interfaces
if bash -c 'exec 3<>/dev/tcp/127.0.0.1/@PORT@ && echo offline >&3' 2>/dev/null; then echo connected; else echo refused; fi > $r/offline
if ischroot; then echo chroot; else echo "not a chroot"; fi > $r/ischroot
"#;

/// A step with `network = true`: the host's loopback is reachable and
/// names resolve with the host's `/etc/resolv.conf`.
const ONLINE: &str = r"
r=/root/sandbox
if bash -c 'exec 3<>/dev/tcp/127.0.0.1/@PORT@ && echo online >&3' 2>/dev/null; then echo connected; else echo refused; fi > $r/online
cat /etc/resolv.conf > $r/resolv.conf
";

fn read(root: &Path, name: &str) -> String {
    std::fs::read_to_string(root.join("root/sandbox").join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn run_steps_cannot_reach_the_host() {
    if skip_end_to_end() {
        return;
    }
    let host = tempfile::tempdir().expect("host folder");
    std::fs::set_permissions(
        host.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port().to_string();
    // Every connection's first line; the thread ends with the test.
    let (sender, received) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut line = String::new();
            let _ = BufReader::new(stream).read_line(&mut line);
            if sender.send(line.trim().to_owned()).is_err() {
                break;
            }
        }
    });
    let fill = |script: &str| {
        script
            .replace("@HOST@", host.path().to_str().expect("utf-8"))
            .replace("@PORT@", &port)
    };
    let image = format!(
        "from = \"debian:bookworm\"\nvariant = \"essential\"\npackages = [\"mount\"]\noutputs = [\"dir\"]\n\
         run = [\n  {{ name = \"escapes\", inline = '''{}''' }},\n  {{ name = \"online\", inline = '''{}''', network = true }},\n]\n",
        fill(ESCAPES),
        fill(ONLINE)
    );
    let t = TestTree::new(&[
        ("kiln.toml", "[output]\ndir = \"out\"\n"),
        ("img/image.toml", &image),
    ]);
    let cache = t.path().join("cache");
    let run = kiln(
        t.path(),
        &["build", ".", "--cache-dir", cache.to_str().expect("utf-8")],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);

    // Nothing reached the host folder.
    let written: Vec<_> = std::fs::read_dir(host.path())
        .expect("read host folder")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(written.is_empty(), "the host folder got {written:?}");

    let root = t.path().join("out/img/rootfs");
    assert_eq!(read(&root, "proc1"), "refused\n");
    // PID 1's root holds the image and nothing of the host.
    assert_eq!(read(&root, "proc1-root"), "image\n");
    assert_eq!(read(&root, "mount"), "refused\n");
    assert_eq!(read(&root, "unshare"), "refused\n");
    assert_eq!(read(&root, "perl"), "3\n", "chroot is refused");
    assert_eq!(
        read(&root, "dev").split_whitespace().collect::<Vec<_>>(),
        [
            "fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout",
            "tty", "urandom", "zero"
        ],
        "a private /dev without the host's disks"
    );
    assert_eq!(read(&root, "mknod"), "refused\n");
    // CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
    // NET_BIND_SERVICE AUDIT_WRITE SETFCAP, and nothing else.
    assert_eq!(
        read(&root, "status"),
        "CapEff:\t00000000a00005fb\nCapBnd:\t00000000a00005fb\nNoNewPrivs:\t1\nSeccomp:\t2\n"
    );
    assert_eq!(read(&root, "interfaces"), "lo\n", "loopback only");
    assert_eq!(read(&root, "offline"), "refused\n");
    assert_eq!(read(&root, "ischroot"), "chroot\n", "ischroot stays fast");

    // `network = true` reaches the host, and only that step did.
    assert_eq!(read(&root, "online"), "connected\n");
    let lines: Vec<String> =
        std::iter::from_fn(|| received.recv_timeout(Duration::from_secs(1)).ok()).collect();
    assert_eq!(lines, ["online"]);
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    assert_eq!(read(&root, "resolv.conf"), host_resolv);
    // The host's resolv.conf was only lent to the step.
    assert!(
        !root.join("etc/resolv.conf").exists()
            || std::fs::read_to_string(root.join("etc/resolv.conf")).ok() != Some(host_resolv),
        "the host's resolv.conf stayed in the image"
    );
}
