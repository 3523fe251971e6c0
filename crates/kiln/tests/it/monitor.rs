//! The web monitor in a real browser: Debian's `chromium` driven through
//! `chromedriver` (WebDriver, with `fantoccini`) against the real
//! `kiln serve` on loopback building a real tree pushed with git.
//!
//! It writes screenshots of the dashboard and a job page (desktop and
//! phone widths) to `docs/monitor/`, which the README shows.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::serve::{
    Server, Setup, free_port, get, get_json, git, sha256_hex, wait_end, wait_for, write,
};
use crate::{have, skip_end_to_end};

/// `chromedriver` on a loopback port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Self {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        let driver = Self { child, url };
        let deadline = Instant::now() + Duration::from_secs(30);
        while get_status(&format!("{}/status", driver.url)) != Some(200) {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        driver
    }
}

fn get_status(url: &str) -> Option<u16> {
    crate::serve::agent()
        .get(url)
        .call()
        .ok()
        .map(|r| r.status().as_u16())
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session; `javascript: false` turns scripts off.
async fn browser(driver: &Driver, profile: &Path, javascript: bool) -> Client {
    let mut options = json!({
        "binary": "/usr/bin/chromium",
        "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=1280,900", "--no-first-run", "--disable-extensions",
            format!("--user-data-dir={}", profile.display()),
        ],
    });
    if !javascript {
        options["prefs"] = json!({ "profile.managed_default_content_settings.javascript": 2 });
    }
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), options);
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

/// Runs `script` in the page; its value.
async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, Vec::new()).await.expect("script runs")
}

/// Waits until `script` returns `true`, or panics with `what`.
async fn until(c: &Client, script: &str, what: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        if js(c, script).await == Value::Bool(true) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The strings an array-returning `script` gives.
async fn strings(c: &Client, script: &str) -> Vec<String> {
    js(c, script)
        .await
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// The log lines' event ids on the page.
async fn line_ids(c: &Client) -> Vec<u64> {
    let v = js(
        c,
        "return Array.from(document.querySelectorAll('#log .line')).map(l => +l.dataset.id)",
    )
    .await;
    v.as_array()
        .expect("ids")
        .iter()
        .map(|n| n.as_u64().expect("id"))
        .collect()
}

fn assert_unique_and_ordered(ids: &[u64], when: &str) {
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "{when}: log lines repeat or are out of order: {ids:?}"
    );
}

async fn screenshot(c: &Client, dir: &Path, name: &str, width: u32, height: u32) {
    c.set_window_size(width, height).await.expect("resize");
    js(c, "document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0); return true").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let png = c.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "{name} is a PNG");
    std::fs::write(dir.join(name), png).expect("write screenshot");
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/monitor");
    std::fs::create_dir_all(&dir).expect("docs/monitor");
    dir
}

