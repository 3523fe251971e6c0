//! Provisioning: the steps that turn a root with its packages into the
//! image a variant describes; see [`provision`].

mod accounts;
mod cleanup;
mod commands;
mod files;

use std::path::Path;
use std::time::{Duration, Instant};

use kiln_config::{ImageSettings, TreeInputs};

use crate::error::Error;
use crate::root::RootDir;

/// The line logged when a step starts.
pub const STEP_STARTED: &str = "started";
/// The line logged when a step ends well.
pub const STEP_FINISHED: &str = "finished";
/// The line logged when a step fails (the error is returned).
pub const STEP_FAILED: &str = "failed";

/// What a variant is, for the `KILN_*` variables of `run` scripts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProvisionContext {
    /// The image's name (`KILN_IMAGE`).
    pub image: String,
    /// The variant's name (`KILN_VARIANT`).
    pub variant: String,
    /// `(dimension, key)` pairs: `KILN_<DIMENSION>=<key>`, the dimension
    /// upper-cased with `-` as `_`.
    pub keys: Vec<(String, String)>,
    /// The requested package names (`KILN_PACKAGES`, space-separated).
    pub packages: Vec<String>,
    /// The build's `SOURCE_DATE_EPOCH`, given to every command run in the
    /// root (`useradd` dates `/etc/shadow` with it).
    pub source_date_epoch: Option<i64>,
    /// When set, no further step starts and a running `run` script is
    /// killed with its PID namespace ([`Error::Cancelled`]).
    pub cancel: kiln_dpkg::sandbox::CancelFlag,
}

/// What [`provision`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProvisionReport {
    /// Each step that ran, with its wall time, in order.
    pub timings: Vec<(String, Duration)>,
}

