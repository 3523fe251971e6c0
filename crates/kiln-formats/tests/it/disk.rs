//! Bootable disks (`raw`, `qcow2`, `vhd`, `vmdk`), read back with the
//! field's tools: `sgdisk`, `sfdisk`, `qemu-img`, `e2fsck`, `fsck.vfat`,
//! mtools, and QEMU booting them with `SeaBIOS` and OVMF.

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_formats::{
    Arch, DiskOptions, Error, Firmware, GRUB_MKIMAGE, Input, NodeKind, Spec, Tree, write_artifact,
};
use kiln_layers::LayerStack;
use serde_json::Value;

use crate::ext4::{fsck, mount, mounted_tree};
use crate::{Compare, EPOCH, assert_same_tree, fixture, have, is_root, run};

const MIB: u64 = 1 << 20;
/// The kernel the fixture boots (an older one beside it must lose).
const VERSION: &str = "6.1.0-18-amd64";
const GRUB_MODULES: &[&str] = &[
    "biosdisk",
    "part_gpt",
    "fat",
    "normal",
    "linux",
    "echo",
    "configfile",
    "search",
    "test",
];
const HOST_EFI: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
const HOST_GRUB: &str = "/usr/lib/grub/i386-pc";

/// Which boot files a fixture has.
#[derive(Clone, Copy)]
struct Boot {
    kernel: bool,
    efi: bool,
    grub: bool,
}

const ALL: Boot = Boot {
    kernel: true,
    efi: true,
    grub: true,
};

/// Bytes that look like nothing else.
fn noise(len: usize, salt: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(salt).wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect()
}

fn write_file(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

/// GRUB's images: the host's (core.img made by its grub-mkimage, as the
/// build makes it in the image) or, without grub-pc-bin here, fakes of
/// the same shape.
fn grub_images(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    if Path::new(HOST_GRUB).join("boot.img").exists() && have("grub-mkimage") {
        let core = dir.join("core.img");
        assert!(GRUB_MKIMAGE.starts_with(
            "grub-mkimage -O i386-pc -o /boot/grub/i386-pc/core.img -p '(hd0,gpt2)/grub' "
        ));
        run(Command::new("grub-mkimage")
            .args(["-d", HOST_GRUB, "-O", "i386-pc", "-o"])
            .arg(&core)
            .args(["-p", "(hd0,gpt2)/grub"])
            .args(GRUB_MODULES));
        let boot = fs::read(Path::new(HOST_GRUB).join("boot.img")).unwrap();
        (boot, fs::read(&core).unwrap())
    } else {
        kiln_testkit::require::skip("the host's GRUB (grub-pc-bin) is not installed: fake images");
        let mut boot = noise(512, 1);
        boot[510] = 0x55;
        boot[511] = 0xAA;
        let mut core = noise(40 * 512 + 100, 2);
        core[500..512].copy_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0, 40, 0, 0x20, 0x08]);
        core[488..500].fill(0);
        (boot, core)
    }
}

/// Adds `boot`'s files to the layer at `root`: two kernels with their
/// initrds (fakes), systemd-boot (the host's or a fake), GRUB's images.
fn add_boot(root: &Path, boot: Boot, work: &Path) {
    write_file(
        &root.join("etc/os-release"),
        b"NAME=\"Test\"\nPRETTY_NAME=\"Kiln Test OS 1\"\n",
    );
    if boot.kernel {
        for (v, salt) in [("6.1.0-9-amd64", 3), (VERSION, 4)] {
            write_file(
                &root.join(format!("boot/vmlinuz-{v}")),
                &noise(3 * MIB as usize + 17, salt),
            );
            write_file(
                &root.join(format!("boot/initrd.img-{v}")),
                &noise(5 * MIB as usize + 3, salt + 10),
            );
        }
        std::os::unix::fs::symlink(format!("boot/vmlinuz-{VERSION}"), root.join("vmlinuz"))
            .unwrap();
    }
    if boot.efi {
        let efi = if Path::new(HOST_EFI).exists() {
            fs::read(HOST_EFI).unwrap()
        } else {
            kiln_testkit::require::skip("the host's systemd-boot-efi is not installed: a fake");
            noise(90_000, 5)
        };
        write_file(
            &root.join("usr/lib/systemd/boot/efi/systemd-bootx64.efi"),
            &efi,
        );
    }
    if boot.grub {
        let (boot_img, core_img) = grub_images(work);
        write_file(&root.join("usr/lib/grub/i386-pc/boot.img"), &boot_img);
        write_file(&root.join("boot/grub/i386-pc/core.img"), &core_img);
    }
}

/// A stack of one layer: [`fixture`] and the boot files.
fn disk_stack(boot: Boot) -> (tempfile::TempDir, LayerStack) {
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path().join("layer");
    fs::create_dir(&layer).unwrap();
    fixture(&layer);
    add_boot(&layer, boot, dir.path());
    (dir, LayerStack::new(vec![layer]))
}

