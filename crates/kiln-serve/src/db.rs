//! The durable part of the service: jobs, webhook deliveries and API
//! tokens in SQLite (WAL). Every acknowledgement is sent after the
//! transaction that records it commits.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::error::Error;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  repo TEXT NOT NULL,
  branch TEXT NOT NULL,
  sha TEXT NOT NULL,
  full_name TEXT NOT NULL DEFAULT '',
  message TEXT NOT NULL DEFAULT '',
  author TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL,
  reason TEXT NOT NULL DEFAULT '',
  skip TEXT NOT NULL DEFAULT '',
  attempts INTEGER NOT NULL DEFAULT 0,
  created INTEGER NOT NULL,
  started INTEGER,
  finished INTEGER,
  result TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, id);
CREATE TABLE IF NOT EXISTS deliveries (
  id TEXT PRIMARY KEY,
  job INTEGER,
  result TEXT NOT NULL,
  received INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
  hash TEXT PRIMARY KEY,
  csrf TEXT NOT NULL,
  created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
  name TEXT PRIMARY KEY,
  hash TEXT NOT NULL UNIQUE,
  created INTEGER NOT NULL
);
";

/// A job's states.
pub const STATES: &[&str] = &[
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "timed-out",
    "interrupted",
    "skipped",
];

/// One job as the database holds it.
#[derive(Clone, Debug, Serialize)]
pub struct Job {
    /// Its number.
    pub id: i64,
    /// The repository (its name in `serve.toml`).
    pub repo: String,
    /// The branch.
    pub branch: String,
    /// The commit.
    pub sha: String,
    /// `owner/name` on the forge, for commit statuses.
    pub full_name: String,
    /// The head commit's message.
    pub message: String,
    /// Its author.
    pub author: String,
    /// One of [`STATES`].
    pub state: String,
    /// Why it is in that state (skipped, failed, timed out).
    pub reason: String,
    /// Images skipped by `Kiln-Skip:` trailers, space-separated.
    pub skip: String,
    /// How often it was started.
    pub attempts: i64,
    /// Unix times.
    pub created: i64,
    /// When it started (last attempt).
    pub started: Option<i64>,
    /// When it ended.
    pub finished: Option<i64>,
    /// Per-variant results (JSON), once finished.
    pub result: Option<serde_json::Value>,
}

impl Job {
    /// Whether it is waiting for a worker or being built.
    #[must_use]
    pub fn is_active(&self) -> bool {
        self.state == "queued" || self.state == "running"
    }

    /// A new queued job of the same commit, started for `reason`.
    #[must_use]
    pub fn again(self, reason: String) -> NewJob {
        NewJob {
            repo: self.repo,
            branch: self.branch,
            sha: self.sha,
            full_name: self.full_name,
            message: self.message,
            author: self.author,
            state: "queued",
            reason,
            skip: self.skip,
        }
    }
}

/// A new job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewJob {
    /// See [`Job`].
    pub repo: String,
    /// See [`Job`].
    pub branch: String,
    /// See [`Job`].
    pub sha: String,
    /// See [`Job`].
    pub full_name: String,
    /// See [`Job`].
    pub message: String,
    /// See [`Job`].
    pub author: String,
    /// `queued` or `skipped`.
    pub state: &'static str,
    /// See [`Job`].
    pub reason: String,
    /// See [`Job`].
    pub skip: String,
}

/// Filters of `GET /api/jobs`.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Repository.
    pub repo: Option<String>,
    /// Branch.
    pub branch: Option<String>,
    /// State.
    pub state: Option<String>,
    /// A prefix of the commit.
    pub sha: Option<String>,
    /// 1-based page of 50.
    pub page: usize,
}

/// The database.
#[derive(Debug)]
pub struct Db {
    conn: Mutex<Connection>,
    path: PathBuf,
}

/// Seconds since 1970.
#[must_use]
pub fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn job_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<Job> {
    let result: Option<String> = row.get(14)?;
    Ok(Job {
        id: row.get(0)?,
        repo: row.get(1)?,
        branch: row.get(2)?,
        sha: row.get(3)?,
        full_name: row.get(4)?,
        message: row.get(5)?,
        author: row.get(6)?,
        state: row.get(7)?,
        reason: row.get(8)?,
        skip: row.get(9)?,
        attempts: row.get(10)?,
        created: row.get(11)?,
        started: row.get(12)?,
        finished: row.get(13)?,
        result: result.and_then(|r| serde_json::from_str(&r).ok()),
    })
}

