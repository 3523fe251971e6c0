//! Artifacts, the manifest, SBOMs, revisions and `kiln inspect` (root and
//! network needed; skipped with `KILN_SKIP_NETWORK_TESTS=1`).

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::{TestTree, kiln, kiln_with_env, skip_end_to_end};

fn tree() -> TestTree {
    TestTree::new(&[
        ("kiln.toml", "[output]\ndir = \"out\"\n"),
        (
            "base/image.toml",
            "from = \"debian:bookworm\"\noutputs = [\"tar.zst\", { format = \"cpio.gz\", level = 1 }]\n",
        ),
        (
            "app/image.toml",
            "from = \"base\"\npackages = [\"busybox\"]\nfiles = [{ path = \"/etc/app.conf\", content = \"one\\n\" }]\noutputs = [\"overlay.cpio.gz\", \"tar.gz\"]\n",
        ),
    ])
}

fn build(t: &TestTree, extra: &[&str]) -> crate::Run {
    let cache = t.path().join("cache");
    let mut args = vec!["build", ".", "--cache-dir", cache.to_str().expect("utf-8")];
    args.extend(extra);
    kiln(t.path(), &args)
}

fn manifest(t: &TestTree) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(t.path().join("out/manifest.json")).expect("manifest"))
        .expect("manifest is JSON")
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
}

fn artifact<'a>(m: &'a serde_json::Value, variant: &str, format: &str) -> &'a serde_json::Value {
    m["variants"]
        .as_array()
        .expect("variants")
        .iter()
        .find(|v| v["variant"] == variant)
        .and_then(|v| {
            v["artifacts"]
                .as_array()?
                .iter()
                .find(|a| a["format"] == format)
        })
        .unwrap_or_else(|| panic!("no {format} of {variant} in {m:#}"))
}

