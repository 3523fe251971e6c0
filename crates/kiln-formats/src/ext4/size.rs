//! How big an image is. `auto`: the smallest whole number of MiB that
//! holds everything the tree uses (content, metadata and journal) plus
//! the headroom — by default a quarter of that, at least 64 MiB — found
//! by planning, growing and planning again until it fits. A fixed size:
//! that geometry or [`Error::TooLarge`] naming both sizes.

use super::layout::{BLOCK_SIZE, Geometry, MIN_BLOCKS, Misfit, inode_ratio, journal_blocks};
use super::plan::{Plan, Prepared};
use crate::error::Error;

/// The least free space `auto` leaves.
pub(crate) const MIN_HEADROOM: u64 = 64 << 20;
/// Blocks per MiB.
const MIB_BLOCKS: u64 = (1 << 20) / BLOCK_SIZE;

fn mib(blocks: u64) -> u64 {
    blocks.next_multiple_of(MIB_BLOCKS)
}

/// Inodes an image of `blocks` blocks gets: as many as mke2fs gives it,
/// and at least those in use (plus a quarter for `spare`).
fn inodes(blocks: u64, used: u32, spare: bool) -> u64 {
    let used = u64::from(used);
    let used = if spare { used + used / 4 } else { used };
    (blocks * BLOCK_SIZE / inode_ratio(blocks)).max(used)
}

/// The plan of an image of exactly `size` bytes.
pub(crate) fn fixed(prep: &Prepared<'_>, size: u64) -> Result<Plan, Error> {
    let mut blocks = size / BLOCK_SIZE;
    loop {
        match Geometry::new(blocks, inodes(blocks, prep.last_ino, false)) {
            Ok(geo) => {
                if geo.inodes() >= u64::from(prep.last_ino)
                    && let Some(plan) = Plan::new(prep, geo)
                {
                    return Ok(plan);
                }
                break;
            }
            // As mke2fs: a last group too small for its metadata goes.
            Err(Misfit::LastGroup { rem, .. }) => blocks -= rem,
            Err(_) => break,
        }
    }
    let (_, need) = auto(prep, Some(0), false)?;
    Err(Error::TooLarge {
        format: "ext4",
        reason: format!(
            "the root needs an image of at least {need} bytes ({} MiB), more than the {size} bytes asked for",
            need >> 20
        ),
    })
}

/// The plan of the smallest image with `headroom` bytes free (`None`:
/// a quarter of what is used, at least [`MIN_HEADROOM`]), and its size.
/// `spare` gives it a quarter more inodes than the tree uses.
pub(crate) fn auto(
    prep: &Prepared<'_>,
    headroom: Option<u64>,
    spare: bool,
) -> Result<(Plan, u64), Error> {
    let room = |used: u64| headroom.unwrap_or_else(|| (used * BLOCK_SIZE / 4).max(MIN_HEADROOM));
    // A lower bound: content and journal, no group metadata.
    let content = prep.content_blocks();
    let mut blocks = mib((content
        + u64::from(journal_blocks(content))
        + room(content).div_ceil(BLOCK_SIZE))
    .max(MIN_BLOCKS));
    let want = inodes(0, prep.last_ino, spare);
    loop {
        let grown = mib(blocks + blocks / 16 + 1);
        let geo = match Geometry::new(blocks, inodes(blocks, prep.last_ino, spare)) {
            Ok(geo) => geo,
            Err(Misfit::LastGroup { short, .. }) => {
                blocks = mib(blocks + short);
                continue;
            }
            Err(Misfit::TooSmall) => {
                blocks = grown;
                continue;
            }
            Err(Misfit::TooBig) => {
                return Err(Error::TooLarge {
                    format: "ext4",
                    reason: format!(
                        "the root needs more than the {} bytes an image can have here",
                        blocks * BLOCK_SIZE
                    ),
                });
            }
        };
        if geo.inodes() < want {
            blocks = grown;
            continue;
        }
        let Some(plan) = Plan::new(prep, geo) else {
            blocks = grown;
            continue;
        };
        let used = plan.used();
        let need = mib((used * BLOCK_SIZE + room(used)).div_ceil(BLOCK_SIZE));
        if need <= blocks {
            return Ok((plan, blocks * BLOCK_SIZE));
        }
        blocks = need;
    }
}
