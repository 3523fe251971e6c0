#!/usr/bin/env python3
"""Boot time of the netboot example's web role: over HTTP through QEMU's
iPXE and `kiln boot-server`, against the same role booted from a qcow2
disk (SeaBIOS, GRUB), in the same run, alternating, medians.

The tree is a copy of examples/netboot in bench/work/netboot whose `web`
image also writes a qcow2 (with `kernel = true`: the disk boots the same
kernel). Phases are read off the serial console as it is written (polled
every 50 ms):

  netboot: firmware+iPXE (QEMU start -> the kernel's first line),
           kernel+initrd (-> the first `fetching`), download (-> the
           last `SHA-256 verified`), mount (-> `root is`), userspace
           (-> the web role's line);
  disk:    firmware+loader (-> the kernel's first line), kernel+userspace
           (-> the web role's line).

Usage (as root, qemu-system-x86_64, a debug or release kiln):
  bench/netboot.py [ROUNDS]      (default 3)
KILN=path/to/kiln picks the binary (default target/debug/kiln; it only
serves files here: the guest's time is what is measured); KILN_CACHE=DIR
the cache the tree is built with (default bench/work/netboot/cache).
"""

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KILN = os.environ.get("KILN", str(ROOT / "target/debug/kiln"))
WORK = ROOT / "bench/work/netboot"
TREE = WORK / "tree"
MARK = "kiln-netboot-web: root on"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def prepare():
    if not TREE.exists():
        shutil.copytree(ROOT / "examples/netboot", TREE)
        web = TREE / "images/web/image.toml"
        text = web.read_text().replace(
            'outputs = ["overlay.cpio.gz"]',
            'kernel = true\noutputs = ["overlay.cpio.gz", { format = "qcow2", firmware = "bios", size = "2G" }]',
        )
        web.write_text(text)
    subprocess.run(
        [KILN, "build", str(TREE), "--cache-dir", os.environ.get("KILN_CACHE", str(WORK / "cache")), "--progress", "plain"],
        check=True,
    )
    return json.loads((TREE / "out/manifest.json").read_text())


def watch(cmd, console, marks, limit=300):
    """Starts cmd; returns the seconds at which each mark first showed."""
    console.unlink(missing_ok=True)
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen = {}
    try:
        while len(seen) < len(marks):
            if time.monotonic() - start > limit:
                raise SystemExit(f"timed out; seen {seen}")
            if proc.poll() is not None:
                raise SystemExit(f"QEMU ended; seen {seen}")
            text = console.read_text(errors="replace") if console.exists() else ""
            now = time.monotonic() - start
            for name, test in marks:
                if name not in seen and test(text):
                    seen[name] = now
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    return seen


def qemu(console, *args):
    return [
        "qemu-system-x86_64", "-machine", "accel=tcg", "-m", "2G", "-smp", "2",
        "-display", "none", "-monitor", "none", "-serial", f"file:{console}", "-no-reboot",
        *args,
    ]


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    manifest = prepare()
    web = next(v for v in manifest["variants"] if v["variant"] == "web")
    n = web["netboot"]
    out = TREE / "out"
    fetched = {
        "kernel": (out / n["kernel"]).stat().st_size,
        "initrd": (out / n["initrd"]).stat().st_size,
        "squashfs": n["base"]["size"],
        "overlay": sum(o["size"] for o in n["overlays"]),
    }
    qcow2 = next(out / a["path"] for a in web["artifacts"] if a["format"] == "qcow2")
    port = free_port()
    server = subprocess.Popen(
        [KILN, "boot-server", str(TREE), "--listen", f"127.0.0.1:{port}", "--console", "console=ttyS0,115200"],
        stderr=subprocess.PIPE,
    )
    server.stderr.readline()
    console = WORK / "console.log"
    netboot_cmd = qemu(
        console,
        "-netdev",
        f"user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:80-cmd:{KILN} connect-stdio 127.0.0.1:{port},"
        "bootfile=http://10.0.2.100/boot/web.ipxe",
        "-device", "virtio-net-pci,netdev=n0", "-boot", "n",
    )
    disk_cmd = qemu(
        console,
        "-drive", f"file={qcow2},if=virtio,format=qcow2,snapshot=on",
        "-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0",
    )
    net_marks = [
        ("kernel", lambda t: "Linux version" in t),
        ("fetch", lambda t: "kiln-netboot: fetching" in t),
        ("fetched", lambda t: t.count("SHA-256 verified") >= 1 + len(n["overlays"])),
        ("mounted", lambda t: "kiln-netboot: root is" in t),
        ("up", lambda t: MARK in t),
    ]
    disk_marks = [("kernel", lambda t: "Linux version" in t), ("up", lambda t: MARK in t)]
    results = {"netboot": [], "disk": []}
    try:
        for r in range(rounds):
            order = ["netboot", "disk"] if r % 2 == 0 else ["disk", "netboot"]
            for kind in order:
                if kind == "netboot":
                    results[kind].append(watch(netboot_cmd, console, net_marks))
                else:
                    results[kind].append(watch(disk_cmd, console, disk_marks))
                print(kind, {k: round(v, 1) for k, v in results[kind][-1].items()}, flush=True)
    finally:
        server.kill()
        server.wait()

    def med(kind, key):
        return statistics.median(x[key] for x in results[kind])

    nk, nf, nd, nm, nu = (med("netboot", k) for k in ["kernel", "fetch", "fetched", "mounted", "up"])
    dk, du = med("disk", "kernel"), med("disk", "up")
    print(f"\nmedians over {rounds} rounds (TCG), seconds from QEMU start:")
    print(f"netboot: firmware+iPXE {nk:.1f}, kernel+initrd {nf - nk:.1f}, download {nd - nf:.1f}, "
          f"mount {nm - nd:.1f}, userspace {nu - nm:.1f}; up at {nu:.1f}")
    print(f"disk:    firmware+GRUB {dk:.1f}, kernel+userspace {du - dk:.1f}; up at {du:.1f}")
    print(f"netboot / disk: {nu / du:.2f}x")
    mib = {k: round(v / 2**20, 1) for k, v in fetched.items()}
    print(f"fetched over HTTP (MiB): {mib}, in all {sum(fetched.values()) / 2**20:.1f}")


if __name__ == "__main__":
    main()
