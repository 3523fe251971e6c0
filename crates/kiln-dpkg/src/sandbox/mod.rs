//! The sandbox every command kiln runs inside an image goes through:
//! maintainer scripts, `dpkg --configure`, `useradd`, `run` steps,
//! `update-initramfs`, `grub-mkimage`.
//!
//! The child is set up in `pre_exec`, between `fork` and `exec`
//! (`child.rs`; what it may keep is `policy.rs`):
//!
//! 1. `unshare` new mount, PID, UTS, IPC and (unless
//!    [`RunOptions::network`]) network namespaces; every mount is made
//!    private, so nothing propagates to the host. A step with the host's
//!    network gets the host's `/etc/resolv.conf`, bound read-only over the
//!    image's (or over an empty file made for the step and removed after).
//! 2. `fork`: the first process stays in the host's PID namespace and only
//!    passes the exit status on. Its child is PID 1 of the new PID
//!    namespace, the sandbox's *init*. It mounts a small tmpfs, the **outer
//!    root**, binds the image at `/image` in it, mounts a fresh `/proc`
//!    (kernel memory, keys, timers and `sysrq-trigger` behind `/dev/null`, `/proc/sys`
//!    and hardware folders read-only), a read-only `/sys` and a private
//!    `/dev` (a tmpfs with `null`, `zero`, `full`, `random`, `urandom` and
//!    `tty` bound from the host, a new `devpts` instance, `/dev/shm`), brings
//!    up `lo`, then `pivot_root`s into the outer root, detaches the host's
//!    tree and makes the outer root read-only.
//! 3. init forks the command, drops every capability, sets `no_new_privs`
//!    and installs the seccomp filters, then reaps orphans until the
//!    command exits. The command `chroot`s into `/image` (so `/proc/1/root`,
//!    init's root, is the outer root and not the command's `/`: `ischroot`
//!    answers "chroot" and libc6's postinst does not restart init), drops
//!    all capabilities but [`policy::KEPT`], sets `no_new_privs`, installs
//!    the filters and execs.
//! 4. Each level has `PR_SET_PDEATHSIG(SIGKILL)`: if kiln dies (Ctrl-C,
//!    SIGKILL), the chain dies with it, the kernel kills everything left in
//!    the PID namespace when its PID 1 dies, and the namespaces with their
//!    mounts go away with their last process. No unmount step is ever
//!    needed, so none can be missed.
//!
//! Output (stdout and stderr share one pipe, so lines keep their order)
//! is streamed line by line to the caller.
#![allow(unsafe_code)]

mod child;
mod policy;

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::error::Error;

/// How many lines of output an error keeps.
pub(crate) const TAIL: usize = 20;

/// The environment of every command run in the root unless
/// [`RunOptions::exact_env`]; nothing else is taken from the host.
pub const ENVIRONMENT: &[(&str, &str)] = &[
    ("DEBIAN_FRONTEND", "noninteractive"),
    ("DEBCONF_NONINTERACTIVE_SEEN", "true"),
    ("LC_ALL", "C.UTF-8"),
    ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
];

/// "Stop now", shared with whoever cancels (a build's cancel token): a
/// command running in the sandbox is killed, with everything in its PID
/// namespace, within [`CANCEL_POLL`] of the flag being set.
#[derive(Clone, Debug, Default)]
pub struct CancelFlag(Option<Arc<AtomicBool>>);

/// How often a running command's cancel flag is looked at.
pub const CANCEL_POLL: Duration = Duration::from_millis(50);

impl CancelFlag {
    /// A flag that is never set.
    #[must_use]
    pub fn none() -> Self {
        Self(None)
    }

    /// Follows `flag`.
    #[must_use]
    pub fn new(flag: Arc<AtomicBool>) -> Self {
        Self(Some(flag))
    }

    /// Whether it is set.
    #[must_use]
    pub fn is_set(&self) -> bool {
        self.0.as_ref().is_some_and(|f| f.load(Ordering::SeqCst))
    }

    /// `Err(Cancelled)` naming `step` when it is set.
    pub fn check(&self, step: &str) -> Result<(), Error> {
        if self.is_set() {
            Err(Error::Cancelled {
                step: step.to_owned(),
            })
        } else {
            Ok(())
        }
    }
}

