//! Publishing to OCI registries, and the image lifecycle kept there.
//!
//! - [`client`]: a blocking client for the distribution spec 1.1 (auth,
//!   idempotent and resumable blob uploads, mounts, referrers with the tag
//!   schema fallback, deletes).
//! - [`publish()`]: the units each variant pushes (runnable images,
//!   artifacts), ids and revisions, annotations, referrers.
//! - [`catalog`]: what a repository holds that kiln published.
//! - [`lifecycle`]: last used, permanent, obsolete and prune, as small
//!   referrer artifacts on each image, so every machine sees the same
//!   state.
//!
//! Like every library crate of kiln it never prints and never exits; it
//! reads no environment variable (the binary passes credentials, the
//! clock and the registry).

pub mod catalog;
pub mod client;
mod error;
pub mod flist;
pub mod index;
pub mod lifecycle;
mod publish;
pub mod template;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

pub use client::{Client, ClientOptions, Credentials};
pub use error::Error;
pub use publish::{
    PublishOptions, PublishReport, UnitAction, UnitReport, artifact_type, file_media_type, publish,
    split_registry, targets,
};

/// The digest of `{}`, the spec's empty descriptor.
pub const EMPTY_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
/// `artifactType` of a variant's manifest entry attached to what it pushed.
pub const MANIFEST_ENTRY_TYPE: &str = "application/vnd.kiln.manifest.v1+json";
/// `artifactType` (and media type) of the SPDX SBOM.
pub const SBOM_TYPE: &str = "application/spdx+json";
/// `artifactType` of a lifecycle event.
pub const LIFECYCLE_TYPE: &str = "application/vnd.kiln.lifecycle.v1";

/// Annotation keys.
pub mod annotations {
    /// The build's epoch (RFC 3339).
    pub const CREATED: &str = "org.opencontainers.image.created";
    /// The tree's git remote.
    pub const SOURCE: &str = "org.opencontainers.image.source";
    /// The tree's git commit.
    pub const REVISION: &str = "org.opencontainers.image.revision";
    /// The id.
    pub const VERSION: &str = "org.opencontainers.image.version";
    /// A layer's file name.
    pub const TITLE: &str = "org.opencontainers.image.title";
    /// The variant.
    pub const VARIANT: &str = "dev.kiln.variant";
    /// Its image.
    pub const IMAGE: &str = "dev.kiln.image";
    /// The unit's format (`oci`, `qcow2`, `kernel`, …).
    pub const FORMAT: &str = "dev.kiln.format";
    /// `dimension=key,…`.
    pub const KEYS: &str = "dev.kiln.keys";
    /// The variant's input digest.
    pub const INPUT_DIGEST: &str = "dev.kiln.input-digest";
    /// Its layer key: what decides whether a new revision is due.
    pub const LAYER_KEY: &str = "dev.kiln.layer-key";
    /// The id.
    pub const ID: &str = "dev.kiln.id";
    /// The revision number.
    pub const KILN_REVISION: &str = "dev.kiln.revision";
    /// When it was published (RFC 3339): its age for the lifecycle.
    pub const PUBLISHED: &str = "dev.kiln.published";
    /// A lifecycle event: `used`, `permanent`, `not-permanent`, `obsolete`.
    pub const EVENT: &str = "dev.kiln.lifecycle.event";
    /// When it happened.
    pub const AT: &str = "dev.kiln.lifecycle.at";
    /// For `obsolete`: when prune may delete it.
    pub const DELETE_AFTER: &str = "dev.kiln.lifecycle.delete-after";
}

/// One client per registry host, shared by everything one command does
/// (so mounts and auth tokens carry over between repositories).
#[derive(Debug, Default)]
pub struct Registries {
    clients: Mutex<HashMap<String, Arc<Client>>>,
}

impl Registries {
    /// The client for `host`, made on first use.
    pub fn client(&self, host: &str, options: &ClientOptions) -> Result<Arc<Client>, Error> {
        let mut clients = self.clients.lock().expect("lock");
        if let Some(c) = clients.get(host) {
            return Ok(c.clone());
        }
        let client = Arc::new(Client::new(host, options.clone())?);
        clients.insert(host.to_owned(), client.clone());
        Ok(client)
    }

