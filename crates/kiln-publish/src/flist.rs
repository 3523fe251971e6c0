//! An flist's blocks, to the store its routes name, before the flist
//! itself is published: a reader that pulls the flist must find every
//! block it names.
//!
//! Stores as rfs knows them: `dir://PATH` (blocks in `PATH/<hex[..2]>/<hex>`,
//! a relative `PATH` from the tree root) gets a copy of each missing block
//! (written beside and renamed, so a reader never sees half a block);
//! `http://` and `https://` get `PUT URL/<hex>` of each block a `HEAD` does
//! not find. A route to the build's own block store is already complete.
//! Other schemes (`zdb://`, `s3://`, rfs's `server://`) are an error that
//! says so: kiln does not speak them, and an flist whose blocks are missing
//! is worse than none.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::error::Error;

/// What went to one route.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BlockUpload {
    /// The route's URL.
    pub route: String,
    /// Blocks the flist names.
    pub blocks: u64,
    /// Blocks sent (or copied).
    pub uploaded: u64,
    /// Blocks the store had.
    pub present: u64,
}

fn flist_error(path: &Path, e: &kiln_formats::Error) -> Error {
    Error::Artifact {
        path: path.to_path_buf(),
        problem: e.to_string(),
    }
}

/// Sends the blocks of the flist at `flist` (read from `local_store`) to
/// each of its routes.
pub fn upload_blocks(
    flist: &Path,
    local_store: &Path,
    tree_root: &Path,
) -> Result<Vec<BlockUpload>, Error> {
    let f = kiln_formats::flist::Flist::open(flist).map_err(|e| flist_error(flist, &e))?;
    let ids = f.block_ids().map_err(|e| flist_error(flist, &e))?;
    let routes = f.routes().map_err(|e| flist_error(flist, &e))?;
    let mut out = Vec::new();
    for route in routes {
        // rfs routes shard by the first byte of the id.
        let ids: Vec<&[u8; 32]> = ids
            .iter()
            .filter(|id| (route.start..=route.end).contains(&id[0]))
            .collect();
        let mut report = BlockUpload {
            route: route.url.clone(),
            blocks: ids.len() as u64,
            ..BlockUpload::default()
        };
        if let Some(dir) = route.url.strip_prefix("dir://") {
            let target = if Path::new(dir).is_absolute() {
                PathBuf::from(dir)
            } else {
                tree_root.join(dir)
            };
            if same_dir(&target, local_store) {
                report.present = report.blocks;
                out.push(report);
                continue;
            }
            for id in ids {
                let from = kiln_formats::flist::block_path(local_store, id);
                let to = kiln_formats::flist::block_path(&target, id);
                if to.exists() {
                    report.present += 1;
                    continue;
                }
                copy_block(&from, &to)?;
                report.uploaded += 1;
            }
        } else if route.url.starts_with("http://") || route.url.starts_with("https://") {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(120)))
                .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
                .build()
                .into();
            let base = route.url.trim_end_matches('/');
            for id in ids {
                let url = format!("{base}/{}", hex::encode(id));
                let connect = |e: ureq::Error| Error::Connect {
                    url: url.clone(),
                    detail: e.to_string(),
                };
                let head = agent.head(&url).call().map_err(connect)?;
                if head.status().as_u16() == 200 {
                    report.present += 1;
                    continue;
                }
                let from = kiln_formats::flist::block_path(local_store, id);
                let bytes = std::fs::read(&from).map_err(|source| Error::Read {
                    path: from.clone(),
                    source,
                })?;
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let r = agent
                        .put(&url)
                        .header("Content-Type", "application/octet-stream")
                        .send(&bytes[..]);
                    let status = match r {
                        Ok(r) => r.status().as_u16(),
                        // 0: no answer, retried like a 5xx.
                        Err(_) if attempt < 3 => 0,
                        Err(e) => return Err(connect(e)),
                    };
                    if (200..300).contains(&status) {
                        break;
                    }
                    if attempt >= 3 || (status != 0 && status < 500 && status != 429) {
                        return Err(Error::Status {
                            method: "PUT".into(),
                            url,
                            status,
                            message: Some("the flist's block store refused a block".into()),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(250 << attempt));
                }
                report.uploaded += 1;
            }
        } else {
            return Err(unsupported(flist, &route.url));
        }
        out.push(report);
    }
    Ok(out)
}

/// Errs when a route of the flist at `flist` names a store kiln cannot
/// upload to; called for every flist before anything is pushed.
pub fn check_routes(flist: &Path) -> Result<(), Error> {
    let f = kiln_formats::flist::Flist::open(flist).map_err(|e| flist_error(flist, &e))?;
    for route in f.routes().map_err(|e| flist_error(flist, &e))? {
        if !["dir://", "http://", "https://"]
            .iter()
            .any(|p| route.url.starts_with(p))
        {
            return Err(unsupported(flist, &route.url));
        }
    }
    Ok(())
}

fn unsupported(flist: &Path, url: &str) -> Error {
    Error::Artifact {
        path: flist.to_path_buf(),
        problem: format!(
            "its blocks go to `{url}`, a store kiln cannot upload to (it speaks dir:// and HTTP PUT); upload them with rfs, or set the flist output's `url` to one of those"
        ),
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn copy_block(from: &Path, to: &Path) -> Result<(), Error> {
    let read = |p: &Path, source| Error::Read {
        path: p.to_path_buf(),
        source,
    };
    let dir = to.parent().expect("a block has a folder");
    std::fs::create_dir_all(dir).map_err(|e| read(dir, e))?;
    let tmp = dir.join(format!(
        ".{}.kiln-tmp-{}",
        to.file_name().and_then(|n| n.to_str()).unwrap_or("block"),
        std::process::id()
    ));
    std::fs::copy(from, &tmp).map_err(|e| read(from, e))?;
    std::fs::rename(&tmp, to).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        read(to, e)
    })
}
