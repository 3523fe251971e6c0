//! Unprivileged builds: an ordinary user's `kiln build` runs again inside a
//! user namespace in which it is root over the user's subordinate ids
//! (`/etc/subuid`, `/etc/subgid`), through util-linux's `unshare
//! --map-root-user --map-auto` (which uses the setuid `newuidmap` and
//! `newgidmap` of the `uidmap` package). Inside, packages can own any of
//! 65,536 ids, chroot and mounts work in the namespace, and overlay mounts
//! use `userxattr`. Device nodes cannot be made there; an image's `/dev`
//! then holds only links and folders.
//!
//! Files the build gives to root belong to the user outside; files it gives
//! to other ids belong to the user's subordinate ids, so the store and
//! `OUT` are best handled through kiln (which enters the namespace again).

use std::io::Write;
use std::process::{Command, ExitCode};

/// Set in the re-executed process.
const MARKER: &str = "KILN_IN_USER_NAMESPACE";

/// For a non-root user outside a namespace: runs this command again in one
/// and returns its exit code. `None`: go on here.
pub fn reexec_if_unprivileged() -> Option<ExitCode> {
    if rustix::process::geteuid().is_root() || std::env::var_os(MARKER).is_some() {
        return None;
    }
    let fail = |text: String| {
        let _ = writeln!(std::io::stderr().lock(), "{text}");
        Some(ExitCode::from(2))
    };
    let uid = rustix::process::getuid().as_raw();
    let user = std::env::var("USER").unwrap_or_default();
    if !has_range("/etc/subuid", &user, uid) || !has_range("/etc/subgid", &user, uid) {
        return fail(format!(
            "error: kiln build as an ordinary user needs subordinate ids for `{user}` (uid {uid}) in /etc/subuid and /etc/subgid\n  help: as root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}; or run kiln as root"
        ));
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return fail(format!("error: failed to find the kiln executable: {e}")),
    };
    let status = Command::new("unshare")
        .args([
            "--map-root-user",
            "--map-auto",
            "--mount",
            "--propagation",
            "private",
            "--",
        ])
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(MARKER, "1")
        .status();
    match status {
        Ok(s) => Some(ExitCode::from(
            u8::try_from(s.code().unwrap_or(1)).unwrap_or(1),
        )),
        Err(e) => fail(format!(
            "error: failed to run `unshare` for an unprivileged build: {e}\n  help: install util-linux and uidmap, or run kiln as root"
        )),
    }
}

/// Whether `file` (`/etc/subuid` format) gives `user` or `uid` a range.
fn has_range(file: &str, user: &str, uid: u32) -> bool {
    std::fs::read_to_string(file).is_ok_and(|text| {
        text.lines().any(|l| {
            let owner = l.split(':').next().unwrap_or("");
            (!user.is_empty() && owner == user) || owner == uid.to_string()
        })
    })
}
