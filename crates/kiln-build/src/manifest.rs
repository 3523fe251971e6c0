//! `OUT/manifest.json` and each variant's SPDX SBOM.
//!
//! The manifest lists every variant the tree's builds have produced, with
//! its artifacts. A build rewrites the entries of the variants it built
//! (or found cached) and keeps the others, so `kiln build --only …` does
//! not forget what an earlier build wrote.
//!
//! Revisions follow Alpine's image builder: an artifact's name is
//! `<variant>-r<N>.<format>`; the first is `r0`; a new build of the same
//! variant and format keeps `N` when the file's SHA-256 is unchanged and
//! takes `N + 1` when it changed.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The file's name in the output folder.
pub const MANIFEST_FILE: &str = "manifest.json";

/// `manifest.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The version of kiln that last wrote it.
    pub kiln_version: String,
    /// Every variant, sorted by name.
    pub variants: Vec<VariantEntry>,
}

/// One variant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VariantEntry {
    /// The variant's name.
    pub variant: String,
    /// Its image.
    pub image: String,
    /// Its dimension keys.
    pub keys: BTreeMap<String, String>,
    /// Its input digest (configuration and image files).
    pub input_digest: String,
    /// The key its layer is stored under (input digest, locked packages,
    /// parent's key).
    pub layer_key: String,
    /// The variant it builds on.
    pub parent: Option<String>,
    /// The parent's layer key.
    pub parent_key: Option<String>,
    /// The build's epoch (`SOURCE_DATE_EPOCH`) its artifacts were written
    /// with.
    pub epoch: i64,
    /// Its SPDX SBOM, relative to the output folder.
    pub sbom: Option<String>,
    /// What it was built or found cached at (RFC 3339, UTC).
    pub build_time: String,
    /// Its artifacts, in the order of its `outputs`.
    pub artifacts: Vec<ArtifactEntry>,
    /// The Debian packages installed in its root.
    pub packages: Vec<PackageEntry>,
    /// How it boots over HTTP, when it is a netboot base (`netboot =
    /// true`, with its squashfs, kernel and initrd) or an overlay over
    /// one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netboot: Option<NetbootEntry>,
    /// The last `kiln test` of this layer (kept while the layer key is
    /// the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<TestRecord>,
}

/// What `kiln test` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestRecord {
    /// Whether it passed.
    pub passed: bool,
    /// `passed`, `failed`, `timed_out`, `ended` or `cancelled`.
    pub verdict: String,
    /// How it booted (`bios`, `uefi`, `direct`, `netboot`).
    pub boot: String,
    /// How long it took, in milliseconds.
    pub millis: u64,
    /// When it ran (RFC 3339, UTC).
    pub at: String,
}

/// How a netboot variant boots: the base's kernel and initrd, its
/// squashfs, and the overlays from the base down to the variant, in the
/// order the boot script applies them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetbootEntry {
    /// The variant whose squashfs, kernel and initrd it boots.
    pub base_variant: String,
    /// The kernel, relative to the output folder.
    pub kernel: String,
    /// The initrd, relative to the output folder.
    pub initrd: String,
    /// The base squashfs.
    pub base: NetbootFile,
    /// The overlays (`overlay.cpio.gz`), base first.
    pub overlays: Vec<NetbootFile>,
    /// The kernel command line the boot script reads; its names are
    /// relative to the output folder, so a boot server adds `kiln.url=`
    /// (where it serves that folder) and the console.
    pub cmdline: String,
}

/// The boot script's part of a kernel command line: `boot=kiln-netboot`,
/// the base squashfs and the `overlays` (name, SHA-256) in order, each
/// name relative to `kiln.url=` or a URL. The manifest records it; a boot
/// server adds its own overlays, `kiln.url=` and the console.
pub fn netboot_cmdline<'a>(
    base: &NetbootFile,
    overlays: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let (names, shas): (Vec<&str>, Vec<&str>) = overlays.into_iter().unzip();
    let mut line = format!(
        "boot={} kiln.base={} kiln.base.sha256={}",
        kiln_config::netboot::BOOT,
        base.path,
        base.sha256
    );
    if !names.is_empty() {
        line.push_str(&format!(
            " kiln.overlay={} kiln.overlay.sha256={}",
            names.join(","),
            shas.join(",")
        ));
    }
    line
}

/// A file the boot script fetches and checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetbootFile {
    /// Relative to the output folder.
    pub path: String,
    /// Its SHA-256.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

/// One artifact.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactEntry {
    /// `<variant>-r<N>.<format>`.
    pub name: String,
    /// `N`.
    pub revision: u32,
    /// The format (`squashfs`, `tar.zst`, …).
    pub format: String,
    /// The file, relative to the output folder.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256.
    pub sha256: String,
    /// When it was written (RFC 3339, UTC); an artifact reused from the
    /// store keeps the time it was first written.
    pub build_time: String,
    /// The version of kiln that wrote it.
    pub kiln_version: String,
}

