//! `kiln publish`, `kiln images` and `kiln lifecycle` against Debian's
//! `docker-registry` (distribution 2.8, which has no referrers API)
//! started on loopback by each test: one plain, one with htpasswd basic
//! auth behind a self-signed TLS certificate the test makes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::serve::{free_port, git, write};
use crate::{Run, kiln_with_env};

/// A `docker-registry` on 127.0.0.1, stopped (by its PID) on drop.
struct Registry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Registry {
    fn start(tls_auth: bool) -> Registry {
        Registry::start_with(tls_auth, None)
    }

    /// With `token`: token auth (distribution's `auth.token`), trusting
    /// `token.root` for the tokens `token.realm` issues.
    fn start_with(tls_auth: bool, token: Option<&TokenServer>) -> Registry {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if tls_auth {
            let d = dir.path();
            // A CA, and a server certificate for 127.0.0.1 it signs.
            let openssl = |args: &[&str]| openssl(d, args);
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=kiln test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ]);
            openssl(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "key.pem",
                "-out",
                "leaf.csr",
            ]);
            std::fs::write(
                d.join("leaf.ext"),
                "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
            )
            .expect("ext");
            openssl(&[
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "leaf.ext",
                "-out",
                "cert.pem",
            ]);
            let ok = Command::new("htpasswd")
                .args(["-Bbc"])
                .arg(d.join("htpasswd"))
                .args(["kiln", "s3cret-pw"])
                .stderr(Stdio::null())
                .status()
                .expect("htpasswd")
                .success();
            assert!(ok, "htpasswd made the password file");
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                d.join("cert.pem").display(),
                d.join("key.pem").display(),
                d.join("htpasswd").display()
            ));
        }
        if let Some(t) = token {
            config.push_str(&format!(
                "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: kiln-test-registry\n    issuer: kiln-test-issuer\n    rootcertbundle: {}\n",
                t.port,
                t.dir.path().join("ca.pem").display()
            ));
        }
        std::fs::write(dir.path().join("config.yml"), config).expect("config");
        let log = std::fs::File::create(dir.path().join("log")).expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("docker-registry starts");
        let registry = Registry { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the registry listens: {}",
                registry.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Requests that upload blob content, from the access log.
    fn blob_uploads(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| {
                (l.contains("\"POST /v2/")
                    || l.contains("\"PATCH /v2/")
                    || l.contains("\"PUT /v2/"))
                    && l.contains("/blobs/uploads/")
            })
            .count()
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `openssl ARGS` in `dir`; it must succeed.
fn openssl(dir: &Path, args: &[&str]) {
    let ok = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(Stdio::null())
        .status()
        .expect("openssl")
        .success();
    assert!(ok, "openssl {args:?}");
}

/// `skopeo inspect --raw` of `reference` (a plain loopback registry).
fn raw(reference: &str) -> Value {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo");
    assert!(
        out.status.success(),
        "skopeo inspect {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("manifest JSON")
}

fn tags(registry: &str, repo: &str) -> Vec<String> {
    let out = Command::new("skopeo")
        .args(["list-tags", "--tls-verify=false"])
        .arg(format!("docker://{registry}/{repo}"))
        .output()
        .expect("skopeo");
    if !out.status.success() {
        return Vec::new();
    }
    let v: Value = serde_json::from_slice(&out.stdout).expect("tags JSON");
    let mut t: Vec<String> = v["Tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect();
    t.sort();
    t
}

fn publish(tree: &Path, args: &[&str], now: &str) -> Run {
    let cache = tree.join(".cache");
    let mut all = vec![
        "publish",
        "--cache-dir",
        cache.to_str().expect("utf-8"),
        "--progress",
        "plain",
    ];
    all.extend_from_slice(args);
    kiln_with_env(tree, &all, &[("KILN_NOW", now)])
}

fn json_of(run: &Run) -> Value {
    assert_eq!(run.code, 0, "kiln: {}{}", run.stdout, run.stderr);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("JSON ({e}): {}", run.stdout))
}

/// A small tree, built once for every test here: `base` (Debian
/// bookworm's essential set) as an OCI image and a squashfs, and `app`
/// on it adding one file, as an OCI image and a tar.zst. Each test
/// copies it (outputs and cache included), so builds are cached.
fn built_tree() -> &'static Path {
    static TREE: OnceLock<PathBuf> = OnceLock::new();
    TREE.get_or_init(|| {
        // One fixed folder, replaced by each run (a kept temporary folder
        // would stay behind after every run).
        let dir = std::env::temp_dir().join("kiln-test-publish-tree");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        write(
            &dir.join("kiln.toml"),
            "[output]\ndir = \"out\"\n\n[defaults]\noutputs = [\"oci\", \"squashfs\"]\n",
        );
        write(
            &dir.join("base/image.toml"),
            "from = \"debian:bookworm\"\nvariant = \"essential\"\n",
        );
        write(
            &dir.join("app/image.toml"),
            "from = \"base\"\n\"outputs!\" = [\"oci\", \"tar.zst\"]\nfiles = [{ path = \"/etc/app.conf\", content = \"v1\\n\" }]\n",
        );
        let cache = dir.join(".cache");
        let run = kiln_with_env(
            &dir,
            &["build", "--cache-dir", cache.to_str().expect("utf-8"), "--progress", "plain"],
            &[],
        );
        assert_eq!(run.code, 0, "build: {}{}", run.stdout, run.stderr);
        dir
    })
}

/// A copy of the built tree, committed to a new git repository, whose
/// `[defaults.publish]` points at `registry`.
fn tree_for(registry: &str, extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    // The tree is copied; its cache (packages, store) is hard-linked, not
    // copied: every file there is written once, through a rename, so the
    // copies share it safely, and eight tests do not need eight copies
    // of the store on the disk.
    let built = built_tree();
    for entry in std::fs::read_dir(built).expect("built tree") {
        let path = entry.expect("entry").path();
        let link = path.file_name().is_some_and(|n| n == ".cache");
        let ok = Command::new("cp")
            .arg(if link { "-al" } else { "-a" })
            .arg(&path)
            .arg(dir.path())
            .status()
            .expect("cp")
            .success();
        assert!(ok, "cp {}", path.display());
    }
    let toml = std::fs::read_to_string(dir.path().join("kiln.toml")).expect("kiln.toml");
    write(
        &dir.path().join("kiln.toml"),
        &format!("{toml}\n[defaults.publish]\nregistry = \"{registry}/kiln\"\n{extra}"),
    );
    write(&dir.path().join(".gitignore"), "out/\n.cache/\n");
    git(dir.path(), &["init", "-q"]);
    git(dir.path(), &["add", "-A"]);
    git(
        dir.path(),
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.invalid",
            "commit",
            "-qm",
            "tree",
        ],
    );
    dir
}

