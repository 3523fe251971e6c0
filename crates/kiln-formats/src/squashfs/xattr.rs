//! The xattr table: each distinct set of extended attributes stored once
//! as name/value pairs, an id per set that inodes refer to, and the
//! index the superblock points at.
//!
//! `SquashFS` stores the `user.`, `trusted.` and `security.` namespaces (file
//! capabilities are `security.capability`). POSIX ACLs (`system.posix_acl_*`,
//! such as systemd's on `/var/log/journal`) have no place in it and are
//! left out, as mksquashfs leaves them out; any other namespace is an
//! error naming the file.

use std::collections::HashMap;

use super::compressor::Encoder;
use super::metadata::{MetaRef, MetadataWriter};
use crate::error::Error;
use crate::tree::Tree;

/// The name prefixes squashfs can store, with their type codes.
const PREFIXES: [(&str, u16); 3] = [("user.", 0), ("trusted.", 1), ("security.", 2)];

/// The xattr sets of a tree, encoded.
#[derive(Debug)]
pub(crate) struct Xattrs {
    /// Indexed by node: the id of its set, if it has xattrs.
    pub(crate) ids: Vec<Option<u32>>,
    pairs: MetadataWriter,
    /// For each id: where its pairs start, how many, their size.
    sets: Vec<(MetaRef, u32, u32)>,
}

impl Xattrs {
    pub(crate) fn new(tree: &Tree, enc: &mut Encoder) -> Result<Self, Error> {
        let mut known: HashMap<Vec<&(String, Vec<u8>)>, u32> = HashMap::new();
        let mut pairs = MetadataWriter::new();
        let mut sets = Vec::new();
        let mut ids = Vec::with_capacity(tree.nodes.len());
        for node in &tree.nodes {
            let stored: Vec<&(String, Vec<u8>)> = node
                .xattrs
                .iter()
                .filter(|(name, _)| !name.starts_with("system.posix_acl_"))
                .collect();
            if stored.is_empty() {
                ids.push(None);
                continue;
            }
            if let Some(&id) = known.get(&stored) {
                ids.push(Some(id));
                continue;
            }
            let at = pairs.position()?;
            let mut size = 0u32;
            for (name, value) in stored.iter().copied() {
                let Some((prefix, kind)) = PREFIXES.iter().find(|(p, _)| name.starts_with(p))
                else {
                    return Err(Error::Unsupported {
                        format: "squashfs",
                        path: node.path.clone(),
                        reason: format!(
                            "the xattr `{name}` is not in a namespace squashfs stores (user., trusted., security.)"
                        ),
                    });
                };
                let suffix = &name.as_bytes()[prefix.len()..];
                let too_long = || Error::Unsupported {
                    format: "squashfs",
                    path: node.path.clone(),
                    reason: format!("the xattr `{name}` is too long"),
                };
                let name_len = u16::try_from(suffix.len()).map_err(|_| too_long())?;
                let value_len = u32::try_from(value.len()).map_err(|_| too_long())?;
                let mut entry = Vec::with_capacity(8 + suffix.len() + value.len());
                entry.extend_from_slice(&kind.to_le_bytes());
                entry.extend_from_slice(&name_len.to_le_bytes());
                entry.extend_from_slice(suffix);
                entry.extend_from_slice(&value_len.to_le_bytes());
                entry.extend_from_slice(value);
                pairs.write(enc, &entry)?;
                // What squashfs-tools records: names without their
                // prefix, plus values.
                size = size.saturating_add(u32::from(name_len).saturating_add(value_len));
            }
            let id = sets.len() as u32;
            sets.push((at, stored.len() as u32, size));
            known.insert(stored, id);
            ids.push(Some(id));
        }
        Ok(Self { ids, pairs, sets })
    }

    /// Whether any node has xattrs.
    pub(crate) fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// The table's bytes, to be written at `at`, and the offset of its
    /// id index (the superblock's `xattr_id_table_start`).
    pub(crate) fn finish(self, enc: &mut Encoder, at: u64) -> Result<(Vec<u8>, u64), Error> {
        let (mut out, _) = self.pairs.finish(enc)?;
        let mut entries = Vec::with_capacity(self.sets.len() * 16);
        for (r, count, size) in &self.sets {
            entries.extend_from_slice(&r.packed().to_le_bytes());
            entries.extend_from_slice(&count.to_le_bytes());
            entries.extend_from_slice(&size.to_le_bytes());
        }
        let mut w = MetadataWriter::new();
        w.write(enc, &entries)?;
        let (blocks, starts) = w.finish(enc)?;
        let blocks_at = at + out.len() as u64;
        out.extend_from_slice(&blocks);
        let header_at = at + out.len() as u64;
        out.extend_from_slice(&at.to_le_bytes());
        out.extend_from_slice(&(self.sets.len() as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        for s in starts {
            out.extend_from_slice(&(blocks_at + u64::from(s)).to_le_bytes());
        }
        Ok((out, header_at))
    }
}
