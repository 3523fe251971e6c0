//! `oci` (an OCI image layout directory) and `oci.tar` (the same layout in
//! one tar file, as `skopeo copy oci-archive:` and `podman load` read it).
//! `oci.tar` also holds Docker's `manifest.json` beside `index.json`, as
//! `docker save` (25 and later) writes it, so `docker load` of any version
//! and `skopeo copy docker-archive:` read it too: the same blobs, named a
//! second way.
//!
//! - One OCI layer per layer of the variant's stack, bottom first: the
//!   bottom one a plain full root, every other one that layer's own
//!   entries, its whiteouts as empty `.wh.<name>` files and its opaque
//!   directories marked by a `.wh..wh..opq` entry (the overlayfs xattr is
//!   not stored). Layer tars have no `./` prefix and no root entry, as
//!   Docker and buildah write them.
//! - Layers are compressed with the crate's deterministic compressors
//!   (gzip by default, zstd or none on request), so a base variant and its
//!   children write byte-identical blobs for the layers they share; with
//!   a cache folder and the layers' store keys ([`Input::layer_ids`]) a
//!   finished blob is kept and copied instead of compressed again (see
//!   `cache.rs`).
//! - The config's `created` and every history entry's are the epoch; the
//!   manifest carries it as `org.opencontainers.image.created`, and
//!   `index.json` names the manifest with `ref_name` when one is given.
//!   JSON is compact with fields in a fixed order (`image.rs`).
//! - Every file is mode 0644 and every folder 0755 whatever the umask; in
//!   `oci.tar` entries are sorted, owned by 0:0 and dated at the epoch.
//!
//! This module does not know what the layers are (a store, a test's
//! folders) nor where the image goes next: it writes the layout and
//! nothing else.

mod cache;
mod image;
mod layer;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write as _};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

pub use kiln_config::reference::is_docker_reference;
use kiln_config::reference::is_ref_name;

use crate::compress::{Compression, compressed};
use crate::error::Error;
use crate::tar::{Whiteouts, write_tar};
use crate::tree::{Node, NodeKind, Tree};
use crate::{Input, Writer};

use cache::BlobCache;
pub use image::rfc3339;
use image::{Descriptor, History, Image, Index, Layout, Manifest, Platform, RootFs, RunConfig};
use layer::{LAYER_VERSION, LayerBlob, media_type, write_layer};

/// The `PATH` a container gets when [`OciOptions::env`] sets none:
/// Docker's default.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Options of an OCI image (`oci` and `oci.tar`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciOptions {
    /// The CPU architecture, as Go and OCI name it (`amd64`, `arm64`,
    /// `arm`, `386`, `ppc64le`, `s390x`, `riscv64`, …). Default `amd64`.
    pub architecture: String,
    /// The architecture's variant (`v7` for `arm`, `v8` for `arm64`), if
    /// any.
    pub variant: Option<String>,
    /// The operating system. Default `linux`.
    pub os: String,
    /// The command a container runs, before [`OciOptions::cmd`].
    pub entrypoint: Vec<String>,
    /// The default arguments (or command, without an entrypoint).
    pub cmd: Vec<String>,
    /// The environment, `NAME=value` each, in order. [`DEFAULT_PATH`] is
    /// put first unless one of them sets `PATH`.
    pub env: Vec<String>,
    /// The working directory, if not `/`.
    pub working_dir: Option<String>,
    /// The user (`name`, `uid`, `uid:gid`, …), if not root.
    pub user: Option<String>,
    /// The image config's labels.
    pub labels: BTreeMap<String, String>,
    /// The name of the image in `index.json`
    /// (`org.opencontainers.image.ref.name`): a tag such as `latest` or
    /// the variant's name. It must follow OCI's grammar (letters, digits,
    /// separated by one of `-._:@+`, `--` or `/`).
    pub ref_name: Option<String>,
    /// The `REPOSITORY:TAG` that `oci.tar`'s Docker `manifest.json` tags
    /// the image with (what `docker load` names it); `None`: untagged. See
    /// [`is_docker_reference`].
    pub docker_reference: Option<String>,
    /// How layers are compressed: gzip (default), zstd or none.
    pub compression: Compression,
}

impl Default for OciOptions {
    fn default() -> Self {
        Self {
            architecture: "amd64".into(),
            variant: None,
            os: "linux".into(),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            env: Vec::new(),
            working_dir: None,
            user: None,
            labels: BTreeMap::new(),
            ref_name: None,
            docker_reference: None,
            compression: Compression::GZIP,
        }
    }
}