/// An installed package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageEntry {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its architecture.
    pub architecture: String,
    /// Its source package, when it differs from the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `Installed-Size`, in KiB.
    #[serde(default)]
    pub installed_size_kib: u64,
}

impl Manifest {
    /// The manifest in `out_dir`, or an empty one if there is none or it
    /// cannot be read (it is rewritten whole).
    #[must_use]
    pub fn read(out_dir: &Path) -> Manifest {
        fs::read_to_string(out_dir.join(MANIFEST_FILE))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// The entry of `variant`.
    #[must_use]
    pub fn variant(&self, variant: &str) -> Option<&VariantEntry> {
        self.variants.iter().find(|v| v.variant == variant)
    }

    /// Replaces (or adds) the entries of `entries`.
    pub fn update(&mut self, entries: Vec<VariantEntry>) {
        for entry in entries {
            self.variants.retain(|v| v.variant != entry.variant);
            self.variants.push(entry);
        }
        self.variants.sort_by(|a, b| a.variant.cmp(&b.variant));
        env!("CARGO_PKG_VERSION").clone_into(&mut self.kiln_version);
    }

    /// Fills in the netboot entries of `chains`: each is a variant's
    /// lineage from its netboot base down to it. A variant gets an entry
    /// when the base has a squashfs, a kernel and an initrd and every
    /// variant below it an `overlay.cpio.gz`; otherwise it has none.
    pub fn link_netboot(&mut self, chains: &[Vec<String>]) {
        for chain in chains {
            let Some(variant) = chain.last() else {
                continue;
            };
            let entry = self.netboot_of(chain);
            if let Some(v) = self.variants.iter_mut().find(|v| &v.variant == variant) {
                v.netboot = entry;
            }
        }
    }

    fn netboot_of(&self, chain: &[String]) -> Option<NetbootEntry> {
        let (base_name, above) = chain.split_first()?;
        let base = self.variant(base_name)?;
        let file = |v: &VariantEntry, format: &str| {
            v.artifacts
                .iter()
                .find(|a| a.format == format)
                .map(|a| NetbootFile {
                    path: a.path.clone(),
                    sha256: a.sha256.clone(),
                    size: a.size,
                })
        };
        let squashfs = file(base, "squashfs")?;
        let kernel = file(base, "vmlinuz")?.path;
        let initrd = file(base, "initrd.img")?.path;
        let overlays = above
            .iter()
            .map(|name| self.variant(name).and_then(|v| file(v, "overlay.cpio.gz")))
            .collect::<Option<Vec<_>>>()?;
        let cmdline = netboot_cmdline(
            &squashfs,
            overlays
                .iter()
                .map(|o| (o.path.as_str(), o.sha256.as_str())),
        );
        Some(NetbootEntry {
            base_variant: base_name.clone(),
            kernel,
            initrd,
            base: squashfs,
            overlays,
            cmdline,
        })
    }

    /// Writes it to `out_dir` atomically.
    pub fn write(&self, out_dir: &Path) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(self).expect("serializable");
        write_atomic(&out_dir.join(MANIFEST_FILE), json.as_bytes())
    }
}

