//! Provisioning a real Debian root (bookworm minbase, cached) through an
//! overlay, so the cached root stays untouched and the upper directory is
//! the new layer. Skipped with `KILN_SKIP_NETWORK_TESTS=1` or when not run
//! as root.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kiln_config::settings::{
    Base, Cleanup, ConfigPath, FileContent, FileSpec, RunBody, RunStep, Services, UserSpec,
};
use kiln_config::{FileId, ImageSettings, Origin};
use kiln_layers::{
    Error, LayerStack, ProvisionContext, STEP_FINISHED, STEP_STARTED, private_mount_namespace,
    provision, whiteouts,
};

use crate::support::{Mounted, Node, debian_root, make_layer, skip_network, snapshot_fs, tempdir};

/// A hash in crypt(3) syntax; it must never be logged.
const HASH: &str = "$6$kilnsalt$Zm9vYmFyYmF6cXV4cXV1eHh5enp5Zm9vYmFyYmF6cXV4cXV1eHh5enp5Zm9vYmFyYmF6cXV4cXV1eHh5enp5";

fn image_origin() -> Origin {
    Origin {
        file: FileId::from_index(1),
        span: 0..0,
    }
}

fn image_path(path: &str) -> ConfigPath {
    ConfigPath {
        path: path.to_owned(),
        origin: image_origin(),
    }
}

pub(crate) fn settings() -> ImageSettings {
    ImageSettings {
        base: Base::Image("base".to_owned()),
        from_origin: image_origin(),
        description: None,
        arch: "amd64".to_owned(),
        packages: Vec::new(),
        remove: Vec::new(),
        rootfs: None,
        files: Vec::new(),
        hostname: None,
        users: Vec::new(),
        services: Services::default(),
        run: Vec::new(),
        env: BTreeMap::new(),
        cleanup: Cleanup {
            apt: false,
            docs: false,
            man: false,
            locales: false,
            keep_locales: Vec::new(),
            tmp: false,
            logs: false,
            machine_id: false,
            ssh_host_keys: false,
        },
        outputs: Vec::new(),
        kernel: false,
        netboot: false,
        test: None,
        container: kiln_config::settings::Container::default(),
        labels: BTreeMap::new(),
        timeout: None,
        publish: kiln_config::settings::Publish::default(),
    }
}

fn context() -> ProvisionContext {
    ProvisionContext {
        image: "web".to_owned(),
        variant: "web-bookworm-uefi".to_owned(),
        keys: vec![
            ("suite".to_owned(), "bookworm".to_owned()),
            ("boot-firmware".to_owned(), "uefi".to_owned()),
        ],
        packages: vec!["curl".to_owned(), "nginx-light".to_owned()],
        source_date_epoch: Some(1_700_000_000),
        cancel: kiln_dpkg::sandbox::CancelFlag::none(),
    }
}

