//! The bundled examples for the three ways people use image builders,
//! built end to end and checked with the field's own tools: `netboot`
//! (squashfs, overlays, kernel and initrd; in `netboot.rs`), `cloud` (disks that boot, in
//! QEMU, directly, with `SeaBIOS` and with UEFI) and `microvm` (flist and
//! OCI layout). Root and the Debian archive are needed (skipped with
//! `KILN_SKIP_NETWORK_TESTS=1`); the boot tests need `qemu-system-x86_64`
//! (and OVMF for UEFI).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{have, kiln, skip_end_to_end};

/// The examples' builds share one package cache (not the reproducibility
/// test's, which starts from nothing): the same packages are not fetched
/// and unpacked for every example.
pub fn shared_cache() -> PathBuf {
    std::env::temp_dir().join("kiln-test-examples-cache")
}

/// Builds the tree at `dir` with `extra` arguments; returns the manifest.
pub fn build(dir: &Path, cache: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["build", ".", "--cache-dir", cache.to_str().expect("utf-8")];
    args.extend(extra);
    let run = kiln(dir, &args);
    assert_eq!(run.code, 0, "kiln build:\n{}\n{}", run.stdout, run.stderr);
    serde_json::from_str(&fs::read_to_string(dir.join("out/manifest.json")).expect("manifest"))
        .expect("JSON")
}

/// The file of `variant`'s artifact in `format`.
pub fn artifact(dir: &Path, m: &serde_json::Value, variant: &str, format: &str) -> PathBuf {
    let v = m["variants"]
        .as_array()
        .expect("variants")
        .iter()
        .find(|v| v["variant"] == variant)
        .unwrap_or_else(|| panic!("no variant {variant}: {m:#}"));
    let a = v["artifacts"]
        .as_array()
        .expect("artifacts")
        .iter()
        .find(|a| a["format"] == format)
        .unwrap_or_else(|| panic!("no {format} of {variant}: {v:#}"));
    let path = dir.join("out").join(a["path"].as_str().expect("path"));
    assert!(path.exists(), "{}", path.display());
    path
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn microvm_example_gives_an_flist_an_oci_layout_and_boots_directly() {
    if skip_end_to_end() || !have("skopeo") || !have("sqlite3") {
        return;
    }
    let tree = crate::example_copy("microvm");
    let dir = tree.path();
    let m = build(dir, &shared_cache(), &[]);
    let oci = artifact(dir, &m, "vm", "oci");
    let inspect: serde_json::Value = serde_json::from_str(&run(Command::new("skopeo")
        .arg("inspect")
        .arg("--config")
        .arg(format!("oci:{}", oci.display()))))
    .expect("JSON");
    assert_eq!(inspect["config"]["Cmd"][0], "/bin/sh");
    let copied = tempfile::tempdir().expect("temp");
    run(Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}", oci.display()))
        .arg(format!("dir:{}", copied.path().display())));
    assert!(copied.path().join("manifest.json").is_file());
    // The flist's database is rfs's: its tables, the route configured.
    let flist = artifact(dir, &m, "vm", "flist");
    let tables = run(Command::new("sqlite3")
        .arg(&flist)
        .arg("select name from sqlite_master where type = 'table' and name not like 'sqlite_%' order by name"));
    assert_eq!(
        tables.lines().collect::<Vec<_>>(),
        ["block", "extra", "inode", "route", "tag"]
    );
    let route = run(Command::new("sqlite3")
        .arg(&flist)
        .arg("select url from route"));
    assert_eq!(route.trim(), "http://hub.example.com/kiln-blocks");
    let store = dir.join("out/flist-store");
    let cat = crate::flist_cat(dir, &flist, "/etc/hostname", &store);
    assert_eq!(
        (cat.code, cat.stdout.as_str()),
        (0, "microvm\n"),
        "{}",
        cat.stderr
    );
    if !have("qemu-system-x86_64") || !have("tmux") {
        return;
    }
    // `vm` has nothing QEMU boots; each refusal says what to add.
    let refused = kiln(dir, &["boot", "vm", "."]);
    let direct = kiln(dir, &["boot", "vm", ".", "--direct"]);
    insta::assert_snapshot!(
        "kiln_boot_refuses_what_does_not_boot",
        format!("{}\n{}", refused.stderr, direct.stderr)
    );
    assert_eq!((refused.code, direct.code), (2, 2));
    // `kvm` boots as micro-VM monitors boot: QEMU is handed the kernel
    // and initrd, the ext4 is /dev/vda; `kiln test` waits for the getty.
    let cache = shared_cache();
    let cache = cache.to_str().expect("utf-8");
    let run = kiln(
        dir,
        &["test", ".", "--only", "kvm", "--json", "--cache-dir", cache],
    );
    assert_eq!(run.code, 0, "kiln test:\n{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        test_verdicts(&run.stdout),
        [("kvm".into(), "direct".into(), "passed".into())]
    );
    let m: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("out/manifest.json")).expect("manifest"))
            .expect("JSON");
    let kvm = m["variants"]
        .as_array()
        .expect("variants")
        .iter()
        .find(|v| v["variant"] == "kvm")
        .expect("kvm");
    assert_eq!(kvm["test"]["passed"], true, "{kvm:#}");
    // `kiln boot` on a real terminal (tmux): the console reaches the
    // login prompt, and Ctrl-A X ends QEMU and kiln boot with status 0.
    let term = Tmux::start(dir, &["boot", "kvm", "."]);
    let screen = term.wait_for("microvm login:", Duration::from_secs(300));
    assert!(
        screen.contains("kiln boot: kvm kernel and initrd directly"),
        "{screen}"
    );
    term.keys(&["C-a", "x"]);
    assert_eq!(
        term.exit_status(Duration::from_secs(30)),
        0,
        "{}",
        term.screen()
    );
}

