//! Extended attributes: names split into ext4's name index and suffix,
//! POSIX ACLs turned from the VFS format into ext4's compact one (as
//! e2fsprogs does), and the two places they go — the 96 bytes after an
//! inode's extra fields while they fit, then one 4 KiB EA block, shared
//! by every inode with the same attributes in it.

use super::checksum::crc32c;
use super::layout::{BLOCK, INODE_SIZE};
use crate::error::Error;
use crate::tree::Node;

const MAGIC: u32 = 0xEA02_0000;
/// Where the in-inode area starts (after the 32 extra bytes).
pub(crate) const IBODY_AT: usize = 128 + 32;
/// Bytes of in-inode area after its magic.
const IBODY_ROOM: usize = INODE_SIZE - IBODY_AT - 4;
const BLOCK_HEADER: usize = 32;
const ENTRY_HEADER: usize = 16;
/// The most inodes one EA block serves (the kernel's limit).
pub(crate) const MAX_REFCOUNT: u32 = 1024;

/// ext4's name prefixes and their index, most specific first.
const PREFIXES: [(&str, u8); 5] = [
    ("system.posix_acl_access", 2),
    ("system.posix_acl_default", 3),
    ("user.", 1),
    ("trusted.", 4),
    ("security.", 6),
];

/// One attribute as stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Attr {
    /// The name index.
    pub(crate) index: u8,
    /// The name without its prefix.
    pub(crate) name: Vec<u8>,
    /// The value (ACLs in ext4's format).
    pub(crate) value: Vec<u8>,
}

impl Attr {
    fn entry_len(&self) -> usize {
        (ENTRY_HEADER + self.name.len()).next_multiple_of(4)
    }

    fn value_len(&self) -> usize {
        self.value.len().next_multiple_of(4)
    }

    fn room(&self) -> usize {
        self.entry_len() + self.value_len()
    }
}

/// Where a node's attributes go.
#[derive(Debug, Default)]
pub(crate) struct Split {
    /// The in-inode area (magic and entries), empty when none.
    pub(crate) ibody: Vec<u8>,
    /// What goes into an EA block.
    pub(crate) block: Vec<Attr>,
}

/// Sorts `node`'s xattrs into the inode and an EA block.
pub(crate) fn split(node: &Node) -> Result<Split, Error> {
    if node.xattrs.is_empty() {
        return Ok(Split::default());
    }
    let unsupported = |reason: String| Error::Unsupported {
        format: "ext4",
        path: node.path.clone(),
        reason,
    };
    let mut attrs = Vec::with_capacity(node.xattrs.len());
    for (name, value) in &node.xattrs {
        let Some(&(prefix, index)) = PREFIXES.iter().find(|(p, _)| name.starts_with(p)) else {
            return Err(unsupported(format!(
                "the xattr `{name}` is not in a namespace ext4 stores (user., trusted., security., system.posix_acl_*)"
            )));
        };
        let suffix = &name.as_bytes()[prefix.len()..];
        let acl = index == 2 || index == 3;
        if acl && !suffix.is_empty() {
            return Err(unsupported(format!("the xattr `{name}` is not an ACL")));
        }
        if suffix.len() > 255 {
            return Err(unsupported(format!("the xattr name `{name}` is too long")));
        }
        let value = if acl {
            acl_to_disk(value).ok_or_else(|| {
                unsupported(format!("the xattr `{name}` is not a valid POSIX ACL"))
            })?
        } else {
            value.clone()
        };
        attrs.push(Attr {
            index,
            name: suffix.to_vec(),
            value,
        });
    }
    // The order the kernel looks them up in within a block.
    attrs.sort_by(|a, b| (a.index, a.name.len(), &a.name).cmp(&(b.index, b.name.len(), &b.name)));
    // As many as fit into the inode, in that order; the rest in a block.
    let mut used = 4; // the terminating zero entry
    let mut fit = 0;
    for a in &attrs {
        if used + a.room() > IBODY_ROOM {
            break;
        }
        used += a.room();
        fit += 1;
    }
    let block = attrs.split_off(fit);
    let block_room: usize = BLOCK_HEADER + 4 + block.iter().map(Attr::room).sum::<usize>();
    if block_room > BLOCK {
        return Err(unsupported(format!(
            "its xattrs need {block_room} bytes, more than one 4 KiB block"
        )));
    }
    let ibody = if attrs.is_empty() {
        Vec::new()
    } else {
        let mut area = vec![0u8; INODE_SIZE - IBODY_AT];
        area[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        // Offsets count from the first entry, right after the magic.
        place(&attrs, &mut area[4..], 0);
        area
    };
    Ok(Split { ibody, block })
}

/// The EA block at `at` holding `attrs`, used by `refcount` inodes.
pub(crate) fn block(attrs: &[Attr], refcount: u32, at: u64, fs_seed: u32) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK];
    let hashes = place(attrs, &mut b, BLOCK_HEADER);
    b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    b[4..8].copy_from_slice(&refcount.to_le_bytes());
    b[8..12].copy_from_slice(&1u32.to_le_bytes());
    // An entry hash of 0 marks the block as not to be shared.
    let mut hash = 0u32;
    for h in hashes {
        if h == 0 {
            hash = 0;
            break;
        }
        hash = (hash << 16) ^ (hash >> 16) ^ h;
    }
    b[12..16].copy_from_slice(&hash.to_le_bytes());
    let sum = crc32c(crc32c(fs_seed, &at.to_le_bytes()), &b);
    b[16..20].copy_from_slice(&sum.to_le_bytes());
    b
}

