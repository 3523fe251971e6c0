//! Output formats an image may ask for, and the options each accepts.
//!
//! Only the names and options live here; the writers that produce the files
//! belong to a later crate and never read the configuration.

use crate::diagnostic::{Diagnostic, Diagnostics, did_you_mean};
use crate::schema::{split_replace, type_error};
use crate::value::{Kind, Value};

/// An artifact format (closed set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OutputFormat {
    /// The root as a directory.
    Dir,
    /// POSIX tar.
    Tar,
    /// Gzip-compressed tar.
    TarGz,
    /// Zstandard-compressed tar.
    TarZst,
    /// XZ-compressed tar.
    TarXz,
    /// newc cpio, gzip-compressed (an initramfs).
    CpioGz,
    /// newc cpio, zstd-compressed.
    CpioZst,
    /// The variant's own layer as a gzip cpio with overlayfs whiteouts.
    OverlayCpioGz,
    /// `SquashFS` of the full root.
    Squashfs,
    /// `SquashFS` of the variant's own layer.
    OverlaySquashfs,
    /// A raw ext4 filesystem image.
    Ext4,
    /// A GPT disk image.
    Raw,
    /// A qcow2 disk image.
    Qcow2,
    /// A fixed-size VHD disk image.
    Vhd,
    /// A VMDK disk image.
    Vmdk,
    /// An OCI image layout directory.
    Oci,
    /// An OCI image layout as a tar archive.
    OciTar,
    /// A `ThreeFold` flist.
    Flist,
}

impl OutputFormat {
    /// Every format, in documentation order.
    pub const ALL: &'static [OutputFormat] = &[
        Self::Dir,
        Self::Tar,
        Self::TarGz,
        Self::TarZst,
        Self::TarXz,
        Self::CpioGz,
        Self::CpioZst,
        Self::OverlayCpioGz,
        Self::Squashfs,
        Self::OverlaySquashfs,
        Self::Ext4,
        Self::Raw,
        Self::Qcow2,
        Self::Vhd,
        Self::Vmdk,
        Self::Oci,
        Self::OciTar,
        Self::Flist,
    ];

    /// The name used in `outputs`, which is also the file suffix.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Dir => "dir",
            Self::Tar => "tar",
            Self::TarGz => "tar.gz",
            Self::TarZst => "tar.zst",
            Self::TarXz => "tar.xz",
            Self::CpioGz => "cpio.gz",
            Self::CpioZst => "cpio.zst",
            Self::OverlayCpioGz => "overlay.cpio.gz",
            Self::Squashfs => "squashfs",
            Self::OverlaySquashfs => "overlay.squashfs",
            Self::Ext4 => "ext4",
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
            Self::Vhd => "vhd",
            Self::Vmdk => "vmdk",
            Self::Oci => "oci",
            Self::OciTar => "oci.tar",
            Self::Flist => "flist",
        }
    }

    /// The format with this name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|f| f.name() == name)
    }

    /// The options this format accepts.
    #[must_use]
    pub fn options(self) -> &'static [OptionSpec] {
        use OptionKind::{Integer, OneOf, Size, Text};
        const LEVEL: OptionSpec = OptionSpec::new("level", Integer);
        const SIZE: OptionSpec = OptionSpec::new("size", Size);
        const HEADROOM: OptionSpec = OptionSpec::new("headroom", Size);
        const LABEL: OptionSpec = OptionSpec::new("label", Text);
        const FIRMWARE: OptionSpec =
            OptionSpec::new("firmware", OneOf(&["bios", "uefi", "hybrid"]));
        const SQUASH: &[OptionSpec] = &[
            OptionSpec::new("compression", OneOf(&["zstd", "xz", "gzip", "lz4"])),
            LEVEL,
            OptionSpec::new("block_size", Size),
        ];
        const DISK: &[OptionSpec] = &[
            SIZE,
            HEADROOM,
            LABEL,
            FIRMWARE,
            OptionSpec::new("esp_size", Size),
            OptionSpec::new("cmdline", Text),
        ];
        const LEVEL_ONLY: &[OptionSpec] = &[LEVEL];
        const EXT4: &[OptionSpec] = &[SIZE, HEADROOM, LABEL];
        const OCI: &[OptionSpec] = &[
            OptionSpec::new("tag", Text),
            OptionSpec::new("repository", Text),
            OptionSpec::new("compression", OneOf(&["gzip", "zstd"])),
            LEVEL,
        ];
        const FLIST: &[OptionSpec] =
            &[OptionSpec::new("store", Text), OptionSpec::new("url", Text)];
        match self {
            Self::Dir | Self::Tar => &[],
            Self::TarGz
            | Self::TarZst
            | Self::TarXz
            | Self::CpioGz
            | Self::CpioZst
            | Self::OverlayCpioGz => LEVEL_ONLY,
            Self::Squashfs | Self::OverlaySquashfs => SQUASH,
            Self::Ext4 => EXT4,
            Self::Raw | Self::Qcow2 | Self::Vhd | Self::Vmdk => DISK,
            Self::Oci | Self::OciTar => OCI,
            Self::Flist => FLIST,
        }
    }
}

