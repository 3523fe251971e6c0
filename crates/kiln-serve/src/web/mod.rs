//! The web monitor: server-rendered pages (usable without JavaScript)
//! with a small embedded script that follows running jobs over the SSE
//! stream. Every byte it serves is in the binary: no CDN, no fonts.
//!
//! Pages read like the API (`public`, or a browser session from
//! `/login`); the cancel and retry buttons need a session and post its
//! CSRF token. [`PageError`] is the one place errors become HTML.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Deserialize;
use subtle::ConstantTimeEq as _;

use crate::api::{self, ApiError, blocking};
use crate::db::{Filter, Job, STATES};
use crate::runner::Shared;

pub mod view;

use view::{NodeState, View};

const STYLE: &str = include_str!("assets/style.css");
const SCRIPT: &str = include_str!("assets/app.js");
const COOKIE: &str = "kiln_session";
/// How long a browser session lasts.
const SESSION_SECONDS: i64 = 7 * 24 * 3600;

/// The monitor's routes.
pub fn routes() -> axum::Router<Arc<Shared>> {
    axum::Router::new()
        .route("/", get(dashboard))
        .route("/jobs", get(history))
        .route("/jobs/{id}", get(job_page))
        .route("/jobs/{id}/live", get(live_parts))
        .route("/jobs/{id}/{action}", post(job_action))
        .route("/repos/{name}", get(repo_page))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/assets/{name}", get(asset))
}

/// A page's error: an HTML page with its status, or a redirect.
#[derive(Debug)]
pub enum PageError {
    /// The status and what went wrong.
    Status(StatusCode, String),
    /// Go there instead (to log in).
    Redirect(String),
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        PageError::Status(e.0, e.1)
    }
}

impl From<crate::Error> for PageError {
    fn from(e: crate::Error) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::Redirect(to) => Redirect::to(&to).into_response(),
            PageError::Status(status, message) => {
                let title = status.canonical_reason().unwrap_or("Error");
                let body = html! {
                    h1 { (status.as_u16()) " " (title) }
                    p.error-text { (message) }
                    p { a href="/" { "Back to the dashboard" } " · " a href="/jobs" { "History" } }
                };
                (
                    status,
                    Html(layout(title, "", None, &[], &body).into_string()),
                )
                    .into_response()
            }
        }
    }
}

type PageResult = Result<Response, PageError>;

/// Unknown paths: a 404 page, or JSON under `/api/` and `/hooks/`.
pub async fn fallback(uri: Uri) -> Response {
    let path = uri.path();
    if path.starts_with("/api/") || path.starts_with("/hooks/") {
        return ApiError(StatusCode::NOT_FOUND, format!("`{path}` does not exist")).into_response();
    }
    PageError::Status(
        StatusCode::NOT_FOUND,
        format!("There is no page at `{path}`."),
    )
    .into_response()
}

async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "style.css" => (STYLE, "text/css; charset=utf-8"),
        "app.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        _ => return fallback(Uri::from_static("/assets/")).await,
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

// ---- sessions -------------------------------------------------------------

/// A logged-in browser: its CSRF token.
#[derive(Clone, Debug)]
pub struct Session {
    /// The token every form of the session posts.
    pub csrf: String,
}

fn cookie_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// The request's browser session, if it has a live one.
pub async fn session_of(shared: &Arc<Shared>, headers: &HeaderMap) -> Option<Session> {
    let hash = api::token_hash(&cookie_of(headers)?);
    let s = Arc::clone(shared);
    let csrf = blocking(move || s.db.session(&hash, SESSION_SECONDS))
        .await
        .ok()?
        .ok()??;
    Some(Session { csrf })
}

/// Who may see pages: everyone on a public server; else a session, or
/// the login page.
async fn page_access(
    shared: &Arc<Shared>,
    headers: &HeaderMap,
    here: &str,
) -> Result<Option<Session>, PageError> {
    let session = session_of(shared, headers).await;
    if session.is_none() && !shared.config.public {
        api::read_access(shared, headers)
            .await
            .map_err(|_| PageError::Redirect(format!("/login?next={}", percent(here))))?;
    }
    Ok(session)
}