#[test]
fn build_writes_artifacts_manifest_and_sboms() {
    if skip_end_to_end() {
        return;
    }
    let t = tree();
    let run = build(&t, &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("out/base/base-r0.tar.zst"),
        "{}",
        run.stdout
    );
    let m = manifest(&t);
    // Every artifact is where the manifest says, with its size and sha256.
    for v in m["variants"].as_array().expect("variants") {
        for a in v["artifacts"].as_array().expect("artifacts") {
            let path = t.path().join("out").join(a["path"].as_str().expect("path"));
            assert_eq!(sha256(&path), a["sha256"], "{}", path.display());
            assert_eq!(fs::metadata(&path).expect("exists").len(), a["size"]);
            assert_eq!(a["revision"], 0);
        }
    }
    assert_eq!(
        artifact(&m, "app", "overlay.cpio.gz")["name"],
        "app-r0.overlay.cpio.gz"
    );
    let app = m["variants"]
        .as_array()
        .expect("variants")
        .iter()
        .find(|v| v["variant"] == "app")
        .expect("app");
    assert_eq!(app["parent"], "base");
    let packages = app["packages"].as_array().expect("packages");
    assert!(
        packages.iter().any(|p| p["name"] == "busybox"),
        "{packages:?}"
    );
    // The field's tools read the archives.
    let base_tar = t.path().join("out/base/base-r0.tar.zst");
    let listing = Command::new("tar")
        .args(["--zstd", "-tf"])
        .arg(&base_tar)
        .output()
        .expect("tar");
    assert!(listing.status.success());
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.lines().any(|l| l == "./usr/bin/dpkg"), "{listing}");
    let status = Command::new("tar")
        .args(["--zstd", "-xOf"])
        .arg(&base_tar)
        .arg("./var/lib/dpkg/status")
        .output()
        .expect("tar");
    let installed = String::from_utf8_lossy(&status.stdout)
        .matches("Status: install ok installed")
        .count();
    let base = m["variants"]
        .as_array()
        .expect("variants")
        .iter()
        .find(|v| v["variant"] == "base")
        .expect("base");
    assert_eq!(
        base["packages"].as_array().expect("packages").len(),
        installed
    );
    // Each variant is dated by its newest package (the build date dpkg-deb
    // stamps on a .deb's members), and nothing in its artifacts is later.
    let lock = fs::read_to_string(t.path().join("kiln.lock")).expect("kiln.lock");
    let base_epoch = newest_package(&lock, "base", &t.path().join("cache"));
    let app_epoch = newest_package(&lock, "app", &t.path().join("cache")).max(base_epoch);
    assert_eq!(base["epoch"], base_epoch);
    assert_eq!(app["epoch"], app_epoch);
    assert_no_time_after(&base_tar, base_epoch);

    // The SBOM lists the image and every package.
    let sbom: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(
            t.path()
                .join("out")
                .join(base["sbom"].as_str().expect("sbom")),
        )
        .expect("sbom"),
    )
    .expect("SBOM is JSON");
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
    assert_eq!(
        sbom["packages"].as_array().expect("packages").len(),
        installed + 1
    );
    let purl = &sbom["packages"][1]["externalRefs"][0]["referenceLocator"];
    assert!(
        purl.as_str().expect("purl").starts_with("pkg:deb/debian/"),
        "{purl}"
    );
    let overlay = t.path().join("out/app/app-r0.overlay.cpio.gz");
    let cpio = Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -dc {} | cpio -it", overlay.display()))
        .output()
        .expect("cpio");
    let names = String::from_utf8_lossy(&cpio.stdout);
    assert!(names.lines().any(|l| l == "etc/app.conf"), "{names}");
    assert!(
        !names.lines().any(|l| l == "usr/bin/dpkg"),
        "only the layer: {names}"
    );

    // A second build reuses everything and copies nothing; --json prints
    // the manifest.
    let mtime = fs::metadata(&base_tar)
        .and_then(|m| m.modified())
        .expect("mtime");
    let run = build(&t, &["--json"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let printed: serde_json::Value = serde_json::from_str(&run.stdout).expect("--json prints JSON");
    assert_eq!(printed, manifest(&t));
    assert_eq!(
        fs::metadata(&base_tar)
            .and_then(|m| m.modified())
            .expect("mtime"),
        mtime
    );

    // New content in `app`: its artifacts take r1, the base keeps r0.
    fs::write(
        t.path().join("app/image.toml"),
        "from = \"base\"\npackages = [\"busybox\"]\nfiles = [{ path = \"/etc/app.conf\", content = \"two\\n\" }]\noutputs = [\"overlay.cpio.gz\", \"tar.gz\"]\n",
    )
    .expect("write");
    let run = build(&t, &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let m = manifest(&t);
    assert_eq!(artifact(&m, "app", "tar.gz")["revision"], 1);
    assert_eq!(artifact(&m, "base", "tar.zst")["revision"], 0);
    assert!(t.path().join("out/app/app-r1.tar.gz").is_file());
    assert!(
        !t.path().join("out/app/app-r0.tar.gz").exists(),
        "the old revision is replaced"
    );

    // inspect: by variant, by artifact file; an unknown name is exit 2.
    let cache = t.path().join("cache");
    let cache = cache.to_str().expect("utf-8");
    let run = kiln(t.path(), &["inspect", "app", ".", "--cache-dir", cache]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    for needle in [
        "parent        base",
        "layers (top first)",
        "largest packages",
        "/usr",
    ] {
        assert!(run.stdout.contains(needle), "{needle}: {}", run.stdout);
    }
    let run = kiln(
        t.path(),
        &[
            "inspect",
            "out/app/app-r1.tar.gz",
            ".",
            "--cache-dir",
            cache,
            "--json",
        ],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(v["artifact"]["name"], "app-r1.tar.gz");
    assert_eq!(v["layers"].as_array().expect("layers").len(), 2);
    let run = kiln(t.path(), &["inspect", "nope", ".", "--cache-dir", cache]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("`nope` is neither a variant nor an artifact"),
        "{}",
        run.stderr
    );
}

/// The newest build date (ar member date) of the `.deb`s `kiln.lock`
/// records for `variant`, read from the cache they were downloaded to.
fn newest_package(lock: &str, variant: &str, cache: &Path) -> i64 {
    let block = lock
        .split("[[variant]]")
        .find(|b| b.trim_start().starts_with(&format!("name = \"{variant}\"")))
        .unwrap_or_else(|| panic!("no `{variant}` in kiln.lock:\n{lock}"));
    block
        .lines()
        .filter_map(|l| l.strip_prefix("sha256 = \""))
        .map(|sha| {
            let deb =
                fs::read(cache.join("debs").join(format!("{}.deb", &sha[..64]))).expect("deb");
            // "!<arch>\n", then the first member header: name (16), date (12).
            let date = String::from_utf8_lossy(&deb[8 + 16..8 + 28])
                .trim()
                .to_string();
            date.parse::<i64>().expect("an ar date")
        })
        .max()
        .expect("packages")
}

/// Asserts that no entry of the tar archive `tar` is dated after `epoch`.
fn assert_no_time_after(tar: &Path, epoch: i64) {
    let out = Command::new("tar")
        .args(["--full-time", "-tvf"])
        .arg(tar)
        .env("TZ", "UTC")
        .output()
        .expect("tar");
    assert!(out.status.success());
    let limit = Command::new("date")
        .args(["-u", "-d", &format!("@{epoch}"), "+%Y-%m-%d %H:%M:%S"])
        .output()
        .expect("date");
    let limit = String::from_utf8_lossy(&limit.stdout).trim().to_string();
    let listing = String::from_utf8_lossy(&out.stdout);
    let mut entries = 0;
    for line in listing.lines() {
        // mode owner size date time name
        let fields: Vec<&str> = line.split_whitespace().collect();
        let when = format!("{} {}", fields[3], fields[4]);
        assert!(when <= limit, "{line} is later than {limit}");
        entries += 1;
    }
    assert!(entries > 1000, "{listing}");
}

#[test]
fn source_date_epoch_dates_the_root_and_its_artifacts() {
    if skip_end_to_end() {
        return;
    }
    let t = TestTree::new(&[
        ("kiln.toml", "[output]\ndir = \"out\"\n"),
        (
            "base/image.toml",
            "from = \"debian:bookworm\"\noutputs = [\"tar\"]\nusers = [{ name = \"app\" }]\n",
        ),
    ]);
    let cache = t.path().join("cache");
    let run = kiln_with_env(
        t.path(),
        &["build", ".", "--cache-dir", cache.to_str().expect("utf-8")],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let m = manifest(&t);
    assert_eq!(m["variants"][0]["epoch"], 1_700_000_000);
    let tar = t.path().join("out/base/base-r0.tar");
    assert_no_time_after(&tar, 1_700_000_000);
    // useradd and the packages' scripts dated /etc/shadow with it: day 19675.
    let shadow = Command::new("tar")
        .args(["-xOf"])
        .arg(&tar)
        .arg("./etc/shadow")
        .output()
        .expect("tar");
    let shadow = String::from_utf8_lossy(&shadow.stdout);
    for user in ["root", "app"] {
        let line = shadow
            .lines()
            .find(|l| l.starts_with(&format!("{user}:")))
            .unwrap_or_else(|| panic!("{user}:\n{shadow}"));
        assert_eq!(line.split(':').nth(2), Some("19675"), "{line}");
    }
    // The same epoch finds the layer; another epoch is another layer.
    let run = kiln_with_env(
        t.path(),
        &["plan", ".", "--cache-dir", cache.to_str().expect("utf-8")],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert!(
        run.stdout.contains("0 to build, 1 cached"),
        "{}",
        run.stdout
    );
    let run = kiln_with_env(
        t.path(),
        &["plan", ".", "--cache-dir", cache.to_str().expect("utf-8")],
        &[("SOURCE_DATE_EPOCH", "1700000001")],
    );
    assert!(
        run.stdout.contains("1 to build, 0 cached"),
        "{}",
        run.stdout
    );
}

#[test]
fn two_clean_builds_of_the_example_give_identical_artifacts() {
    if skip_end_to_end() {
        return;
    }
    let mut digests = Vec::new();
    let mut lock: Option<String> = None;
    for _ in 0..2 {
        // A fresh copy of the tree and an empty cache each time: nothing
        // is shared but the archive, and the tree's kiln.lock, which a
        // tree in git carries (the archive moves on between two builds:
        // the lock is what makes them the same inputs).
        let tree = crate::example_copy("basic");
        if let Some(text) = &lock {
            fs::write(tree.path().join("kiln.lock"), text).expect("kiln.lock");
        }
        let cache = tree.path().join("cache");
        let run = kiln(
            tree.path(),
            &[
                "build",
                ".",
                "--only",
                "bookworm",
                "--cache-dir",
                cache.to_str().expect("utf-8"),
                "--json",
            ],
        );
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        let m: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
        let mut found = Vec::new();
        for v in m["variants"].as_array().expect("variants") {
            for a in v["artifacts"].as_array().expect("artifacts") {
                let path = tree
                    .path()
                    .join("out")
                    .join(a["path"].as_str().expect("path"));
                assert_eq!(sha256(&path), a["sha256"]);
                found.push((a["name"].to_string(), a["sha256"].to_string()));
            }
            let sbom = tree
                .path()
                .join("out")
                .join(v["sbom"].as_str().expect("sbom"));
            found.push((v["sbom"].to_string(), sha256(&sbom)));
        }
        found.sort();
        assert!(found.len() >= 4, "{found:?}");
        digests.push(found);
        lock = Some(fs::read_to_string(tree.path().join("kiln.lock")).expect("kiln.lock"));
    }
    assert_eq!(digests[0], digests[1]);
}

#[test]
fn oci_layouts_and_flists_of_a_child_share_their_base() {
    if skip_end_to_end() {
        return;
    }
    let t = TestTree::new(&[
        ("kiln.toml", "[output]\ndir = \"out\"\n"),
        (
            "base/image.toml",
            "from = \"debian:bookworm\"\nvariant = \"essential\"\noutputs = [\"oci\", { format = \"flist\", url = \"http://hub.example/store\" }]\n",
        ),
        (
            "app/image.toml",
            "from = \"base\"\npackages = [\"busybox\"]\nfiles = [{ path = \"/etc/app.conf\", content = \"one\\n\" }]\n\
             labels = { \"org.example.role\" = \"app\" }\n\
             container = { entrypoint = [\"/bin/busybox\"], cmd = [\"sh\"], env = { APP = \"1\" }, workdir = \"/srv\", user = \"0:0\" }\n\
             outputs = [\"oci\", { format = \"oci.tar\", tag = \"v1\", repository = \"registry.example/team/app\" }, { format = \"flist\", url = \"http://hub.example/store\" }]\n",
        ),
    ]);
    let run = build(&t, &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let out = t.path().join("out");
    let m = manifest(&t);
    // skopeo reads both layouts; the child's config is the image's.
    let inspect = |what: &str, config: bool| -> serde_json::Value {
        let mut cmd = Command::new("skopeo");
        cmd.arg("inspect");
        if config {
            cmd.arg("--config");
        }
        let o = cmd.arg(what).output().expect("skopeo");
        assert!(o.status.success(), "skopeo inspect {what}: {o:?}");
        serde_json::from_slice(&o.stdout).expect("JSON")
    };
    let base_oci = out.join(artifact(&m, "base", "oci")["path"].as_str().expect("path"));
    let app_oci = out.join(artifact(&m, "app", "oci")["path"].as_str().expect("path"));
    assert!(app_oci.join("index.json").is_file());
    let base = inspect(&format!("oci:{}", base_oci.display()), false);
    let app = inspect(&format!("oci:{}", app_oci.display()), false);
    let layers = |v: &serde_json::Value| -> Vec<String> {
        v["Layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| l.as_str().expect("digest").to_owned())
            .collect()
    };
    assert_eq!(layers(&base).len(), 1);
    assert_eq!(layers(&app).len(), 2);
    assert_eq!(
        layers(&app)[0],
        layers(&base)[0],
        "the base layer is shared"
    );
    let config = inspect(&format!("oci:{}", app_oci.display()), true);
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["config"]["Entrypoint"][0], "/bin/busybox");
    assert_eq!(config["config"]["Cmd"][0], "sh");
    assert_eq!(config["config"]["WorkingDir"], "/srv");
    assert!(
        config["config"]["Env"]
            .as_array()
            .expect("env")
            .iter()
            .any(|e| e == "APP=1"),
        "{config}"
    );
    assert_eq!(config["config"]["Labels"]["org.example.role"], "app");
    let archive = out.join(
        artifact(&m, "app", "oci.tar")["path"]
            .as_str()
            .expect("path"),
    );
    let tagged = inspect(&format!("oci-archive:{}:v1", archive.display()), false);
    assert_eq!(layers(&tagged), layers(&app));
    // Docker's manifest.json names it `<repository>:<tag>` for `docker load`.
    let docker = Command::new("tar")
        .arg("-xOf")
        .arg(&archive)
        .arg("manifest.json")
        .output()
        .expect("tar");
    let docker: serde_json::Value = serde_json::from_slice(&docker.stdout).expect("JSON");
    assert_eq!(
        docker[0]["RepoTags"],
        serde_json::json!(["registry.example/team/app:v1"]),
        "{docker}"
    );
    inspect(&format!("docker-archive:{}", archive.display()), false);
    // The flists read back through kiln, from the store beside them.
    let app_flist = out.join(artifact(&m, "app", "flist")["path"].as_str().expect("path"));
    let store = out.join("flist-store");
    let ls = kiln(
        t.path(),
        &["flist", "ls", app_flist.to_str().expect("utf-8")],
    );
    assert_eq!(ls.code, 0, "{}", ls.stderr);
    assert!(ls.stdout.contains(" /usr/bin/busybox\n"), "{}", ls.stdout);
    let app_conf_reads_back = || {
        let cat = crate::flist_cat(t.path(), &app_flist, "/etc/app.conf", &store);
        assert_eq!(
            (cat.code, cat.stdout.as_str()),
            (0, "one\n"),
            "{}",
            cat.stderr
        );
    };
    app_conf_reads_back();
    let missing = kiln(
        t.path(),
        &["flist", "cat", app_flist.to_str().expect("utf-8"), "/nope"],
    );
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    // The base's blocks are the child's too: the store holds fewer blocks
    // than the two flists name.
    let blocks = |flist: &Path| -> usize {
        let o = Command::new("sqlite3")
            .arg(flist)
            .arg("select count(distinct id) from block")
            .output()
            .expect("sqlite3");
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .expect("count")
    };
    let base_flist = out.join(
        artifact(&m, "base", "flist")["path"]
            .as_str()
            .expect("path"),
    );
    let stored = walkdir_files(&store);
    assert!(
        stored < blocks(&base_flist) + blocks(&app_flist),
        "{stored} blocks stored"
    );
    // A store that lost its blocks gets them again on the next build.
    fs::remove_dir_all(&store).expect("remove the store");
    let run = build(&t, &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(walkdir_files(&store), stored);

    // `kiln flist gc`: these flists route to a hub, so the store is named.
    let (base_fl, app_fl) = (
        base_flist.to_str().expect("utf-8"),
        app_flist.to_str().expect("utf-8"),
    );
    let store_arg = store.to_str().expect("utf-8");
    let gc = |args: &[&str]| {
        let mut all = vec!["flist", "gc"];
        all.extend_from_slice(args);
        kiln(t.path(), &all)
    };
    let unnamed = gc(&[base_fl]);
    assert_eq!(unnamed.code, 2, "{}", unnamed.stderr);
    assert!(unnamed.stderr.contains("--store DIR"), "{}", unnamed.stderr);
    // Keeping both flists removes nothing.
    let dry = gc(&["--dry-run", "--json", "--store", store_arg, base_fl, app_fl]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let dry: serde_json::Value = serde_json::from_str(&dry.stdout).expect("JSON");
    assert_eq!(
        (dry["removed"].as_u64(), dry["kept"].as_u64()),
        (Some(0), Some(stored as u64))
    );
    // Keeping only the base removes the child's own blocks...
    let only_base = gc(&["--store", store_arg, base_fl]);
    assert_eq!(only_base.code, 0, "{}", only_base.stderr);
    let removed = walkdir_files(&store);
    assert!(removed < stored, "{}", only_base.stdout);
    assert!(
        only_base
            .stdout
            .starts_with(&format!("removed {} blocks", stored - removed)),
        "{}",
        only_base.stdout
    );
    let cat = crate::flist_cat(t.path(), &app_flist, "/etc/app.conf", &store);
    assert_eq!(cat.code, 1, "{}", cat.stderr);
    let cat = crate::flist_cat(t.path(), &base_flist, "/etc/debian_version", &store);
    assert_eq!(cat.code, 0, "{}", cat.stderr);
    let warned = gc(&["--dry-run", "--store", store_arg, base_fl, app_fl]);
    assert!(
        warned.stdout.contains(&format!(
            "warning: the flists name {} blocks the store does not hold",
            stored - removed
        )),
        "{}",
        warned.stdout
    );
    // ... and the next build, finding them gone, writes them again.
    let run = build(&t, &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(walkdir_files(&store), stored);
    app_conf_reads_back();
}

/// How many files are below `dir`, not counting dot files (a store's
/// lock file).
fn walkdir_files(dir: &Path) -> usize {
    let mut n = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for e in fs::read_dir(&d).expect("read_dir").flatten() {
            if e.file_type().expect("type").is_dir() {
                pending.push(e.path());
            } else if !e.file_name().to_string_lossy().starts_with('.') {
                n += 1;
            }
        }
    }
    n
}