/// `kiln ARGS` in a detached tmux session on a server of its own, the
/// server killed when dropped.
struct Tmux {
    socket: String,
    status: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmux {
    fn start(cwd: &Path, args: &[&str]) -> Tmux {
        let dir = tempfile::tempdir().expect("temp");
        let status = dir.path().join("status");
        let mut line = String::from(env!("CARGO_BIN_EXE_kiln"));
        for a in args {
            line.push(' ');
            line.push_str(a);
        }
        line.push_str(&format!("; echo $? > {}; sleep 600", status.display()));
        let socket = format!("kiln-test-{}", std::process::id());
        run(Command::new("tmux")
            .args(["-L", &socket, "new-session", "-d", "-x", "200", "-y", "50"])
            .arg("-c")
            .arg(cwd)
            .arg(line));
        Tmux {
            socket,
            status,
            _dir: dir,
        }
    }

    fn screen(&self) -> String {
        run(Command::new("tmux").args(["-L", &self.socket, "capture-pane", "-p", "-S", "-"]))
    }

    /// Waits for `text` on the screen; returns the screen.
    fn wait_for(&self, text: &str, limit: Duration) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                start.elapsed() < limit,
                "no `{text}` after {limit:?}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn keys(&self, keys: &[&str]) {
        run(Command::new("tmux")
            .args(["-L", &self.socket, "send-keys"])
            .args(keys));
    }

