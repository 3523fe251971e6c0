//! Fetching bytes from `http://`, `https://` and `file://` URLs, with
//! retries. HTTPS is rustls, checking certificates against the system's
//! trust store (`ca-certificates`, and whatever CA a site adds there), as
//! apt does.
//!
//! Owns the HTTP client, the retry policy (exponential backoff on network
//! errors and 5xx answers; never on 404) and `file://` access. Knows nothing
//! about what it fetches: verification happens in the callers.

use std::io::{self, Read};
use std::time::Duration;

use crate::error::Error;
use crate::progress::{Event, Progress};

/// How often and how patiently to retry a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, the first included (at least 1).
    pub attempts: u32,
    /// Delay before the second attempt; doubled each time after.
    pub initial_delay: Duration,
    /// Upper bound on one delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial_delay
            .saturating_mul(factor)
            .min(self.max_delay)
    }
}

/// Why one attempt failed.
pub(crate) enum AttemptError {
    /// Worth retrying: the network or the server failed.
    Network(Box<dyn std::error::Error + Send + Sync>),
    /// Not worth retrying.
    Fatal(Error),
}

impl From<io::Error> for AttemptError {
    fn from(e: io::Error) -> Self {
        AttemptError::Network(Box::new(e))
    }
}

/// Fetches URLs. Cheap to share between threads.
#[derive(Debug, Clone)]
pub(crate) struct Transport {
    agent: ureq::Agent,
    retry: RetryPolicy,
}

impl Transport {
    pub fn new(retry: RetryPolicy) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::PlatformVerifier)
                    .build(),
            )
            .build();
        Self {
            agent: ureq::Agent::with_parts(
                config,
                ureq::unversioned::transport::DefaultConnector::new(),
                CachingResolver::default(),
            ),
            retry,
        }
    }

    /// Reads `url` into memory (at most `limit` bytes). `Ok(None)` if the
    /// server says it does not exist (404/410, or a missing `file://` path).
    pub fn get(
        &self,
        url: &str,
        limit: u64,
        progress: &dyn Progress,
    ) -> Result<Option<Vec<u8>>, Error> {
        self.fetch_with(url, progress, &mut |reader| {
            let mut out = Vec::new();
            reader.take(limit.saturating_add(1)).read_to_end(&mut out)?;
            if out.len() as u64 > limit {
                return Err(AttemptError::Fatal(Error::TooLarge {
                    url: url.to_owned(),
                    limit,
                }));
            }
            Ok(out)
        })
    }

    /// Opens `url` and hands its body to `consume`, retrying the whole
    /// attempt on network errors. `consume` must start over on each call.
    pub fn fetch_with<T>(
        &self,
        url: &str,
        progress: &dyn Progress,
        consume: &mut dyn FnMut(&mut dyn Read) -> Result<T, AttemptError>,
    ) -> Result<Option<T>, Error> {
        let attempts = self.retry.attempts.max(1);
        let mut attempt = 1;
        loop {
            progress.event(&Event::Fetching { url });
            let error = match self.attempt(url, consume) {
                Ok(value) => return Ok(value),
                Err(AttemptError::Fatal(e)) => return Err(e),
                Err(AttemptError::Network(e)) => e,
            };
            if attempt >= attempts {
                return Err(Error::Fetch {
                    url: url.to_owned(),
                    attempts,
                    source: error,
                });
            }
            let delay = self.retry.delay(attempt);
            progress.event(&Event::Retrying {
                url,
                attempt,
                delay,
                error: &error.to_string(),
            });
            std::thread::sleep(delay);
            attempt += 1;
        }
    }

    fn attempt<T>(
        &self,
        url: &str,
        consume: &mut dyn FnMut(&mut dyn Read) -> Result<T, AttemptError>,
    ) -> Result<Option<T>, AttemptError> {
        if let Some(path) = url.strip_prefix("file://") {
            let mut file = match std::fs::File::open(path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(source) => {
                    return Err(AttemptError::Fatal(Error::Fetch {
                        url: url.to_owned(),
                        attempts: 1,
                        source: Box::new(source),
                    }));
                }
            };
            return consume(&mut file).map(Some);
        }
        if !url.starts_with("http://") && !url.starts_with("https://") {
            return Err(AttemptError::Fatal(Error::UnsupportedUri {
                url: url.to_owned(),
            }));
        }
        let response = match self.agent.get(url).call() {
            Ok(response) => response,
            Err(e @ (ureq::Error::BadUri(_) | ureq::Error::Http(_))) => {
                return Err(AttemptError::Fatal(Error::Fetch {
                    url: url.to_owned(),
                    attempts: 1,
                    source: Box::new(e),
                }));
            }
            Err(e) => return Err(AttemptError::Network(Box::new(e))),
        };
        let status = response.status().as_u16();
        match status {
            200..=299 => {}
            404 | 410 => return Ok(None),
            429 | 500..=599 => {
                return Err(AttemptError::Network(
                    format!("the server answered HTTP {status}").into(),
                ));
            }
            _ => {
                return Err(AttemptError::Fatal(Error::HttpStatus {
                    url: url.to_owned(),
                    status,
                }));
            }
        }
        let mut reader = response
            .into_body()
            .into_with_config()
            .limit(u64::MAX)
            .reader();
        consume(&mut reader).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy {
            attempts: 10,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
        };
        let delays: Vec<_> = (1..=5).map(|a| policy.delay(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        assert_eq!(policy.delay(60), Duration::from_millis(500));
    }
}

/// Resolves each host once per process.
///
/// ureq asks the resolver for every request, even one that then reuses a
/// pooled connection; a hundred package downloads meant hundreds of DNS
/// queries, and on a resolver that drops the odd UDP packet each loss
/// stalled a download for glibc's 5-second retry. Mirrors do not move
/// during a build.
#[derive(Debug, Default)]
struct CachingResolver {
    inner: ureq::unversioned::resolver::DefaultResolver,
    cache: std::sync::Mutex<
        std::collections::HashMap<String, ureq::unversioned::resolver::ResolvedSocketAddrs>,
    >,
}

impl ureq::unversioned::resolver::Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let key = format!(
            "{}:{}",
            uri.host().unwrap_or_default(),
            uri.port_u16().unwrap_or(80)
        );
        if let Some(hit) = self
            .cache
            .lock()
            .map_err(|_| ureq::Error::HostNotFound)?
            .get(&key)
        {
            return Ok(hit.clone());
        }
        let addrs = self.inner.resolve(uri, config, timeout)?;
        self.cache
            .lock()
            .map_err(|_| ureq::Error::HostNotFound)?
            .insert(key, addrs.clone());
        Ok(addrs)
    }
}
