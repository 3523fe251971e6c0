//! The service's parts without a server: webhook decisions on real
//! payload shapes, `serve.toml` errors, and the SQLite queue.

// Test helpers shaped for readable call sites.
#![allow(clippy::needless_pass_by_value, clippy::unnecessary_wraps)]

use std::path::Path;

use kiln_serve::Config;
use kiln_serve::db::{Db, NewJob};
use kiln_serve::hooks::{self, Decision, Source};

const SECRET: &str = "It's a Secret to Everybody";
const SHA: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";

fn config(dir: &Path, extra: &str) -> Config {
    std::fs::write(dir.join("secret"), format!("{SECRET}\n")).expect("write");
    let path = dir.join("serve.toml");
    std::fs::write(
        &path,
        format!(
            r#"data_dir = "data"
[[repos]]
name = "images"
url = "https://github.com/acme/images.git"
branches = ["main", "release/*"]
secret_file = "secret"
{extra}"#
        ),
    )
    .expect("write");
    Config::load(&path).expect("the config loads")
}

/// A push payload in the shape of GitHub's documentation.
fn push(git_ref: &str, after: &str, message: &str) -> Vec<u8> {
    serde_json::json!({
        "ref": git_ref,
        "before": "0000000000000000000000000000000000000000",
        "after": after,
        "created": false,
        "deleted": after.bytes().all(|b| b == b'0'),
        "forced": false,
        "compare": "https://github.com/acme/images/compare/abc...def",
        "commits": [],
        "head_commit": {
            "id": after,
            "message": message,
            "timestamp": "2026-12-05T10:00:00Z",
            "author": { "name": "Ada", "email": "ada@example.org", "username": "ada" },
        },
        "repository": {
            "id": 1,
            "name": "images",
            "full_name": "acme/images",
            "clone_url": "https://github.com/acme/images.git",
            "html_url": "https://github.com/acme/images",
            "ssh_url": "git@github.com:acme/images.git",
        },
        "pusher": { "name": "ada", "email": "ada@example.org" },
        "sender": { "login": "ada", "id": 2 },
    })
    .to_string()
    .into_bytes()
}

fn github(config: &Config, event: &str, body: &[u8], signature: Option<String>) -> Decision {
    hooks::decide(
        config,
        Source::Github,
        Some(event),
        signature.as_deref(),
        body,
    )
}

fn signed(body: &[u8]) -> Option<String> {
    Some(format!("sha256={}", hooks::sign(SECRET.as_bytes(), body)))
}

