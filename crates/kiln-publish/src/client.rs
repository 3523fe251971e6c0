//! A blocking client for the OCI distribution spec 1.1: what publishing
//! and the lifecycle need and nothing else.
//!
//! - Auth: anonymous first; on `401` the `WWW-Authenticate` challenge
//!   decides: `Basic` sends the credentials, `Bearer` fetches a token from
//!   the realm (with the credentials, when there are any) for the scope the
//!   registry asked for, cached per scope.
//! - Blobs: `HEAD` before any upload; a blob this run already pushed to
//!   another repository of the registry is mounted from there; a small one
//!   is one `POST` + `PUT`, a large one `PATCH`es chunks and, when a chunk
//!   fails, asks the upload's status (`GET` → `Range`) and resumes where the
//!   registry's copy ends.
//! - Every request that may be repeated is retried on connection errors,
//!   `429` and `5xx`, with exponential backoff.
//! - Referrers: the referrers API when the registry has it, else the
//!   spec's tag schema (`sha256-<hex>` holding an index of referrers).
//!
//! Why not `oci-client`: it is async (reqwest + tokio) where the build
//! library is blocking, and it has no manifest `DELETE` (prune), no
//! referrers tag-schema fallback and no resumable chunked upload; the
//! part left would be most of this file.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use ureq::http;

use crate::error::Error;

/// OCI image manifest.
pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// The empty descriptor's media type (artifacts without a config).
pub const EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// Docker's manifest types, accepted when reading.
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Registry credentials. `Debug` never shows the password.
#[derive(Clone)]
pub struct Credentials {
    /// The user.
    pub user: String,
    /// The password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How to reach a registry.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `http://` instead of `https://`; only for loopback hosts.
    pub plain_http: bool,
    /// Extra CA certificates (PEM), trusted besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Credentials for every registry (`KILN_REGISTRY_USER`/`…PASSWORD`).
    pub credentials: Option<Credentials>,
    /// Credentials by registry host (`~/.docker/config.json`), used when
    /// `credentials` is `None`.
    pub host_credentials: BTreeMap<String, Credentials>,
    /// Attempts per request (1 = no retry).
    pub attempts: u32,
    /// The first retry's delay; each next one doubles it.
    pub backoff: Duration,
    /// Blobs larger than this are uploaded in chunks of this size.
    pub chunk_size: u64,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            plain_http: false,
            ca_file: None,
            credentials: None,
            host_credentials: BTreeMap::new(),
            attempts: 4,
            backoff: Duration::from_millis(250),
            chunk_size: 64 << 20,
        }
    }
}

/// What a client has done: the numbers `--json` reports and tests check.
#[derive(Debug, Default)]
pub struct Stats {
    /// Blobs uploaded.
    pub blobs_uploaded: AtomicU64,
    /// Their bytes.
    pub bytes_uploaded: AtomicU64,
    /// Blobs mounted from another repository.
    pub blobs_mounted: AtomicU64,
    /// Blobs found already there.
    pub blobs_present: AtomicU64,
    /// Manifests written.
    pub manifests_pushed: AtomicU64,
    /// Requests retried.
    pub retries: AtomicU64,
}

/// A manifest as read from the registry.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Its media type.
    pub media_type: String,
    /// Its digest.
    pub digest: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

impl Fetched {
    /// The manifest as JSON.
    pub fn json(&self) -> Result<Value, Error> {
        serde_json::from_slice(&self.bytes).map_err(|e| Error::Protocol {
            url: self.digest.clone(),
            problem: format!("the manifest is not JSON: {e}"),
        })
    }
}

/// A body to send.
enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    File {
        path: &'a Path,
        offset: u64,
        len: u64,
    },
}

#[derive(Debug, Default)]
struct Auth {
    /// `Authorization` for Basic registries.
    basic: Option<String>,
    /// Bearer tokens by scope (`repository:x:pull,push`).
    bearer: HashMap<String, String>,
    /// The scope a repository's last challenge named.
    scopes: HashMap<String, String>,
}

