//! A variant's artifacts: its `outputs` mapped to `kiln-formats` writers,
//! written once per layer and options into the store, copied from there
//! to `OUT/<variant>/<variant>-r<N>.<format>`.

use std::fs;
use std::path::Path;

use kiln_config::OutputFormat;
use kiln_config::settings::{ImageSettings, OutputSpec};
use kiln_formats::{
    Arch, BootFile, Compression, DiskOptions, Ext4Options, Firmware, FlistOptions, OciOptions,
    Spec, SquashfsCompression, SquashfsOptions,
};
use kiln_layers::LayerStack;
use kiln_plan::Variant;
use kiln_store::{InputKey, Store};

use crate::manifest::{self, ArtifactEntry, VariantEntry};

/// What writing a variant's artifacts needs.
pub struct Job<'a> {
    pub variant: &'a Variant,
    pub stack: &'a LayerStack,
    /// The store key of each layer of `stack`, bottom first.
    pub layer_keys: Vec<[u8; 32]>,
    pub key: InputKey,
    pub epoch: i64,
    pub threads: usize,
    pub store: &'a Store,
    pub out_dir: &'a Path,
    /// Where squashfs keeps compressed blocks and OCI finished layer
    /// blobs for reuse.
    pub blocks_dir: &'a Path,
    /// The tree's root: relative paths in output options start there.
    pub tree_root: &'a Path,
    /// The variant's entry in the previous manifest (for revisions).
    pub previous: Option<&'a VariantEntry>,
    /// Set when the build must stop.
    pub cancel: &'a std::sync::atomic::AtomicBool,
}

/// Why an output could not be written: `config` when its options are wrong.
pub struct OutputError {
    pub text: String,
    pub config: bool,
}

/// What an output's spec is made from besides its options.
pub struct SpecContext<'a> {
    /// The variant's settings (architecture, `container`, labels).
    pub settings: &'a ImageSettings,
    /// The variant's name (the default OCI tag).
    pub variant: &'a str,
    /// The tree's root: relative paths in options start there.
    pub tree_root: &'a Path,
    /// The output folder (the default flist block store is in it).
    pub out_dir: &'a Path,
}

/// The OCI name of a Debian architecture, and its variant.
fn oci_architecture(debian: &str) -> (String, Option<String>) {
    let (arch, variant) = match debian {
        "amd64" => ("amd64", None),
        "arm64" => ("arm64", Some("v8")),
        "armhf" => ("arm", Some("v7")),
        "armel" => ("arm", Some("v5")),
        "i386" => ("386", None),
        "ppc64el" => ("ppc64le", None),
        "mips64el" => ("mips64le", None),
        other => (other, None),
    };
    (arch.to_owned(), variant.map(str::to_owned))
}

