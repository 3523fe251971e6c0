//! Layered, incremental builds (root and network needed; skipped with
//! `KILN_SKIP_NETWORK_TESTS=1`).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::{TestTree, assert_no_mount_under, assert_store_verifies, kiln, skip_end_to_end};

/// A base and three children, each adding a package, a file and a script.
fn family() -> TestTree {
    let mut files: Vec<(String, String)> = vec![
        ("kiln.toml".into(), "[output]\ndir = \"out\"\n".into()),
        (
            "base/image.toml".into(),
            "from = \"debian:bookworm\"\npackages = [\"openssh-server\", \"busybox\"]\nrun = [\"setup.sh\"]\n".into(),
        ),
        ("base/setup.sh".into(), "#!/bin/sh\nset -e\necho \"base for $KILN_VARIANT\" > /etc/base-marker\n".into()),
        ("base/rootfs/etc/motd".into(), "hello from base\n".into()),
    ];
    for (child, package) in [("one", "less"), ("two", "tree"), ("three", "bc")] {
        // `three` also purges a package of the base and exports its root.
        let extra = if child == "three" {
            "remove = [\"busybox\"]\noutputs = [\"dir\"]\n"
        } else {
            ""
        };
        files.push((
            format!("{child}/image.toml"),
            format!(
                "from = \"base\"\npackages = [\"{package}\"]\nrun = [\"setup.sh\"]\nfiles = [{{ path = \"/etc/{child}.conf\", content = \"{child}\\n\" }}]\n{extra}"
            ),
        ));
        files.push((
            format!("{child}/setup.sh"),
            format!("#!/bin/sh\necho {child} > /etc/{child}-marker\nrm -f /etc/motd\n"),
        ));
    }
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    TestTree::new(&refs)
}

fn build(t: &TestTree, extra: &[&str]) -> crate::Run {
    let cache = t.path().join("cache");
    let mut args = vec!["build", ".", "--cache-dir", cache.to_str().expect("utf-8")];
    args.extend(extra);
    // Packages come from the shared test cache of .debs when it exists.
    kiln(t.path(), &args)
}

