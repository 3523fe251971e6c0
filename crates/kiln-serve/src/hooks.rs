//! Webhooks from GitHub and Gitea/Forgejo: the signature is checked (in
//! constant time, against every configured secret) before a byte of the
//! body is parsed; a push to a tracked branch becomes a job.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::config::{Config, Repo};
use crate::db::NewJob;

/// Which forge sent the hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `X-Hub-Signature-256: sha256=<hex>`, `X-GitHub-Event`,
    /// `X-GitHub-Delivery`.
    Github,
    /// `X-Gitea-Signature: <hex>`, `X-Gitea-Event`, `X-Gitea-Delivery`.
    Gitea,
}

/// What the service does with a delivery.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// 401: no valid signature.
    Unauthorized(&'static str),
    /// 400: not a JSON payload of the event it claims.
    BadRequest(String),
    /// 200: `ping`.
    Pong,
    /// 202 without a job, and why.
    Ignored(String),
    /// 202 with a job.
    Job(NewJob),
}

/// Whether `signature` (hex) is the HMAC-SHA256 of `body` with `secret`,
/// compared in constant time.
#[must_use]
pub fn verify(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let Ok(expected) = hex::decode(signature.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// The hex HMAC-SHA256 of `body` with `secret` (what a sender puts in the
/// signature header).
#[must_use]
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[derive(Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    git_ref: String,
    #[serde(default)]
    after: String,
    #[serde(default)]
    deleted: bool,
    repository: Repository,
    head_commit: Option<Commit>,
}

#[derive(Deserialize)]
struct Repository {
    name: String,
    #[serde(default)]
    full_name: String,
    #[serde(default)]
    clone_url: String,
    #[serde(default)]
    html_url: String,
    #[serde(default)]
    ssh_url: String,
}

#[derive(Deserialize)]
struct Commit {
    #[serde(default)]
    message: String,
    author: Option<Author>,
}

#[derive(Deserialize)]
struct Author {
    #[serde(default)]
    name: String,
}

fn matches(repo: &Repo, r: &Repository) -> bool {
    let url = repo.url.trim_end_matches('/').trim_end_matches(".git");
    let same = |u: &str| !u.is_empty() && u.trim_end_matches('/').trim_end_matches(".git") == url;
    repo.name == r.name
        || repo.name == r.full_name
        || same(&r.clone_url)
        || same(&r.html_url)
        || same(&r.ssh_url)
}

/// The images `Kiln-Skip:` trailers of `message` name.
#[must_use]
pub fn skipped_images(message: &str) -> Vec<String> {
    message
        .lines()
        .filter_map(|l| {
            let (key, value) = l.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case("kiln-skip")
                .then_some(value)
        })
        .flat_map(|v| {
            v.split([' ', ','])
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        })
        .collect()
}

/// Decides what to do with a delivery: `event` and `signature` from its
/// headers (`None` when absent), `body` as received.
#[must_use]
pub fn decide(
    config: &Config,
    source: Source,
    event: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
) -> Decision {
    let signature = signature.map(|s| match source {
        Source::Github => s.strip_prefix("sha256=").unwrap_or(""),
        Source::Gitea => s,
    });
    // Which repositories this body may speak for: those whose secret
    // signed it, or, without a signature, those that allow that.
    let allowed: Vec<&Repo> = match signature {
        Some(sig) => config
            .repos
            .iter()
            .filter(|r| r.secret.as_deref().is_some_and(|s| verify(s, body, sig)))
            .collect(),
        None => config.repos.iter().filter(|r| r.secret.is_none()).collect(),
    };
    if allowed.is_empty() {
        return Decision::Unauthorized(if signature.is_some() {
            "the signature does not match the body"
        } else {
            "the delivery is not signed"
        });
    }
    let Some(event) = event else {
        return Decision::BadRequest("no event header".into());
    };
    if event == "ping" {
        return Decision::Pong;
    }
    if event != "push" {
        return Decision::Ignored(format!("`{event}` events are not built"));
    }
    let push: Push = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => return Decision::BadRequest(format!("not a push payload: {e}")),
    };
    let Some(repo) = allowed.iter().find(|r| matches(r, &push.repository)) else {
        return Decision::Ignored(format!(
            "repository `{}` is not tracked",
            if push.repository.full_name.is_empty() {
                &push.repository.name
            } else {
                &push.repository.full_name
            }
        ));
    };
    let Some(branch) = push.git_ref.strip_prefix("refs/heads/") else {
        return Decision::Ignored(format!("`{}` is not a branch", push.git_ref));
    };
    if push.deleted || push.after.bytes().all(|b| b == b'0') {
        return Decision::Ignored(format!("branch `{branch}` was deleted"));
    }
    if !repo.branches.is_match(branch) {
        return Decision::Ignored(format!(
            "branch `{branch}` is not tracked (branches: {})",
            repo.branch_patterns.join(", ")
        ));
    }
    if push.after.len() < 40 || !push.after.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Decision::BadRequest(format!("`after` is not a commit id: `{}`", push.after));
    }
    let (message, author) = push.head_commit.map_or_else(Default::default, |c| {
        (c.message, c.author.map(|a| a.name).unwrap_or_default())
    });
    let skip_all = ["[skip kiln]", "CI:DOCS"]
        .into_iter()
        .find(|m| message.contains(m));
    Decision::Job(NewJob {
        repo: repo.name.clone(),
        branch: branch.to_owned(),
        sha: push.after.to_ascii_lowercase(),
        full_name: push.repository.full_name,
        skip: skipped_images(&message).join(" "),
        author,
        state: if skip_all.is_some() {
            "skipped"
        } else {
            "queued"
        },
        reason: skip_all.map_or_else(String::new, |m| format!("the commit message says `{m}`")),
        message,
    })
}
