//! Reading `.deb` files: the `ar` container, `debian-binary`, the control
//! archive (read whole: it is small) and a streaming reader over the data
//! archive.
//!
//! This module does not touch the target root.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::ar;
use crate::control::Stanza;
use crate::error::Error;

/// Buffer size for reading compressed members: large reads keep the
/// decompressors busy and the syscall count low.
const READ_BUFFER: usize = 1 << 20;

/// How a tar member of a `.deb` is compressed (from its name's suffix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// `.tar`
    None,
    /// `.tar.gz`
    Gzip,
    /// `.tar.xz`
    Xz,
    /// `.tar.zst`
    Zstd,
}

impl Compression {
    /// The compression of member `name` with the given `stem`
    /// (`control.tar`, `data.tar`), or `None` if it is not such a member.
    fn of_member(name: &str, stem: &str) -> Option<Self> {
        match name.strip_prefix(stem)? {
            "" => Some(Self::None),
            ".gz" => Some(Self::Gzip),
            ".xz" => Some(Self::Xz),
            ".zst" => Some(Self::Zstd),
            _ => None,
        }
    }

    /// Wraps `reader` in the matching decompressor.
    fn decoder<'a>(self, reader: impl Read + Send + 'a) -> io::Result<Box<dyn Read + Send + 'a>> {
        let buffered = BufReader::with_capacity(READ_BUFFER, reader);
        Ok(match self {
            Self::None => Box::new(buffered),
            Self::Gzip => Box::new(flate2::bufread::GzDecoder::new(buffered)),
            Self::Xz => Box::new(liblzma::bufread::XzDecoder::new(buffered)),
            Self::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
        })
    }
}

/// One file of a package's control archive (`md5sums`, `conffiles`,
/// `postinst`, `triggers`, …; `control` itself is parsed into
/// [`Deb::control`] and kept here too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlFile {
    /// The file name, without `./`.
    pub name: String,
    /// Permission bits from the archive.
    pub mode: u32,
    /// The content.
    pub data: Vec<u8>,
}

/// A `.deb` file with its control information read.
#[derive(Debug, Clone)]
pub struct Deb {
    /// The file.
    pub path: PathBuf,
    /// The `control` stanza.
    pub control: Stanza,
    /// Every file of the control archive, in archive order.
    pub control_files: Vec<ControlFile>,
    /// The data member's name, `data.tar.xz`, ….
    pub data_member: String,
    /// The data member's compression.
    pub data_compression: Compression,
    data_offset: u64,
    data_size: u64,
    /// Where its data archive is kept decompressed for later builds (see
    /// `data_cache.rs`).
    pub(crate) data_cache: Option<PathBuf>,
}

impl Deb {
    /// `Package`.
    #[must_use]
    pub fn name(&self) -> &str {
        self.control.get("Package").unwrap_or_default()
    }

    /// `Version`.
    #[must_use]
    pub fn version(&self) -> &str {
        self.control.get("Version").unwrap_or_default()
    }

    /// `Architecture`.
    #[must_use]
    pub fn architecture(&self) -> &str {
        self.control.get("Architecture").unwrap_or_default()
    }

    /// Whether the package is `Multi-Arch: same`: its database files are
    /// then named `<package>:<arch>.*`.
    #[must_use]
    pub fn multi_arch_same(&self) -> bool {
        self.control
            .get("Multi-Arch")
            .is_some_and(|v| v.eq_ignore_ascii_case("same"))
    }

    /// `Essential: yes`.
    #[must_use]
    pub fn essential(&self) -> bool {
        self.control
            .get("Essential")
            .is_some_and(|v| v.eq_ignore_ascii_case("yes"))
    }

    /// The name of the package's files in `/var/lib/dpkg/info`:
    /// `<package>` or, for `Multi-Arch: same`, `<package>:<arch>`.
    #[must_use]
    pub fn info_name(&self) -> String {
        if self.multi_arch_same() {
            format!("{}:{}", self.name(), self.architecture())
        } else {
            self.name().to_owned()
        }
    }

