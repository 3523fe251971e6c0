//! Layer keys: what a variant's layer is stored under.
//!
//! The input digest (kiln-plan) covers a variant's configuration and files;
//! the packages it installs come from the archive, which moves on. A layer
//! is therefore stored under BLAKE3 of the input digest, the variant's
//! entry in `kiln.lock` (name, version, architecture and SHA256 of every
//! package) and its parent's layer key. `kiln lock` picking up new versions
//! thus rebuilds exactly the variants whose packages changed, and what is
//! built on them; a build whose lock entry is current needs no network to
//! know it is cached. A `SOURCE_DATE_EPOCH` given to the build is part of
//! the key too: maintainer scripts and `run` scripts date what they write
//! with it.

use kiln_debian::{LockFile, TreeLock};
use kiln_plan::{InputDigest, Plan};
use kiln_store::InputKey;

use crate::debian::{package_job, request_id};

const DOMAIN: &str = "kiln layer key v2";

/// The layer key of a variant.
pub fn layer_key(
    digest: &InputDigest,
    packages: Option<&LockFile>,
    parent: Option<&InputKey>,
    epoch: Option<i64>,
) -> InputKey {
    let mut h = blake3::Hasher::new();
    let mut field = |b: &[u8]| {
        h.update(&(b.len() as u64).to_le_bytes());
        h.update(b);
    };
    field(DOMAIN.as_bytes());
    field(&digest.0);
    match packages {
        Some(lock) => {
            field(b"packages");
            for p in &lock.packages {
                for part in [&p.name, &p.version, &p.architecture, &p.sha256] {
                    field(part.as_bytes());
                }
            }
        }
        None => field(b"no packages"),
    }
    field(parent.map_or(&[][..], |p| &p.0[..]));
    match epoch {
        Some(secs) => field(&secs.to_le_bytes()),
        None => field(b"epoch of the packages"),
    }
    InputKey(*h.finalize().as_bytes())
}

/// The lock entry of variant `id` if it is current: present and resolved
/// for the variant's present request. `Ok(None)`: the variant installs no
/// packages. `Err(())`: it needs resolving.
pub fn current_entry<'l>(
    plan: &Plan,
    id: usize,
    lock: &'l TreeLock,
) -> Result<Option<&'l LockFile>, ()> {
    let Some(job) = package_job(plan, id) else {
        return Ok(None);
    };
    let name = &plan.variants[id].name;
    match (lock.variants.get(name), lock.requests.get(name)) {
        (Some(entry), Some(request)) if *request == request_id(&job) => Ok(Some(entry)),
        _ => Err(()),
    }
}

/// Every variant's layer key as far as the lock tells without resolving:
/// `None` for a variant (and its descendants) whose packages need resolving.
pub fn known_keys(plan: &Plan, lock: &TreeLock, epoch: Option<i64>) -> Vec<Option<InputKey>> {
    let mut keys: Vec<Option<InputKey>> = Vec::with_capacity(plan.variants.len());
    for (id, v) in plan.variants.iter().enumerate() {
        let parent = match v.parent {
            Some(p) => match keys[p] {
                Some(k) => Some(k),
                None => {
                    keys.push(None);
                    continue;
                }
            },
            None => None,
        };
        keys.push(
            current_entry(plan, id, lock)
                .ok()
                .map(|entry| layer_key(&v.digest, entry, parent.as_ref(), epoch)),
        );
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_debian::LockedPackage;

    fn lock(version: &str) -> LockFile {
        LockFile {
            packages: vec![LockedPackage {
                name: "libc6".into(),
                version: version.into(),
                architecture: "amd64".into(),
                sha256: format!("{version:0>64}"),
                size: 1,
                filename: "pool/x.deb".into(),
                suite: "bookworm".into(),
            }],
        }
    }

    #[test]
    fn new_package_versions_change_the_key_and_what_builds_on_it() {
        let d = InputDigest([7; 32]);
        let child = InputDigest([8; 32]);
        let old = layer_key(&d, Some(&lock("1")), None, None);
        let new = layer_key(&d, Some(&lock("2")), None, None);
        assert_eq!(
            old,
            layer_key(&d, Some(&lock("1")), None, None),
            "deterministic"
        );
        assert_ne!(old, new, "a new version is a new layer");
        assert_ne!(
            layer_key(&child, None, Some(&old), None),
            layer_key(&child, None, Some(&new), None),
            "children follow"
        );
        assert_ne!(
            layer_key(&d, None, None, None),
            old,
            "no packages differs from some"
        );
        assert_ne!(
            layer_key(&d, Some(&lock("1")), None, Some(1_700_000_000)),
            old,
            "a given SOURCE_DATE_EPOCH is a new layer"
        );
    }
}
