//! The netboot example end to end: built, served by `kiln boot-server`,
//! booted over HTTP through QEMU's iPXE by `kiln test` (TCG here), and
//! the boot script's failures (a changed overlay, a 404, a connection
//! dropped mid-file, a base too big for the RAM, `kiln.on_fail=reboot`)
//! seen on the console. Root,
//! the Debian archive and `qemu-system-x86_64` are needed.

use std::fs;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::examples::{artifact, build, note_boot, run, shared_cache, tail, test_verdicts};
use crate::{have, kiln, skip_end_to_end};

/// A child process killed when dropped (QEMU, `kiln boot-server`).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `kiln boot-server DIR --listen 127.0.0.1:0 ARGS`, once it listens;
/// returns it and its address.
fn boot_server(dir: &Path, args: &[&str]) -> (Killed, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("boot-server")
        .arg(dir)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kiln boot-server starts");
    let mut line = String::new();
    BufReader::new(child.stderr.take().expect("stderr"))
        .read_line(&mut line)
        .expect("its first line");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    (Killed(child), addr)
}

fn get(addr: &str, path: &str) -> (u16, String) {
    get_with(addr, path, &["-H", "Host: 10.0.2.100"])
}

/// `GET path` from `addr` as written (`..` included), with the client's
/// own `Host`.
pub fn get_path(addr: &str, path: &str) -> (u16, String) {
    get_with(addr, path, &[])
}

fn get_with(addr: &str, path: &str, args: &[&str]) -> (u16, String) {
    let out = run(Command::new("curl")
        // --path-as-is: `..` reaches the server as it was written.
        .args(["-s", "--path-as-is", "-w", "\n%{http_code}"])
        .args(args)
        .arg(format!("http://{addr}{path}")));
    let (body, code) = out.rsplit_once('\n').expect("a status line");
    (code.trim().parse().expect("a status"), body.to_owned())
}

/// A proxy in front of `upstream` that cuts the first response longer
/// than `cut` bytes off after `cut` bytes (the connection closes
/// mid-file), then passes everything.
fn dropping_proxy(upstream: String, cut: usize) -> (String, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&dropped);
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { break };
            let Ok(mut server) = TcpStream::connect(&upstream) else {
                break;
            };
            let mut to_server = server.try_clone().expect("clone");
            let mut from_client = client.try_clone().expect("clone");
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from_client, &mut to_server);
            });
            let flag = Arc::clone(&flag);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                let mut sent = 0usize;
                loop {
                    let n = match server.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if !flag.load(Ordering::SeqCst) && sent + n > cut {
                        let _ = client.write_all(&buf[..cut - sent]);
                        flag.store(true, Ordering::SeqCst);
                        break;
                    }
                    if client.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    sent += n;
                }
                let _ = client.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    (addr, dropped)
}

/// Boots the web role's kernel and initrd directly (no iPXE: faster)
/// with `cmdline`, its forward to `server`, until `markers` all show
/// or QEMU ends; returns the console and whether QEMU ended by itself.
fn boot_direct(
    dir: &Path,
    cmdline: &str,
    server: &str,
    markers: &[&str],
    console: &Path,
) -> (String, bool) {
    boot_direct_with("1G", dir, cmdline, server, markers, console)
}

