//! The `pre_exec` body: everything between `fork` and `exec` (see the
//! module documentation of `sandbox` for the design). Only system calls
//! and memory allocated before the fork: kiln is multithreaded, so the
//! child may not allocate, lock or run destructors.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::policy::{self, Filters};

/// Where the outer root is mounted before `pivot_root`: a folder every
/// Linux system has. Only this process's private mount namespace sees the
/// tmpfs over it; the image root is cloned (`open_tree`) before the tmpfs
/// hides anything, so a root below `/tmp` is no problem.
const OUTER: &CStr = c"/tmp";

/// The image's folder in the outer root, before and after `pivot_root`.
const IMAGE_BEFORE: &CStr = c"/tmp/image";
const IMAGE_AFTER: &CStr = c"/image";

/// `/proc` entries hidden behind `/dev/null`: kernel memory, the kernel's
/// keyrings and timers, and the `sysrq-trigger`.
const PROC_MASKED: &[&CStr] = &[
    c"/tmp/image/proc/kcore",
    c"/tmp/image/proc/keys",
    c"/tmp/image/proc/latency_stats",
    c"/tmp/image/proc/timer_list",
    c"/tmp/image/proc/sched_debug",
    c"/tmp/image/proc/sysrq-trigger",
];

/// `/proc` folders made read-only: kernel settings and hardware.
const PROC_READ_ONLY: &[&CStr] = &[
    c"/tmp/image/proc/sys",
    c"/tmp/image/proc/bus",
    c"/tmp/image/proc/fs",
    c"/tmp/image/proc/irq",
];

/// Character devices bound from the host into the private `/dev`.
const DEVICES: &[(&CStr, &CStr)] = &[
    (c"/dev/null", c"/tmp/image/dev/null"),
    (c"/dev/zero", c"/tmp/image/dev/zero"),
    (c"/dev/full", c"/tmp/image/dev/full"),
    (c"/dev/random", c"/tmp/image/dev/random"),
    (c"/dev/urandom", c"/tmp/image/dev/urandom"),
    (c"/dev/tty", c"/tmp/image/dev/tty"),
];

/// Symbolic links of the private `/dev` (target, link).
const DEV_LINKS: &[(&CStr, &CStr)] = &[
    (c"pts/ptmx", c"/tmp/image/dev/ptmx"),
    (c"/proc/self/fd", c"/tmp/image/dev/fd"),
    (c"/proc/self/fd/0", c"/tmp/image/dev/stdin"),
    (c"/proc/self/fd/1", c"/tmp/image/dev/stdout"),
    (c"/proc/self/fd/2", c"/tmp/image/dev/stderr"),
];

/// Everything the child needs, made before `fork`.
pub(super) struct Plan {
    /// The image root on the host. It is resolved only after `unshare`: a
    /// descriptor opened before would name a mount of the host's mount
    /// namespace, which the kernel refuses to bind into another one.
    root: CString,
    /// The command's working folder, inside the image.
    cwd: CString,
    network: bool,
    /// Whether the host's `/etc/resolv.conf` is bound over the image's
    /// (a step with the host's network resolves names as the host does).
    resolv_conf: bool,
    filters: &'static Filters,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("root", &self.root)
            .field("cwd", &self.cwd)
            .field("network", &self.network)
            .field("resolv_conf", &self.resolv_conf)
            .finish_non_exhaustive()
    }
}

impl Plan {
    pub(super) fn new(
        root: &Path,
        cwd: &str,
        network: bool,
        resolv_conf: bool,
    ) -> io::Result<Self> {
        let c = |bytes: &[u8]| {
            CString::new(bytes)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
        };
        Ok(Self {
            root: c(root.as_os_str().as_bytes())?,
            cwd: c(Path::new(cwd).as_os_str().as_bytes())?,
            network,
            resolv_conf,
            filters: policy::filters()?,
        })
    }
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `mount(2)` with C strings; `None` is a null pointer.
///
/// # Safety
///
/// Only a system call; the strings outlive it.
unsafe fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: valid NUL-terminated strings or null pointers.
    check(unsafe {
        libc::mount(
            ptr(source),
            target.as_ptr(),
            ptr(fstype),
            flags,
            ptr(data).cast(),
        )
    })
}

/// Binds `target` onto itself and makes the bind read-only.
///
/// # Safety
///
/// Only system calls.
unsafe fn read_only_bind(source: &CStr, target: &CStr, recursive: bool) -> io::Result<()> {
    let rec = if recursive { libc::MS_REC } else { 0 };
    // SAFETY: see the function's contract.
    unsafe {
        mount(Some(source), target, None, libc::MS_BIND | rec, None)?;
        mount(
            None,
            target,
            None,
            libc::MS_REMOUNT
                | libc::MS_BIND
                | libc::MS_RDONLY
                | libc::MS_NOSUID
                | libc::MS_NODEV
                | libc::MS_NOEXEC,
            None,
        )
    }
}

