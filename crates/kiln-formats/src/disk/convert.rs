//! `qcow2` and `vmdk`: the raw disk converted by `qemu-img convert`, the
//! one external tool of the disk formats (what VM platforms read is what
//! QEMU writes, and it writes in order: the same raw disk gives the same
//! bytes). A VMDK's embedded descriptor holds a random content id (CID)
//! and the name of the file written; both are rewritten — the CID
//! derived from the seed, the extent named `disk.vmdk` — in the
//! descriptor's own sectors, so the file stays what `qemu-img check`
//! accepts.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use super::DiskFormat;
use super::layout::derive;
use crate::error::Error;

/// The extent's name in a VMDK's descriptor.
pub(crate) const VMDK_EXTENT: &str = "disk.vmdk";

/// The first line of `qemu-img --version` (`qemu-img version 10.0.2
/// (Debian …)`), or `none`: part of the qcow2 and vmdk identities, since
/// another qemu-img may write other bytes, so an artifact made by one is
/// not reused under another. Asked once per process.
pub(crate) fn qemu_img_version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        Command::new("qemu-img")
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .map(|l| l.trim().to_owned())
            })
            .unwrap_or_else(|| "none".to_owned())
    })
}

/// Converts the raw disk `raw` to `dest` in `format`.
pub(crate) fn qemu_img(
    raw: &Path,
    dest: &Path,
    format: DiskFormat,
    seed: &[u8],
) -> Result<(), Error> {
    let (name, options) = match format {
        DiskFormat::Qcow2 => ("qcow2", "compat=1.1,cluster_size=65536,preallocation=off"),
        DiskFormat::Vmdk => ("vmdk", "subformat=monolithicSparse,adapter_type=lsilogic"),
        DiskFormat::Raw | DiskFormat::Vhd => unreachable!("written natively"),
    };
    let mut cmd = Command::new("qemu-img");
    cmd.args(["convert", "-q", "-f", "raw", "-O", name, "-o", options])
        .arg(raw)
        .arg(dest);
    let tool = format!("qemu-img convert -O {name}");
    let out = cmd.output().map_err(|e| Error::Tool {
        tool: tool.clone(),
        status: e.to_string(),
        output: "install `qemu-utils` (qemu-img) to write qcow2 and vmdk disks".into(),
    })?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        let last: Vec<&str> = text.lines().rev().take(5).collect();
        return Err(Error::Tool {
            tool,
            status: out.status.to_string(),
            output: last.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    if format == DiskFormat::Vmdk {
        let cid = derive(seed, "VMDK CID");
        fix_descriptor(dest, u32::from_le_bytes([cid[0], cid[1], cid[2], cid[3]]))?;
    }
    Ok(())
}

/// Rewrites the embedded descriptor of the sparse VMDK at `path`: `CID`
/// becomes `cid`, the extent's file name [`VMDK_EXTENT`].
fn fix_descriptor(path: &Path, cid: u32) -> Result<(), Error> {
    let bad = |reason: &str| {
        Error::io(
            "rewrite the descriptor of",
            path,
            io::Error::new(io::ErrorKind::InvalidData, reason.to_owned()),
        )
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("open", path, e))?;
    let mut header = [0u8; 512];
    file.read_exact_at(&mut header, 0)
        .map_err(|e| Error::io("read", path, e))?;
    if &header[..4] != b"KDMV" {
        return Err(bad("not a sparse VMDK"));
    }
    let field = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().unwrap_or_default());
    let (offset, sectors) = (field(28), field(36));
    if offset == 0 || sectors == 0 || sectors > 1024 {
        return Err(bad("no embedded descriptor"));
    }
    let mut desc = vec![0u8; (sectors * 512) as usize];
    file.read_exact_at(&mut desc, offset * 512)
        .map_err(|e| Error::io("read", path, e))?;
    let end = desc.iter().position(|&b| b == 0).unwrap_or(desc.len());
    let text = std::str::from_utf8(&desc[..end]).map_err(|_| bad("a descriptor not in UTF-8"))?;
    let mut fixed = String::new();
    for line in text.lines() {
        if line.starts_with("CID=") {
            fixed.push_str(&format!("CID={cid:08x}"));
        } else if let Some((access, _)) = line
            .split_once(" SPARSE \"")
            .filter(|(a, _)| a.starts_with("RW ") || a.starts_with("RDONLY "))
        {
            fixed.push_str(&format!("{access} SPARSE \"{VMDK_EXTENT}\""));
        } else {
            fixed.push_str(line);
        }
        fixed.push('\n');
    }
    if fixed.len() > desc.len() {
        return Err(bad("the descriptor outgrew its sectors"));
    }
    desc.fill(0);
    desc[..fixed.len()].copy_from_slice(fixed.as_bytes());
    file.write_all_at(&desc, offset * 512)
        .map_err(|e| Error::io("write", path, e))
}