/// [`boot_direct`] with `memory` of RAM.
fn boot_direct_with(
    memory: &str,
    dir: &Path,
    cmdline: &str,
    server: &str,
    markers: &[&str],
    console: &Path,
) -> (String, bool) {
    let kiln = env!("CARGO_BIN_EXE_kiln");
    let child = Command::new("qemu-system-x86_64")
        .args([
            "-machine",
            "accel=tcg",
            "-m",
            memory,
            "-smp",
            "2",
            "-no-reboot",
        ])
        .args(["-display", "none", "-monitor", "none", "-serial"])
        .arg(format!("file:{}", console.display()))
        .arg("-kernel")
        .arg(dir.join("out/base/base-r0.vmlinuz"))
        .arg("-initrd")
        .arg(dir.join("out/base/base-r0.initrd.img"))
        .arg("-append")
        .arg(cmdline)
        .arg("-netdev")
        .arg(format!(
            "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:80-cmd:{kiln} connect-stdio {server}"
        ))
        .args(["-device", "virtio-net-pci,netdev=n0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu starts");
    let mut guest = Killed(child);
    let started = Instant::now();
    loop {
        let text =
            String::from_utf8_lossy(&fs::read(console).unwrap_or_default()).replace('\r', "");
        if markers.iter().all(|m| text.contains(m)) {
            return (text, false);
        }
        if let Ok(Some(_)) = guest.0.try_wait() {
            return (text, true);
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "no {markers:?} on the console:\n{}",
            tail(text.as_bytes())
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The web role's command line as the boot server writes it, for a
/// direct boot (the iPXE variable filled in).
fn web_cmdline(addr: &str, extra: &str) -> String {
    let (code, script) = get(addr, "/boot/web.ipxe");
    assert_eq!(code, 200, "{script}");
    let kernel = script
        .lines()
        .find(|l| l.starts_with("kernel "))
        .expect("a kernel line");
    let args = kernel.splitn(3, ' ').nth(2).expect("arguments");
    format!(
        "{} {extra} panic=-1",
        args.replace("${netX/mac:hexhyp}", "52-54-00-12-34-56")
            .replace("console=tty0 ", "")
    )
}

#[test]
fn netboot_example_boots_over_http_passes_its_test_and_says_what_failed() {
    if skip_end_to_end() || !have("unsquashfs") || !have("cpio") || !have("curl") {
        return;
    }
    let tree = crate::example_copy("netboot");
    let dir = tree.path();
    let m = build(dir, &shared_cache(), &["--parallel", "2"]);
    let squashfs = artifact(dir, &m, "base", "squashfs");
    let listing = run(Command::new("unsquashfs").arg("-lls").arg(&squashfs));
    assert!(listing.contains("/usr/lib/systemd/systemd"), "{listing}");
    let kernel = artifact(dir, &m, "base", "vmlinuz");
    let description = run(Command::new("file").arg("-b").arg(&kernel));
    assert!(
        description.contains("Linux kernel x86 boot executable"),
        "{description}"
    );
    let initrd = artifact(dir, &m, "base", "initrd.img");
    let mut magic = [0u8; 6];
    fs::File::open(&initrd)
        .and_then(|mut f| f.read_exact(&mut magic))
        .expect("initrd");
    assert!(
        magic == *b"070701" || magic[..4] == [0x28, 0xb5, 0x2f, 0xfd] || magic[..2] == [0x1f, 0x8b],
        "{magic:?}"
    );
    // Each overlay holds its role and nothing of the base.
    for (role, own) in [("web", "usr/sbin/nginx"), ("tools", "usr/bin/jq")] {
        let overlay = artifact(dir, &m, role, "overlay.cpio.gz");
        let names = run(Command::new("sh").arg("-c").arg(format!(
            "gzip -dc '{}' | cpio -it --quiet",
            overlay.display()
        )));
        assert!(names.lines().any(|l| l == own), "{role}: {names}");
        assert!(
            !names.lines().any(|l| l == "usr/lib/systemd/systemd"),
            "{role} holds base files"
        );
        let size = fs::metadata(&overlay).expect("overlay").len();
        assert!(
            size * 10 < fs::metadata(&squashfs).expect("squashfs").len(),
            "{role}'s overlay is not small: {size} bytes"
        );
    }
    // The initrd carries kiln's boot script and the applets it uses
    // (`netboot = true`, not the example's own files).
    if have("lsinitramfs") {
        let listing = run(Command::new("lsinitramfs").arg(&initrd));
        for own in [
            "scripts/kiln-netboot",
            "scripts/kiln-netboot-dhcp",
            "usr/sbin/udhcpc",
            "usr/bin/wget",
            "usr/bin/sha256sum",
        ] {
            assert!(listing.lines().any(|l| l == own), "{own}:\n{listing}");
        }
    }
    // The manifest says how each role boots: the base, its overlay, their
    // SHA-256s, the command line.
    let web = m["variants"]
        .as_array()
        .expect("variants")
        .iter()
        .find(|v| v["variant"] == "web")
        .expect("web");
    let overlay = artifact(dir, &m, "web", "overlay.cpio.gz");
    let netboot = &web["netboot"];
    assert_eq!(netboot["base_variant"], "base", "{netboot:#}");
    assert_eq!(netboot["overlays"][0]["path"], "web/web-r0.overlay.cpio.gz");
    let cmdline = netboot["cmdline"].as_str().expect("cmdline");
    let sha = |p: &Path| {
        run(Command::new("sha256sum").arg(p))
            .split(' ')
            .next()
            .expect("sum")
            .to_owned()
    };
    for part in [
        "boot=kiln-netboot".to_owned(),
        "kiln.base=base/base-r0.squashfs".to_owned(),
        format!("kiln.base.sha256={}", sha(&squashfs)),
        format!("kiln.overlay.sha256={}", sha(&overlay)),
    ] {
        assert!(cmdline.split(' ').any(|w| w == part), "{part} in {cmdline}");
    }

    // The boot server: iPXE scripts with the URLs of the host asked for,
    // the files with range requests, JSON errors.
    let (_server, addr) = boot_server(dir, &[]);
    let (code, menu) = get(&addr, "/boot/menu.ipxe");
    assert_eq!(code, 200);
    assert!(
        menu.starts_with("#!ipxe\n") && menu.contains("item web web"),
        "{menu}"
    );
    let (_, script) = get(&addr, "/boot/web.ipxe");
    assert!(
        script.contains("kernel http://10.0.2.100/boot/files/base/base-r0.vmlinuz ")
            && script.contains(
                "initrd --name initrd.img http://10.0.2.100/boot/files/base/base-r0.initrd.img"
            )
            && script.contains("kiln.url=http://10.0.2.100/boot/files"),
        "{script}"
    );
    let (code, body) = get(&addr, "/boot/nothing.ipxe");
    assert_eq!(code, 404);
    assert!(
        body.contains("\"error\"") && body.contains("nothing"),
        "{body}"
    );
    let (code, _) = get(&addr, "/boot/files/../kiln.toml");
    assert_eq!(code, 404);
    let range = run(Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            "-r",
            "4-9",
        ])
        .arg(format!("http://{addr}/boot/files/base/base-r0.squashfs")));
    assert_eq!(range, "206 6");
    if !have("qemu-system-x86_64") {
        return;
    }

    // `kiln test`: QEMU's iPXE fetches the script, the kernel and the
    // initrd from a boot server on loopback; the initrd fetches and checks
    // the squashfs, the overlay and the test's own overlay; the script
    // checks nginx inside the guest.
    let started = Instant::now();
    let tested = kiln(
        dir,
        &[
            "test",
            ".",
            "--cache-dir",
            shared_cache().to_str().expect("utf-8"),
            "--json",
        ],
    );
    assert_eq!(
        tested.code, 0,
        "kiln test:\n{}\n{}",
        tested.stdout, tested.stderr
    );
    assert_eq!(
        test_verdicts(&tested.stdout),
        [("web".to_owned(), "netboot".to_owned(), "passed".to_owned())]
    );
    note_boot(
        "netboot over HTTP (iPXE) to the web role's test",
        started.elapsed(),
    );
    let console = fs::read_to_string(dir.join("out/web/test/console.log")).expect("console");
    for line in [
        // iPXE filled in the interface's address: it ran the script.
        "BOOTIF=01-52-54-00-12-34-56",
        "SHA-256 verified",
        "nginx answered: <h1>served from RAM</h1>",
        "kiln-test: script exit 0",
    ] {
        assert!(
            console.contains(line),
            "{line}:\n{}",
            tail(console.as_bytes())
        );
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("out/manifest.json")).expect("manifest"))
            .expect("JSON");
    let web = manifest["variants"]
        .as_array()
        .expect("variants")
        .iter()
        .find(|v| v["variant"] == "web")
        .expect("web");
    assert_eq!(web["test"]["passed"], true, "{web:#}");

    // A failing script and a line that never comes: exit 1, both named,
    // the console's end shown. `[test]` is not part of the digest: nothing
    // is rebuilt.
    let built_at = fs::metadata(&squashfs)
        .and_then(|m| m.modified())
        .expect("mtime");
    fs::write(
        dir.join("tests/web.sh"),
        "#!/bin/sh\necho 'the check fails'\nexit 3\n",
    )
    .expect("write");
    let tools = dir.join("images/tools/image.toml");
    let text = fs::read_to_string(&tools).expect("tools");
    fs::write(
        &tools,
        format!("{text}\n[test]\nboot = \"netboot\"\nexpect = \"a line that never comes\"\ntimeout = \"100s\"\n"),
    )
    .expect("write");
    let failed = kiln(
        dir,
        &[
            "test",
            ".",
            "--cache-dir",
            shared_cache().to_str().expect("utf-8"),
            "--parallel",
            "2",
        ],
    );
    assert_eq!(failed.code, 1, "{}\n{}", failed.stdout, failed.stderr);
    assert_eq!(
        fs::metadata(&squashfs)
            .and_then(|m| m.modified())
            .expect("mtime"),
        built_at,
        "the base was rebuilt"
    );
    for want in [
        "FAIL    tools",
        "timed out waiting for `a line that never comes` on the console",
        "FAIL    web",
        "the script exited 3",
        "web: the console's last lines",
        "| the check fails",
        "0 passed, 2 failed",
    ] {
        // A failed test's report goes to stderr, as every error does.
        assert!(failed.stderr.contains(want), "{want}:\n{}", failed.stderr);
    }

    // Failures of the boot script, each on the console, with its retry.
    let scratch = tempfile::tempdir().expect("temp");
    // 1. An overlay that changed on the server: the hash mismatch, then
    //    `kiln.on_fail=reboot` reboots (QEMU, with -no-reboot, ends).
    let (_s, addr) = boot_server(dir, &[]);
    let cmdline = web_cmdline(&addr, "kiln.retries=2 kiln.on_fail=reboot");
    let served = dir.join("out/web/web-r0.overlay.cpio.gz");
    let original = fs::read(&served).expect("overlay");
    let mut changed = original.clone();
    changed.extend_from_slice(b"changed");
    fs::write(&served, &changed).expect("change");
    let (console, ended) = boot_direct(
        dir,
        &cmdline,
        &addr,
        &["never"],
        &scratch.path().join("mismatch.log"),
    );
    assert!(ended, "QEMU did not reboot:\n{}", tail(console.as_bytes()));
    for line in [
        "web-r0.overlay.cpio.gz: its SHA-256 is ",
        "(try 1 of 2, again in 1s)",
        "(try 2 of 2)",
        "rebooting (kiln.on_fail=reboot)",
    ] {
        assert!(
            console.contains(line),
            "{line}:\n{}",
            tail(console.as_bytes())
        );
    }
    // 2. A 404: said with the URL, then the rescue shell (the default).
    fs::remove_file(&served).expect("remove");
    let cmdline = web_cmdline(&addr, "kiln.retries=2");
    let (console, _) = boot_direct(
        dir,
        &cmdline,
        &addr,
        &["This is a rescue shell"],
        &scratch.path().join("404.log"),
    );
    assert!(
        console.contains("http://10.0.2.100/boot/files/web/web-r0.overlay.cpio.gz: server returned error: HTTP/1.1 404 Not Found (try 1 of 2"),
        "{}",
        tail(console.as_bytes())
    );
    fs::write(&served, &original).expect("restore");
    // 3. The connection dropped mid-file: said, retried, resumed, checked.
    let (proxy, dropped) = dropping_proxy(addr.clone(), 64 << 20);
    let cmdline = web_cmdline(&addr, "kiln.retries=3");
    let (console, _) = boot_direct(
        dir,
        &cmdline,
        &proxy,
        &[
            "base-r0.squashfs: 193",
            "SHA-256 verified",
            "overlay(s) in RAM",
        ],
        &scratch.path().join("drop.log"),
    );
    assert!(
        dropped.load(Ordering::SeqCst),
        "the proxy never cut a response"
    );
    let retry = console
        .lines()
        .find(|l| l.contains("base-r0.squashfs: ") && l.contains("(try 1 of 3, again in 1s)"));
    assert!(
        retry.is_some(),
        "no retry after the drop:\n{}",
        tail(console.as_bytes())
    );
    // 4. Too little RAM for the base (checked against its Content-Length
    //    before a byte is fetched; a sparse 3 GiB file as the base, 1 GiB
    //    of RAM): said with both figures, retried, then the rescue shell.
    let huge = dir.join("out/huge.squashfs");
    fs::File::create(&huge)
        .and_then(|f| f.set_len(3 << 30))
        .expect("sparse file");
    let cmdline = web_cmdline(&addr, "kiln.retries=2")
        .replace("kiln.base=base/base-r0.squashfs", "kiln.base=huge.squashfs");
    assert!(cmdline.contains("kiln.base=huge.squashfs"), "{cmdline}");
    let (console, _) = boot_direct(
        dir,
        &cmdline,
        &addr,
        &["This is a rescue shell"],
        &scratch.path().join("ram.log"),
    );
    let said = console.lines().find(|l| {
        l.contains("huge.squashfs: it needs 3072 MiB of RAM and ")
            && l.contains(" MiB are free (try 1 of 2")
    });
    assert!(said.is_some(), "{}", tail(console.as_bytes()));
}