    /// Every client made so far.
    pub fn all(&self) -> Vec<Arc<Client>> {
        self.clients
            .lock()
            .expect("lock")
            .values()
            .cloned()
            .collect()
    }
}

/// Where the tree comes from, when it is a git checkout.
#[derive(Debug, Clone, Default)]
pub struct GitInfo {
    /// `remote.origin.url`.
    pub source: Option<String>,
    /// `HEAD`'s commit.
    pub commit: Option<String>,
    /// The branch checked out (`/` as `-`), for `{branch}`.
    pub branch: Option<String>,
}

/// Reads the git commit and remote of the checkout holding `dir`.
#[must_use]
pub fn git_info(dir: &Path) -> GitInfo {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    GitInfo {
        source: git(&["config", "--get", "remote.origin.url"]),
        commit: git(&["rev-parse", "--verify", "HEAD"]),
        branch: git(&["symbolic-ref", "--short", "HEAD"]).map(|b| b.replace('/', "-")),
    }
}

/// Lowercase hex SHA-256.
#[must_use]
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Pushes an artifact manifest whose `subject` is `subject`, with one
/// layer (`content`: media type, title, bytes) or the empty blob, and
/// adds it to the tag-schema index when the registry did not take the
/// subject itself. Returns its digest.
pub fn push_referrer(
    client: &Client,
    repo: &str,
    subject: &Value,
    artifact_type: &str,
    annotations: &std::collections::BTreeMap<String, String>,
    content: Option<(&str, &str, &[u8])>,
) -> Result<String, Error> {
    let (digest, fallback) =
        push_referrer_manifest(client, repo, subject, artifact_type, annotations, content)?;
    if let Some(descriptor) = fallback {
        let subject_digest = subject["digest"].as_str().unwrap_or_default();
        client.add_fallback_referrers(repo, subject_digest, vec![descriptor])?;
    }
    Ok(digest)
}

/// [`push_referrer`] without the tag-schema index: returns the digest and,
/// when the registry did not take the subject, the descriptor that index
/// needs (so several referrers of one subject update it once).
pub fn push_referrer_manifest(
    client: &Client,
    repo: &str,
    subject: &Value,
    artifact_type: &str,
    annotations: &std::collections::BTreeMap<String, String>,
    content: Option<(&str, &str, &[u8])>,
) -> Result<(String, Option<Value>), Error> {
    client.push_blob(repo, EMPTY_DIGEST, 2, client::BlobSource::Bytes(b"{}"))?;
    let layer = match content {
        Some((media_type, title, bytes)) => {
            let digest = format!("sha256:{}", sha256_hex(bytes));
            client.push_blob(
                repo,
                &digest,
                bytes.len() as u64,
                client::BlobSource::Bytes(bytes),
            )?;
            json!({
                "mediaType": media_type,
                "digest": digest,
                "size": bytes.len(),
                "annotations": {annotations::TITLE: title},
            })
        }
        None => {
            json!({"mediaType": client::EMPTY, "digest": EMPTY_DIGEST, "size": 2, "data": "e30="})
        }
    };
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": client::MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": client::EMPTY, "digest": EMPTY_DIGEST, "size": 2, "data": "e30="},
        "layers": [layer],
        "subject": subject,
        "annotations": annotations,
    });
    let bytes = serde_json::to_vec(&manifest).expect("serializable");
    let digest = format!("sha256:{}", sha256_hex(&bytes));
    let (_, taken) = client.put_manifest(repo, &digest, client::MANIFEST, &bytes)?;
    let fallback = (!taken).then(|| {
        json!({
            "mediaType": client::MANIFEST,
            "digest": digest,
            "size": bytes.len(),
            "artifactType": artifact_type,
            "annotations": annotations,
        })
    });
    Ok((digest, fallback))
}
