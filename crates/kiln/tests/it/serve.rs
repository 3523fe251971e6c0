//! `kiln serve` end to end: the real binary on loopback, real git
//! repositories with the `post-receive` hook of `examples/serve`, the real
//! SQLite database (read with the `sqlite3` CLI), and a recording HTTP
//! server standing in for the forge's status API.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::Digest as _;

use crate::{have, skip_end_to_end};

const SECRET: &str = "s3cret-webhook-key-7f1c";
const FORGE_TOKEN: &str = "ghp_forgetoken0123456789abcdef";

/// A free loopback port (so a restarted server keeps its address).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `kiln serve --config CONFIG`, in a process group of its own that is
/// killed when this is dropped (also when a test fails).
pub(crate) struct Server {
    child: Child,
    pub(crate) addr: String,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    pub(crate) fn start(config: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("kiln serve starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().expect("piped");
        let buffer = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
                    let _ = tx.send(addr);
                }
                let mut b = buffer.lock().expect("lock");
                b.push_str(&line);
                b.push('\n');
            }
        });
        let mut server = Self {
            child,
            addr: String::new(),
            stderr,
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => server.addr = addr,
            Err(e) => panic!("kiln serve did not start ({e}): {}", server.stderr()),
        }
        server
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().expect("lock").clone()
    }

    fn signal_group(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, "--", &format!("-{}", self.child.id())])
            .status();
    }

    /// SIGKILL to the server and every build process it started.
    pub(crate) fn kill(&mut self) {
        self.signal_group("-KILL");
        let _ = self.child.wait();
    }

    /// SIGTERM to the server; its exit code.
    fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal_group("-KILL");
            let _ = self.child.wait();
        }
    }
}

/// A request the forge stub received.
#[derive(Clone, Debug)]
struct Recorded {
    path: String,
    authorization: String,
    body: serde_json::Value,
}

/// The forge's status API: records every request; the first `success`
/// status it gets is answered 500, so kiln has to try again.
pub(crate) struct ForgeStub {
    addr: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    failures: Arc<Mutex<u32>>,
    stop: Arc<AtomicBool>,
}

impl ForgeStub {
    pub(crate) fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, f, s) = (
            Arc::clone(&requests),
            Arc::clone(&failures),
            Arc::clone(&stop),
        );
        std::thread::spawn(move || {
            let mut failed_once = false;
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let Some(request) = read_request(&stream) else {
                    continue;
                };
                let fail = !failed_once && request.body["state"] == "success";
                failed_once |= fail;
                if fail {
                    *f.lock().expect("lock") += 1;
                } else {
                    r.lock().expect("lock").push(request);
                }
                let reply: &[u8] = if fail {
                    b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                } else {
                    b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
                };
                let _ = (&stream).write_all(reply);
            }
        });
        Self {
            addr,
            requests,
            failures,
            stop,
        }
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("lock").clone()
    }

    /// Statuses (state, context) sent for `sha`, in order.
    fn statuses(&self, sha: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == format!("/repos/acme/images/statuses/{sha}"))
            .collect()
    }
}