fn units(report: &Value) -> Vec<(String, String, String, u64)> {
    report["units"]
        .as_array()
        .expect("units")
        .iter()
        .map(|u| {
            (
                u["variant"].as_str().unwrap_or_default().to_owned(),
                u["format"].as_str().unwrap_or_default().to_owned(),
                u["action"].as_str().unwrap_or_default().to_owned(),
                u["revision"].as_u64().unwrap_or(99),
            )
        })
        .collect()
}

#[test]
fn publish_pushes_images_artifacts_and_referrers_and_a_second_publish_uploads_nothing() {
    if crate::skip_end_to_end() || !crate::have("docker-registry") || !crate::have("skopeo") {
        return;
    }
    let registry = Registry::start(false);
    let reg = registry.addr();
    let tree = tree_for(&reg, "");
    let t = tree.path();
    let commit = git(t, &["rev-parse", "HEAD"]).trim().to_owned();

    // A dry run pushes nothing and lists every unit.
    let dry = json_of(&publish(
        t,
        &["--plain-http", "--dry-run", "--json"],
        "2026-12-01T10:00:00Z",
    ));
    assert!(units(&dry).iter().all(|u| u.2 == "would-push"), "{dry}");
    assert_eq!(registry.blob_uploads(), 0, "a dry run uploads nothing");

    let first = json_of(&publish(
        t,
        &["--plain-http", "--json"],
        "2026-12-01T10:00:00Z",
    ));
    assert_eq!(
        units(&first),
        [
            ("base".into(), "oci".into(), "pushed".into(), 0),
            ("base".into(), "squashfs".into(), "pushed".into(), 0),
            ("app".into(), "oci".into(), "pushed".into(), 0),
            ("app".into(), "tar.zst".into(), "pushed".into(), 0),
        ]
    );
    // app's image shares base's layer: mounted from kiln/base, not sent.
    assert!(first["blobs_mounted"].as_u64().unwrap() >= 1, "{first}");

    let manifest: Value =
        serde_json::from_slice(&std::fs::read(t.join("out/manifest.json")).expect("manifest.json"))
            .expect("JSON");
    let entry = |v: &str| {
        manifest["variants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["variant"] == v)
            .unwrap()
            .clone()
    };
    // The squashfs artifact: its layer is the local file, by digest.
    let sq = raw(&format!("{reg}/kiln/base:20261201t100000z.squashfs"));
    assert_eq!(sq["artifactType"], "application/vnd.kiln.squashfs.v1");
    assert_eq!(
        sq["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    let local = entry("base")["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["format"] == "squashfs")
        .unwrap()
        .clone();
    assert_eq!(
        sq["layers"][0]["digest"],
        format!("sha256:{}", local["sha256"].as_str().unwrap())
    );
    assert_eq!(sq["layers"][0]["size"], local["size"]);
    assert_eq!(
        sq["layers"][0]["annotations"]["org.opencontainers.image.title"],
        local["name"]
    );
    let ann = &sq["annotations"];
    assert_eq!(ann["dev.kiln.variant"], "base");
    assert_eq!(ann["dev.kiln.revision"], "0");
    assert_eq!(ann["dev.kiln.id"], "20261201t100000z");
    assert_eq!(ann["dev.kiln.input-digest"], entry("base")["input_digest"]);
    assert_eq!(ann["org.opencontainers.image.revision"], commit.as_str());
    assert_eq!(
        ann["org.opencontainers.image.created"],
        kiln_build::rfc3339(entry("base")["epoch"].as_i64().unwrap()).as_str()
    );
    // skopeo copies the artifact out; its blob is the file.
    let copy = tempfile::tempdir().expect("temp dir");
    let out = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{reg}/kiln/base:latest.squashfs"))
        .arg(format!("oci:{}:x", copy.path().display()))
        .output()
        .expect("skopeo copy");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let blob = copy
        .path()
        .join("blobs/sha256")
        .join(local["sha256"].as_str().unwrap());
    assert_eq!(
        std::fs::read(&blob).expect("copied blob"),
        std::fs::read(t.join("out").join(local["path"].as_str().unwrap())).expect("local squashfs")
    );

    // The runnable image: the local layout's config and layers.
    let img = raw(&format!("{reg}/kiln/app:latest"));
    let layout = t.join("out").join(
        entry("app")["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["format"] == "oci")
            .unwrap()["path"]
            .as_str()
            .unwrap(),
    );
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let local_manifest: Value = serde_json::from_slice(
        &std::fs::read(
            layout.join("blobs").join(
                index["manifests"][0]["digest"]
                    .as_str()
                    .unwrap()
                    .replacen(':', "/", 1),
            ),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(img["config"], local_manifest["config"]);
    assert_eq!(img["layers"], local_manifest["layers"]);
    assert_eq!(img["annotations"]["dev.kiln.variant"], "app");
    if crate::have("podman") {
        let out = Command::new("podman")
            .args(["pull", "-q", "--tls-verify=false"])
            .arg(format!("{reg}/kiln/app:latest"))
            .output()
            .expect("podman");
        assert!(
            out.status.success(),
            "podman pull: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let _ = Command::new("podman").args(["rmi", "-f", &id]).output();
    }

    // Referrers through the tag schema (distribution 2.8 has no API):
    // the variant's manifest entry and its SBOM.
    let digest = first["units"][2]["digest"].as_str().unwrap();
    let referrers = raw(&format!("{reg}/kiln/app:{}", digest.replacen(':', "-", 1)));
    let mut kinds: Vec<&str> = referrers["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["artifactType"].as_str().unwrap())
        .collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            "application/spdx+json",
            "application/vnd.kiln.manifest.v1+json"
        ]
    );
    for m in referrers["manifests"].as_array().unwrap() {
        let r = raw(&format!("{reg}/kiln/app@{}", m["digest"].as_str().unwrap()));
        assert_eq!(r["subject"]["digest"], digest, "{r}");
    }

    // Unchanged: nothing is uploaded, not even a HEAD per blob.
    let uploads = registry.blob_uploads();
    let second = json_of(&publish(
        t,
        &["--plain-http", "--json"],
        "2026-12-02T10:00:00Z",
    ));
    assert!(
        units(&second).iter().all(|u| u.2 == "up-to-date"),
        "{second}"
    );
    assert_eq!(second["blobs_uploaded"], 0);
    assert_eq!(
        registry.blob_uploads(),
        uploads,
        "a second publish uploads no blob"
    );

    // A changed child: a new revision of it alone; its unchanged base
    // layer is already there.
    write(
        &t.join("app/image.toml"),
        "from = \"base\"\n\"outputs!\" = [\"oci\", \"tar.zst\"]\nfiles = [{ path = \"/etc/app.conf\", content = \"v2\\n\" }]\n",
    );
    let third = json_of(&publish(
        t,
        &["--plain-http", "--json"],
        "2026-12-03T10:00:00Z",
    ));
    assert_eq!(
        units(&third),
        [
            ("base".into(), "oci".into(), "up-to-date".into(), 0),
            ("base".into(), "squashfs".into(), "up-to-date".into(), 0),
            ("app".into(), "oci".into(), "pushed".into(), 1),
            ("app".into(), "tar.zst".into(), "pushed".into(), 1),
        ]
    );
    assert_eq!(
        raw(&format!("{reg}/kiln/app:latest"))["annotations"]["dev.kiln.revision"],
        "1"
    );
    // --revise: a new revision of an unchanged variant.
    let revised = json_of(&publish(
        t,
        &["--plain-http", "--json", "--revise", "--only", "base"],
        "2026-12-04T10:00:00Z",
    ));
    assert_eq!(
        units(&revised)[0],
        ("base".into(), "oci".into(), "pushed".into(), 1)
    );

    // kiln images lists all of it from the registry.
    let images = json_of(&kiln_with_env(
        t,
        &["images", "--plain-http", "--json"],
        &[],
    ));
    let rows = images.as_array().unwrap();
    assert_eq!(rows.len(), 8, "{images}");
    assert!(rows.iter().all(|r| r["lifecycle"] == "active"));
    let text = kiln_with_env(t, &["images", "--plain-http"], &[]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(text.stdout.contains("20261204t100000z"), "{}", text.stdout);
}

#[test]
fn ids_that_repeat_sort_earlier_or_are_taken_are_refused_and_nothing_is_pushed() {
    if crate::skip_end_to_end() || !crate::have("docker-registry") || !crate::have("skopeo") {
        return;
    }
    let registry = Registry::start(false);
    let reg = registry.addr();
    let tree = tree_for(&reg, "id = \"v{revision}\"\n");
    let t = tree.path();
    let first = json_of(&publish(
        t,
        &["--plain-http", "--json", "--only", "base"],
        "2026-12-01T10:00:00Z",
    ));
    assert_eq!(first["units"][0]["id"], "v0");
    let before = tags(&reg, "kiln/base");

    // Rewrites the id in kiln.toml, publishes a new revision: refused.
    let refused = |from: &str, to: &str, expect: &str| {
        let toml = std::fs::read_to_string(t.join("kiln.toml")).unwrap();
        write(&t.join("kiln.toml"), &toml.replace(from, to));
        let run = publish(
            t,
            &["--plain-http", "--revise", "--only", "base"],
            "2026-12-02T10:00:00Z",
        );
        assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
        assert!(run.stderr.contains(expect), "{}", run.stderr);
        run
    };
    // The same id twice.
    refused(
        "v{revision}",
        "v0",
        "id `v0` is the id of the last published revision (r0)",
    );
    // An id that sorts before the last one.
    refused(
        "\"v0\"",
        "\"a1\"",
        "sorts before the last published id `v0`",
    );
    // A tag that exists already (someone pushed `v7` by hand).
    let out = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false"])
        .arg(format!("docker://{reg}/kiln/base:latest"))
        .arg(format!("docker://{reg}/kiln/base:v7"))
        .output()
        .expect("skopeo copy");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut before = before;
    before.push("v7".into());
    before.sort();
    let run = refused("\"a1\"", "\"v7\"", "gives tag `v7`, which");
    assert!(run.stderr.contains("already has"), "{}", run.stderr);
    assert_eq!(tags(&reg, "kiln/base"), before, "nothing was pushed");
    // A template error names the variant, the field and the placeholder.
    let run = refused("\"v7\"", "\"{nope}\"", "unknown placeholder `{nope}`");
    let mut settings = crate::filters();
    settings.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]");
    settings.bind(|| insta::assert_snapshot!("publish_unknown_placeholder", run.stderr.trim_end()));
}

#[test]
fn lifecycle_marks_exactly_the_old_unused_images_obsolete_and_prune_spares_permanent_ones() {
    if crate::skip_end_to_end() || !crate::have("docker-registry") || !crate::have("skopeo") {
        return;
    }
    let registry = Registry::start(false);
    let reg = registry.addr();
    let tree = tree_for(&reg, "");
    let t = tree.path();
    let day = |d: i64| {
        let base: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        (base + jiff::SignedDuration::from_hours(24 * d)).to_string()
    };
    // 30 revisions of base, 3 days apart: 60 images (oci + squashfs).
    let mut refs = Vec::new();
    for i in 0..30 {
        let args: &[&str] = if i == 0 {
            &["--plain-http", "--json", "--only", "base"]
        } else {
            &["--plain-http", "--json", "--only", "base", "--revise"]
        };
        let r = json_of(&publish(t, args, &day(3 * i)));
        let digests: Vec<String> = r["units"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| format!("{reg}/kiln/base@{}", u["digest"].as_str().unwrap()))
            .collect();
        refs.push(digests);
    }
    let lifecycle = |args: &[&str], now: i64| {
        let mut all = vec!["lifecycle"];
        all.extend_from_slice(args);
        kiln_with_env(t, &all, &[("KILN_NOW", &day(now))])
    };
    // Used lately: the images of revisions 5 and 10 (oci only).
    let r = lifecycle(&["used", "--plain-http", &refs[5][0], &refs[10][0]], 90);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Permanent: revision 3's oci image, revision 7's squashfs.
    let r = lifecycle(&["permanent", "--plain-http", &refs[3][0], &refs[7][1]], 90);
    assert_eq!(r.code, 0, "{}", r.stderr);

    // At day 100, older than 30 days: revisions 0..=23, 48 images; minus
    // 2 used, minus 2 permanent: 44.
    let mut expected: Vec<String> = (0..=23)
        .flat_map(|i| refs[i].clone())
        .filter(|r| ![&refs[5][0], &refs[10][0], &refs[3][0], &refs[7][1]].contains(&r))
        .collect();
    expected.sort();
    let capped = lifecycle(&["obsolete", "--plain-http", "--max", "40"], 100);
    assert_eq!(capped.code, 2, "{}{}", capped.stdout, capped.stderr);
    assert!(
        capped
            .stderr
            .contains("44 images qualify as obsolete, more than --max 40: nothing was marked"),
        "{}",
        capped.stderr
    );
    let images = json_of(&kiln_with_env(
        t,
        &["images", "--plain-http", "--json"],
        &[],
    ));
    assert!(
        images
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["lifecycle"] != "obsolete"),
        "the cap marked nothing"
    );

    let dry = json_of(&lifecycle(
        &["obsolete", "--plain-http", "--dry-run", "--json"],
        100,
    ));
    assert_eq!(dry.as_array().unwrap().len(), 44);
    let marked = json_of(&lifecycle(&["obsolete", "--plain-http", "--json"], 100));
    let mut got: Vec<String> = marked
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["reference"].as_str().unwrap().to_owned())
        .collect();
    got.sort();
    assert_eq!(got, expected);
    // A second run marks nothing new.
    let again = lifecycle(&["obsolete", "--plain-http"], 101);
    assert_eq!(again.code, 0);
    assert!(
        again.stdout.contains("no image qualifies"),
        "{}",
        again.stdout
    );

    // Someone makes an obsolete image permanent: prune must spare it.
    // (revision 1's squashfs: not revision 0's image, whose tag is
    // checked below.)
    let saved = refs[1][1].clone();
    assert!(expected.contains(&saved));
    let r = lifecycle(&["permanent", "--plain-http", &saved], 110);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Within the 30-day grace nothing is deleted.
    let early = json_of(&lifecycle(&["prune", "--plain-http", "--json"], 120));
    assert!(
        early
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["action"] == "refused"),
        "{early}"
    );
    let pruned = json_of(&lifecycle(&["prune", "--plain-http", "--json"], 131));
    let deleted: Vec<&str> = pruned
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["action"] == "deleted")
        .map(|d| d["reference"].as_str().unwrap())
        .collect();
    assert_eq!(deleted.len(), 43, "{pruned}");
    assert!(!deleted.contains(&saved.as_str()));
    assert!(
        pruned
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["action"] == "refused" && d["reference"] == saved.as_str())
    );
    let images = json_of(&kiln_with_env(
        t,
        &["images", "--plain-http", "--json"],
        &[],
    ));
    assert_eq!(images.as_array().unwrap().len(), 60 - 43);
    // Their tags went with them; the newest's stay.
    let left = tags(&reg, "kiln/base");
    assert!(!left.iter().any(|t| t == "20260101t000000z"), "{left:?}");
    assert!(left.iter().any(|t| t == "latest"), "{left:?}");
}

