//! Running a command inside the target root with `/proc`, `/sys` and
//! `/dev` mounted, such that the mounts can never outlive it.
//!
//! The child is set up in `pre_exec`, between `fork` and `exec`:
//!
//! 1. `unshare(CLONE_NEWNS | CLONE_NEWPID)` and make `/` recursively
//!    private: the mounts below live only in the child's mount namespace
//!    and nothing propagates to the host.
//! 2. `fork`: the first process (in the host's PID namespace) only waits
//!    and passes the exit status on; its child is PID 1 of a new PID
//!    namespace, mounts `proc`, `sysfs` and a recursive bind of `/dev`
//!    under the root, then forks the command and reaps orphans until the
//!    command exits. Only the command `chroot`s: PID 1 keeps the host's
//!    root, so `/proc/1/root` is not the command's `/` and `ischroot`
//!    (which maintainer scripts ask, libc6's among them before a `sleep
//!    1`) answers that this is a chroot, as under debootstrap.
//! 3. Each level has `PR_SET_PDEATHSIG(SIGKILL)`: if kiln dies (Ctrl-C,
//!    SIGKILL), the chain dies with it, the kernel kills everything left in
//!    the PID namespace when its PID 1 dies, and the mount namespace with
//!    its mounts goes away with its last process. No unmount step is ever
//!    needed, so none can be missed.
//!
//! Output (stdout and stderr share one pipe, so lines keep their order)
//! is streamed line by line to the caller.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::ffi::CString;
use std::io::{self, BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::Error;

/// How many lines of output an error keeps.
pub(crate) const TAIL: usize = 20;

/// The environment of every command run in the root; nothing else is
/// taken from the host.
pub const ENVIRONMENT: &[(&str, &str)] = &[
    ("DEBIAN_FRONTEND", "noninteractive"),
    ("DEBCONF_NONINTERACTIVE_SEEN", "true"),
    ("LC_ALL", "C.UTF-8"),
    ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
];

/// The C strings the child needs, made before `fork` (allocation is not
/// allowed after it).
struct Paths {
    root: CString,
    proc: CString,
    sys: CString,
    dev: CString,
}

impl Paths {
    fn new(root: &Path) -> io::Result<Self> {
        let c = |p: &Path| {
            CString::new(p.as_os_str().as_bytes())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
        };
        Ok(Self {
            root: c(root)?,
            proc: c(&root.join("proc"))?,
            sys: c(&root.join("sys"))?,
            dev: c(&root.join("dev"))?,
        })
    }
}

/// Runs `argv` (an absolute path inside the root, then arguments) in
/// `root` with [`ENVIRONMENT`] plus `env`, passing each output line to
/// `on_line`. Fails with the exit status and the last lines of output.
pub fn run(
    root: &Path,
    step: &str,
    argv: &[&str],
    env: &[(&str, &str)],
    on_line: &mut dyn FnMut(&str),
) -> Result<(), Error> {
    let mut all: Vec<(&str, &str)> = ENVIRONMENT.to_vec();
    all.extend_from_slice(env);
    run_exact(root, step, argv, &all, on_line)
}

/// As [`run`], with exactly the environment `env` and nothing else.
pub fn run_exact(
    root: &Path,
    step: &str,
    argv: &[&str],
    env: &[(&str, &str)],
    on_line: &mut dyn FnMut(&str),
) -> Result<(), Error> {
    let spawn_error = |source| Error::Spawn {
        step: step.to_owned(),
        root: root.to_owned(),
        source,
    };
    prepare_mount_points(root).map_err(spawn_error)?;
    let paths = Paths::new(root).map_err(spawn_error)?;
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
    // makes system calls (unshare, mount, fork, waitpid, prctl, chroot,
    // chdir, close_range, _exit), which are async-signal-safe, and uses
    // memory allocated before the fork; it never returns into the
    // intermediate processes' Rust code: they leave through `_exit`.
    unsafe {
        command.pre_exec(move || enter(&paths));
    }
    let mut child = command.spawn().map_err(spawn_error)?;
    // Drop the parent's copies of the pipe's write end (moved into
    // `command`), so reading ends when the child exits.
    drop(command);

    let mut tail = VecDeque::with_capacity(TAIL);
    let mut lines = BufReader::new(std::fs::File::from(reader));
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match lines.read_until(b'\n', &mut buffer) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(spawn_error(e)),
        }
        let line = String::from_utf8_lossy(&buffer);
        let line = line.trim_end_matches(['\n', '\r']);
        on_line(line);
        if tail.len() == TAIL {
            tail.pop_front();
        }
        tail.push_back(line.to_owned());
    }
    let status = child.wait().map_err(spawn_error)?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Script {
            step: step.to_owned(),
            root: root.to_owned(),
            status: status.to_string(),
            code: {
                use std::os::unix::process::ExitStatusExt;
                status
                    .code()
                    .or_else(|| status.signal().map(|s| 128 + s))
                    .unwrap_or(-1)
            },
            output: tail.into(),
        })
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

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The `pre_exec` body; see the module documentation.
fn enter(paths: &Paths) -> io::Result<()> {
    // SAFETY: plain system calls with valid, NUL-terminated pointers made
    // before the fork; see `run`.
    unsafe {
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
        check(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWPID))?;
        check(libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        wait_and_exit_in_parent()?;
        // PID 1 of the new PID namespace.
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
        check(libc::mount(
            c"proc".as_ptr(),
            paths.proc.as_ptr(),
            c"proc".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        ))?;
        // A user namespace (an unprivileged build) owns no network
        // namespace, so sysfs cannot be mounted there: bind the host's.
        if libc::mount(
            c"sysfs".as_ptr(),
            paths.sys.as_ptr(),
            c"sysfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RDONLY,
            std::ptr::null(),
        ) == -1
        {
            check(libc::mount(
                c"/sys".as_ptr(),
                paths.sys.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ))?;
        }
        check(libc::mount(
            c"/dev".as_ptr(),
            paths.dev.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        ))?;
        wait_and_exit_in_parent()?;
        // The command itself.
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
        check(libc::chroot(paths.root.as_ptr()))?;
        check(libc::chdir(c"/".as_ptr()))?;
    }
    Ok(())
}

/// Forks; the parent waits for the child (reaping any other process that
/// ends meanwhile, as a PID 1 must) and exits with its status, never
/// returning. The child returns `Ok`.
///
/// # Safety
///
/// Only to be called between `fork` and `exec`.
unsafe fn wait_and_exit_in_parent() -> io::Result<()> {
    // SAFETY: see the function's contract.
    unsafe {
        let pid = libc::fork();
        if pid == -1 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            return Ok(());
        }
        // Close every descriptor but stdio: in particular std's
        // exec-error pipe, whose other end `spawn` reads until it closes,
        // and which this process never execs to close.
        libc::close_range(3, libc::c_uint::MAX, 0);
        let mut status = 0;
        loop {
            let ended = libc::waitpid(-1, &raw mut status, 0);
            if ended == pid {
                break;
            }
            if ended == -1 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(127);
            }
        }
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        };
        libc::_exit(code);
    }
}