const COLUMNS: &str = "id, repo, branch, sha, full_name, message, author, state, reason, skip, attempts, created, started, finished, result";

impl Db {
    /// Opens (creating) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let err = |source| Error::Database {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|error| Error::Io {
                action: "create",
                path: dir.to_owned(),
                error,
            })?;
        }
        let conn = Connection::open(path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(Self {
            conn: Mutex::new(conn),
            path: path.to_owned(),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T, Error> {
        let mut conn = self
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut conn).map_err(|source| Error::Database {
            path: self.path.clone(),
            source,
        })
    }

    /// Records a webhook delivery and, when `job` is given, its job, in
    /// one transaction. A delivery seen before returns the job it made
    /// then (`Ok((existing, false))`).
    pub fn deliver(
        &self,
        delivery: Option<&str>,
        job: Option<&NewJob>,
        result: &str,
    ) -> Result<(Option<i64>, bool), Error> {
        self.with(|c| {
            let tx = c.transaction()?;
            if let Some(d) = delivery {
                let seen: Option<Option<i64>> = tx
                    .query_row("SELECT job FROM deliveries WHERE id = ?1", [d], |r| r.get(0))
                    .optional()?;
                if let Some(existing) = seen {
                    return Ok((existing, false));
                }
            }
            let id = match job {
                Some(j) => {
                    tx.execute(
                        "INSERT INTO jobs (repo, branch, sha, full_name, message, author, state, reason, skip, created)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                        params![j.repo, j.branch, j.sha, j.full_name, j.message, j.author, j.state, j.reason, j.skip, now()],
                    )?;
                    Some(tx.last_insert_rowid())
                }
                None => None,
            };
            if let Some(d) = delivery {
                tx.execute(
                    "INSERT INTO deliveries (id, job, result, received) VALUES (?1, ?2, ?3, ?4)",
                    params![d, id, result, now()],
                )?;
            }
            tx.commit()?;
            Ok((id, true))
        })
    }

    /// Takes the oldest queued job: it is `running` from now on.
    pub fn claim(&self) -> Result<Option<Job>, Error> {
        self.with(|c| {
            let tx = c.transaction()?;
            let job = tx
                .query_row(
                    &format!("SELECT {COLUMNS} FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1"),
                    [],
                    job_of,
                )
                .optional()?;
            if let Some(j) = &job {
                tx.execute(
                    "UPDATE jobs SET state = 'running', started = ?2, attempts = attempts + 1 WHERE id = ?1",
                    params![j.id, now()],
                )?;
            }
            tx.commit()?;
            Ok(job.map(|mut j| {
                j.state = "running".into();
                j.attempts += 1;
                j
            }))
        })
    }

    /// Ends a job.
    pub fn finish(
        &self,
        id: i64,
        state: &str,
        reason: &str,
        result: Option<&serde_json::Value>,
    ) -> Result<(), Error> {
        let result = result.map(ToString::to_string);
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET state = ?2, reason = ?3, finished = ?4, result = COALESCE(?5, result) WHERE id = ?1",
                params![id, state, reason, now(), result],
            )
            .map(|_| ())
        })
    }

    /// Cancels a queued job; `false` if it was not queued.
    pub fn cancel_queued(&self, id: i64) -> Result<bool, Error> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET state = 'cancelled', reason = 'cancelled before it started', finished = ?2 WHERE id = ?1 AND state = 'queued'",
                params![id, now()],
            )
            .map(|n| n == 1)
        })
    }

    /// At start: jobs left `running` by a server that died are
    /// `interrupted`, and queued again while they have tries left.
    pub fn recover(&self, retries: u32) -> Result<usize, Error> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "UPDATE jobs SET state = 'queued', reason = 'interrupted: requeued' WHERE state IN ('running', 'interrupted') AND attempts <= ?1",
                [retries],
            )?;
            let n = tx.execute(
                "UPDATE jobs SET state = 'interrupted', reason = 'interrupted too often', finished = ?1 WHERE state = 'running'",
                [now()],
            )?;
            tx.commit()?;
            Ok(n)
        })
    }

    /// One job.
    pub fn job(&self, id: i64) -> Result<Option<Job>, Error> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"),
                [id],
                job_of,
            )
            .optional()
        })
    }

    /// Jobs, newest first, 50 a page.
    pub fn jobs(&self, f: &Filter) -> Result<Vec<Job>, Error> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {COLUMNS} FROM jobs
                 WHERE (?1 IS NULL OR repo = ?1) AND (?2 IS NULL OR branch = ?2)
                   AND (?3 IS NULL OR state = ?3) AND (?4 IS NULL OR sha LIKE ?4 || '%')
                 ORDER BY id DESC LIMIT 50 OFFSET ?5"
            ))?;
            let offset = i64::try_from(f.page.saturating_sub(1) * 50).unwrap_or(0);
            stmt.query_map(params![f.repo, f.branch, f.state, f.sha, offset], job_of)?
                .collect()
        })
    }

    /// How many jobs are in each state.
    pub fn counts(&self) -> Result<Vec<(String, i64)>, Error> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT state, count(*) FROM jobs GROUP BY state")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
    }

    /// Durations (seconds) of finished builds.
    pub fn durations(&self) -> Result<Vec<i64>, Error> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT finished - started FROM jobs WHERE started IS NOT NULL AND finished IS NOT NULL",
            )?;
            stmt.query_map([], |r| r.get(0))?.collect()
        })
    }

    /// The newest succeeded jobs of a branch beyond the first `keep`.
    pub fn beyond(&self, repo: &str, branch: &str, keep: usize) -> Result<Vec<i64>, Error> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT id FROM jobs WHERE repo = ?1 AND branch = ?2 AND finished IS NOT NULL ORDER BY id DESC LIMIT -1 OFFSET ?3",
            )?;
            stmt.query_map(params![repo, branch, i64::try_from(keep).unwrap_or(i64::MAX)], |r| r.get(0))?
                .collect()
        })
    }

    /// Stores a new API token's hash.
    pub fn add_token(&self, name: &str, hash: &str) -> Result<bool, Error> {
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO tokens (name, hash, created) VALUES (?1, ?2, ?3)",
                params![name, hash, now()],
            )
            .map(|n| n == 1)
        })
    }

    /// Whether a token with this hash exists.
    pub fn has_token(&self, hash: &str) -> Result<bool, Error> {
        self.with(|c| {
            c.query_row("SELECT 1 FROM tokens WHERE hash = ?1", [hash], |_| Ok(()))
                .optional()
                .map(|r| r.is_some())
        })
    }

    /// Jobs that have ended, newest first.
    pub fn ended(&self, limit: usize) -> Result<Vec<Job>, Error> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {COLUMNS} FROM jobs WHERE state NOT IN ('queued', 'running')
                 ORDER BY id DESC LIMIT ?1"
            ))?;
            stmt.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], job_of)?
                .collect()
        })
    }

    /// Each branch of `repo` with its newest job, most recent first.
    pub fn branches(&self, repo: &str) -> Result<Vec<Job>, Error> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {COLUMNS} FROM jobs WHERE id IN
                   (SELECT max(id) FROM jobs WHERE repo = ?1 GROUP BY branch)
                 ORDER BY id DESC"
            ))?;
            stmt.query_map([repo], job_of)?.collect()
        })
    }

    /// Stores a browser session (its hash) and its CSRF token.
    pub fn add_session(&self, hash: &str, csrf: &str) -> Result<(), Error> {
        self.with(|c| {
            c.execute(
                "INSERT INTO sessions (hash, csrf, created) VALUES (?1, ?2, ?3)",
                params![hash, csrf, now()],
            )
            .map(|_| ())
        })
    }

    /// The CSRF token of the session with this hash, if it exists and is
    /// younger than `max_age` seconds.
    pub fn session(&self, hash: &str, max_age: i64) -> Result<Option<String>, Error> {
        self.with(|c| {
            c.query_row(
                "SELECT csrf FROM sessions WHERE hash = ?1 AND created > ?2",
                params![hash, now() - max_age],
                |r| r.get(0),
            )
            .optional()
        })
    }

    /// Ends a session.
    pub fn drop_session(&self, hash: &str) -> Result<(), Error> {
        self.with(|c| {
            c.execute("DELETE FROM sessions WHERE hash = ?1", [hash])
                .map(|_| ())
        })
    }

    /// Every delivery's job (for tests and audits).
    pub fn deliveries(&self) -> Result<Vec<(String, Option<i64>, String)>, Error> {
        self.with(|c| {
            let mut stmt =
                c.prepare("SELECT id, job, result FROM deliveries ORDER BY received, id")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
    }
}
