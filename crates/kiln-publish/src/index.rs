//! Multi-architecture images: the `oci` outputs of variants that differ
//! only by their `arch` key become one OCI image index under one tag
//! (what `docker pull` resolves to the machine's platform).
//!
//! Each member is pushed by digest with its own annotations and referrers;
//! the index carries the group's (`dev.kiln.variant` is the group's name,
//! the image and its keys but `arch`; `dev.kiln.layer-key` lists the
//! members' keys, so the group is up to date exactly when every member
//! is), and only the index is tagged.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use crate::Registries;
use crate::annotations as a;
use crate::client::{BlobSource, Client, INDEX, MANIFEST};
use crate::error::Error;
use crate::publish::{
    Content, PublishOptions, Unit, UnitAction, UnitReport, annotations_of, blob_path, image_size,
    push_unit, read_layout,
};

/// A pushed member of an index.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its manifest's digest.
    pub digest: String,
    /// Its manifest's size.
    pub size: u64,
    /// `{architecture, os[, variant]}` from its config.
    pub platform: Value,
}

/// The platform of the image in the OCI layout `dir`, from its config.
pub fn platform_of(dir: &Path) -> Result<Value, Error> {
    let (_, manifest) = read_layout(dir)?;
    let digest = manifest["config"]["digest"].as_str().unwrap_or_default();
    let path = blob_path(dir, digest);
    let config: Value =
        serde_json::from_slice(&std::fs::read(&path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?)
        .map_err(|e| Error::Artifact {
            path: path.clone(),
            problem: format!("the image config is not JSON: {e}"),
        })?;
    let mut platform = json!({
        "architecture": config["architecture"].as_str().unwrap_or("amd64"),
        "os": config["os"].as_str().unwrap_or("linux"),
    });
    if let Some(v) = config["variant"].as_str() {
        platform["variant"] = json!(v);
    }
    Ok(platform)
}

/// Pushes the blobs of the image in the OCI layout `dir` and returns its
/// manifest with `annotations` added (not pushed).
pub(crate) fn image_manifest(
    client: &Client,
    repo: &str,
    dir: &Path,
    annotations: &BTreeMap<String, String>,
) -> Result<Value, Error> {
    let (_, mut manifest) = read_layout(dir)?;
    for d in std::iter::once(&manifest["config"])
        .chain(manifest["layers"].as_array().into_iter().flatten())
    {
        let digest = d["digest"].as_str().unwrap_or_default();
        let size = d["size"].as_u64().unwrap_or_default();
        client.push_blob(
            repo,
            digest,
            size,
            BlobSource::File(&blob_path(dir, digest)),
        )?;
    }
    let mut merged = manifest["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (k, v) in annotations {
        merged.insert(k.clone(), Value::String(v.clone()));
    }
    manifest["annotations"] = Value::Object(merged);
    Ok(manifest)
}

/// Pushes the image of the OCI layout `dir` by digest (blobs, then its
/// manifest with `annotations` added), untagged.
pub fn push_layout(
    client: &Client,
    repo: &str,
    dir: &Path,
    annotations: &BTreeMap<String, String>,
) -> Result<Member, Error> {
    let manifest = image_manifest(client, repo, dir, annotations)?;
    let bytes = serde_json::to_vec(&manifest).expect("serializable");
    let digest = format!("sha256:{}", crate::sha256_hex(&bytes));
    client.put_manifest(repo, &digest, MANIFEST, &bytes)?;
    Ok(Member {
        digest,
        size: bytes.len() as u64,
        platform: platform_of(dir)?,
    })
}

/// Pushes an index of `members` by digest, then tags it; returns its
/// digest. Two members of one platform are an error: a pull could not
/// choose.
pub fn push_index(
    client: &Client,
    repo: &str,
    members: &[Member],
    annotations: &BTreeMap<String, String>,
    tags: &[String],
) -> Result<String, Error> {
    for (i, m) in members.iter().enumerate() {
        if members[..i].iter().any(|o| o.platform == m.platform) {
            return Err(Error::Refused(format!(
                "two images of {repo} are for the platform {}: an index holds one per platform",
                m.platform
            )));
        }
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": members.iter().map(|m| json!({
            "mediaType": MANIFEST,
            "digest": m.digest,
            "size": m.size,
            "platform": m.platform,
        })).collect::<Vec<_>>(),
        "annotations": annotations,
    });
    let bytes = serde_json::to_vec(&index).expect("serializable");
    let digest = format!("sha256:{}", crate::sha256_hex(&bytes));
    client.put_manifest(repo, &digest, INDEX, &bytes)?;
    for tag in tags {
        client.put_manifest(repo, tag, INDEX, &bytes)?;
    }
    Ok(digest)
}

/// Publishes one group of image units as an index.
pub(crate) fn publish_group(
    members: &[&Unit],
    registries: &Registries,
    options: &PublishOptions,
    git: &crate::GitInfo,
    out_dir: &Path,
) -> Result<UnitReport, Error> {
    let first = members[0];
    let group = first.group.clone().unwrap_or_default();
    let mut size = 0;
    for m in members {
        if let Content::Image(dir) = &m.content {
            size += image_size(dir)?;
        }
    }
    let mut keys: Vec<&str> = members.iter().map(|m| m.entry.layer_key.as_str()).collect();
    keys.sort_unstable();
    let base = UnitReport {
        variant: group.clone(),
        format: first.format.clone(),
        repository: format!("{}/{}", first.host, first.repository),
        tags: first.tags.clone(),
        id: first.id.clone(),
        revision: first.revision,
        digest: None,
        size,
        action: UnitAction::WouldPush,
        blocks: Vec::new(),
    };
    // Up to date: the newest index has exactly these members' keys.
    if let Some(p) = first.up_to_date.as_ref().filter(|p| {
        let mut published: Vec<&str> = p.layer_key().unwrap_or_default().split(',').collect();
        published.sort_unstable();
        published == keys
    }) {
        return Ok(base.up_to_date(p));
    }
    if options.dry_run {
        return Ok(base);
    }
    let client = registries.client(&first.host, &options.client)?;
    let mut pushed = Vec::new();
    for m in members {
        let Content::Image(dir) = &m.content else {
            continue;
        };
        // Each member by digest, with its own referrers, untagged.
        let (digest, msize) = push_unit(&client, m, git, options.now, out_dir, false)?;
        pushed.push(Member {
            digest,
            size: msize,
            platform: platform_of(dir)?,
        });
    }
    let mut annotations = annotations_of(first, git, options.now);
    annotations.insert(a::VARIANT.to_owned(), group);
    annotations.insert(a::LAYER_KEY.to_owned(), keys.join(","));
    let mut inputs: Vec<&str> = members
        .iter()
        .map(|m| m.entry.input_digest.as_str())
        .collect();
    inputs.sort_unstable();
    annotations.insert(a::INPUT_DIGEST.to_owned(), inputs.join(","));
    annotations.insert(
        a::KEYS.to_owned(),
        first
            .entry
            .keys
            .iter()
            .filter(|(d, _)| d.as_str() != "arch")
            .map(|(d, k)| format!("{d}={k}"))
            .collect::<Vec<_>>()
            .join(","),
    );
    let digest = push_index(
        &client,
        &first.repository,
        &pushed,
        &annotations,
        &first.tags,
    )?;
    Ok(UnitReport {
        digest: Some(digest),
        action: UnitAction::Pushed,
        ..base
    })
}