/// A client for one registry host.
#[derive(Debug)]
pub struct Client {
    host: String,
    base: String,
    agent: ureq::Agent,
    options: ClientOptions,
    auth: Mutex<Auth>,
    /// Where a blob is known to be (digest → repository), for mounts.
    known: Mutex<HashMap<String, String>>,
    /// (repository, digest) this client pushed or found: no second HEAD.
    present: Mutex<std::collections::HashSet<(String, String)>>,
    /// Counters.
    pub stats: Stats,
}

/// True for hosts that name this machine.
#[must_use]
pub fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        }),
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Client {
    /// A client for `host` (`127.0.0.1:5000`, `ghcr.io`).
    pub fn new(host: &str, options: ClientOptions) -> Result<Self, Error> {
        if options.plain_http && !is_loopback(host) {
            return Err(Error::PlainHttp {
                registry: host.to_owned(),
            });
        }
        let roots = match &options.ca_file {
            None => ureq::tls::RootCerts::PlatformVerifier,
            Some(path) => ureq::tls::RootCerts::Specific(std::sync::Arc::new(roots_with(path)?)),
        };
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(5)
            .timeout_connect(Some(Duration::from_secs(20)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build())
            .build();
        let scheme = if options.plain_http { "http" } else { "https" };
        Ok(Self {
            host: host.to_owned(),
            base: format!("{scheme}://{host}"),
            agent: config.into(),
            options,
            auth: Mutex::new(Auth::default()),
            known: Mutex::new(HashMap::new()),
            present: Mutex::new(std::collections::HashSet::new()),
            stats: Stats::default(),
        })
    }

    /// The registry's host.
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `GET /v2/`: reachable, and the credentials work.
    pub fn ping(&self) -> Result<(), Error> {
        let url = format!("{}/v2/", self.base);
        let mut r = self.send("GET", &url, "", &[], &Body::Empty)?;
        expect(&mut r, "GET", &url, &[200])
    }

    /// True if `digest` is a blob of `repo`.
    pub fn has_blob(&self, repo: &str, digest: &str) -> Result<bool, Error> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base);
        let mut r = self.send("HEAD", &url, repo, &[], &Body::Empty)?;
        match r.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => expect(&mut r, "HEAD", &url, &[200]).map(|()| false),
        }
    }

    /// Makes `digest` (the file at `path`, or `bytes`) a blob of `repo`:
    /// nothing when it is there, a mount when this client saw it in
    /// another repository, else an upload.
    pub fn push_blob(
        &self,
        repo: &str,
        digest: &str,
        size: u64,
        content: BlobSource<'_>,
    ) -> Result<(), Error> {
        let key = (repo.to_owned(), digest.to_owned());
        if self.present.lock().expect("lock").contains(&key) {
            self.stats.blobs_present.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        if self.has_blob(repo, digest)? {
            self.stats.blobs_present.fetch_add(1, Ordering::Relaxed);
            self.remember(digest, repo);
            return Ok(());
        }
        let from = self.known.lock().expect("lock").get(digest).cloned();
        let mut url = format!("{}/v2/{repo}/blobs/uploads/", self.base);
        if let Some(from) = from.filter(|f| f != repo) {
            url.push_str(&format!("?mount={digest}&from={from}"));
        }
        let mut r = self.send("POST", &url, repo, &[], &Body::Empty)?;
        if r.status().as_u16() == 201 {
            self.stats.blobs_mounted.fetch_add(1, Ordering::Relaxed);
            self.remember(digest, repo);
            return Ok(());
        }
        let location = self.location(&mut r, "POST", &url, &[202])?;
        if size <= self.options.chunk_size {
            return self.finish_monolithic(repo, digest, size, content, &location);
        }
        self.push_chunked(repo, digest, size, content, location)?;
        self.uploaded(digest, repo, size);
        Ok(())
    }

    /// Counts an upload of `size` bytes and remembers where the blob is.
    fn uploaded(&self, digest: &str, repo: &str, size: u64) {
        self.stats.blobs_uploaded.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes_uploaded.fetch_add(size, Ordering::Relaxed);
        self.remember(digest, repo);
    }

    /// The content in one `PUT` to an open upload.
    fn finish_monolithic(
        &self,
        repo: &str,
        digest: &str,
        size: u64,
        content: BlobSource<'_>,
        location: &str,
    ) -> Result<(), Error> {
        let body = match content {
            BlobSource::Bytes(b) => Body::Bytes(b),
            BlobSource::File(path) => Body::File {
                path,
                offset: 0,
                len: size,
            },
        };
        let put = with_query(location, &format!("digest={digest}"));
        let mut r = self.send(
            "PUT",
            &put,
            repo,
            &[("Content-Type", "application/octet-stream".into())],
            &body,
        )?;
        expect(&mut r, "PUT", &put, &[201])?;
        self.uploaded(digest, repo, size);
        Ok(())
    }

    fn push_chunked(
        &self,
        repo: &str,
        digest: &str,
        size: u64,
        content: BlobSource<'_>,
        mut location: String,
    ) -> Result<(), Error> {
        let mut offset = 0u64;
        let mut failures = 0u32;
        while offset < size {
            let len = self.options.chunk_size.min(size - offset);
            let body = match content {
                BlobSource::Bytes(b) => Body::Bytes(&b[offset as usize..(offset + len) as usize]),
                BlobSource::File(path) => Body::File { path, offset, len },
            };
            let headers = [
                ("Content-Type", "application/octet-stream".to_owned()),
                ("Content-Range", format!("{offset}-{}", offset + len - 1)),
            ];
            let outcome = self
                .send_once("PATCH", &location, repo, &headers, &body)
                .and_then(|mut r| self.location(&mut r, "PATCH", &location, &[202]));
            match outcome {
                Ok(next) => {
                    location = next;
                    offset += len;
                    failures = 0;
                }
                Err(e) => {
                    failures += 1;
                    if failures >= self.options.attempts {
                        return Err(e);
                    }
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(self.options.backoff * 2u32.pow(failures - 1));
                    // Where does the registry's copy end? Resume there.
                    let mut r = self.send("GET", &location, repo, &[], &Body::Empty)?;
                    if r.status().as_u16() == 204 {
                        let range = header(&r, "Range").unwrap_or_default();
                        offset = range
                            .split('-')
                            .nth(1)
                            .and_then(|end| end.parse::<u64>().ok())
                            .map_or(0, |end| end + 1);
                        location = self.location(&mut r, "GET", &location, &[204])?;
                    } else {
                        return Err(e);
                    }
                }
            }
        }
        let put = with_query(&location, &format!("digest={digest}"));
        let mut r = self.send("PUT", &put, repo, &[], &Body::Empty)?;
        expect(&mut r, "PUT", &put, &[201])
    }

    /// Reads a blob into memory (at most `limit` bytes).
    pub fn blob(&self, repo: &str, digest: &str, limit: u64) -> Result<Vec<u8>, Error> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base);
        let mut r = self.send("GET", &url, repo, &[], &Body::Empty)?;
        expect_status(&mut r, "GET", &url, &[200])?;
        let bytes = read_body(&mut r, limit, &url)?;
        let actual = format!("sha256:{}", crate::sha256_hex(&bytes));
        if actual != digest {
            return Err(Error::Protocol {
                url,
                problem: format!("the blob's content has digest {actual}"),
            });
        }
        Ok(bytes)
    }

    /// Writes a manifest under `reference` (a tag or its digest); returns
    /// its digest and whether the registry took its `subject`
    /// (`OCI-Subject` header: it keeps the referrers itself).
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(String, bool), Error> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base);
        let mut r = self.send(
            "PUT",
            &url,
            repo,
            &[("Content-Type", media_type.to_owned())],
            &Body::Bytes(bytes),
        )?;
        expect_status(&mut r, "PUT", &url, &[201])?;
        self.stats.manifests_pushed.fetch_add(1, Ordering::Relaxed);
        let subject = header(&r, "OCI-Subject").is_some();
        Ok((format!("sha256:{}", crate::sha256_hex(bytes)), subject))
    }

    /// The manifest at `reference`, or `None` when there is none.
    pub fn manifest(&self, repo: &str, reference: &str) -> Result<Option<Fetched>, Error> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base);
        let accept = [MANIFEST, INDEX, DOCKER_MANIFEST, DOCKER_LIST].join(", ");
        let mut r = self.send("GET", &url, repo, &[("Accept", accept)], &Body::Empty)?;
        if r.status().as_u16() == 404 {
            return Ok(None);
        }
        expect_status(&mut r, "GET", &url, &[200])?;
        let media_type = header(&r, "Content-Type").unwrap_or_default();
        let bytes = read_body(&mut r, 4 << 20, &url)?;
        let digest = format!("sha256:{}", crate::sha256_hex(&bytes));
        if reference.starts_with("sha256:") && reference != digest {
            return Err(Error::Protocol {
                url,
                problem: format!("the manifest's content has digest {digest}"),
            });
        }
        let media_type = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v["mediaType"].as_str().map(str::to_owned))
            .unwrap_or(media_type);
        Ok(Some(Fetched {
            media_type,
            digest,
            bytes,
        }))
    }

    /// Deletes the manifest `digest` (and so every tag on it).
    pub fn delete_manifest(&self, repo: &str, digest: &str) -> Result<(), Error> {
        let url = format!("{}/v2/{repo}/manifests/{digest}", self.base);
        let mut r = self.send("DELETE", &url, repo, &[], &Body::Empty)?;
        match r.status().as_u16() {
            202 | 200 | 404 => Ok(()),
            405 => Err(Error::Status {
                method: "DELETE".into(),
                url,
                status: 405,
                message: Some(
                    "the registry does not allow deleting (docker-registry: set storage.delete.enabled: true)"
                        .into(),
                ),
            }),
            _ => expect(&mut r, "DELETE", &url, &[202]),
        }
    }

    /// Every tag of `repo` (none when the repository does not exist).
    pub fn tags(&self, repo: &str) -> Result<Vec<String>, Error> {
        let mut tags = Vec::new();
        let mut url = format!("{}/v2/{repo}/tags/list?n=1000", self.base);
        loop {
            let mut r = self.send("GET", &url, repo, &[], &Body::Empty)?;
            if r.status().as_u16() == 404 {
                return Ok(tags);
            }
            expect_status(&mut r, "GET", &url, &[200])?;
            let link = header(&r, "Link");
            let bytes = read_body(&mut r, 16 << 20, &url)?;
            let json: Value = serde_json::from_slice(&bytes).map_err(|e| Error::Protocol {
                url: url.clone(),
                problem: format!("the tag list is not JSON: {e}"),
            })?;
            tags.extend(
                json["tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.as_str().map(str::to_owned)),
            );
            // `Link: </v2/x/tags/list?n=1000&last=y>; rel="next"`
            match link.and_then(|l| {
                l.split(';')
                    .next()
                    .map(|u| u.trim().trim_matches(['<', '>']).to_owned())
            }) {
                Some(next) if next.starts_with('/') => url = format!("{}{next}", self.base),
                _ => return Ok(tags),
            }
        }
    }

    /// The referrers of `digest`: descriptors with `artifactType` and
    /// `annotations`, from the referrers API or else the tag schema.
    pub fn referrers(&self, repo: &str, digest: &str) -> Result<Vec<Value>, Error> {
        let url = format!("{}/v2/{repo}/referrers/{digest}", self.base);
        let mut r = self.send(
            "GET",
            &url,
            repo,
            &[("Accept", INDEX.to_owned())],
            &Body::Empty,
        )?;
        let index = if r.status().as_u16() == 200
            && header(&r, "Content-Type").is_some_and(|t| t.starts_with(INDEX))
        {
            let bytes = read_body(&mut r, 16 << 20, &url)?;
            serde_json::from_slice::<Value>(&bytes).ok()
        } else {
            self.manifest(repo, &fallback_tag(digest))?
                .and_then(|f| f.json().ok())
        };
        Ok(index
            .and_then(|i| i["manifests"].as_array().cloned())
            .unwrap_or_default())
    }

    /// Adds `descriptors` to the tag-schema index of `subject` (one read,
    /// one write).
    pub fn add_fallback_referrers(
        &self,
        repo: &str,
        subject: &str,
        descriptors: Vec<Value>,
    ) -> Result<(), Error> {
        let tag = fallback_tag(subject);
        let mut index = match self.manifest(repo, &tag)? {
            Some(f) => f.json()?,
            None => serde_json::json!({
                "schemaVersion": 2,
                "mediaType": INDEX,
                "manifests": [],
            }),
        };
        let manifests = index["manifests"].as_array_mut().ok_or(Error::Protocol {
            url: tag.clone(),
            problem: "the referrers index has no `manifests` list".into(),
        })?;
        let before = manifests.len();
        for descriptor in descriptors {
            if !manifests
                .iter()
                .any(|m| m["digest"] == descriptor["digest"])
            {
                manifests.push(descriptor);
            }
        }
        if manifests.len() == before {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&index).expect("serializable");
        self.put_manifest(repo, &tag, INDEX, &bytes).map(|_| ())
    }

    fn remember(&self, digest: &str, repo: &str) {
        self.present
            .lock()
            .expect("lock")
            .insert((repo.to_owned(), digest.to_owned()));
        self.known
            .lock()
            .expect("lock")
            .insert(digest.to_owned(), repo.to_owned());
    }

    /// The upload `Location` of a response, made absolute.
    fn location(
        &self,
        r: &mut http::Response<ureq::Body>,
        method: &str,
        url: &str,
        ok: &[u16],
    ) -> Result<String, Error> {
        expect_status(r, method, url, ok)?;
        let location = header(r, "Location").ok_or_else(|| Error::Protocol {
            url: url.to_owned(),
            problem: "the registry sent no upload Location".into(),
        })?;
        Ok(if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            location
        })
    }

    /// Sends with retries (connection errors, 429, 5xx).
    fn send(
        &self,
        method: &str,
        url: &str,
        repo: &str,
        headers: &[(&str, String)],
        body: &Body<'_>,
    ) -> Result<http::Response<ureq::Body>, Error> {
        let mut attempt = 1;
        loop {
            let result = self.send_once(method, url, repo, headers, body);
            let retry = match &result {
                Err(Error::Connect { .. }) => true,
                Ok(r) => {
                    let s = r.status().as_u16();
                    s == 429 || s >= 500
                }
                Err(_) => false,
            };
            if !retry || attempt >= self.options.attempts {
                return result;
            }
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(self.options.backoff * 2u32.pow(attempt - 1));
            attempt += 1;
        }
    }

    /// Sends once, answering one auth challenge.
    fn send_once(
        &self,
        method: &str,
        url: &str,
        repo: &str,
        headers: &[(&str, String)],
        body: &Body<'_>,
    ) -> Result<http::Response<ureq::Body>, Error> {
        let first = self.authorization(repo);
        let r = self.raw(method, url, headers, body, first.as_deref())?;
        if r.status().as_u16() != 401 {
            return Ok(r);
        }
        let challenge = header(&r, "WWW-Authenticate").unwrap_or_default();
        let authorization = self.answer(&challenge, repo)?;
        let r = self.raw(method, url, headers, body, Some(&authorization))?;
        if r.status().as_u16() == 401 {
            return Err(Error::Unauthorized {
                registry: self.host.clone(),
                detail: format!("{method} {url} answered 401 with the credentials given"),
                help: "check the user and password (KILN_REGISTRY_USER/KILN_REGISTRY_PASSWORD or ~/.docker/config.json)",
            });
        }
        Ok(r)
    }

    /// The `Authorization` known to work for `repo`, if any.
    fn authorization(&self, repo: &str) -> Option<String> {
        let auth = self.auth.lock().expect("lock");
        if let Some(basic) = &auth.basic {
            return Some(basic.clone());
        }
        let scope = auth.scopes.get(repo)?;
        auth.bearer.get(scope).map(|t| format!("Bearer {t}"))
    }

    /// Answers a `WWW-Authenticate` challenge.
    fn answer(&self, challenge: &str, repo: &str) -> Result<String, Error> {
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        let params = parse_params(params);
        let creds = self
            .options
            .credentials
            .as_ref()
            .or_else(|| self.options.host_credentials.get(&self.host));
        let basic = creds.map(|c| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", c.user, c.password))
            )
        });
        if scheme.eq_ignore_ascii_case("basic") {
            let Some(basic) = basic else {
                return Err(Error::Unauthorized {
                    registry: self.host.clone(),
                    detail: "it asks for a user and password".into(),
                    help: "set KILN_REGISTRY_USER and KILN_REGISTRY_PASSWORD, or `docker login`/`podman login --authfile ~/.docker/config.json` to it",
                });
            };
            self.auth.lock().expect("lock").basic = Some(basic.clone());
            return Ok(basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Error::Unauthorized {
                registry: self.host.clone(),
                detail: format!("it asks for `{challenge}`, which kiln does not speak"),
                help: "use a registry with Basic or Bearer token auth",
            });
        }
        let realm = params.get("realm").ok_or_else(|| Error::Protocol {
            url: self.host.clone(),
            problem: format!("the Bearer challenge `{challenge}` names no realm"),
        })?;
        let scope = params
            .get("scope")
            .cloned()
            .unwrap_or_else(|| format!("repository:{repo}:pull,push"));
        let mut token_url = realm.clone();
        let mut query = Vec::new();
        if let Some(service) = params.get("service") {
            query.push(format!("service={}", encode(service)));
        }
        query.push(format!("scope={}", encode(&scope)));
        token_url = with_query(&token_url, &query.join("&"));
        let mut request = self.agent.get(&token_url);
        if let Some(basic) = &basic {
            request = request.header("Authorization", basic);
        }
        let mut r = request.call().map_err(|e| Error::Connect {
            url: token_url.clone(),
            detail: e.to_string(),
        })?;
        if matches!(r.status().as_u16(), 401 | 403) {
            return Err(Error::Unauthorized {
                registry: self.host.clone(),
                detail: format!("its token service {realm} refused the credentials"),
                help: "check the user and password (KILN_REGISTRY_USER/KILN_REGISTRY_PASSWORD or ~/.docker/config.json)",
            });
        }
        expect_status(&mut r, "GET", realm, &[200])?;
        let json: Value =
            serde_json::from_slice(&read_body(&mut r, 1 << 20, realm)?).map_err(|e| {
                Error::Protocol {
                    url: realm.clone(),
                    problem: format!("the token answer is not JSON: {e}"),
                }
            })?;
        let token = json["token"]
            .as_str()
            .or_else(|| json["access_token"].as_str())
            .ok_or_else(|| Error::Protocol {
                url: realm.clone(),
                problem: "the token answer has no `token`".into(),
            })?
            .to_owned();
        let mut auth = self.auth.lock().expect("lock");
        auth.scopes.insert(repo.to_owned(), scope.clone());
        auth.bearer.insert(scope, token.clone());
        Ok(format!("Bearer {token}"))
    }

    fn raw(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: &Body<'_>,
        authorization: Option<&str>,
    ) -> Result<http::Response<ureq::Body>, Error> {
        let connect = |e: &dyn std::fmt::Display| Error::Connect {
            url: url.to_owned(),
            detail: e.to_string(),
        };
        let mut builder = http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            builder = builder.header(*k, v);
        }
        if let Some(a) = authorization {
            builder = builder.header("Authorization", a);
        }
        match body {
            Body::Empty => {
                let request = builder
                    .header("Content-Length", "0")
                    .body(())
                    .map_err(|e| connect(&e))?;
                self.agent.run(request).map_err(|e| connect(&e))
            }
            Body::Bytes(b) => {
                let request = builder.body(*b).map_err(|e| connect(&e))?;
                self.agent.run(request).map_err(|e| connect(&e))
            }
            Body::File { path, offset, len } => {
                let mut file = File::open(path).map_err(|source| Error::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                file.seek(SeekFrom::Start(*offset))
                    .map_err(|source| Error::Read {
                        path: path.to_path_buf(),
                        source,
                    })?;
                let mut reader = file.take(*len);
                let request = builder
                    .header("Content-Length", len.to_string())
                    .body(ureq::SendBody::from_reader(&mut reader))
                    .map_err(|e| connect(&e))?;
                self.agent.run(request).map_err(|e| connect(&e))
            }
        }
    }
}