impl PartialEq for CancelFlag {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for CancelFlag {}

/// How one command runs in the sandbox.
#[derive(Clone, Copy, Debug)]
pub struct RunOptions<'a> {
    /// Its name in errors: `dpkg --configure -a`, `run:setup`.
    pub step: &'a str,
    /// Variables set for it, after [`ENVIRONMENT`] (or alone, with
    /// `exact_env`).
    pub env: &'a [(&'a str, &'a str)],
    /// Whether `env` is the whole environment.
    pub exact_env: bool,
    /// Its working folder inside the root.
    pub cwd: &'a str,
    /// Whether it shares the host's network namespace instead of having
    /// only a loopback interface.
    pub network: bool,
    /// When set, the command is killed and the run ends with
    /// [`Error::Cancelled`].
    pub cancel: Option<&'a CancelFlag>,
}

impl<'a> RunOptions<'a> {
    /// A step with [`ENVIRONMENT`], in `/`, without network.
    #[must_use]
    pub fn new(step: &'a str) -> Self {
        Self {
            step,
            env: &[],
            exact_env: false,
            cwd: "/",
            network: false,
            cancel: None,
        }
    }

    /// Killed when `cancel` is set.
    #[must_use]
    pub fn cancel(self, cancel: &'a CancelFlag) -> Self {
        Self {
            cancel: Some(cancel),
            ..self
        }
    }

    /// Adds `env` after [`ENVIRONMENT`].
    #[must_use]
    pub fn env(self, env: &'a [(&'a str, &'a str)]) -> Self {
        Self { env, ..self }
    }

    /// Gives the command exactly `env` and nothing else.
    #[must_use]
    pub fn exact_env(self, env: &'a [(&'a str, &'a str)]) -> Self {
        Self {
            env,
            exact_env: true,
            ..self
        }
    }

    /// Shares the host's network (`network = true` on a `run` step).
    #[must_use]
    pub fn network(self, network: bool) -> Self {
        Self { network, ..self }
    }

    /// Runs in `cwd` (a path inside the root).
    #[must_use]
    pub fn cwd(self, cwd: &'a str) -> Self {
        Self { cwd, ..self }
    }
}

/// Runs `argv` (an absolute path inside the root, then arguments) in
/// `root` as `options` say, passing each output line to `on_line`. Fails
/// with the exit status and the last lines of output.
pub fn run(
    root: &Path,
    argv: &[&str],
    options: &RunOptions<'_>,
    on_line: &mut dyn FnMut(&str),
) -> Result<(), Error> {
    let step = options.step;
    if let Some(cancel) = options.cancel {
        cancel.check(step)?;
    }
    let spawn_error = |source| Error::Spawn {
        step: step.to_owned(),
        root: root.to_owned(),
        source,
    };
    let mut env: Vec<(&str, &str)> = if options.exact_env {
        Vec::new()
    } else {
        ENVIRONMENT.to_vec()
    };
    env.extend_from_slice(options.env);
    prepare_mount_points(root).map_err(spawn_error)?;
    let resolv_conf = if options.network {
        ResolvConf::prepare(root).map_err(spawn_error)?
    } else {
        ResolvConf::None
    };
    // Removed on every way out, errors included.
    let placeholder = (resolv_conf == ResolvConf::Placeholder)
        .then(|| Placeholder(Some(root.join("etc/resolv.conf"))));
    let plan = child::Plan::new(
        root,
        options.cwd,
        options.network,
        resolv_conf != ResolvConf::None,
    )
    .map_err(spawn_error)?;
    let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| spawn_error(e.into()))?;
    let writer2 = writer.try_clone().map_err(spawn_error)?;
    let mut command = Command::new(argv[0]);
    command
        .args(&argv[1..])
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(writer2));
    // SAFETY: the closure runs in the forked child before `exec`. It only
    // makes system calls (see `child.rs`), which are async-signal-safe,
    // and uses memory allocated before the fork; it never returns into
    // the intermediate processes' Rust code: they leave through `_exit`.
    unsafe {
        command.pre_exec(move || child::enter(&plan));
    }
    let mut child = command.spawn().map_err(spawn_error)?;
    // Drop the parent's copies of the pipe's write end (moved into
    // `command`), so reading ends when the child exits.
    drop(command);

    // The watcher kills the child (its PID namespace dies with it: every
    // level below has PR_SET_PDEATHSIG) when the flag is set. The child is
    // not reaped before the watcher has stopped, so its PID stays ours.
    let finished = AtomicBool::new(false);
    let killed = AtomicBool::new(false);
    let pid = child.id();
    std::thread::scope(|scope| {
        if let Some(cancel) = options.cancel.filter(|c| c.0.is_some()) {
            scope.spawn(|| {
                while !finished.load(Ordering::SeqCst) {
                    if cancel.is_set() {
                        if let Some(pid) = i32::try_from(pid)
                            .ok()
                            .and_then(rustix::process::Pid::from_raw)
                        {
                            let _ =
                                rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                        }
                        killed.store(true, Ordering::SeqCst);
                        return;
                    }
                    std::thread::sleep(CANCEL_POLL);
                }
            });
        }
        let result = read_lines(reader, on_line);
        finished.store(true, Ordering::SeqCst);
        result
    })
    .map_err(spawn_error)
    .and_then(|tail| {
        let status = child.wait().map_err(spawn_error)?;
        if killed.load(Ordering::SeqCst) {
            return Err(Error::Cancelled {
                step: step.to_owned(),
            });
        }
        if let Some(placeholder) = placeholder {
            placeholder.remove().map_err(spawn_error)?;
        }
        if status.success() {
            Ok(())
        } else {
            let code = {
                use std::os::unix::process::ExitStatusExt;
                status
                    .code()
                    .or_else(|| status.signal().map(|s| 128 + s))
                    .unwrap_or(-1)
            };
            // 128 + SIGSYS: the seccomp filter killed it.
            let status = if code == 128 + 31 {
                format!(
                    "{status} (SIGSYS: the sandbox's seccomp filter refused a system call; the filter allows only the host's native ABI, so a root of another architecture, such as i386 on amd64, cannot run its scripts)"
                )
            } else {
                status.to_string()
            };
            Err(Error::Script {
                step: step.to_owned(),
                root: root.to_owned(),
                status,
                code,
                output: tail.into(),
            })
        }
    })
}

