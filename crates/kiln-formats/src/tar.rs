//! `tar`, `tar.gz`, `tar.zst`, `tar.xz`: POSIX (pax) archives of the full
//! root, as `tar --xattrs --numeric-owner -C ROOT -cf - .` would write them
//! with sorted names and clamped mtimes.
//!
//! - Names start with `./` (directories end in `/`), as Debian's tools
//!   write root tarballs; names, link targets, sizes, ids and xattrs that
//!   do not fit ustar's fields go in a pax extended header before the
//!   entry (`path`, `linkpath`, `size`, `uid`, `gid`, and
//!   `SCHILY.xattr.<name>` for every xattr, which GNU tar and bsdtar
//!   restore with `--xattrs`).
//! - Owners are numeric only (no user or group names): the image's ids
//!   mean nothing on the host.
//! - Hard links are link entries (`1`) to the first name; devices and
//!   fifos are kept. Sockets cannot be stored in tar and are left out, as
//!   tar does.
//! - The archive ends with two zero blocks and is padded to tar's
//!   10 KiB record.
//!
//! The same writer writes OCI image layers and `oci.tar` (`oci/`): names
//! without a prefix and no root entry, and, in a layer, whiteouts and
//! opaque directories in OCI's form ([`Whiteouts::Oci`]).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use crate::compress::{Compression, Counting, FinishWrite, compressed};
use crate::error::Error;
use crate::tree::{Node, NodeKind, OPAQUE_XATTR, Tree, open_source};
use crate::{Input, Writer};

const BLOCK: usize = 512;
const RECORD: u64 = 20 * BLOCK as u64;

pub(crate) struct TarWriter {
    pub(crate) compression: Compression,
}

impl Writer for TarWriter {
    fn write(&self, input: &Input<'_>, dest: &Path) -> Result<(), Error> {
        let tree = Tree::merged(input.stack, input.epoch)?;
        let file = File::create(dest).map_err(|e| Error::io("create", dest, e))?;
        let out = compressed(
            BufWriter::with_capacity(1 << 20, file),
            self.compression,
            input.threads,
        )
        .map_err(|e| Error::io("write", dest, e))?;
        write_tar(&tree, "./", Whiteouts::Overlay, out, dest, input.cancel)
    }
}

/// How a layer tree's whiteouts and opaque marks are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Whiteouts {
    /// As overlayfs keeps them: a whiteout is a character device 0:0, an
    /// opaque directory carries [`OPAQUE_XATTR`]. (A merged root has
    /// neither.)
    Overlay,
    /// As OCI image layers write them: a whiteout is an empty regular
    /// file `.wh.<name>` (mode 0600) in its place, an opaque directory is
    /// followed by an empty `.wh..wh..opq` inside it and loses the xattr.
    /// A real name starting with `.wh.` cannot be stored.
    Oci,
}

/// The prefix OCI layers mark whiteouts with.
pub(crate) const WHITEOUT_PREFIX: &str = ".wh.";
/// The entry OCI layers mark an opaque directory with.
pub(crate) const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

/// Writes `tree` as a tar into `out`, every name prefixed with `prefix`
/// (`"./"`, or `""` for OCI layers, which then leave the root out).
pub(crate) fn write_tar(
    tree: &Tree,
    prefix: &str,
    whiteouts: Whiteouts,
    out: Box<dyn FinishWrite>,
    dest: &Path,
    cancel: crate::Cancel<'_>,
) -> Result<(), Error> {
    let mut w = Counting { inner: out, n: 0 };
    let wr = |e: io::Error| Error::io("write", dest, e);
    for node in &tree.nodes {
        let mut entry = entry_of(tree, node, prefix);
        let mut opaque = None;
        if whiteouts == Whiteouts::Oci {
            (entry, opaque) = oci_entries(node, prefix, entry)?;
        }
        if let Some(entry) = entry {
            entry.write_headers(&mut w).map_err(wr)?;
            if let NodeKind::File { size, source } = &node.kind {
                copy_content(source, *size, &mut w, dest, cancel)?;
                pad(&mut w).map_err(wr)?;
            }
        }
        if let Some(opaque) = opaque {
            opaque.write_headers(&mut w).map_err(wr)?;
        }
    }
    w.write_all(&[0; 2 * BLOCK]).map_err(wr)?;
    let rest = (RECORD - w.n % RECORD) % RECORD;
    io::copy(&mut io::repeat(0).take(rest), &mut w).map_err(wr)?;
    w.inner.finish().map_err(wr)
}