/// What a blob's bytes are.
#[derive(Debug, Clone, Copy)]
pub enum BlobSource<'a> {
    /// In memory.
    Bytes(&'a [u8]),
    /// A file.
    File(&'a Path),
}

/// The referrers tag schema's tag for `digest`: `sha256-<hex>`.
#[must_use]
pub fn fallback_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

fn header(r: &http::Response<ureq::Body>, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn with_query(url: &str, query: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `realm="x",service="y"` as a map.
fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.insert(key, value.to_owned());
        rest = next.trim_start_matches(',').trim();
    }
    out
}

fn read_body(r: &mut http::Response<ureq::Body>, limit: u64, url: &str) -> Result<Vec<u8>, Error> {
    r.body_mut()
        .with_config()
        .limit(limit)
        .read_to_vec()
        .map_err(|e| Error::Connect {
            url: url.to_owned(),
            detail: e.to_string(),
        })
}

fn expect_status(
    r: &mut http::Response<ureq::Body>,
    method: &str,
    url: &str,
    ok: &[u16],
) -> Result<(), Error> {
    let status = r.status().as_u16();
    if ok.contains(&status) {
        return Ok(());
    }
    let body = read_body(r, 64 << 10, url).unwrap_or_default();
    // The spec's error body: {"errors": [{"code": "...", "message": "..."}]}
    let message = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| {
            let e = v["errors"].get(0)?.clone();
            Some(format!(
                "{} {}",
                e["code"].as_str().unwrap_or_default(),
                e["message"].as_str().unwrap_or_default()
            ))
        })
        .or_else(|| {
            let text = String::from_utf8_lossy(&body).trim().to_owned();
            (!text.is_empty()).then(|| text.chars().take(200).collect())
        });
    Err(Error::Status {
        method: method.to_owned(),
        url: url.to_owned(),
        status,
        message,
    })
}

