//! `kiln serve`: a build service driven by webhooks.
//!
//! A push to a tracked branch of a configured repository is delivered as a
//! signed webhook (GitHub's or Gitea's format), checked before it is
//! parsed, and recorded as a job in SQLite before it is acknowledged. Build
//! workers (threads) take jobs in order, build the commit's tree through
//! `kiln-build` against one shared layer store, so only what changed is
//! rebuilt, and report the result as a commit status. Jobs, their logs,
//! events (live over Server-Sent Events) and artifacts are served over a
//! JSON API.
//!
//! The library never prints or exits; [`serve`] returns when the server
//! has drained after SIGTERM or SIGINT.

mod api;
pub mod config;
pub mod db;
mod error;
mod forge;
pub mod hooks;
mod runner;
pub mod web;

use std::sync::Arc;
use std::sync::atomic::Ordering;

pub use api::{BODY_LIMIT, token_hash};
pub use config::Config;
pub use error::Error;

/// Runs the service until SIGTERM or SIGINT: jobs left running by a dead
/// server are requeued, workers start, the listener opens; on the signal
/// nothing new is accepted or started, running builds are cancelled
/// (marked interrupted, run again at the next start) or waited for, per
/// `shutdown`.
///
/// `ready` is called with the address actually bound (so `listen` may use
/// port 0) once the listener is open and before any request is served.
pub fn serve(mut config: Config, ready: impl FnOnce(std::net::SocketAddr)) -> Result<(), Error> {
    let listener = std::net::TcpListener::bind(config.listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|error| Error::Io {
            action: "listen on",
            path: config.listen.to_string().into(),
            error,
        })?;
    let bound = listener.local_addr().unwrap_or(config.listen);
    if config.base_url == format!("http://{}", config.listen) {
        config.base_url = format!("http://{bound}");
    }
    config.listen = bound;
    let db = db::Db::open(&config.database)?;
    db.recover(config.retries)?;
    let shared = Arc::new(runner::Shared {
        db,
        live: std::sync::Mutex::default(),
        running: std::sync::Mutex::default(),
        draining: false.into(),
        wake: (std::sync::Mutex::new(()), std::sync::Condvar::new()),
        deliveries: std::sync::Mutex::default(),
        busy: 0.into(),
        config,
    });
    let workers: Vec<_> = (0..shared.config.workers)
        .map(|i| {
            let s = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("kiln-worker-{i}"))
                .spawn(move || runner::worker(&s))
                .map_err(|error| Error::Io {
                    action: "start a worker for",
                    path: shared.config.data_dir.clone(),
                    error,
                })
        })
        .collect::<Result<_, _>>()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| Error::Io {
            action: "start the runtime for",
            path: shared.config.data_dir.clone(),
            error,
        })?;
    let listen = shared.config.listen;
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener).map_err(|error| Error::Io {
            action: "listen on",
            path: listen.to_string().into(),
            error,
        })?;
        ready(listen);
        let s = Arc::clone(&shared);
        axum::serve(listener, api::router(Arc::clone(&shared)))
            .with_graceful_shutdown(async move {
                kiln_boot::server::shutdown_signal().await;
                s.draining.store(true, Ordering::SeqCst);
                // Cancel now, not after the last connection closed: the
                // open SSE streams of running jobs end with their jobs.
                if s.config.shutdown == config::Shutdown::Cancel {
                    cancel_all(&s);
                }
            })
            .await
            .map_err(|error| Error::Io {
                action: "serve on",
                path: listen.to_string().into(),
                error,
            })
    });
    shared.draining.store(true, Ordering::SeqCst);
    if shared.config.shutdown == config::Shutdown::Cancel {
        cancel_all(&shared);
    }
    shared.kick();
    for w in workers {
        let _ = w.join();
    }
    result
}

/// Stops every running build as `interrupted` (run again at the next
/// start).
fn cancel_all(shared: &runner::Shared) {
    for token in shared
        .running
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .values()
    {
        token.cancel_with("interrupted");
    }
}

/// Makes an API token named `name`: the token is returned (shown once),
/// only its SHA-256 is stored.
pub fn create_token(config: &Config, name: &str) -> Result<Option<String>, Error> {
    use rand::RngCore as _;
    let db = db::Db::open(&config.database)?;
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = format!("kiln_{}", hex::encode(bytes));
    Ok(db.add_token(name, &token_hash(&token))?.then_some(token))
}
