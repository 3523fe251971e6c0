//! `kiln publish`: what each variant pushes, the checks on ids and
//! revisions, and the pushes themselves.
//!
//! A variant pushes one *unit* per artifact kind: its `oci` output as a
//! runnable image, its kernel and initrd as one artifact, every other
//! file as an artifact of its own. Each unit goes to
//! `<registry>/<repository>` under its tags; a unit whose layer key equals
//! the newest published revision's is up to date and pushes nothing.
//!
//! Order, so a failure leaves nothing half-tagged: every unit is checked
//! first (ids, tags, files), then per unit its blobs, its manifest by
//! digest, its referrers (the variant's manifest entry and SBOM), and its
//! tags last.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use kiln_build::{Manifest, VariantEntry, Workspace};
use kiln_plan::{Plan, Selection};
use serde::Serialize;
use serde_json::{Value, json};

use crate::catalog::{self, Published};
use crate::client::{BlobSource, Client, ClientOptions, EMPTY, MANIFEST};
use crate::error::Error;
use crate::template::{self, Vars};
use crate::{Registries, annotations as a, sha256_hex};

/// How to publish.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// A registry for every variant, over `[publish] registry`.
    pub registry: Option<String>,
    /// How to reach registries.
    pub client: ClientOptions,
    /// The publish time (`{time}`, `dev.kiln.published`).
    pub now: jiff::Timestamp,
    /// Publish a new revision even of unchanged variants.
    pub revise: bool,
    /// Check and list, push nothing.
    pub dry_run: bool,
}

/// What became of one unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnitAction {
    /// Pushed now.
    Pushed,
    /// Its newest revision has the same layer key.
    UpToDate,
    /// `--dry-run`: would be pushed.
    WouldPush,
}

/// One pushed (or checked) unit.
#[derive(Debug, Clone, Serialize)]
pub struct UnitReport {
    /// The variant.
    pub variant: String,
    /// `oci`, `qcow2`, `kernel`, …
    pub format: String,
    /// `host/repository`.
    pub repository: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its id.
    pub id: String,
    /// Its revision.
    pub revision: u32,
    /// Its manifest's digest (none in a dry run of a new revision).
    pub digest: Option<String>,
    /// Bytes of its files.
    pub size: u64,
    /// What happened.
    pub action: UnitAction,
    /// For an flist: its blocks, per route.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<crate::flist::BlockUpload>,
}

impl UnitReport {
    /// This unit, reported as `p`, its up-to-date published revision.
    pub(crate) fn up_to_date(self, p: &Published) -> UnitReport {
        UnitReport {
            tags: p.tags.clone(),
            id: p.id().unwrap_or_default().to_owned(),
            revision: p.revision().unwrap_or(0),
            digest: Some(p.digest.clone()),
            action: UnitAction::UpToDate,
            ..self
        }
    }
}

/// What a publish did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PublishReport {
    /// Every unit, in plan order.
    pub units: Vec<UnitReport>,
    /// Blobs uploaded.
    pub blobs_uploaded: u64,
    /// Their bytes.
    pub bytes_uploaded: u64,
    /// Blobs mounted from another repository.
    pub blobs_mounted: u64,
    /// Blobs already there.
    pub blobs_present: u64,
    /// Manifests written (units, referrers, indexes).
    pub manifests_pushed: u64,
    /// Requests retried.
    pub retries: u64,
}

/// What a unit is made of.
#[derive(Debug, Clone)]
pub(crate) enum Content {
    /// An OCI layout folder.
    Image(PathBuf),
    /// Files: (path, title, media type, size, sha256).
    Files(Vec<FileBlob>),
}

#[derive(Debug, Clone)]
pub(crate) struct FileBlob {
    path: PathBuf,
    title: String,
    media_type: String,
    size: u64,
    sha256: String,
}

/// A unit, checked and ready to push.
#[derive(Debug, Clone)]
pub(crate) struct Unit {
    pub(crate) variant: String,
    pub(crate) format: String,
    pub(crate) host: String,
    pub(crate) repository: String,
    pub(crate) tags: Vec<String>,
    pub(crate) id: String,
    pub(crate) revision: u32,
    pub(crate) content: Content,
    pub(crate) entry: VariantEntry,
    pub(crate) up_to_date: Option<Published>,
    /// For an flist: the block store the build wrote.
    pub(crate) flist_store: Option<PathBuf>,
    /// For an image of a variant with an `arch` key: the index it goes
    /// into (the image and its other keys).
    pub(crate) group: Option<String>,
}

