//! `serve.toml`: what the service listens on, where it keeps its data,
//! which repositories it builds and which forge it reports to.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::error::Error;

/// The service's configuration, checked.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the service listens (default `127.0.0.1:8470`: loopback).
    pub listen: SocketAddr,
    /// Where it keeps the database, mirrors, logs, artifacts and the
    /// shared layer store.
    pub data_dir: PathBuf,
    /// The SQLite database file.
    pub database: PathBuf,
    /// Builds run at once.
    pub workers: usize,
    /// A build's time limit.
    pub timeout: Duration,
    /// What SIGTERM does to running builds.
    pub shutdown: Shutdown,
    /// How often an interrupted job is tried again.
    pub retries: u32,
    /// Jobs per branch whose artifacts are kept.
    pub keep_jobs: usize,
    /// Whether read endpoints need no token.
    pub public: bool,
    /// The service's address as users reach it (commit statuses link to
    /// `{base_url}/jobs/{id}`).
    pub base_url: String,
    /// The repositories built.
    pub repos: Vec<Repo>,
    /// Where commit statuses go.
    pub forge: Option<Forge>,
}

/// What SIGTERM does to running builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shutdown {
    /// Cancel them; they are marked interrupted and run again at the next
    /// start.
    Cancel,
    /// Let them finish.
    Wait,
}

/// A repository the service builds.
#[derive(Clone, Debug)]
pub struct Repo {
    /// Its name in URLs and the API.
    pub name: String,
    /// Any URL `git fetch` takes.
    pub url: String,
    /// Branches built (globs).
    pub branches: globset::GlobSet,
    /// The branch globs as written.
    pub branch_patterns: Vec<String>,
    /// The kiln tree's folder inside the repository.
    pub tree: PathBuf,
    /// The repository's web page (`https://github.com/acme/images`), for
    /// links to commits; derived from the forge when not set.
    pub web_url: Option<String>,
    /// The webhook secret; `None` only with `allow_unsigned`.
    pub secret: Option<Vec<u8>>,
}

/// A forge's REST API for commit statuses.
#[derive(Clone, Debug)]
pub struct Forge {
    /// GitHub or Gitea/Forgejo.
    pub kind: ForgeKind,
    /// `https://api.github.com`, `https://gitea.example/api/v1`.
    pub api_url: String,
    /// The API token (never logged).
    pub token: String,
}

