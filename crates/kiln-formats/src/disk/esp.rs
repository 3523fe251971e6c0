//! The EFI system partition: FAT32 written with `fatfs` into its range
//! of the disk — the kernel and initrd, systemd-boot and its loader
//! entry, GRUB's `grub.cfg` — every time in it the epoch, its volume id
//! derived from the seed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use fatfs::{
    Date, DateTime, FatType, FileSystem, FormatVolumeOptions, FsOptions, Time, TimeProvider,
};

use super::DiskOptions;
use super::boot::BootFiles;
use super::layout::{Extent, Ids, to_string};
use crate::error::Error;
use crate::tree::open_source;

/// Writes gathered before they go to the file.
const BUFFER: usize = 4 << 20;

/// A file's content.
#[derive(Debug)]
enum Data {
    /// A file of the tree.
    Tree(std::path::PathBuf, u64),
    Bytes(Vec<u8>),
}

impl Data {
    fn len(&self) -> u64 {
        match self {
            Data::Tree(_, len) => *len,
            Data::Bytes(b) => b.len() as u64,
        }
    }
}

/// What the ESP holds: files by their path in it, in the order written.
#[derive(Debug)]
pub(crate) struct Content {
    files: Vec<(String, Data)>,
}

impl Content {
    /// The ESP of a disk booted by `files` with `options`.
    pub(crate) fn new(files: &BootFiles, options: &DiskOptions, ids: &Ids) -> Self {
        let cmdline = options.kernel_cmdline(&to_string(&ids.root));
        let mut out = vec![
            (
                "vmlinuz".to_owned(),
                Data::Tree(files.kernel.file.clone(), files.kernel.size),
            ),
            (
                "initrd.img".to_owned(),
                Data::Tree(files.initrd.file.clone(), files.initrd.size),
            ),
        ];
        if let Some(efi) = &files.systemd_boot {
            let (removable, own) = match options.arch {
                super::Arch::Amd64 => ("EFI/BOOT/BOOTX64.EFI", "EFI/systemd/systemd-bootx64.efi"),
                super::Arch::Arm64 => ("EFI/BOOT/BOOTAA64.EFI", "EFI/systemd/systemd-bootaa64.efi"),
            };
            for path in [removable, own] {
                out.push((path.to_owned(), Data::Tree(efi.file.clone(), efi.size)));
            }
            out.push((
                "loader/loader.conf".to_owned(),
                Data::Bytes(b"timeout 0\ndefault kiln.conf\neditor no\n".to_vec()),
            ));
            out.push((
                "loader/entries/kiln.conf".to_owned(),
                Data::Bytes(
                    format!(
                        "title {}\nlinux /vmlinuz\ninitrd /initrd.img\noptions {cmdline}\n",
                        files.title
                    )
                    .into_bytes(),
                ),
            ));
        }
        if files.grub.is_some() {
            out.push((
                "grub/grub.cfg".to_owned(),
                Data::Bytes(
                    format!(
                        "# Written by kiln: boots the image's kernel from this partition.\n\
                         set timeout=0\n\
                         set default=0\n\
                         menuentry '{}' {{\n\
                         \tlinux /vmlinuz {cmdline}\n\
                         \tinitrd /initrd.img\n\
                         \tboot\n\
                         }}\n",
                        files.title.replace('\'', "")
                    )
                    .into_bytes(),
                ),
            ));
        }
        Self { files: out }
    }

