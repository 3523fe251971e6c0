//! `kiln test`: boot a variant headless and prove it works.
//!
//! A test boots its machine with the console in a file, waits for the
//! `expect` line, and, when it has a script, waits for the script's
//! verdict: for a netboot guest the script travels as one more overlay
//! (served by the test's own boot server, its SHA-256 checked by the
//! initrd like the others), holding a unit that runs it once the system
//! is up (after `multi-user.target`) and prints `kiln-test: script exit
//! N` on the console. The machine is killed once the verdict is in, or
//! at the time limit.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use kiln_build::CancelToken;
use kiln_formats::cpio::SmallEntry;
use serde::Serialize;
use sha2::Digest as _;

use crate::error::Error;
use crate::qemu::{self, Accel, Machine};
use crate::server::{BootOptions, BootServer, ExtraOverlay};

/// What the test overlay's unit prints before the script's exit status.
pub const SCRIPT_MARKER: &str = "kiln-test: script exit ";

/// How many console lines a failed test reports.
pub const TAIL_LINES: usize = 30;

/// One test: a variant, its machine and what proves it works.
#[derive(Debug, Clone)]
pub struct TestCase {
    /// The variant.
    pub variant: String,
    /// `bios`, `uefi`, `direct` or `netboot`.
    pub boot: String,
    /// Its machine (the console is set by [`run`]).
    pub machine: Machine,
    /// Its architecture.
    pub arch: String,
    /// The console line that says the system is up.
    pub expect: Option<String>,
    /// The script run inside, and its name.
    pub script: Option<(String, Vec<u8>)>,
    /// The time limit.
    pub timeout: Duration,
    /// For a netboot test: the output folder its boot server serves.
    pub out_dir: Option<PathBuf>,
}

/// How a test ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Up (and the script exited 0).
    Passed,
    /// The script exited non-zero.
    Failed {
        /// Its exit status.
        code: i32,
    },
    /// The time limit passed first.
    TimedOut {
        /// What was awaited.
        waiting_for: String,
    },
    /// QEMU ended first (a reboot with `-no-reboot`, a crash, power off).
    Ended {
        /// QEMU's exit status.
        status: String,
    },
    /// The test was cancelled.
    Cancelled,
}

/// A test's result.
#[derive(Debug, Clone, Serialize)]
pub struct TestResult {
    /// The variant.
    pub variant: String,
    /// How it booted.
    pub boot: String,
    /// Whether it passed.
    pub passed: bool,
    /// How it ended.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Seconds from QEMU's start to the `expect` line.
    pub up_after: Option<f64>,
    /// Seconds in all.
    pub seconds: f64,
    /// `kvm` or `tcg`.
    pub accel: &'static str,
    /// The whole console.
    pub console_log: PathBuf,
    /// Its last lines when the test did not pass.
    pub console_tail: Vec<String>,
}

/// The overlay that runs `script` in a netboot guest, written to
/// `dest`; returns its SHA-256.
pub fn script_overlay(script: &[u8], dest: &Path) -> Result<String, Error> {
    const UNIT: &str = "[Unit]
Description=kiln test: the test script
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/lib/kiln-test/run
StandardOutput=journal+console
StandardError=journal+console
";
    const RUN: &str = "#!/bin/sh
# kiln test: runs the test script; its exit status on the console.
echo 'kiln-test: running the script' > /dev/console
/usr/lib/kiln-test/script < /dev/null > /dev/console 2>&1
echo \"kiln-test: script exit $?\" > /dev/console
";
    let dir = |p: &str| SmallEntry::Dir(p.to_owned(), 0o755);
    let entries = [
        dir("etc"),
        dir("etc/systemd"),
        dir("etc/systemd/system"),
        SmallEntry::File(
            "etc/systemd/system/kiln-test.service".into(),
            0o644,
            UNIT.as_bytes().to_vec(),
        ),
        dir("etc/systemd/system/multi-user.target.wants"),
        SmallEntry::Symlink(
            "etc/systemd/system/multi-user.target.wants/kiln-test.service".into(),
            "/etc/systemd/system/kiln-test.service".into(),
        ),
        dir("usr"),
        dir("usr/lib"),
        dir("usr/lib/kiln-test"),
        SmallEntry::File(
            "usr/lib/kiln-test/run".into(),
            0o755,
            RUN.as_bytes().to_vec(),
        ),
        SmallEntry::File("usr/lib/kiln-test/script".into(), 0o755, script.to_vec()),
    ];
    kiln_formats::cpio::small_cpio_gz(&entries, 0, dest).map_err(|error| Error::Io {
        action: "write",
        path: dest.to_path_buf(),
        error,
    })?;
    let bytes = std::fs::read(dest).map_err(|error| Error::Io {
        action: "read",
        path: dest.to_path_buf(),
        error,
    })?;
    Ok(hex::encode(sha2::Sha256::digest(&bytes)))
}

