//! `kiln boot-server`: the output folder and iPXE scripts over HTTP.

use std::io::Write as _;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use kiln_boot::qemu::{self, Accel, Boot, Console, Firmware, Machine};
use kiln_boot::test::{TestCase, TestResult, Verdict};
use kiln_build::CancelToken;
use kiln_build::manifest::{Manifest, TestRecord, VariantEntry};

use crate::cli::{BootArgs, BootServerArgs, FirmwareArg, TestArgs};
use crate::report::Style;
use crate::{Failure, Outcome};

pub fn run_boot_server(args: &BootServerArgs, style: Style) -> Outcome {
    let (ws, _) = crate::build_cmd::open(&args.dir, None, &kiln_plan::Selection::default(), style)?;
    let out_dir = ws.out_dir();
    if let Some(url) = &args.url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Failure::Config(format!(
                "error: --url `{url}` is not an http:// or https:// URL\n"
            )));
        }
    }
    let options = kiln_boot::server::BootOptions {
        out_dir: out_dir.clone(),
        public_url: args.url.clone(),
        console: args.console.clone(),
        extra_cmdline: args.cmdline.clone(),
        extra_overlays: Vec::new(),
        credentials: None,
        extra_dir: None,
    };
    kiln_boot::server::serve(options, args.listen, |addr| {
        // The first line on stderr: scripts and tests wait for it.
        let _ = writeln!(
            std::io::stderr().lock(),
            "kiln boot-server: serving {} on http://{addr}/boot/ (menu: http://{addr}/boot/menu.ipxe)",
            out_dir.display()
        );
    })
    .map_err(|e| Failure::Build(format!("error: {e}\n")))?;
    Ok(String::new())
}

/// `kiln connect-stdio ADDR`: stdin to a TCP connection to `addr`, the
/// connection to stdout, until both sides are done. QEMU's user network
/// runs it for each connection a guest opens to a `guestfwd` address (a
/// `tcp:` target would be one connection shared by all of them).
pub fn connect_stdio(addr: std::net::SocketAddr) -> Outcome {
    let stream = std::net::TcpStream::connect(addr)
        .map_err(|e| Failure::Build(format!("error: failed to connect to {addr}: {e}\n")))?;
    let mut to_server = stream
        .try_clone()
        .map_err(|e| Failure::Build(format!("error: {addr}: {e}\n")))?;
    let upstream = std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut to_server);
        let _ = to_server.shutdown(std::net::Shutdown::Write);
    });
    // Flushed after every read: stdout is line-buffered, and the tail of
    // a response without a newline must not wait for more.
    let mut from_server = stream;
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match std::io::Read::read(&mut from_server, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                    break;
                }
            }
        }
    }
    drop(upstream);
    Ok(String::new())
}

fn boot_failure(e: &kiln_boot::Error) -> Failure {
    match e {
        kiln_boot::Error::Io { .. } => Failure::Build(format!("error: {e}\n")),
        _ => Failure::Config(format!("error: {e}\n")),
    }
}

/// The manifest entry of `variant`, or an error listing what is there.
fn entry_of<'m>(
    manifest: &'m Manifest,
    variant: &str,
    out_dir: &Path,
) -> Result<&'m VariantEntry, Failure> {
    manifest.variant(variant).ok_or_else(|| {
        let known: Vec<&str> = manifest.variants.iter().map(|v| v.variant.as_str()).collect();
        Failure::Config(format!(
            "error: `{variant}` has not been built: it is not in `{}`\n  help: `kiln build --only {variant}` builds it; built variants: {}\n",
            out_dir.join(kiln_build::manifest::MANIFEST_FILE).display(),
            if known.is_empty() { "none".to_owned() } else { known.join(", ") }
        ))
    })
}

/// The variant's disk (qcow2 first, then raw) and its QEMU format.
fn disk_of(entry: &VariantEntry, out_dir: &Path) -> Option<(PathBuf, String)> {
    ["qcow2", "raw"].iter().find_map(|format| {
        entry
            .artifacts
            .iter()
            .find(|a| a.format == *format)
            .map(|a| (out_dir.join(&a.path), (*format).to_owned()))
    })
}