fn write(
    spec: &Spec,
    stack: &LayerStack,
    threads: usize,
    seed: &[u8],
    out: &Path,
) -> Result<(), Error> {
    let input = Input {
        stack,
        layer_ids: &[],
        epoch: EPOCH,
        threads,
        cache_dir: None,
        seed,
        cancel: None,
    };
    write_artifact(spec, &input, out)
}

/// The GUID kiln derives from `seed` for `what`, as sfdisk prints it.
fn derived(seed: &[u8], what: &str) -> String {
    let mut h = blake3::Hasher::new_derive_key(&format!("kiln disk v1 {what}"));
    h.update(seed);
    let mut u = [0u8; 16];
    u.copy_from_slice(&h.finalize().as_bytes()[..16]);
    u[6] = (u[6] & 0x0F) | 0x40;
    u[8] = (u[8] & 0x3F) | 0x80;
    let hex = u.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02X}");
        s
    });
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// `sfdisk -J`'s partition table.
fn sfdisk(disk: &Path) -> Value {
    let json: Value =
        serde_json::from_str(&run(Command::new("sfdisk").arg("-J").arg(disk))).unwrap();
    json["partitiontable"].clone()
}

/// Start and size in bytes of partition `n` (1-based).
fn partition(table: &Value, n: usize) -> (u64, u64) {
    let p = &table["partitions"][n - 1];
    (
        p["start"].as_u64().unwrap() * 512,
        p["size"].as_u64().unwrap() * 512,
    )
}

/// Copies `len` bytes at `start` of `disk` to `out`.
fn extract(disk: &Path, start: u64, len: u64, out: &Path) {
    let mut f = fs::File::open(disk).unwrap();
    f.seek(SeekFrom::Start(start)).unwrap();
    let mut o = fs::File::create(out).unwrap();
    std::io::copy(&mut f.take(len), &mut o).unwrap();
    o.flush().unwrap();
}

fn qemu_img_info(path: &Path, format: &str) -> Value {
    serde_json::from_str(&run(Command::new("qemu-img")
        .args(["info", "--output=json", "-f", format])
        .arg(path)))
    .unwrap()
}

fn tools(names: &[&str]) -> bool {
    names.iter().all(|t| have(t))
}