use std::io::Read as _;

/// `node`'s entry (`entry`, as a plain tar writes it) in an OCI layer, and
/// the opaque marker that follows it; see [`Whiteouts::Oci`].
fn oci_entries(
    node: &Node,
    prefix: &str,
    entry: Option<Entry>,
) -> Result<(Option<Entry>, Option<Entry>), Error> {
    if node.name().starts_with(WHITEOUT_PREFIX) {
        return Err(Error::Unsupported {
            format: "an OCI layer",
            path: node.path.clone(),
            reason: format!("names starting with `{WHITEOUT_PREFIX}` mark whiteouts there"),
        });
    }
    let marker = |name: String, mode: u32| Entry {
        name: format!("{prefix}{name}").into_bytes(),
        link: Vec::new(),
        typeflag: b'0',
        mode,
        uid: node.uid,
        gid: node.gid,
        size: 0,
        mtime: node.mtime,
        major: 0,
        minor: 0,
        xattrs: Vec::new(),
    };
    if node.kind == NodeKind::Whiteout {
        let name = match node.parent_path() {
            "" => format!("{WHITEOUT_PREFIX}{}", node.name()),
            parent => format!("{parent}/{WHITEOUT_PREFIX}{}", node.name()),
        };
        return Ok((Some(marker(name, 0o600)), None));
    }
    if !node.is_opaque() {
        return Ok((entry, None));
    }
    let entry = entry.map(|mut e| {
        e.xattrs.retain(|(k, _)| k != OPAQUE_XATTR);
        e
    });
    let name = if node.path.is_empty() {
        OPAQUE_WHITEOUT.to_owned()
    } else {
        format!("{}/{OPAQUE_WHITEOUT}", node.path)
    };
    Ok((entry, Some(marker(name, node.mode & 0o777))))
}

/// Copies exactly `size` bytes of `source` (the size the tree recorded:
/// a file that changed since is an error, not a corrupt archive) to `w`,
/// the artifact `dest`: a failed read names the source, a failed write
/// (a full disk) the artifact.
pub(crate) fn copy_content(
    source: &Path,
    size: u64,
    w: &mut impl Write,
    dest: &Path,
    cancel: crate::Cancel<'_>,
) -> Result<(), Error> {
    crate::check(cancel)?;
    let mut f = open_source(source)?;
    let mut buf = vec![0u8; 128 * 1024];
    let mut left = size;
    while left > 0 {
        crate::check(cancel)?;
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let n = match f.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(Error::io(
                    "read",
                    source,
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file shrank while written",
                    ),
                ));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read", source, e)),
        };
        w.write_all(&buf[..n])
            .map_err(|e| Error::io("write", dest, e))?;
        left -= n as u64;
    }
    Ok(())
}

fn pad(w: &mut Counting) -> io::Result<()> {
    let rest = (BLOCK as u64 - w.n % BLOCK as u64) % BLOCK as u64;
    w.write_all(&[0u8; BLOCK][..rest as usize])
}

/// One entry's header fields.
struct Entry {
    name: Vec<u8>,
    link: Vec<u8>,
    typeflag: u8,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: i64,
    major: u32,
    minor: u32,
    xattrs: Vec<(String, Vec<u8>)>,
}

fn entry_of(tree: &Tree, node: &Node, prefix: &str) -> Option<Entry> {
    let mut name = format!("{prefix}{}", node.path).into_bytes();
    let (mut link, mut size, mut major, mut minor) = (Vec::new(), 0, 0, 0);
    let typeflag = match &node.kind {
        NodeKind::Dir => {
            if name.is_empty() {
                name = b"./".to_vec();
            } else if !name.ends_with(b"/") {
                name.push(b'/');
            }
            b'5'
        }
        NodeKind::File { size: s, .. } => {
            size = *s;
            b'0'
        }
        NodeKind::HardLink { target } => {
            link = format!("{prefix}{}", tree.nodes[*target].path).into_bytes();
            b'1'
        }
        NodeKind::Symlink { target } => {
            link.clone_from(target);
            b'2'
        }
        NodeKind::CharDevice { major: a, minor: b } => {
            (major, minor) = (*a, *b);
            b'3'
        }
        NodeKind::Whiteout => b'3',
        NodeKind::BlockDevice { major: a, minor: b } => {
            (major, minor) = (*a, *b);
            b'4'
        }
        NodeKind::Fifo => b'6',
        NodeKind::Socket => return None,
    };
    if name == b"./" && prefix.is_empty() {
        return None;
    }
    Some(Entry {
        name,
        link,
        typeflag,
        mode: node.mode,
        uid: node.uid,
        gid: node.gid,
        size,
        mtime: node.mtime,
        major,
        minor,
        xattrs: node.xattrs.clone(),
    })
}