/// The variant's kernel and initrd (`kernel = true`).
fn kernel_of(entry: &VariantEntry, out_dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let file = |format: &str| {
        entry
            .artifacts
            .iter()
            .find(|a| a.format == format)
            .map(|a| out_dir.join(&a.path))
    };
    Some((file("vmlinuz")?, file("initrd.img")?))
}

/// The command line of a kernel booted directly with an ext4 root as
/// its first virtio disk.
pub const DIRECT_CMDLINE: &str = "root=/dev/vda rw console=ttyS0,115200";

/// How QEMU boots `variant` with its kernel and initrd handed over: a
/// netboot variant's initrd fetches the rest from the boot server (at
/// [`qemu::GUEST_SERVER`]), any other needs an `ext4` output as its root.
fn direct_boot(variant: &str, entry: &VariantEntry, out_dir: &Path) -> Result<Boot, Failure> {
    if let Some(n) = &entry.netboot {
        let files = format!("http://{}/boot", qemu::GUEST_SERVER);
        let mut options = kiln_boot::server::BootOptions::new(out_dir.to_path_buf());
        options.console = "console=ttyS0,115200".into();
        return Ok(Boot::Kernel {
            kernel: out_dir.join(&n.kernel),
            initrd: out_dir.join(&n.initrd),
            cmdline: kiln_boot::server::netboot_cmdline(entry, &files, &options)
                .unwrap_or_default(),
            root: None,
        });
    }
    let Some((kernel, initrd)) = kernel_of(entry, out_dir) else {
        return Err(Failure::Config(format!(
            "error: `{variant}` has no kernel to boot directly\n  help: set `kernel = true` (it writes vmlinuz and initrd.img) and add an `ext4` output for its root\n"
        )));
    };
    let Some(root) = entry.artifacts.iter().find(|a| a.format == "ext4") else {
        return Err(Failure::Config(format!(
            "error: `{variant}` has a kernel but no root file system to boot it with\n  help: add an `ext4` output: it becomes the guest's /dev/vda\n"
        )));
    };
    Ok(Boot::Kernel {
        kernel,
        initrd,
        cmdline: DIRECT_CMDLINE.to_owned(),
        root: Some(out_dir.join(&root.path)),
    })
}