fn actions(t: &TestTree) -> Vec<(String, String)> {
    let cache = t.path().join("cache");
    let run = kiln(
        t.path(),
        &[
            "plan",
            ".",
            "--json",
            "--cache-dir",
            cache.to_str().expect("utf-8"),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    v["variants"]
        .as_array()
        .expect("array")
        .iter()
        .map(|x| {
            (
                x["name"].as_str().expect("name").to_string(),
                x["action"].as_str().expect("action").to_string(),
            )
        })
        .collect()
}

fn built(run: &crate::Run) -> Vec<String> {
    run.stdout
        .lines()
        .filter_map(|l| l.strip_prefix("built "))
        .map(|l| l.split_whitespace().next().expect("name").to_string())
        .collect()
}

#[test]
fn children_store_deltas_and_rebuild_exactly_what_changed() {
    if skip_end_to_end() {
        return;
    }
    let t = family();
    let run = build(&t, &["--parallel", "2"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(built(&run).len(), 4, "{}", run.stdout);

    // Each child's layer holds its delta only: a few MB, not a root.
    let cache = t.path().join("cache");
    let du = kiln(
        t.path(),
        &[
            "store",
            "du",
            ".",
            "--json",
            "--cache-dir",
            cache.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(du.code, 0, "{}", du.stderr);
    let usage: serde_json::Value = serde_json::from_str(&du.stdout).expect("json");
    let layers = usage["layers"].as_array().expect("layers");
    let size = |name: &str| {
        layers
            .iter()
            .find(|l| l["variant"] == name)
            .and_then(|l| l["size"].as_u64())
            .expect("layer")
    };
    assert!(
        size("base") > 100_000_000,
        "base is a whole root: {}",
        size("base")
    );
    for child in ["one", "two", "three"] {
        assert!(
            size(child) < 8_000_000,
            "{child} stores a delta, not a root: {}",
            size(child)
        );
    }

    // The exported merged root of `three`: its own files, the base's, not
    // what it removed or deleted.
    let three = t.path().join("out/three/rootfs");
    assert_eq!(
        std::fs::read_to_string(three.join("etc/three.conf")).expect("file"),
        "three\n"
    );
    assert!(three.join("etc/base-marker").is_file() && three.join("etc/three-marker").is_file());
    assert!(three.join("usr/bin/bc").is_file() && three.join("usr/sbin/sshd").is_file());
    assert!(!three.join("usr/bin/busybox").exists(), "busybox purged");
    assert!(
        !three.join("etc/motd").exists(),
        "deleted by the script: a whiteout"
    );

    // Nothing changed: all cached, fast.
    let started = Instant::now();
    let run = build(&t, &[]);
    let took = started.elapsed();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(built(&run).is_empty(), "{}", run.stdout);
    assert!(
        took.as_secs_f64() < 0.5,
        "a fully cached build took {took:?}"
    );
    assert!(actions(&t).iter().all(|(_, a)| a == "cached"));

    // Layers are keyed through kiln.lock: without it, the packages are
    // resolved again, give the same entries, and everything is still cached.
    std::fs::remove_file(t.path().join("kiln.lock")).expect("rm lock");
    let run = build(&t, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        built(&run).is_empty(),
        "same packages, same layers: {}",
        run.stdout
    );
    assert!(t.path().join("kiln.lock").is_file());

    // touch: nothing rebuilds.
    let now = std::time::SystemTime::now();
    for p in ["base/setup.sh", "one/setup.sh", "base/rootfs/etc/motd"] {
        std::fs::File::options()
            .write(true)
            .open(t.path().join(p))
            .expect("open")
            .set_modified(now)
            .expect("touch");
    }
    assert!(built(&build(&t, &[])).is_empty());

    // One child's script: only that child.
    std::fs::write(
        t.path().join("two/setup.sh"),
        "#!/bin/sh\necho changed > /etc/two-marker\n",
    )
    .expect("edit");
    let run = build(&t, &[]);
    assert_eq!(built(&run), ["two"], "{}", run.stdout);

    // The base's rootfs: all four.
    std::fs::write(t.path().join("base/rootfs/etc/motd"), "hello again\n").expect("edit");
    let run = build(&t, &["--parallel", "2"]);
    let mut names = built(&run);
    names.sort();
    assert_eq!(names, ["base", "one", "three", "two"], "{}", run.stdout);

    assert_store_verifies(t.path(), &cache);
}

#[test]
fn a_failing_script_fails_its_variant_and_skips_only_its_descendants() {
    if skip_end_to_end() {
        return;
    }
    let t = TestTree::new(&[
        ("kiln.toml", "[output]\ndir = \"out\"\n"),
        (
            "base/image.toml",
            "from = \"debian:bookworm\"\nvariant = \"essential\"\n",
        ),
        ("bad/image.toml", "from = \"base\"\nrun = [\"fail.sh\"]\n"),
        (
            "bad/fail.sh",
            "#!/bin/sh\nfor i in $(seq 1 30); do echo line-$i; done\nexit 7\n",
        ),
        ("after-bad/image.toml", "from = \"bad\"\n"),
        ("good/image.toml", "from = \"base\"\nhostname = \"good\"\n"),
    ]);
    let run = build(&t, &[]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    // The summary of a failed build goes to stderr.
    let out = &run.stderr;
    assert!(out.contains('7'), "exit code named: {out}");
    assert!(
        out.contains("line-30") && out.contains("line-11"),
        "last 20 lines: {out}"
    );
    assert!(!out.contains("line-10\n"), "only the last 20 lines: {out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("skipped") && l.contains("after-bad")),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("built") && l.contains("good")),
        "{out}"
    );
    let a = actions(&t);
    assert!(
        a.contains(&("bad".into(), "build".into())),
        "nothing stored for the failed variant: {a:?}"
    );
    assert!(Path::new(&t.path().join("out/bad/build.log")).is_file());
}

#[test]
fn two_builds_at_once_build_each_variant_once() {
    if skip_end_to_end() {
        return;
    }
    let t = TestTree::new(&[
        ("kiln.toml", "[output]\ndir = \"out\"\n"),
        (
            "base/image.toml",
            "from = \"debian:bookworm\"\nvariant = \"essential\"\n",
        ),
        (
            "child/image.toml",
            "from = \"base\"\nhostname = \"child\"\n",
        ),
    ]);
    let cache = t.path().join("cache");
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["build", ".", "--cache-dir"])
            .arg(&cache)
            .current_dir(t.path())
            .output()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(spawn);
        let b = s.spawn(spawn);
        (
            a.join().expect("thread").expect("runs"),
            b.join().expect("thread").expect("runs"),
        )
    });
    assert!(
        a.status.success() && b.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&a.stderr),
        String::from_utf8_lossy(&b.stderr)
    );
    let count = |o: &std::process::Output, word: &str| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with(word))
            .count()
    };
    assert_eq!(
        count(&a, "built ") + count(&b, "built "),
        2,
        "each variant built once"
    );
    assert_eq!(count(&a, "cached ") + count(&b, "cached "), 2);
}

#[test]
fn sigkill_at_random_moments_leaves_a_store_that_verifies() {
    if skip_end_to_end() {
        return;
    }
    let t = TestTree::new(&[
        ("kiln.toml", "[output]\ndir = \"out\"\n"),
        (
            "base/image.toml",
            "from = \"debian:bookworm\"\nvariant = \"essential\"\nrun = [{ inline = \"echo base > /etc/marker\" }]\n",
        ),
        (
            "child/image.toml",
            "from = \"base\"\npackages = [\"less\"]\nhostname = \"child\"\n",
        ),
        (
            "other/image.toml",
            "from = \"base\"\nfiles = [{ path = \"/etc/other\", content = \"x\" }]\n",
        ),
    ]);
    let cache = t.path().join("cache");
    // A fixed sequence of pseudo-random delays (0-6 s) covers resolution,
    // download, unpack, configure, provisioning and commit across trials.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut kill_trials = |extra: &[&str], trials: u32, max_ms: u64| {
        for trial in 0..trials {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let delay = std::time::Duration::from_millis(seed % max_ms);
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
                .args(["build", "."])
                .args(extra)
                .args(["--parallel", "2", "--cache-dir"])
                .arg(&cache)
                .current_dir(t.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("kiln starts");
            std::thread::sleep(delay);
            child.kill().expect("SIGKILL");
            let _ = child.wait();
            // Whatever was interrupted, the store holds only complete layers.
            let verify = kiln(
                t.path(),
                &[
                    "store",
                    "verify",
                    ".",
                    "--cache-dir",
                    cache.to_str().expect("utf-8"),
                ],
            );
            assert_eq!(
                verify.code, 0,
                "{extra:?} trial {trial} (killed after {delay:?}): {}{}",
                verify.stdout, verify.stderr
            );
        }
    };
    kill_trials(&[], 10, 6000);
    let run = build(&t, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_store_verifies(t.path(), &cache);
    assert!(actions(&t).iter().all(|(_, a)| a == "cached"));
    // `--revise` rebuilds layers that others build on: killed at any
    // moment, the children still find their parent.
    kill_trials(&["--revise"], 8, 8000);
    let run = build(&t, &["--revise"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_store_verifies(t.path(), &cache);
    assert!(actions(&t).iter().all(|(_, a)| a == "cached"));
    assert_no_mount_under(t.path());
}

/// A base, a child deleting a base file, and a grandchild exported: the
/// grandchild's root shows all three layers in order, whiteout included.
fn three_generations() -> TestTree {
    TestTree::new(&[
        ("kiln.toml", "[output]\ndir = \"out\"\n"),
        (
            "base/image.toml",
            "from = \"debian:bookworm\"\nvariant = \"essential\"\n",
        ),
        (
            "mid/image.toml",
            "from = \"base\"\nrun = [{ inline = \"rm /etc/issue; echo mid > /etc/mid\" }]\n",
        ),
        (
            "leaf/image.toml",
            "from = \"mid\"\npackages = [\"less\"]\nfiles = [{ path = \"/etc/leaf\", content = \"leaf\" }]\noutputs = [\"dir\"]\n",
        ),
    ])
}

fn check_three_generations(t: &TestTree) {
    let root = t.path().join("out/leaf/rootfs");
    assert!(root.join("usr/bin/dpkg").is_file(), "base layer");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/mid")).expect("mid"),
        "mid\n"
    );
    assert!(
        !root.join("etc/issue").exists(),
        "the middle layer's whiteout hides the base's file"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/leaf")).expect("leaf"),
        "leaf"
    );
    assert!(root.join("usr/bin/less").is_file(), "the leaf's package");
}

#[test]
fn grandchildren_see_every_layer_in_order() {
    if skip_end_to_end() {
        return;
    }
    let t = three_generations();
    let run = build(&t, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    check_three_generations(&t);
}

#[test]
fn an_ordinary_user_builds_in_a_user_namespace() {
    if skip_end_to_end() {
        return;
    }
    // A user with subordinate ids, as `kiln build` needs one.
    let user = "kiln-test-user";
    if !Command::new("id")
        .arg(user)
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let ok = Command::new("useradd")
            .args(["--create-home", user])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "useradd");
    }
    for file in ["/etc/subuid", "/etc/subgid"] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if !text.lines().any(|l| l.starts_with(&format!("{user}:"))) {
            std::fs::write(file, format!("{text}{user}:300000:65536\n")).expect("subordinate ids");
        }
    }
    let t = three_generations();
    // A copy of kiln the user can reach, wherever the checkout is.
    let exe = t.path().join("kiln");
    std::fs::copy(env!("CARGO_BIN_EXE_kiln"), &exe).expect("copy kiln");
    let chown = Command::new("chown")
        .args(["-R", user])
        .arg(t.path())
        .status()
        .expect("chown");
    assert!(chown.success());
    let out = Command::new("runuser")
        .args(["-u", user, "--", "env", &format!("USER={user}")])
        .arg(&exe)
        .args(["build", ".", "--cache-dir"])
        .arg(t.path().join("cache"))
        .current_dir(t.path())
        .output()
        .expect("runuser");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    check_three_generations(&t);
    // The build ran as the user: its files belong to the user outside.
    let owner = std::fs::metadata(t.path().join("out/leaf/rootfs/etc/leaf"))
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .expect("meta");
    assert_ne!(owner, 0, "not built as root");
}

#[test]
fn store_gc_removes_what_the_plan_no_longer_references() {
    if skip_end_to_end() {
        return;
    }
    let t = TestTree::new(&[
        ("kiln.toml", "[output]\ndir = \"out\"\n"),
        (
            "base/image.toml",
            "from = \"debian:bookworm\"\nvariant = \"essential\"\n",
        ),
        (
            "child/image.toml",
            "from = \"base\"\nhostname = \"one\"\noutputs = [\"squashfs\"]\n",
        ),
    ]);
    let cache_dir = t.path().join("cache");
    let cache = cache_dir.to_str().expect("utf-8");
    assert_eq!(build(&t, &[]).code, 0);
    // A new configuration for the child: its old layer is no longer referenced.
    std::fs::write(
        t.path().join("child/image.toml"),
        "from = \"base\"\nhostname = \"two\"\noutputs = [\"squashfs\"]\n",
    )
    .expect("edit");
    assert_eq!(build(&t, &[]).code, 0);
    // The squashfs writer's block cache, and an entry no build used since
    // long before any layer here was made.
    let blocks = cache_dir.join("blocks/squashfs-blocks");
    let entries = || -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for fan in std::fs::read_dir(&blocks).expect("block cache").flatten() {
            out.extend(
                std::fs::read_dir(fan.path())
                    .expect("fan-out")
                    .flatten()
                    .map(|e| e.path()),
            );
        }
        out
    };
    let cached = entries();
    assert!(!cached.is_empty(), "the squashfs writer caches its blocks");
    let stale = cached[0].with_file_name("0".repeat(64));
    std::fs::copy(&cached[0], &stale).expect("copy an entry");
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .and_then(|f| {
            f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000))
        })
        .expect("age it");
    let du = |t: &TestTree| -> serde_json::Value {
        let run = kiln(
            t.path(),
            &["store", "du", ".", "--json", "--cache-dir", cache],
        );
        serde_json::from_str(&run.stdout).expect("json")
    };
    let before = du(&t);
    assert_eq!(before["layers"].as_array().expect("layers").len(), 3);
    let gc = kiln(
        t.path(),
        &["store", "gc", ".", "--json", "--cache-dir", cache],
    );
    assert_eq!(gc.code, 0, "{}", gc.stderr);
    let report: serde_json::Value = serde_json::from_str(&gc.stdout).expect("json");
    let removed = report["removed"].as_array().expect("removed");
    assert_eq!(removed.len(), 1, "{report}");
    assert_eq!(removed[0]["variant"], "child");
    assert!(
        !stale.exists(),
        "the unused cache entry is removed: {report}"
    );
    assert_eq!(report["writer_caches"]["removed"], 1, "{report}");
    assert_eq!(
        report["writer_caches"]["kept"].as_u64(),
        Some(cached.len() as u64),
        "entries the kept layers' images were written with stay: {report}"
    );
    assert_eq!(entries().len(), cached.len());
    let after = du(&t);
    let layers = after["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 2);
    assert!(layers.iter().all(|l| l["referenced"] == true));
    // What is left still builds as cached.
    let run = build(&t, &[]);
    assert!(built(&run).is_empty(), "{}", run.stdout);
}
