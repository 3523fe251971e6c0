//! A variant's artifacts: its `outputs` mapped to `kiln-formats` writers,
//! written once per layer and options into the store, copied from there
//! to `OUT/<variant>/<variant>-r<N>.<format>`.

use std::fs;
use std::path::Path;

use kiln_config::OutputFormat;
use kiln_config::settings::{OptionValue, OutputSpec};
use kiln_formats::{Compression, Ext4Options, Spec, SquashfsCompression, SquashfsOptions};
use kiln_layers::LayerStack;
use kiln_plan::Variant;
use kiln_store::{InputKey, Store};

use crate::manifest::{self, ArtifactEntry, VariantEntry};

/// What writing a variant's artifacts needs.
pub struct Job<'a> {
    pub variant: &'a Variant,
    pub stack: &'a LayerStack,
    pub key: InputKey,
    pub epoch: i64,
    pub threads: usize,
    pub store: &'a Store,
    pub out_dir: &'a Path,
    /// Where squashfs keeps compressed blocks for reuse.
    pub blocks_dir: &'a Path,
    /// The variant's entry in the previous manifest (for revisions).
    pub previous: Option<&'a VariantEntry>,
}

/// Why an output could not be written: `config` when its options are wrong.
pub struct OutputError {
    pub text: String,
    pub config: bool,
}

/// The writer spec of an output, `Ok(None)` for `dir` (exported
/// separately) and the formats this kiln does not write yet.
pub fn spec_of(output: &OutputSpec) -> Result<Option<Spec>, String> {
    let int = |name: &str| -> Result<Option<i64>, String> {
        match output.options.get(name) {
            None => Ok(None),
            Some(OptionValue::Integer(n)) => Ok(Some(*n)),
            Some(OptionValue::Text(t)) => {
                Err(format!("option `{name}` must be an integer, not `{t}`"))
            }
        }
    };
    let size = |name: &str| -> Result<Option<u64>, String> {
        match output.options.get(name) {
            None => Ok(None),
            Some(OptionValue::Integer(n)) => u64::try_from(*n)
                .map(Some)
                .map_err(|_| format!("option `{name}` must not be negative")),
            Some(OptionValue::Text(t)) if t == "auto" => Ok(None),
            Some(OptionValue::Text(t)) => kiln_config::output::parse_size(t)
                .map(Some)
                .ok_or_else(|| format!("option `{name}`: `{t}` is not a size")),
        }
    };
    let text = |name: &str| match output.options.get(name) {
        Some(OptionValue::Text(t)) => Some(t.clone()),
        _ => None,
    };
    let level = int("level")?;
    let level_u32 = |default: u32| -> Result<u32, String> {
        level.map_or(Ok(default), |l| {
            u32::try_from(l).map_err(|_| format!("option `level` must not be negative ({l})"))
        })
    };
    let checked = |c: Compression| c.validate().map(|()| c);
    let gzip = || {
        checked(Compression::Gzip {
            level: level_u32(6)?,
        })
    };
    let zstd = || {
        checked(Compression::Zstd {
            level: level
                .map_or(Ok(3), i32::try_from)
                .map_err(|_| "option `level` is too large".to_string())?,
        })
    };
    let squashfs = || -> Result<SquashfsOptions, String> {
        let compression = match text("compression").as_deref() {
            None | Some("zstd") => SquashfsCompression::Zstd,
            Some("xz") => SquashfsCompression::Xz,
            Some("gzip") => SquashfsCompression::Gzip,
            Some("lz4") => SquashfsCompression::Lz4,
            Some(other) => return Err(format!("unknown squashfs compression `{other}`")),
        };
        let block_size = size("block_size")?.unwrap_or(128 * 1024);
        if !(4096..=1 << 20).contains(&block_size) || !block_size.is_power_of_two() {
            return Err(format!(
                "option `block_size` must be a power of two from 4K to 1M, not {block_size}"
            ));
        }
        Ok(SquashfsOptions {
            compression,
            level: level.map(|l| i32::try_from(l).unwrap_or(i32::MAX)),
            block_size: block_size as u32,
        })
    };
    Ok(Some(match output.format {
        OutputFormat::Tar => Spec::Tar {
            compression: Compression::None,
        },
        OutputFormat::TarGz => Spec::Tar {
            compression: gzip()?,
        },
        OutputFormat::TarZst => Spec::Tar {
            compression: zstd()?,
        },
        OutputFormat::TarXz => Spec::Tar {
            compression: checked(Compression::Xz {
                level: level_u32(6)?,
            })?,
        },
        OutputFormat::CpioGz => Spec::Cpio {
            compression: gzip()?,
        },
        OutputFormat::CpioZst => Spec::Cpio {
            compression: zstd()?,
        },
        OutputFormat::OverlayCpioGz => Spec::OverlayCpio {
            compression: gzip()?,
        },
        OutputFormat::Squashfs => Spec::Squashfs(squashfs()?),
        OutputFormat::OverlaySquashfs => Spec::OverlaySquashfs(squashfs()?),
        OutputFormat::Ext4 => Spec::Ext4(Ext4Options {
            size: size("size")?,
            headroom: size("headroom")?,
            label: text("label"),
        }),
        OutputFormat::Dir
        | OutputFormat::Raw
        | OutputFormat::Qcow2
        | OutputFormat::Vhd
        | OutputFormat::Vmdk
        | OutputFormat::Oci
        | OutputFormat::OciTar
        | OutputFormat::Flist => return Ok(None),
    }))
}