/// The writer spec of an output, `Ok(None)` for `dir` (exported
/// separately). The options were checked when the tree was loaded; what
/// can still fail is what the writer checks of the variant's `container`
/// settings.
pub fn spec_of(output: &OutputSpec, cx: &SpecContext<'_>) -> Result<Option<Spec>, String> {
    use kiln_config::output::{
        Codec, DiskArch, Firmware as F, OutputOptions as O, SquashCompressor,
    };
    let compression = |c: &Codec| match *c {
        Codec::None => Compression::None,
        Codec::Gzip(level) => Compression::Gzip { level },
        Codec::Zstd(level) => Compression::Zstd { level },
        Codec::Xz(level) => Compression::Xz { level },
    };
    Ok(Some(match (&output.options, output.format) {
        (O::Dir, _) => return Ok(None),
        (
            O::Archive(c),
            OutputFormat::Tar | OutputFormat::TarGz | OutputFormat::TarZst | OutputFormat::TarXz,
        ) => Spec::Tar {
            compression: compression(c),
        },
        (O::Archive(c), OutputFormat::OverlayCpioGz) => Spec::OverlayCpio {
            compression: compression(c),
        },
        (O::Archive(c), _) => Spec::Cpio {
            compression: compression(c),
        },
        (
            O::Squashfs {
                compressor,
                level,
                block_size,
            },
            format,
        ) => {
            let options = SquashfsOptions {
                compression: match compressor {
                    SquashCompressor::Zstd => SquashfsCompression::Zstd,
                    SquashCompressor::Xz => SquashfsCompression::Xz,
                    SquashCompressor::Gzip => SquashfsCompression::Gzip,
                    SquashCompressor::Lz4 => SquashfsCompression::Lz4,
                },
                level: *level,
                block_size: *block_size,
            };
            if format == OutputFormat::OverlaySquashfs {
                Spec::OverlaySquashfs(options)
            } else {
                Spec::Squashfs(options)
            }
        }
        (
            O::Ext4 {
                size,
                headroom,
                label,
            },
            _,
        ) => Spec::Ext4(Ext4Options {
            size: *size,
            headroom: *headroom,
            label: label.clone(),
        }),
        (
            O::Oci {
                tag,
                repository,
                codec,
            },
            format,
        ) => {
            let options = oci_options(cx, tag.clone(), repository.as_deref(), compression(codec))?;
            if format == OutputFormat::Oci {
                Spec::Oci(options)
            } else {
                Spec::OciTar(options)
            }
        }
        (O::Flist { store, url }, _) => {
            let store = store
                .as_ref()
                .map_or_else(|| cx.out_dir.join("flist-store"), |s| cx.tree_root.join(s));
            // Without `url`, a store inside the tree is routed by its path
            // there (`dir://out/flist-store`), as rfs resolves `dir://`
            // paths from where it runs: no build path in the flist, so the
            // tree gives the same flist wherever it is checked out.
            let url = url.clone().or_else(|| {
                let relative = store.strip_prefix(cx.tree_root).ok()?;
                let relative = relative.to_str()?.trim_start_matches("./");
                (!relative.is_empty() && !relative.split('/').any(|c| c == ".."))
                    .then(|| format!("dir://{relative}"))
            });
            Spec::Flist(FlistOptions {
                store_dir: store,
                store_url: url,
                tags: cx
                    .settings
                    .description
                    .iter()
                    .map(|d| ("description".to_owned(), d.clone()))
                    .collect(),
            })
        }
        (O::Disk(d), format) => {
            let options = DiskOptions {
                size: d.size,
                headroom: d.headroom,
                label: d.label.clone(),
                esp_size: d.esp_size,
                firmware: match d.firmware {
                    F::Bios => Firmware::Bios,
                    F::Uefi => Firmware::Uefi,
                    F::Hybrid => Firmware::Hybrid,
                },
                cmdline: d.cmdline.clone(),
                arch: match d.arch {
                    DiskArch::Amd64 => Arch::Amd64,
                    DiskArch::Arm64 => Arch::Arm64,
                },
            };
            match format {
                OutputFormat::Raw => Spec::Raw(options),
                OutputFormat::Qcow2 => Spec::Qcow2(options),
                OutputFormat::Vhd => Spec::Vhd(options),
                _ => Spec::Vmdk(options),
            }
        }
    }))
}

/// Whether a variant's outputs include a disk that boots with a PC BIOS
/// (its build then makes GRUB's core image, see [`kiln_formats::GRUB_MKIMAGE`]).
pub fn needs_grub_core(settings: &ImageSettings) -> bool {
    settings
        .outputs
        .iter()
        .any(|o| o.boots_bios(&settings.arch))
}

/// What `docker load` names the image: `REPOSITORY:TAG`, the repository
/// given (it must be one Docker takes) or the variant's name, the tag
/// given or `latest`. Without a `repository`, a variant name or tag Docker
/// cannot take leaves the image untagged rather than failing the build.
fn docker_reference(
    variant: &str,
    repository: Option<&str>,
    tag: Option<&str>,
) -> Result<Option<String>, String> {
    let tag = tag.unwrap_or("latest");
    match repository {
        Some(repository) => {
            let reference = format!("{repository}:{tag}");
            if kiln_formats::is_docker_reference(&reference) {
                Ok(Some(reference))
            } else {
                Err(format!(
                    "option `repository`: `{reference}` is not a Docker reference (a lower-case repository such as `registry.example/team/app`, a tag of letters, digits, `_`, `.` and `-`)"
                ))
            }
        }
        None => Ok(Some(format!("{}:{tag}", variant.to_ascii_lowercase()))
            .filter(|r| kiln_formats::is_docker_reference(r))),
    }
}

