//! What a repository holds that kiln published: every tagged manifest
//! with a `dev.kiln.variant` annotation, with its tags.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::annotations as a;
use crate::client::Client;
use crate::error::Error;

/// One published manifest.
#[derive(Debug, Clone, Serialize)]
pub struct Published {
    /// The repository (without the host).
    pub repository: String,
    /// Its digest.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Its `artifactType` (none for runnable images).
    pub artifact_type: Option<String>,
    /// Its tags, sorted.
    pub tags: Vec<String>,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
    /// Bytes of its config and layers.
    pub size: u64,
    /// Bytes of the manifest itself.
    pub manifest_size: u64,
}

impl Published {
    fn get(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(String::as_str)
    }
    /// Its variant.
    #[must_use]
    pub fn variant(&self) -> Option<&str> {
        self.get(a::VARIANT)
    }
    /// Its unit's format.
    #[must_use]
    pub fn format(&self) -> Option<&str> {
        self.get(a::FORMAT)
    }
    /// Its id.
    #[must_use]
    pub fn id(&self) -> Option<&str> {
        self.get(a::ID)
    }
    /// Its revision.
    #[must_use]
    pub fn revision(&self) -> Option<u32> {
        self.get(a::KILN_REVISION).and_then(|r| r.parse().ok())
    }
    /// Its layer key.
    #[must_use]
    pub fn layer_key(&self) -> Option<&str> {
        self.get(a::LAYER_KEY)
    }
    /// When it was published.
    #[must_use]
    pub fn published(&self) -> Option<jiff::Timestamp> {
        self.get(a::PUBLISHED).and_then(|t| t.parse().ok())
    }
}

/// Reads every kiln manifest of `repo` (none when it does not exist).
pub fn read(client: &Client, repo: &str) -> Result<Vec<Published>, Error> {
    let mut by_digest: BTreeMap<String, Published> = BTreeMap::new();
    for tag in client.tags(repo)? {
        // The referrers tag schema's indexes are not images.
        if tag.starts_with("sha256-") {
            continue;
        }
        let Some(fetched) = client.manifest(repo, &tag)? else {
            continue;
        };
        if let Some(p) = by_digest.get_mut(&fetched.digest) {
            p.tags.push(tag);
            continue;
        }
        let json = fetched.json()?;
        let annotations: BTreeMap<String, String> = json["annotations"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect();
        if !annotations.contains_key(a::VARIANT) {
            continue;
        }
        let size = std::iter::once(&json["config"])
            .chain(json["layers"].as_array().into_iter().flatten())
            .chain(json["manifests"].as_array().into_iter().flatten())
            .filter_map(|d| d["size"].as_u64())
            .sum();
        by_digest.insert(
            fetched.digest.clone(),
            Published {
                repository: repo.to_owned(),
                digest: fetched.digest.clone(),
                media_type: fetched.media_type.clone(),
                artifact_type: json["artifactType"].as_str().map(str::to_owned),
                tags: vec![tag],
                annotations,
                size,
                manifest_size: fetched.bytes.len() as u64,
            },
        );
    }
    let mut out: Vec<Published> = by_digest.into_values().collect();
    for p in &mut out {
        p.tags.sort();
    }
    out.sort_by(|x, y| {
        (x.variant(), x.format(), x.revision()).cmp(&(y.variant(), y.format(), y.revision()))
    });
    Ok(out)
}

/// The newest revision of `variant`'s `format` unit in `list`.
#[must_use]
pub fn newest<'a>(list: &'a [Published], variant: &str, format: &str) -> Option<&'a Published> {
    list.iter()
        .filter(|p| p.variant() == Some(variant) && p.format() == Some(format))
        .max_by_key(|p| p.revision())
}