impl OciOptions {
    /// A stable description of the options and the writer's version.
    pub(crate) fn identity(&self) -> String {
        // v2: `oci.tar` holds Docker's `manifest.json` too.
        format!(
            "v2 {LAYER_VERSION} compression={} architecture={:?} variant={:?} os={:?} \
             entrypoint={:?} cmd={:?} env={:?} working_dir={:?} user={:?} labels={:?} ref_name={:?} \
             docker_reference={:?}",
            self.compression.identity(),
            self.architecture,
            self.variant,
            self.os,
            self.entrypoint,
            self.cmd,
            self.env,
            self.working_dir,
            self.user,
            self.labels,
            self.ref_name,
            self.docker_reference,
        )
    }

    /// Checks what an image config or layout cannot hold.
    pub fn validate(&self) -> Result<(), String> {
        let token = |what: &str, s: &str| {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                Err(format!("{what} `{s}` is not a name like `amd64`"))
            } else {
                Ok(())
            }
        };
        token("architecture", &self.architecture)?;
        token("os", &self.os)?;
        if let Some(v) = &self.variant {
            token("variant", v)?;
        }
        if media_type(self.compression).is_none() {
            return Err("OCI layers cannot be compressed with xz; use gzip, zstd or none".into());
        }
        self.compression.validate()?;
        for e in &self.env {
            match e.split_once('=') {
                Some((name, _)) if !name.is_empty() => {}
                _ => return Err(format!("environment entry `{e}` is not `NAME=value`")),
            }
        }
        if self.labels.keys().any(String::is_empty) {
            return Err("a label has an empty name".into());
        }
        if let Some(r) = &self.ref_name
            && !is_ref_name(r)
        {
            return Err(format!(
                "ref name `{r}` is not an OCI reference (letters and digits separated by one of `-._:@+`, `--` or `/`)"
            ));
        }
        if let Some(r) = &self.docker_reference
            && !is_docker_reference(r)
        {
            return Err(format!(
                "`{r}` is not a Docker reference `REPOSITORY:TAG` (a lower-case repository, a tag of letters, digits, `_`, `.` and `-`)"
            ));
        }
        Ok(())
    }

    /// The environment as written: [`DEFAULT_PATH`] first unless `env`
    /// sets `PATH`.
    fn environment(&self) -> Vec<String> {
        let mut env = Vec::with_capacity(self.env.len() + 1);
        if !self.env.iter().any(|e| e.starts_with("PATH=")) {
            env.push(DEFAULT_PATH.to_owned());
        }
        env.extend(self.env.iter().cloned());
        env
    }
}

pub(crate) struct OciWriter {
    pub(crate) options: OciOptions,
    /// `oci.tar` rather than a layout directory.
    pub(crate) archive: bool,
}

impl Writer for OciWriter {
    fn write(&self, input: &Input<'_>, dest: &Path) -> Result<(), Error> {
        let format = if self.archive { "oci.tar" } else { "oci" };
        self.options
            .validate()
            .map_err(|reason| Error::Options { format, reason })?;
        if !input.layer_ids.is_empty() && input.layer_ids.len() != input.stack.layers.len() {
            return Err(Error::Options {
                format,
                reason: format!(
                    "{} layer ids were given for {} layers",
                    input.layer_ids.len(),
                    input.stack.layers.len()
                ),
            });
        }
        if !self.archive {
            return write_layout(&self.options, input, dest).map(|_| ());
        }
        let name = dest
            .file_name()
            .map_or_else(|| "oci".into(), |n| n.to_string_lossy().into_owned());
        let layout = dest.with_file_name(format!(".{name}.layout"));
        crate::remove_any(&layout)?;
        let result = write_layout(&self.options, input, &layout).and_then(|written| {
            let manifest = docker_manifest(&written, self.options.docker_reference.as_deref());
            write_file(&layout.join("manifest.json"), &manifest)?;
            write_archive(&layout, input.epoch, dest)
        });
        let _ = fs::remove_dir_all(&layout);
        result
    }
}

/// `sha256:<hex>`.
fn digest_text(digest: &[u8; 32]) -> String {
    format!("sha256:{}", hex::encode(digest))
}

/// Writes `bytes` to the new file `path`, mode 0644, synced.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let wr = |e| Error::io("write", path, e);
    let mut f = File::create(path).map_err(wr)?;
    f.write_all(bytes).map_err(wr)?;
    f.set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(wr)?;
    f.sync_all().map_err(|e| Error::io("sync", path, e))
}

/// Creates the folder `path`, mode 0755.
fn create_dir(path: &Path) -> Result<(), Error> {
    fs::create_dir(path)
        .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(0o755)))
        .map_err(|e| Error::io("create", path, e))
}

/// Syncs the folder `path` (the names in it).
fn sync_dir(path: &Path) -> Result<(), Error> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io("sync", path, e))
}

/// The `blobs/sha256` folder of a layout being written.
struct Blobs {
    dir: PathBuf,
}

impl Blobs {
    fn path(&self, digest: &[u8; 32]) -> PathBuf {
        self.dir.join(&digest_text(digest)[7..])
    }