/// The OCI image options of a variant: its `container` table, labels and
/// architecture; the tag (default: the variant's name), the repository
/// Docker's manifest names (default: the variant's name) and compression
/// from the output's options.
fn oci_options(
    cx: &SpecContext<'_>,
    tag: Option<String>,
    repository: Option<&str>,
    compression: Compression,
) -> Result<OciOptions, String> {
    let (architecture, variant) = oci_architecture(&cx.settings.arch);
    let c = &cx.settings.container;
    let options = OciOptions {
        architecture,
        variant,
        entrypoint: c.entrypoint.clone(),
        cmd: c.cmd.clone(),
        env: c.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        working_dir: c.workdir.clone(),
        user: c.user.clone(),
        labels: cx.settings.labels.clone(),
        docker_reference: docker_reference(cx.variant, repository, tag.as_deref())?,
        ref_name: Some(tag.unwrap_or_else(|| cx.variant.to_owned())),
        compression,
        ..OciOptions::default()
    };
    options.validate()?;
    Ok(options)
}

/// Writes (or reuses from the store) every artifact of the job's variant
/// and copies it into the output folder; `step` is told when each
/// `output:<format>` begins.
pub fn write_all(job: &Job<'_>, step: &dyn Fn(&str)) -> Result<Vec<ArtifactEntry>, OutputError> {
    let v = job.variant;
    let build = |text: String| OutputError {
        text,
        config: false,
    };
    let mut entries = Vec::new();
    let cx = SpecContext {
        settings: &v.settings,
        variant: &v.name,
        tree_root: job.tree_root,
        out_dir: job.out_dir,
    };
    let mut specs: Vec<(&str, Spec)> = Vec::new();
    for output in &v.settings.outputs {
        let spec = spec_of(output, &cx).map_err(|text| OutputError {
            text: format!("output `{}` of `{}`: {text}", output.format.name(), v.name),
            config: true,
        })?;
        if let Some(spec) = spec {
            specs.push((output.format.name(), spec));
        }
    }
    // With `kernel`, the kernel and initrd it boots, beside the rest.
    if v.settings.kernel {
        for file in [BootFile::Vmlinuz, BootFile::Initrd] {
            specs.push((file.name(), Spec::BootFile(file)));
        }
    }
    for (ext, spec) in specs {
        step(&format!("output:{ext}"));
        let identity = format!("{} epoch={}", spec.identity(), job.epoch);
        let name_of = |revision: u32| format!("{}-r{revision}.{ext}", v.name);
        let dir = job.out_dir.join(&v.name);
        // A stored artifact is used when the output folder already holds
        // its copy, or after its SHA-256 is checked again.
        let found = job
            .store
            .artifact(&job.key, &identity)
            .map_err(|e| build(crate::error::chain(&e)))?
            .filter(|stored| {
                let revision = manifest::revision(job.previous, ext, &stored.meta.sha256);
                (same_copy(&stored.path, &dir.join(name_of(revision)))
                    || job.store.artifact_intact(stored))
                    && blocks_present(&spec, &stored.path)
            });
        let stored = match found {
            Some(stored) => stored,
            None => {
                let scratch = job
                    .store
                    .artifact_scratch()
                    .map_err(|e| build(crate::error::chain(&e)))?;
                let file = format!("{}.{ext}", v.name);
                let written = scratch.join(&file);
                let input = kiln_formats::Input {
                    stack: job.stack,
                    layer_ids: &job.layer_keys,
                    epoch: job.epoch,
                    threads: job.threads,
                    cache_dir: Some(job.blocks_dir),
                    seed: &job.key.0,
                    cancel: Some(job.cancel),
                };
                let result = kiln_formats::write_artifact(&spec, &input, &written)
                    .map_err(|e| build(format!("writing {ext}: {}", crate::error::chain(&e))))
                    .and_then(|()| {
                        job.store
                            .put_artifact(&job.key, &identity, &file, &written)
                            .map_err(|e| build(crate::error::chain(&e)))
                    });
                let _ = fs::remove_dir_all(&scratch);
                result?
            }
        };
        let revision = manifest::revision(job.previous, ext, &stored.meta.sha256);
        let name = name_of(revision);
        let dest = dir.join(&name);
        copy_atomic(&stored.path, &dest).map_err(|e| {
            build(format!(
                "failed to copy the {ext} artifact to `{}`: {e}",
                dest.display()
            ))
        })?;
        remove_other_revisions(&dir, &v.name, ext, &name);
        entries.push(ArtifactEntry {
            name: name.clone(),
            revision,
            format: ext.to_owned(),
            path: format!("{}/{name}", v.name),
            size: stored.meta.size,
            sha256: stored.meta.sha256.clone(),
            build_time: manifest::rfc3339(stored.meta.created),
            kiln_version: stored.meta.kiln_version.clone(),
        });
    }
    Ok(entries)
}