/// The revision an artifact of `format` with `sha256` gets, given the
/// variant's previous entry.
#[must_use]
pub fn revision(previous: Option<&VariantEntry>, format: &str, sha256: &str) -> u32 {
    match previous.and_then(|p| p.artifacts.iter().find(|a| a.format == format)) {
        Some(a) if a.sha256 == sha256 => a.revision,
        Some(a) => a.revision + 1,
        None => 0,
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    kiln_store::write_atomic(path, bytes, 0o644)
}

/// The installed packages of a dpkg `status` file, sorted by name; errs
/// with the reason if it is not a control file.
pub fn installed_packages(status: &str) -> Result<Vec<PackageEntry>, String> {
    Ok(kiln_dpkg::installed_packages(status)?
        .into_iter()
        .map(|p| PackageEntry {
            name: p.name,
            version: p.version,
            architecture: p.architecture,
            source: p.source,
            installed_size_kib: p.installed_size_kib,
        })
        .collect())
}

/// `secs` since the Unix epoch as RFC 3339 in UTC (the formula OCI image
/// configs use too).
pub use kiln_formats::rfc3339;

/// The SPDX 2.3 JSON document of a variant: the image as the described
/// package, containing every installed Debian package (with a `purl`).
/// Deterministic: its creation time is the epoch, its namespace derives
/// from the layer key.
#[must_use]
pub fn spdx(entry: &VariantEntry, distro: Option<&str>) -> serde_json::Value {
    use serde_json::json;
    let spdx_id = |name: &str, arch: &str| {
        let clean: String = format!("{name}-{arch}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        format!("SPDXRef-Package-deb-{clean}")
    };
    let mut packages = vec![json!({
        "SPDXID": "SPDXRef-Image",
        "name": entry.variant,
        "versionInfo": entry.layer_key,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "OPERATING-SYSTEM",
        "comment": format!("kiln image `{}`, variant `{}`", entry.image, entry.variant),
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-Image",
    })];
    for p in &entry.packages {
        let mut purl = format!(
            "pkg:deb/debian/{}@{}?arch={}",
            p.name,
            p.version.replace(':', "%3A").replace('+', "%2B"),
            p.architecture
        );
        if let Some(d) = distro {
            purl.push_str(&format!("&distro={d}"));
        }
        let id = spdx_id(&p.name, &p.architecture);
        let mut package = json!({
            "SPDXID": id,
            "name": p.name,
            "versionInfo": p.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": purl,
            }],
        });
        if let Some(source) = &p.source {
            package["sourceInfo"] = json!(format!("built from Debian source package {source}"));
        }
        packages.push(package);
        relationships.push(json!({
            "spdxElementId": "SPDXRef-Image",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": entry.variant,
        "documentNamespace": format!("https://kiln.invalid/spdx/{}/{}", entry.variant, entry.layer_key),
        "creationInfo": {
            "created": rfc3339(entry.epoch),
            "creators": [format!("Tool: kiln-{}", env!("CARGO_PKG_VERSION"))],
        },
        "packages": packages,
        "relationships": relationships,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn revisions_follow_content() {
        let entry = |sha: &str, revision| VariantEntry {
            variant: "v".into(),
            artifacts: vec![ArtifactEntry {
                revision,
                format: "squashfs".into(),
                sha256: sha.into(),
                ..ArtifactEntry::default()
            }],
            ..VariantEntry::default()
        };
        assert_eq!(revision(None, "squashfs", "a"), 0);
        assert_eq!(revision(Some(&entry("a", 3)), "squashfs", "a"), 3);
        assert_eq!(revision(Some(&entry("a", 3)), "squashfs", "b"), 4);
        assert_eq!(revision(Some(&entry("a", 3)), "tar", "b"), 0);
    }

    #[test]
    fn netboot_entries_link_a_base_and_the_overlays_below_it() {
        let artifact = |format: &str, path: &str, sha: &str| ArtifactEntry {
            format: format.into(),
            path: path.into(),
            sha256: sha.into(),
            size: 7,
            ..ArtifactEntry::default()
        };
        let variant = |name: &str, artifacts| VariantEntry {
            variant: name.into(),
            artifacts,
            ..VariantEntry::default()
        };
        let mut m = Manifest::default();
        m.update(vec![
            variant(
                "base",
                vec![
                    artifact("squashfs", "base/b.squashfs", "aa"),
                    artifact("vmlinuz", "base/b.vmlinuz", "k"),
                    artifact("initrd.img", "base/b.initrd.img", "i"),
                ],
            ),
            variant(
                "web",
                vec![artifact("overlay.cpio.gz", "web/w.cpio.gz", "bb")],
            ),
            variant(
                "app",
                vec![artifact("overlay.cpio.gz", "app/a.cpio.gz", "cc")],
            ),
            variant("tar", vec![artifact("tar.zst", "tar/t.tar.zst", "dd")]),
        ]);
        let chain = |names: &[&str]| names.iter().map(|&n| n.to_owned()).collect::<Vec<_>>();
        m.link_netboot(&[
            chain(&["base"]),
            chain(&["base", "web", "app"]),
            chain(&["base", "tar"]),
        ]);
        let base = m
            .variant("base")
            .and_then(|v| v.netboot.clone())
            .expect("base boots");
        assert_eq!(
            base.cmdline,
            "boot=kiln-netboot kiln.base=base/b.squashfs kiln.base.sha256=aa"
        );
        let app = m
            .variant("app")
            .and_then(|v| v.netboot.clone())
            .expect("app boots");
        assert_eq!(
            (app.kernel.as_str(), app.initrd.as_str()),
            ("base/b.vmlinuz", "base/b.initrd.img")
        );
        assert_eq!(
            app.cmdline,
            "boot=kiln-netboot kiln.base=base/b.squashfs kiln.base.sha256=aa \
             kiln.overlay=web/w.cpio.gz,app/a.cpio.gz kiln.overlay.sha256=bb,cc"
        );
        // A variant without an overlay over the base does not boot so; web
        // was not linked as a chain of its own, so it has no entry either.
        assert_eq!(m.variant("tar").and_then(|v| v.netboot.clone()), None);
        assert_eq!(m.variant("web").and_then(|v| v.netboot.clone()), None);
    }
}