/// The largest value an octal field of `len` bytes (with its NUL) holds.
fn octal_max(len: usize) -> u64 {
    (1u64 << (3 * (len as u32 - 1))) - 1
}

impl Entry {
    fn write_headers(&self, w: &mut impl Write) -> io::Result<()> {
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        if self.name.len() > 100 {
            pax.push(("path".into(), self.name.clone()));
        }
        if self.link.len() > 100 {
            pax.push(("linkpath".into(), self.link.clone()));
        }
        if self.size > octal_max(12) {
            pax.push(("size".into(), self.size.to_string().into_bytes()));
        }
        if u64::from(self.uid) > octal_max(8) {
            pax.push(("uid".into(), self.uid.to_string().into_bytes()));
        }
        if u64::from(self.gid) > octal_max(8) {
            pax.push(("gid".into(), self.gid.to_string().into_bytes()));
        }
        let mtime = u64::try_from(self.mtime).unwrap_or(0).min(octal_max(12));
        for (k, v) in &self.xattrs {
            pax.push((format!("SCHILY.xattr.{k}"), v.clone()));
        }
        if !pax.is_empty() {
            let mut body = Vec::new();
            for (k, v) in &pax {
                body.extend_from_slice(&pax_record(k, v));
            }
            // A fixed name: GNU tar's default holds its process id.
            let base = self.name.rsplit(|&b| b == b'/').find(|c| !c.is_empty());
            let mut pname = b"./PaxHeaders/".to_vec();
            pname.extend_from_slice(base.unwrap_or(b"root"));
            pname.truncate(100);
            let header = header(
                &pname,
                &[],
                b'x',
                0o644,
                0,
                0,
                body.len() as u64,
                mtime,
                0,
                0,
            );
            w.write_all(&header)?;
            w.write_all(&body)?;
            let rest = (BLOCK - body.len() % BLOCK) % BLOCK;
            w.write_all(&[0u8; BLOCK][..rest])?;
        }
        let name = &self.name[..self.name.len().min(100)];
        let link = &self.link[..self.link.len().min(100)];
        let header = header(
            name,
            link,
            self.typeflag,
            self.mode,
            u64::from(self.uid).min(octal_max(8)),
            u64::from(self.gid).min(octal_max(8)),
            self.size.min(octal_max(12)),
            mtime,
            self.major,
            self.minor,
        );
        w.write_all(&header)
    }
}

/// `"<len> <key>=<value>\n"`, where `<len>` counts the whole record.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = 1 + key.len() + 1 + value.len() + 1;
    let mut len = rest + 1;
    while len.to_string().len() + rest != len {
        len = len.to_string().len() + rest;
    }
    let mut out = format!("{len} {key}=").into_bytes();
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

#[allow(clippy::too_many_arguments)]
fn header(
    name: &[u8],
    link: &[u8],
    typeflag: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    major: u32,
    minor: u32,
) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], uid);
    octal(&mut h[116..124], gid);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    if matches!(typeflag, b'3' | b'4') {
        octal(&mut h[329..337], u64::from(major));
        octal(&mut h[337..345], u64::from(minor));
    }
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

/// Zero-padded octal, NUL-terminated, filling `field`.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&s.as_bytes()[s.len() - digits..]);
    field[digits] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        for len in [0, 1, 5, 90, 95, 96, 97, 990, 995, 9990] {
            let value = vec![b'a'; len];
            let rec = pax_record("path", &value);
            let text = String::from_utf8(rec.clone()).unwrap();
            let n: usize = text.split(' ').next().unwrap().parse().unwrap();
            assert_eq!(n, rec.len(), "record for {len} bytes");
        }
    }

    #[test]
    fn octal_fills_field() {
        let mut f = [0xffu8; 8];
        octal(&mut f, 0o755);
        assert_eq!(&f, b"0000755\0");
    }
}
