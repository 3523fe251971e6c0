//! QEMU machines for what kiln built.
//!
//! Every machine has one network interface on QEMU's user network with
//! `restrict=on`: the guest reaches nothing but what kiln forwards (the
//! boot server, at [`GUEST_SERVER`] port 80, through a connector program
//! QEMU runs per connection). KVM is used when `/dev/kvm` can be opened,
//! TCG otherwise.

use std::path::PathBuf;
use std::process::Command;

use crate::error::Error;

/// The address a guest reaches the boot server at (port 80).
pub const GUEST_SERVER: &str = "10.0.2.100";

/// The firmware a machine starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// `SeaBIOS` (QEMU's default), with iPXE for network boot.
    Bios,
    /// OVMF.
    Uefi,
}

/// What a machine boots.
#[derive(Debug, Clone)]
pub enum Boot {
    /// A disk image (`raw` or `qcow2`), opened with `snapshot=on` so the
    /// artifact is never written.
    Disk {
        /// The file.
        path: PathBuf,
        /// `raw` or `qcow2`.
        format: String,
    },
    /// A kernel and initrd, handed over by QEMU (as micro-VM monitors
    /// such as Firecracker and Cloud Hypervisor boot), with an optional
    /// root file system image as the first virtio disk (`/dev/vda`, raw,
    /// `snapshot=on`).
    Kernel {
        /// The kernel.
        kernel: PathBuf,
        /// The initrd.
        initrd: PathBuf,
        /// Its command line.
        cmdline: String,
        /// The root file system image (`ext4` or a raw disk), if any.
        root: Option<PathBuf>,
    },
    /// Network boot with QEMU's iPXE, which fetches `script` (a URL on
    /// [`GUEST_SERVER`]).
    Netboot {
        /// The iPXE script's URL.
        script: String,
    },
}

/// Where the serial console goes.
#[derive(Debug, Clone)]
pub enum Console {
    /// The terminal QEMU runs in (`-nographic`; Ctrl-A X quits).
    Terminal,
    /// A file, headless.
    File(PathBuf),
}

/// A machine.
#[derive(Debug, Clone)]
pub struct Machine {
    /// What it boots.
    pub boot: Boot,
    /// Its firmware.
    pub firmware: Firmware,
    /// Its memory, as QEMU takes it (`2G`, `1024M`).
    pub memory: String,
    /// Its processors.
    pub cpus: u32,
    /// The program (and arguments) QEMU runs for each guest connection
    /// to [`GUEST_SERVER`]:80, its stdin and stdout the connection; `None`:
    /// no forward.
    pub connector: Option<Vec<String>>,
    /// The serial console.
    pub console: Console,
    /// More QEMU arguments, last.
    pub extra: Vec<String>,
}

/// How QEMU runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// Software emulation (slow).
    Tcg,
}

impl Accel {
    /// KVM if `/dev/kvm` opens for reading and writing and the processor
    /// has hardware virtualisation (`vmx` or `svm`), else TCG. The second
    /// check matters: a `/dev/kvm` without it (a paravirtual one, inside
    /// some sandboxes) starts guests whose kernels hang.
    #[must_use]
    pub fn detect() -> Accel {
        let kvm = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        let hardware = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| {
            info.lines()
                .filter(|l| l.starts_with("flags"))
                .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
        });
        if kvm && hardware {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    }

    /// `kvm` or `tcg`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Where Debian's `ovmf` package puts the firmware, in order of
/// preference.
const OVMF: &[&str] = &[
    "/usr/share/ovmf/OVMF.fd",
    "/usr/share/OVMF/OVMF.fd",
    "/usr/share/qemu/OVMF.fd",
];

/// The OVMF image, if one is installed.
#[must_use]
pub fn ovmf() -> Option<PathBuf> {
    OVMF.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// The QEMU program of `arch` (a Debian architecture).
pub fn program(arch: &str) -> Result<&'static str, Error> {
    match arch {
        "amd64" => Ok("qemu-system-x86_64"),
        other => Err(Error::Missing {
            program: format!("a QEMU machine for {other}"),
            help: "kiln boots amd64 variants for now".into(),
        }),
    }
}

/// QEMU's option syntax: a `,` in a value is written `,,`.
fn escape(value: &str) -> String {
    value.replace(',', ",,")
}

/// A shell word (QEMU runs a `cmd:` forward with `/bin/sh -c`).
fn shell_word(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The QEMU command of `machine`.
pub fn command(machine: &Machine, arch: &str, accel: Accel) -> Result<Command, Error> {
    let mut cmd = Command::new(program(arch)?);
    cmd.arg("-machine")
        .arg(format!("accel={}", accel.name()))
        .args(["-m", &machine.memory])
        .args(["-smp", &machine.cpus.to_string()]);
    if accel == Accel::Kvm {
        cmd.args(["-cpu", "host"]);
    }
    if machine.firmware == Firmware::Uefi {
        let ovmf = ovmf().ok_or_else(|| Error::Missing {
            program: "OVMF".into(),
            help: "UEFI boots need Debian's `ovmf` package".into(),
        })?;
        cmd.arg("-bios").arg(ovmf);
    }
    match &machine.console {
        Console::Terminal => {
            cmd.arg("-nographic");
        }
        Console::File(path) => {
            cmd.args(["-display", "none", "-monitor", "none"])
                .arg("-serial")
                .arg(format!("file:{}", path.display()));
        }
    }
    let mut netdev = String::from("user,id=n0,restrict=on");
    if let Some(connector) = &machine.connector {
        let words: Vec<String> = connector.iter().map(|w| shell_word(w)).collect();
        netdev.push_str(&format!(
            ",guestfwd=tcp:{GUEST_SERVER}:80-cmd:{}",
            escape(&words.join(" "))
        ));
    }
    match &machine.boot {
        Boot::Disk { path, format } => {
            cmd.arg("-drive").arg(format!(
                "file={},if=virtio,format={format},snapshot=on",
                escape(&path.to_string_lossy())
            ));
        }
        Boot::Kernel {
            kernel,
            initrd,
            cmdline,
            root,
        } => {
            cmd.arg("-kernel")
                .arg(kernel)
                .arg("-initrd")
                .arg(initrd)
                .arg("-append")
                .arg(cmdline);
            if let Some(root) = root {
                cmd.arg("-drive").arg(format!(
                    "file={},if=virtio,format=raw,snapshot=on",
                    escape(&root.to_string_lossy())
                ));
            }
        }
        Boot::Netboot { script } => {
            netdev.push_str(&format!(",bootfile={}", escape(script)));
            cmd.args(["-boot", "n"]);
        }
    }
    cmd.arg("-netdev")
        .arg(netdev)
        .args(["-device", "virtio-net-pci,netdev=n0"]);
    cmd.args(&machine.extra);
    Ok(cmd)
}