/// Whether everything an artifact refers to outside itself is there: the
/// blocks of a flist in its store (which may have been cleaned since the
/// flist was stored). Other formats are self-contained.
fn blocks_present(spec: &Spec, artifact: &Path) -> bool {
    let Spec::Flist(options) = spec else {
        return true;
    };
    let Ok(flist) = kiln_formats::flist::Flist::open(artifact) else {
        return false;
    };
    // One query for every block, each checked once however many files
    // share it.
    flist.block_ids().is_ok_and(|ids| {
        ids.iter()
            .all(|id| kiln_formats::flist::block_path(&options.store_dir, id).is_file())
    })
}

/// Copies the file or folder `from` to `to` through a temporary name and a
/// rename (`copy_file_range`: a reflink where the file system can), giving
/// the copy `from`'s mtime. A `to` that already matches `from` in size and
/// mtime (for a folder: every file's) is taken as the same copy, as
/// rsync's quick check does: a cached build does not copy gigabytes again.
fn copy_atomic(from: &Path, to: &Path) -> std::io::Result<()> {
    if same_copy(from, to) {
        return Ok(());
    }
    let dir = to.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = to
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let temp = dir.join(format!(".{name}.partial-{}", std::process::id()));
    let _ = remove_any(&temp);
    let result = copy_with_times(from, &temp).and_then(|()| {
        if fs::symlink_metadata(to).is_ok_and(|m| m.is_dir()) {
            // A folder cannot be renamed over another: the old copy goes
            // aside first, for the moment between two renames.
            let old = dir.join(format!(".{name}.old-{}", std::process::id()));
            fs::rename(to, &old)?;
            fs::rename(&temp, to)?;
            remove_any(&old)
        } else {
            fs::rename(&temp, to)
        }
    });
    if result.is_err() {
        let _ = remove_any(&temp);
    }
    result
}

/// Copies a file, or a folder of files, keeping each one's mtime.
fn copy_with_times(from: &Path, to: &Path) -> std::io::Result<()> {
    let meta = fs::symlink_metadata(from)?;
    if meta.is_dir() {
        fs::create_dir(to)?;
        let mut entries: Vec<_> = fs::read_dir(from)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(fs::DirEntry::file_name);
        for entry in entries {
            copy_with_times(&entry.path(), &to.join(entry.file_name()))?;
        }
    } else {
        copy_sparse(from, to)?;
    }
    let copy = fs::File::open(to)?;
    copy.set_modified(meta.modified()?)
}