#[test]
fn partitioning_tools_accept_the_disk_and_its_ids_come_from_the_seed() {
    if !tools(&["sgdisk", "sfdisk"]) {
        return;
    }
    let (dir, stack) = disk_stack(ALL);
    let disk = dir.path().join("disk.raw");
    write(
        &Spec::Raw(DiskOptions::default()),
        &stack,
        2,
        b"seed",
        &disk,
    )
    .unwrap();
    let len = fs::metadata(&disk).unwrap().len();
    assert_eq!(len % MIB, 0, "auto sizes are whole MiB");

    let verify = run(Command::new("sgdisk").arg("-v").arg(&disk));
    assert!(verify.contains("No problems found"), "{verify}");

    let table = sfdisk(&disk);
    assert_eq!(table["label"], "gpt");
    assert_eq!(table["id"], derived(b"seed", "disk GUID"));
    assert_eq!(table["firstlba"], 34);
    assert_eq!(table["lastlba"].as_u64().unwrap(), len / 512 - 34);
    let parts = table["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 3, "{table}");
    let want = [
        (
            "21686148-6449-6E6F-744E-656564454649",
            "BIOS boot",
            "BIOS boot partition GUID",
            2048,
            2048,
        ),
        (
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
            "ESP",
            "ESP partition GUID",
            4096,
            128 * 2048,
        ),
        (
            "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
            "root",
            "root partition GUID",
            130 * 2048,
            len / 512 - 131 * 2048,
        ),
    ];
    for (p, (kind, name, what, start, size)) in parts.iter().zip(want) {
        assert_eq!(p["type"], kind, "{p}");
        assert_eq!(p["name"], name, "{p}");
        assert_eq!(p["uuid"], derived(b"seed", what), "{p}");
        assert_eq!(p["start"], start, "{p}");
        assert_eq!(p["size"], size, "{p}");
    }
    // The protective MBR: one 0xEE partition over the disk.
    let raw = fs::read(&disk).unwrap();
    assert_eq!(raw[446 + 4], 0xEE);
    assert_eq!(&raw[510..512], &[0x55, 0xAA]);
    if have("qemu-img") {
        let info = qemu_img_info(&disk, "raw");
        assert_eq!(info["virtual-size"].as_u64(), Some(len));
    }

    // Another seed: other GUIDs, the same layout.
    let other = dir.path().join("other.raw");
    write(
        &Spec::Raw(DiskOptions::default()),
        &stack,
        2,
        b"other",
        &other,
    )
    .unwrap();
    let table2 = sfdisk(&other);
    assert_ne!(table2["id"], table["id"]);
    for (a, b) in parts.iter().zip(table2["partitions"].as_array().unwrap()) {
        assert_ne!(a["uuid"], b["uuid"]);
        assert_eq!(a["start"], b["start"]);
        assert_eq!(a["type"], b["type"]);
    }
    let sgdisk = run(Command::new("sgdisk").arg("-v").arg(&other));
    assert!(sgdisk.contains("No problems found"), "{sgdisk}");
}

#[test]
fn the_root_partition_is_the_tree() {
    if !tools(&["sfdisk", "e2fsck"]) {
        return;
    }
    let (dir, stack) = disk_stack(ALL);
    let disk = dir.path().join("disk.raw");
    let options = DiskOptions {
        label: Some("kiln-root".into()),
        ..DiskOptions::default()
    };
    write(&Spec::Raw(options), &stack, 2, b"seed", &disk).unwrap();
    let (start, len) = partition(&sfdisk(&disk), 3);
    let root = dir.path().join("root.ext4");
    extract(&disk, start, len, &root);
    fsck(&root);
    if have("dumpe2fs") {
        let sb = run(Command::new("dumpe2fs").arg("-h").arg(&root));
        assert!(sb.contains("Filesystem volume name:   kiln-root"), "{sb}");
        let blocks: u64 = sb
            .lines()
            .find_map(|l| l.strip_prefix("Block count:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(blocks * 4096, len, "the filesystem fills its partition");
    }
    if have("debugfs") {
        let out = dir.path().join("rdump");
        fs::create_dir(&out).unwrap();
        run(Command::new("debugfs")
            .arg("-R")
            .arg(format!("rdump / {}", out.display()))
            .arg(&root));
        let tree = Tree::merged(&stack, EPOCH).unwrap();
        for n in &tree.nodes {
            if let NodeKind::File { source, .. } = &n.kind {
                assert_eq!(
                    fs::read(out.join(&n.path)).unwrap(),
                    fs::read(source).unwrap(),
                    "{}",
                    n.path
                );
            }
        }
    }
    let Some(mnt) = mount(&root, &dir.path().join("mnt")) else {
        return;
    };
    assert!(is_root());
    let expected = Tree::merged(&stack, EPOCH).unwrap();
    assert_same_tree(
        &expected,
        &mounted_tree(&mnt.0),
        Compare {
            xattrs: true,
            skip_sockets: false,
        },
    );
}

/// `mdir`/`mcopy` of the ESP at `offset` of `disk`.
fn mtools(tool: &str, disk: &Path, offset: u64) -> Command {
    let mut cmd = Command::new(tool);
    cmd.env("MTOOLS_SKIP_CHECK", "1")
        .env("TZ", "UTC")
        .arg("-i")
        .arg(format!("{}@@{offset}", disk.display()));
    cmd
}

fn mread(disk: &Path, offset: u64, path: &str, out: &Path) -> Vec<u8> {
    let to = out.join(path.replace('/', "_"));
    run(mtools("mcopy", disk, offset)
        .arg("-n")
        .arg(format!("::{path}"))
        .arg(&to));
    fs::read(&to).unwrap()
}

#[test]
fn the_esp_holds_the_kernel_and_both_boot_loaders() {
    if !tools(&["sfdisk", "fsck.vfat", "mdir", "mcopy"]) {
        return;
    }
    let (dir, stack) = disk_stack(ALL);
    let disk = dir.path().join("disk.raw");
    let options = DiskOptions {
        cmdline: Some("console=ttyS0 quiet".into()),
        ..DiskOptions::default()
    };
    write(&Spec::Raw(options), &stack, 2, b"seed", &disk).unwrap();
    let table = sfdisk(&disk);
    let (start, len) = partition(&table, 2);
    let root_uuid = table["partitions"][2]["uuid"]
        .as_str()
        .unwrap()
        .to_lowercase();
    let esp = dir.path().join("esp.fat");
    extract(&disk, start, len, &esp);
    let fsck = run(Command::new("fsck.vfat").arg("-n").arg(&esp));
    assert!(!fsck.contains("differ"), "{fsck}");
    if have("file") {
        let kind = run(Command::new("file").arg("-b").arg(&esp));
        assert!(kind.contains("FAT (32 bit)"), "{kind}");
    }

    let listing = run(mtools("mdir", &disk, start).args(["-/", "-a", "::/"]));
    for name in [
        "vmlinuz",
        "initrd.img",
        "BOOTX64.EFI",
        "systemd-bootx64.efi",
        "loader.conf",
        "kiln.conf",
        "grub.cfg",
    ] {
        assert!(listing.contains(name), "{name} in {listing}");
    }
    // Every time is the epoch: 2023-11-14 22:13 UTC.
    let is_date = |w: &str| w.len() == 10 && w.as_bytes()[4] == b'-' && w.as_bytes()[7] == b'-';
    let entries = listing
        .lines()
        .filter(|l| l.split_whitespace().any(is_date))
        .count();
    let dated = listing
        .lines()
        .filter(|l| l.contains("2023-11-14  22:13"))
        .count();
    assert!(dated >= 7 && dated == entries, "{listing}");

    let read = |path: &str| mread(&disk, start, path, dir.path());
    let layer = &stack.layers[0];
    assert_eq!(
        read("/vmlinuz"),
        fs::read(layer.join(format!("boot/vmlinuz-{VERSION}"))).unwrap(),
        "the newest kernel"
    );
    assert_eq!(
        read("/initrd.img"),
        fs::read(layer.join(format!("boot/initrd.img-{VERSION}"))).unwrap()
    );
    let efi = fs::read(layer.join("usr/lib/systemd/boot/efi/systemd-bootx64.efi")).unwrap();
    assert_eq!(read("/EFI/BOOT/BOOTX64.EFI"), efi);
    assert_eq!(read("/EFI/systemd/systemd-bootx64.efi"), efi);
    let loader = String::from_utf8(read("/loader/loader.conf")).unwrap();
    assert!(loader.contains("timeout 0\n"), "{loader}");
    assert!(loader.contains("default kiln.conf\n"), "{loader}");
    let cmdline = format!("root=PARTUUID={root_uuid} rw console=ttyS0 quiet");
    let entry = String::from_utf8(read("/loader/entries/kiln.conf")).unwrap();
    assert_eq!(
        entry,
        format!("title Kiln Test OS 1\nlinux /vmlinuz\ninitrd /initrd.img\noptions {cmdline}\n")
    );
    let grub = String::from_utf8(read("/grub/grub.cfg")).unwrap();
    assert!(grub.contains("set timeout=0\n"), "{grub}");
    assert!(
        grub.contains(&format!("\tlinux /vmlinuz {cmdline}\n")),
        "{grub}"
    );
    assert!(grub.contains("\tinitrd /initrd.img\n"), "{grub}");
    assert!(grub.contains("\tboot\n"), "{grub}");
}

#[test]
fn grub_is_where_the_bios_and_its_block_lists_look() {
    let (dir, stack) = disk_stack(ALL);
    let disk = dir.path().join("disk.raw");
    write(
        &Spec::Raw(DiskOptions::default()),
        &stack,
        2,
        b"seed",
        &disk,
    )
    .unwrap();
    let raw = fs::read(&disk).unwrap();
    let layer = &stack.layers[0];
    let boot = fs::read(layer.join("usr/lib/grub/i386-pc/boot.img")).unwrap();
    let core = fs::read(layer.join("boot/grub/i386-pc/core.img")).unwrap();
    // boot.img's code, patched as grub-bios-setup patches it.
    let mbr = &raw[..512];
    assert_eq!(&mbr[..3], &boot[..3], "the jump");
    assert!(mbr[3..0x5A].iter().all(|&b| b == 0), "a blank BPB");
    assert_eq!(&mbr[0x5A..0x5C], &boot[0x5A..0x5C]);
    assert_eq!(&mbr[0x5C..0x64], &2048u64.to_le_bytes(), "core.img's LBA");
    assert_eq!(mbr[0x64], 0xFF, "the boot drive: the BIOS's");
    assert_eq!(mbr[0x65], boot[0x65]);
    assert_eq!(&mbr[0x66..0x68], &[0x90, 0x90], "no floppy drive check");
    assert_eq!(&mbr[0x68..0x1B8], &boot[0x68..0x1B8]);
    assert_eq!(&mbr[0x1B8..0x1BE], &[0; 6], "no disk signature");
    assert_eq!(&mbr[0x1FE..], &[0x55, 0xAA]);
    // core.img in the BIOS boot partition, its block list the rest of it.
    let at = MIB as usize;
    let sectors = core.len().div_ceil(512);
    let first = &raw[at..at + 512];
    assert_eq!(&first[..488], &core[..488]);
    assert!(first[488..500].iter().all(|&b| b == 0), "the terminator");
    assert_eq!(&first[500..508], &2049u64.to_le_bytes());
    assert_eq!(
        u16::from_le_bytes([first[508], first[509]]) as usize,
        sectors - 1
    );
    assert_eq!(&first[510..512], &[0x20, 0x08], "segment 0x820");
    assert_eq!(&raw[at + 512..at + core.len()], &core[512..]);
    assert!(raw[at + core.len()..2 * at].iter().all(|&b| b == 0));
}

#[test]
fn the_same_input_gives_the_same_bytes_in_every_format() {
    let (dir, stack) = disk_stack(ALL);
    let options = DiskOptions::default();
    let mut specs = vec![
        ("raw", Spec::Raw(options.clone())),
        ("vhd", Spec::Vhd(options.clone())),
    ];
    if have("qemu-img") {
        specs.push(("qcow2", Spec::Qcow2(options.clone())));
        specs.push(("vmdk", Spec::Vmdk(options.clone())));
    }
    for (name, spec) in specs {
        let mut digests = Vec::new();
        for threads in [1, 2] {
            let out = dir.path().join(format!("t{threads}.{name}"));
            write(&spec, &stack, threads, b"seed", &out).unwrap();
            digests.push(blake3::hash(&fs::read(&out).unwrap()));
        }
        assert_eq!(digests[0], digests[1], "{name}");
        let other = dir.path().join(format!("other.{name}"));
        write(&spec, &stack, 2, b"other seed", &other).unwrap();
        assert_ne!(
            blake3::hash(&fs::read(&other).unwrap()),
            digests[0],
            "{name}"
        );
        // Nothing left beside them.
        let stray: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("partial") || n.ends_with(".raw.raw"))
            .collect();
        assert!(stray.is_empty(), "{stray:?}");
    }
}

#[test]
fn qemu_img_reads_every_conversion_back_to_the_raw_disk() {
    if !have("qemu-img") {
        return;
    }
    let (dir, stack) = disk_stack(ALL);
    let options = DiskOptions::default();
    let raw = dir.path().join("disk.raw");
    write(&Spec::Raw(options.clone()), &stack, 2, b"seed", &raw).unwrap();
    let len = fs::metadata(&raw).unwrap().len();
    let raw_digest = blake3::hash(&fs::read(&raw).unwrap());
    let back = |path: &Path, opts: &[&str]| {
        let out = dir.path().join("back.raw");
        let _ = fs::remove_file(&out);
        run(Command::new("qemu-img")
            .arg("convert")
            .args(opts)
            .arg(path)
            .args(["-O", "raw"])
            .arg(&out));
        blake3::hash(&fs::read(&out).unwrap())
    };

    let qcow2 = dir.path().join("disk.qcow2");
    write(&Spec::Qcow2(options.clone()), &stack, 2, b"seed", &qcow2).unwrap();
    run(Command::new("qemu-img")
        .args(["check", "-f", "qcow2"])
        .arg(&qcow2));
    let info = qemu_img_info(&qcow2, "qcow2");
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["virtual-size"].as_u64(), Some(len));
    assert!(
        fs::metadata(&qcow2).unwrap().len() < len / 2,
        "a sparse qcow2"
    );
    assert_eq!(back(&qcow2, &["-f", "qcow2"]), raw_digest);

    let vmdk = dir.path().join("disk.vmdk");
    write(&Spec::Vmdk(options.clone()), &stack, 2, b"seed", &vmdk).unwrap();
    run(Command::new("qemu-img")
        .args(["check", "-f", "vmdk"])
        .arg(&vmdk));
    let info = qemu_img_info(&vmdk, "vmdk");
    assert_eq!(info["format"], "vmdk");
    assert_eq!(info["virtual-size"].as_u64(), Some(len));
    assert_eq!(
        info["format-specific"]["data"]["create-type"],
        "monolithicSparse"
    );
    let head = fs::read(&vmdk).unwrap();
    let text = String::from_utf8_lossy(&head[512..512 + 20 * 512]);
    assert!(text.contains("SPARSE \"disk.vmdk\""), "{text}");
    assert!(!text.contains("partial"), "{text}");
    let cid = text.lines().find(|l| l.starts_with("CID=")).unwrap();
    assert_eq!(cid.len(), 12, "{cid}");
    assert_eq!(back(&vmdk, &["-f", "vmdk"]), raw_digest);

    let vhd = dir.path().join("disk.vhd");
    write(&Spec::Vhd(options), &stack, 2, b"seed", &vhd).unwrap();
    assert_eq!(fs::metadata(&vhd).unwrap().len(), len + 512);
    let info = qemu_img_info(&vhd, "vpc");
    assert_eq!(info["format"], "vpc");
    // qemu sizes a VHD of an unknown creator by its CHS geometry, a
    // little less than the disk; Azure and Hyper-V by its current size.
    let chs = info["virtual-size"].as_u64().unwrap();
    assert!(chs <= len && chs > len - 16 * MIB, "{chs} of {len}");
    let exact = format!(
        "driver=vpc,force_size_calc=current_size,file.filename={}",
        vhd.display()
    );
    let info: Value = serde_json::from_str(&run(Command::new("qemu-img").args([
        "info",
        "--output=json",
        "--image-opts",
        &exact,
    ])))
    .unwrap();
    assert_eq!(info["virtual-size"].as_u64(), Some(len));
    assert_eq!(back(Path::new(&exact), &["--image-opts"]), raw_digest);
    let footer = &fs::read(&vhd).unwrap()[len as usize..];
    assert_eq!(&footer[..8], b"conectix");
    assert_eq!(&footer[28..32], b"kiln");
    assert_eq!(&footer[36..40], b"Lnux");
    assert_eq!(
        u32::from_be_bytes(footer[60..64].try_into().unwrap()),
        2,
        "fixed"
    );
    assert_eq!(
        i64::from(u32::from_be_bytes(footer[24..28].try_into().unwrap())),
        EPOCH - 946_684_800
    );
    assert_eq!(u64::from_be_bytes(footer[48..56].try_into().unwrap()), len);
    let sum = footer
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .fold(0u32, |s, (_, &b)| s + u32::from(b));
    assert_eq!(u32::from_be_bytes(footer[64..68].try_into().unwrap()), !sum);
}

#[test]
fn fixed_sizes_are_the_disks_size_or_an_error() {
    let (dir, stack) = disk_stack(ALL);
    let disk = dir.path().join("fixed.raw");
    let fixed = |size| DiskOptions {
        size: Some(size),
        ..DiskOptions::default()
    };
    write(
        &Spec::Raw(fixed(400 * MIB + 4096)),
        &stack,
        2,
        b"seed",
        &disk,
    )
    .unwrap();
    assert_eq!(fs::metadata(&disk).unwrap().len(), 400 * MIB + 4096);
    if have("sgdisk") {
        let verify = run(Command::new("sgdisk").arg("-v").arg(&disk));
        assert!(verify.contains("No problems found"), "{verify}");
    }
    if have("sfdisk") && have("e2fsck") {
        let (start, len) = partition(&sfdisk(&disk), 3);
        assert_eq!((start, len), (130 * MIB, 269 * MIB));
        let root = dir.path().join("root.ext4");
        extract(&disk, start, len, &root);
        fsck(&root);
    }
    // A VHD's size is a whole MiB.
    let vhd = dir.path().join("fixed.vhd");
    write(
        &Spec::Vhd(fixed(400 * MIB + 4096)),
        &stack,
        2,
        b"seed",
        &vhd,
    )
    .unwrap();
    assert_eq!(fs::metadata(&vhd).unwrap().len(), 401 * MIB + 512);

    // Too small for the root, or for anything: an error, no file.
    for (size, says) in [
        (140 * MIB, "for the root partition"),
        (100 * MIB, "no room"),
    ] {
        let small = dir.path().join("small.raw");
        let err = write(&Spec::Raw(fixed(size)), &stack, 2, b"seed", &small).unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains(&size.to_string()) && msg.contains(says),
            "{msg}"
        );
        assert!(!small.exists());
    }
    let err = write(&Spec::Raw(fixed(400 * MIB + 1)), &stack, 2, b"seed", &disk).unwrap_err();
    assert!(matches!(err, Error::Options { .. }), "{err}");
    let err = write(
        &Spec::Raw(DiskOptions {
            esp_size: Some(32 * MIB),
            ..DiskOptions::default()
        }),
        &stack,
        2,
        b"seed",
        &disk,
    )
    .unwrap_err();
    assert!(err.to_string().contains("ESP size"), "{err}");
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn missing_boot_files_name_the_package_that_brings_them() {
    let cases = [
        (
            Boot {
                kernel: false,
                ..ALL
            },
            Firmware::Hybrid,
            "`kernel = true`",
        ),
        (
            Boot { efi: false, ..ALL },
            Firmware::Uefi,
            "`systemd-boot-efi`",
        ),
        (Boot { grub: false, ..ALL }, Firmware::Bios, "`grub-pc-bin`"),
        (
            Boot { grub: false, ..ALL },
            Firmware::Hybrid,
            "grub-mkimage -O i386-pc",
        ),
    ];
    for (boot, firmware, says) in cases {
        let (dir, stack) = disk_stack(boot);
        let disk = dir.path().join("disk.raw");
        let options = DiskOptions {
            firmware,
            ..DiskOptions::default()
        };
        let err = write(&Spec::Raw(options), &stack, 2, b"seed", &disk).unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{err}");
        assert!(err.to_string().contains(says), "{says} in {err}");
        assert!(!disk.exists());
    }
    // What a firmware does not need, it does not ask for.
    let (dir, stack) = disk_stack(Boot { grub: false, ..ALL });
    let disk = dir.path().join("uefi.raw");
    let uefi = DiskOptions {
        firmware: Firmware::Uefi,
        ..DiskOptions::default()
    };
    write(&Spec::Raw(uefi), &stack, 2, b"seed", &disk).unwrap();
    let raw = fs::read(&disk).unwrap();
    assert!(raw[..440].iter().all(|&b| b == 0), "no boot code");
    let (dir2, stack) = disk_stack(Boot { efi: false, ..ALL });
    let bios = DiskOptions {
        firmware: Firmware::Bios,
        ..DiskOptions::default()
    };
    write(
        &Spec::Raw(bios),
        &stack,
        2,
        b"seed",
        &dir2.path().join("bios.raw"),
    )
    .unwrap();
    // BIOS is x86's.
    let arm = DiskOptions {
        firmware: Firmware::Bios,
        arch: Arch::Arm64,
        ..DiskOptions::default()
    };
    let err = write(&Spec::Raw(arm), &stack, 2, b"seed", &disk).unwrap_err();
    assert!(err.to_string().contains("`uefi`"), "{err}");
    drop(dir);
}

#[test]
fn an_esp_too_small_for_the_kernel_says_so() {
    let (dir, stack) = disk_stack(ALL);
    // A big (sparse) initrd for the newest kernel.
    let initrd = stack.layers[0].join(format!("boot/initrd.img-{VERSION}"));
    fs::File::create(&initrd)
        .unwrap()
        .set_len(70 * MIB)
        .unwrap();
    let disk = dir.path().join("disk.raw");
    let options = DiskOptions {
        esp_size: Some(64 * MIB),
        ..DiskOptions::default()
    };
    let err = write(&Spec::Raw(options), &stack, 2, b"seed", &disk).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("`esp_size`"), "{err}");
    assert!(!disk.exists());
    // The default ESP holds it.
    write(
        &Spec::Raw(DiskOptions::default()),
        &stack,
        2,
        b"seed",
        &disk,
    )
    .unwrap();
}