/// A form post's session and CSRF check: the session must exist, the
/// form's token must be its token (compared in constant time), and a
/// browser's `Origin`, when sent, must be this server.
async fn check_post(
    shared: &Arc<Shared>,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<Session, PageError> {
    let forbidden = |why: &str| PageError::Status(StatusCode::FORBIDDEN, why.to_owned());
    let session = session_of(shared, headers)
        .await
        .ok_or_else(|| forbidden("log in with an API token first (`/login`)"))?;
    if !bool::from(session.csrf.as_bytes().ct_eq(csrf.as_bytes())) {
        return Err(forbidden(
            "the form's CSRF token does not match this session; reload the page",
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
        if origin_host != host {
            return Err(forbidden("the form was posted from another site"));
        }
    }
    Ok(session)
}

fn random_hex() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

/// A local path to go back to (never another site).
fn local(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/".to_owned(),
    }
}

async fn login_page(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> PageResult {
    let session = session_of(&shared, &headers).await;
    let next = local(q.next.as_deref());
    let body = html! {
        h1 { "Log in" }
        @if session.is_some() {
            p { "You are logged in. " a href=(next) { "Go on" } }
        }
        form.card method="post" action="/login" {
            p { "Paste an API token made with " code { "kiln serve token create NAME" } ". The browser keeps a session cookie, never the token." }
            input type="hidden" name="next" value=(next);
            label for="token" { "API token" }
            input #token type="password" name="token" autocomplete="off" required;
            button type="submit" { "Log in" }
        }
    };
    Ok(
        Html(layout("Log in", "", session.as_ref(), &shared.repo_names(), &body).into_string())
            .into_response(),
    )
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    next: Option<String>,
}

async fn login(State(shared): State<Arc<Shared>>, Form(form): Form<LoginForm>) -> PageResult {
    let hash = api::token_hash(form.token.trim());
    let s = Arc::clone(&shared);
    if !blocking(move || s.db.has_token(&hash)).await?? {
        return Err(PageError::Status(
            StatusCode::UNAUTHORIZED,
            "That is not a token of this server. Make one with `kiln serve token create NAME`."
                .into(),
        ));
    }
    let (id, csrf) = (random_hex(), random_hex());
    let hash = api::token_hash(&id);
    let s = Arc::clone(&shared);
    blocking(move || s.db.add_session(&hash, &csrf)).await??;
    let secure = if shared.config.base_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECONDS}{secure}"
    );
    let mut response = Redirect::to(&local(form.next.as_deref())).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> PageResult {
    check_post(&shared, &headers, &form.csrf).await?;
    if let Some(id) = cookie_of(&headers) {
        let hash = api::token_hash(&id);
        let s = Arc::clone(&shared);
        blocking(move || s.db.drop_session(&hash)).await??;
    }
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("kiln_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    Ok(response)
}

/// The job page's Cancel and Retry buttons.
async fn job_action(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> PageResult {
    check_post(&shared, &headers, &form.csrf).await?;
    let id = match action.as_str() {
        "cancel" => api::cancel(&shared, &id).await?,
        "retry" => api::retry(&shared, &id).await?,
        _ => {
            return Err(PageError::Status(
                StatusCode::NOT_FOUND,
                format!("Jobs have no `{action}` action."),
            ));
        }
    };
    Ok(Redirect::to(&format!("/jobs/{id}")).into_response())
}

// ---- helpers --------------------------------------------------------------

impl Shared {
    fn repo_names(&self) -> Vec<String> {
        self.config.repos.iter().map(|r| r.name.clone()).collect()
    }

    /// The web page of the job's commit, when the forge is known.
    fn commit_url(&self, job: &Job) -> Option<String> {
        let web = self
            .config
            .repo(&job.repo)
            .and_then(|r| r.web_url.clone())
            .or_else(|| {
                let forge = self.config.forge.as_ref()?;
                if job.full_name.is_empty() {
                    return None;
                }
                let api = forge.api_url.trim_end_matches('/');
                let base = match forge.kind {
                    crate::config::ForgeKind::Github if api == "https://api.github.com" => {
                        "https://github.com".to_owned()
                    }
                    crate::config::ForgeKind::Github => api.trim_end_matches("/api/v3").to_owned(),
                    crate::config::ForgeKind::Gitea => api.trim_end_matches("/api/v1").to_owned(),
                };
                Some(format!("{base}/{}", job.full_name))
            })?;
        Some(format!("{web}/commit/{}", job.sha))
    }

    /// The job's events: the live ones while it runs, else its file.
    async fn view_of(self: &Arc<Self>, id: i64) -> View {
        let live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
            .cloned();
        if let Some(live) = live {
            let text = live
                .events
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .join("\n");
            return View::of(&text);
        }
        let text = tokio::fs::read_to_string(self.job_dir(id).join("events.jsonl"))
            .await
            .unwrap_or_default();
        View::of(&text)
    }
}

fn percent(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn short(sha: &str) -> &str {
    sha.get(..8).unwrap_or(sha)
}

/// `1.2 MiB`.
fn size(bytes: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let mut n = bytes as f64;
    for unit in ["B", "KiB", "MiB", "GiB"] {
        if n < 1024.0 || unit == "GiB" {
            return if unit == "B" {
                format!("{bytes} B")
            } else {
                format!("{n:.1} {unit}")
            };
        }
        n /= 1024.0;
    }
    format!("{bytes} B")
}

/// `4m 05s`.
fn duration(seconds: i64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {:02}s", s / 60, s % 60),
        s => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}

fn job_duration(job: &Job) -> Option<i64> {
    let start = job.started?;
    Some(job.finished.unwrap_or_else(crate::db::now) - start)
}

fn when(ts: i64) -> Markup {
    let Ok(t) = jiff::Timestamp::from_second(ts) else {
        return html! {};
    };
    html! { time datetime=(t.to_string()) { (t.strftime("%Y-%m-%d %H:%M:%S UTC")) } }
}

fn job_icon(state: &str) -> &'static str {
    match state {
        "queued" => "○",
        "running" => "◐",
        "succeeded" => "✔",
        "failed" => "✘",
        "cancelled" => "■",
        "timed-out" => "⏱",
        "interrupted" => "↺",
        _ => "↷",
    }
}

/// A state as icon and word (never colour alone).
fn badge(state: &str, icon: &str) -> Markup {
    html! { span class=(format!("badge state-{state}")) { span aria-hidden="true" { (icon) } " " (state) } }
}

/// Built, cached and failed variants of a finished job.
fn counts(job: &Job) -> Option<(usize, usize, usize)> {
    let variants = job.result.as_ref()?.get("variants")?.as_array()?;
    let n = |word: &str| {
        variants
            .iter()
            .filter(|v| v["status"]["status"] == word)
            .count()
    };
    Some((n("built"), n("cached"), n("failed")))
}

fn commit(shared: &Shared, job: &Job) -> Markup {
    html! {
        @match shared.commit_url(job) {
            Some(url) => a href=(url) title=(job.sha) { code { (short(&job.sha)) } },
            None => code title=(job.sha) { (short(&job.sha)) },
        }
    }
}

fn layout(
    title: &str,
    here: &str,
    session: Option<&Session>,
    repos: &[String],
    main: &Markup,
) -> Markup {
    let current = |path: &str| (here == path).then_some("page");
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · kiln" }
                link rel="stylesheet" href="/assets/style.css";
                script src="/assets/app.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to the content" }
                header.top {
                    nav aria-label="Main" {
                        a.brand href="/" { "kiln" }
                        ul {
                            li { a href="/" aria-current=[current("/")] { "Dashboard" } }
                            li { a href="/jobs" aria-current=[current("/jobs")] { "History" } }
                            @for r in repos {
                                @let path = format!("/repos/{}", percent(r));
                                li { a href=(path) aria-current=[current(&path)] { (r) } }
                            }
                        }
                    }
                    @if let Some(s) = session {
                        form.inline method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(s.csrf);
                            button.link type="submit" { "Log out" }
                        }
                    } @else {
                        a href=(format!("/login?next={}", percent(here))) { "Log in" }
                    }
                }
                main #main { (main) }
                footer { "kiln " (env!("CARGO_PKG_VERSION")) " · " a href="/api/status" { "API status" } " · " a href="/metrics" { "metrics" } }
            }
        }
    }
}