/// Writes (or reuses from the store) every artifact of the job's variant
/// and copies it into the output folder; `step` names what is being done.
pub fn write_all(job: &Job<'_>, step: &dyn Fn(&str)) -> Result<Vec<ArtifactEntry>, OutputError> {
    let v = job.variant;
    let build = |text: String| OutputError {
        text,
        config: false,
    };
    let mut entries = Vec::new();
    for output in &v.settings.outputs {
        let spec = spec_of(output).map_err(|text| OutputError {
            text: format!("output `{}` of `{}`: {text}", output.format.name(), v.name),
            config: true,
        })?;
        let Some(spec) = spec else { continue };
        let ext = output.format.name();
        let identity = format!("{} epoch={}", spec.identity(), job.epoch);
        let name_of = |revision: u32| format!("{}-r{revision}.{ext}", v.name);
        let dir = job.out_dir.join(&v.name);
        // A stored artifact is used when the output folder already holds
        // its copy, or after its SHA-256 is checked again.
        let found = job
            .store
            .artifact(&job.key, &identity)
            .map_err(|e| build(crate::build::chain(&e)))?
            .filter(|stored| {
                let revision = manifest::revision(job.previous, ext, &stored.meta.sha256);
                same_copy(&stored.path, &dir.join(name_of(revision)))
                    || job.store.artifact_intact(stored)
            });
        let stored = match found {
            Some(stored) => stored,
            None => {
                step(&format!("writing {ext}"));
                let scratch = job
                    .store
                    .artifact_scratch()
                    .map_err(|e| build(crate::build::chain(&e)))?;
                let file = format!("{}.{ext}", v.name);
                let written = scratch.join(&file);
                let input = kiln_formats::Input {
                    stack: job.stack,
                    layer_ids: &[],
                    epoch: job.epoch,
                    threads: job.threads,
                    cache_dir: Some(job.blocks_dir),
                    seed: &job.key.0,
                };
                let result = kiln_formats::write_artifact(&spec, &input, &written)
                    .map_err(|e| build(format!("writing {ext}: {}", crate::build::chain(&e))))
                    .and_then(|()| {
                        job.store
                            .put_artifact(&job.key, &identity, &file, &written)
                            .map_err(|e| build(crate::build::chain(&e)))
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

/// Copies `from` to `to` through a temporary file and a rename
/// (`copy_file_range`: a reflink where the file system can), and gives the
/// copy `from`'s mtime. A `to` that already has `from`'s size and mtime is
/// taken as the same copy, as rsync's quick check does: a cached build
/// does not copy gigabytes again.
fn copy_atomic(from: &Path, to: &Path) -> std::io::Result<()> {
    if same_copy(from, to) {
        return Ok(());
    }
    let source = fs::metadata(from)?;
    let dir = to.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = to
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let temp = dir.join(format!(".{name}.partial-{}", std::process::id()));
    let result = fs::copy(from, &temp)
        .and_then(|_| fs::File::options().write(true).open(&temp))
        .and_then(|f| f.set_modified(source.modified()?))
        .and_then(|()| fs::rename(&temp, to));
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Whether `to` is a copy of `from` by size and mtime.
fn same_copy(from: &Path, to: &Path) -> bool {
    match (fs::metadata(from), fs::symlink_metadata(to)) {
        (Ok(a), Ok(b)) => {
            b.is_file() && a.len() == b.len() && a.modified().ok() == b.modified().ok()
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
            let _ = fs::remove_file(entry.path());
        }
    }
}