#[test]
fn an_arm64_disk_has_an_aarch64_root_and_systemd_boot_for_aa64() {
    let (dir, stack) = disk_stack(Boot {
        efi: false,
        grub: false,
        ..ALL
    });
    let layer = &stack.layers[0];
    let efi = noise(70_000, 9);
    write_file(
        &layer.join("usr/lib/systemd/boot/efi/systemd-bootaa64.efi"),
        &efi,
    );
    let disk = dir.path().join("arm.raw");
    // Hybrid on arm64 is UEFI alone: no GRUB asked for.
    let options = DiskOptions {
        arch: Arch::Arm64,
        ..DiskOptions::default()
    };
    write(&Spec::Raw(options), &stack, 2, b"seed", &disk).unwrap();
    if !tools(&["sfdisk", "mcopy"]) {
        return;
    }
    let table = sfdisk(&disk);
    assert_eq!(
        table["partitions"][2]["type"],
        "B921B045-1DF0-41C3-AF44-4C6F280D3FAE"
    );
    let (start, _) = partition(&table, 2);
    assert_eq!(
        mread(&disk, start, "/EFI/BOOT/BOOTAA64.EFI", dir.path()),
        efi
    );
}

#[test]
fn identities_differ_by_format_and_option() {
    let a = DiskOptions::default();
    let b = DiskOptions {
        firmware: Firmware::Uefi,
        ..DiskOptions::default()
    };
    let ids = [
        Spec::Raw(a.clone()).identity(),
        Spec::Qcow2(a.clone()).identity(),
        Spec::Vhd(a.clone()).identity(),
        Spec::Vmdk(a).identity(),
        Spec::Raw(b).identity(),
    ];
    for (i, x) in ids.iter().enumerate() {
        for y in &ids[i + 1..] {
            assert_ne!(x, y);
        }
    }
}