/// The media type of an artifact file of `format`.
#[must_use]
pub fn file_media_type(format: &str) -> String {
    match format {
        "tar" => "application/x-tar".into(),
        "tar.gz" => "application/vnd.kiln.rootfs.tar+gzip".into(),
        "tar.zst" => "application/vnd.kiln.rootfs.tar+zstd".into(),
        "tar.xz" => "application/vnd.kiln.rootfs.tar+xz".into(),
        "vmlinuz" => "application/vnd.kiln.kernel".into(),
        "initrd.img" => "application/vnd.kiln.initrd".into(),
        other => format!("application/vnd.kiln.{other}"),
    }
}

/// The `artifactType` of a unit of `format`.
#[must_use]
pub fn artifact_type(format: &str) -> String {
    format!("application/vnd.kiln.{format}.v1")
}

/// The registry host and the namespace under it (`127.0.0.1:5000/kiln`
/// → `("127.0.0.1:5000", "kiln")`).
pub fn split_registry(registry: &str) -> Result<(String, String), Error> {
    let trimmed = registry
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let (host, path) = trimmed.split_once('/').unwrap_or((trimmed, ""));
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(Error::Reference {
            reference: registry.to_owned(),
            problem: "it names no registry host".into(),
        });
    }
    if !path.is_empty() {
        template::check_repository(path).map_err(|problem| Error::Reference {
            reference: registry.to_owned(),
            problem,
        })?;
    }
    Ok((host.to_owned(), path.to_owned()))
}