/// A layer over the cached root with what a parent image would leave
/// behind for cleanup, and an account only the image knows.
fn parent_layer(root: &Path, dir: &Path) {
    let file = |content: &str, mode| Node::File(content.as_bytes().to_vec(), mode);
    let mut passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
    passwd.push_str("kilnuser:x:4242:4343::/nonexistent:/usr/sbin/nologin\n");
    let mut group = fs::read_to_string(root.join("etc/group")).unwrap();
    group.push_str("kilngroup:x:4343:\n");
    let entries = [
        ("etc/passwd", file(&passwd, 0o644)),
        ("etc/group", file(&group, 0o644)),
        (
            "var/lib/apt/lists/deb.example_dists_bookworm_InRelease",
            file("lists", 0o644),
        ),
        ("var/cache/apt/pkgcache.bin", file("cache", 0o644)),
        (
            "var/cache/apt/archives/hello_1_amd64.deb",
            file("deb", 0o644),
        ),
        (
            "etc/machine-id",
            file("0123456789abcdef0123456789abcdef\n", 0o444),
        ),
        ("var/lib/dbus/machine-id", file("0123456789abcdef\n", 0o644)),
        ("var/log/dpkg.log", file("installed things\n", 0o644)),
        ("var/log/apt/history.log", file("history\n", 0o644)),
        ("var/log/messages", file("boot noise\n", 0o640)),
        ("tmp/junk", file("junk", 0o644)),
        ("var/tmp/junk", file("junk", 0o644)),
        ("usr/sbin/policy-rc.d", file("#!/bin/sh\nexit 101\n", 0o755)),
    ];
    let entries: Vec<(String, Node)> = entries
        .into_iter()
        .map(|(p, n)| (p.to_owned(), n))
        .collect();
    make_layer(dir, &entries);
    // make_layer creates parents 0755; the real ones keep theirs.
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::set_permissions(dir.join("var/tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
}

/// The log of a provisioning run.
#[derive(Default)]
struct Log(Mutex<Vec<(String, String)>>);

impl Log {
    fn push(&self, step: &str, line: &str) {
        self.0
            .lock()
            .unwrap()
            .push((step.to_owned(), line.to_owned()));
    }

    fn lines(&self) -> Vec<(String, String)> {
        self.0.lock().unwrap().clone()
    }

    fn of(&self, step: &str) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|(s, _)| s == step)
            .map(|(_, l)| l)
            .collect()
    }
}

struct Fixture {
    /// Before `dir`, which holds one of its layers.
    mounted: Mounted,
    _dir: tempfile::TempDir,
    image_dir: PathBuf,
    tree_root: PathBuf,
}

impl Fixture {
    /// The tree's files as they are now, as a loaded tree records them.
    fn inputs(&self) -> kiln_config::TreeInputs {
        kiln_config::TreeInputs::scan(&self.tree_root, Path::new("images/web")).unwrap()
    }
}

fn fixture(flavour: &str) -> Fixture {
    private_mount_namespace().unwrap();
    let root = debian_root(flavour);
    let dir = tempdir();
    let parent = dir.path().join("parent-layer");
    parent_layer(&root, &parent);
    let mounted = Mounted::new(&LayerStack::new(vec![root, parent]));
    let tree_root = dir.path().join("tree");
    let image_dir = tree_root.join("images/web");
    fs::create_dir_all(&image_dir).unwrap();
    Fixture {
        mounted,
        _dir: dir,
        image_dir,
        tree_root,
    }
}