/// Reads the command's output line by line until it closes, passing each
/// to `on_line`; the last [`TAIL`] lines.
fn read_lines(
    reader: rustix::fd::OwnedFd,
    on_line: &mut dyn FnMut(&str),
) -> io::Result<VecDeque<String>> {
    let mut tail = VecDeque::with_capacity(TAIL);
    let mut lines = BufReader::new(std::fs::File::from(reader));
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match lines.read_until(b'\n', &mut buffer) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let line = String::from_utf8_lossy(&buffer);
        let line = line.trim_end_matches(['\n', '\r']);
        on_line(line);
        if tail.len() == TAIL {
            tail.pop_front();
        }
        tail.push_back(line.to_owned());
    }
    Ok(tail)
}

/// The empty `/etc/resolv.conf` made for a step with the host's network;
/// removed when dropped (errors ignored) or by [`Placeholder::remove`].
struct Placeholder(Option<std::path::PathBuf>);

impl Placeholder {
    fn remove(mut self) -> io::Result<()> {
        self.0.take().map_or(Ok(()), std::fs::remove_file)
    }
}

impl Drop for Placeholder {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// What a step with the host's network gets as `/etc/resolv.conf`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ResolvConf {
    /// The image's own: it has none and no `/etc`, or it is a symbolic
    /// link (to systemd-resolved's stub, say), which a bind would follow
    /// on the host.
    None,
    /// The host's, bound over the image's regular file.
    OverImage,
    /// The host's, bound over an empty file made for the step and removed
    /// after it.
    Placeholder,
}

impl ResolvConf {
    fn prepare(root: &Path) -> io::Result<Self> {
        if !Path::new("/etc/resolv.conf").exists() {
            return Ok(Self::None);
        }
        let path = root.join("etc/resolv.conf");
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(Self::OverImage),
            Ok(_) => Ok(Self::None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match std::fs::symlink_metadata(root.join("etc")) {
                    Ok(meta) if meta.is_dir() => {
                        std::fs::File::create_new(&path)?;
                        Ok(Self::Placeholder)
                    }
                    _ => Ok(Self::None),
                }
            }
            Err(e) => Err(e),
        }
    }
}

/// Makes sure `proc`, `sys` and `dev` are real directories of the root
/// (not symlinks, which `mount` would follow).
fn prepare_mount_points(root: &Path) -> io::Result<()> {
    for name in ["proc", "sys", "dev"] {
        let path = root.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("`/{name}` in the root is not a directory"),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir(&path)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
