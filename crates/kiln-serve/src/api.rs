//! The HTTP side: webhooks, the JSON API, the SSE event stream, metrics
//! and artifacts. Every error answers with its status and
//! `{"error": "..."}`; [`ApiError`] is the one place errors become HTTP.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tower::ServiceExt as _;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use sha2::Digest as _;

use crate::db::{Filter, NewJob};
use crate::hooks::{self, Decision, Source};
use crate::runner::Shared;

/// Webhook bodies larger than this are refused (413).
pub const BODY_LIMIT: usize = 25 * 1024 * 1024;

/// An HTTP error: its status and message.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> Self {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

type Result<T> = std::result::Result<T, ApiError>;

fn not_found(what: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("{what} does not exist"))
}

/// Runs blocking database work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// The hash an API token is stored under.
#[must_use]
pub fn token_hash(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

pub(crate) async fn authorize(shared: &Arc<Shared>, headers: &HeaderMap) -> Result<()> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            ApiError(
                StatusCode::UNAUTHORIZED,
                "this needs `Authorization: Bearer <token>` (`kiln serve token create NAME`)"
                    .into(),
            )
        })?;
    let hash = token_hash(token);
    let s = Arc::clone(shared);
    if blocking(move || s.db.has_token(&hash)).await?? {
        Ok(())
    } else {
        Err(ApiError(StatusCode::UNAUTHORIZED, "unknown token".into()))
    }
}

/// Reading needs nothing on a public server, else a token or a browser
/// session (`/login`).
pub(crate) async fn read_access(shared: &Arc<Shared>, headers: &HeaderMap) -> Result<()> {
    if shared.config.public || crate::web::session_of(shared, headers).await.is_some() {
        Ok(())
    } else {
        authorize(shared, headers).await
    }
}

/// The router.
pub fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/hooks/github", post(hook_github))
        .route("/hooks/gitea", post(hook_gitea))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/api/status", get(status))
        .route("/api/jobs", get(list_jobs).post(create_job))
        .route("/api/jobs/{id}", get(get_job))
        .route("/api/jobs/{id}/log", get(job_log))
        .route("/api/jobs/{id}/events", get(job_events))
        .route("/api/jobs/{id}/cancel", post(cancel_job))
        .route("/api/jobs/{id}/retry", post(retry_job))
        .route("/artifacts/{*path}", get(artifact))
        .route("/boot/{*path}", get(boot))
        .merge(crate::web::routes())
        .fallback(crate::web::fallback)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(refuse_oversized))
        .with_state(shared)
}

/// A body whose `Content-Length` is over [`BODY_LIMIT`] is refused before
/// a byte of it is read (a client that sent `Expect: 100-continue` never
/// sends it); a body without a length is cut off at the limit by the
/// extractors.
async fn refuse_oversized(request: Request, next: axum::middleware::Next) -> Response {
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match length {
        Some(n) if n > BODY_LIMIT as u64 => ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is {n} bytes; the limit is {} MiB",
                BODY_LIMIT >> 20
            ),
        )
        .into_response(),
        _ => next.run(request).await,
    }
}

/// The body, or the extractor's refusal (413 over the limit) as JSON.
fn body_of(body: std::result::Result<Bytes, BytesRejection>) -> Result<Bytes> {
    body.map_err(|r| ApiError(r.status(), r.body_text()))
}

async fn hook_github(
    s: State<Arc<Shared>>,
    h: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    hook(s, h, body_of(body)?, Source::Github).await
}

async fn hook_gitea(
    s: State<Arc<Shared>>,
    h: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    hook(s, h, body_of(body)?, Source::Gitea).await
}