/// Writes the entries from `first` in `area` and their values from its
/// end down (offsets relative to the start of `area`); returns each
/// entry's hash.
fn place(attrs: &[Attr], area: &mut [u8], first: usize) -> Vec<u32> {
    let mut entry_at = first;
    let mut value_end = area.len();
    let mut hashes = Vec::with_capacity(attrs.len());
    for a in attrs {
        let value_at = value_end - a.value_len();
        area[value_at..value_at + a.value.len()].copy_from_slice(&a.value);
        value_end = value_at;
        let hash = entry_hash(&a.name, &area[value_at..value_at + a.value_len()]);
        let e = &mut area[entry_at..entry_at + a.entry_len()];
        e[0] = a.name.len() as u8;
        e[1] = a.index;
        let offset = if a.value.is_empty() { 0 } else { value_at };
        e[2..4].copy_from_slice(&(offset as u16).to_le_bytes());
        // e_value_inum stays 0: no EA inodes.
        e[8..12].copy_from_slice(&(a.value.len() as u32).to_le_bytes());
        e[12..16].copy_from_slice(&hash.to_le_bytes());
        e[16..16 + a.name.len()].copy_from_slice(&a.name);
        entry_at += a.entry_len();
        hashes.push(hash);
    }
    hashes
}

/// `ext4_xattr_hash_entry`: the name's bytes, then the value's
/// little-endian words (zero-padded).
fn entry_hash(name: &[u8], padded_value: &[u8]) -> u32 {
    let mut hash = 0u32;
    for &c in name {
        hash = (hash << 5) ^ (hash >> 27) ^ u32::from(c);
    }
    for w in padded_value.chunks_exact(4) {
        hash = (hash << 16) ^ (hash >> 16) ^ u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
    }
    hash
}

/// A POSIX ACL from the VFS format (version 2, 8-byte entries) to
/// ext4's (version 1, 4-byte entries for the owner, group, mask and
/// other, 8-byte ones for named users and groups); `None` if invalid.
fn acl_to_disk(value: &[u8]) -> Option<Vec<u8>> {
    const USER_OBJ: u16 = 0x01;
    const USER: u16 = 0x02;
    const GROUP_OBJ: u16 = 0x04;
    const GROUP: u16 = 0x08;
    const MASK: u16 = 0x10;
    const OTHER: u16 = 0x20;
    let (version, entries) = value.split_at_checked(4)?;
    if version != 2u32.to_le_bytes() || entries.len() % 8 != 0 {
        return None;
    }
    let mut out = 1u32.to_le_bytes().to_vec();
    for e in entries.chunks_exact(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        match tag {
            USER_OBJ | GROUP_OBJ | MASK | OTHER => out.extend_from_slice(&e[..4]),
            USER | GROUP => out.extend_from_slice(e),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::NodeKind;

    fn node(xattrs: &[(&str, &[u8])]) -> Node {
        Node {
            path: "f".into(),
            kind: NodeKind::Fifo,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: xattrs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
                .collect(),
        }
    }

    #[test]
    fn small_ones_go_into_the_inode_big_ones_into_a_block() {
        let s = split(&node(&[("user.a", b"1"), ("user.big", &[7; 3000])])).unwrap();
        assert_eq!(s.ibody.len(), INODE_SIZE - IBODY_AT);
        assert_eq!(s.block.len(), 1);
        assert_eq!(s.block[0].name, b"big");
        let s = split(&node(&[("security.capability", &[1; 20])])).unwrap();
        assert!(s.block.is_empty());
        assert!(split(&node(&[("user.huge", &[0; 5000])])).is_err());
        assert!(split(&node(&[("os2.x", b"")])).is_err());
    }

    #[test]
    fn acls_are_converted_to_the_compact_format() {
        // user::rw- user:1000:r-- group::r-- mask::r-- other::---
        let mut vfs = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (1u16, 6u16, u32::MAX),
            (2, 4, 1000),
            (4, 4, u32::MAX),
            (0x10, 4, u32::MAX),
            (0x20, 0, u32::MAX),
        ] {
            vfs.extend_from_slice(&tag.to_le_bytes());
            vfs.extend_from_slice(&perm.to_le_bytes());
            vfs.extend_from_slice(&id.to_le_bytes());
        }
        let disk = acl_to_disk(&vfs).unwrap();
        assert_eq!(disk.len(), 4 + 4 + 8 + 4 + 4 + 4);
        assert_eq!(&disk[0..4], &1u32.to_le_bytes());
        assert_eq!(&disk[8..16], &[2, 0, 4, 0, 0xE8, 3, 0, 0]);
        assert!(acl_to_disk(b"\x02\0\0\0\x40\0\0\0\0\0\0\0").is_none());
        assert!(acl_to_disk(b"\x01\0\0\0").is_none());
    }
}