/// Runs `case` in `work` (its console log, its script overlay):
/// starts its boot server when it netboots, boots, watches the console.
pub fn run(case: &TestCase, work: &Path, cancel: &CancelToken) -> Result<TestResult, Error> {
    std::fs::create_dir_all(work).map_err(|error| Error::Io {
        action: "create",
        path: work.to_path_buf(),
        error,
    })?;
    let console = work.join("console.log");
    // An earlier run's console must not pass for this one's.
    match std::fs::remove_file(&console) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(Error::Io {
                action: "remove",
                path: console,
                error,
            });
        }
    }
    let mut machine = case.machine.clone();
    machine.console = qemu::Console::File(console.clone());
    let _server = match &case.out_dir {
        Some(out_dir) => {
            let mut options = BootOptions::new(out_dir.clone());
            options.console = "console=ttyS0,115200".into();
            if let Some((_, script)) = &case.script {
                let name = "kiln-test.cpio.gz";
                let sha256 = script_overlay(script, &work.join(name))?;
                options.extra_overlays.push(ExtraOverlay {
                    name: name.into(),
                    sha256,
                });
                options.extra_dir = Some(work.to_path_buf());
            }
            let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
            let server = BootServer::start(options, listen)?;
            if let Some(connector) = &mut machine.connector {
                connector.push(server.addr().to_string());
            }
            Some(server)
        }
        None => None,
    };
    let accel = Accel::detect();
    let mut cmd = qemu::command(&machine, &case.arch, accel)?;
    let qemu_log = work.join("qemu.log");
    let stderr = std::fs::File::create(&qemu_log).map_err(|error| Error::Io {
        action: "create",
        path: qemu_log.clone(),
        error,
    })?;
    cmd.arg("-no-reboot")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    let program = qemu::program(&case.arch)?;
    let started = Instant::now();
    let child = cmd.spawn().map_err(|error| Error::Io {
        action: "start",
        path: program.into(),
        error,
    })?;
    let mut guest = Guest(child);
    let mut up_after = None;
    let verdict = loop {
        let text =
            String::from_utf8_lossy(&std::fs::read(&console).unwrap_or_default()).into_owned();
        if up_after.is_none() {
            match &case.expect {
                Some(line) if !text.contains(line.as_str()) => {}
                _ => up_after = Some(started.elapsed().as_secs_f64()),
            }
        }
        if up_after.is_some() {
            match &case.script {
                None => break Verdict::Passed,
                Some(_) => {
                    if let Some(code) = script_exit(&text) {
                        break if code == 0 {
                            Verdict::Passed
                        } else {
                            Verdict::Failed { code }
                        };
                    }
                }
            }
        }
        if cancel.is_cancelled() {
            break Verdict::Cancelled;
        }
        if let Ok(Some(status)) = guest.0.try_wait() {
            break Verdict::Ended {
                status: status.to_string(),
            };
        }
        if started.elapsed() > case.timeout {
            let waiting_for = match (&case.expect, up_after) {
                (Some(line), None) => format!("`{line}` on the console"),
                _ => format!(
                    "the script `{}`",
                    case.script.as_ref().map_or("", |s| s.0.as_str())
                ),
            };
            break Verdict::TimedOut { waiting_for };
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    drop(guest);
    let mut text =
        String::from_utf8_lossy(&std::fs::read(&console).unwrap_or_default()).into_owned();
    if let Verdict::Ended { .. } = verdict {
        // What QEMU itself said (a bad option, a missing file).
        text.push_str(&String::from_utf8_lossy(
            &std::fs::read(&qemu_log).unwrap_or_default(),
        ));
    }
    let passed = verdict == Verdict::Passed;
    let console_tail = if passed {
        Vec::new()
    } else {
        tail(&text, TAIL_LINES)
    };
    Ok(TestResult {
        variant: case.variant.clone(),
        boot: case.boot.clone(),
        passed,
        verdict,
        up_after,
        seconds: started.elapsed().as_secs_f64(),
        accel: accel.name(),
        console_log: console,
        console_tail,
    })
}

/// The script's exit status, once the console shows it.
fn script_exit(console: &str) -> Option<i32> {
    console.lines().find_map(|l| {
        let at = l.find(SCRIPT_MARKER)?;
        l[at + SCRIPT_MARKER.len()..].trim().parse().ok()
    })
}

/// The last `n` lines of a console, without escape sequences and
/// carriage returns.
#[must_use]
pub fn tail(console: &str, n: usize) -> Vec<String> {
    let lines: Vec<String> = console
        .lines()
        .map(|l| strip_escapes(l).trim_end().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

fn strip_escapes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A QEMU process, killed when dropped.
struct Guest(Child);

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_verdict_is_read_off_the_console() {
        assert_eq!(
            script_exit("boot\n[  5.1] kiln-test: script exit 3\n"),
            Some(3)
        );
        assert_eq!(script_exit("kiln-test: running the script\n"), None);
        assert_eq!(
            tail("a\r\n\u{1b}[0;32m  OK  \u{1b}[0m b\n\nc\n", 2),
            ["  OK   b", "c"]
        );
    }
}
