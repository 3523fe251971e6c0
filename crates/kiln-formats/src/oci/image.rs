//! The JSON documents of an OCI image (image-spec v1.1): descriptors, the
//! index, the manifest and the image config, as serde structs.
//!
//! Their bytes are part of the image (the manifest names the config by
//! digest, the index the manifest), so they must not vary: fields are
//! written in the struct's fixed order, maps are `BTreeMap`s (sorted keys),
//! empty optional fields are left out, and the output is `serde_json`'s
//! compact form with no trailing newline. Nothing here is read back.

use std::collections::BTreeMap;

use serde::Serialize;

/// `index.json`'s media type.
pub(crate) const INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// A manifest's media type.
pub(crate) const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The image config's media type.
pub(crate) const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// The annotation naming a manifest in `index.json` (a tag).
pub(crate) const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation giving the image's creation time.
pub(crate) const CREATED: &str = "org.opencontainers.image.created";

/// What `oci-layout` holds.
#[derive(Debug, Serialize)]
pub(crate) struct Layout {
    #[serde(rename = "imageLayoutVersion")]
    pub(crate) image_layout_version: &'static str,
}

/// A reference to a blob.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Descriptor {
    #[serde(rename = "mediaType")]
    pub(crate) media_type: &'static str,
    /// `sha256:<hex>`.
    pub(crate) digest: String,
    pub(crate) size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) platform: Option<Platform>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) annotations: BTreeMap<String, String>,
}

/// What a manifest runs on, in an index.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Platform {
    pub(crate) architecture: String,
    pub(crate) os: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) variant: Option<String>,
}

/// `index.json`.
#[derive(Debug, Serialize)]
pub(crate) struct Index {
    #[serde(rename = "schemaVersion")]
    pub(crate) schema_version: u32,
    #[serde(rename = "mediaType")]
    pub(crate) media_type: &'static str,
    pub(crate) manifests: Vec<Descriptor>,
}

/// An image manifest.
#[derive(Debug, Serialize)]
pub(crate) struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub(crate) schema_version: u32,
    #[serde(rename = "mediaType")]
    pub(crate) media_type: &'static str,
    pub(crate) config: Descriptor,
    pub(crate) layers: Vec<Descriptor>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) annotations: BTreeMap<String, String>,
}

/// The image config.
#[derive(Debug, Serialize)]
pub(crate) struct Image {
    pub(crate) created: String,
    pub(crate) architecture: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) variant: Option<String>,
    pub(crate) os: String,
    pub(crate) config: RunConfig,
    pub(crate) rootfs: RootFs,
    pub(crate) history: Vec<History>,
}

/// How a container of the image runs (the config's `config`).
#[derive(Debug, Serialize)]
pub(crate) struct RunConfig {
    #[serde(rename = "User", skip_serializing_if = "Option::is_none")]
    pub(crate) user: Option<String>,
    #[serde(rename = "Env", skip_serializing_if = "Vec::is_empty")]
    pub(crate) env: Vec<String>,
    #[serde(rename = "Entrypoint", skip_serializing_if = "Vec::is_empty")]
    pub(crate) entrypoint: Vec<String>,
    #[serde(rename = "Cmd", skip_serializing_if = "Vec::is_empty")]
    pub(crate) cmd: Vec<String>,
    #[serde(rename = "WorkingDir", skip_serializing_if = "Option::is_none")]
    pub(crate) working_dir: Option<String>,
    #[serde(rename = "Labels", skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) labels: BTreeMap<String, String>,
}

/// The uncompressed layers, bottom first.
#[derive(Debug, Serialize)]
pub(crate) struct RootFs {
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) diff_ids: Vec<String>,
}

/// How one layer was made.
#[derive(Debug, Serialize)]
pub(crate) struct History {
    pub(crate) created: String,
    pub(crate) created_by: &'static str,
    pub(crate) comment: String,
}

/// `value` as compact JSON.
pub(crate) fn to_json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("plain structs serialize")
}

/// `epoch` (seconds since 1970, UTC) as RFC 3339 in UTC
/// (`2023-11-14T22:13:20Z`), as image configs and manifests date things.
#[must_use]
pub fn rfc3339(epoch: i64) -> String {
    crate::civil::timestamp(epoch)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_date() {
        for (epoch, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (1_700_000_000, "2023-11-14T22:13:20Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_709_251_199, "2024-02-29T23:59:59Z"),
            (-1, "1969-12-31T23:59:59Z"),
            (4_102_444_800, "2100-01-01T00:00:00Z"),
        ] {
            assert_eq!(rfc3339(epoch), text, "{epoch}");
        }
    }

    #[test]
    fn empty_fields_are_left_out_and_keys_keep_their_order() {
        let d = Descriptor {
            media_type: CONFIG,
            digest: "sha256:00".into(),
            size: 2,
            platform: None,
            annotations: BTreeMap::from([("b".into(), "2".into()), ("a".into(), "1".into())]),
        };
        assert_eq!(
            String::from_utf8(to_json(&d)).unwrap(),
            r#"{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:00","size":2,"annotations":{"a":"1","b":"2"}}"#
        );
    }
}