    /// Formats the ESP at `at` in `file` (`path` in errors) and writes
    /// the files into it.
    pub(crate) fn write(
        &self,
        file: &File,
        path: &Path,
        at: &Extent,
        volume_id: u32,
        epoch: i64,
        format: &'static str,
    ) -> Result<(), Error> {
        let cluster = cluster_size(at.len);
        // The FATs take 4 bytes a cluster, twice; a MiB is room enough for
        // the directories.
        let need: u64 = self
            .files
            .iter()
            .map(|(_, d)| d.len().next_multiple_of(u64::from(cluster)))
            .sum::<u64>()
            + (1 << 20)
            + at.len / u64::from(cluster) * 8;
        if need > at.len {
            return Err(Error::TooLarge {
                format,
                reason: format!(
                    "the kernel, initrd and boot loaders need an ESP of about {} MiB, more than the {} MiB of `esp_size`",
                    need.div_ceil(1 << 20),
                    at.len >> 20
                ),
            });
        }
        let fail = |what: &str, e: io::Error| {
            Error::io(
                "write the ESP of",
                path,
                io::Error::new(e.kind(), format!("{what}: {e}")),
            )
        };
        let mut region = Region::new(file, at.start, at.len);
        fatfs::format_volume(
            &mut region,
            FormatVolumeOptions::new()
                .fat_type(FatType::Fat32)
                .bytes_per_cluster(cluster)
                .volume_id(volume_id)
                .volume_label(*b"ESP        "),
        )
        .map_err(|e| fail("format", e))?;
        region
            .seek(SeekFrom::Start(0))
            .map_err(|e| fail("format", e))?;
        let fs = FileSystem::new(&mut region, FsOptions::new().time_provider(clock(epoch)))
            .map_err(|e| fail("open", e))?;
        {
            let root = fs.root_dir();
            let mut buf = vec![0u8; 1 << 20];
            for (name, data) in &self.files {
                let mut dir = root.clone();
                let mut parts: Vec<&str> = name.split('/').collect();
                let leaf = parts.pop().unwrap_or_default();
                for part in parts {
                    dir = match dir.open_dir(part) {
                        Ok(d) => d,
                        Err(_) => dir.create_dir(part).map_err(|e| fail(name, e))?,
                    };
                }
                let mut out = dir.create_file(leaf).map_err(|e| fail(name, e))?;
                match data {
                    Data::Bytes(b) => out.write_all(b).map_err(|e| fail(name, e))?,
                    Data::Tree(source, len) => {
                        let mut src = open_source(source)?;
                        let mut left = *len;
                        while left > 0 {
                            let n = left.min(buf.len() as u64) as usize;
                            src.read_exact(&mut buf[..n])
                                .map_err(|e| Error::io("read", source, e))?;
                            out.write_all(&buf[..n]).map_err(|e| fail(name, e))?;
                            left -= n as u64;
                        }
                    }
                }
                out.flush().map_err(|e| fail(name, e))?;
            }
        }
        fs.unmount().map_err(|e| fail("unmount", e))?;
        region.flush().map_err(|e| fail("flush", e))?;
        tidy(file, at.start).map_err(|e| fail("tidy", e))
    }
}