async fn hook(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
    source: Source,
) -> Result<Response> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (event, signature, delivery) = match source {
        Source::Github => (
            header("x-github-event"),
            header("x-hub-signature-256"),
            header("x-github-delivery"),
        ),
        Source::Gitea => (
            header("x-gitea-event"),
            header("x-gitea-signature"),
            header("x-gitea-delivery"),
        ),
    };
    let s = Arc::clone(&shared);
    let decision = blocking(move || {
        hooks::decide(
            &s.config,
            source,
            event.as_deref(),
            signature.as_deref(),
            &body,
        )
    })
    .await?;
    let (job, reason) = match decision {
        Decision::Unauthorized(why) => {
            shared.count_delivery("unauthorized");
            return Err(ApiError(StatusCode::UNAUTHORIZED, why.into()));
        }
        Decision::BadRequest(why) => {
            shared.count_delivery("bad_request");
            return Err(ApiError(StatusCode::BAD_REQUEST, why));
        }
        Decision::Pong => {
            shared.count_delivery("ping");
            return Ok(Json(serde_json::json!({ "ok": true })).into_response());
        }
        Decision::Ignored(reason) => (None, reason),
        Decision::Job(job) => {
            let reason = if job.state == "skipped" {
                job.reason.clone()
            } else {
                String::new()
            };
            (Some(job), reason)
        }
    };
    let s = Arc::clone(&shared);
    let result = if job.is_some() { "job" } else { "ignored" };
    let (id, new) =
        blocking(move || s.db.deliver(delivery.as_deref(), job.as_ref(), result)).await??;
    shared.count_delivery(match (id, new) {
        (_, false) => "duplicate",
        (Some(_), true) => "job",
        (None, true) => "ignored",
    });
    if id.is_some() && new {
        shared.kick();
    }
    let mut body = serde_json::json!({ "job": id, "duplicate": !new });
    if !reason.is_empty() {
        body["reason"] = reason.into();
    }
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// The filters of `GET /api/jobs` and of the history page.
#[derive(Deserialize)]
pub(crate) struct JobsQuery {
    repo: Option<String>,
    branch: Option<String>,
    state: Option<String>,
    sha: Option<String>,
    page: Option<usize>,
}

impl JobsQuery {
    /// The database filter: empty fields are no filter (as a form sends
    /// them); an unknown state or a commit that is not hexadecimal is 400.
    pub(crate) fn filter(self) -> Result<Filter> {
        let nonempty = |v: Option<String>| v.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let state = nonempty(self.state);
        if let Some(state) = &state
            && !crate::db::STATES.contains(&state.as_str())
        {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!(
                    "unknown state `{state}` (states: {})",
                    crate::db::STATES.join(", ")
                ),
            ));
        }
        let sha = nonempty(self.sha);
        if let Some(sha) = &sha
            && !sha.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("`{sha}` is not a commit (hexadecimal)"),
            ));
        }
        Ok(Filter {
            repo: nonempty(self.repo),
            branch: nonempty(self.branch),
            state,
            sha: sha.map(|s| s.to_ascii_lowercase()),
            page: self.page.unwrap_or(1).max(1),
        })
    }
}

async fn list_jobs(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<JobsQuery>,
) -> Result<Response> {
    read_access(&shared, &headers).await?;
    let filter = q.filter()?;
    let s = Arc::clone(&shared);
    let jobs = blocking(move || s.db.jobs(&filter)).await??;
    Ok(Json(serde_json::json!({ "jobs": jobs })).into_response())
}

/// Job `id` of a request path, or 404.
pub(crate) async fn find_job(shared: &Arc<Shared>, id: &str) -> Result<crate::db::Job> {
    let missing = || ApiError(StatusCode::NOT_FOUND, format!("job `{id}` does not exist"));
    let n: i64 = id.parse().map_err(|_| missing())?;
    let s = Arc::clone(shared);
    blocking(move || s.db.job(n)).await??.ok_or_else(missing)
}