/// Publishes the selected variants of `plan` whose artifacts `manifest`
/// lists.
pub fn publish(
    ws: &Workspace,
    plan: &Plan,
    selection: &Selection,
    manifest: &Manifest,
    options: &PublishOptions,
    registries: &Registries,
) -> Result<PublishReport, Error> {
    let out_dir = ws.out_dir();
    let git = crate::git_info(&ws.tree().root);
    let mut catalogs: HashMap<(String, String), Vec<Published>> = HashMap::new();
    let mut units = Vec::new();
    for v in plan
        .variants
        .iter()
        .filter(|v| kiln_build::selects(selection, v))
    {
        let entry = manifest
            .variant(&v.name)
            .filter(|e| !e.artifacts.is_empty())
            .ok_or_else(|| Error::NotBuilt {
                variant: v.name.clone(),
                out: out_dir.clone(),
            })?;
        let settings = &v.settings.publish;
        let mut vars = vars_of(v, options.now);
        vars.plain.insert(
            "branch".into(),
            git.branch.clone().unwrap_or_else(|| "nobranch".into()),
        );
        for p in &entry.packages {
            vars.versions.insert(p.name.clone(), p.version.clone());
        }
        let (host, repository) = target(v, &vars, options.registry.as_deref())?;
        let client = registries.client(&host, &options.client)?;
        let err = |field: &'static str, template: &str| {
            let variant = v.name.clone();
            let template = template.to_owned();
            move |problem: String| Error::Template {
                variant,
                field,
                template,
                problem,
            }
        };
        let published = match catalogs.entry((host.clone(), repository.clone())) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(catalog::read(&client, &repository)?)
            }
        };
        for (format, content) in contents(entry, &out_dir)? {
            // Images of variants that differ only by their `arch` key
            // become one index, published under the group's name.
            let group = matches!(content, Content::Image(_))
                .then(|| arch_group(v))
                .flatten();
            let subject = group.clone().unwrap_or_else(|| v.name.clone());
            let newest = catalog::newest(published, &subject, &format).cloned();
            let up_to_date = newest
                .as_ref()
                .filter(|p| {
                    !options.revise
                        && p.layer_key()
                            .is_some_and(|k| k.split(',').any(|k| k == entry.layer_key))
                })
                .cloned();
            let revision = newest
                .as_ref()
                .and_then(Published::revision)
                .map_or(0, |r| r + 1);
            let mut vars = vars.clone();
            if group.is_some() {
                vars.plain.insert("keys".into(), keys_without_arch(v));
            }
            vars.plain.insert("format".into(), format.clone());
            vars.plain.insert("revision".into(), revision.to_string());
            let id_template = settings.id.as_deref().unwrap_or("{time}");
            let id = template::tidy(
                &template::render(id_template, &vars).map_err(err("id", id_template))?,
            );
            vars.plain.insert("id".into(), id.clone());
            if up_to_date.is_none() {
                if let Some(last) = newest.as_ref().and_then(Published::id) {
                    let id_error = |problem: String| Error::Id {
                        variant: v.name.clone(),
                        format: format.clone(),
                        id: id.clone(),
                        problem,
                    };
                    if last == id {
                        return Err(id_error(format!(
                            "is the id of the last published revision (r{}); a new revision needs a new id: put `{{time}}` or `{{revision}}` in `[publish] id`",
                            revision.saturating_sub(1)
                        )));
                    }
                    if template::natural_cmp(&id, last) != std::cmp::Ordering::Greater {
                        return Err(id_error(format!(
                            "sorts before the last published id `{last}`: ids must grow, so the newest sorts last (is the clock or KILN_NOW behind?)"
                        )));
                    }
                }
            }
            let mut default_tags = vec!["{keys}-{id}".to_owned(), "{keys}-latest".to_owned()];
            // The hub's alias: `<name>-<branch>-latest.flist`.
            if format == "flist" && git.branch.is_some() {
                default_tags.push("{variant}-{branch}-latest".to_owned());
            }
            let tag_templates = settings.tags.clone().unwrap_or(default_tags);
            let mut tags = Vec::new();
            for t in &tag_templates {
                let mut tag = template::tidy(&template::render(t, &vars).map_err(err("tags", t))?);
                if !matches!(content, Content::Image(_)) && !t.contains("{format}") {
                    tag = if tag.is_empty() {
                        format.clone()
                    } else {
                        format!("{tag}.{format}")
                    };
                }
                template::check_tag(&tag).map_err(err("tags", t))?;
                // An id's tag names one revision: it must be new.
                if up_to_date.is_none() && (t.contains("{id}") || t.contains("{revision}")) {
                    if let Some(holder) = published.iter().find(|p| p.tags.contains(&tag)) {
                        return Err(Error::Id {
                            variant: v.name.clone(),
                            format: format.clone(),
                            id: id.clone(),
                            problem: format!(
                                "gives tag `{tag}`, which {host}/{repository} already has (on {}); change the id template (`[publish] id`, e.g. `{{time}}`) or its inputs",
                                holder.digest
                            ),
                        });
                    }
                }
                if !tags.contains(&tag) {
                    tags.push(tag);
                }
            }
            let store = (format == "flist").then(|| flist_store(v, &ws.tree().root, &out_dir));
            if let (Some(_), Content::Files(files)) = (&store, &content) {
                for f in files {
                    crate::flist::check_routes(&f.path)?;
                }
            }
            units.push(Unit {
                group,
                flist_store: store,
                variant: v.name.clone(),
                format,
                host: host.clone(),
                repository: repository.clone(),
                tags,
                id,
                revision,
                content,
                entry: entry.clone(),
                up_to_date,
            });
        }
    }

    let mut report = PublishReport::default();
    // Units of one group with the same repository and tags: one index.
    let mut groups: Vec<Vec<&Unit>> = Vec::new();
    for unit in units.iter().filter(|u| u.group.is_some()) {
        match groups.iter_mut().find(|g| {
            g[0].group == unit.group
                && g[0].host == unit.host
                && g[0].repository == unit.repository
                && g[0].tags == unit.tags
        }) {
            Some(g) => g.push(unit),
            None => groups.push(vec![unit]),
        }
    }
    for members in &groups {
        report.units.push(crate::index::publish_group(
            members, registries, options, &git, &out_dir,
        )?);
    }
    for unit in units.iter().filter(|u| u.group.is_none()) {
        let size = match &unit.content {
            Content::Files(files) => files.iter().map(|f| f.size).sum(),
            Content::Image(dir) => image_size(dir)?,
        };
        let base = UnitReport {
            variant: unit.variant.clone(),
            format: unit.format.clone(),
            repository: format!("{}/{}", unit.host, unit.repository),
            tags: unit.tags.clone(),
            id: unit.id.clone(),
            revision: unit.revision,
            digest: None,
            size,
            action: UnitAction::WouldPush,
            blocks: Vec::new(),
        };
        if let Some(p) = &unit.up_to_date {
            report.units.push(base.up_to_date(p));
            continue;
        }
        if options.dry_run {
            report.units.push(base);
            continue;
        }
        // An flist's blocks first: whoever pulls it must find them.
        let mut blocks = Vec::new();
        if let (Some(store), Content::Files(files)) = (&unit.flist_store, &unit.content) {
            for f in files {
                blocks.extend(crate::flist::upload_blocks(
                    &f.path,
                    store,
                    &ws.tree().root,
                )?);
            }
        }
        let client = registries.client(&unit.host, &options.client)?;
        let (digest, _) = push_unit(&client, unit, &git, options.now, &out_dir, true)?;
        report.units.push(UnitReport {
            digest: Some(digest),
            action: UnitAction::Pushed,
            blocks,
            ..base
        });
    }
    for client in registries.all() {
        let s = &client.stats;
        report.blobs_uploaded += s.blobs_uploaded.load(Ordering::Relaxed);
        report.bytes_uploaded += s.bytes_uploaded.load(Ordering::Relaxed);
        report.blobs_mounted += s.blobs_mounted.load(Ordering::Relaxed);
        report.blobs_present += s.blobs_present.load(Ordering::Relaxed);
        report.manifests_pushed += s.manifests_pushed.load(Ordering::Relaxed);
        report.retries += s.retries.load(Ordering::Relaxed);
    }
    Ok(report)
}