/// Provisions the root `root` (typically an [`crate::Overlay`] mount
/// over the parent's layers) as `settings` says.
///
/// Installing and removing packages (`packages`, `remove`) is not done
/// here: the CLI does it with kiln-dpkg before calling `provision`. The
/// steps, in this order, each skipped when it has nothing to do (`cleanup`
/// always runs):
///
/// 0. `netboot` (with `netboot = true`): kiln's boot script, its DHCP
///    hook and the initramfs-tools hook and setting it needs
///    ([`kiln_config::netboot::FILES`]), before `rootfs`, which may
///    replace them.
/// 1. `rootfs`: the `rootfs` folder copied into the root. Files and
///    symbolic links (kept as links) replace what is there, owned
///    root:root with their modes; missing directories are created with
///    their mode, existing ones (or symlinks to directories, as merged
///    `/usr`'s `lib`) are kept as they are; a directory in the way of a
///    file is an error.
/// 2. `files`: each file written with its mode; `owner` and `group` are
///    names (or numbers) looked up in the root's own `/etc/passwd` and
///    `/etc/group`, never the host's.
/// 3. `hostname`: `/etc/hostname`, and `127.0.1.1<TAB><hostname>` in
///    `/etc/hosts` (after the `127.0.0.1` line, replacing any other
///    `127.0.1.1` line; a Debian default file when there is none).
/// 4. `users`: missing groups (primary and supplementary; system groups
///    for a system account) made with the root's `groupadd`; new accounts
///    with `useradd --create-home` (a group of their own name unless
///    `group` is set), existing ones changed with `usermod` (uid, group,
///    shell, home path; supplementary groups added); the password hash
///    written into the root's `/etc/shadow` as `usermod --password` would
///    (never on a command line, never logged); `ssh_authorized_keys` written to `~/.ssh/authorized_keys`
///    (0600, in a 0700 `.ssh`, both the user's), replacing that file.
/// 5. `services`: `systemctl enable`, then `systemctl disable`, per unit,
///    the root's own `systemctl` editing the unit links offline
///    (`SYSTEMD_OFFLINE=1`); [`Error::NoSystemd`] if the root has none.
/// 6. `run:<name>` per script: the script (a file of the image folder, or
///    the inline text) is written to the root's `/tmp`, run with
///    `/bin/sh` and removed, whatever the outcome, while
///    `/usr/sbin/policy-rc.d` answers 101 (a file already there is put
///    back afterwards). The environment is exactly `PATH`, `HOME=/root`,
///    `LC_ALL=C.UTF-8`, `DEBIAN_FRONTEND=noninteractive`,
///    `SOURCE_DATE_EPOCH` (when the context has one), then
///    `settings.env` (which may override those, not `KILN_*`), then
///    `KILN_IMAGE`, `KILN_VARIANT`, `KILN_<DIMENSION>` per key (upper
///    case, `-` as `_`) and `KILN_PACKAGES` (space-separated). A non-zero
///    exit is [`Error::Script`] with the code and the last 20 lines; the
///    following scripts do not run.
/// 7. `cleanup`, as `settings.cleanup` says (deleting a file of a lower
///    layer leaves a whiteout in the upper directory: intended; files
///    already as wanted are not touched, so not copied up):
///    - `apt`: `/var/lib/apt/lists/*` but `lock` and `partial`,
///      `/var/cache/apt/archives/*.deb`;
///    - `docs`: `/usr/share/doc/*` except each package's `copyright` file
///      (licences ask for it to ship with the binaries; they are small)
///      and symbolic links (doc folders pointing at another package's);
///    - `man`: `/usr/share/man/*`;
///    - `locales`: the folders of `/usr/share/locale` but those of
///      `keep_locales` (`de_DE.UTF-8` keeps `de_DE.UTF-8`, `de_DE` and
///      `de`); files (`locale.alias`) and `/usr/lib/locale` stay;
///    - `tmp`: `/tmp/*` and `/var/tmp/*`;
///    - `logs`: apt's and dpkg's logs (`/var/log/apt/*`, `dpkg.log`,
///      `alternatives.log`, `bootstrap.log`) removed, every other file
///      below `/var/log` truncated to zero bytes (`wtmp`, `lastlog`, …
///      keep their permissions);
///    - `machine_id`: `/etc/machine-id` empty (present, zero bytes) and
///      `/var/lib/dbus/machine-id` removed;
///    - `ssh_host_keys`: `/etc/ssh/ssh_host_*_key` and `.pub` removed (an
///      image shared by many machines must not carry one machine's keys,
///      and fresh keys make every build differ); an image with sshd and
///      systemd gets `/etc/systemd/system/kiln-ssh-host-keys.service`,
///      required by `ssh.service`, which runs `ssh-keygen -A` at first
///      boot;
///    - always: apt's binary caches `/var/cache/apt/*.bin`,
///      `/usr/sbin/policy-rc.d`, `/var/cache/ldconfig/aux-cache`
///      (inode numbers and change times of one build), and the random
///      seeds `/var/lib/systemd/random-seed`, `/var/lib/urandom/random-seed`
///      removed.
///
/// Each log line goes to `log(step, line)`: [`STEP_STARTED`] first,
/// [`STEP_FINISHED`] (or [`STEP_FAILED`]) last, the output of commands
/// (stdout and stderr, in order) and short summaries in between.
///
/// Paths in `settings` are read through `inputs`: relative to the image
/// folder, or to the tree root when they were written in the tree's
/// `kiln.toml`; opened beneath the tree root (a symbolic link leading out
/// of the tree is never followed) and checked against the digest the
/// loader recorded, so a file edited since is [`Error::Changed`], never
/// built under the old input digest. `rootfs` is copied as the loader
/// listed it (its links as links, from the recorded targets).
///
/// Every write stays inside the root (parents resolved with
/// `openat2(RESOLVE_IN_ROOT)`, final components never followed).
/// Commands run in the root in their own mount and PID namespaces with
/// `/proc`, `/sys` and `/dev` mounted only for them. Needs root, and a
/// private mount namespace when `root` is an overlay mount (see
/// [`crate::private_mount_namespace`]).
pub fn provision(
    root: &Path,
    inputs: &TreeInputs,
    settings: &ImageSettings,
    ctx: &ProvisionContext,
    log: &(dyn Fn(&str, &str) + Sync),
) -> Result<ProvisionReport, Error> {
    let root = RootDir::open(root)?;
    let epoch = ctx.source_date_epoch.map(|e| e.to_string());
    let mut base_env: Vec<(&str, &str)> = BASE_ENV.to_vec();
    if let Some(epoch) = &epoch {
        base_env.push(("SOURCE_DATE_EPOCH", epoch));
    }
    let base_env = base_env.as_slice();
    let mut report = ProvisionReport::default();
    let mut step = |name: &str, body: &mut dyn FnMut(&Log<'_>) -> Result<(), Error>| {
        if ctx.cancel.is_set() {
            return Err(Error::Cancelled {
                step: name.to_owned(),
            });
        }
        let line = |text: &str| log(name, text);
        line(STEP_STARTED);
        let started = Instant::now();
        match body(&line) {
            Ok(()) => {
                report.timings.push((name.to_owned(), started.elapsed()));
                line(STEP_FINISHED);
                Ok(())
            }
            Err(e) => {
                line(STEP_FAILED);
                Err(e)
            }
        }
    };

    if settings.netboot {
        step("netboot", &mut |log| {
            for (path, mode, text) in kiln_config::netboot::FILES {
                if let Some((dir, _)) = path.rsplit_once('/') {
                    root.create_dirs(dir, 0o755)?;
                }
                root.write(path, *mode, (0, 0), text.as_bytes())?;
                log(&format!("/{path} ({mode:04o})"));
            }
            Ok(())
        })?;
    }
    if let Some(rootfs) = &settings.rootfs {
        step("rootfs", &mut |log| {
            files::copy_tree(&root, inputs, rootfs, log)
        })?;
    }
    if !settings.files.is_empty() {
        step("files", &mut |log| {
            files::write_files(&root, &settings.files, inputs, log)
        })?;
    }
    if let Some(hostname) = &settings.hostname {
        step("hostname", &mut |_| files::hostname(&root, hostname))?;
    }
    if !settings.users.is_empty() {
        step("users", &mut |log| {
            accounts::users(&root, &settings.users, base_env, ctx.source_date_epoch, log)
        })?;
    }
    let services = &settings.services;
    if !services.enable.is_empty() || !services.disable.is_empty() {
        step("services", &mut |log| {
            commands::services(&root, services, base_env, log)
        })?;
    }
    if !settings.run.is_empty() {
        let policy = commands::PolicyRcD::install(&root)?;
        let mut result = Ok(());
        for (index, run) in settings.run.iter().enumerate() {
            let name = format!("run:{}", run.name);
            result = step(&name, &mut |log| {
                let script = commands::Script {
                    index,
                    step: &name,
                    run,
                    base_env,
                };
                commands::run_script(&root, &script, settings, ctx, inputs, log)
            });
            if result.is_err() {
                break;
            }
        }
        let restored = policy.remove(&root);
        result?;
        restored?;
    }
    step("cleanup", &mut |log| {
        cleanup::cleanup(&root, &settings.cleanup, log)
    })?;
    Ok(report)
}

/// Where a step's lines go: one line at a time, without a newline.
pub(crate) type Log<'a> = dyn Fn(&str) + 'a;

/// The environment of every command kiln runs in a root (`run` scripts get
/// more); nothing is taken from the host.
pub(crate) const BASE_ENV: &[(&str, &str)] = &[
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("HOME", "/root"),
    ("LC_ALL", "C.UTF-8"),
    ("DEBIAN_FRONTEND", "noninteractive"),
];

/// Runs `argv` in the root's sandbox as `options` say, logging its output.
pub(crate) fn run_in_root(
    root: &RootDir,
    argv: &[&str],
    options: &kiln_dpkg::sandbox::RunOptions<'_>,
    log: &Log<'_>,
) -> Result<(), Error> {
    crate::namespace::run(root.path(), argv, options, &mut |line| log(line))
}