/// An option a format accepts.
#[derive(Clone, Copy, Debug)]
pub struct OptionSpec {
    /// Its name.
    pub name: &'static str,
    /// What it holds.
    pub kind: OptionKind,
}

impl OptionSpec {
    const fn new(name: &'static str, kind: OptionKind) -> Self {
        Self { name, kind }
    }
}

/// What an option holds.
#[derive(Clone, Copy, Debug)]
pub enum OptionKind {
    /// An integer.
    Integer,
    /// Any string.
    Text,
    /// `"auto"`, a byte count, or a size such as `"2G"`, `"512M"`.
    Size,
    /// One of a fixed set of strings.
    OneOf(&'static [&'static str]),
}

/// Parses a size: a byte count or a number with a `K`, `M`, `G` or `T`
/// suffix (powers of 1024; an optional `iB`/`B` is accepted).
#[must_use]
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s
        .strip_suffix("iB")
        .or_else(|| s.strip_suffix('B'))
        .unwrap_or(s);
    let (digits, shift) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 10),
        'M' | 'm' => (&s[..s.len() - 1], 20),
        'G' | 'g' => (&s[..s.len() - 1], 30),
        'T' | 't' => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    let n: u64 = digits.parse().ok()?;
    n.checked_mul(1u64 << shift)
}