fn page(
    shared: &Shared,
    title: &str,
    here: &str,
    session: Option<&Session>,
    body: &Markup,
) -> Response {
    let mut r = Html(layout(title, here, session, &shared.repo_names(), body).into_string())
        .into_response();
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'"),
    );
    r
}

/// A table of jobs: one row each.
fn jobs_table(shared: &Shared, jobs: &[Job], caption: &str) -> Markup {
    html! {
        div.scroll {
            table.jobs {
                caption { (caption) }
                thead { tr {
                    th scope="col" { "Job" } th scope="col" { "State" } th scope="col" { "Repository" }
                    th scope="col" { "Branch" } th scope="col" { "Commit" } th scope="col" { "Duration" }
                    th scope="col" { abbr title="built / cached / failed variants" { "Variants" } }
                    th scope="col" { "Queued" }
                } }
                tbody {
                    @for j in jobs {
                        tr data-job=(j.id) data-state=(j.state) {
                            td { a href=(format!("/jobs/{}", j.id)) { "#" (j.id) } }
                            td { (badge(&j.state, job_icon(&j.state))) }
                            td { a href=(format!("/repos/{}", percent(&j.repo))) { (j.repo) } }
                            td { (j.branch) }
                            td.commit { (commit(shared, j)) " " span.message { (j.message.lines().next().unwrap_or_default()) } }
                            td { @if let Some(d) = job_duration(j) { (duration(d)) } }
                            td.counts { @if let Some((b, c, f)) = counts(j) {
                                span title="built" { (b) " built" } ", " span title="cached" { (c) " cached" } ", "
                                span.failed[f > 0] title="failed" { (f) " failed" }
                            } }
                            td { (when(j.created)) }
                        }
                    }
                    @if jobs.is_empty() { tr { td colspan="8" { "None." } } }
                }
            }
        }
    }
}

