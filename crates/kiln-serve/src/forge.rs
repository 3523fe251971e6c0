//! Commit statuses through the forge's REST API (`POST
//! /repos/{owner}/{repo}/statuses/{sha}`, the same path on GitHub and
//! Gitea/Forgejo), sent from a thread of their own with retries, so a slow
//! or broken forge never holds a build up. Failures go to the job's log;
//! the token never does.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{Forge, ForgeKind};
use crate::db::Job;

/// A commit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Building.
    Pending,
    /// Every variant built or cached.
    Success,
    /// A variant failed.
    Failure,
    /// The build could not run to its end (cancelled, timed out, a broken
    /// tree).
    Error,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Success => "success",
            State::Failure => "failure",
            State::Error => "error",
        }
    }
}

/// How many times a status is tried, and the first pause between tries
/// (doubled each time).
const ATTEMPTS: u32 = 4;
const FIRST_PAUSE: Duration = Duration::from_millis(500);

/// Sends a status for the job's commit in the background; `log` is the
/// job's log file, where failures are written. Join the handle before the
/// next status of the job, so statuses arrive in order.
pub fn post(
    forge: &Forge,
    job: &Job,
    state: State,
    target_url: &str,
    description: &str,
    context: &str,
    log: PathBuf,
) -> Option<std::thread::JoinHandle<()>> {
    if job.full_name.is_empty() {
        return None;
    }
    let url = format!(
        "{}/repos/{}/statuses/{}",
        forge.api_url, job.full_name, job.sha
    );
    let body = serde_json::json!({
        "state": state.name(),
        "target_url": target_url,
        "description": description,
        "context": context,
    })
    .to_string();
    let auth = match forge.kind {
        ForgeKind::Github => format!("Bearer {}", forge.token),
        ForgeKind::Gitea => format!("token {}", forge.token),
    };
    // GitHub's media type and API version; Gitea and Forgejo speak JSON.
    let accept = match forge.kind {
        ForgeKind::Github => "application/vnd.github+json",
        ForgeKind::Gitea => "application/json",
    };
    let kind = forge.kind;
    let context = context.to_owned();
    let handle = std::thread::spawn(move || {
        // A forge that hangs costs each attempt at most this long.
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let note = |line: String| {
            if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&log) {
                let _ = writeln!(f, "{line}");
            }
        };
        let mut pause = FIRST_PAUSE;
        for attempt in 1..=ATTEMPTS {
            let mut request = agent
                .post(&url)
                .header("Authorization", &auth)
                .header("Accept", accept)
                .header("Content-Type", "application/json")
                .header("User-Agent", "kiln");
            if kind == ForgeKind::Github {
                request = request.header("X-GitHub-Api-Version", "2022-11-28");
            }
            let error = match request.send(body.as_bytes()) {
                Ok(_) => return,
                Err(e) => e.to_string(),
            };
            if attempt < ATTEMPTS {
                note(format!(
                    "commit status `{context}` ({state}): attempt {attempt} of {ATTEMPTS} to {url} failed: {error}; trying again in {:.1} s",
                    pause.as_secs_f64(),
                    state = state.name(),
                ));
                std::thread::sleep(pause);
                pause *= 2;
            } else {
                note(format!(
                    "commit status `{context}` ({state}) could not be sent to {url} after {ATTEMPTS} attempts: {error}",
                    state = state.name(),
                ));
            }
        }
    });
    Some(handle)
}