#[test]
fn signatures_are_checked_before_anything_else() {
    let t = tempfile::tempdir().expect("tmp");
    let c = config(t.path(), "");
    let body = push("refs/heads/main", SHA, "Update base");
    // GitHub's documented test vector for X-Hub-Signature-256.
    assert_eq!(
        hooks::sign(SECRET.as_bytes(), b"Hello, World!"),
        "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    );
    assert!(matches!(
        github(&c, "push", &body, None),
        Decision::Unauthorized("the delivery is not signed")
    ));
    let wrong = Some(format!("sha256={}", hooks::sign(b"another secret", &body)));
    assert!(matches!(
        github(&c, "push", &body, wrong),
        Decision::Unauthorized(_)
    ));
    let other_body = signed(&push("refs/heads/main", SHA, "Another message"));
    assert!(matches!(
        github(&c, "push", &body, other_body),
        Decision::Unauthorized(_)
    ));
    // Gitea's header is bare hex; GitHub's needs its `sha256=` prefix.
    let bare = Some(hooks::sign(SECRET.as_bytes(), &body));
    assert!(matches!(
        github(&c, "push", &body, bare.clone()),
        Decision::Unauthorized(_)
    ));
    assert!(matches!(
        hooks::decide(&c, Source::Gitea, Some("push"), bare.as_deref(), &body),
        Decision::Job(_)
    ));
    // Garbage that is signed is a bad request, not a crash; unsigned
    // garbage never reaches the parser.
    let junk = b"{\"ref\": [1, 2".to_vec();
    assert!(matches!(
        github(&c, "push", &junk, signed(&junk)),
        Decision::BadRequest(m) if m.starts_with("not a push payload")
    ));
    assert!(matches!(
        github(&c, "push", &junk, None),
        Decision::Unauthorized(_)
    ));
}

#[test]
fn a_push_to_a_tracked_branch_is_a_job_and_the_rest_say_why_not() {
    let t = tempfile::tempdir().expect("tmp");
    let c = config(t.path(), "");
    let body = push("refs/heads/main", SHA, "Update base\n\nlonger text");
    let Decision::Job(job) = github(&c, "push", &body, signed(&body)) else {
        panic!("a push to main is a job");
    };
    assert_eq!(
        (
            job.repo.as_str(),
            job.branch.as_str(),
            job.sha.as_str(),
            job.full_name.as_str(),
            job.author.as_str(),
            job.state
        ),
        ("images", "main", SHA, "acme/images", "Ada", "queued")
    );
    let release = push("refs/heads/release/2026.12", SHA, "x");
    assert!(matches!(
        github(&c, "push", &release, signed(&release)),
        Decision::Job(j) if j.branch == "release/2026.12"
    ));
    let ping = br#"{"zen": "Keep it logically awesome.", "hook_id": 1}"#;
    assert_eq!(github(&c, "ping", ping, signed(ping)), Decision::Pong);
    let reason = |d: Decision| match d {
        Decision::Ignored(r) => r,
        other => panic!("expected a reason, got {other:?}"),
    };
    let topic = push("refs/heads/topic", SHA, "x");
    assert_eq!(
        reason(github(&c, "push", &topic, signed(&topic))),
        "branch `topic` is not tracked (branches: main, release/*)"
    );
    let deleted = push("refs/heads/main", &"0".repeat(40), "x");
    assert_eq!(
        reason(github(&c, "push", &deleted, signed(&deleted))),
        "branch `main` was deleted"
    );
    let tag = push("refs/tags/v1", SHA, "x");
    assert_eq!(
        reason(github(&c, "push", &tag, signed(&tag))),
        "`refs/tags/v1` is not a branch"
    );
    assert_eq!(
        reason(github(&c, "issues", &body, signed(&body))),
        "`issues` events are not built"
    );
    let other = String::from_utf8(body.clone())
        .expect("utf-8")
        .replace("acme/images", "acme/other")
        .replace("\"images\"", "\"other\"");
    assert_eq!(
        reason(github(
            &c,
            "push",
            other.as_bytes(),
            signed(other.as_bytes())
        )),
        "repository `acme/other` is not tracked"
    );
    let short = push("refs/heads/main", "abc", "x");
    assert!(matches!(
        github(&c, "push", &short, signed(&short)),
        Decision::BadRequest(m) if m.contains("`after` is not a commit id")
    ));
}

#[test]
fn skip_rules_come_from_the_head_commit_message() {
    let t = tempfile::tempdir().expect("tmp");
    let c = config(t.path(), "");
    for (message, state, skip) in [
        ("Fix typo [skip kiln]", "skipped", ""),
        ("CI:DOCS README only", "skipped", ""),
        (
            "Tune the app\n\nKiln-Skip: netboot cloud-arm\nkiln-skip: tiny",
            "queued",
            "netboot cloud-arm tiny",
        ),
        ("Kiln-Skip in the subject is no trailer", "queued", ""),
    ] {
        let body = push("refs/heads/main", SHA, message);
        let Decision::Job(job) = github(&c, "push", &body, signed(&body)) else {
            panic!("{message:?} is a job");
        };
        assert_eq!((job.state, job.skip.as_str()), (state, skip), "{message:?}");
    }
}

#[test]
fn a_repository_without_a_secret_is_refused_at_its_line() {
    let t = tempfile::tempdir().expect("tmp");
    let path = t.path().join("serve.toml");
    let load = |text: &str| {
        std::fs::write(&path, text).expect("write");
        Config::load(&path)
            .expect_err("refused")
            .to_string()
            .replace(&t.path().display().to_string(), "$DIR")
    };
    assert_eq!(
        load("data_dir = \"d\"\n\n[[repos]]\nname = \"a\"\nurl = \"file:///a.git\"\n"),
        "$DIR/serve.toml:3:1: repository `a` has no `secret_file`: anyone could trigger its builds\n  help: set `secret_file` to a file holding the webhook secret, or `allow_unsigned = true` on a trusted network"
    );
    assert_eq!(
        load("data_dir = \"d\"\nlisten = \"localhost\"\n"),
        "$DIR/serve.toml:2:10: `localhost` is not an address such as `127.0.0.1:8470`"
    );
    assert_eq!(
        load("data_dir = \"d\"\ntimeout = \"soon\"\n"),
        "$DIR/serve.toml:2:11: `soon` is not a duration such as `45m`"
    );
    assert!(
        load("data_dir = \"d\"\nwrokers = 2\n")
            .starts_with("$DIR/serve.toml:2:1: unknown field `wrokers`"),
    );
    assert_eq!(
        load("data_dir = \"d\"\n[[repos]]\nname = \"../x\"\nurl = \"u\"\nallow_unsigned = true\n"),
        "$DIR/serve.toml:3:8: repository name `../x` must be letters, digits, `-`, `_` and `.`"
    );
    assert_eq!(
        load(
            "data_dir = \"d\"\n[[repos]]\nname = \"x\"\nurl = \"u\"\ntree = \"../up\"\nallow_unsigned = true\n"
        ),
        "$DIR/serve.toml:2:1: `tree` of `x` must be a relative path inside the repository"
    );
    let ok = {
        std::fs::write(
            &path,
            "data_dir = \"d\"\n[[repos]]\nname = \"x\"\nurl = \"u\"\nallow_unsigned = true\n",
        )
        .expect("write");
        Config::load(&path).expect("loads")
    };
    assert_eq!(
        ok.listen.to_string(),
        "127.0.0.1:8470",
        "loopback by default"
    );
    assert_eq!(ok.timeout.as_secs(), 45 * 60);
    assert_eq!(ok.workers, 1);
    assert_eq!(ok.database, t.path().join("d").join("kiln.db"));
}

fn job(sha: &str) -> NewJob {
    NewJob {
        repo: "images".into(),
        branch: "main".into(),
        sha: sha.into(),
        state: "queued",
        ..NewJob::default()
    }
}

#[test]
fn a_delivery_is_one_job_and_a_dead_servers_jobs_are_requeued_once() {
    let t = tempfile::tempdir().expect("tmp");
    let path = t.path().join("kiln.db");
    let db = Db::open(&path).expect("opens");
    let (a, new) = db
        .deliver(Some("d-1"), Some(&job(SHA)), "job")
        .expect("delivers");
    assert!(new && a.is_some());
    let (again, new) = db
        .deliver(Some("d-1"), Some(&job(SHA)), "job")
        .expect("delivers");
    assert_eq!((again, new), (a, false), "a redelivery is the same job");
    let (none, new) = db.deliver(Some("d-2"), None, "ignored").expect("delivers");
    assert_eq!((none, new), (None, true));
    assert_eq!(
        db.deliver(Some("d-2"), Some(&job(SHA)), "job")
            .expect("delivers"),
        (None, false),
        "an ignored delivery stays ignored"
    );
    let claimed = db.claim().expect("claims").expect("a job");
    assert_eq!((Some(claimed.id), claimed.attempts), (a, 1));
    assert!(
        db.claim().expect("claims").is_none(),
        "one job, claimed once"
    );
    drop(db);
    // The server died with the job running: the next start requeues it…
    let db = Db::open(&path).expect("opens again");
    db.recover(1).expect("recovers");
    let j = db.job(claimed.id).expect("reads").expect("exists");
    assert_eq!(j.state, "queued");
    let again = db.claim().expect("claims").expect("the job again");
    assert_eq!(again.attempts, 2);
    // …and after its retry dies too, it stays interrupted.
    db.recover(1).expect("recovers");
    let j = db.job(claimed.id).expect("reads").expect("exists");
    assert_eq!(j.state, "interrupted");
    assert_eq!(db.deliveries().expect("lists").len(), 2);
}