async fn get_job(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response> {
    read_access(&shared, &headers).await?;
    let job = find_job(&shared, &id).await?;
    Ok(Json(job).into_response())
}

async fn job_log(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response> {
    read_access(&shared, &headers).await?;
    let id = find_job(&shared, &id).await?.id;
    let text = tokio::fs::read_to_string(shared.job_dir(id).join("log.txt"))
        .await
        .unwrap_or_default();
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

/// The job's events as Server-Sent Events: the backlog, then live events,
/// then `end`. Each event's id is its position in the job's stream, so a
/// client that reconnects with `Last-Event-ID` gets only what it missed.
async fn job_events(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Result<Response> {
    read_access(&shared, &headers).await?;
    let id = find_job(&shared, &id).await?.id;
    // A reconnecting `EventSource` sends `Last-Event-ID`; a page that
    // rendered the first events itself asks for the rest with `?after=`.
    let start: usize = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .or(q.after)
        .unwrap_or(0);
    let (tx, rx) = tokio::sync::mpsc::channel::<std::result::Result<SseEvent, Infallible>>(256);
    tokio::spawn(async move {
        let mut next = start;
        // Browsers reconnect after a second, not the default three.
        let send = |n: usize, data: String| {
            SseEvent::default()
                .id(n.to_string())
                .retry(Duration::from_secs(1))
                .data(data)
        };
        loop {
            // A stopping server ends its streams (without `end`, so
            // browsers reconnect to the next one); else its graceful
            // shutdown would wait for every open page.
            if shared.draining.load(Ordering::SeqCst) {
                return;
            }
            let live = shared
                .live
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&id)
                .cloned();
            if let Some(live) = live {
                let notified = live.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let (batch, done) = {
                    let events = live
                        .events
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    (
                        events
                            .get(next..)
                            .map(<[String]>::to_vec)
                            .unwrap_or_default(),
                        live.done.load(Ordering::SeqCst),
                    )
                };
                let empty = batch.is_empty();
                for e in batch {
                    next += 1;
                    if tx.send(Ok(send(next, e))).await.is_err() {
                        return;
                    }
                }
                if done {
                    break;
                }
                if empty {
                    let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
                }
                continue;
            }
            let s = Arc::clone(&shared);
            let Ok(Ok(Some(job))) = tokio::task::spawn_blocking(move || s.db.job(id)).await else {
                break;
            };
            if job.is_active() {
                // Not started yet (or between the claim and the first
                // event): look again.
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            let text = tokio::fs::read_to_string(shared.job_dir(id).join("events.jsonl"))
                .await
                .unwrap_or_default();
            for line in text.lines().skip(next) {
                next += 1;
                if tx.send(Ok(send(next, line.to_owned()))).await.is_err() {
                    return;
                }
            }
            break;
        }
        let _ = tx
            .send(Ok(SseEvent::default().event("end").data("{}")))
            .await;
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

#[derive(Deserialize)]
struct EventsQuery {
    after: Option<usize>,
}

#[derive(Deserialize)]
struct CreateJob {
    repo: String,
    #[serde(rename = "ref")]
    git_ref: String,
}

async fn create_job(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    authorize(&shared, &headers).await?;
    let req: CreateJob = serde_json::from_slice(&body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("expected {{\"repo\", \"ref\"}}: {e}"),
        )
    })?;
    let repo = shared
        .config
        .repo(&req.repo)
        .ok_or_else(|| not_found(format!("repository `{}`", req.repo)))?
        .clone();
    let branch = req.git_ref.trim_start_matches("refs/heads/").to_owned();
    let url = repo.url.clone();
    let wanted = branch.clone();
    let sha = blocking(move || {
        let out = std::process::Command::new("git")
            .args(["ls-remote", &url, &format!("refs/heads/{wanted}")])
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .map(str::to_owned)
    })
    .await?
    .ok_or_else(|| not_found(format!("branch `{branch}` of `{}`", repo.name)))?;
    let job = NewJob {
        repo: repo.name.clone(),
        branch,
        sha,
        state: "queued",
        message: "manual build".into(),
        ..NewJob::default()
    };
    let s = Arc::clone(&shared);
    let (id, _) = blocking(move || s.db.deliver(None, Some(&job), "manual")).await??;
    shared.kick();
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({ "job": id }))).into_response())
}

async fn cancel_job(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response> {
    authorize(&shared, &headers).await?;
    let id = cancel(&shared, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({ "job": id }))).into_response())
}

/// Cancels job `id` (a path segment): its number, or 404 or 409.
pub(crate) async fn cancel(shared: &Arc<Shared>, id: &str) -> Result<i64> {
    let job = find_job(shared, id).await?;
    let id = job.id;
    let conflict = || {
        ApiError(
            StatusCode::CONFLICT,
            format!("job {id} is {}, not queued or running", job.state),
        )
    };
    // A job that has ended stays ended, even while its worker still sends
    // its last statuses.
    if !job.is_active() {
        return Err(conflict());
    }
    let running = shared
        .running
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&id)
        .cloned();
    if let Some(token) = running {
        token.cancel_with("cancelled by a user");
    } else {
        let s = Arc::clone(shared);
        if !blocking(move || s.db.cancel_queued(id)).await?? {
            return Err(conflict());
        }
    }
    Ok(id)
}

async fn retry_job(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response> {
    authorize(&shared, &headers).await?;
    let new_id = retry(&shared, &id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "job": new_id })),
    )
        .into_response())
}