/// The block store `v`'s flist output writes (its `store`, else
/// `OUT/flist-store`).
fn flist_store(v: &kiln_plan::Variant, tree_root: &Path, out_dir: &Path) -> PathBuf {
    v.settings
        .outputs
        .iter()
        .find_map(|o| match &o.options {
            kiln_config::output::OutputOptions::Flist { store: Some(s), .. } => {
                Some(tree_root.join(s))
            }
            _ => None,
        })
        .unwrap_or_else(|| out_dir.join("flist-store"))
}

/// The dimension whose keys name architectures.
const ARCH_DIMENSION: &str = "arch";

/// The index an image of `v` goes into: its image and its keys but the
/// `arch` one (`base-bookworm`), when `v` has an `arch` key.
fn arch_group(v: &kiln_plan::Variant) -> Option<String> {
    v.keys
        .iter()
        .any(|(d, _)| d == ARCH_DIMENSION)
        .then(|| template::tidy(&format!("{}-{}", v.image, keys_without_arch(v))))
}

fn keys_without_arch(v: &kiln_plan::Variant) -> String {
    v.keys
        .iter()
        .filter(|(d, _)| d != ARCH_DIMENSION)
        .map(|(_, k)| k.as_str())
        .collect::<Vec<_>>()
        .join("-")
}

/// The placeholders every template of `v` may use.
fn vars_of(v: &kiln_plan::Variant, now: jiff::Timestamp) -> Vars {
    let mut vars = Vars {
        time: Some(now),
        ..Vars::default()
    };
    vars.plain.insert("image".into(), v.image.clone());
    vars.plain.insert("variant".into(), v.name.clone());
    vars.plain.insert("arch".into(), v.settings.arch.clone());
    vars.plain.insert(
        "keys".into(),
        v.keys
            .iter()
            .map(|(_, k)| k.as_str())
            .collect::<Vec<_>>()
            .join("-"),
    );
    for (d, k) in &v.keys {
        vars.plain.insert(d.clone(), k.clone());
    }
    vars
}

/// Where `v` publishes: (registry host, repository).
fn target(
    v: &kiln_plan::Variant,
    vars: &Vars,
    registry: Option<&str>,
) -> Result<(String, String), Error> {
    let settings = &v.settings.publish;
    let registry = registry
        .map(str::to_owned)
        .or_else(|| settings.registry.clone())
        .ok_or_else(|| Error::NoRegistry {
            variant: v.name.clone(),
        })?;
    let (host, namespace) = split_registry(&registry)?;
    let template = settings.repository.as_deref().unwrap_or("{image}");
    let err = |problem: String| Error::Template {
        variant: v.name.clone(),
        field: "repository",
        template: template.to_owned(),
        problem,
    };
    let name = template::render(template, vars).map_err(err)?;
    let repository = if namespace.is_empty() {
        name
    } else {
        format!("{namespace}/{name}")
    };
    template::check_repository(&repository).map_err(err)?;
    Ok((host, repository))
}