/// A boot server of `out_dir` on a free loopback port.
fn start_server(out_dir: &Path) -> Result<kiln_boot::server::BootServer, Failure> {
    kiln_boot::server::BootServer::start(
        kiln_boot::server::BootOptions::new(out_dir.to_path_buf()),
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .map_err(|e| boot_failure(&e))
}

/// [`connector`] to the boot server at `addr`.
fn connector_to(addr: std::net::SocketAddr) -> Result<Vec<String>, Failure> {
    let mut c = connector()?;
    c.push(addr.to_string());
    Ok(c)
}

/// The program QEMU runs per guest connection to the boot server: this
/// very kiln, as `kiln connect-stdio ADDR` (the address is added last).
fn connector() -> Result<Vec<String>, Failure> {
    let exe = std::env::current_exe()
        .map_err(|e| Failure::Build(format!("error: cannot find the kiln program: {e}\n")))?;
    Ok(vec![
        exe.to_string_lossy().into_owned(),
        "connect-stdio".into(),
    ])
}

/// Network boot with QEMU's iPXE from the boot server's script for
/// `variant`.
fn netboot_of(variant: &str) -> Boot {
    Boot::Netboot {
        script: format!("http://{}/boot/{variant}.ipxe", qemu::GUEST_SERVER),
    }
}

/// Whether the variant's disk boots with `SeaBIOS`, from its settings.
fn boots_bios(plan: &kiln_plan::Plan, variant: &str) -> bool {
    plan.get(variant).is_none_or(|v| {
        v.settings
            .outputs
            .iter()
            .any(|o| o.boots_bios(&v.settings.arch))
    })
}

pub fn run_boot(args: &BootArgs, style: Style) -> Outcome {
    let (ws, plan) =
        crate::build_cmd::open(&args.dir, None, &kiln_plan::Selection::default(), style)?;
    let out_dir = ws.out_dir();
    let manifest = Manifest::read(&out_dir);
    let entry = entry_of(&manifest, &args.variant, &out_dir)?;
    let arch = plan.get(&args.variant).map_or_else(
        || kiln_config::settings::DEFAULT_ARCH.to_owned(),
        |v| v.settings.arch.clone(),
    );
    let disk = disk_of(entry, &out_dir);
    let firmware = match args.firmware {
        Some(FirmwareArg::Uefi) => Firmware::Uefi,
        None if disk.is_some() && !args.netboot && !boots_bios(&plan, &args.variant) => {
            Firmware::Uefi
        }
        Some(FirmwareArg::Bios) | None => Firmware::Bios,
    };
    let direct = args.direct
        || (!args.netboot
            && disk.is_none()
            && entry.netboot.is_none()
            && kernel_of(entry, &out_dir).is_some());
    let netboot = !direct && (args.netboot || (disk.is_none() && entry.netboot.is_some()));
    let mut _server = None;
    let mut connector = None;
    let (boot, what) = if direct {
        let what = if entry.netboot.is_some() {
            // The kernel and initrd handed over; the initrd fetches the
            // rest from a boot server on loopback, as over iPXE.
            let server = start_server(&out_dir)?;
            connector = Some(connector_to(server.addr())?);
            let what = format!(
                "kernel and initrd directly, the rest over HTTP from a boot server on {}",
                server.addr()
            );
            _server = Some(server);
            what
        } else {
            "kernel and initrd directly".to_owned()
        };
        (direct_boot(&args.variant, entry, &out_dir)?, what)
    } else if netboot {
        if kiln_boot::server::bootable(entry).is_none() {
            return Err(Failure::Config(format!(
                "error: `{}` does not boot over the network: it is no netboot variant and has no raw disk\n",
                args.variant
            )));
        }
        let server = start_server(&out_dir)?;
        connector = Some(connector_to(server.addr())?);
        let what = format!("over HTTP from a boot server on {} (iPXE)", server.addr());
        _server = Some(server);
        (netboot_of(&args.variant), what)
    } else if let Some((path, format)) = disk {
        let what = format!("{} ({format})", path.display());
        (Boot::Disk { path, format }, what)
    } else {
        return Err(Failure::Config(format!(
            "error: `{}` has nothing QEMU boots: no qcow2 or raw disk, no kernel with an ext4 root, and it is no netboot variant\n  help: add a `qcow2` output or an `ext4` one (with `kernel = true`), or `netboot = true` with a squashfs\n",
            args.variant
        )));
    };
    let mut machine = Machine {
        boot,
        firmware,
        memory: args.memory.clone(),
        cpus: args.cpus,
        connector,
        console: Console::Terminal,
        extra: Vec::new(),
    };
    machine.extra.clone_from(&args.qemu_args);
    let accel = Accel::detect();
    let mut cmd = qemu::command(&machine, &arch, accel).map_err(|e| boot_failure(&e))?;
    let _ = writeln!(
        std::io::stderr().lock(),
        "kiln boot: {} {what}, {}{}{}; quit with Ctrl-A X",
        args.variant,
        match (direct, firmware) {
            (true, _) => "",
            (false, Firmware::Bios) => "BIOS firmware, ",
            (false, Firmware::Uefi) => "UEFI firmware, ",
        },
        accel.name(),
        if accel == Accel::Tcg {
            " (no usable /dev/kvm: software emulation, slow)"
        } else {
            ""
        }
    );
    let status = cmd
        .status()
        .map_err(|e| Failure::Build(format!("error: failed to start QEMU: {e}\n")))?;
    if status.success() {
        Ok(String::new())
    } else {
        Err(Failure::Build(format!("error: QEMU ended with {status}\n")))
    }
}

/// The test of variant `name`, as its `[test]` says.
fn case_of(
    ws: &kiln_build::Workspace,
    plan: &kiln_plan::Plan,
    manifest: &Manifest,
    name: &str,
) -> Result<TestCase, Failure> {
    let out_dir = ws.out_dir();
    let v = plan.get(name).expect("a variant of the plan");
    let spec = v.settings.test.as_ref().expect("has a [test]");
    let entry = entry_of(manifest, name, &out_dir)?;
    let bad = |what: String| Failure::Config(format!("error: {name}: [test]: {what}\n"));
    if spec.expect.is_none() && spec.script.is_none() {
        return Err(bad(
            "it needs `expect` (a console line), `script` (run inside), or both".into(),
        ));
    }
    let script = match &spec.script {
        Some(rel) => {
            let path = ws.tree().root.join(rel);
            let bytes = std::fs::read(&path)
                .map_err(|e| bad(format!("the script `{rel}` ({}): {e}", path.display())))?;
            Some((rel.clone(), bytes))
        }
        None => None,
    };
    let memory = spec.memory.clone().unwrap_or_else(|| "2G".to_owned());
    // What boots, with which firmware, and whether the boot server runs
    // (its address is added to the connector when it starts).
    let (boot, firmware, netboot) = match spec.boot.as_str() {
        "netboot" => {
            if entry.netboot.is_none() {
                return Err(bad(format!(
                    "boot = \"netboot\" boots a netboot variant (`netboot = true` with `kernel = true` and a squashfs, or an overlay.cpio.gz over one), and `{name}` is none"
                )));
            }
            (netboot_of(name), Firmware::Bios, true)
        }
        "direct" => {
            // QEMU hands over the kernel and initrd; a netboot variant's
            // initrd fetches the rest from the boot server as over iPXE,
            // any other mounts its ext4 output.
            let boot = direct_boot(name, entry, &out_dir)
                .map_err(|_| bad(format!(
                    "boot = \"direct\" boots a kernel and initrd (`kernel = true`) with an `ext4` output as the root, or a netboot variant, and `{name}` is neither"
                )))?;
            if script.is_some() {
                return Err(bad("a script runs in netboot tests (`boot = \"netboot\"`) for now: it travels as one more overlay from the boot server; a direct boot checks `expect`".into()));
            }
            (boot, Firmware::Bios, entry.netboot.is_some())
        }
        firmware @ ("bios" | "uefi") => {
            let Some((path, format)) = disk_of(entry, &out_dir) else {
                return Err(bad(format!(
                    "boot = \"{firmware}\" boots a disk, and `{name}` has no qcow2 or raw output"
                )));
            };
            if script.is_some() {
                return Err(bad("a script runs in netboot tests (`boot = \"netboot\"`) for now; a disk test checks `expect`".into()));
            }
            let firmware = if firmware == "uefi" {
                Firmware::Uefi
            } else {
                Firmware::Bios
            };
            (Boot::Disk { path, format }, firmware, false)
        }
        other => return Err(bad(format!("unknown boot `{other}`"))),
    };
    let machine = Machine {
        boot,
        firmware,
        memory,
        cpus: 2,
        connector: if netboot { Some(connector()?) } else { None },
        console: Console::Terminal,
        extra: Vec::new(),
    };
    Ok(TestCase {
        variant: name.to_owned(),
        boot: spec.boot.clone(),
        machine,
        arch: v.settings.arch.clone(),
        expect: spec.expect.clone(),
        script,
        timeout: spec.timeout,
        out_dir: netboot.then(|| out_dir.clone()),
    })
}

pub fn run_test(args: &TestArgs, style: Style, cancel: &CancelToken) -> Outcome {
    let selection = crate::build_cmd::selection(&args.select);
    let (ws, plan) = crate::build_cmd::open(
        &args.dir,
        args.fetch.cache_dir.as_deref(),
        &selection,
        style,
    )?;
    let names: Vec<String> = plan
        .variants
        .iter()
        .filter(|v| v.settings.test.is_some() && kiln_build::selects(&selection, v))
        .map(|v| v.name.clone())
        .collect();
    if names.is_empty() {
        return Err(Failure::Config(
            "error: no selected variant has a [test] table\n  help: add `[test]` with `boot`, `expect` and `script` to an image.toml (see `kiln test --help`)\n".into(),
        ));
    }
    // What is tested is what a build of these inputs gives.
    let report = crate::build_cmd::build_first(
        &ws,
        &plan,
        args.progress,
        args.fetch.offline,
        style,
        cancel,
    )?;
    let cases = names
        .iter()
        .map(|n| case_of(&ws, &plan, &report.manifest, n))
        .collect::<Result<Vec<_>, _>>()?;
    let out_dir = ws.out_dir();
    let next = AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..args.parallel.clamp(1, cases.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(case) = cases.get(i) else { break };
                    let _ = writeln!(
                        std::io::stderr().lock(),
                        "kiln test: {}: booting ({})",
                        case.variant,
                        case.boot
                    );
                    let work = out_dir.join(&case.variant).join("test");
                    let result = kiln_boot::test::run(case, &work, cancel);
                    if let Ok(r) = &result {
                        let _ = writeln!(
                            std::io::stderr().lock(),
                            "kiln test: {}: {} in {:.0}s",
                            r.variant,
                            if r.passed { "passed" } else { "FAILED" },
                            r.seconds
                        );
                    }
                    results.lock().expect("not poisoned").push((i, result));
                }
            });
        }
    });
    let mut results = results.into_inner().expect("not poisoned");
    results.sort_by_key(|(i, _)| *i);
    let results = results
        .into_iter()
        .map(|(_, r)| r)
        .collect::<Result<Vec<TestResult>, _>>()
        .map_err(|e| boot_failure(&e))?;
    record(&out_dir, &results);
    let failed = results.iter().filter(|r| !r.passed).count();
    let text = if args.json {
        serde_json::to_string_pretty(&serde_json::json!({
            "tests": results,
            "passed": results.len() - failed,
            "failed": failed,
        }))
        .expect("serializable")
            + "\n"
    } else {
        render(&results)
    };
    if cancel.is_cancelled() {
        Err(Failure::Cancelled(text))
    } else if failed > 0 {
        Err(Failure::Build(text))
    } else {
        Ok(text)
    }
}