/// Queues job `id` (a path segment) again: the new job's number, or 404
/// or 409.
pub(crate) async fn retry(shared: &Arc<Shared>, id: &str) -> Result<i64> {
    let job = find_job(shared, id).await?;
    let id = job.id;
    if job.is_active() {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("job {id} is {}; retry it once it has ended", job.state),
        ));
    }
    let new = job.again(format!("retry of job {id}"));
    let s = Arc::clone(shared);
    let (new_id, _) = blocking(move || s.db.deliver(None, Some(&new), "retry")).await??;
    shared.kick();
    new_id.ok_or_else(|| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no job was queued".into(),
        )
    })
}

async fn status(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Result<Response> {
    read_access(&shared, &headers).await?;
    let s = Arc::clone(&shared);
    let counts = blocking(move || s.db.counts()).await??;
    let queued = counts
        .iter()
        .find(|(s, _)| s == "queued")
        .map_or(0, |c| c.1);
    Ok(Json(serde_json::json!({
        "workers": shared.config.workers,
        "busy": shared.busy.load(Ordering::SeqCst),
        "queued": queued,
        "draining": shared.draining.load(Ordering::SeqCst),
        "jobs": counts.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
    }))
    .into_response())
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Result<Response> {
    let s = Arc::clone(&shared);
    let (counts, durations) =
        blocking(move || Ok::<_, crate::Error>((s.db.counts()?, s.db.durations()?))).await??;
    let mut out = String::from("# HELP kiln_jobs Jobs by state.\n# TYPE kiln_jobs gauge\n");
    for state in crate::db::STATES {
        let n = counts.iter().find(|(s, _)| s == state).map_or(0, |c| c.1);
        out.push_str(&format!("kiln_jobs{{state=\"{state}\"}} {n}\n"));
    }
    let queued = counts
        .iter()
        .find(|(s, _)| s == "queued")
        .map_or(0, |c| c.1);
    out.push_str(&format!("# HELP kiln_queue_depth Jobs waiting for a worker.\n# TYPE kiln_queue_depth gauge\nkiln_queue_depth {queued}\n"));
    out.push_str("# HELP kiln_build_duration_seconds Build durations.\n# TYPE kiln_build_duration_seconds histogram\n");
    let mut sum = 0;
    for le in [10, 30, 60, 300, 900, 1800, 3600] {
        let n = durations.iter().filter(|d| **d <= le).count();
        out.push_str(&format!(
            "kiln_build_duration_seconds_bucket{{le=\"{le}\"}} {n}\n"
        ));
    }
    for d in &durations {
        sum += d;
    }
    out.push_str(&format!(
        "kiln_build_duration_seconds_bucket{{le=\"+Inf\"}} {}\nkiln_build_duration_seconds_sum {sum}\nkiln_build_duration_seconds_count {}\n",
        durations.len(),
        durations.len()
    ));
    out.push_str("# HELP kiln_webhook_deliveries_total Webhook deliveries by result.\n# TYPE kiln_webhook_deliveries_total counter\n");
    let deliveries = shared
        .deliveries
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut deliveries: Vec<_> = deliveries.into_iter().collect();
    deliveries.sort_unstable();
    for (result, n) in deliveries {
        out.push_str(&format!(
            "kiln_webhook_deliveries_total{{result=\"{result}\"}} {n}\n"
        ));
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}

/// The `user:token` of an `Authorization: Basic` header, if it has one
/// whose both parts may stand in a URL as they are (what iPXE and
/// busybox's `wget` send for `http://user:token@host/...`).
pub(crate) fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine as _;
    let encoded = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, token) = text.split_once(':')?;
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    };
    (plain(user) && plain(token)).then(|| (user.to_owned(), token.to_owned()))
}