    /// Stores `bytes` as a blob; its descriptor.
    fn put(&self, media_type: &'static str, bytes: &[u8]) -> Result<Descriptor, Error> {
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        write_file(&self.path(&digest), bytes)?;
        Ok(Descriptor {
            media_type,
            digest: digest_text(&digest),
            size: bytes.len() as u64,
            platform: None,
            annotations: BTreeMap::new(),
        })
    }

    /// Moves the finished blob at `temp` into place.
    fn commit(&self, temp: &Path, digest: &[u8; 32]) -> Result<(), Error> {
        let path = self.path(digest);
        fs::set_permissions(temp, fs::Permissions::from_mode(0o644))
            .and_then(|()| fs::rename(temp, &path))
            .map_err(|e| Error::io("rename", &path, e))
    }
}

/// Writes layer `index`'s blob into `blobs`, from the cache if it holds it
/// (and into the cache if not).
fn layer_blob(
    options: &OciOptions,
    input: &Input<'_>,
    index: usize,
    blobs: &Blobs,
) -> Result<LayerBlob, Error> {
    let temp = blobs.dir.join(format!(".layer-{index}.partial"));
    let cache = input
        .cache_dir
        .filter(|_| !input.layer_ids.is_empty())
        .map(|dir| {
            let identity = format!(
                "{LAYER_VERSION} {} epoch={} bottom={}",
                options.compression.identity(),
                input.epoch,
                index == 0
            );
            let key = BlobCache::key(&input.layer_ids[index], &identity);
            (BlobCache::new(dir), key)
        });
    if let Some((cache, key)) = &cache
        && let Some(blob) = cache.get(key, &temp)?
    {
        blobs.commit(&temp, &blob.digest)?;
        return Ok(blob);
    }
    let blob = write_layer(
        input.stack,
        index,
        input.epoch,
        options.compression,
        input.threads,
        &temp,
        input.cancel,
    )
    .inspect_err(|_| {
        let _ = fs::remove_file(&temp);
    })?;
    if let Some((cache, key)) = &cache {
        cache.put(key, &blob, &temp)?;
    }
    blobs.commit(&temp, &blob.digest)?;
    Ok(blob)
}

/// What Docker's `manifest.json` names: the config and layer blobs.
struct Written {
    config: String,
    layers: Vec<String>,
}

/// Writes the image layout of `input` into the new folder `dir`.
fn write_layout(options: &OciOptions, input: &Input<'_>, dir: &Path) -> Result<Written, Error> {
    create_dir(dir)?;
    create_dir(&dir.join("blobs"))?;
    let blobs = Blobs {
        dir: dir.join("blobs/sha256"),
    };
    create_dir(&blobs.dir)?;
    let layer_type = media_type(options.compression).expect("validated");
    let created = rfc3339(input.epoch);
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    let mut history = Vec::new();
    for index in 0..input.stack.layers.len() {
        let blob = layer_blob(options, input, index, &blobs)?;
        layers.push(Descriptor {
            media_type: layer_type,
            digest: digest_text(&blob.digest),
            size: blob.size,
            platform: None,
            annotations: BTreeMap::new(),
        });
        diff_ids.push(digest_text(&blob.diff_id));
        history.push(History {
            created: created.clone(),
            created_by: "kiln",
            comment: format!("layer {index}"),
        });
    }
    let config = Image {
        created: created.clone(),
        architecture: options.architecture.clone(),
        variant: options.variant.clone(),
        os: options.os.clone(),
        config: RunConfig {
            user: options.user.clone(),
            env: options.environment(),
            entrypoint: options.entrypoint.clone(),
            cmd: options.cmd.clone(),
            working_dir: options.working_dir.clone(),
            labels: options.labels.clone(),
        },
        rootfs: RootFs {
            kind: "layers",
            diff_ids,
        },
        history,
    };
    let config = blobs.put(image::CONFIG, &image::to_json(&config))?;
    let written = Written {
        config: config.digest.clone(),
        layers: layers.iter().map(|l| l.digest.clone()).collect(),
    };
    let manifest = Manifest {
        schema_version: 2,
        media_type: image::MANIFEST,
        config,
        layers,
        annotations: BTreeMap::from([(image::CREATED.to_owned(), created)]),
    };
    let mut manifest = blobs.put(image::MANIFEST, &image::to_json(&manifest))?;
    manifest.platform = Some(Platform {
        architecture: options.architecture.clone(),
        os: options.os.clone(),
        variant: options.variant.clone(),
    });
    if let Some(r) = &options.ref_name {
        manifest
            .annotations
            .insert(image::REF_NAME.into(), r.clone());
    }
    let index = Index {
        schema_version: 2,
        media_type: image::INDEX,
        manifests: vec![manifest],
    };
    write_file(&dir.join("index.json"), &image::to_json(&index))?;
    let layout = Layout {
        image_layout_version: "1.0.0",
    };
    write_file(&dir.join("oci-layout"), &image::to_json(&layout))?;
    sync_dir(&blobs.dir)?;
    sync_dir(&dir.join("blobs"))?;
    Ok(written)
}