impl ForgeStub {
    /// Waits until the last status sent for `sha` is `state`.
    fn wait_for_last(&self, sha: &str, state: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self
            .statuses(sha)
            .last()
            .is_none_or(|s| s.body["state"] != state)
        {
            assert!(Instant::now() < deadline, "{:?}", self.statuses(sha));
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ForgeStub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

/// One HTTP/1.1 request with a `Content-Length` body.
fn read_request(stream: &TcpStream) -> Option<Recorded> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_owned();
    let (mut length, mut authorization) = (0, String::new());
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().ok()?,
            "authorization" => value.trim().clone_into(&mut authorization),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Recorded {
        path,
        authorization,
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    })
}

pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// GET `url`: status and body.
pub(crate) fn get(url: &str) -> (u16, Vec<u8>) {
    let mut response = agent().get(url).call().expect("GET");
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .expect("body");
    (status, body)
}

pub(crate) fn get_json(url: &str) -> serde_json::Value {
    let (status, body) = get(url);
    assert_eq!(status, 200, "GET {url}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("JSON")
}

/// POST `body` to `url` with `headers`: status and JSON answer.
fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, serde_json::Value) {
    let mut request = agent().post(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = request.send(body).expect("POST");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// POST an HTML form (`application/x-www-form-urlencoded`) to `url`.
pub(crate) fn post_form(url: &str, headers: &[(&str, &str)], form: &str) -> (u16, String) {
    let mut request = agent()
        .post(url)
        .header("Content-Type", "application/x-www-form-urlencoded");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = request.send(form.as_bytes()).expect("POST");
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_to_string().unwrap_or_default(),
    )
}

pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=Ada", "-c", "user.email=ada@example.org"])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "advice.detachedHead=false",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The hook's `remote: kiln: ...` lines come on stderr.
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn sqlite(db: &Path, query: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(query)
        .output()
        .expect("sqlite3 runs");
    assert!(
        out.status.success(),
        "sqlite3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Waits until job `id` is in one of `states`; the job.
pub(crate) fn wait_for(
    server: &Server,
    id: i64,
    states: &[&str],
    limit: Duration,
) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let job = get_json(&server.url(&format!("/api/jobs/{id}")));
        if states.iter().any(|s| job["state"] == *s) {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} is still {} (waiting for {states:?}); log:\n{}\nserver:\n{}",
            job["state"],
            String::from_utf8_lossy(&get(&server.url(&format!("/api/jobs/{id}/log"))).1),
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until job `id` has ended (succeeded or failed); the job.
pub(crate) fn wait_end(server: &Server, id: i64) -> serde_json::Value {
    wait_for(
        server,
        id,
        &["succeeded", "failed"],
        Duration::from_secs(900),
    )
}

/// `latest`'s app artifact is `job`'s.
fn assert_latest_is(server: &Server, name: &str, job: &serde_json::Value) {
    let (status, latest) = get(&server.url(&format!("/artifacts/images/main/latest/app/{name}")));
    assert_eq!(status, 200);
    assert_eq!(
        sha256_hex(&latest),
        variant(job, "app")["artifacts"][0]["sha256"]
            .as_str()
            .expect("sha256")
    );
}

/// Waits until job `id` has started a `run` step.
fn wait_for_run_step(setup: &Setup, id: i64) {
    let events = setup.data().join(format!("jobs/{id}/events.jsonl"));
    let deadline = Instant::now() + Duration::from_secs(120);
    while !std::fs::read_to_string(&events).is_ok_and(|t| t.contains("\"provision:")) {
        assert!(
            Instant::now() < deadline,
            "job {id} never reached its run step"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

/// The test's folders: a bare repository with kiln's `post-receive` hook,
/// a clone to commit in, secrets, and `serve.toml`.
pub(crate) struct Setup {
    dir: tempfile::TempDir,
    pub(crate) config: PathBuf,
}

impl Setup {
    pub(crate) fn new(port: u16, forge: Option<&ForgeStub>, extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        write(&root.join("secret"), &format!("{SECRET}\n"));
        write(&root.join("forge-token"), &format!("{FORGE_TOKEN}\n"));
        let bare = root.join("images.git");
        git(
            root,
            &["init", "-q", "--bare", bare.to_str().expect("utf-8")],
        );
        let forge = forge.map_or_else(String::new, |f| {
            format!(
                "[forge]\nkind = \"github\"\napi_url = \"http://{}\"\ntoken_file = \"forge-token\"\n",
                f.addr
            )
        });
        let config = root.join("serve.toml");
        write(
            &config,
            &format!(
                r#"listen = "127.0.0.1:{port}"
data_dir = "data"
workers = 1
{extra}
[[repos]]
name = "images"
url = "file://{}"
secret_file = "secret"

{forge}"#,
                bare.display()
            ),
        );
        Self { dir, config }
    }

    pub(crate) fn root(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn bare(&self) -> PathBuf {
        self.root().join("images.git")
    }

    /// A git work tree `work/` with `kiln.toml` and a Debian base image
    /// (`base`), for the test's child images.
    pub(crate) fn image_repo(&self) -> PathBuf {
        let work = self.root().join("work");
        std::fs::create_dir_all(&work).expect("mkdir");
        git(&work, &["init", "-q"]);
        write(&work.join("kiln.toml"), "[output]\ndir = \"out\"\n");
        write(
            &work.join("base/image.toml"),
            "from = \"debian:bookworm\"\nvariant = \"essential\"\n",
        );
        work
    }

    pub(crate) fn data(&self) -> PathBuf {
        self.root().join("data")
    }

    /// Installs `examples/serve/post-receive` in the bare repository,
    /// pointed at `server`.
    pub(crate) fn install_hook(&self, server: &Server) {
        let hook = self.bare().join("hooks/post-receive");
        std::fs::copy(crate::examples().join("serve/post-receive"), &hook).expect("copy hook");
        let bare = self.bare();
        for (key, value) in [
            ("kiln.url", format!("http://{}", server.addr)),
            (
                "kiln.secretFile",
                self.root().join("secret").display().to_string(),
            ),
            ("kiln.repo", "images".to_owned()),
            ("kiln.fullName", "acme/images".to_owned()),
        ] {
            git(&bare, &["config", key, &value]);
        }
    }
}

/// The events of an SSE stream until `end`: (id, data) per event.
fn sse(url: &str, last_event_id: Option<usize>) -> Vec<(Option<usize>, String, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(900)))
        .build()
        .into();
    let mut request = agent.get(url);
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", &id.to_string());
    }
    let response = request.call().expect("SSE connects");
    let reader = BufReader::new(response.into_body().into_reader());
    let mut events = Vec::new();
    let (mut id, mut name, mut data) = (None, String::from("message"), String::new());
    for line in reader.lines() {
        let line = line.expect("SSE line");
        if line.is_empty() {
            if !data.is_empty() || name != "message" {
                let end = name == "end";
                events.push((
                    id.take(),
                    std::mem::take(&mut name),
                    std::mem::take(&mut data),
                ));
                name = "message".into();
                if end {
                    break;
                }
            }
            continue;
        }
        if let Some(v) = line.strip_prefix("id:") {
            id = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("event:") {
            v.trim().clone_into(&mut name);
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    events
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

fn variant<'a>(job: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    job["result"]["variants"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == name))
        .unwrap_or_else(|| panic!("variant `{name}` in {job:#}"))
}

/// Everything of issue 13's end-to-end flow in one build-sharing test: a
/// `git push` to a bare repository (its `post-receive` hook signs and posts
/// the webhook) builds; SIGKILL of the server mid-build requeues the job
/// and it succeeds; a child-only change rebuilds only the child; statuses,
/// artifacts, `latest`, SSE, the manual API and the logs are checked.
#[test]
#[allow(clippy::too_many_lines)]
fn a_git_push_builds_survives_a_crash_reports_statuses_and_rebuilds_only_the_changed_child() {
    if skip_end_to_end() || !have("curl") || !have("openssl") || !have("unsquashfs") {
        return;
    }
    let forge = ForgeStub::start();
    let port = free_port();
    let setup = Setup::new(port, Some(&forge), "keep_jobs = 2");
    let mut server = Server::start(&setup.config);
    setup.install_hook(&server);

    // The image repository: a Debian base and a child with a file.
    let work = setup.image_repo();
    let app = |version: &str| {
        format!(
            "from = \"base\"\nfiles = [{{ path = \"/etc/app.conf\", content = \"{version}\\n\" }}]\noutputs = [\"squashfs\"]\n"
        )
    };
    write(&work.join("app/image.toml"), &app("v1"));
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "Base and app"]);
    let bare = setup.bare();
    let remote = bare.to_str().expect("utf-8");
    // Commits and pushes the app at `version` with a `run` script; its sha.
    let push_app = |version: &str, script: &str, message: &str| {
        write(
            &work.join("app/image.toml"),
            &format!("{}run = [{{ inline = \"{script}\" }}]\n", app(version)),
        );
        git(&work, &["commit", "-q", "-am", message]);
        git(&work, &["push", "-q", remote, "main"]);
        git(&work, &["rev-parse", "HEAD"]).trim().to_owned()
    };
    let pushed = git(&work, &["push", "-q", remote, "main"]);
    assert!(pushed.contains("kiln: main:"), "the hook reports: {pushed}");
    assert!(pushed.contains("(HTTP 202)"), "the hook reports: {pushed}");
    let sha1 = git(&work, &["rev-parse", "HEAD"]).trim().to_owned();

    // Job 1 runs; the server dies by SIGKILL in the middle of its build.
    let job = wait_for(&server, 1, &["running"], Duration::from_secs(30));
    assert_eq!(job["sha"], sha1.as_str());
    let events = setup.data().join("jobs/1/events.jsonl");
    let deadline = Instant::now() + Duration::from_secs(300);
    while std::fs::read_to_string(&events).map_or(0, |t| t.lines().count()) < 5 {
        assert!(Instant::now() < deadline, "job 1 made no progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.kill();
    let mut stderrs = vec![server.stderr()];
    assert_eq!(
        sqlite(
            &setup.data().join("kiln.db"),
            "SELECT state FROM jobs WHERE id = 1"
        ),
        "running",
        "the killed server could not mark the job"
    );

    // After the restart, job 1 is requeued and runs again.
    let mut server = Server::start(&setup.config);
    let job = wait_for(&server, 1, &["running"], Duration::from_secs(30));
    assert_eq!(job["attempts"], 2, "{job:#}");

    // A push changing only the child, while job 1 still runs: job 2 waits
    // in the queue, and an SSE client connects before it starts.
    write(&work.join("app/image.toml"), &app("v2"));
    git(&work, &["commit", "-q", "-am", "app: v2"]);
    let pushed = git(&work, &["push", "-q", remote, "main"]);
    assert!(pushed.contains("(HTTP 202)"), "{pushed}");
    let sha2 = git(&work, &["rev-parse", "HEAD"]).trim().to_owned();
    let job2 = get_json(&server.url("/api/jobs/2"));
    assert_eq!(job2["state"], "queued", "{job2:#}");
    assert_eq!(job2["message"], "app: v2");
    let events_url = server.url("/api/jobs/2/events");
    let stream = std::thread::spawn(move || sse(&events_url, None));

    let job1 = wait_end(&server, 1);
    assert_eq!(job1["state"], "succeeded", "{job1:#}");
    let job2 = wait_end(&server, 2);
    assert_eq!(job2["state"], "succeeded", "{job2:#}");

    // Only the child was built again.
    assert_eq!(
        variant(&job2, "base")["status"]["status"],
        "cached",
        "{job2:#}"
    );
    assert_eq!(
        variant(&job2, "app")["status"]["status"],
        "built",
        "{job2:#}"
    );
    assert_eq!(job2["result"]["counts"], "1 built, 1 cached, 0 failed");

    // Every event once, in order, then `end`.
    let streamed = stream.join().expect("SSE thread");
    let (last, data) = streamed.split_last().expect("events");
    assert_eq!(last.1, "end", "{streamed:?}");
    let lines = std::fs::read_to_string(setup.data().join("jobs/2/events.jsonl")).expect("events");
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(data.len(), lines.len(), "one SSE event per stored event");
    for (n, ((id, name, text), line)) in data.iter().zip(&lines).enumerate() {
        assert_eq!(*id, Some(n + 1), "consecutive ids");
        assert_eq!(name, "message");
        assert_eq!(text, line);
    }
    assert!(
        data.iter()
            .any(|(_, _, t)| t.contains("\"build_finished\"")),
        "the stream carries the build's events: {data:?}"
    );
    // A client that reconnects gets only what it missed.
    let tail = sse(&server.url("/api/jobs/2/events"), Some(lines.len() - 3));
    let ids: Vec<_> = tail.iter().map(|e| e.0).collect();
    let n = lines.len();
    assert_eq!(
        ids,
        vec![Some(n - 2), Some(n - 1), Some(n), None],
        "{tail:?}"
    );
    assert_eq!(tail[3].1, "end");

    // Artifacts: sizes and digests as the job says; `latest` moved to job 2.
    let artifact = &variant(&job2, "app")["artifacts"][0];
    let name = artifact["name"].as_str().expect("name");
    let (status, bytes) = get(&server.url(artifact["url"].as_str().expect("url")));
    assert_eq!(status, 200);
    assert_eq!(artifact["size"], bytes.len());
    assert_eq!(artifact["sha256"], sha256_hex(&bytes).as_str());
    let old = &variant(&job1, "app")["artifacts"][0];
    assert_ne!(old["sha256"], artifact["sha256"], "v1 and v2 differ");
    let (status, latest) = get(&server.url(&format!("/artifacts/images/main/latest/app/{name}")));
    assert_eq!(status, 200);
    assert_eq!(sha256_hex(&latest), sha256_hex(&bytes), "latest is job 2");
    let image = setup.root().join(name);
    std::fs::write(&image, &bytes).expect("write");
    let cat = Command::new("unsquashfs")
        .arg("-cat")
        .arg(&image)
        .arg("etc/app.conf")
        .output()
        .expect("unsquashfs");
    assert_eq!(String::from_utf8_lossy(&cat.stdout), "v2\n");
    assert_eq!(
        get(&server.url("/artifacts/images/main/latest/app/../../x")).0,
        404
    );
    // A job's artifacts are also a boot root: its whole manifest, a menu
    // (nothing here boots: no netboot variant, no raw disk), its files
    // with ranges, under `/boot/REPO/JOB/` and `/boot/REPO/BRANCH/latest/`.
    let kept: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(setup.data().join("artifacts/images/2/manifest.json"))
            .expect("the job's manifest"),
    )
    .expect("JSON");
    let kept: Vec<&str> = kept["variants"]
        .as_array()
        .expect("variants")
        .iter()
        .filter_map(|v| v["variant"].as_str())
        .collect();
    assert_eq!(kept, ["app", "base"]);
    let (status, menu) = get(&server.url("/boot/images/2/menu.ipxe"));
    assert_eq!(status, 200);
    assert!(
        String::from_utf8_lossy(&menu).starts_with("#!ipxe\necho kiln: nothing here boots"),
        "{}",
        String::from_utf8_lossy(&menu)
    );
    let ranged = Command::new("curl")
        .args(["-sf", "-r", "0-15"])
        .arg(server.url(&format!("/boot/images/main/latest/files/app/{name}")))
        .output()
        .expect("curl");
    assert!(ranged.status.success(), "{ranged:?}");
    assert_eq!(ranged.stdout, &bytes[..16], "a range of job 2's file");
    for (path, status) in [
        ("/boot/images/9/menu.ipxe", 404),
        ("/boot/images/main/files/app/x", 404),
        ("/boot/images/2/app.ipxe", 404),
        ("/boot/images/2/files/app/../../1/manifest.json", 404),
    ] {
        let (code, body) = crate::netboot::get_path(&format!("127.0.0.1:{port}"), path);
        assert_eq!(code, status, "{path}: {body}");
        assert!(body.starts_with("{\"error\":"), "{path}: {body}");
    }

    // Commit statuses: pending, then success, with sha, target_url and the
    // token; the one answered 500 was sent again and the log says so.
    let service = format!("http://127.0.0.1:{port}");
    for (sha, job, description) in [
        (&sha1, 1, None),
        (&sha2, 2, Some("1 built, 1 cached, 0 failed")),
    ] {
        let statuses = forge.statuses(sha);
        let sent: Vec<_> = statuses.iter().map(|s| s.body["state"].clone()).collect();
        assert_eq!(sent.first(), Some(&"pending".into()), "{statuses:?}");
        assert_eq!(sent.last(), Some(&"success".into()), "{statuses:?}");
        for s in &statuses {
            assert_eq!(s.authorization, format!("Bearer {FORGE_TOKEN}"));
            assert_eq!(s.body["context"], "kiln");
            assert_eq!(s.body["target_url"], format!("{service}/jobs/{job}"));
        }
        if let Some(d) = description {
            assert_eq!(statuses.last().expect("status").body["description"], d);
        }
    }
    assert_eq!(*forge.failures.lock().expect("lock"), 1);
    let log1 = String::from_utf8_lossy(&get(&server.url("/api/jobs/1/log")).1).into_owned();
    assert!(
        log1.contains("attempt 1 of 4") && log1.contains("trying again"),
        "the failed status is in the log:\n{log1}"
    );

    // The API: writes need a token; a manual build of main is all cached.
    let (status, answer) = post(
        &server.url("/api/jobs"),
        &[("Content-Type", "application/json")],
        br#"{"repo":"images","ref":"main"}"#,
    );
    assert_eq!(status, 401, "{answer}");
    assert!(answer["error"].is_string(), "{answer}");
    let (status, _) = post(
        &server.url("/api/jobs"),
        &[("Authorization", "Bearer not-a-token")],
        br#"{"repo":"images","ref":"main"}"#,
    );
    assert_eq!(status, 401);
    let created = crate::kiln(
        setup.root(),
        &["serve", "--config", "serve.toml", "token", "create", "ci"],
    );
    assert_eq!(created.code, 0, "{}", created.stderr);
    let token = created.stdout.trim().to_owned();
    assert!(token.len() >= 32, "{token}");
    let auth = format!("Bearer {token}");
    let (status, answer) = post(
        &server.url("/api/jobs"),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        br#"{"repo":"images","ref":"main"}"#,
    );
    assert_eq!(status, 202, "{answer}");
    let id = answer["job"].as_i64().expect("job id");
    let job3 = wait_end(&server, id);
    assert_eq!(
        job3["result"]["counts"], "0 built, 2 cached, 0 failed",
        "{job3:#}"
    );
    assert_eq!(job3["sha"], sha2.as_str());
    let listed = get_json(&server.url("/api/jobs?repo=images&state=succeeded"));
    assert_eq!(
        listed["jobs"].as_array().map(Vec::len),
        Some(3),
        "{listed:#}"
    );
    let metrics = String::from_utf8_lossy(&get(&server.url("/metrics")).1).into_owned();
    assert!(
        metrics.contains("kiln_jobs{state=\"succeeded\"} 3"),
        "{metrics}"
    );
    // The token is stored hashed.
    let stored = sqlite(&setup.data().join("kiln.db"), "SELECT hash FROM tokens");
    assert!(!stored.contains(&token) && !stored.is_empty(), "{stored}");

    // SIGTERM during a build (`shutdown = "cancel"`): its script is
    // stopped, the job is marked interrupted, the server exits 0; the next
    // start runs the job again.
    push_app("v3", "sleep 10", "app: v3, slowly");
    let id4 = id + 1;
    wait_for(&server, id4, &["running"], Duration::from_secs(30));
    wait_for_run_step(&setup, id4);
    // A page following the job's stream does not hold the shutdown up.
    let events_url = server.url(&format!("/api/jobs/{id4}/events"));
    let watcher = std::thread::spawn(move || sse(&events_url, None));
    std::thread::sleep(Duration::from_millis(300));
    let stopping = Instant::now();
    assert_eq!(server.terminate(), Some(0), "{}", server.stderr());
    let _ = watcher.join();
    assert!(
        stopping.elapsed() < Duration::from_secs(8),
        "the script was stopped, not waited for"
    );
    stderrs.push(server.stderr());
    assert_eq!(
        sqlite(
            &setup.data().join("kiln.db"),
            &format!("SELECT state FROM jobs WHERE id = {id4}")
        ),
        "interrupted"
    );
    let mut server = Server::start(&setup.config);
    let job4 = wait_end(&server, id4);
    assert_eq!(job4["state"], "succeeded", "{job4:#}");
    assert_eq!(job4["attempts"], 2);

    // Retention: the two newest finished jobs keep their artifacts, older
    // ones lose theirs but stay in the history; `latest` is job 4.
    let artifacts = setup.data().join("artifacts/images");
    assert!(!artifacts.join("1").exists() && !artifacts.join("2").exists());
    assert!(
        artifacts
            .join(id4.to_string())
            .join("app")
            .join(name)
            .is_file()
    );
    assert_eq!(
        get(&server.url(&format!("/artifacts/images/2/app/{name}"))).0,
        404
    );
    assert_eq!(get_json(&server.url("/api/jobs/1"))["state"], "succeeded");
    assert_latest_is(&server, name, &job4);

    // Retry (with the token): a new job of the same commit, all cached.
    let retry = |id: i64| {
        post(
            &server.url(&format!("/api/jobs/{id}/retry")),
            &[("Authorization", &auth)],
            b"",
        )
    };
    assert_eq!(retry(id4).0, 202);
    let id5 = id4 + 1;
    let job5 = wait_end(&server, id5);
    assert_eq!(job5["sha"], job4["sha"]);
    assert_eq!(
        job5["result"]["counts"], "0 built, 2 cached, 0 failed",
        "{job5:#}"
    );
    assert_eq!(retry(999).0, 404);

    // A failing child: the job fails, statuses `failure` for `kiln` (with
    // the counts) and for `kiln/app`.
    let sha6 = push_app("v5", "exit 3", "app: broken");
    let id6 = id5 + 1;
    let job6 = wait_end(&server, id6);
    assert_eq!(job6["state"], "failed", "{job6:#}");
    assert_eq!(variant(&job6, "app")["status"]["status"], "failed");
    let deadline = Instant::now() + Duration::from_secs(30);
    let failure = |context: &str| {
        forge
            .statuses(&sha6)
            .into_iter()
            .find(|s| s.body["context"] == context && s.body["state"] == "failure")
    };
    while (failure("kiln").is_none() || failure("kiln/app").is_none()) && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let kiln_status = failure("kiln").expect("a `kiln` failure status");
    assert_eq!(
        kiln_status.body["description"],
        "0 built, 1 cached, 1 failed"
    );
    assert!(failure("kiln/app").is_some(), "{:?}", forge.statuses(&sha6));
    assert_eq!(retry(id6).0, 202, "a failed job can be retried");
    let id7 = id6 + 1;
    assert_eq!(wait_end(&server, id7)["state"], "failed");
    // `latest` stays at the last success.
    assert_latest_is(&server, name, &job5);

    // Cancel a running build: its script is stopped, the job is
    // `cancelled`, the status `error`; cancelling it again is a conflict.
    let sha8 = push_app("v8", "sleep 120", "app: slow");
    let id8 = id7 + 1;
    wait_for(&server, id8, &["running"], Duration::from_secs(30));
    assert_eq!(retry(id8).0, 409, "a running job is not retried");
    wait_for_run_step(&setup, id8);
    let cancel_url = server.url(&format!("/api/jobs/{id8}/cancel"));
    assert_eq!(post(&cancel_url, &[], b"").0, 401);
    assert_eq!(post(&cancel_url, &[("Authorization", &auth)], b"").0, 202);
    let job8 = wait_for(
        &server,
        id8,
        &["cancelled", "succeeded", "failed"],
        Duration::from_secs(20),
    );
    assert_eq!(job8["state"], "cancelled", "{job8:#}");
    assert_eq!(post(&cancel_url, &[("Authorization", &auth)], b"").0, 409);
    forge.wait_for_last(&sha8, "error");
    let status = get_json(&server.url("/api/status"));
    assert!(status.is_object(), "{status}");
    assert_eq!(
        String::from_utf8_lossy(&get(&server.url("/healthz")).1),
        "ok\n"
    );

    // `shutdown = "wait"`: SIGTERM lets the running build finish, then
    // the server exits 0.
    assert_eq!(server.terminate(), Some(0), "{}", server.stderr());
    stderrs.push(server.stderr());
    let toml = std::fs::read_to_string(&setup.config).expect("read");
    let configure = |line: &str| {
        std::fs::write(
            &setup.config,
            toml.replace("keep_jobs = 2", &format!("keep_jobs = 2\n{line}")),
        )
        .expect("write");
    };
    configure("shutdown = \"wait\"");
    let mut server = Server::start(&setup.config);
    push_app("v9", "sleep 3", "app: waited for");
    let id9 = id8 + 1;
    wait_for(&server, id9, &["running"], Duration::from_secs(30));
    wait_for_run_step(&setup, id9);
    assert_eq!(server.terminate(), Some(0), "{}", server.stderr());
    stderrs.push(server.stderr());
    let db = setup.data().join("kiln.db");
    assert_eq!(
        sqlite(&db, &format!("SELECT state FROM jobs WHERE id = {id9}")),
        "succeeded"
    );

    // `timeout`: a build over it is stopped, `timed-out`, status `error`.
    configure("timeout = \"2s\"");
    let mut server = Server::start(&setup.config);
    let sha10 = push_app("v10", "sleep 60", "app: too slow");
    let id10 = id9 + 1;
    let job10 = wait_for(
        &server,
        id10,
        &["timed-out", "succeeded", "failed"],
        Duration::from_secs(60),
    );
    assert_eq!(job10["state"], "timed-out", "{job10:#}");
    forge.wait_for_last(&sha10, "error");

    // SIGTERM: exit 0.
    assert_eq!(server.terminate(), Some(0), "{}", server.stderr());
    stderrs.push(server.stderr());

    // No secret, forge token or API token in any log.
    let mut written: Vec<_> = stderrs
        .into_iter()
        .map(|s| ("server stderr".to_owned(), s))
        .collect();
    for entry in std::fs::read_dir(setup.data().join("jobs")).expect("jobs") {
        let dir = entry.expect("entry").path();
        for file in ["log.txt", "events.jsonl"] {
            let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
            written.push((dir.join(file).display().to_string(), text));
        }
    }
    for (what, text) in &written {
        for secret in [SECRET, FORGE_TOKEN, token.as_str()] {
            assert!(!text.contains(secret), "{what} contains a secret");
        }
    }
}

/// A GitHub `push` payload in the shape of GitHub's documentation.
fn push_payload(repo: &str, branch: &str, sha: &str, message: &str) -> Vec<u8> {
    serde_json::json!({
        "ref": format!("refs/heads/{branch}"),
        "before": "0000000000000000000000000000000000000000",
        "after": sha,
        "created": true,
        "deleted": false,
        "forced": false,
        "commits": [],
        "head_commit": {
            "id": sha,
            "message": message,
            "timestamp": "2026-12-05T10:00:00Z",
            "author": { "name": "Ada", "email": "ada@example.org" },
        },
        "repository": { "id": 1, "name": repo, "full_name": format!("acme/{repo}") },
        "pusher": { "name": "ada" },
    })
    .to_string()
    .into_bytes()
}

fn signature(body: &[u8]) -> String {
    format!(
        "sha256={}",
        kiln_serve::hooks::sign(SECRET.as_bytes(), body)
    )
}

/// Posts a GitHub delivery: status and answer.
fn deliver(
    server: &Server,
    event: &str,
    delivery: &str,
    signature: Option<&str>,
    body: &[u8],
) -> (u16, serde_json::Value) {
    let mut headers = vec![
        ("Content-Type", "application/json"),
        ("X-GitHub-Event", event),
        ("X-GitHub-Delivery", delivery),
    ];
    if let Some(s) = signature {
        headers.push(("X-Hub-Signature-256", s));
    }
    post(&server.url("/hooks/github"), &headers, body)
}

/// A delivery of the bad-input test: what it is, event, signature, body,
/// the status expected.
type Case<'a> = (&'a str, &'a str, Option<String>, Vec<u8>, u16);

const SHA: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";

#[test]
fn bad_webhooks_are_refused_with_the_right_status_and_nothing_is_queued() {
    if !have("sqlite3") {
        return;
    }
    let setup = Setup::new(free_port(), None, "");
    let server = Server::start(&setup.config);
    let db = setup.data().join("kiln.db");
    let good = push_payload("images", "main", SHA, "[skip kiln] docs");
    let other = push_payload("images", "main", SHA, "something else");

    let cases: Vec<Case> = vec![
        (
            "wrong signature",
            "push",
            Some(format!("sha256={}", "0".repeat(64))),
            good.clone(),
            401,
        ),
        ("missing signature", "push", None, good.clone(), 401),
        (
            "signature of another body",
            "push",
            Some(signature(&other)),
            good.clone(),
            401,
        ),
        (
            "not hex",
            "push",
            Some("sha256=zz".into()),
            good.clone(),
            401,
        ),
        (
            "malformed JSON",
            "push",
            Some(signature(b"{\"ref\": ")),
            b"{\"ref\": ".to_vec(),
            400,
        ),
        (
            "a push without a repository",
            "push",
            Some(signature(b"{\"ref\":\"refs/heads/main\"}")),
            b"{\"ref\":\"refs/heads/main\"}".to_vec(),
            400,
        ),
    ];
    for (n, (what, event, sig, body, want)) in cases.iter().enumerate() {
        let (status, answer) = deliver(&server, event, &format!("bad-{n}"), sig.as_deref(), body);
        assert_eq!(status, *want, "{what}: {answer}");
        assert!(
            answer["error"].is_string(),
            "{what}: a JSON error: {answer}"
        );
    }
    assert_eq!(sqlite(&db, "SELECT count(*) FROM jobs"), "0");
    assert_eq!(
        sqlite(&db, "SELECT count(*) FROM deliveries"),
        "0",
        "refused deliveries are not stored"
    );

    // Accepted without a job, with the reason.
    let unknown_repo = push_payload("elsewhere", "main", SHA, "x");
    let untracked = push_payload("images", "feature/x", SHA, "x");
    let deleted = serde_json::json!({
        "ref": "refs/heads/main", "before": SHA,
        "after": "0000000000000000000000000000000000000000", "deleted": true,
        "repository": { "name": "images", "full_name": "acme/images" },
    })
    .to_string()
    .into_bytes();
    for (what, event, body, reason) in [
        (
            "an unknown event",
            "issues",
            b"{}".to_vec(),
            "`issues` events are not built",
        ),
        (
            "an unknown repository",
            "push",
            unknown_repo,
            "repository `acme/elsewhere` is not tracked",
        ),
        (
            "an untracked branch",
            "push",
            untracked,
            "branch `feature/x` is not tracked",
        ),
        (
            "a deleted branch",
            "push",
            deleted,
            "branch `main` was deleted",
        ),
    ] {
        let (status, answer) = deliver(&server, event, what, Some(&signature(&body)), &body);
        assert_eq!(status, 202, "{what}: {answer}");
        assert_eq!(answer["job"], serde_json::Value::Null, "{what}: {answer}");
        assert!(
            answer["reason"]
                .as_str()
                .is_some_and(|r| r.contains(reason)),
            "{what}: {answer}"
        );
    }
    let (status, _) = deliver(&server, "ping", "ping-1", Some(&signature(b"{}")), b"{}");
    assert_eq!(status, 200);
    assert_eq!(sqlite(&db, "SELECT count(*) FROM jobs"), "0");

    // Oversized: refused from the Content-Length alone, before the body.
    let mut stream = TcpStream::connect(&server.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "POST /hooks/github HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nX-GitHub-Event: push\r\nX-Hub-Signature-256: sha256={}\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        server.addr,
        "0".repeat(64),
        26 << 20
    )
    .expect("send");
    let mut status_line = String::new();
    BufReader::new(&stream)
        .read_line(&mut status_line)
        .expect("an answer");
    assert!(status_line.contains(" 413 "), "{status_line}");

    // A signed push is a job once, however often it is delivered; Gitea's
    // hex signature header works the same.
    let (status, first) = deliver(&server, "push", "d-1", Some(&signature(&good)), &good);
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["duplicate"], false);
    let (status, again) = deliver(&server, "push", "d-1", Some(&signature(&good)), &good);
    assert_eq!(status, 202);
    assert_eq!(again["job"], first["job"]);
    assert_eq!(again["duplicate"], true);
    let (status, gitea) = post(
        &server.url("/hooks/gitea"),
        &[
            ("X-Gitea-Event", "push"),
            ("X-Gitea-Delivery", "g-1"),
            (
                "X-Gitea-Signature",
                &kiln_serve::hooks::sign(SECRET.as_bytes(), &good),
            ),
        ],
        &good,
    );
    assert_eq!(status, 202, "{gitea}");
    assert_ne!(gitea["job"], first["job"]);
    assert_eq!(sqlite(&db, "SELECT count(*) FROM jobs"), "2");
    assert_eq!(
        sqlite(&db, "SELECT DISTINCT state FROM jobs"),
        "skipped",
        "`[skip kiln]` records a skipped job"
    );
    let (status, answer) = deliver(&server, "push", "d-2", Some(&signature(&good)), b"{}");
    assert_eq!(status, 401, "the signature of another body: {answer}");
    // Unknown jobs are JSON 404s.
    let (status, body) = get(&server.url("/api/jobs/999"));
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("job `999` does not exist"));
    assert!(!server.stderr().contains(SECRET));
}

#[test]
fn a_config_error_names_its_place_and_exits_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(
        &dir.path().join("serve.toml"),
        "data_dir = \"data\"\nworkers = 1\n\n[[repos]]\nname = \"images\"\nurl = \"file:///srv/images.git\"\nbranches = [\"main\"]\n",
    );
    let run = crate::kiln(dir.path(), &["serve", "--config", "serve.toml"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    crate::filters().bind(|| insta::assert_snapshot!("serve_config_unsigned", run.stderr));
    write(
        &dir.path().join("serve.toml"),
        "data_dir = \"data\"\ntimeout = \"soon\"\n",
    );
    let run = crate::kiln(dir.path(), &["serve", "--config", "serve.toml"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    crate::filters().bind(|| insta::assert_snapshot!("serve_config_timeout", run.stderr));
    assert!(!dir.path().join("data").exists(), "nothing was written");
}

/// SIGKILL in the middle of a burst of deliveries: every delivery that was
/// answered 202 has exactly one job after the restart, with the id the 202
/// named, and a redelivery finds it.
#[test]
fn every_acknowledged_delivery_survives_a_sigkill_mid_burst_exactly_once() {
    if !have("sqlite3") {
        return;
    }
    let setup = Setup::new(free_port(), None, "");
    let mut server = Server::start(&setup.config);
    let url = server.url("/hooks/github");
    let acked: Arc<Mutex<Vec<(String, i64)>>> = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (url, acked) = (url.clone(), Arc::clone(&acked));
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(5)))
                    .build()
                    .into();
                for i in 0..250 {
                    // One in ten is a redelivery of an earlier one.
                    let n = if i % 10 == 9 { i - 5 } else { i };
                    let delivery = format!("burst-{t}-{n}");
                    let sha = format!("{:040x}", t * 1000 + n + 1);
                    let body = push_payload("images", "main", &sha, "[skip kiln] burst");
                    let answer = agent
                        .post(&url)
                        .header("X-GitHub-Event", "push")
                        .header("X-GitHub-Delivery", &delivery)
                        .header("X-Hub-Signature-256", &signature(&body))
                        .send(&body[..]);
                    let Ok(mut answer) = answer else { break };
                    if answer.status().as_u16() != 202 {
                        break;
                    }
                    let Ok(text) = answer.body_mut().read_to_string() else {
                        break;
                    };
                    let json: serde_json::Value =
                        serde_json::from_str(&text).expect("a 202 is JSON");
                    let job = json["job"].as_i64().expect("a job id");
                    acked.lock().expect("lock").push((delivery, job));
                }
            })
        })
        .collect();
    // Kill once the burst is well under way.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().expect("lock").len() < 300 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    server.kill();
    for t in threads {
        t.join().expect("sender");
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() >= 300,
        "the burst was acknowledged: {}",
        acked.len()
    );
    assert!(acked.len() < 2000, "the kill came mid-burst");

    let server = Server::start(&setup.config);
    let db = setup.data().join("kiln.db");
    let stored: std::collections::HashMap<String, i64> =
        sqlite(&db, "SELECT id, job FROM deliveries")
            .lines()
            .filter_map(|l| {
                let (id, job) = l.split_once('|')?;
                Some((id.to_owned(), job.parse().ok()?))
            })
            .collect();
    for (delivery, job) in &acked {
        assert_eq!(stored.get(delivery), Some(job), "delivery {delivery}");
    }
    assert_eq!(
        sqlite(&db, "SELECT count(*) FROM jobs"),
        sqlite(&db, "SELECT count(DISTINCT job) FROM deliveries"),
        "one job per delivery"
    );
    assert_eq!(sqlite(&db, "PRAGMA integrity_check"), "ok");
    // Redeliveries after the restart find the same job.
    for (delivery, job) in acked.iter().step_by(97) {
        let (t, n) = delivery
            .strip_prefix("burst-")
            .and_then(|r| r.split_once('-'))
            .expect("id");
        let (t, n): (u64, u64) = (t.parse().expect("t"), n.parse().expect("n"));
        let body = push_payload(
            "images",
            "main",
            &format!("{:040x}", t * 1000 + n + 1),
            "[skip kiln] burst",
        );
        let (status, answer) = deliver(&server, "push", delivery, Some(&signature(&body)), &body);
        assert_eq!(status, 202);
        assert_eq!(answer["job"], *job);
        assert_eq!(answer["duplicate"], true);
    }
}