/// A proxy to `upstream` that answers 500 instead of forwarding the
/// requests `fail` picks (by method, path and how many came before).
struct FaultProxy {
    port: u16,
    seen: Arc<AtomicUsize>,
}

impl FaultProxy {
    fn start(upstream: u16, fail: fn(&str, &str, usize) -> bool) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let counter = counter.clone();
                std::thread::spawn(move || {
                    let _ = relay(stream, upstream, fail, &counter);
                });
            }
        });
        FaultProxy { port, seen }
    }
}

/// One request per connection: read it whole, answer 500 or forward it
/// with `Connection: close` and copy the answer back.
fn relay(
    client: TcpStream,
    upstream: u16,
    fail: fn(&str, &str, usize) -> bool,
    seen: &AtomicUsize,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = String::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        if line == "\r\n" {
            head.push_str("Connection: close\r\n\r\n");
            break;
        }
        head.push_str(&line);
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let n = seen.fetch_add(1, Ordering::SeqCst);
    let mut client = client;
    if fail(method, path, n) {
        client.write_all(
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    }
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.write_all(head.as_bytes())?;
    up.write_all(&body)?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    client.write_all(&answer)
}

#[test]
fn registry_faults_auth_and_tls_give_clear_errors_and_leave_nothing_half_tagged() {
    if crate::skip_end_to_end()
        || !crate::have("docker-registry")
        || !crate::have("skopeo")
        || !crate::have("htpasswd")
    {
        return;
    }
    // Unreachable: a port nobody listens on.
    let closed = free_port();
    let tree = tree_for(&format!("127.0.0.1:{closed}"), "");
    let t = tree.path();
    let run = publish(
        t,
        &["--plain-http", "--only", "base"],
        "2026-12-01T10:00:00Z",
    );
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "cannot reach the registry at http://127.0.0.1:{closed}/v2/"
        )),
        "{}",
        run.stderr
    );
    // --plain-http is for loopback only.
    let run = publish(
        t,
        &["--plain-http", "--registry", "registry.example.com/kiln"],
        "2026-12-01T10:00:00Z",
    );
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("--plain-http is only allowed for a registry on this machine"),
        "{}",
        run.stderr
    );

    // 500 on the second chunk of the image layer's upload (in 16 MiB
    // chunks): resumed where the registry's copy ends, published.
    let registry = Registry::start(false);
    let proxy = FaultProxy::start(registry.port, |method, _, _| {
        static PATCHES: AtomicUsize = AtomicUsize::new(0);
        method == "PATCH" && PATCHES.fetch_add(1, Ordering::SeqCst) == 1
    });
    let via = format!("127.0.0.1:{}/kiln", proxy.port);
    let ok = json_of(&publish(
        t,
        &[
            "--plain-http",
            "--json",
            "--only",
            "base",
            "--registry",
            &via,
            "--chunk-size",
            "16M",
        ],
        "2026-12-01T10:00:00Z",
    ));
    assert!(ok["retries"].as_u64().unwrap() >= 1, "{ok}");
    assert!(units(&ok).iter().all(|u| u.2 == "pushed"));
    let sq = raw(&format!("{}/kiln/base:latest.squashfs", registry.addr()));
    let local = std::fs::read(t.join("out/base/base-r0.squashfs")).expect("squashfs");
    assert_eq!(
        sq["layers"][0]["digest"],
        format!("sha256:{}", crate::serve::sha256_hex(&local))
    );
    assert!(proxy.seen.load(Ordering::SeqCst) > 0);

    // Every tag write fails: the publish fails, and no new tag exists.
    let registry = Registry::start(false);
    let proxy = FaultProxy::start(registry.port, |method, path, _| {
        method == "PUT"
            && path.contains("/manifests/")
            && !path.contains("/manifests/sha256:")
            && !path.contains("/manifests/sha256-")
    });
    let via = format!("127.0.0.1:{}/kiln", proxy.port);
    let run = publish(
        t,
        &["--plain-http", "--only", "base", "--registry", &via],
        "2026-12-01T10:00:00Z",
    );
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("the registry answered HTTP 500"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("/v2/kiln/base/manifests/"),
        "{}",
        run.stderr
    );
    assert!(
        tags(&registry.addr(), "kiln/base")
            .iter()
            .all(|t| t.starts_with("sha256-")),
        "only referrer indexes, no image tag"
    );

    // TLS and basic auth.
    let secure = Registry::start(true);
    let reg = format!("{}/kiln", secure.addr());
    let cert = secure.cert();
    let cert = cert.to_str().unwrap();
    let env_ok = [
        ("KILN_REGISTRY_USER", "kiln"),
        ("KILN_REGISTRY_PASSWORD", "s3cret-pw"),
        ("KILN_NOW", "2026-12-01T10:00:00Z"),
    ];
    // The system roots do not know the test's certificate.
    let run = kiln_with_env(t, &["images", "--registry", &reg], &env_ok);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("cannot reach the registry at https://"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.to_lowercase().contains("certificate") || run.stderr.contains("UnknownIssuer"),
        "{}",
        run.stderr
    );
    // No credentials.
    let run = kiln_with_env(
        t,
        &["images", "--registry", &reg, "--ca-file", cert],
        &[("HOME", "/nonexistent")],
    );
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("asks for a user and password"),
        "{}",
        run.stderr
    );
    // A wrong password: refused, and the password is never printed.
    let run = kiln_with_env(
        t,
        &["images", "--registry", &reg, "--ca-file", cert],
        &[
            ("KILN_REGISTRY_USER", "kiln"),
            ("KILN_REGISTRY_PASSWORD", "wrong-pw-123"),
        ],
    );
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("refused access"), "{}", run.stderr);
    assert!(!run.stderr.contains("wrong-pw-123") && !run.stdout.contains("wrong-pw-123"));
    // Right: publish over TLS with basic auth, then list.
    let cache = t.join(".cache");
    let run = kiln_with_env(
        t,
        &[
            "publish",
            "--registry",
            &reg,
            "--ca-file",
            cert,
            "--only",
            "base",
            "--cache-dir",
            cache.to_str().unwrap(),
            "--json",
        ],
        &env_ok,
    );
    let report = json_of(&run);
    assert!(units(&report).iter().all(|u| u.2 == "pushed"), "{report}");
    assert!(!run.stderr.contains("s3cret-pw") && !run.stdout.contains("s3cret-pw"));
    let run = kiln_with_env(
        t,
        &["images", "--registry", &reg, "--ca-file", cert, "--json"],
        &env_ok,
    );
    assert_eq!(json_of(&run).as_array().unwrap().len(), 2);
    // Credentials from a Docker config file work the same.
    let docker = tempfile::tempdir().unwrap();
    write(
        &docker.path().join("config.json"),
        &format!(
            "{{\"auths\": {{\"{}\": {{\"auth\": \"{}\"}}}}}}",
            secure.addr(),
            base64_of("kiln:s3cret-pw")
        ),
    );
    let run = kiln_with_env(
        t,
        &["images", "--registry", &reg, "--ca-file", cert, "--json"],
        &[("DOCKER_CONFIG", docker.path().to_str().unwrap())],
    );
    assert_eq!(json_of(&run).as_array().unwrap().len(), 2);
    // The registry saw the password only as auth; it never shows in its log.
    assert!(!secure.log().contains("s3cret-pw"));
}

fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A token service as distribution's token auth expects one: `GET
/// /token?service=…&scope=…` with Basic credentials answers
/// `{"token": JWT}`, the JWT signed (RS256, `openssl dgst`) by a CA the
/// registry trusts, granting what the scopes ask. It records each request
/// (its query and whether the credentials were right).
struct TokenServer {
    port: u16,
    dir: tempfile::TempDir,
    requests: Arc<std::sync::Mutex<Vec<(String, bool)>>>,
}

impl TokenServer {
    fn start() -> TokenServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path().to_path_buf();
        let run = |args: &[&str]| openssl(&d, args);
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=kiln test token CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        run(&["x509", "-in", "ca.pem", "-outform", "DER", "-out", "ca.der"]);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = answer_token(stream, &d, &log);
            }
        });
        TokenServer {
            port,
            dir,
            requests,
        }
    }
}

fn answer_token(
    stream: TcpStream,
    dir: &Path,
    log: &std::sync::Mutex<Vec<(String, bool)>>,
) -> std::io::Result<()> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("").to_owned();
    let mut authorized = false;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                authorized = value.trim() == format!("Basic {}", base64_of("kiln:s3cret-pw"));
            }
        }
    }
    let query = target.split_once('?').map_or("", |(_, q)| q).to_owned();
    log.lock().unwrap().push((query.clone(), authorized));
    let mut stream = stream;
    if !authorized {
        return stream.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    let decode = |s: &str| {
        let mut out = Vec::new();
        let bytes = s.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() + 1 {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 3;
            } else {
                out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
                i += 1;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    let mut access = Vec::new();
    for pair in query.split('&') {
        if let Some(scope) = pair.strip_prefix("scope=") {
            for one in decode(scope).split(' ') {
                let parts: Vec<&str> = one.split(':').collect();
                if parts.len() == 3 {
                    access.push(serde_json::json!({
                        "type": parts[0], "name": parts[1], "actions": parts[2].split(',').collect::<Vec<_>>(),
                    }));
                }
            }
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let der = std::fs::read(dir.join("ca.der"))?;
    let header = serde_json::json!({
        "alg": "RS256", "typ": "JWT",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(der)],
    });
    let claims = serde_json::json!({
        "iss": "kiln-test-issuer", "sub": "kiln", "aud": "kiln-test-registry",
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", access.len()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64.encode(header.to_string()),
        b64.encode(claims.to_string())
    );
    let mut sign = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(dir.join("ca.key"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    sign.stdin
        .take()
        .unwrap()
        .write_all(signing_input.as_bytes())?;
    let signature = sign.wait_with_output()?.stdout;
    let token = format!("{signing_input}.{}", b64.encode(signature));
    let body = serde_json::json!({"token": token, "expires_in": 300}).to_string();
    stream.write_all(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}

#[test]
fn bearer_token_auth_gets_a_token_per_scope_from_the_realm_with_the_credentials() {
    if crate::skip_end_to_end() || !crate::have("docker-registry") || !crate::have("skopeo") {
        return;
    }
    let tokens = TokenServer::start();
    let registry = Registry::start_with(false, Some(&tokens));
    let reg = registry.addr();
    let tree = tree_for(&reg, "");
    let t = tree.path();
    let cache = t.join(".cache");
    let env = [
        ("KILN_REGISTRY_USER", "kiln"),
        ("KILN_REGISTRY_PASSWORD", "s3cret-pw"),
        ("KILN_NOW", "2026-12-01T10:00:00Z"),
    ];
    let run = kiln_with_env(
        t,
        &[
            "publish",
            "--plain-http",
            "--cache-dir",
            cache.to_str().unwrap(),
            "--json",
        ],
        &env,
    );
    let report = json_of(&run);
    assert_eq!(units(&report).len(), 4);
    assert!(units(&report).iter().all(|u| u.2 == "pushed"), "{report}");
    // The mount of base's layer into kiln/app needed pull on kiln/base too.
    assert!(report["blobs_mounted"].as_u64().unwrap() >= 1, "{report}");
    let requests = tokens.requests.lock().unwrap().clone();
    assert!(!requests.is_empty());
    assert!(
        requests.iter().all(|(_, ok)| *ok),
        "every token request had the credentials: {requests:?}"
    );
    assert!(
        requests
            .iter()
            .all(|(q, _)| q.contains("service=kiln-test-registry")),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|(q, _)| q.contains("scope=repository%3Akiln%2Fapp%3Apull%2Cpush")),
        "{requests:?}"
    );
    // Without credentials the token service refuses, and kiln says so.
    let run = kiln_with_env(t, &["images", "--plain-http"], &[("HOME", "/nonexistent")]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("token service"), "{}", run.stderr);
    assert!(run.stderr.contains("refused"), "{}", run.stderr);
    // With them, the images are listed.
    let run = kiln_with_env(t, &["images", "--plain-http", "--json"], &env);
    assert_eq!(json_of(&run).as_array().unwrap().len(), 4);
}

/// A block store that takes `PUT /blocks/<hex>` and answers `HEAD` for
/// what it holds, recording every request (method, path).
struct BlockStore {
    port: u16,
    blocks: Arc<std::sync::Mutex<std::collections::BTreeMap<String, Vec<u8>>>>,
    requests: Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl BlockStore {
    fn start() -> BlockStore {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let blocks = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (b, r) = (blocks.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (b, r) = (b.clone(), r.clone());
                std::thread::spawn(move || {
                    let _ = serve_blocks(stream, &b, &r);
                });
            }
        });
        BlockStore {
            port,
            blocks,
            requests,
        }
    }
}

fn serve_blocks(
    stream: TcpStream,
    blocks: &std::sync::Mutex<std::collections::BTreeMap<String, Vec<u8>>>,
    requests: &std::sync::Mutex<Vec<(String, String)>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut stream = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_owned();
        let path = parts.next().unwrap_or("").to_owned();
        let mut length = 0;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            if h.trim_end().is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        requests
            .lock()
            .unwrap()
            .push((method.clone(), path.clone()));
        let key = path.trim_start_matches("/blocks/").to_owned();
        let status = match method.as_str() {
            "HEAD" if blocks.lock().unwrap().contains_key(&key) => "200 OK",
            "HEAD" => "404 Not Found",
            "PUT" => {
                blocks.lock().unwrap().insert(key, body);
                "201 Created"
            }
            _ => "405 Method Not Allowed",
        };
        stream.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())?;
    }
}

/// Files below `dir` (relative path → content).
fn files_below(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if !e.file_name().to_string_lossy().starts_with('.') {
                out.insert(
                    p.strip_prefix(dir).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

#[test]
fn flist_blocks_go_to_the_flist_routes_before_the_flist_is_published() {
    if crate::skip_end_to_end() || !crate::have("docker-registry") || !crate::have("skopeo") {
        return;
    }
    let registry = Registry::start(false);
    let reg = registry.addr();
    let store = BlockStore::start();
    let tree = tree_for(&reg, "");
    let t = tree.path();
    let mirror = tempfile::tempdir().unwrap();
    write(
        &t.join("micro/image.toml"),
        &format!(
            "from = \"base\"\n\"outputs!\" = [{{ format = \"flist\", url = \"http://127.0.0.1:{}/blocks\" }}]\n",
            store.port
        ),
    );
    write(
        &t.join("mirrored/image.toml"),
        &format!(
            "from = \"base\"\n\"outputs!\" = [{{ format = \"flist\", url = \"dir://{}\" }}]\n",
            mirror.path().display()
        ),
    );
    git(t, &["add", "-A"]);
    git(
        t,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.invalid",
            "commit",
            "-qm",
            "flists",
        ],
    );
    let branch = git(t, &["symbolic-ref", "--short", "HEAD"])
        .trim()
        .to_owned();
    let report = json_of(&publish(
        t,
        &["--plain-http", "--json", "--only", "micro", "mirrored"],
        "2026-12-01T10:00:00Z",
    ));
    let local = files_below(&t.join("out/flist-store"));
    assert!(!local.is_empty());
    // HTTP: every block of the build's store, byte for byte.
    let sent: std::collections::BTreeMap<String, Vec<u8>> = store.blocks.lock().unwrap().clone();
    let local_by_name: std::collections::BTreeMap<String, Vec<u8>> = local
        .iter()
        .map(|(k, v)| (k.rsplit('/').next().unwrap().to_owned(), v.clone()))
        .collect();
    assert_eq!(sent, local_by_name);
    // dir://: the same blocks, in rfs's layout.
    assert_eq!(files_below(mirror.path()), local);
    let micro = report["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["variant"] == "micro")
        .unwrap()
        .clone();
    assert_eq!(
        micro["blocks"][0]["uploaded"].as_u64().unwrap() as usize,
        local.len(),
        "{micro}"
    );
    // The flist itself, as an artifact, with the hub's branch alias.
    let alias = format!("micro-{branch}-latest.flist");
    assert!(
        micro["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == alias.as_str()),
        "{micro}"
    );
    let flist = raw(&format!("{reg}/kiln/micro:{alias}"));
    assert_eq!(flist["artifactType"], "application/vnd.kiln.flist.v1");
    // Nothing changed: no block is sent again.
    let before = store.requests.lock().unwrap().len();
    let again = json_of(&publish(
        t,
        &["--plain-http", "--json", "--only", "micro"],
        "2026-12-02T10:00:00Z",
    ));
    assert!(units(&again).iter().all(|u| u.2 == "up-to-date"), "{again}");
    assert_eq!(store.requests.lock().unwrap().len(), before);

    // A store kiln cannot upload to is refused before anything is pushed.
    write(
        &t.join("micro/image.toml"),
        "from = \"base\"\n\"outputs!\" = [{ format = \"flist\", url = \"zdb://127.0.0.1:9900/ns\" }]\n",
    );
    let tags_before = tags(&reg, "kiln/micro");
    let run = publish(
        t,
        &["--plain-http", "--only", "micro"],
        "2026-12-03T10:00:00Z",
    );
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("a store kiln cannot upload to"),
        "{}",
        run.stderr
    );
    assert_eq!(tags(&reg, "kiln/micro"), tags_before);
}

#[test]
fn an_arch_dimension_publishes_its_images_as_one_index_tagged_without_the_arch() {
    if crate::skip_end_to_end() || !crate::have("docker-registry") || !crate::have("skopeo") {
        return;
    }
    // Only amd64 builds on this machine (arm64 roots come later); the
    // index path is the same for one member as for many, and the
    // kiln-publish tests push a two-platform index of hand-made images.
    let registry = Registry::start(false);
    let reg = registry.addr();
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path();
    write(
        &t.join("kiln.toml"),
        &format!(
            "[output]\ndir = \"out\"\n[defaults]\noutputs = [\"oci\"]\n[dimensions.arch.amd64]\narch = \"amd64\"\n[defaults.publish]\nregistry = \"{reg}/kiln\"\n"
        ),
    );
    write(
        &t.join("base/image.toml"),
        "from = \"debian:bookworm\"\nvariant = \"essential\"\n",
    );
    let report = json_of(&publish(
        t,
        &["--plain-http", "--json"],
        "2026-12-01T10:00:00Z",
    ));
    assert_eq!(report["units"][0]["variant"], "base", "{report}");
    assert_eq!(report["units"][0]["action"], "pushed");
    let index = raw(&format!("{reg}/kiln/base:latest"));
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(index["manifests"][0]["platform"]["architecture"], "amd64");
    assert_eq!(index["annotations"]["dev.kiln.variant"], "base");
    let member = raw(&format!(
        "{reg}/kiln/base@{}",
        index["manifests"][0]["digest"].as_str().unwrap()
    ));
    assert_eq!(member["annotations"]["dev.kiln.variant"], "base-amd64");
    assert!(tags(&reg, "kiln/base").contains(&"20261201t100000z".to_owned()));
    let again = json_of(&publish(
        t,
        &["--plain-http", "--json"],
        "2026-12-02T10:00:00Z",
    ));
    assert_eq!(again["units"][0]["action"], "up-to-date", "{again}");
}