fn format_names() -> String {
    OutputFormat::ALL
        .iter()
        .map(|f| f.name())
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_format_name(v: &Value, diags: &mut Diagnostics) -> Option<OutputFormat> {
    let Some(name) = v.as_str() else {
        diags.push(type_error(v, "a format name (string)"));
        return None;
    };
    let found = OutputFormat::from_name(name);
    if found.is_none() {
        diags.push(
            Diagnostic::at(
                &v.origin,
                format!("unknown output format `{name}`"),
                did_you_mean(name, OutputFormat::ALL.iter().map(|f| f.name())),
            )
            .with_help(format!("formats: {}", format_names())),
        );
    }
    found
}

/// Checks an `outputs` list: names, and each table's options for its format.
pub(crate) fn check_outputs(v: &Value, diags: &mut Diagnostics) {
    let Some(items) = v.as_array() else {
        diags.push(type_error(v, "a list of formats"));
        return;
    };
    for item in items {
        match &item.kind {
            Kind::String(_) => {
                check_format_name(item, diags);
            }
            Kind::Table(t) => {
                let Some(format_entry) = t.get("format") else {
                    diags.push(Diagnostic::at(
                        &item.origin,
                        "output table without `format`".to_string(),
                        "add `format = \"...\"`",
                    ));
                    continue;
                };
                let Some(format) = check_format_name(&format_entry.value, diags) else {
                    continue;
                };
                let specs = format.options();
                let mut names: Vec<&str> = specs.iter().map(|s| s.name).collect();
                names.push("format");
                let compression = t
                    .get("compression")
                    .and_then(|e| e.value.as_str())
                    .unwrap_or(match format {
                        OutputFormat::Oci | OutputFormat::OciTar => "gzip",
                        _ => "zstd",
                    });
                for (key, entry) in t {
                    let (key, _) = split_replace(key);
                    if key == "format" {
                        continue;
                    }
                    match specs.iter().find(|s| s.name == key) {
                        Some(spec) => {
                            if check_option(spec, &entry.value, diags) {
                                check_range(format, compression, key, &entry.value, diags);
                            }
                        }
                        None => diags.push(
                            Diagnostic::at(
                                &entry.key,
                                format!("format `{}` has no option `{key}`", format.name()),
                                did_you_mean(key, names.iter().copied()),
                            )
                            .with_help(if specs.is_empty() {
                                format!("`{}` takes no options", format.name())
                            } else {
                                format!(
                                    "options of `{}`: {}",
                                    format.name(),
                                    names[..names.len() - 1].join(", ")
                                )
                            }),
                        ),
                    }
                }
            }
            _ => diags.push(type_error(item, "a format name or a table with `format`")),
        }
    }
}

/// The compression levels a format (and, for squashfs, its compressor)
/// accepts; `None` when it takes no level.
#[must_use]
pub fn level_range(format: OutputFormat, compression: &str) -> Option<(i64, i64)> {
    match format {
        OutputFormat::TarGz | OutputFormat::CpioGz | OutputFormat::OverlayCpioGz => Some((1, 9)),
        OutputFormat::TarZst | OutputFormat::CpioZst => Some((1, 22)),
        OutputFormat::TarXz => Some((0, 9)),
        OutputFormat::Oci | OutputFormat::OciTar => match compression {
            "gzip" => Some((1, 9)),
            "zstd" => Some((1, 22)),
            _ => None,
        },
        OutputFormat::Squashfs | OutputFormat::OverlaySquashfs => match compression {
            "zstd" => Some((1, 22)),
            "gzip" => Some((1, 9)),
            "xz" => Some((0, 9)),
            _ => None,
        },
        _ => None,
    }
}

/// Checks a well-typed option's value against its range.
fn check_range(
    format: OutputFormat,
    compression: &str,
    key: &str,
    v: &Value,
    diags: &mut Diagnostics,
) {
    let problem = match key {
        "level" => {
            let level = v.as_integer().unwrap_or_default();
            match level_range(format, compression) {
                Some((lo, hi)) if (lo..=hi).contains(&level) => None,
                Some((lo, hi)) => Some(format!("expected a level from {lo} to {hi}")),
                None => Some(format!("`{compression}` takes no level")),
            }
        }
        "block_size" => {
            let size = match &v.kind {
                Kind::Integer(n) => u64::try_from(*n).ok(),
                Kind::String(s) => parse_size(s),
                _ => None,
            };
            match size {
                Some(n) if n.is_power_of_two() && (4096..=1 << 20).contains(&n) => None,
                _ => Some("expected a power of two from 4K to 1M".to_string()),
            }
        }
        _ => None,
    };
    if let Some(label) = problem {
        diags.push(Diagnostic::at(
            &v.origin,
            format!("invalid value for option `{key}` of `{}`", format.name()),
            label,
        ));
    }
}

fn check_option(spec: &OptionSpec, v: &Value, diags: &mut Diagnostics) -> bool {
    let ok = match (spec.kind, &v.kind) {
        (OptionKind::Integer, Kind::Integer(_))
        | (OptionKind::Text, Kind::String(_))
        | (OptionKind::Size, Kind::Integer(0..)) => true,
        (OptionKind::Size, Kind::String(s)) => s == "auto" || parse_size(s).is_some(),
        (OptionKind::OneOf(options), Kind::String(s)) => options.contains(&s.as_str()),
        _ => false,
    };
    if !ok {
        let expected = match spec.kind {
            OptionKind::Integer => "an integer".to_string(),
            OptionKind::Text => "a string".to_string(),
            OptionKind::Size => "`\"auto\"` or a size such as `\"2G\"`".to_string(),
            OptionKind::OneOf(options) => format!("one of {}", options.join(", ")),
        };
        diags.push(Diagnostic::at(
            &v.origin,
            format!("invalid value for option `{}`", spec.name),
            format!("expected {expected}"),
        ));
    }
    ok
}

/// How an archive (tar, cpio) or an OCI layer is compressed, its level in
/// the range the compressor takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// Not compressed (`tar`).
    None,
    /// Gzip, level 1–9.
    Gzip(u32),
    /// Zstandard, level 1–22.
    Zstd(i32),
    /// XZ, level 0–9.
    Xz(u32),
}

/// The compressor of a `SquashFS` output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SquashCompressor {
    /// Zstandard (the default).
    Zstd,
    /// XZ.
    Xz,
    /// Gzip.
    Gzip,
    /// LZ4 (no level).
    Lz4,
}

/// The firmware a disk boots with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// A PC BIOS (GRUB in the BIOS boot partition).
    Bios,
    /// UEFI (systemd-boot on the ESP).
    Uefi,
    /// Both (the default).
    Hybrid,
}

/// The architectures kiln writes bootable disks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskArch {
    /// x86-64.
    Amd64,
    /// 64-bit ARM.
    Arm64,
}