/// Every (registry host, repository) the selected variants of `plan`
/// publish to, without duplicates.
pub fn targets(
    plan: &Plan,
    selection: &Selection,
    registry: Option<&str>,
) -> Result<Vec<(String, String)>, Error> {
    let mut out = Vec::new();
    for v in plan
        .variants
        .iter()
        .filter(|v| kiln_build::selects(selection, v))
    {
        let t = target(v, &vars_of(v, jiff::Timestamp::UNIX_EPOCH), registry)?;
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

/// The units of a variant: (format, content), checked against the disk.
fn contents(entry: &VariantEntry, out_dir: &Path) -> Result<Vec<(String, Content)>, Error> {
    let mut out = Vec::new();
    let mut kernel = Vec::new();
    for artifact in &entry.artifacts {
        let path = out_dir.join(&artifact.path);
        match artifact.format.as_str() {
            // A folder is for local use; it has no one file to push.
            "dir" => {}
            "oci" => out.push(("oci".to_owned(), Content::Image(path))),
            format => {
                let meta = std::fs::metadata(&path).map_err(|source| Error::Read {
                    path: path.clone(),
                    source,
                })?;
                if meta.len() != artifact.size {
                    return Err(Error::Artifact {
                        path,
                        problem: format!(
                            "is {} bytes, and manifest.json says {}: rebuild it (`kiln build`)",
                            meta.len(),
                            artifact.size
                        ),
                    });
                }
                let blob = FileBlob {
                    path,
                    title: artifact.name.clone(),
                    media_type: file_media_type(format),
                    size: artifact.size,
                    sha256: artifact.sha256.clone(),
                };
                if matches!(format, "vmlinuz" | "initrd.img") {
                    kernel.push(blob);
                } else {
                    out.push((format.to_owned(), Content::Files(vec![blob])));
                }
            }
        }
    }
    if !kernel.is_empty() {
        out.push(("kernel".to_owned(), Content::Files(kernel)));
    }
    Ok(out)
}

pub(crate) fn image_size(dir: &Path) -> Result<u64, Error> {
    let (_, manifest) = read_layout(dir)?;
    Ok(std::iter::once(&manifest["config"])
        .chain(manifest["layers"].as_array().into_iter().flatten())
        .filter_map(|d| d["size"].as_u64())
        .sum())
}

/// The manifest bytes and JSON of an OCI layout's one image.
pub(crate) fn read_layout(dir: &Path) -> Result<(Vec<u8>, Value), Error> {
    let read = |p: PathBuf| std::fs::read(&p).map_err(|source| Error::Read { path: p, source });
    let index: Value =
        serde_json::from_slice(&read(dir.join("index.json"))?).map_err(|e| Error::Artifact {
            path: dir.join("index.json"),
            problem: format!("not JSON: {e}"),
        })?;
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .ok_or_else(|| Error::Artifact {
            path: dir.join("index.json"),
            problem: "names no manifest".into(),
        })?;
    let bytes = read(blob_path(dir, digest))?;
    let json = serde_json::from_slice(&bytes).map_err(|e| Error::Artifact {
        path: blob_path(dir, digest),
        problem: format!("not JSON: {e}"),
    })?;
    Ok((bytes, json))
}

pub(crate) fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs").join(digest.replacen(':', "/", 1))
}

fn empty_descriptor() -> Value {
    json!({"mediaType": EMPTY, "digest": crate::EMPTY_DIGEST, "size": 2, "data": "e30="})
}

/// The annotations of a unit's manifest.
pub(crate) fn annotations_of(
    unit: &Unit,
    git: &crate::GitInfo,
    now: jiff::Timestamp,
) -> BTreeMap<String, String> {
    let e = &unit.entry;
    let mut annotations = BTreeMap::new();
    annotations.insert(a::CREATED.to_owned(), kiln_build::rfc3339(e.epoch));
    if let Some(url) = &git.source {
        annotations.insert(a::SOURCE.to_owned(), url.clone());
    }
    if let Some(commit) = &git.commit {
        annotations.insert(a::REVISION.to_owned(), commit.clone());
    }
    annotations.insert(a::VERSION.to_owned(), unit.id.clone());
    annotations.insert(a::VARIANT.to_owned(), unit.variant.clone());
    annotations.insert(a::IMAGE.to_owned(), e.image.clone());
    annotations.insert(a::FORMAT.to_owned(), unit.format.clone());
    annotations.insert(
        a::KEYS.to_owned(),
        e.keys
            .iter()
            .map(|(d, k)| format!("{d}={k}"))
            .collect::<Vec<_>>()
            .join(","),
    );
    annotations.insert(a::INPUT_DIGEST.to_owned(), e.input_digest.clone());
    annotations.insert(a::LAYER_KEY.to_owned(), e.layer_key.clone());
    annotations.insert(a::ID.to_owned(), unit.id.clone());
    annotations.insert(a::KILN_REVISION.to_owned(), unit.revision.to_string());
    // Whole seconds: the annotation is read by people too.
    let now = jiff::Timestamp::from_second(now.as_second()).unwrap_or(now);
    annotations.insert(a::PUBLISHED.to_owned(), now.to_string());
    annotations
}

/// Pushes one unit (its tags too when `tag`); returns its manifest's
/// digest and size.
pub(crate) fn push_unit(
    client: &Client,
    unit: &Unit,
    git: &crate::GitInfo,
    now: jiff::Timestamp,
    out_dir: &Path,
    tag: bool,
) -> Result<(String, u64), Error> {
    let repo = &unit.repository;
    let e = &unit.entry;
    let annotations = annotations_of(unit, git, now);

    let manifest = match &unit.content {
        Content::Image(dir) => crate::index::image_manifest(client, repo, dir, &annotations)?,
        Content::Files(files) => {
            client.push_blob(repo, crate::EMPTY_DIGEST, 2, BlobSource::Bytes(b"{}"))?;
            let mut layers = Vec::new();
            for f in files {
                let digest = format!("sha256:{}", f.sha256);
                client.push_blob(repo, &digest, f.size, BlobSource::File(&f.path))?;
                layers.push(json!({
                    "mediaType": f.media_type,
                    "digest": digest,
                    "size": f.size,
                    "annotations": {a::TITLE: f.title},
                }));
            }
            json!({
                "schemaVersion": 2,
                "mediaType": MANIFEST,
                "artifactType": artifact_type(&unit.format),
                "config": empty_descriptor(),
                "layers": layers,
                "annotations": annotations,
            })
        }
    };
    let bytes = serde_json::to_vec(&manifest).expect("serializable");
    let digest = format!("sha256:{}", sha256_hex(&bytes));
    client.put_manifest(repo, &digest, MANIFEST, &bytes)?;
    let subject = json!({"mediaType": MANIFEST, "digest": digest, "size": bytes.len()});

    // The variant's manifest entry and its SBOM, as referrers.
    let entry_json = serde_json::to_vec_pretty(e).expect("serializable");
    let mut attached = vec![(
        crate::MANIFEST_ENTRY_TYPE,
        "application/json".to_owned(),
        format!("{}.manifest.json", unit.variant),
        entry_json,
    )];
    if let Some(sbom) = &e.sbom {
        let path = out_dir.join(sbom);
        let bytes = std::fs::read(&path).map_err(|source| Error::Read { path, source })?;
        attached.push((
            crate::SBOM_TYPE,
            crate::SBOM_TYPE.to_owned(),
            format!("{}.spdx.json", unit.variant),
            bytes,
        ));
    }
    let mut fallback = Vec::new();
    for (artifact_type, media_type, title, bytes) in attached {
        let mut ann = BTreeMap::new();
        ann.insert(a::CREATED.to_owned(), kiln_build::rfc3339(e.epoch));
        let (_, descriptor) = crate::push_referrer_manifest(
            client,
            repo,
            &subject,
            artifact_type,
            &ann,
            Some((&media_type, &title, &bytes)),
        )?;
        fallback.extend(descriptor);
    }
    // Both referrers in one update of the tag-schema index.
    if !fallback.is_empty() {
        client.add_fallback_referrers(repo, &digest, fallback)?;
    }
    if tag {
        for tag in &unit.tags {
            client.put_manifest(repo, tag, MANIFEST, &bytes)?;
        }
    }
    Ok((digest, bytes.len() as u64))
}