/// `/boot/{repo}/{job}/...` and `/boot/{repo}/{branch}/latest/...`: a
/// job's kept artifacts as a boot server (kiln-boot's: `menu.ipxe`,
/// `VARIANT.ipxe`, `files/PATH`), its scripts' URLs under the same
/// prefix. Reading needs what the API's reading needs; iPXE sends no
/// bearer token, so a token also works as the password of HTTP Basic
/// authentication (`http://boot:TOKEN@host/boot/...`), and the scripts
/// then carry the same credentials.
async fn boot(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(path): Path<String>,
    request: Request,
) -> Result<Response> {
    let basic = basic_credentials(&headers);
    let credentials = match &basic {
        Some((user, token)) if !shared.config.public => {
            let hash = token_hash(token);
            let s = Arc::clone(&shared);
            if !blocking(move || s.db.has_token(&hash)).await?? {
                return Err(ApiError(StatusCode::UNAUTHORIZED, "unknown token".into()));
            }
            Some(format!("{user}:{token}"))
        }
        _ => {
            if let Err(e) = read_access(&shared, &headers).await {
                // A challenge, so that iPXE sends the credentials of its URL.
                let mut response = e.into_response();
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Basic realm=\"kiln boot\""),
                );
                return Ok(response);
            }
            None
        }
    };
    let trimmed = path.trim_end_matches('/');
    let missing = || {
        not_found(format!(
            "`/boot/{path}`: boot roots are `/boot/<repo>/<job>/` and `/boot/<repo>/<branch>/latest/`"
        ))
    };
    if !kiln_boot::server::is_plain_relative(trimmed) {
        return Err(missing());
    }
    let parts: Vec<&str> = trimmed.split('/').collect();
    let base = shared.config.data_dir.join("artifacts");
    let (dir, depth) = match parts.as_slice() {
        [repo, job, ..] if job.bytes().all(|b| b.is_ascii_digit()) => {
            (base.join(repo).join(job), 2)
        }
        [repo, rest @ ..] => {
            let Some(k) = rest.iter().position(|p| *p == "latest").filter(|k| *k > 0) else {
                return Err(missing());
            };
            (
                base.join(repo).join("branches").join(rest[..k].join("%2F")),
                k + 2,
            )
        }
        [] => return Err(missing()),
    };
    if !dir.join(kiln_build::manifest::MANIFEST_FILE).is_file() {
        return Err(not_found(format!(
            "`/boot/{}` has no kept artifacts (no such job, or its artifacts were pruned)",
            parts[..depth].join("/")
        )));
    }
    let prefix = format!("/boot/{}", parts[..depth].join("/"));
    let rest = parts[depth..].join("/");
    let mut options = kiln_boot::server::BootOptions::new(dir);
    // The configured address, unless it is the loopback default: then
    // the one the client used.
    let url = &shared.config.base_url;
    if !(url.starts_with("http://127.") || url.starts_with("http://[::1]")) {
        options.public_url = Some(url.clone());
    }
    options.credentials = credentials;
    Ok(kiln_boot::server::respond(&options, &prefix, &rest, &headers, request).await)
}

/// `/artifacts/{repo}/{job}/{variant}/{file}`, or
/// `/artifacts/{repo}/{branch}/latest/{variant}/{file}` for the newest
/// successful job of a branch; range requests are answered.
async fn artifact(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(path): Path<String>,
    request: Request,
) -> Result<Response> {
    read_access(&shared, &headers).await?;
    if !kiln_boot::server::is_plain_relative(&path) {
        return Err(not_found(format!("artifact `{path}`")));
    }
    let parts: Vec<&str> = path.split('/').collect();
    let base = shared.config.data_dir.join("artifacts");
    let file = match parts.as_slice() {
        [repo, branch @ .., "latest", variant, name] if !branch.is_empty() => base
            .join(repo)
            .join("branches")
            .join(branch.join("%2F"))
            .join(variant)
            .join(name),
        [repo, job, variant, name] if job.bytes().all(|b| b.is_ascii_digit()) => {
            base.join(repo).join(job).join(variant).join(name)
        }
        _ => return Err(not_found(format!("artifact `{path}`"))),
    };
    if !file.is_file() {
        return Err(not_found(format!("artifact `{path}`")));
    }
    let response = tower_http::services::ServeFile::new(file)
        .oneshot(request)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(response.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(value: &str) -> Option<(String, String)> {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().expect("header"));
        basic_credentials(&headers)
    }

    #[test]
    fn basic_credentials_are_taken_only_when_they_stand_in_a_url_as_they_are() {
        // base64("boot:Tok-3n_x") and friends.
        assert_eq!(
            basic("Basic Ym9vdDpUb2stM25feA=="),
            Some(("boot".into(), "Tok-3n_x".into()))
        );
        for refused in [
            "Bearer Ym9vdDpUb2stM25feA==",
            "Basic not base64!",
            "Basic Ym9vdA==",     // "boot": no password
            "Basic Ym9vdDo=",     // "boot:": an empty one
            "Basic Ym9vdDphQGI=", // "boot:a@b": would break the URL
            "Basic Ym8gb3Q6dG9r", // "bo ot:tok"
        ] {
            assert_eq!(basic(refused), None, "{refused}");
        }
    }
}
