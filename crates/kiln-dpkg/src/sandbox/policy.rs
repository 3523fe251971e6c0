//! What a sandboxed command may still do: the capabilities it keeps and
//! the system calls its seccomp filter refuses. Data only, compiled before
//! the fork; `child.rs` applies it.

use std::collections::BTreeMap;
use std::io;
use std::sync::OnceLock;

use rustix::thread::CapabilitySet;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

/// The capabilities a command keeps: what dpkg, maintainer scripts,
/// `useradd` and `setcap` need to give files owners, modes and file
/// capabilities and to switch to other users. Not `SYS_ADMIN` (mounts,
/// namespaces), `SYS_CHROOT` (the classic chroot escape), `MKNOD` (device
/// nodes of host disks), `SYS_MODULE`, `SYS_RAWIO`, `SYS_PTRACE`,
/// `DAC_READ_SEARCH` (`open_by_handle_at`), `NET_ADMIN` or `NET_RAW`.
pub(crate) const KEPT: CapabilitySet = CapabilitySet::CHOWN
    .union(CapabilitySet::DAC_OVERRIDE)
    .union(CapabilitySet::FOWNER)
    .union(CapabilitySet::FSETID)
    .union(CapabilitySet::KILL)
    .union(CapabilitySet::SETGID)
    .union(CapabilitySet::SETUID)
    .union(CapabilitySet::SETPCAP)
    .union(CapabilitySet::SETFCAP)
    .union(CapabilitySet::NET_BIND_SERVICE)
    .union(CapabilitySet::AUDIT_WRITE);

/// System calls that fail with `EPERM`: mounting and namespaces (which
/// would undo the sandbox), kernel modules and `kexec`, tracing other
/// processes, BPF, keyrings, `perf`, `userfaultfd`, file handles, swap,
/// `reboot` and port I/O.
fn refused() -> Vec<libc::c_long> {
    let mut calls = vec![
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_fsopen,
        libc::SYS_fsmount,
        libc::SYS_fsconfig,
        libc::SYS_fspick,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_mount_setattr,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_bpf,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_open_by_handle_at,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_reboot,
    ];
    #[cfg(target_arch = "x86_64")]
    calls.extend([libc::SYS_iopl, libc::SYS_ioperm]);
    calls
}

/// The `clone` flags that make namespaces.
const NAMESPACE_FLAGS: [libc::c_int; 7] = [
    libc::CLONE_NEWNS,
    libc::CLONE_NEWCGROUP,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
];

/// The two seccomp programs of a command, installed in this order.
#[derive(Debug)]
pub(crate) struct Filters {
    /// `EPERM` for [`refused`] and for `clone` with a namespace flag.
    pub(crate) refuse: BpfProgram,
    /// `ENOSYS` for `clone3`, whose flags live in memory a filter cannot
    /// read: libc then falls back to `clone`, which the first filter sees.
    pub(crate) no_clone3: BpfProgram,
}

/// The filters, compiled once per process (before any fork: compiling
/// allocates).
pub(crate) fn filters() -> io::Result<&'static Filters> {
    static FILTERS: OnceLock<Result<Filters, String>> = OnceLock::new();
    FILTERS
        .get_or_init(|| compile().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| io::Error::other(format!("failed to compile the seccomp filter: {e}")))
}

fn compile() -> Result<Filters, seccompiler::Error> {
    let arch = std::env::consts::ARCH.try_into()?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = refused()
        .into_iter()
        .map(|call| (call, Vec::new()))
        .collect();
    let clone_rules = NAMESPACE_FLAGS
        .iter()
        .map(|&flag| {
            let flag = u64::from(flag.unsigned_abs());
            SeccompRule::new(vec![SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )?])
        })
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_clone, clone_rules);
    let refuse = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM.unsigned_abs()),
        arch,
    )?
    .try_into()?;
    let no_clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS.unsigned_abs()),
        arch,
    )?
    .try_into()?;
    Ok(Filters { refuse, no_clone3 })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_filters_compile_for_this_machine() {
        let filters = super::filters().expect("compiles");
        assert!(!filters.refuse.is_empty() && !filters.no_clone3.is_empty());
    }
}