/// Docker's `manifest.json` for the layout: one image, its config and
/// layers by path, tagged `reference` (validated by
/// [`OciOptions::validate`]) or untagged.
fn docker_manifest(written: &Written, reference: Option<&str>) -> Vec<u8> {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        config: String,
        repo_tags: Vec<String>,
        layers: Vec<String>,
    }
    let path = |digest: &str| format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
    let entry = Entry {
        config: path(&written.config),
        repo_tags: reference.map(str::to_owned).into_iter().collect(),
        layers: written.layers.iter().map(|d| path(d)).collect(),
    };
    image::to_json(&[entry])
}

/// Writes the layout folder `layout` (with Docker's `manifest.json`) as a
/// plain tar to `dest`: entries in
/// path order, no root entry, folders 0755 and files 0644, owned by 0:0,
/// dated `epoch`.
fn write_archive(layout: &Path, epoch: i64, dest: &Path) -> Result<(), Error> {
    let node = |path: &str, kind: NodeKind| Node {
        path: path.to_owned(),
        mode: if kind == NodeKind::Dir { 0o755 } else { 0o644 },
        kind,
        uid: 0,
        gid: 0,
        mtime: epoch,
        xattrs: Vec::new(),
    };
    let file = |path: &str| -> Result<Node, Error> {
        let source = layout.join(path);
        let size = fs::metadata(&source)
            .map_err(|e| Error::io("read", &source, e))?
            .len();
        Ok(node(path, NodeKind::File { size, source }))
    };
    let sha256 = layout.join("blobs/sha256");
    let mut names = Vec::new();
    for e in fs::read_dir(&sha256).map_err(|e| Error::io("read", &sha256, e))? {
        let e = e.map_err(|e| Error::io("read", &sha256, e))?;
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    names.sort_unstable();
    let mut nodes = vec![
        node("", NodeKind::Dir),
        node("blobs", NodeKind::Dir),
        node("blobs/sha256", NodeKind::Dir),
    ];
    for name in names {
        nodes.push(file(&format!("blobs/sha256/{name}"))?);
    }
    nodes.push(file("index.json")?);
    nodes.push(file("manifest.json")?);
    nodes.push(file("oci-layout")?);
    let file = File::create(dest).map_err(|e| Error::io("create", dest, e))?;
    let out = compressed(
        BufWriter::with_capacity(1 << 20, file),
        Compression::None,
        1,
    )
    .map_err(|e| Error::io("write", dest, e))?;
    // The layout is written already: copying it out is quick.
    write_tar(&Tree { nodes }, "", Whiteouts::Overlay, out, dest, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_manifest_names_blobs_and_tags() {
        let written = Written {
            config: format!("sha256:{}", "c".repeat(64)),
            layers: vec![format!("sha256:{}", "a".repeat(64))],
        };
        let manifest = |r: Option<&str>| -> serde_json::Value {
            serde_json::from_slice(&docker_manifest(&written, r)).unwrap()
        };
        assert_eq!(
            manifest(Some("vm:latest")),
            serde_json::json!([{
                "Config": format!("blobs/sha256/{}", "c".repeat(64)),
                "RepoTags": ["vm:latest"],
                "Layers": [format!("blobs/sha256/{}", "a".repeat(64))],
            }])
        );
        assert_eq!(manifest(None)[0]["RepoTags"], serde_json::json!([]));
    }

    #[test]
    fn path_is_added_unless_set() {
        let mut o = OciOptions {
            env: vec!["LANG=C.UTF-8".into()],
            ..OciOptions::default()
        };
        assert_eq!(o.environment(), [DEFAULT_PATH, "LANG=C.UTF-8"]);
        o.env.push("PATH=/bin".into());
        assert_eq!(o.environment(), ["LANG=C.UTF-8", "PATH=/bin"]);
    }

    #[test]
    fn options_are_checked() {
        let bad = [
            OciOptions {
                compression: Compression::XZ,
                ..OciOptions::default()
            },
            OciOptions {
                architecture: "x86 64".into(),
                ..OciOptions::default()
            },
            OciOptions {
                env: vec!["=x".into()],
                ..OciOptions::default()
            },
            OciOptions {
                ref_name: Some("no spaces".into()),
                ..OciOptions::default()
            },
        ];
        for o in bad {
            assert!(o.validate().is_err(), "{o:?}");
        }
        assert_eq!(OciOptions::default().validate(), Ok(()));
    }
}