fn write(path: &Path, content: &str, mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn provisions_a_debian_root_into_a_layer() {
    if skip_network() {
        return;
    }
    let mut fx = fixture("minbase");
    let image = fx.image_dir.clone();
    write(&image.join("rootfs/etc/motd"), "Welcome to kiln\n", 0o644);
    write(
        &image.join("rootfs/usr/local/bin/hello"),
        "#!/bin/sh\necho hi\n",
        0o755,
    );
    write(&image.join("rootfs/opt/app/data/state"), "s", 0o600);
    fs::set_permissions(
        image.join("rootfs/opt/app"),
        fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    std::os::unix::fs::symlink("motd", image.join("rootfs/etc/motd.link")).unwrap();
    write(&image.join("files/app.conf"), "listen = 80\n", 0o600);
    write(
        &fx.tree_root.join("shared/banner"),
        "shared banner\n",
        0o644,
    );
    write(
        &image.join("setup.sh"),
        "echo \"from file: $GREETING\"\necho marker > /etc/kiln-marker\n",
        0o644,
    );

    let mut s = settings();
    s.rootfs = Some(image_path("rootfs"));
    s.files = vec![
        FileSpec {
            path: "/srv/www/index.html".to_owned(),
            content: FileContent::Inline("<h1>kiln</h1>\n".to_owned()),
            mode: 0o640,
            owner: "kilnuser".to_owned(),
            group: "kilngroup".to_owned(),
        },
        FileSpec {
            path: "/etc/app/app.conf".to_owned(),
            content: FileContent::Source(image_path("files/app.conf")),
            mode: 0o600,
            owner: "root".to_owned(),
            group: "root".to_owned(),
        },
        FileSpec {
            path: "/etc/banner".to_owned(),
            content: FileContent::Source(ConfigPath {
                path: "shared/banner".to_owned(),
                origin: Origin {
                    file: FileId::from_index(0),
                    span: 0..0,
                },
            }),
            mode: 0o644,
            owner: "root".to_owned(),
            group: "root".to_owned(),
        },
    ];
    s.hostname = Some("kiln-test".to_owned());
    s.users = vec![
        UserSpec {
            name: "alice".to_owned(),
            uid: Some(2000),
            group: None,
            groups: vec!["sudo".to_owned(), "kilngroup".to_owned(), "devs".to_owned()],
            shell: Some("/bin/bash".to_owned()),
            home: None,
            password: Some(HASH.to_owned()),
            ssh_authorized_keys: vec![
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKiln alice@laptop".to_owned(),
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKiln alice@desk".to_owned(),
            ],
            system: false,
        },
        UserSpec {
            name: "svc".to_owned(),
            uid: None,
            group: Some("svcgroup".to_owned()),
            groups: Vec::new(),
            shell: None,
            home: Some("/var/lib/svc".to_owned()),
            password: None,
            ssh_authorized_keys: Vec::new(),
            system: true,
        },
    ];
    s.env = BTreeMap::from([("GREETING".to_owned(), "hello there".to_owned())]);
    s.run = vec![
        RunStep {
            name: "inspect".to_owned(),
            body: RunBody::Inline(
                "set -e\nenv | sort\necho to-stderr >&2\n/usr/sbin/policy-rc.d || echo \"policy=$?\"\nls /tmp/kiln-run-* >/dev/null && echo script-in-tmp\ntest -d /proc/self && echo proc-mounted\n".to_owned(),
            ),
            network: false,
        },
        RunStep {
            name: "setup.sh".to_owned(),
            body: RunBody::Script(image_path("setup.sh")),
            network: false,
        },
    ];
    s.cleanup = Cleanup {
        apt: true,
        docs: true,
        man: true,
        locales: true,
        keep_locales: vec!["C.UTF-8".to_owned(), "de_DE.UTF-8".to_owned()],
        tmp: true,
        logs: true,
        machine_id: true,
        ssh_host_keys: true,
    };

    let log = Log::default();
    let merged = fx.mounted.merged();
    let report = provision(&merged, &fx.inputs(), &s, &context(), &|step, line| {
        log.push(step, line);
    })
    .unwrap_or_else(|e| panic!("provision failed: {e}\n{:#?}", log.lines()));

    // Steps in order, each started and finished.
    let steps = [
        "rootfs",
        "files",
        "hostname",
        "users",
        "run:inspect",
        "run:setup.sh",
        "cleanup",
    ];
    let timed: Vec<&str> = report.timings.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(timed, steps);
    let mut seen: Vec<&str> = Vec::new();
    let lines = log.lines();
    for (step, line) in &lines {
        if seen.last() != Some(&step.as_str()) {
            seen.push(step);
            assert_eq!(line, STEP_STARTED, "{step} starts");
        }
    }
    assert_eq!(seen, steps);
    for step in steps {
        assert_eq!(log.of(step).last().unwrap(), STEP_FINISHED);
    }
    for (step, line) in &lines {
        assert!(!line.contains(HASH), "hash logged by {step}: {line}");
        assert!(!line.contains("Zm9vYmFy"), "hash logged by {step}: {line}");
    }

    // run: the exact environment, output streamed with the step name.
    let inspect = log.of("run:inspect");
    let env: Vec<&str> = inspect
        .iter()
        .map(String::as_str)
        .skip(1)
        .take_while(|l| *l != "to-stderr")
        .collect();
    assert_eq!(
        env,
        [
            "DEBIAN_FRONTEND=noninteractive",
            "GREETING=hello there",
            "HOME=/root",
            "KILN_BOOT_FIRMWARE=uefi",
            "KILN_IMAGE=web",
            "KILN_PACKAGES=curl nginx-light",
            "KILN_SUITE=bookworm",
            "KILN_VARIANT=web-bookworm-uefi",
            "LC_ALL=C.UTF-8",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "PWD=/",
            "SOURCE_DATE_EPOCH=1700000000",
        ]
    );
    for expected in ["to-stderr", "policy=101", "script-in-tmp", "proc-mounted"] {
        assert!(
            inspect.iter().any(|l| l == expected),
            "{expected}: {inspect:#?}"
        );
    }
    assert!(
        log.of("run:setup.sh")
            .iter()
            .any(|l| l == "from file: hello there")
    );

    // The merged result.
    let m = |p: &str| merged.join(p);
    let read = |p: &str| fs::read_to_string(m(p)).unwrap();
    assert_eq!(read("etc/motd"), "Welcome to kiln\n");
    assert_eq!(
        fs::read_link(m("etc/motd.link")).unwrap(),
        Path::new("motd")
    );
    let hello = fs::metadata(m("usr/local/bin/hello")).unwrap();
    assert_eq!(
        (hello.mode() & 0o7777, hello.uid(), hello.gid()),
        (0o755, 0, 0)
    );
    assert_eq!(fs::metadata(m("opt/app")).unwrap().mode() & 0o7777, 0o750);
    assert_eq!(
        fs::metadata(m("opt/app/data/state")).unwrap().mode() & 0o7777,
        0o600
    );
    let index = fs::metadata(m("srv/www/index.html")).unwrap();
    assert_eq!(
        (index.mode() & 0o7777, index.uid(), index.gid()),
        (0o640, 4242, 4343)
    );
    assert_eq!(read("etc/app/app.conf"), "listen = 80\n");
    assert_eq!(read("etc/banner"), "shared banner\n");
    assert_eq!(read("etc/hostname"), "kiln-test\n");
    assert!(
        read("etc/hosts")
            .lines()
            .any(|l| l == "127.0.1.1\tkiln-test")
    );
    assert_eq!(read("etc/kiln-marker"), "marker\n");

    let passwd = read("etc/passwd");
    let alice = passwd.lines().find(|l| l.starts_with("alice:")).unwrap();
    assert_eq!(alice, "alice:x:2000:2000::/home/alice:/bin/bash");
    let svc = passwd.lines().find(|l| l.starts_with("svc:")).unwrap();
    assert!(
        svc.ends_with(":/var/lib/svc:/usr/sbin/nologin") || svc.contains(":/var/lib/svc:"),
        "{svc}"
    );
    let svc_uid: u32 = svc.split(':').nth(2).unwrap().parse().unwrap();
    assert!(svc_uid < 1000, "a system account: {svc}");
    let group = read("etc/group");
    for (name, member) in [
        ("sudo", true),
        ("kilngroup", true),
        ("devs", true),
        ("svcgroup", false),
    ] {
        let line = group
            .lines()
            .find(|l| l.starts_with(&format!("{name}:")))
            .unwrap();
        assert_eq!(line.ends_with("alice"), member, "{line}");
    }
    let shadow = read("etc/shadow");
    // Written by kiln, not usermod: the file keeps Debian's mode and group.
    let meta = fs::metadata(m("etc/shadow")).unwrap();
    let shadow_gid = read("etc/group")
        .lines()
        .find_map(|l| {
            l.strip_prefix("shadow:x:")?
                .split(':')
                .next()?
                .parse::<u32>()
                .ok()
        })
        .unwrap();
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        (0o640, 0, shadow_gid)
    );
    assert!(
        shadow
            .lines()
            .any(|l| l.starts_with(&format!("alice:{HASH}:")))
    );
    // Dated with SOURCE_DATE_EPOCH (1_700_000_000 s is day 19675), not
    // the day of the build: the same tree gives the same /etc/shadow.
    for user in ["alice", "svc"] {
        let line = shadow
            .lines()
            .find(|l| l.starts_with(&format!("{user}:")))
            .unwrap_or_else(|| panic!("{user} in /etc/shadow:\n{shadow}"));
        assert_eq!(line.split(':').nth(2), Some("19675"), "{line}");
    }
    assert!(fs::metadata(m("var/lib/svc")).unwrap().is_dir());
    let ssh = fs::metadata(m("home/alice/.ssh")).unwrap();
    assert_eq!(
        (ssh.mode() & 0o7777, ssh.uid(), ssh.gid()),
        (0o700, 2000, 2000)
    );
    let keys = fs::metadata(m("home/alice/.ssh/authorized_keys")).unwrap();
    assert_eq!(
        (keys.mode() & 0o7777, keys.uid(), keys.gid()),
        (0o600, 2000, 2000)
    );
    assert_eq!(
        read("home/alice/.ssh/authorized_keys"),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKiln alice@laptop\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKiln alice@desk\n"
    );

    // Cleanup.
    let machine_id = fs::metadata(m("etc/machine-id")).unwrap();
    assert!(machine_id.is_file() && machine_id.len() == 0);
    assert!(!m("var/lib/dbus/machine-id").exists());
    assert!(!m("usr/sbin/policy-rc.d").exists());
    let lists: Vec<String> = fs::read_dir(m("var/lib/apt/lists"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut lists = lists;
    lists.sort();
    assert_eq!(lists, ["lock", "partial"]);
    assert!(!m("var/cache/apt/pkgcache.bin").exists());
    assert!(!m("var/cache/apt/archives/hello_1_amd64.deb").exists());
    assert!(m("var/cache/apt/archives/partial").is_dir());
    assert!(!m("var/log/dpkg.log").exists());
    assert!(!m("var/log/apt/history.log").exists());
    assert_eq!(fs::metadata(m("var/log/messages")).unwrap().len(), 0);
    assert_eq!(
        fs::metadata(m("var/log/messages")).unwrap().mode() & 0o7777,
        0o640
    );
    assert_eq!(fs::read_dir(m("tmp")).unwrap().count(), 0);
    assert_eq!(fs::read_dir(m("var/tmp")).unwrap().count(), 0);
    assert_eq!(fs::metadata(m("tmp")).unwrap().mode() & 0o7777, 0o1777);
    let docs: Vec<String> = walk_names(&m("usr/share/doc"));
    assert!(!docs.is_empty());
    assert!(
        docs.iter().all(|d| d.ends_with("/copyright")
            || fs::symlink_metadata(m("usr/share/doc").join(d))
                .unwrap()
                .is_dir()
            || fs::symlink_metadata(m("usr/share/doc").join(d))
                .unwrap()
                .file_type()
                .is_symlink()),
        "{docs:#?}"
    );
    assert!(docs.iter().any(|d| d == "dpkg/copyright"));
    assert_eq!(
        fs::read_dir(m("usr/share/man")).map_or(0, Iterator::count),
        0
    );
    let mut locales: Vec<String> = fs::read_dir(m("usr/share/locale"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    locales.sort();
    assert!(
        locales
            .iter()
            .all(|l| ["de", "locale.alias"].contains(&l.as_str())),
        "{locales:?}"
    );
    assert!(locales.iter().any(|l| l == "de"));

    // The cached root is untouched, the upper directory holds the delta.
    fx.mounted.overlay.try_unmount().unwrap();
    let upper = fx.mounted.upper();
    let outs = whiteouts(&upper).unwrap();
    for expected in [
        "etc/machine-id",
        "var/lib/dbus/machine-id",
        "usr/sbin/policy-rc.d",
        "var/lib/apt/lists/deb.example_dists_bookworm_InRelease",
        "var/cache/apt/pkgcache.bin",
        "var/cache/apt/archives/hello_1_amd64.deb",
        "var/log/dpkg.log",
        "var/log/apt/history.log",
        "tmp/junk",
        "var/tmp/junk",
        "usr/share/doc/dpkg/changelog.gz",
    ] {
        if expected == "etc/machine-id" {
            continue; // replaced by an empty file, not deleted
        }
        assert!(
            outs.iter().any(|o| o == expected),
            "{expected} not in {outs:#?}"
        );
    }
    let allowed = [
        "etc/",
        "home/alice/",
        "var/lib/svc/",
        "usr/local/bin/hello",
        "opt/",
        "srv/",
        "var/lib/apt/lists/",
        "var/cache/apt/",
        "var/log/",
        "var/lib/dbus/",
        "tmp/",
        "var/tmp/",
        "usr/share/doc/",
        "usr/share/man/",
        "usr/share/locale/",
        "usr/sbin/policy-rc.d",
    ];
    for item in snapshot_fs(&upper) {
        if item.kind == 'd' {
            continue;
        }
        assert!(
            allowed.iter().any(|a| item.path.starts_with(a)),
            "unexpected in the layer: {item:?}"
        );
    }
    let root = debian_root("minbase");
    assert!(!root.join("etc/kiln-marker").exists());
    assert!(
        !fs::read_to_string(root.join("etc/passwd"))
            .unwrap()
            .contains("alice")
    );
}

fn walk_names(dir: &Path) -> Vec<String> {
    crate::support::snapshot_fs(dir)
        .into_iter()
        .map(|i| i.path)
        .collect()
}

#[test]
fn a_failing_script_reports_its_code_and_last_lines() {
    if skip_network() {
        return;
    }
    let fx = fixture("minbase");
    let mut s = settings();
    s.run = vec![
        RunStep {
            name: "ok".to_owned(),
            body: RunBody::Inline("echo fine".to_owned()),
            network: false,
        },
        RunStep {
            name: "fail".to_owned(),
            body: RunBody::Inline(
                "for i in $(seq 1 30); do echo line$i; done\necho oops >&2\nexit 3\n".to_owned(),
            ),
            network: false,
        },
        RunStep {
            name: "never".to_owned(),
            body: RunBody::Inline("echo never".to_owned()),
            network: false,
        },
    ];
    let log = Log::default();
    let merged = fx.mounted.merged();
    let error = provision(&merged, &fx.inputs(), &s, &context(), &|step, line| {
        log.push(step, line);
    })
    .unwrap_err();
    let Error::Script {
        step,
        code,
        last_lines,
    } = &error
    else {
        panic!("not a script error: {error}");
    };
    assert_eq!((step.as_str(), *code), ("run:fail", 3));
    let mut expected: Vec<String> = (12..=30).map(|i| format!("line{i}")).collect();
    expected.push("oops".to_owned());
    assert_eq!(last_lines, &expected);
    let text = error.to_string();
    assert!(
        text.starts_with("Failed to run `run:fail`: exit code 3\nline12\n"),
        "{text}"
    );
    assert!(text.ends_with("line30\noops"), "{text}");
    assert_eq!(log.of("run:fail").last().unwrap(), kiln_layers::STEP_FAILED);
    assert!(log.of("run:never").is_empty());
    // The script is gone; the parent's policy-rc.d is back.
    let leftovers: Vec<_> = fs::read_dir(merged.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with("kiln-run-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(
        fs::read_to_string(merged.join("usr/sbin/policy-rc.d")).unwrap(),
        "#!/bin/sh\nexit 101\n"
    );
}

#[test]
fn services_need_systemd() {
    if skip_network() {
        return;
    }
    let fx = fixture("minbase");
    let mut s = settings();
    s.services.enable = vec!["ssh.service".to_owned()];
    let error = provision(
        &fx.mounted.merged(),
        &fx.inputs(),
        &s,
        &context(),
        &|_, _| {},
    )
    .unwrap_err();
    assert!(matches!(error, Error::NoSystemd { .. }), "{error}");
    assert_eq!(
        error.to_string(),
        "Failed to enable unit `ssh.service`: the image has no `systemctl`; `services` needs systemd in the image (add `systemd` to `packages`)"
    );
}

#[test]
fn services_are_enabled_and_disabled_offline() {
    if skip_network() {
        return;
    }
    let fx = fixture("systemd");
    let merged = fx.mounted.merged();
    let getty = merged.join("etc/systemd/system/getty.target.wants/getty@tty1.service");
    assert!(fs::symlink_metadata(&getty).is_ok(), "enabled in the base");
    let mut s = settings();
    s.services.enable = vec!["systemd-networkd.service".to_owned()];
    s.services.disable = vec!["getty@.service".to_owned()];
    let log = Log::default();
    provision(&merged, &fx.inputs(), &s, &context(), &|step, line| {
        log.push(step, line);
    })
    .unwrap_or_else(|e| panic!("{e}\n{:#?}", log.lines()));
    let wants = merged.join("etc/systemd/system/multi-user.target.wants/systemd-networkd.service");
    assert_eq!(
        fs::read_link(&wants).unwrap(),
        Path::new("/lib/systemd/system/systemd-networkd.service")
    );
    assert!(fs::symlink_metadata(&getty).is_err(), "disabled");
    assert!(
        log.of("services")
            .iter()
            .any(|l| l.contains("Created symlink")),
        "{:#?}",
        log.lines()
    );
}

#[test]
fn existing_accounts_are_updated_and_unknown_owners_refused() {
    if skip_network() {
        return;
    }
    let fx = fixture("minbase");
    let merged = fx.mounted.merged();
    let user = |groups: Vec<String>, shell: &str, password: Option<String>| UserSpec {
        name: "bob".to_owned(),
        uid: Some(3000),
        group: None,
        groups,
        shell: Some(shell.to_owned()),
        home: None,
        password,
        ssh_authorized_keys: Vec::new(),
        system: false,
    };
    let run = |s: &ImageSettings| {
        let log = Log::default();
        let result = provision(&merged, &fx.inputs(), s, &context(), &|step, line| {
            log.push(step, line);
        });
        for (step, line) in log.lines() {
            assert!(!line.contains(HASH), "hash logged by {step}: {line}");
        }
        result
    };
    let mut s = settings();
    s.users = vec![user(Vec::new(), "/bin/bash", None)];
    run(&s).unwrap();
    s.users = vec![user(
        vec!["audio".to_owned()],
        "/bin/sh",
        Some(HASH.to_owned()),
    )];
    run(&s).unwrap();
    let read = |p: &str| fs::read_to_string(merged.join(p)).unwrap();
    assert!(read("etc/passwd").contains("bob:x:3000:3000::/home/bob:/bin/sh\n"));
    assert!(
        read("etc/group")
            .lines()
            .any(|l| l.starts_with("audio:") && l.ends_with(":bob"))
    );
    assert!(read("etc/shadow").contains(&format!("bob:{HASH}:")));

    let mut s = settings();
    s.files = vec![FileSpec {
        path: "/etc/x".to_owned(),
        content: FileContent::Inline(String::new()),
        mode: 0o644,
        owner: "nobody-here".to_owned(),
        group: "root".to_owned(),
    }];
    let error = run(&s).unwrap_err();
    assert_eq!(
        error.to_string(),
        "Failed to set the owner of `/etc/x`: the root's `/etc/passwd` has no user `nobody-here`"
    );
}
