//! `kiln init`: writes the bundled example tree (`examples/basic`).

use crate::cli::InitArgs;
use crate::{Failure, Outcome};

/// The example tree's files: path, content, mode.
const FILES: &[(&str, &str, u32)] = &[
    (
        "kiln.toml",
        include_str!("../../../examples/basic/kiln.toml"),
        0o644,
    ),
    (
        "images/base/image.toml",
        include_str!("../../../examples/basic/images/base/image.toml"),
        0o644,
    ),
    (
        "images/base/setup.sh",
        include_str!("../../../examples/basic/images/base/setup.sh"),
        0o755,
    ),
    (
        "images/base/rootfs/etc/motd",
        include_str!("../../../examples/basic/images/base/rootfs/etc/motd"),
        0o644,
    ),
    (
        "images/app/image.toml",
        include_str!("../../../examples/basic/images/app/image.toml"),
        0o644,
    ),
];

pub fn run(args: &InitArgs) -> Outcome {
    let dir = &args.dir;
    if dir.join("kiln.toml").exists() {
        return Err(Failure::Config(format!(
            "error: `{}` already holds a kiln.toml; kiln init does not overwrite it\n",
            dir.join("kiln.toml").display()
        )));
    }
    for (rel, _, _) in FILES {
        if dir.join(rel).exists() {
            return Err(Failure::Config(format!(
                "error: `{}` exists; kiln init does not overwrite files\n",
                dir.join(rel).display()
            )));
        }
    }
    // kiln.toml last: a tree is only a tree once it is complete.
    let mut order: Vec<&(&str, &str, u32)> = FILES.iter().filter(|f| f.0 != "kiln.toml").collect();
    order.extend(FILES.iter().filter(|f| f.0 == "kiln.toml"));
    for (rel, content, mode) in order {
        kiln_store::write_atomic(&dir.join(rel), content.as_bytes(), *mode).map_err(|e| {
            Failure::Build(format!(
                "error: failed to write `{}`: {e}\n",
                dir.join(rel).display()
            ))
        })?;
    }
    Ok(format!(
        "Wrote an example tree to `{}`: images `base` and `app` over suites bookworm and trixie.\nNext: kiln plan {}\n",
        dir.display(),
        dir.display()
    ))
}