/// What `fatfs` 0.3 leaves for others to finish, done on the formatted,
/// written partition at `base` of `file`: it gives the `.` and `..`
/// entries of every directory a long name entry each, which `fsck.fat`
/// (and strict firmware) reject — they become the first two entries
/// again, the long names deleted after them, and `..` in a folder of the
/// root names cluster 0, as FAT wants, not the root's — and it leaves
/// the free cluster count unknown, which is counted.
fn tidy(file: &File, base: u64) -> io::Result<()> {
    let mut boot = [0u8; 512];
    file.read_exact_at(&mut boot, base)?;
    let u16_at = |at: usize| u64::from(u16::from_le_bytes([boot[at], boot[at + 1]]));
    let u32_at = |at: usize| {
        u64::from(u32::from_le_bytes([
            boot[at],
            boot[at + 1],
            boot[at + 2],
            boot[at + 3],
        ]))
    };
    let sector = u16_at(11);
    let cluster = sector * u64::from(boot[13]);
    let reserved = u16_at(14) * sector;
    let fat_len = u32_at(36) * sector;
    let data = reserved + u64::from(boot[16]) * fat_len;
    let clusters = (u32_at(32) * sector - data) / cluster;
    let mut fat_bytes = vec![0u8; fat_len as usize];
    file.read_exact_at(&mut fat_bytes, base + reserved)?;
    let fat: Vec<u32> = fat_bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) & 0x0FFF_FFFF)
        .collect();
    let chain = |first: u32| {
        let mut out = Vec::new();
        let mut c = first;
        while (2..0x0FFF_FFF8).contains(&c) && out.len() <= fat.len() {
            out.push(c);
            c = fat[c as usize];
        }
        out
    };
    let at = |c: u32| base + data + u64::from(c - 2) * cluster;
    let root = u32_at(44) as u32;
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        'entries: for c in chain(dir) {
            let mut bytes = vec![0u8; cluster as usize];
            file.read_exact_at(&mut bytes, at(c))?;
            for e in bytes.chunks_exact(32) {
                match e[0] {
                    0 => break 'entries,
                    0xE5 => continue,
                    _ => {}
                }
                let is_dot = &e[..11] == b".          " || &e[..11] == b"..         ";
                if e[11] == 0x0F || e[11] & 0x10 == 0 || is_dot {
                    continue;
                }
                let first = u32::from(u16::from_le_bytes([e[20], e[21]])) << 16
                    | u32::from(u16::from_le_bytes([e[26], e[27]]));
                dirs.push(first);
                let mut head = [0u8; 128];
                file.read_exact_at(&mut head, at(first))?;
                if head[11] == 0x0F
                    && &head[32..43] == b".          "
                    && head[64 + 11] == 0x0F
                    && &head[96..107] == b"..         "
                {
                    let mut fixed = [0u8; 128];
                    fixed[..32].copy_from_slice(&head[32..64]);
                    fixed[32..64].copy_from_slice(&head[96..128]);
                    fixed[64..96].copy_from_slice(&head[..32]);
                    fixed[96..].copy_from_slice(&head[64..96]);
                    fixed[64] = 0xE5;
                    fixed[96] = 0xE5;
                    if dir == root {
                        for i in [52, 53, 58, 59] {
                            fixed[i] = 0;
                        }
                    }
                    file.write_all_at(&fixed, at(first))?;
                }
            }
        }
    }
    let free = fat
        .iter()
        .skip(2)
        .take(clusters as usize)
        .filter(|&&e| e == 0)
        .count() as u32;
    let next = fat
        .iter()
        .skip(2)
        .take(clusters as usize)
        .position(|&e| e == 0)
        .map_or(u32::MAX, |i| i as u32 + 2);
    let info = base + u16_at(48) * sector;
    file.write_all_at(&free.to_le_bytes(), info + 488)?;
    file.write_all_at(&next.to_le_bytes(), info + 492)
}

/// The largest cluster that leaves FAT32 the clusters it must have
/// (65,525, and a margin), so big files take few.
fn cluster_size(len: u64) -> u32 {
    [4096, 2048, 1024]
        .into_iter()
        .find(|&c| len / u64::from(c) >= 66_000)
        .unwrap_or(512)
}

/// `epoch` as `fatfs` asks for it: a clock that always says the epoch.
/// `fatfs` wants one that lives forever; one is kept per epoch a process
/// writes with, so a build leaks a few bytes once.
fn clock(epoch: i64) -> &'static EpochClock {
    static CLOCKS: Mutex<BTreeMap<i64, &'static EpochClock>> = Mutex::new(BTreeMap::new());
    let mut clocks = CLOCKS.lock().unwrap_or_else(PoisonError::into_inner);
    clocks
        .entry(epoch)
        .or_insert_with(|| Box::leak(Box::new(EpochClock(dos_time(epoch)))))
}

#[derive(Debug)]
struct EpochClock(DateTime);

impl TimeProvider for EpochClock {
    fn get_current_date(&self) -> Date {
        self.0.date
    }

    fn get_current_date_time(&self) -> DateTime {
        self.0
    }
}

/// A time in seconds since 1970 (UTC) as FAT stores it: from 1980 to
/// 2107, in two-second steps.
pub(crate) fn dos_time(epoch: i64) -> DateTime {
    let min = 315_532_800; // 1980-01-01
    let max = 4_354_819_198; // 2107-12-31 23:59:58
    let t = crate::civil::civil(epoch.clamp(min, max));
    // In range: the time is clamped.
    let n = |v: i16| u16::try_from(v).unwrap_or_default();
    DateTime {
        date: Date {
            year: n(t.year()),
            month: n(t.month().into()),
            day: n(t.day().into()),
        },
        time: Time {
            hour: n(t.hour().into()),
            min: n(t.minute().into()),
            sec: n(t.second().into()) / 2 * 2,
            millis: 0,
        },
    }
}