/// Ignores "not found" (an entry this kernel does not have).
fn unless_missing(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

/// The `pre_exec` body, run in the child `Command::spawn` forks.
///
/// # Safety
///
/// Only between `fork` and `exec`, with `plan` made before the fork.
pub(super) unsafe fn enter(plan: &Plan) -> io::Result<()> {
    // SAFETY: system calls with pointers to memory made before the fork.
    unsafe {
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
        let mut flags =
            libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
        if !plan.network {
            flags |= libc::CLONE_NEWNET;
        }
        check(libc::unshare(flags))?;
        mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None)?;
        wait_and_exit_in_parent(None)?;
        // PID 1 of the new PID namespace: the sandbox's init.
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
        build_outer_root(plan)?;
        if !plan.network {
            loopback_up()?;
        }
        // The command waits on `ready` until init has dropped its own
        // capabilities: until then, init's are not a subset of the
        // command's and the kernel would refuse it `/proc/1/root`, which
        // `ischroot` reads.
        let mut ready = [0; 2];
        check(libc::pipe2(ready.as_mut_ptr(), libc::O_CLOEXEC))?;
        let [ready_read, ready_write] = ready;
        wait_and_exit_in_parent(Some((ready_read, ready_write, plan)))?;
        // The command.
        libc::close(ready_write);
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
        check(libc::chroot(IMAGE_AFTER.as_ptr()))?;
        check(libc::chdir(plan.cwd.as_ptr()))?;
        let mut byte = 0u8;
        let read = libc::read(ready_read, (&raw mut byte).cast(), 1);
        libc::close(ready_read);
        if read != 1 {
            return Err(io::Error::other(
                "the sandbox's init failed to drop its capabilities",
            ));
        }
        confine(policy::KEPT, plan.filters)?;
    }
    Ok(())
}

/// Mounts the outer root (a tmpfs holding only the image), the image's
/// `/proc`, `/sys` and `/dev`, then `pivot_root`s into it and makes it
/// read-only. The host's file systems are out of reach afterwards.
///
/// # Safety
///
/// Only between `fork` and `exec`, in a new mount namespace.
unsafe fn build_outer_root(plan: &Plan) -> io::Result<()> {
    let nosuid_nodev = libc::MS_NOSUID | libc::MS_NODEV;
    let nosuid_nodev_noexec = nosuid_nodev | libc::MS_NOEXEC;
    // SAFETY: see the function's contract.
    unsafe {
        // A detached copy of the image's mounts, made before the tmpfs
        // could hide the root, then moved into the outer root.
        let image = libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            plan.root.as_ptr(),
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as libc::c_uint,
        );
        if image == -1 {
            return Err(io::Error::last_os_error());
        }
        #[allow(clippy::cast_possible_truncation)] // a descriptor is a c_int
        let image = image as libc::c_int;
        mount(
            Some(c"tmpfs"),
            OUTER,
            Some(c"tmpfs"),
            nosuid_nodev,
            Some(c"mode=0755,size=64k"),
        )?;
        check(libc::mkdir(IMAGE_BEFORE.as_ptr(), 0o755))?;
        let moved = libc::syscall(
            libc::SYS_move_mount,
            image,
            c"".as_ptr(),
            libc::AT_FDCWD,
            IMAGE_BEFORE.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        );
        let error = io::Error::last_os_error();
        // Nothing of the host may stay reachable from init's descriptors.
        libc::close(image);
        if moved == -1 {
            return Err(error);
        }

        mount(
            Some(c"proc"),
            c"/tmp/image/proc",
            Some(c"proc"),
            nosuid_nodev_noexec,
            None,
        )?;
        for path in PROC_MASKED {
            unless_missing(mount(Some(c"/dev/null"), path, None, libc::MS_BIND, None))?;
        }
        for path in PROC_READ_ONLY {
            unless_missing(read_only_bind(path, path, true))?;
        }

        // The sysfs of the sandbox's network namespace; where kiln runs in
        // a user namespace and the command shares the host's network, the
        // kernel refuses a new sysfs: a read-only bind of the host's.
        if mount(
            Some(c"sysfs"),
            c"/tmp/image/sys",
            Some(c"sysfs"),
            nosuid_nodev_noexec | libc::MS_RDONLY,
            None,
        )
        .is_err()
        {
            read_only_bind(c"/sys", c"/tmp/image/sys", true)?;
        }

        mount(
            Some(c"tmpfs"),
            c"/tmp/image/dev",
            Some(c"tmpfs"),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            Some(c"mode=0755,size=64k"),
        )?;
        for (host, inside) in DEVICES {
            let fd = libc::open(
                inside.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                0o666,
            );
            if fd == -1 {
                return Err(io::Error::last_os_error());
            }
            libc::close(fd);
            mount(Some(host), inside, None, libc::MS_BIND, None)?;
        }
        check(libc::mkdir(c"/tmp/image/dev/pts".as_ptr(), 0o755))?;
        let devpts = |options: &CStr| {
            mount(
                Some(c"devpts"),
                c"/tmp/image/dev/pts",
                Some(c"devpts"),
                libc::MS_NOSUID | libc::MS_NOEXEC,
                Some(options),
            )
        };
        // gid 5 is Debian's `tty`; a user namespace may not map it.
        devpts(c"newinstance,ptmxmode=0666,mode=0620,gid=5")
            .or_else(|_| devpts(c"newinstance,ptmxmode=0666,mode=0620"))?;
        for (target, link) in DEV_LINKS {
            check(libc::symlink(target.as_ptr(), link.as_ptr()))?;
        }
        check(libc::mkdir(c"/tmp/image/dev/shm".as_ptr(), 0o1777))?;
        mount(
            Some(c"tmpfs"),
            c"/tmp/image/dev/shm",
            Some(c"tmpfs"),
            nosuid_nodev_noexec,
            Some(c"mode=1777"),
        )?;

        if plan.resolv_conf {
            read_only_bind(c"/etc/resolv.conf", c"/tmp/image/etc/resolv.conf", false)?;
        }

        // `pivot_root(".", ".")` stacks the old root on the new one; the
        // detaching unmount then takes the host's whole tree away.
        check(libc::chdir(OUTER.as_ptr()))?;
        check(libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as libc::c_int)?;
        check(libc::umount2(c".".as_ptr(), libc::MNT_DETACH))?;
        check(libc::chdir(c"/".as_ptr()))?;
        mount(
            None,
            c"/",
            None,
            libc::MS_REMOUNT | libc::MS_RDONLY | nosuid_nodev,
            None,
        )?;
    }
    Ok(())
}