    /// The command's exit status, once it has ended.
    fn exit_status(&self, limit: Duration) -> i32 {
        let start = Instant::now();
        loop {
            if let Ok(text) = fs::read_to_string(&self.status) {
                if let Ok(code) = text.trim().parse() {
                    return code;
                }
            }
            assert!(start.elapsed() < limit, "still running:\n{}", self.screen());
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

/// A QEMU guest, killed when dropped.
struct Guest {
    child: Child,
    console: PathBuf,
}

impl Guest {
    /// Starts `qemu-system-x86_64` (TCG: no KVM here) with `args`, its
    /// serial console written to `console`.
    fn start(args: &[&str], console: &Path) -> Guest {
        Guest::start_with("1024", args, console)
    }

    /// As [`Guest::start`], with `memory` MiB of RAM.
    fn start_with(memory: &str, args: &[&str], console: &Path) -> Guest {
        let log = fs::File::create(console).expect("console log");
        let child = Command::new("qemu-system-x86_64")
            .args(["-machine", "accel=tcg", "-m", memory, "-smp", "2"])
            .args(["-nographic", "-no-reboot", "-nic", "none"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("qemu starts");
        Guest {
            child,
            console: console.to_path_buf(),
        }
    }

    /// Waits up to `limit` for `marker` on the console; returns how long
    /// it took, or the console's end.
    fn wait_for(&mut self, marker: &str, limit: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        while started.elapsed() < limit {
            let text = fs::read(&self.console).unwrap_or_default();
            if String::from_utf8_lossy(&text).contains(marker) {
                return Ok(started.elapsed());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("QEMU ended ({status}):\n{}", tail(&text)));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let text = fs::read(&self.console).unwrap_or_default();
        Err(format!("no `{marker}` within {limit:?}:\n{}", tail(&text)))
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn tail(console: &[u8]) -> String {
    let text = String::from_utf8_lossy(console);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// What the example's boot unit prints once the system is up.
const MARKER: &str = "kiln-booted:";

/// The kernel command line a disk's boot loader passes, read from its ESP
/// (2 MiB into the disk) with mtools.
fn loader_options(disk: &Path) -> String {
    let entry = run(Command::new("mtype")
        .arg("-i")
        .arg(format!("{}@@2097152", disk.display()))
        .arg("::/loader/entries/kiln.conf"));
    entry
        .lines()
        .find_map(|l| l.strip_prefix("options "))
        .expect("an options line")
        .to_owned()
}

#[test]
fn cloud_example_disks_are_valid_and_boot() {
    if skip_end_to_end() {
        return;
    }
    for tool in [
        "qemu-img",
        "sgdisk",
        "sfdisk",
        "e2fsck",
        "fsck.vfat",
        "mtype",
    ] {
        if !have(tool) {
            return;
        }
    }
    let tree = crate::example_copy("cloud");
    let dir = tree.path();
    // The bookworm half of the matrix (trixie builds the same way, twice
    // the time).
    let m = build(
        dir,
        &shared_cache(),
        &["--only", "bookworm", "--parallel", "2"],
    );
    let scratch = tempfile::tempdir().expect("temp");
    for firmware in ["bios", "uefi"] {
        let variant = format!("vm-bookworm-{firmware}");
        let qcow2 = artifact(dir, &m, &variant, "qcow2");
        let vhd = artifact(dir, &m, &variant, "vhd");
        run(Command::new("qemu-img").arg("check").arg(&qcow2));
        let info: serde_json::Value = serde_json::from_str(&run(Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(&qcow2)))
        .expect("JSON");
        assert_eq!(info["format"], "qcow2");
        assert_eq!(info["virtual-size"], 2u64 << 30);
        let info: serde_json::Value = serde_json::from_str(&run(Command::new("qemu-img")
            .args(["info", "--output=json", "-f", "vpc"])
            .arg(&vhd)))
        .expect("JSON");
        assert_eq!(info["format"], "vpc");
        assert_eq!(
            fs::metadata(&vhd).expect("vhd").len(),
            (2u64 << 30) + 512,
            "a fixed VHD: the disk and its footer"
        );
        // The partition table and both filesystems, read from the disk
        // as raw bytes.
        let raw = scratch.path().join(format!("{firmware}.raw"));
        run(Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&qcow2)
            .arg(&raw));
        let verify = run(Command::new("sgdisk").arg("-v").arg(&raw));
        assert!(verify.contains("No problems found"), "{verify}");
        let dump = run(Command::new("sfdisk").arg("-d").arg(&raw));
        assert!(dump.contains("label: gpt"), "{dump}");
        for (part, kind) in [
            ("1", "21686148-6449-6E6F-744E-656564454649"),
            ("2", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
            ("3", "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"),
        ] {
            assert!(
                dump.lines().any(
                    |l| l.starts_with(&format!("{}{part} ", raw.display())) && l.contains(kind)
                ),
                "partition {part} of type {kind}:\n{dump}"
            );
        }
        let table: serde_json::Value =
            serde_json::from_str(&run(Command::new("sfdisk").arg("-J").arg(&raw))).expect("JSON");
        let parts = table["partitiontable"]["partitions"]
            .as_array()
            .expect("partitions");
        assert_eq!(parts.len(), 3, "{table:#}");
        let part = |i: usize, file: &str| -> PathBuf {
            let start = parts[i]["start"].as_u64().expect("start");
            let size = parts[i]["size"].as_u64().expect("size");
            let out = scratch.path().join(file);
            run(Command::new("dd")
                .arg(format!("if={}", raw.display()))
                .arg(format!("of={}", out.display()))
                .args(["bs=512", "status=none", "conv=sparse"])
                .arg(format!("skip={start}"))
                .arg(format!("count={size}")));
            out
        };
        let esp = part(1, "esp.img");
        run(Command::new("fsck.vfat").arg("-n").arg(&esp));
        let root = part(2, "root.img");
        run(Command::new("e2fsck").arg("-fn").arg(&root));
        let motd = run(Command::new("debugfs")
            .args(["-R", "cat /etc/systemd/system/kiln-booted.service"])
            .arg(&root));
        assert!(motd.contains("kiln-booted"), "{motd}");
        fs::remove_file(&esp).ok();
        fs::remove_file(&root).ok();
        fs::remove_file(&raw).ok();
    }
    if !have("qemu-system-x86_64") {
        return;
    }
    let limit = Duration::from_secs(120);
    // 1. The kernel and initrd passed to QEMU directly, the qcow2 as the
    //    disk: the image's own systemd reaches the marker unit.
    let variant = "vm-bookworm-uefi";
    let qcow2 = artifact(dir, &m, variant, "qcow2");
    let vhd = artifact(dir, &m, variant, "vhd");
    let options = loader_options(&vhd);
    let mut guest = Guest::start(
        &[
            "-kernel",
            artifact(dir, &m, variant, "vmlinuz")
                .to_str()
                .expect("utf-8"),
            "-initrd",
            artifact(dir, &m, variant, "initrd.img")
                .to_str()
                .expect("utf-8"),
            "-append",
            &format!("{options} panic=-1"),
            "-drive",
            &format!(
                "file={},if=virtio,format=qcow2,snapshot=on",
                qcow2.display()
            ),
        ],
        &scratch.path().join("direct.log"),
    );
    let took = guest
        .wait_for(MARKER, limit)
        .unwrap_or_else(|e| panic!("{e}"));
    note_boot("direct kernel boot", took);
    drop(guest);
    // 2. and 3. `kiln test`: the BIOS disk through SeaBIOS and its GRUB,
    //    the UEFI disk through OVMF and its systemd-boot, as their `[test]`
    //    tables say, each until the image's unit prints its line.
    let started = std::time::Instant::now();
    let tested = kiln(
        dir,
        &[
            "test",
            ".",
            "--only",
            "bookworm",
            "--cache-dir",
            shared_cache().to_str().expect("utf-8"),
            "--json",
        ],
    );
    assert_eq!(
        tested.code, 0,
        "kiln test:\n{}\n{}",
        tested.stdout, tested.stderr
    );
    assert_eq!(
        test_verdicts(&tested.stdout),
        [
            (
                "vm-bookworm-bios".to_owned(),
                "bios".to_owned(),
                "passed".to_owned()
            ),
            (
                "vm-bookworm-uefi".to_owned(),
                "uefi".to_owned(),
                "passed".to_owned()
            ),
        ]
    );
    note_boot("BIOS and UEFI boots (kiln test)", started.elapsed());
}

/// `kiln test --json`'s tests as (variant, boot, verdict).
pub fn test_verdicts(json: &str) -> Vec<(String, String, String)> {
    let report: serde_json::Value = serde_json::from_str(json).expect("JSON");
    let field = |t: &serde_json::Value, k: &str| t[k].as_str().unwrap_or_default().to_owned();
    report["tests"]
        .as_array()
        .unwrap_or_else(|| panic!("no tests in {report:#}"))
        .iter()
        .map(|t| (field(t, "variant"), field(t, "boot"), field(t, "verdict")))
        .collect()
}

/// Says how long a boot took (visible with `--nocapture`).
pub fn note_boot(what: &str, took: Duration) {
    #[allow(clippy::print_stderr)]
    {
        eprintln!("{what}: marker after {:.0} s", took.as_secs_f64());
    }
}

#[test]
fn two_clean_builds_give_identical_disks_oci_layouts_and_flists() {
    if skip_end_to_end() {
        return;
    }
    let image = "from = \"debian:bookworm\"\nvariant = \"essential\"\nkernel = true\n\
                 outputs = [\"raw\", { format = \"qcow2\", firmware = \"uefi\" }, \"oci\", \"flist\"]\n";
    let mut sums: Vec<Vec<(String, String)>> = Vec::new();
    let mut lock: Option<String> = None;
    for _ in 0..2 {
        let tree = crate::TestTree::new(&[
            ("kiln.toml", "[output]\ndir = \"out\"\n"),
            ("vm/image.toml", image),
        ]);
        if let Some(text) = &lock {
            fs::write(tree.path().join("kiln.lock"), text).expect("kiln.lock");
        }
        // A cache of its own each time: nothing is shared but the archive
        // and the lock.
        let cache = tree.path().join("cache");
        let m = build(tree.path(), &cache, &[]);
        let mut found: Vec<(String, String)> = m["variants"][0]["artifacts"]
            .as_array()
            .expect("artifacts")
            .iter()
            .map(|a| {
                (
                    a["format"].as_str().expect("format").to_owned(),
                    a["sha256"].as_str().expect("sha256").to_owned(),
                )
            })
            .collect();
        found.sort();
        let formats: Vec<&str> = found.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            formats,
            ["flist", "initrd.img", "oci", "qcow2", "raw", "vmlinuz"]
        );
        // The manifest's SHA-256 is the file's (for the OCI layout, its
        // listing's, checked by the store).
        let raw = artifact(tree.path(), &m, "vm", "raw");
        let sum = run(Command::new("sha256sum").arg(&raw));
        assert!(sum.starts_with(&found[4].1), "{sum}");
        // The default route names the store by its path in the tree, not
        // where this tree happens to be: the two trees are in different
        // folders and still give the same flist.
        let route = run(Command::new("sqlite3")
            .arg(artifact(tree.path(), &m, "vm", "flist"))
            .arg("select url from route"));
        assert_eq!(route.trim(), "dir://out/flist-store");
        sums.push(found);
        lock = Some(fs::read_to_string(tree.path().join("kiln.lock")).expect("kiln.lock"));
    }
    assert_eq!(sums[0], sums[1]);
}