/// The host's newest kernel and its initrd, for booting.
fn host_kernel() -> Option<(PathBuf, PathBuf, String)> {
    let mut best: Option<String> = None;
    for e in fs::read_dir("/boot").ok()? {
        let name = e.ok()?.file_name().to_string_lossy().into_owned();
        if let Some(v) = name.strip_prefix("vmlinuz-")
            && Path::new(&format!("/boot/initrd.img-{v}")).exists()
            && best.as_deref().is_none_or(|b| b < v)
        {
            best = Some(v.to_owned());
        }
    }
    let v = best?;
    Some((
        format!("/boot/vmlinuz-{v}").into(),
        format!("/boot/initrd.img-{v}").into(),
        v,
    ))
}

/// Runs QEMU on `disk` until its serial console shows `want` or
/// `timeout` passes; returns what it printed.
fn boot(disk: &Path, uefi: Option<&Path>, want: &str, timeout: Duration) -> String {
    let log = disk.with_extension("serial");
    let mut cmd = Command::new("qemu-system-x86_64");
    // TCG: KVM is not always there, and nested it may hang a kernel.
    cmd.args([
        "-machine",
        "accel=tcg",
        "-m",
        "1024",
        "-nographic",
        "-no-reboot",
    ])
    .args(["-nodefaults", "-serial"])
    .arg(format!("file:{}", log.display()))
    .arg("-drive")
    .arg(format!(
        "file={},format=raw,if=virtio,snapshot=on",
        disk.display()
    ));
    if let Some(vars) = uefi {
        cmd.arg("-drive")
            .arg("if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd")
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,file={}", vars.display()));
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu runs");
    let start = Instant::now();
    let mut out = String::new();
    while start.elapsed() < timeout {
        std::thread::sleep(Duration::from_millis(500));
        out = fs::read(&log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        if out.contains(want) || child.try_wait().ok().flatten().is_some() {
            break;
        }
    }
    let _ = child.kill();
    let status = child.wait();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    eprintln!("QEMU ({status:?}, {:?}): {err}", start.elapsed());
    out
}

#[test]
fn qemu_boots_the_disk_with_a_bios_and_with_uefi() {
    if !have("qemu-system-x86_64")
        || !Path::new(HOST_GRUB).exists()
        || !Path::new(HOST_EFI).exists()
    {
        kiln_testkit::require::skip(
            "booting needs qemu-system-x86, ovmf, grub-pc-bin and systemd-boot-efi",
        );
        return;
    }
    let Some((kernel, initrd, version)) = host_kernel() else {
        kiln_testkit::require::skip("no kernel in the host's /boot (install linux-image-amd64)");
        return;
    };
    if !Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd").exists() {
        kiln_testkit::require::skip("no OVMF (install ovmf)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path().join("layer");
    fs::create_dir(&layer).unwrap();
    add_boot(
        &layer,
        Boot {
            kernel: false,
            ..ALL
        },
        dir.path(),
    );
    fs::copy(&kernel, layer.join(format!("boot/vmlinuz-{version}"))).unwrap();
    fs::copy(&initrd, layer.join(format!("boot/initrd.img-{version}"))).unwrap();
    // The root's /sbin/init, when busybox is here: it says so and stops.
    let busybox = Path::new("/bin/busybox");
    let init = busybox.exists()
        && have("file")
        && run(Command::new("file").arg("-b").arg(busybox)).contains("statically linked");
    if init {
        // What initramfs-tools moves its mounts to.
        for d in ["bin", "sbin", "dev", "proc", "sys", "run", "tmp"] {
            fs::create_dir_all(layer.join(d)).unwrap();
        }
        fs::copy(busybox, layer.join("bin/busybox")).unwrap();
        write_file(
            &layer.join("sbin/init"),
            b"#!/bin/busybox sh\n/bin/busybox echo KILN-ROOT-IS-UP\n/bin/busybox poweroff -f\n",
        );
        run(Command::new("chmod")
            .arg("755")
            .arg(layer.join("sbin/init")));
    }
    let stack = LayerStack::new(vec![layer]);
    let disk = dir.path().join("boot.raw");
    write(
        &Spec::Raw(DiskOptions::default()),
        &stack,
        2,
        b"boot",
        &disk,
    )
    .unwrap();
    let root_uuid = derived(b"boot", "root partition GUID").to_lowercase();
    let vars = dir.path().join("vars.fd");
    fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).unwrap();
    let want = if init {
        "KILN-ROOT-IS-UP"
    } else {
        "Linux version"
    };
    for (how, uefi) in [("BIOS", None), ("UEFI", Some(vars.as_path()))] {
        let out = boot(&disk, uefi, want, Duration::from_secs(150));
        let tail: String = out
            .chars()
            .rev()
            .take(3000)
            .collect::<String>()
            .chars()
            .rev()
            .collect();
        assert!(
            out.contains(&format!(
                "Linux version {}",
                version.split('-').next().unwrap()
            )),
            "{how}: no kernel banner:\n{tail}"
        );
        assert!(
            out.contains(&format!(
                "root=PARTUUID={root_uuid} rw console=tty0 console=ttyS0,115200"
            )),
            "{how}: the kernel's command line:\n{tail}"
        );
        assert!(out.contains(want), "{how}: no {want}:\n{tail}");
    }
}

/// qcow2 and vmdk come from qemu-img: its version is part of their
/// identity (a stored artifact made by another version is made again);
/// raw and vhd are kiln's own bytes and do not depend on it.
#[test]
fn qemu_img_version_is_part_of_the_converted_formats_identity() {
    let options = DiskOptions::default();
    let version = Command::new("qemu-img")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "none".to_owned(),
            |o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            },
        );
    for spec in [Spec::Qcow2(options.clone()), Spec::Vmdk(options.clone())] {
        let identity = spec.identity();
        assert!(
            identity.ends_with(&format!("tool={version:?}")),
            "{identity}"
        );
    }
    for spec in [Spec::Raw(options.clone()), Spec::Vhd(options)] {
        assert!(!spec.identity().contains("qemu"), "{}", spec.identity());
    }
}