/// The options of a disk output (`raw`, `qcow2`, `vhd`, `vmdk`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskOutput {
    /// The disk's size; `None`: the content plus `headroom`.
    pub size: Option<u64>,
    /// Free space beyond the content when `size` is not given.
    pub headroom: Option<u64>,
    /// The root file system's label.
    pub label: Option<String>,
    /// The EFI system partition's size.
    pub esp_size: Option<u64>,
    /// What it boots with.
    pub firmware: Firmware,
    /// The kernel command line.
    pub cmdline: Option<String>,
    /// The variant's architecture, one a disk can be written for.
    pub arch: DiskArch,
}

/// An output's options, parsed and checked once when the tree is loaded:
/// the writers get values that are known to be good.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputOptions {
    /// `dir`: no options.
    Dir,
    /// `tar`, `tar.*`, `cpio.*`, `overlay.cpio.gz`.
    Archive(Codec),
    /// `squashfs`, `overlay.squashfs`.
    Squashfs {
        /// The compressor.
        compressor: SquashCompressor,
        /// Its level; `None`: the compressor's default.
        level: Option<i32>,
        /// The block size, a power of two from 4K to 1M.
        block_size: u32,
    },
    /// `ext4`.
    Ext4 {
        /// The file system's size; `None`: the content plus `headroom`.
        size: Option<u64>,
        /// Free space beyond the content when `size` is not given.
        headroom: Option<u64>,
        /// Its label.
        label: Option<String>,
    },
    /// `raw`, `qcow2`, `vhd`, `vmdk`.
    Disk(DiskOutput),
    /// `oci`, `oci.tar`.
    Oci {
        /// The tag (`org.opencontainers.image.ref.name`); `None`: the
        /// variant's name.
        tag: Option<String>,
        /// The repository `oci.tar`'s Docker manifest names; `None`: the
        /// variant's name.
        repository: Option<String>,
        /// How layers are compressed.
        codec: Codec,
    },
    /// `flist`.
    Flist {
        /// The block store folder, relative to the tree.
        store: Option<String>,
        /// The store's URL written into the flist.
        url: Option<String>,
    },
}

/// One entry of `outputs`: its format, its checked options and where it
/// was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputSpec {
    /// The format.
    pub format: OutputFormat,
    /// Its options.
    pub options: OutputOptions,
    /// Where the entry is written (`"qcow2"` or its table).
    pub origin: crate::diagnostic::Origin,
}

impl OutputSpec {
    /// Whether this is a disk that boots with a PC BIOS on `arch`.
    #[must_use]
    pub fn boots_bios(&self, arch: &str) -> bool {
        matches!(&self.options, OutputOptions::Disk(d) if d.firmware != Firmware::Uefi)
            && matches!(arch, "amd64" | "i386")
    }
}