/// Copies the file `from` to a new file `to`, its holes kept as holes (a
/// fixed VHD of 2 GiB holds a few hundred MB): only the ranges
/// `SEEK_DATA` finds are copied, with `copy_file_range`.
fn copy_sparse(from: &Path, to: &Path) -> std::io::Result<()> {
    use rustix::fs::SeekFrom;
    let src = fs::File::open(from)?;
    let len = src.metadata()?.len();
    let dst = fs::File::create_new(to)?;
    dst.set_len(len)?;
    let mut pos = 0u64;
    while pos < len {
        let start = match rustix::fs::seek(&src, SeekFrom::Data(pos)) {
            Ok(start) => start,
            // No data after `pos`: the rest is a hole.
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let end = rustix::fs::seek(&src, SeekFrom::Hole(start))?.min(len);
        let (mut from_off, mut to_off) = (start, start);
        while from_off < end {
            let want = usize::try_from(end - from_off)
                .unwrap_or(usize::MAX)
                .min(1 << 30);
            let n = match rustix::fs::copy_file_range(
                &src,
                Some(&mut from_off),
                &dst,
                Some(&mut to_off),
                want,
            ) {
                Ok(n) => n,
                // Across file systems (a cache on tmpfs, the output on
                // disk), or where the kernel cannot: an ordinary copy.
                Err(
                    rustix::io::Errno::XDEV
                    | rustix::io::Errno::NOSYS
                    | rustix::io::Errno::OPNOTSUPP
                    | rustix::io::Errno::INVAL,
                ) => {
                    let n = copy_range(&src, from_off, &dst, to_off, want)?;
                    from_off += n as u64;
                    to_off += n as u64;
                    n
                }
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("`{}` ended while it was copied", from.display()),
                ));
            }
        }
        pos = end;
    }
    dst.sync_all()
}

/// Copies up to `len` bytes at `from_off` of `src` to `to_off` of `dst`
/// with plain reads and writes; returns how many (0 at the end of `src`).
fn copy_range(
    src: &fs::File,
    from_off: u64,
    dst: &fs::File,
    to_off: u64,
    len: usize,
) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len.min(1 << 20)];
    let n = src.read_at(&mut buf, from_off)?;
    dst.write_all_at(&buf[..n], to_off)?;
    Ok(n)
}

fn remove_any(path: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether `to` is a copy of `from` by size and mtime (of every file,
/// for a folder).
fn same_copy(from: &Path, to: &Path) -> bool {
    match (fs::symlink_metadata(from), fs::symlink_metadata(to)) {
        (Ok(a), Ok(b)) if a.is_file() && b.is_file() => {
            a.len() == b.len() && a.modified().ok() == b.modified().ok()
        }
        (Ok(a), Ok(b)) if a.is_dir() && b.is_dir() => {
            let list = |dir: &Path| -> Option<Vec<_>> {
                let mut names: Vec<_> = fs::read_dir(dir)
                    .ok()?
                    .map(|e| e.map(|e| e.file_name()))
                    .collect::<Result<_, _>>()
                    .ok()?;
                names.sort();
                Some(names)
            };
            match (list(from), list(to)) {
                (Some(x), Some(y)) if x == y => {
                    x.iter().all(|n| same_copy(&from.join(n), &to.join(n)))
                }
                _ => false,
            }
        }
        _ => false,
    }
}

/// Removes `<variant>-r<N>.<ext>` files other than `keep`: an output
/// folder holds the current revision of each format.
fn remove_other_revisions(dir: &Path, variant: &str, ext: &str, keep: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_revision = name
            .strip_prefix(variant)
            .and_then(|r| r.strip_prefix("-r"))
            .and_then(|r| r.strip_suffix(ext))
            .and_then(|r| r.strip_suffix('.'))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if is_revision && name != keep {
            let _ = remove_any(&entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::docker_reference;

    #[test]
    fn docker_names_come_from_repository_and_tag() {
        assert_eq!(
            docker_reference("web-bookworm", None, None),
            Ok(Some("web-bookworm:latest".to_owned()))
        );
        assert_eq!(
            docker_reference("Web", None, Some("v1")),
            Ok(Some("web:v1".to_owned()))
        );
        assert_eq!(
            docker_reference("web", Some("registry.example:5000/team/app"), Some("1.2")),
            Ok(Some("registry.example:5000/team/app:1.2".to_owned()))
        );
        // A tag Docker cannot take: untagged by default, an error when a
        // repository was asked for.
        assert_eq!(docker_reference("web", None, Some("1.2+build")), Ok(None));
        let err = docker_reference("web", Some("Team/App"), None).unwrap_err();
        assert!(
            err.starts_with("option `repository`: `Team/App:latest` is not a Docker reference"),
            "{err}"
        );
    }
}