/// Brings up `lo`, the only interface of a new network namespace.
///
/// # Safety
///
/// Only system calls on memory of this frame.
unsafe fn loopback_up() -> io::Result<()> {
    // SAFETY: see the function's contract; `ifreq` is plain data.
    unsafe {
        let socket = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if socket == -1 {
            return Err(io::Error::last_os_error());
        }
        let mut request: libc::ifreq = std::mem::zeroed();
        for (to, from) in request.ifr_name.iter_mut().zip(b"lo\0") {
            #[allow(clippy::cast_possible_wrap)] // ASCII
            {
                *to = *from as libc::c_char;
            }
        }
        let mut result = check(libc::ioctl(socket, libc::SIOCGIFFLAGS, &raw mut request));
        if result.is_ok() {
            request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            result = check(libc::ioctl(socket, libc::SIOCSIFFLAGS, &raw mut request));
        }
        libc::close(socket);
        result
    }
}

/// Drops every capability but `kept` (bounding, ambient, effective,
/// permitted and inheritable sets), sets `no_new_privs` and installs the
/// seccomp filters.
///
/// # Safety
///
/// Only system calls on memory made before the fork.
unsafe fn confine(kept: rustix::thread::CapabilitySet, filters: &Filters) -> io::Result<()> {
    // SAFETY: see the function's contract.
    unsafe {
        for cap in 0..64 {
            if kept.bits() & (1 << cap) == 0
                && libc::prctl(libc::PR_CAPBSET_DROP, cap) == -1
                && *libc::__errno_location() != libc::EINVAL
            {
                return Err(io::Error::last_os_error());
            }
        }
        check(libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        ))?;
    }
    rustix::thread::set_capabilities(
        None,
        rustix::thread::CapabilitySets {
            effective: kept,
            permitted: kept,
            inheritable: rustix::thread::CapabilitySet::empty(),
        },
    )?;
    rustix::thread::set_no_new_privs(true)?;
    for filter in [&filters.refuse, &filters.no_clone3] {
        seccompiler::apply_filter(filter).map_err(|e| match e {
            seccompiler::Error::Seccomp(e) | seccompiler::Error::Prctl(e) => e,
            _ => io::Error::other("failed to install the seccomp filter"),
        })?;
    }
    Ok(())
}

/// Forks; the parent waits for the child (reaping any other process that
/// ends meanwhile, as a PID 1 must) and exits with its status, never
/// returning. The child returns `Ok`.
///
/// With `ready` (init forking the command): the parent first closes the
/// read end, drops all its capabilities and confines itself as the command
/// will be, then writes one byte to the write end. If that fails it closes
/// the pipe without writing and the command gives up.
///
/// # Safety
///
/// Only to be called between `fork` and `exec`.
unsafe fn wait_and_exit_in_parent(
    ready: Option<(libc::c_int, libc::c_int, &Plan)>,
) -> io::Result<()> {
    // SAFETY: see the function's contract.
    unsafe {
        let pid = libc::fork();
        if pid == -1 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            return Ok(());
        }
        if let Some((read, write, plan)) = ready {
            libc::close(read);
            if confine(rustix::thread::CapabilitySet::empty(), plan.filters).is_ok() {
                libc::write(write, [1u8].as_ptr().cast(), 1);
            }
            libc::close(write);
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