// ---- dashboard ------------------------------------------------------------

async fn dashboard(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> PageResult {
    let session = page_access(&shared, &headers, "/").await?;
    let s = Arc::clone(&shared);
    let (running, queued, ended) = blocking(move || {
        let of = |state: &str| {
            s.db.jobs(&Filter {
                state: Some(state.into()),
                page: 1,
                ..Filter::default()
            })
        };
        Ok::<_, crate::Error>((of("running")?, of("queued")?, s.db.ended(20)?))
    })
    .await??;
    let mut cards = Vec::new();
    for j in &running {
        cards.push((j, shared.view_of(j.id).await));
    }
    let busy = shared.busy.load(Ordering::SeqCst);
    let draining = shared.draining.load(Ordering::SeqCst);
    let body = html! {
        h1 { "Dashboard" }
        section aria-labelledby="workers" {
            h2 #workers { "Workers" }
            p.workers {
                (busy) " of " (shared.config.workers) " workers busy"
                @if draining { " · " strong { "shutting down: no new builds start" } }
            }
        }
        section aria-labelledby="running" {
            h2 #running { "Running (" (running.len()) ")" }
            @if running.is_empty() { p { "Nothing is building." } }
            ul.cards {
                @for (j, v) in &cards {
                    @let (done, total) = v.progress();
                    li.card data-job=(j.id) {
                        h3 { a href=(format!("/jobs/{}", j.id)) { "#" (j.id) } " " (j.repo) " · " (j.branch) " · " (commit(&shared, j)) }
                        p.message { (j.message.lines().next().unwrap_or_default()) }
                        @for r in v.running() {
                            p.now { (badge("running", "◐")) " " strong { (r.name) } ": " (r.step.as_deref().unwrap_or("starting"))
                                @if let Some((d, t)) = r.download { @if t > 0 { " (" (size(d)) " of " (size(t)) ")" } }
                            }
                        }
                        label { "Variants done: " (done) " of " (total)
                            progress max=(total.max(1)) value=(done) { (done) "/" (total) }
                        }
                        @if let Some(d) = job_duration(j) { p.muted { "Running for " (duration(d)) } }
                    }
                }
            }
        }
        section aria-labelledby="queue" {
            h2 #queue { "Queue (" (queued.len()) ")" }
            @if queued.is_empty() { p { "The queue is empty." } } @else { (jobs_table(&shared, &queued, "Waiting for a worker, oldest last")) }
        }
        section aria-labelledby="finished" {
            h2 #finished { "Recently finished" }
            (jobs_table(&shared, &ended, "The last 20 jobs that ended"))
            p { a href="/jobs" { "All jobs →" } }
        }
    };
    let mut r = page(
        &shared,
        "Dashboard",
        "/",
        session.as_ref(),
        &html! { div data-refresh="3000" { (body) } },
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

// ---- history --------------------------------------------------------------

async fn history(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<api::JobsQuery>,
) -> PageResult {
    let session = page_access(&shared, &headers, "/jobs").await?;
    let filter = q.filter()?;
    let f = filter.clone();
    let s = Arc::clone(&shared);
    let jobs = blocking(move || s.db.jobs(&f)).await??;
    let link = |page: usize| {
        let mut url = format!("/jobs?page={page}");
        for (k, v) in [
            ("repo", &filter.repo),
            ("branch", &filter.branch),
            ("state", &filter.state),
            ("sha", &filter.sha),
        ] {
            if let Some(v) = v {
                let _ = write!(url, "&{k}={}", percent(v));
            }
        }
        url
    };
    let body = html! {
        h1 { "History" }
        form.filters method="get" action="/jobs" role="search" {
            label { "Repository " select name="repo" {
                option value="" { "any" }
                @for r in shared.repo_names() { option value=(r) selected[filter.repo.as_deref() == Some(r.as_str())] { (r) } }
            } }
            label { "Branch " input type="text" name="branch" value=[filter.branch.as_deref()] size="12"; }
            label { "State " select name="state" {
                option value="" { "any" }
                @for st in STATES { option value=(st) selected[filter.state.as_deref() == Some(*st)] { (st) } }
            } }
            label { "Commit " input type="search" name="sha" value=[filter.sha.as_deref()] placeholder="sha prefix" size="12" pattern="[0-9a-fA-F]*"; }
            button type="submit" { "Filter" }
            a href="/jobs" { "Clear" }
        }
        (jobs_table(&shared, &jobs, &format!("Page {}, newest first", filter.page)))
        nav.pages aria-label="Pages" {
            @if filter.page > 1 { a rel="prev" href=(link(filter.page - 1)) { "← Newer" } }
            @if jobs.len() == 50 { a rel="next" href=(link(filter.page + 1)) { "Older →" } }
        }
    };
    Ok(page(&shared, "History", "/jobs", session.as_ref(), &body))
}

// ---- job ------------------------------------------------------------------

#[derive(Deserialize)]
struct JobQuery {
    variant: Option<String>,
}

async fn job_of(shared: &Arc<Shared>, id: &str) -> Result<Job, PageError> {
    api::find_job(shared, id).await.map_err(|e| {
        if e.0 == StatusCode::NOT_FOUND {
            PageError::Status(
                StatusCode::NOT_FOUND,
                format!("Job {id} does not exist (or its history was deleted)."),
            )
        } else {
            e.into()
        }
    })
}

async fn job_page(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<JobQuery>,
) -> PageResult {
    let here = format!("/jobs/{}", percent(&id));
    let session = page_access(&shared, &headers, &here).await?;
    let job = job_of(&shared, &id).await?;
    let view = shared.view_of(job.id).await;
    let filter = q.variant.filter(|v| !v.is_empty());
    let now = jiff::Timestamp::now().as_millisecond();
    let active = job.is_active();
    let variants: Vec<serde_json::Value> = job
        .result
        .as_ref()
        .and_then(|r| r.get("variants"))
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default();
    let body = html! {
        header.job {
            h1 { "Job #" (job.id) " " (badge(&job.state, job_icon(&job.state))) }
            p.message { (job.message) }
            dl.facts {
                dt { "Repository" } dd { a href=(format!("/repos/{}", percent(&job.repo))) { (job.repo) } }
                dt { "Branch" } dd { (job.branch) }
                dt { "Commit" } dd { (commit(&shared, &job)) }
                @if !job.author.is_empty() { dt { "Author" } dd { (job.author) } }
                dt { "Queued" } dd { (when(job.created)) }
                @if let Some(t) = job.started { dt { "Started" } dd { (when(t)) } }
                @if let Some(t) = job.finished { dt { "Finished" } dd { (when(t)) } }
                @if let Some(d) = job_duration(&job) { dt { "Duration" } dd { (duration(d)) } }
                dt { "Attempts" } dd { (job.attempts) }
                @if !job.reason.is_empty() { dt { "Why" } dd.reason { (job.reason) } }
                @if let Some((b, c, f)) = counts(&job) { dt { "Variants" } dd { (b) " built, " (c) " cached, " (f) " failed" } }
            }
            @if let Some(s) = &session {
                div.actions {
                    @if active {
                        form.inline method="post" action=(format!("/jobs/{}/cancel", job.id)) {
                            input type="hidden" name="csrf" value=(s.csrf);
                            button.danger #cancel type="submit" { "Cancel" }
                        }
                    } @else {
                        form.inline method="post" action=(format!("/jobs/{}/retry", job.id)) {
                            input type="hidden" name="csrf" value=(s.csrf);
                            button #retry type="submit" { "Retry" }
                        }
                    }
                }
            }
        }
        section aria-labelledby="graph-h" {
            h2 #graph-h { "Variants" }
            div #graph { (graph(&view)) }
        }
        section aria-labelledby="timeline-h" {
            h2 #timeline-h { "Timeline" }
            div #timeline { (timeline(&view, active, now)) }
        }
        section aria-labelledby="log-h" {
            h2 #log-h { "Log" }
            form.filters method="get" action=(here) {
                label { "Variant " select #log-filter name="variant" {
                    option value="" { "all" }
                    @for v in &view.variants { option value=(v.name) selected[filter.as_deref() == Some(v.name.as_str())] { (v.name) } }
                } }
                button #filter-button type="submit" { "Show" }
                a href=(format!("/api/jobs/{}/log", job.id)) { "Raw log" }
                span #live role="status" data-state=(if active { "connecting" } else { "ended" }) {
                    @if active { "Live updates need JavaScript; reload to see more." } @else { "The job has ended." }
                }
            }
            div #log .log role="log" aria-label="Build log" tabindex="0"
                data-job=(job.id) data-last=(view.events) data-active=(active) {
                @for l in view.lines.iter().filter(|l| filter.as_ref().is_none_or(|f| *f == l.variant)) {
                    div.line data-id=(l.id) data-variant=(l.variant) { (PreEscaped(view::ansi_html(&l.text))) }
                }
            }
        }
        section aria-labelledby="artifacts-h" {
            h2 #artifacts-h { "Artifacts" }
            @if variants.is_empty() { p { @if active { "Artifacts appear when the job has ended." } @else { "This job kept no artifacts." } } }
            @for v in &variants {
                @let name = v["name"].as_str().unwrap_or_default();
                @let status = v["status"]["status"].as_str().unwrap_or_default();
                h3 #(format!("v-{name}")) { (name) " " (badge(status, NodeState::of_word(status).icon())) }
                p.links {
                    @if let Some(u) = v["manifest_url"].as_str() { a href=(u) { "Manifest (JSON)" } }
                    @if let Some(u) = v["sbom_url"].as_str() { " · " a href=(u) { "SBOM (SPDX JSON)" } }
                }
                @if let Some(list) = v["artifacts"].as_array().filter(|a| !a.is_empty()) {
                    div.scroll { table.artifacts {
                        thead { tr { th scope="col" { "File" } th scope="col" { "Format" } th scope="col" { "Size" } th scope="col" { "SHA-256" } } }
                        tbody { @for a in list {
                            tr {
                                td { a href=(a["url"].as_str().unwrap_or_default()) download { (a["name"].as_str().unwrap_or_default()) } }
                                td { (a["format"].as_str().unwrap_or_default()) }
                                td title=(format!("{} bytes", a["size"])) { (size(a["size"].as_u64().unwrap_or_default())) }
                                td { code.sha { (a["sha256"].as_str().unwrap_or_default()) } }
                            }
                        } }
                    } }
                }
            }
        }
    };
    let mut r = page(
        &shared,
        &format!("Job #{}", job.id),
        &here,
        session.as_ref(),
        &body,
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// The parts of a job page that change while it runs (graph and
/// timeline), folded from one read of its events.
async fn live_parts(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> PageResult {
    page_access(&shared, &headers, "/").await?;
    let job = job_of(&shared, &id).await?;
    let view = shared.view_of(job.id).await;
    let now = jiff::Timestamp::now().as_millisecond();
    let parts = html! {
        div #graph { (graph(&view)) }
        div #timeline { (timeline(&view, job.is_active(), now)) }
    };
    Ok(Html(parts.into_string()).into_response())
}

/// The variant graph: parents above children, one node per variant.
fn graph(view: &View) -> Markup {
    const H: usize = 48;
    const GAP_X: usize = 24;
    const GAP_Y: usize = 40;
    if view.variants.is_empty() {
        return html! { p { "The plan is not known yet." } };
    }
    let depths = view::depths(&view.variants);
    let longest = view
        .variants
        .iter()
        .map(|v| v.name.chars().count())
        .max()
        .unwrap_or(4);
    let w = (longest * 8 + 48).clamp(120, 280);
    let mut column = vec![0usize; depths.iter().max().copied().unwrap_or(0) + 1];
    let mut at = Vec::new();
    for d in &depths {
        at.push((column[*d], *d));
        column[*d] += 1;
    }
    let width = column.iter().max().copied().unwrap_or(1) * (w + GAP_X) + GAP_X;
    let height = column.len() * (H + GAP_Y) + GAP_Y / 2;
    let pos = |i: usize| {
        let (c, d) = at[i];
        (GAP_X + c * (w + GAP_X), GAP_Y / 2 + d * (H + GAP_Y))
    };
    let summary = view
        .variants
        .iter()
        .map(|v| format!("{}: {}", v.name, v.state.word()))
        .collect::<Vec<_>>()
        .join("; ");
    html! {
        svg.graph xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {width} {height}"))
            width=(width) role="img" aria-labelledby="graph-title" {
            title #graph-title { "Variant graph: " (summary) }
            @for (i, v) in view.variants.iter().enumerate() {
                @if let Some(j) = v.parent.as_ref().and_then(|p| view.variants.iter().position(|u| &u.name == p)) {
                    @let ((x1, y1), (x2, y2)) = (pos(j), pos(i));
                    path.edge d=(format!("M{} {} C{} {} {} {} {} {}", x1 + w / 2, y1 + H, x1 + w / 2, y1 + H + GAP_Y / 2, x2 + w / 2, y2 - GAP_Y / 2, x2 + w / 2, y2)) {}
                }
            }
            @for (i, v) in view.variants.iter().enumerate() {
                @let (x, y) = pos(i);
                a href=(format!("#v-{}", v.name)) {
                    g class=(format!("node state-{}", v.state.word())) data-variant=(v.name) data-state=(v.state.word()) {
                        title { (v.name) " (" (v.image) "): " (v.state.word()) @if let Some(s) = &v.step { ", " (s) } }
                        rect x=(x) y=(y) width=(w) height=(H) rx="8" {}
                        text.name x=(x + 12) y=(y + 20) { tspan aria-hidden="true" { (v.state.icon()) " " } (v.name) }
                        text.state x=(x + 12) y=(y + 38) { (v.state.word()) @if let Some(s) = &v.step { " · " (s) } }
                    }
                }
            }
        }
    }
}

/// The timeline: a row per variant, a bar per step.
fn timeline(view: &View, active: bool, now: i64) -> Markup {
    const LABEL: usize = 150;
    const CHART: usize = 620;
    const ROW: usize = 26;
    let Some(t0) = view.first else {
        return html! { p { "No steps yet." } };
    };
    let end = if active {
        now.max(view.last.unwrap_or(t0))
    } else {
        view.last.unwrap_or(t0)
    };
    let total = (end - t0).max(1);
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let x = |t: i64| LABEL as f64 + ((t - t0).clamp(0, total) as f64 / total as f64) * CHART as f64;
    let height = view.variants.len() * ROW + 30;
    #[allow(clippy::cast_precision_loss)]
    let seconds = total as f64 / 1000.0;
    html! {
        svg.timeline xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {} {height}", LABEL + CHART + 10))
            role="img" aria-labelledby="timeline-title" {
            title #timeline-title { "Timeline of " (view.variants.len()) " variants over " (format!("{seconds:.1}")) " s" }
            @for (i, v) in view.variants.iter().enumerate() {
                @let y = i * ROW + 4;
                g.row data-variant=(v.name) {
                    text.label x="0" y=(y + 15) { (v.name) }
                    @for s in &v.steps {
                        @let (a, b) = (x(s.start), x(s.end.unwrap_or(end)));
                        @let class = if s.end.is_none() { "bar running" } else if s.ok { "bar ok" } else { "bar failed" };
                        @let took = (s.end.unwrap_or(end) - s.start) as f64 / 1000.0;
                        rect class=(class) data-step=(s.name) x=(format!("{a:.1}")) y=(y + 3) width=(format!("{:.1}", (b - a).max(2.0))) height=(ROW - 8) {
                            title { (v.name) " · " (s.name) " · " (format!("{took:.1}")) " s" @if s.end.is_none() { " (running)" } @else if !s.ok { " (failed)" } }
                        }
                    }
                }
            }
            line.axis x1=(LABEL) x2=(LABEL + CHART) y1=(height - 24) y2=(height - 24) {}
            text.tick x=(LABEL) y=(height - 8) { "0 s" }
            text.tick x=(LABEL + CHART) y=(height - 8) text-anchor="end" { (format!("{seconds:.1}")) " s" }
        }
    }
}

// ---- repository -----------------------------------------------------------

async fn repo_page(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> PageResult {
    let here = format!("/repos/{}", percent(&name));
    let session = page_access(&shared, &headers, &here).await?;
    let repo = shared.config.repo(&name).cloned().ok_or_else(|| {
        PageError::Status(
            StatusCode::NOT_FOUND,
            format!("Repository `{name}` is not configured in serve.toml."),
        )
    })?;
    let s = Arc::clone(&shared);
    let r = repo.name.clone();
    let branches = blocking(move || s.db.branches(&r)).await??;
    // Each branch's newest successful job (what `latest` points at).
    let mut latest = Vec::new();
    for b in &branches {
        let id = crate::runner::latest_of(&shared, &repo.name, &b.branch);
        let job = match id {
            Some(id) => {
                let s = Arc::clone(&shared);
                blocking(move || s.db.job(id)).await??
            }
            None => None,
        };
        latest.push(job);
    }
    let tree = match latest.iter().flatten().max_by_key(|j| j.id) {
        Some(j) => Some((j.clone(), shared.view_of(j.id).await)),
        None => None,
    };
    let body = html! {
        h1 { "Repository " (repo.name) }
        p.muted { code { (repo.url) } @if !repo.branch_patterns.is_empty() { " · builds " (repo.branch_patterns.join(", ")) } }
        section aria-labelledby="branches" {
            h2 #branches { "Branches" }
            div.scroll { table {
                thead { tr { th scope="col" { "Branch" } th scope="col" { "Newest job" } th scope="col" { "Last success" } th scope="col" { "Jobs" } } }
                tbody {
                    @for (b, l) in branches.iter().zip(&latest) {
                        tr {
                            th scope="row" { (b.branch) }
                            td { a href=(format!("/jobs/{}", b.id)) { "#" (b.id) } " " (badge(&b.state, job_icon(&b.state))) " " (commit(&shared, b)) }
                            td { @if let Some(l) = l { a href=(format!("/jobs/{}", l.id)) { "#" (l.id) } " " (commit(&shared, l)) } @else { "none" } }
                            td { a href=(format!("/jobs?repo={}&branch={}", percent(&repo.name), percent(&b.branch))) { "history" } }
                        }
                    }
                    @if branches.is_empty() { tr { td colspan="4" { "No pushes yet." } } }
                }
            } }
        }
        section aria-labelledby="latest" {
            h2 #latest { "Latest artifacts" }
            @for (b, l) in branches.iter().zip(&latest) {
                @if let Some(l) = l {
                    h3 { (b.branch) " · job #" (l.id) }
                    ul.artifact-list {
                        @for v in l.result.as_ref().and_then(|r| r.get("variants")).and_then(|v| v.as_array()).into_iter().flatten() {
                            @let variant = v["name"].as_str().unwrap_or_default();
                            @for a in v["artifacts"].as_array().into_iter().flatten() {
                                @let file = a["name"].as_str().unwrap_or_default();
                                li {
                                    a href=(format!("/artifacts/{}/{}/latest/{}/{}", percent(&repo.name), percent(&b.branch), percent(variant), percent(file))) { (variant) "/" (file) }
                                    " " span.muted { (size(a["size"].as_u64().unwrap_or_default())) } " "
                                    code.sha title="SHA-256" { (a["sha256"].as_str().unwrap_or_default()) }
                                }
                            }
                        }
                    }
                }
            }
            @if latest.iter().all(Option::is_none) { p { "No branch has a successful build yet." } }
        }
        section aria-labelledby="tree" {
            h2 #tree { "Image tree" }
            @match &tree {
                Some((j, v)) if !v.variants.is_empty() => {
                    p.muted { "As of job #" (j.id) ", commit " (commit(&shared, j)) "." }
                    @let images = {
                        let mut images: Vec<&str> = Vec::new();
                        for x in &v.variants { if !images.contains(&x.image.as_str()) { images.push(&x.image); } }
                        images
                    };
                    ul.tree {
                        @for image in images {
                            li { strong { (image) }
                                ul { @for x in v.variants.iter().filter(|x| x.image == image) {
                                    li { (x.name) @if let Some(p) = &x.parent { span.muted { " ← " (p) } } }
                                } }
                            }
                        }
                    }
                }
                _ => p { "Known after the first successful build." },
            }
        }
    };
    Ok(page(&shared, &repo.name, &here, session.as_ref(), &body))
}