/// A partition of the disk file as a stream, writes gathered into large
/// ones (file content goes out in runs of clusters; the FAT updates in
/// between are small).
struct Region<'f> {
    file: &'f File,
    base: u64,
    len: u64,
    pos: u64,
    pending: Vec<u8>,
    /// Where `pending` starts, in the partition.
    pending_at: u64,
}

impl<'f> Region<'f> {
    fn new(file: &'f File, base: u64, len: u64) -> Self {
        Self {
            file,
            base,
            len,
            pos: 0,
            pending: Vec::with_capacity(BUFFER),
            pending_at: 0,
        }
    }

    fn write_pending(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.file
                .write_all_at(&self.pending, self.base + self.pending_at)?;
            self.pending.clear();
        }
        Ok(())
    }
}

impl Read for Region<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let end = self.pending_at + self.pending.len() as u64;
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        if n == 0 {
            return Ok(0);
        }
        if self.pos >= self.pending_at && self.pos + n as u64 <= end && !self.pending.is_empty() {
            let from = (self.pos - self.pending_at) as usize;
            buf[..n].copy_from_slice(&self.pending[from..from + n]);
        } else {
            self.write_pending()?;
            self.file
                .read_exact_at(&mut buf[..n], self.base + self.pos)?;
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for Region<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.pos + data.len() as u64 > self.len {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "a write past the end of the partition",
            ));
        }
        let end = self.pending_at + self.pending.len() as u64;
        if !self.pending.is_empty() && self.pos >= self.pending_at && self.pos < end {
            // Rewriting what is still pending (a FAT sector, a directory).
            let from = (self.pos - self.pending_at) as usize;
            let inside = data.len().min(self.pending.len() - from);
            self.pending[from..from + inside].copy_from_slice(&data[..inside]);
            self.pending.extend_from_slice(&data[inside..]);
        } else {
            if self.pos != end || self.pending.len() >= BUFFER {
                self.write_pending()?;
            }
            if self.pending.is_empty() {
                self.pending_at = self.pos;
            }
            self.pending.extend_from_slice(data);
        }
        self.pos += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_pending()
    }
}

impl Seek for Region<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "a seek before the partition")
        })?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_civil_times_in_fat_range() {
        let t = dos_time(1_700_000_000); // 2023-11-14 22:13:20
        assert_eq!((t.date.year, t.date.month, t.date.day), (2023, 11, 14));
        assert_eq!((t.time.hour, t.time.min, t.time.sec), (22, 13, 20));
        let t = dos_time(951_782_401); // 2000-02-29 00:00:01
        assert_eq!((t.date.year, t.date.month, t.date.day), (2000, 2, 29));
        assert_eq!(t.time.sec, 0);
        let t = dos_time(0);
        assert_eq!((t.date.year, t.date.month, t.date.day), (1980, 1, 1));
    }

    #[test]
    fn a_region_reads_back_what_is_pending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        let file = File::create(&path).unwrap();
        file.set_len(8192).unwrap();
        let mut r = Region::new(&file, 4096, 4096);
        r.write_all(b"abcdef").unwrap();
        r.seek(SeekFrom::Start(2)).unwrap();
        r.write_all(b"XYZWVU").unwrap();
        r.seek(SeekFrom::Start(0)).unwrap();
        let mut got = [0u8; 8];
        r.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"abXYZWVU");
        r.seek(SeekFrom::Start(4000)).unwrap();
        r.write_all(b"end").unwrap();
        assert!(r.write_all(&[0; 200]).is_err());
        r.flush().unwrap();
        let all = std::fs::read(&path).unwrap();
        assert_eq!(&all[4096..4104], b"abXYZWVU");
        assert_eq!(&all[8096..8099], b"end");
    }
}