#[test]
fn the_monitor_follows_a_build_live_in_chromium_and_works_without_javascript() {
    if skip_end_to_end() || !have("chromium") || !have("chromedriver") || !have("curl") {
        return;
    }
    let setup = Setup::new(free_port(), None, "");
    let mut server = Server::start(&setup.config);
    setup.install_hook(&server);
    let driver = Driver::start();

    // A Debian base and an app whose `run` script writes coloured lines
    // for a while, so the page can be watched mid-build.
    let work = setup.image_repo();
    let app = |script: &str| {
        format!(
            "from = \"base\"\noutputs = [\"squashfs\"]\nfiles = [{{ path = \"/etc/app.conf\", content = \"v1\\n\" }}]\nrun = [{{ name = \"setup\", inline = \"{script}\" }}]\n"
        )
    };
    write(
        &work.join("app/image.toml"),
        &app(
            "for i in $(seq 1 60); do printf '\\\\033[32mline %s\\\\033[0m <ok>\\\\n' $i; sleep 0.25; done",
        ),
    );
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "Base and a slow app"]);
    let remote = setup.bare();
    let remote = remote.to_str().expect("utf-8");
    git(&work, &["push", "-q", remote, "main"]);
    let sha1 = git(&work, &["rev-parse", "HEAD"]).trim().to_owned();
    wait_for(&server, 1, &["running"], Duration::from_secs(30));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let profiles = tempfile::tempdir().expect("profiles");
    let shots = screenshots();
    let c = rt.block_on(browser(&driver, &profiles.path().join("js"), true));
    let result = rt.block_on(async {
        // The job page while it runs: lines stream in, the app's node runs.
        c.goto(&server.url("/jobs/1")).await.expect("job page");
        until(
            &c,
            "return Array.from(document.querySelectorAll('#log .line')).some(l => l.textContent.includes('line 3 <ok>'))",
            "the run script's lines stream into the log",
            Duration::from_secs(600),
        )
        .await;
        assert_eq!(get_json(&server.url("/api/jobs/1"))["state"], "running");
        // ANSI colours are spans, `<ok>` is text.
        assert_eq!(
            js(&c, "return !!document.querySelector('#log .line span.ansi-fg2')").await,
            true
        );
        until(
            &c,
            "return document.querySelector('#live').dataset.state === 'live'",
            "the page says it is live",
            Duration::from_secs(10),
        )
        .await;
        until(
            &c,
            "const n = document.querySelector('svg.graph g.node[data-variant=app]'); return !!n && n.dataset.state === 'running'",
            "the app's graph node is running",
            Duration::from_secs(20),
        )
        .await;
        let base = js(&c, "return document.querySelector('svg.graph g.node[data-variant=base]').dataset.state").await;
        assert!(base == "built" || base == "cached", "base is {base}");
        let before = line_ids(&c).await;
        assert_unique_and_ordered(&before, "while streaming");

        // Reloading mid-build shows every line once.
        c.refresh().await.expect("reload");
        until(
            &c,
            &format!("return document.querySelectorAll('#log .line').length > {}", before.len() + 3),
            "lines keep coming after a reload",
            Duration::from_secs(60),
        )
        .await;
        assert_unique_and_ordered(&line_ids(&c).await, "after a reload");
        screenshot(&c, &shots, "job-running-desktop.png", 1280, 1000).await;
        c.goto(&server.url("/")).await.expect("dashboard");
        assert_eq!(
            js(&c, "return document.querySelector('.cards .card h3 a').textContent").await,
            "#1"
        );
        assert_eq!(js(&c, "return !!document.querySelector('.cards .card progress')").await, true);
        let now = js(&c, "return document.querySelector('.cards .card .now').textContent").await;
        assert!(now.as_str().is_some_and(|t| t.contains("app") && t.contains("provision:run:setup")), "{now}");
        screenshot(&c, &shots, "dashboard-desktop.png", 1280, 900).await;
        screenshot(&c, &shots, "dashboard-phone.png", 390, 844).await;
        c.set_window_size(1280, 900).await.expect("resize");

        // The stream drops (the server dies): the page says so, and
        // resumes with Last-Event-ID after the restart without repeating
        // a line.
        c.goto(&server.url("/jobs/1")).await.expect("job page");
        until(&c, "return document.querySelector('#live').dataset.state === 'live'", "live again", Duration::from_secs(10)).await;
        server.kill();
        until(
            &c,
            "return document.querySelector('#live').dataset.state === 'reconnecting' && document.querySelector('#live').textContent.includes('Reconnecting')",
            "the page says it is reconnecting",
            Duration::from_secs(20),
        )
        .await;
        let cut = line_ids(&c).await;
        server = Server::start(&setup.config);
        until(
            &c,
            &format!("return document.querySelectorAll('#log .line').length > {} && document.querySelector('#live').dataset.state !== 'reconnecting'", cut.len() + 3),
            "lines come again after the restart",
            Duration::from_secs(120),
        )
        .await;
        let resumed = line_ids(&c).await;
        assert_unique_and_ordered(&resumed, "after reconnecting");
        assert_eq!(resumed[..cut.len()], cut[..], "the lines before the cut stay");

        // The job ends; the page reloads itself with the final state.
        let job = wait_end(&server, 1);
        assert_eq!(job["state"], "succeeded", "{job:#}");
        until(
            &c,
            "return document.querySelector('#live').dataset.state === 'ended' && !!document.querySelector('table.artifacts')",
            "the page shows the ended job",
            Duration::from_secs(30),
        )
        .await;
        let nodes = strings(&c, "return Array.from(document.querySelectorAll('svg.graph g.node')).map(n => n.dataset.variant + '=' + n.dataset.state)").await;
        let has = |n: &str| nodes.iter().any(|x| x == n);
        assert!(nodes.len() == 2 && has("app=built"), "{nodes:?}");
        assert!(has("base=built") || has("base=cached"), "{nodes:?}");
        // One timeline row per variant, each with its bars.
        let rows = strings(&c, "return Array.from(document.querySelectorAll('svg.timeline g.row')).map(r => r.dataset.variant + ':' + r.querySelectorAll('rect.bar').length)").await;
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert!(rows.iter().all(|r| !r.ends_with(":0")), "{rows:?}");
        assert_unique_and_ordered(&line_ids(&c).await, "after the end");
        screenshot(&c, &shots, "job-desktop.png", 1280, 1400).await;
        screenshot(&c, &shots, "job-phone.png", 390, 844).await;
        c.set_window_size(1280, 900).await.expect("resize");
        // The log filter shows only the chosen variant.
        c.find(Locator::Css("#log-filter option[value=base]")).await.expect("option").click().await.expect("choose");
        until(&c, "return Array.from(document.querySelectorAll('#log .line')).filter(l => !l.hidden).every(l => l.dataset.variant === 'base')", "only base's lines show", Duration::from_secs(5)).await;
        // Artifact links download the right bytes.
        let artifacts = js(&c, "return Array.from(document.querySelectorAll('table.artifacts tbody tr')).map(r => [r.querySelector('a').href, r.querySelector('code.sha').textContent])").await;
        let artifacts = artifacts.as_array().expect("artifacts").clone();
        assert!(!artifacts.is_empty(), "no artifacts listed");
        for a in &artifacts {
            let (url, sha) = (a[0].as_str().expect("url"), a[1].as_str().expect("sha"));
            let (status, bytes) = get(url);
            assert_eq!(status, 200, "{url}");
            assert_eq!(sha256_hex(&bytes), sha, "{url}");
        }
        let manifest = strings(&c, "return [...document.querySelectorAll('p.links a')].map(a => a.href)").await;
        assert!(manifest.iter().any(|u| u.ends_with("/app/manifest.json")), "{manifest:?}");
        for u in &manifest {
            let (status, body) = get(u);
            assert_eq!(status, 200);
            serde_json::from_slice::<Value>(&body).expect("manifest and SBOM are JSON");
        }

        // A failing commit, then the history and its filters.
        write(&work.join("app/image.toml"), &app("echo broken; exit 3"));
        git(&work, &["commit", "-q", "-am", "Break the app"]);
        git(&work, &["push", "-q", remote, "main"]);
        let job2 = wait_end(&server, 2);
        assert_eq!(job2["state"], "failed");
        c.goto(&server.url("/jobs")).await.expect("history");
        let listed = |c: &Client| {
            let c = c.clone();
            async move {
                let v = js(&c, "return Array.from(document.querySelectorAll('table.jobs tbody tr[data-job]')).map(r => +r.dataset.job)").await;
                v.as_array().expect("rows").iter().filter_map(Value::as_i64).collect::<Vec<_>>()
            }
        };
        assert_eq!(listed(&c).await, [2, 1]);
        c.find(Locator::Css("select[name=state] option[value=failed]")).await.expect("option").click().await.expect("choose");
        c.find(Locator::Css("form.filters button[type=submit]")).await.expect("button").click().await.expect("submit");
        until(&c, "return location.search.includes('state=failed')", "the filter applies", Duration::from_secs(10)).await;
        assert_eq!(listed(&c).await, [2]);
        c.goto(&server.url(&format!("/jobs?sha={}", &sha1[..7]))).await.expect("search");
        assert_eq!(listed(&c).await, [1]);
        c.goto(&server.url("/jobs?branch=nope")).await.expect("branch");
        assert_eq!(listed(&c).await, Vec::<i64>::new());

        // Retry needs a session: no button without one, a form post
        // without the session's CSRF token is refused.
        c.goto(&server.url("/jobs/2")).await.expect("job 2");
        assert_eq!(js(&c, "return !!document.querySelector('#retry')").await, false);
        let (status, _) = crate::serve::post_form(&server.url("/jobs/2/retry"), &[], "csrf=guess");
        assert_eq!(status, 403);
        let created = crate::kiln(setup.root(), &["serve", "--config", "serve.toml", "token", "create", "browser"]);
        assert_eq!(created.code, 0, "{}", created.stderr);
        c.goto(&server.url("/login?next=/jobs/2")).await.expect("login");
        c.find(Locator::Css("#token")).await.expect("token field").send_keys(created.stdout.trim()).await.expect("type");
        c.find(Locator::Css("form.card button")).await.expect("button").click().await.expect("log in");
        until(&c, "return location.pathname === '/jobs/2' && !!document.querySelector('#retry')", "the retry button shows after login", Duration::from_secs(10)).await;
        c.find(Locator::Css("#retry")).await.expect("retry").click().await.expect("retry");
        until(&c, "return location.pathname === '/jobs/3'", "the retry's job page opens", Duration::from_secs(10)).await;
        assert_eq!(get_json(&server.url("/api/jobs/3"))["reason"], "retry of job 2");

        // A job that does not exist is a 404 page.
        c.goto(&server.url("/jobs/999")).await.expect("404");
        assert_eq!(js(&c, "return document.querySelector('h1').textContent").await, "404 Not Found");
        let (status, body) = get(&server.url("/jobs/999"));
        assert_eq!(status, 404);
        assert!(String::from_utf8_lossy(&body).contains("Job 999 does not exist"));
        let (status, _) = get(&server.url("/no/such/page"));
        assert_eq!(status, 404);

        // Without JavaScript, history and job detail are whole pages.
        let nojs = browser(&driver, &profiles.path().join("nojs"), false).await;
        nojs.goto(&server.url("/jobs?state=succeeded")).await.expect("history");
        assert_eq!(listed(&nojs).await, [1]);
        nojs.goto(&server.url("/jobs/1?variant=app")).await.expect("job");
        let shown = nojs.find(Locator::Css("#filter-button")).await.expect("button").is_displayed().await.expect("displayed");
        assert!(shown, "scripts are off: the Show button is not hidden");
        let lines = strings(&nojs, "return Array.from(document.querySelectorAll('#log .line')).map(l => l.dataset.variant)").await;
        assert!(lines.len() > 10 && lines.iter().all(|v| v == "app"), "{lines:?}");
        assert_eq!(js(&nojs, "return document.querySelectorAll('table.artifacts a[download]').length").await, artifacts.len());
        assert_eq!(js(&nojs, "return document.querySelectorAll('svg.timeline g.row').length").await, 2);
        nojs.close().await.expect("close");
        Ok::<(), String>(())
    });
    let _ = rt.block_on(c.close());
    result.expect("monitor checks");
    let stderr = server.stderr();
    assert!(!stderr.contains("panicked"), "{stderr}");
}
