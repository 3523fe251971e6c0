//! `kiln build --progress=json`, `--timeout` and stopping a build with
//! SIGINT or SIGTERM in each kind of step, against the real archive.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{TestTree, assert_no_mount_under, assert_store_verifies, kiln, skip_end_to_end};

const ROOT: &str = "[output]\ndir = \"out\"\n";

fn build_args(cache: &Path) -> Vec<String> {
    vec![
        "build".into(),
        ".".into(),
        "--cache-dir".into(),
        cache.to_str().expect("utf-8").into(),
    ]
}

/// The names every event has, and the fields each must carry.
fn check_schema(v: &serde_json::Value) {
    assert_eq!(v["v"], 1, "schema version: {v}");
    assert!(v["time"].is_f64() || v["time"].is_u64(), "time: {v}");
    let name = v["event"].as_str().expect("event name");
    let fields: &[&str] = match name {
        "plan_resolved" => &["variants"],
        "variant_queued" | "variant_started" => &["variant"],
        "step_started" => &["variant", "step"],
        "step_finished" => &["variant", "step", "seconds", "ok"],
        "download" => &[
            "variant",
            "package",
            "bytes",
            "cached",
            "done_bytes",
            "total_bytes",
        ],
        "log" => &["variant", "stream", "text"],
        "notice" => &["variant", "text"],
        "variant_finished" => &["variant", "status"],
        "build_finished" => &[
            "built",
            "cached",
            "failed",
            "skipped",
            "cancelled",
            "seconds",
        ],
        other => panic!("unknown event `{other}`: {v}"),
    };
    for f in fields {
        assert!(!v[f].is_null(), "`{name}` lacks `{f}`: {v}");
    }
}

#[test]
fn progress_json_writes_one_versioned_event_per_line() {
    if skip_end_to_end() {
        return;
    }
    let t = TestTree::new(&[
        ("kiln.toml", ROOT),
        (
            "img/image.toml",
            "from = \"debian:bookworm\"\nrun = [{ name = \"hello\", inline = \"echo hello\" }]\noutputs = [\"tar\"]\n",
        ),
    ]);
    let cache = t.path().join("cache");
    let mut args = build_args(&cache);
    args.extend(["--progress".into(), "json".into(), "--json".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = kiln(t.path(), &args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // `--json` still prints the manifest on stdout.
    let manifest: serde_json::Value = serde_json::from_str(&run.stdout).expect("manifest JSON");
    assert_eq!(manifest["variants"][0]["variant"], "img");
    // stderr holds nothing but events.
    let events: Vec<serde_json::Value> = run
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("`{l}`: {e}")))
        .collect();
    for e in &events {
        check_schema(e);
    }
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "log" && e["text"] == "hello")
    );
    // The names, steps and outcome in order (logs, downloads and repeats
    // folded): what a consumer of the schema can rely on.
    let mut names: Vec<String> = Vec::new();
    for e in &events {
        let name = e["event"].as_str().expect("name");
        let text = match name {
            "log" | "download" | "notice" => continue,
            "step_started" | "step_finished" => {
                format!("{name} {}", e["step"].as_str().expect("step"))
            }
            "variant_finished" => format!("{name} {}", e["status"].as_str().expect("status")),
            _ => name.to_owned(),
        };
        if names.last() != Some(&text) {
            names.push(text);
        }
    }
    insta::assert_snapshot!(names.join("\n"));
}