    /// The control file `name`, if the package has one.
    #[must_use]
    pub fn control_file(&self, name: &str) -> Option<&[u8]> {
        self.control_files
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.data.as_slice())
    }

    /// The absolute paths listed in `conffiles` (flags such as
    /// `remove-on-upgrade` dropped with their entries, as dpkg does on a
    /// fresh install).
    #[must_use]
    pub fn conffiles(&self) -> Vec<String> {
        let Some(data) = self.control_file("conffiles") else {
            return Vec::new();
        };
        String::from_utf8_lossy(data)
            .lines()
            .filter_map(|line| {
                let line = line.trim();
                if line.is_empty() {
                    return None;
                }
                // `[flags ...] path`: the path is last; only
                // `remove-on-upgrade` exists and means "not installed".
                let mut words = line.split_whitespace().rev();
                let path = words.next()?;
                if words.any(|flag| flag == "remove-on-upgrade") {
                    return None;
                }
                Some(path.to_owned())
            })
            .collect()
    }

    /// A reader of the uncompressed data archive (a tar stream).
    pub fn data_reader(&self) -> Result<Box<dyn Read + Send>, Error> {
        let member_error = |source| Error::Member {
            path: self.path.clone(),
            member: self.data_member.clone(),
            source,
        };
        let mut file = File::open(&self.path).map_err(|e| Error::io("open", &self.path, e))?;
        file.seek(SeekFrom::Start(self.data_offset))
            .map_err(member_error)?;
        self.data_compression
            .decoder(file.take(self.data_size))
            .map_err(member_error)
    }
}

/// Reads the control information of the `.deb` at `path` and locates its
/// data archive.
pub fn read_deb(path: &Path) -> Result<Deb, Error> {
    let invalid = |reason: String| Error::InvalidDeb {
        path: path.to_owned(),
        reason,
    };
    let mut file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let members = ar::members(BufReader::new(&mut file)).map_err(|e| invalid(e.to_string()))?;
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    let [binary, control_member, data_member, ..] = members.as_slice() else {
        return Err(invalid(format!(
            "expected `debian-binary`, `control.tar*` and `data.tar*` members, found {names:?}"
        )));
    };
    if binary.name != "debian-binary" {
        return Err(invalid(format!(
            "first member is `{}`, not `debian-binary`",
            binary.name
        )));
    }
    let version = read_member(&mut file, binary).map_err(|e| invalid(e.to_string()))?;
    if !version.starts_with(b"2.") {
        return Err(invalid(format!(
            "unsupported format version `{}`",
            String::from_utf8_lossy(&version).trim()
        )));
    }
    let control_compression = Compression::of_member(&control_member.name, "control.tar")
        .ok_or_else(|| {
            invalid(format!(
                "second member is `{}`, not `control.tar[.gz|.xz|.zst]`",
                control_member.name
            ))
        })?;
    let data_compression =
        Compression::of_member(&data_member.name, "data.tar").ok_or_else(|| {
            invalid(format!(
                "third member is `{}`, not `data.tar[.gz|.xz|.zst]`",
                data_member.name
            ))
        })?;
    let member_error = |source| Error::Member {
        path: path.to_owned(),
        member: control_member.name.clone(),
        source,
    };
    let raw = read_member(&mut file, control_member).map_err(member_error)?;
    let control_files = read_control_tar(control_compression, &raw).map_err(member_error)?;
    let control_text = control_files
        .iter()
        .find(|f| f.name == "control")
        .ok_or_else(|| invalid("the control archive has no `control` file".to_owned()))?;
    let control = Stanza::parse(&String::from_utf8_lossy(&control_text.data))
        .map_err(|reason| invalid(format!("bad `control` file: {reason}")))?;
    if control.get("Package").is_none_or(str::is_empty) {
        return Err(invalid(
            "the `control` file has no `Package` field".to_owned(),
        ));
    }
    Ok(Deb {
        path: path.to_owned(),
        control,
        control_files,
        data_member: data_member.name.clone(),
        data_compression,
        data_offset: data_member.offset,
        data_size: data_member.size,
        data_cache: None,
    })
}

fn read_member(file: &mut File, member: &ar::Member) -> io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(member.offset))?;
    let mut data = Vec::with_capacity(member.size.min(1 << 24) as usize);
    file.take(member.size).read_to_end(&mut data)?;
    Ok(data)
}

fn read_control_tar(compression: Compression, raw: &[u8]) -> io::Result<Vec<ControlFile>> {
    let mut archive = tar::Archive::new(compression.decoder(raw)?);
    let mut out = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry.path_bytes();
        let name = String::from_utf8_lossy(&path);
        let name = name.trim_start_matches("./");
        if name.is_empty() || name.contains('/') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected control member `{name}`"),
            ));
        }
        let name = name.to_owned();
        let mode = entry.header().mode()?;
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        out.push(ControlFile { name, mode, data });
    }
    Ok(out)
}