/// Reads a merged `outputs` list of a variant of architecture `arch` into
/// typed values. The schema has already reported wrong names, types and
/// ranges (entries with those are left out here); what only the variant's
/// settings decide (a disk of an architecture kiln writes no disks for, an
/// OCI name Docker refuses) is reported at the entry.
pub(crate) fn read_outputs(v: &Value, arch: &str, diags: &mut Diagnostics) -> Vec<OutputSpec> {
    let mut out = Vec::new();
    for item in v.as_array().unwrap_or_default() {
        let (format, table) = match &item.kind {
            Kind::String(s) => match OutputFormat::from_name(s) {
                Some(f) => (f, None),
                None => continue,
            },
            Kind::Table(t) => {
                let Some(format) = t
                    .get("format")
                    .and_then(|e| e.value.as_str())
                    .and_then(OutputFormat::from_name)
                else {
                    continue;
                };
                (format, Some(t))
            }
            _ => continue,
        };
        let get = |name: &str| -> Option<&Value> {
            table.and_then(|t| {
                t.iter()
                    .find(|(k, _)| split_replace(k).0 == name)
                    .map(|(_, e)| &e.value)
            })
        };
        let text = |name: &str| get(name).and_then(Value::as_str).map(str::to_owned);
        let size = |name: &str| {
            get(name).and_then(|v| match &v.kind {
                Kind::Integer(n) => u64::try_from(*n).ok(),
                Kind::String(s) => parse_size(s),
                _ => None,
            })
        };
        let level = get("level").and_then(Value::as_integer);
        let codec = |default: &str| -> Option<Codec> {
            let name = text("compression").unwrap_or_else(|| default.to_owned());
            let (lo, hi) = level_range(format, &name).unwrap_or((0, i64::MAX));
            if level.is_some_and(|l| !(lo..=hi).contains(&l)) {
                return None;
            }
            Some(match name.as_str() {
                "none" => Codec::None,
                "gzip" => Codec::Gzip(u32::try_from(level.unwrap_or(6)).ok()?),
                "zstd" => Codec::Zstd(i32::try_from(level.unwrap_or(3)).ok()?),
                "xz" => Codec::Xz(u32::try_from(level.unwrap_or(6)).ok()?),
                _ => return None,
            })
        };
        let options = match format {
            OutputFormat::Dir => Some(OutputOptions::Dir),
            OutputFormat::Tar => Some(OutputOptions::Archive(Codec::None)),
            OutputFormat::TarGz | OutputFormat::CpioGz | OutputFormat::OverlayCpioGz => {
                codec("gzip").map(OutputOptions::Archive)
            }
            OutputFormat::TarZst | OutputFormat::CpioZst => {
                codec("zstd").map(OutputOptions::Archive)
            }
            OutputFormat::TarXz => codec("xz").map(OutputOptions::Archive),
            OutputFormat::Squashfs | OutputFormat::OverlaySquashfs => {
                let compressor = match text("compression").as_deref() {
                    None | Some("zstd") => Some(SquashCompressor::Zstd),
                    Some("xz") => Some(SquashCompressor::Xz),
                    Some("gzip") => Some(SquashCompressor::Gzip),
                    Some("lz4") => Some(SquashCompressor::Lz4),
                    Some(_) => None,
                };
                let block_size = u32::try_from(size("block_size").unwrap_or(128 * 1024)).ok();
                compressor
                    .zip(block_size)
                    .map(|(compressor, block_size)| OutputOptions::Squashfs {
                        compressor,
                        level: level.and_then(|l| i32::try_from(l).ok()),
                        block_size,
                    })
            }
            OutputFormat::Ext4 => Some(OutputOptions::Ext4 {
                size: size("size"),
                headroom: size("headroom"),
                label: text("label"),
            }),
            OutputFormat::Raw | OutputFormat::Qcow2 | OutputFormat::Vhd | OutputFormat::Vmdk => {
                let disk_arch = match arch {
                    "amd64" => Some(DiskArch::Amd64),
                    "arm64" => Some(DiskArch::Arm64),
                    other => {
                        diags.push(
                            Diagnostic::at(
                                &item.origin,
                                format!("kiln writes no `{}` disks for `{other}`", format.name()),
                                format!("the variant's `arch` is `{other}`"),
                            )
                            .with_help(
                                "disks are written for amd64 and arm64; use `ext4`, `squashfs` or an archive for other architectures",
                            ),
                        );
                        None
                    }
                };
                disk_arch.map(|arch| {
                    OutputOptions::Disk(DiskOutput {
                        size: size("size"),
                        headroom: size("headroom"),
                        label: text("label"),
                        esp_size: size("esp_size"),
                        firmware: match text("firmware").as_deref() {
                            Some("bios") => Firmware::Bios,
                            Some("uefi") => Firmware::Uefi,
                            _ => Firmware::Hybrid,
                        },
                        cmdline: text("cmdline"),
                        arch,
                    })
                })
            }
            OutputFormat::Oci | OutputFormat::OciTar => {
                let tag = text("tag");
                let repository = text("repository");
                let mut good = true;
                if let Some(t) = &tag
                    && !crate::reference::is_ref_name(t)
                {
                    good = false;
                    diags.push(Diagnostic::at(
                        &get("tag").map_or(&item.origin, |v| &v.origin).clone(),
                        format!("`{t}` is not an OCI tag"),
                        "letters and digits separated by one of `-._:@+`, `--` or `/`",
                    ));
                }
                if let Some(r) = &repository {
                    let reference = format!("{r}:{}", tag.as_deref().unwrap_or("latest"));
                    if !crate::reference::is_docker_reference(&reference) {
                        good = false;
                        diags.push(
                            Diagnostic::at(
                                &get("repository").map_or(&item.origin, |v| &v.origin).clone(),
                                format!("`{reference}` is not a Docker reference"),
                                "not a repository Docker takes",
                            )
                            .with_help(
                                "a lower-case repository such as `registry.example/team/app`, a tag of letters, digits, `_`, `.` and `-`",
                            ),
                        );
                    }
                }
                codec("gzip")
                    .filter(|_| good)
                    .map(|codec| OutputOptions::Oci {
                        tag,
                        repository,
                        codec,
                    })
            }
            OutputFormat::Flist => Some(OutputOptions::Flist {
                store: text("store"),
                url: text("url"),
            }),
        };
        if let Some(options) = options {
            out.push(OutputSpec {
                format,
                options,
                origin: item.origin.clone(),
            });
        }
    }
    out
}