#[test]
fn a_timeout_names_the_variant_and_step_and_exits_1() {
    if skip_end_to_end() {
        return;
    }
    let t = TestTree::new(&[
        ("kiln.toml", ROOT),
        (
            "base/image.toml",
            "from = \"debian:bookworm\"\noutputs = [\"tar\"]\n",
        ),
        (
            "app/image.toml",
            "from = \"base\"\nrun = [{ name = \"nap\", inline = \"sleep 4712\" }]\n",
        ),
    ]);
    let cache = t.path().join("cache");
    let mut args = build_args(&cache);
    args.extend(["--only".into(), "base".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = kiln(t.path(), &args);
    assert_eq!(run.code, 0, "{}", run.stderr);

    let mut args = build_args(&cache);
    args.extend(["--timeout".into(), "3s".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let run = kiln(t.path(), &args);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("error: timed out after 3s in variant app, step provision:run:nap"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("cancelled app"), "{}", run.stderr);
    assert!(processes_with("sleep 4712").is_empty());
    assert_store_verifies(t.path(), &cache);

    let bad = kiln(t.path(), &["build", ".", "--timeout", "soon"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("`soon` is not a duration"),
        "{}",
        bad.stderr
    );
}

/// Processes whose command line holds `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(marker))
        .collect()
}

/// Processes whose root or working folder is below `dir`.
fn processes_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            ["root", "cwd"]
                .iter()
                .any(|l| std::fs::read_link(e.path().join(l)).is_ok_and(|p| p.starts_with(dir)))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Starts `kiln build --progress json`, sends `signal` once step `step`
/// has started, and checks that kiln ends within 5 s with exit 130 and
/// leaves no process, mount, staging folder or unsound layer behind.
fn interrupt_at(t: &TestTree, cache: &Path, step: &str, signal: &str, delay: Duration) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(build_args(cache))
        .args(["--progress", "json"])
        .current_dir(t.path())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("kiln starts");
    let stderr = child.stderr.take().expect("piped");
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = String::new();
    let reached = lines.by_ref().map_while(Result::ok).any(|line| {
        seen.push_str(&line);
        seen.push('\n');
        line.contains("\"event\":\"step_started\"")
            && line.contains(&format!("\"step\":\"{step}\""))
    });
    assert!(reached, "never reached `{step}`:\n{seen}");
    std::thread::sleep(delay);
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let sent = Instant::now();
    // Keep reading so kiln never blocks on a full pipe.
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    let ended = loop {
        if let Some(status) = child.try_wait().expect("waits") {
            break status;
        }
        if sent.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            panic!("kiln did not stop within 5 s of {signal} in `{step}`");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let rest = rest.join().expect("reader");
    assert_eq!(ended.code(), Some(130), "{signal} in `{step}`: {rest:?}");
    let finished = rest
        .iter()
        .find(|l| {
            l.contains("\"event\":\"variant_finished\"") && l.contains("\"status\":\"cancelled\"")
        })
        .unwrap_or_else(|| panic!("no cancelled variant after {signal} in `{step}`: {rest:?}"));
    assert!(
        finished.contains(&format!("\"step\":\"{step}\"")),
        "{finished}"
    );
    assert!(
        processes_in(t.path()).is_empty(),
        "{:?}",
        processes_in(t.path())
    );
    assert!(processes_with("sleep 4713").is_empty());
    assert_no_mount_under(t.path());
    let out: Vec<String> = std::fs::read_dir(t.path().join("out"))
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        out.iter().all(|n| !n.starts_with(".kiln-stage")),
        "no staging folder: {out:?}"
    );
    assert_store_verifies(t.path(), cache);
}

#[test]
fn sigint_and_sigterm_stop_the_build_in_every_kind_of_step() {
    if skip_end_to_end() {
        return;
    }
    let ms = Duration::from_millis;
    // Downloading: a fresh cache, and a kernel among the packages so that
    // the downloads last long enough to be interrupted.
    let t = TestTree::new(&[
        ("kiln.toml", ROOT),
        (
            "base/image.toml",
            "from = \"debian:bookworm\"\npackages = [\"linux-image-amd64\"]\n",
        ),
    ]);
    interrupt_at(&t, &t.path().join("cache"), "download", "-INT", ms(0));
    let partial: Vec<_> = std::fs::read_dir(t.path().join("cache/debs"))
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        partial
            .iter()
            .all(|n| n.to_string_lossy().ends_with(".deb")),
        "no partial download is left: {partial:?}"
    );

    let t = TestTree::new(&[
        ("kiln.toml", ROOT),
        (
            "base/image.toml",
            "from = \"debian:bookworm\"\noutputs = [\"tar\"]\n",
        ),
    ]);
    let cache = t.path().join("cache");
    interrupt_at(&t, &cache, "configure", "-TERM", ms(300));
    let args = build_args(&cache);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = kiln(t.path(), &args);
    assert_eq!(run.code, 0, "the next build succeeds: {}", run.stderr);

    // A script that would sleep for an hour, and a slow squashfs.
    std::fs::create_dir_all(t.path().join("app")).expect("mkdir");
    std::fs::write(
        t.path().join("app/image.toml"),
        "from = \"base\"\nrun = [{ name = \"nap\", inline = \"sleep 4713\" }]\n",
    )
    .expect("write");
    interrupt_at(&t, &cache, "provision:run:nap", "-INT", ms(300));
    std::fs::write(
        t.path().join("app/image.toml"),
        "from = \"base\"\noutputs = [{ format = \"squashfs\", compression = \"xz\", level = 9, block_size = \"1M\" }]\n",
    )
    .expect("write");
    interrupt_at(&t, &cache, "output:squashfs", "-TERM", ms(300));
    let partial: Vec<_> = std::fs::read_dir(t.path().join("out/app"))
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        partial
            .iter()
            .all(|n| !n.to_string_lossy().contains("squashfs")),
        "no squashfs, partial or whole: {partial:?}"
    );
    std::fs::write(
        t.path().join("app/image.toml"),
        "from = \"base\"\noutputs = [\"tar\"]\n",
    )
    .expect("write");
    let run = kiln(t.path(), &args);
    assert_eq!(run.code, 0, "the next build succeeds: {}", run.stderr);
}