fn expect(
    r: &mut http::Response<ureq::Body>,
    method: &str,
    url: &str,
    ok: &[u16],
) -> Result<(), Error> {
    expect_status(r, method, url, ok)?;
    // Drain, so the connection is reused.
    let _ = read_body(r, 1 << 20, url);
    Ok(())
}

/// The system's roots (Debian's bundle) plus the certificates in `path`.
fn roots_with(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>, Error> {
    let mut certs = Vec::new();
    let mut read = |p: &Path, required: bool| -> Result<usize, Error> {
        let bytes = match std::fs::read(p) {
            Ok(b) => b,
            Err(_) if !required => return Ok(0),
            Err(source) => {
                return Err(Error::Read {
                    path: p.to_path_buf(),
                    source,
                });
            }
        };
        let before = certs.len();
        for item in ureq::tls::parse_pem(&bytes) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c.to_owned()),
                Ok(_) => {}
                Err(e) => {
                    return Err(Error::CaFile {
                        path: p.to_path_buf(),
                        problem: format!("not PEM: {e}"),
                    });
                }
            }
        }
        Ok(certs.len() - before)
    };
    if read(path, true)? == 0 {
        return Err(Error::CaFile {
            path: path.to_path_buf(),
            problem: "holds no PEM certificate".into(),
        });
    }
    read(Path::new("/etc/ssl/certs/ca-certificates.crt"), false)?;
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let p = parse_params(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "registry.example");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
        assert_eq!(parse_params(r#"realm="x""#)["realm"], "x");
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1:5000",
            "localhost:5000",
            "[::1]:5000",
            "localhost",
            "127.1.2.3",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "ghcr.io",
            "10.0.0.1:5000",
            "example.com:5000",
            "[fe80::1]:80",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn plain_http_is_refused_off_loopback() {
        let options = ClientOptions {
            plain_http: true,
            ..ClientOptions::default()
        };
        assert!(matches!(
            Client::new("ghcr.io", options),
            Err(Error::PlainHttp { .. })
        ));
    }

    #[test]
    fn credentials_never_show_in_debug() {
        let c = Credentials {
            user: "u".into(),
            password: "s3cret".into(),
        };
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn fallback_tags() {
        assert_eq!(fallback_tag("sha256:abc"), "sha256-abc");
    }
}