/// The results, into the variants' manifest entries.
fn record(out_dir: &Path, results: &[TestResult]) {
    let mut manifest = Manifest::read(out_dir);
    let at = kiln_build::manifest::rfc3339(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0)),
    );
    for r in results {
        if let Some(v) = manifest
            .variants
            .iter_mut()
            .find(|v| v.variant == r.variant)
        {
            v.test = Some(TestRecord {
                passed: r.passed,
                verdict: verdict_word(&r.verdict).to_owned(),
                boot: r.boot.clone(),
                millis: u64::try_from(
                    std::time::Duration::from_secs_f64(r.seconds.max(0.0)).as_millis(),
                )
                .unwrap_or(u64::MAX),
                at: at.clone(),
            });
        }
    }
    let _ = manifest.write(out_dir);
}

fn verdict_word(v: &Verdict) -> &'static str {
    match v {
        Verdict::Passed => "passed",
        Verdict::Failed { .. } => "failed",
        Verdict::TimedOut { .. } => "timed_out",
        Verdict::Ended { .. } => "ended",
        Verdict::Cancelled => "cancelled",
    }
}

fn render(results: &[TestResult]) -> String {
    let mut out = format!(
        "{:<7} {:<24} {:<8} {:>8}  {}\n",
        "RESULT", "VARIANT", "BOOT", "TIME", "DETAIL"
    );
    for r in results {
        let detail = match &r.verdict {
            Verdict::Passed => r
                .up_after
                .map_or_else(String::new, |s| format!("up after {s:.0}s ({})", r.accel)),
            Verdict::Failed { code } => format!("the script exited {code}"),
            Verdict::TimedOut { waiting_for } => format!("timed out waiting for {waiting_for}"),
            Verdict::Ended { status } => format!("QEMU ended first ({status})"),
            Verdict::Cancelled => "cancelled".to_owned(),
        };
        out.push_str(&format!(
            "{:<7} {:<24} {:<8} {:>7.0}s  {detail}\n",
            if r.passed { "pass" } else { "FAIL" },
            r.variant,
            r.boot,
            r.seconds
        ));
    }
    for r in results.iter().filter(|r| !r.passed) {
        out.push_str(&format!(
            "\n{}: the console's last lines ({}):\n",
            r.variant,
            r.console_log.display()
        ));
        for line in &r.console_tail {
            out.push_str(&format!("  | {line}\n"));
        }
    }
    let failed = results.iter().filter(|r| !r.passed).count();
    out.push_str(&format!(
        "\n{} passed, {failed} failed\n",
        results.len() - failed
    ));
    out
}
