//! End-to-end tests against Debian's archive, through the host's apt
//! configuration (no mirror is named here). Skipped with
//! `KILN_SKIP_NETWORK_TESTS=1` or when not run as root.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use kiln_dpkg::{AssembleOptions, DebFile, Event, Report};

/// Where downloaded `.deb`s are kept between runs.
const CACHE: &str = "/var/tmp/kiln-dpkg-test-debs";

/// apt runs one at a time: tests share the cache directory.
static APT: Mutex<()> = Mutex::new(());

fn skip() -> bool {
    kiln_testkit::require::network_tests_skipped()
        || kiln_testkit::require::lacks_root("installing into a root")
}

fn run(command: &mut Command) -> Output {
    let output = command.output().expect("command runs");
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `apt-get` against the host's sources, with `status` as the dpkg
/// status (what counts as installed) and [`CACHE`] as the archive.
fn apt_get(status: &Path, archives: &Path) -> Command {
    let mut command = Command::new("apt-get");
    command.args([
        "-qq",
        "-y",
        "-o",
        &format!("Dir::State::status={}", status.display()),
        "-o",
        &format!("Dir::Cache::archives={}", archives.display()),
        "-o",
        "Debug::NoLocking=1",
        "-o",
        "APT::Install-Recommends=false",
    ]);
    command
}

/// The candidate stanzas of every available package (`apt-cache
/// dumpavail`), updating the host's lists first if there are none.
fn available() -> String {
    let dump =
        || String::from_utf8(run(Command::new("apt-cache").arg("dumpavail")).stdout).unwrap();
    let mut text = dump();
    if !text.contains("Package: dpkg\n") {
        run(Command::new("apt-get").args(["-qq", "update"]));
        text = dump();
    }
    text
}

/// Downloads what installing `names` on top of `status` needs.
fn download(names: &[String], status: &Path) -> Vec<DebFile> {
    let _guard = APT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    fs::create_dir_all(Path::new(CACHE).join("partial")).unwrap();
    let avail = available();
    let essential: HashSet<&str> = avail
        .split("\n\n")
        .filter(|s| s.contains("\nEssential: yes"))
        .filter_map(|s| s.lines().next()?.strip_prefix("Package: "))
        .collect();
    // `--print-uris` leaves out what the archive directory has: ask with
    // an empty one for the whole list.
    let empty = tempfile::tempdir().unwrap();
    fs::create_dir(empty.path().join("partial")).unwrap();
    let uris = run(apt_get(status, empty.path())
        .args(["--print-uris", "install"])
        .args(names))
    .stdout;
    run(apt_get(status, Path::new(CACHE))
        .args(["--download-only", "install"])
        .args(names));
    String::from_utf8(uris)
        .unwrap()
        .lines()
        .map(|line| {
            let file = line
                .split_whitespace()
                .nth(1)
                .expect("apt-get --print-uris line");
            let name = file.split('_').next().unwrap().to_owned();
            DebFile {
                essential: essential.contains(name.as_str()),
                name,
                path: PathBuf::from(CACHE).join(file),
                // Kept decompressed: the second bootstrap of these
                // packages reads them from there.
                data_cache: Some(PathBuf::from(CACHE).join(format!("unpacked/{file}.tar.zst"))),
            }
        })
        .collect()
}

/// bookworm minbase as mmdebstrap defines it: `Essential: yes`,
/// `Priority: required` and `apt`, with their dependencies.
fn minbase() -> Vec<DebFile> {
    let avail = available();
    let mut names: Vec<String> = avail
        .split("\n\n")
        .filter(|s| s.contains("\nEssential: yes") || s.contains("\nPriority: required"))
        .filter_map(|s| s.lines().next()?.strip_prefix("Package: "))
        .map(str::to_owned)
        .collect();
    names.push("apt".to_owned());
    names.sort();
    names.dedup();
    let empty = tempfile::NamedTempFile::new().unwrap();
    download(&names, empty.path())
}

fn chroot(root: &Path, args: &[&str]) -> Output {
    Command::new("chroot")
        .arg(root)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .expect("chroot runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Bootstraps minbase into `root`, recording the events.
fn bootstrap(root: &Path, debs: &[DebFile]) -> (Report, Vec<Event>) {
    let events = Mutex::new(Vec::new());
    let report = kiln_dpkg::bootstrap(root, debs, &AssembleOptions::default(), &|event| {
        events.lock().unwrap().push(event.clone());
    });
    let report = match report {
        Ok(report) => report,
        Err(e) => panic!("bootstrap failed: {e}"),
    };
    (report, events.into_inner().unwrap())
}

/// The checks every configured root must pass.
fn assert_healthy(root: &Path, expected: &[DebFile]) {
    let query = chroot(
        root,
        &["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\\n"],
    );
    assert!(query.status.success(), "{query:?}");
    let listed = stdout(&query);
    for deb in expected {
        assert!(
            listed.contains(&format!("{} installed\n", deb.name)),
            "{} is not installed:\n{listed}",
            deb.name
        );
    }
    assert!(
        listed.lines().all(|l| l.ends_with(" installed")),
        "{listed}"
    );
    let audit = chroot(root, &["dpkg", "--audit"]);
    assert!(
        audit.status.success() && audit.stdout.is_empty(),
        "{audit:?}"
    );
    let check = chroot(root, &["apt-get", "check"]);
    assert!(check.status.success(), "{check:?}");
    let shell = chroot(root, &["/bin/sh", "-c", "echo hello from $0"]);
    assert_eq!(stdout(&shell), "hello from /bin/sh\n");
    assert!(!root.join("usr/sbin/policy-rc.d").exists());
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root_text = root.display().to_string();
    assert!(
        !mounts.lines().any(|l| l.contains(&root_text)),
        "mounts left under the root:\n{mounts}"
    );
    // Configured conffiles are in place with their hashes recorded.
    assert!(!root.join("etc/debian_version.dpkg-new").exists());
    let status = fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
    assert!(!status.contains("newconffile"));
}

#[test]
fn bootstrap_minbase() {
    if skip() {
        return;
    }
    let debs = minbase();
    assert!(debs.len() > 80, "{} packages", debs.len());
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let root = dir.path().join("root");
    let (report, events) = bootstrap(&root, &debs);
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "bootstrap of {} packages, {} files: {:?}",
            report.packages, report.files, report.timings
        );
    }
    assert_eq!(report.packages, debs.len());
    let unpacked = events
        .iter()
        .filter(|e| matches!(e, Event::Unpacked { .. }))
        .count();
    assert_eq!(unpacked, debs.len());
    assert!(events.contains(&Event::Step { name: "configure" }));
    assert!(events.iter().any(|e| matches!(
        e,
        Event::ScriptOutput { step, line }
            if step == "dpkg --configure -a" && line.starts_with("Setting up dpkg ")
    )));
    assert_healthy(&root, &debs);
    // Scripts run by kiln see a chroot, as under debootstrap (libc6's
    // postinst would otherwise restart init and sleep a second).
    let options = kiln_dpkg::sandbox::RunOptions::new("ischroot");
    kiln_dpkg::sandbox::run(&root, &["/usr/bin/ischroot"], &options, &mut |_| {})
        .expect("ischroot says this is a chroot");
    // Merged /usr as Debian 12 has it.
    assert_eq!(
        fs::read_link(root.join("bin")).unwrap(),
        Path::new("usr/bin")
    );
    assert!(root.join("usr/bin/bash").is_file());
    // Triggers dpkg registered for later runs.
    let file_triggers = fs::read_to_string(root.join("var/lib/dpkg/triggers/File"));
    let ldconfig = fs::read_to_string(root.join("var/lib/dpkg/triggers/ldconfig")).unwrap();
    // As dpkg writes it: libc-bin declares `interest-await ldconfig`.
    assert_eq!(ldconfig, "libc-bin\n", "{file_triggers:?}");
}

#[test]
fn install_openssh_server_on_minbase() {
    if skip() {
        return;
    }
    let debs = minbase();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let root = dir.path().join("root");
    bootstrap(&root, &debs);
    let status = root.join("var/lib/dpkg/status");
    let extra = download(&["openssh-server".to_owned()], &status);
    assert!(extra.iter().any(|d| d.name == "openssh-server"));
    assert!(extra.iter().all(|d| !debs.contains(d)));
    let events = Mutex::new(Vec::new());
    let report = kiln_dpkg::install(&root, &extra, &AssembleOptions::default(), &|event| {
        events.lock().unwrap().push(event.clone());
    });
    let report = report.unwrap_or_else(|e| panic!("install failed: {e}"));
    assert_eq!(report.packages, extra.len());
    let mut all = debs.clone();
    all.extend(extra.iter().cloned());
    assert_healthy(&root, &all);
    // The postinst generated host keys; sshd accepts its configuration.
    assert!(root.join("etc/ssh/ssh_host_ed25519_key").is_file());
    fs::create_dir_all(root.join("run/sshd")).unwrap();
    let sshd = chroot(&root, &["/usr/sbin/sshd", "-t"]);
    assert!(sshd.status.success(), "{sshd:?}");

    // Installing the same packages again does nothing.
    let again = kiln_dpkg::install(&root, &extra, &AssembleOptions::default(), &|_| {}).unwrap();
    assert_eq!(again.packages, 0);
    assert_healthy(&root, &all);

    // preinsts run in order with dpkg's variables and SOURCE_DATE_EPOCH;
    // output is reported per script and a failure names its package.
    let crafted = [
        (
            "kiln-test-good",
            "#!/bin/sh\necho \"good $DPKG_MAINTSCRIPT_PACKAGE $DPKG_MAINTSCRIPT_NAME $1 $SOURCE_DATE_EPOCH\"\n",
        ),
        ("kiln-test-bad", "#!/bin/sh\necho boom\nexit 3\n"),
        ("kiln-test-never", "#!/bin/sh\necho never\n"),
    ];
    let debs: Vec<DebFile> = crafted
        .iter()
        .map(|(name, preinst)| {
            crate::archive::write_deb(
                dir.path(),
                name,
                &crate::archive::deb(name, &[("preinst", preinst)], &[]),
            )
        })
        .collect();
    let events = Mutex::new(Vec::new());
    let opts = AssembleOptions {
        source_date_epoch: Some(1_700_000_000),
        ..AssembleOptions::default()
    };
    let result = kiln_dpkg::install(&root, &debs, &opts, &|event| {
        events.lock().unwrap().push(event.clone());
    });
    let events = events.into_inner().unwrap();
    assert!(
        events.contains(&Event::ScriptOutput {
            step: "preinst of kiln-test-good".to_owned(),
            line: "good kiln-test-good preinst install 1700000000".to_owned(),
        }),
        "{events:#?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::ScriptOutput { line, .. } if line == "never")),
        "nothing runs after a failing preinst: {events:#?}"
    );
    match result {
        Err(kiln_dpkg::Error::Script {
            step, code, output, ..
        }) => {
            assert_eq!(step, "preinst of kiln-test-bad");
            assert_eq!(code, 3);
            assert_eq!(output, ["boom"]);
        }
        other => panic!("expected the bad preinst to fail: {other:?}"),
    }
}