/// The forges whose status API kiln speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForgeKind {
    /// GitHub.
    Github,
    /// Gitea and Forgejo.
    Gitea,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    listen: Option<Spanned<String>>,
    data_dir: Spanned<String>,
    database: Option<Spanned<String>>,
    workers: Option<usize>,
    timeout: Option<Spanned<String>>,
    shutdown: Option<Shutdown>,
    retries: Option<u32>,
    keep_jobs: Option<usize>,
    public: Option<bool>,
    base_url: Option<String>,
    #[serde(default)]
    repos: Vec<Spanned<RawRepo>>,
    forge: Option<Spanned<RawForge>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepo {
    name: Spanned<String>,
    url: String,
    branches: Option<Spanned<Vec<String>>>,
    tree: Option<String>,
    secret_file: Option<Spanned<String>>,
    #[serde(default)]
    allow_unsigned: bool,
    web_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForge {
    kind: ForgeKind,
    api_url: String,
    token_file: Spanned<String>,
}

impl Config {
    /// Reads and checks `path`; relative paths in it start at its folder.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|error| Error::Io {
            action: "read",
            path: path.to_owned(),
            error,
        })?;
        let at = |span: std::ops::Range<usize>, message: String| {
            let (line, column) = kiln_config::diagnostic::line_col(&text, span.start);
            Error::Config {
                file: path.to_owned(),
                line,
                column,
                message,
            }
        };
        let raw: Raw = toml::from_str(&text)
            .map_err(|e| at(e.span().unwrap_or(0..0), e.message().trim_end().to_owned()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &str| base.join(p);
        let listen = match &raw.listen {
            None => SocketAddr::from(([127, 0, 0, 1], 8470)),
            Some(l) => l.get_ref().parse().map_err(|_| {
                at(
                    l.span(),
                    format!(
                        "`{}` is not an address such as `127.0.0.1:8470`",
                        l.get_ref()
                    ),
                )
            })?,
        };
        let timeout = match &raw.timeout {
            None => Duration::from_secs(45 * 60),
            Some(t) => kiln_config::schema::parse_duration(t.get_ref()).ok_or_else(|| {
                at(
                    t.span(),
                    format!("`{}` is not a duration such as `45m`", t.get_ref()),
                )
            })?,
        };
        let data_dir = resolve(raw.data_dir.get_ref());
        let database = match &raw.database {
            None => data_dir.join("kiln.db"),
            Some(d) if d.get_ref().starts_with("postgres://") => {
                return Err(at(
                    d.span(),
                    "PostgreSQL is not supported by this kiln yet; leave `database` out for SQLite in `data_dir`".into(),
                ));
            }
            Some(d) => resolve(d.get_ref().trim_start_matches("sqlite://")),
        };
        let mut repos = Vec::new();
        for r in &raw.repos {
            let span = r.span();
            let r = r.get_ref();
            let name = r.name.get_ref();
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                || name.starts_with('.')
            {
                return Err(at(
                    r.name.span(),
                    format!("repository name `{name}` must be letters, digits, `-`, `_` and `.`"),
                ));
            }
            if repos.iter().any(|x: &Repo| x.name == *name) {
                return Err(at(
                    r.name.span(),
                    format!("two repositories are named `{name}`"),
                ));
            }
            let patterns = r
                .branches
                .as_ref()
                .map_or_else(|| vec!["main".to_owned()], |b| b.get_ref().clone());
            let mut set = globset::GlobSetBuilder::new();
            for p in &patterns {
                let glob = globset::Glob::new(p).map_err(|e| {
                    at(
                        r.branches.as_ref().map_or(span.clone(), Spanned::span),
                        format!("branch pattern `{p}`: {e}"),
                    )
                })?;
                set.add(glob);
            }
            let branches = set.build().map_err(|e| at(span.clone(), e.to_string()))?;
            let secret = match &r.secret_file {
                Some(f) => {
                    let file = resolve(f.get_ref());
                    let bytes = std::fs::read(&file).map_err(|e| {
                        at(
                            f.span(),
                            format!("failed to read the secret `{}`: {e}", file.display()),
                        )
                    })?;
                    let secret = String::from_utf8_lossy(&bytes).trim().as_bytes().to_vec();
                    if secret.is_empty() {
                        return Err(at(
                            f.span(),
                            format!("the secret `{}` is empty", file.display()),
                        ));
                    }
                    Some(secret)
                }
                None if r.allow_unsigned => None,
                None => {
                    return Err(at(
                        span,
                        format!(
                            "repository `{name}` has no `secret_file`: anyone could trigger its builds\n  help: set `secret_file` to a file holding the webhook secret, or `allow_unsigned = true` on a trusted network"
                        ),
                    ));
                }
            };
            let tree = PathBuf::from(r.tree.as_deref().unwrap_or("."));
            if tree.is_absolute()
                || tree
                    .components()
                    .any(|c| c == std::path::Component::ParentDir)
            {
                return Err(at(
                    span,
                    format!("`tree` of `{name}` must be a relative path inside the repository"),
                ));
            }
            repos.push(Repo {
                name: name.clone(),
                url: r.url.clone(),
                branches,
                branch_patterns: patterns,
                tree,
                web_url: r
                    .web_url
                    .as_ref()
                    .map(|u| u.trim_end_matches('/').to_owned()),
                secret,
            });
        }
        let forge = match &raw.forge {
            None => None,
            Some(f) => {
                let f = f.get_ref();
                let file = resolve(f.token_file.get_ref());
                let token = std::fs::read_to_string(&file).map_err(|e| {
                    at(
                        f.token_file.span(),
                        format!("failed to read the token `{}`: {e}", file.display()),
                    )
                })?;
                Some(Forge {
                    kind: f.kind,
                    api_url: f.api_url.trim_end_matches('/').to_owned(),
                    token: token.trim().to_owned(),
                })
            }
        };
        Ok(Config {
            base_url: raw
                .base_url
                .clone()
                .unwrap_or_else(|| format!("http://{listen}"))
                .trim_end_matches('/')
                .to_owned(),
            listen,
            data_dir,
            database,
            workers: raw.workers.unwrap_or(1),
            timeout,
            shutdown: raw.shutdown.unwrap_or(Shutdown::Cancel),
            retries: raw.retries.unwrap_or(1),
            keep_jobs: raw.keep_jobs.unwrap_or(10).max(1),
            public: raw.public.unwrap_or(true),
            repos,
            forge,
        })
    }

    /// The repository named `name`.
    #[must_use]
    pub fn repo(&self, name: &str) -> Option<&Repo> {
        self.repos.iter().find(|r| r.name == name)
    }
}
