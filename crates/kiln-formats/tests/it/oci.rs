//! `oci` and `oci.tar` images, read back with skopeo, umoci and podman and
//! compared with the merged root of the layers they were written from.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_formats::{Compression, Error, Input, OciOptions, Spec, Tree, write_artifact};
use kiln_layers::LayerStack;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::{Compare, EPOCH, assert_same_tree, fixture, have, is_root, run, sha256};

/// `EPOCH` as RFC 3339.
const CREATED: &str = "2023-11-14T22:13:20Z";

/// A base layer (the fixture) and two child layers as overlayfs leaves
/// upper folders: new and replaced files, a hard link, and — as root,
/// which whiteouts (devices) and trusted xattrs need — whiteouts of a
/// file, a folder and a file of the layer below, and opaque folders.
struct Layered {
    temp: tempfile::TempDir,
    stack: LayerStack,
}

fn layered() -> Layered {
    let temp = tempfile::tempdir().unwrap();
    let [base, one, two] = ["base", "one", "two"].map(|n| temp.path().join(n));
    fs::create_dir(&base).unwrap();
    fixture(&base);

    fs::create_dir_all(one.join("etc")).unwrap();
    fs::create_dir_all(one.join("var/big")).unwrap();
    fs::create_dir_all(one.join("opt/app")).unwrap();
    fs::write(one.join("etc/new-file"), b"new in layer one\n").unwrap();
    fs::write(one.join("etc/tiny"), b"replaced by layer one\n").unwrap();
    fs::set_permissions(one.join("etc/tiny"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::write(one.join("var/big/entry-new"), b"the only entry left").unwrap();
    fs::write(one.join("opt/app/run.sh"), b"#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(
        one.join("opt/app/run.sh"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    symlink("run.sh", one.join("opt/app/link")).unwrap();

    fs::create_dir_all(two.join("etc")).unwrap();
    fs::create_dir_all(two.join("opt")).unwrap();
    fs::create_dir_all(two.join("var/big")).unwrap();
    fs::write(two.join("opt/other"), b"replaces all of /opt").unwrap();
    fs::write(two.join("var/big/entry-two"), b"added by layer two").unwrap();
    fs::write(two.join("etc/hl-a"), b"two names").unwrap();
    fs::hard_link(two.join("etc/hl-a"), two.join("etc/hl-b")).unwrap();

    if is_root() {
        std::os::unix::fs::chown(one.join("etc/tiny"), Some(7), Some(8)).unwrap();
        for whiteout in [
            one.join("etc/empty"),
            one.join("etc/deep"),
            two.join("etc/new-file"),
        ] {
            run(Command::new("mknod").arg(whiteout).args(["c", "0", "0"]));
        }
        for opaque in [one.join("var/big"), two.join("opt")] {
            run(Command::new("setfattr")
                .args(["-n", "trusted.overlay.opaque", "-v", "y"])
                .arg(opaque));
        }
    } else {
        kiln_testkit::require::skip("whiteouts and opaque folders need root");
    }
    Layered {
        stack: LayerStack::new(vec![base, one, two]),
        temp,
    }
}

impl Layered {
    /// The stack of the first `n` layers (a base variant, a child).
    fn upto(&self, n: usize) -> LayerStack {
        LayerStack::new(self.stack.layers[..n].to_vec())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.temp.path().join(name)
    }
}

fn options() -> OciOptions {
    OciOptions {
        entrypoint: vec!["/usr/bin/tool".into()],
        cmd: vec!["--flag".into(), "arg with space".into()],
        env: vec!["LANG=C.UTF-8".into()],
        working_dir: Some("/opt".into()),
        user: Some("1000:1000".into()),
        labels: BTreeMap::from([
            ("org.example.b".into(), "2".into()),
            ("org.example.a".into(), "1".into()),
        ]),
        ref_name: Some("kiln-test".into()),
        docker_reference: Some("kiln-test:latest".into()),
        ..OciOptions::default()
    }
}

fn write_with(
    spec: &Spec,
    stack: &LayerStack,
    ids: &[[u8; 32]],
    threads: usize,
    cache: Option<&Path>,
    dest: &Path,
) -> Result<(), Error> {
    let input = Input {
        stack,
        layer_ids: ids,
        epoch: EPOCH,
        threads,
        cache_dir: cache,
        seed: b"test",
        cancel: None,
    };
    write_artifact(spec, &input, dest)
}

fn write(spec: &Spec, stack: &LayerStack, dest: &Path) {
    write_with(spec, stack, &[], 2, None, dest).unwrap();
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

fn blob(layout: &Path, digest: &Value) -> PathBuf {
    let digest = digest.as_str().unwrap();
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// The manifest and config of the only image of a layout folder.
fn manifest_and_config(layout: &Path) -> (Value, Value) {
    let index = json(&layout.join("index.json"));
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{index}");
    let manifest = json(&blob(layout, &manifests[0]["digest"]));
    let config = json(&blob(layout, &manifest["config"]["digest"]));
    (manifest, config)
}

fn layer_digests(layout: &Path) -> Vec<String> {
    let (manifest, _) = manifest_and_config(layout);
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect()
}

/// Every file and folder below `dir` with its mode and content digest.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(p) = pending.pop() {
        let meta = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(dir).unwrap().display().to_string();
        if meta.is_dir() {
            out.push(format!("{rel}/ {:o}", meta.mode()));
            for e in fs::read_dir(&p).unwrap() {
                pending.push(e.unwrap().path());
            }
        } else {
            out.push(format!("{rel} {:o} {}", meta.mode(), sha256(&p)));
        }
    }
    out.sort();
    out
}

/// The uncompressed bytes of a layer blob.
fn decompressed(path: &Path, media_type: &str) -> Vec<u8> {
    let raw = fs::read(path).unwrap();
    match media_type.rsplit('+').next().unwrap() {
        "gzip" => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        }
        "zstd" => zstd::decode_all(&raw[..]).unwrap(),
        _ => raw,
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// Asserts that `root` (an image unpacked by a tool) is the merged root of
/// `stack`. Layers hold no entry for the root itself, so its metadata is
/// the tool's.
fn assert_is_merged_root(stack: &LayerStack, root: &Path) {
    let expected = Tree::merged(stack, EPOCH).unwrap();
    let mut actual = Tree::merged(&LayerStack::new(vec![root.to_path_buf()]), i64::MAX).unwrap();
    let (e, a) = (&expected.nodes[0], &mut actual.nodes[0]);
    (a.mode, a.uid, a.gid, a.xattrs) = (e.mode, e.uid, e.gid, e.xattrs.clone());
    assert_same_tree(
        &expected,
        &actual,
        Compare {
            xattrs: true,
            skip_sockets: true,
        },
    );
}

#[test]
fn layers_hold_oci_whiteouts_and_their_digests() {
    let l = layered();
    let out = l.path("image");
    write(&Spec::Oci(options()), &l.stack, &out);
    assert_eq!(
        fs::read_to_string(out.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let (manifest, config) = manifest_and_config(&out);
    let layers = manifest["layers"].as_array().unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    assert_eq!(diff_ids.len(), 3);
    let mut tars = Vec::new();
    for (layer, diff_id) in layers.iter().zip(diff_ids) {
        let path = blob(&out, &layer["digest"]);
        let media_type = layer["mediaType"].as_str().unwrap();
        assert_eq!(media_type, "application/vnd.oci.image.layer.v1.tar+gzip");
        assert_eq!(
            layer["size"].as_u64().unwrap(),
            fs::metadata(&path).unwrap().len()
        );
        assert_eq!(hex_sha256(&fs::read(&path).unwrap()), layer["digest"]);
        let tar = decompressed(&path, media_type);
        assert_eq!(&hex_sha256(&tar), diff_id);
        let tar_path = path.with_extension("tar");
        fs::write(&tar_path, &tar).unwrap();
        let names = run(Command::new("tar").arg("-tf").arg(&tar_path));
        fs::remove_file(&tar_path).unwrap();
        assert!(
            !tar.windows(15).any(|w| w == b"overlay.opaque="),
            "the opaque xattr is not stored"
        );
        tars.push(names);
    }
    assert!(tars[0].lines().any(|n| n == "etc/tiny"), "{}", tars[0]);
    assert!(
        !tars[0].lines().any(|n| n.starts_with("./") || n == "/"),
        "no `./` prefix, no root entry: {}",
        tars[0]
    );
    assert!(!tars[0].contains(".wh."), "the base is a plain root");
    if is_root() {
        for name in ["etc/.wh.empty", "etc/.wh.deep", "var/big/.wh..wh..opq"] {
            assert!(tars[1].lines().any(|n| n == name), "{name}: {}", tars[1]);
        }
        for name in ["etc/.wh.new-file", "opt/.wh..wh..opq"] {
            assert!(tars[2].lines().any(|n| n == name), "{name}: {}", tars[2]);
        }
        // The opaque marker comes right after its folder.
        let two: Vec<&str> = tars[2].lines().collect();
        let opt = two.iter().position(|n| *n == "opt/").unwrap();
        assert_eq!(two[opt + 1], "opt/.wh..wh..opq", "{two:?}");
    }
}

#[test]
fn skopeo_inspects_and_copies_the_layout_and_umoci_unpacks_the_merged_root() {
    if !have("skopeo") {
        return;
    }
    let l = layered();
    let out = l.path("image");
    write(&Spec::Oci(options()), &l.stack, &out);
    let target = format!("oci:{}", out.display());

    let inspect: Value =
        serde_json::from_str(&run(Command::new("skopeo").args(["inspect", &target]))).unwrap();
    assert_eq!(inspect["Architecture"], "amd64", "{inspect}");
    assert_eq!(inspect["Os"], "linux");
    assert_eq!(inspect["Created"], CREATED);
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 3);
    assert_eq!(inspect["Labels"]["org.example.a"], "1");
    let with_ref = format!("{target}:kiln-test");
    run(Command::new("skopeo").args(["inspect", &with_ref]));

    let config: Value = serde_json::from_str(&run(
        Command::new("skopeo").args(["inspect", "--config", &target])
    ))
    .unwrap();
    assert_eq!(config["created"], CREATED, "{config}");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    let c = &config["config"];
    assert_eq!(c["Entrypoint"], serde_json::json!(["/usr/bin/tool"]));
    assert_eq!(c["Cmd"], serde_json::json!(["--flag", "arg with space"]));
    assert_eq!(
        c["Env"],
        serde_json::json!([kiln_formats::DEFAULT_PATH, "LANG=C.UTF-8"])
    );
    assert_eq!(c["WorkingDir"], "/opt");
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(
        c["Labels"],
        serde_json::json!({"org.example.a": "1", "org.example.b": "2"})
    );
    let history = config["history"].as_array().unwrap();
    assert_eq!(history.len(), 3);
    assert!(history.iter().all(|h| h["created"] == CREATED), "{config}");

    // skopeo checks every blob's digest as it copies.
    let copy = l.path("copy");
    run(Command::new("skopeo")
        .args(["copy", "--quiet", &target])
        .arg(format!("dir:{}", copy.display())));
    for digest in layer_digests(&out) {
        let name = digest.strip_prefix("sha256:").unwrap();
        assert!(copy.join(name).is_file(), "{name} copied");
    }

    if !is_root() {
        kiln_testkit::require::skip(
            "unpacking with umoci needs root to restore owners and devices",
        );
        return;
    }
    if !have("umoci") {
        return;
    }
    let bundle = l.path("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image", &with_ref[4..]])
        .arg(&bundle));
    assert_is_merged_root(&l.stack, &bundle.join("rootfs"));
}

#[test]
fn skopeo_reads_the_archive_and_podman_loads_it() {
    if !have("skopeo") || !have("tar") {
        return;
    }
    let l = layered();
    let file = l.path("image.oci.tar");
    write(&Spec::OciTar(options()), &l.stack, &file);

    let listing = run(Command::new("tar")
        .args(["--numeric-owner", "--full-time", "-tvf"])
        .arg(&file));
    let names: Vec<&str> = listing
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "entries are sorted");
    assert_eq!(&names[..2], ["blobs/", "blobs/sha256/"]);
    assert_eq!(
        &names[names.len() - 3..],
        ["index.json", "manifest.json", "oci-layout"]
    );
    // 3 layers, the config and the manifest.
    assert_eq!(names.len(), 2 + 5 + 3, "{listing}");
    for line in listing.lines() {
        assert!(line.contains(" 0/0 "), "owned by root: {line}");
        assert!(line.contains(" 2023-11-14 22:13:20 "), "dated: {line}");
        let mode = if line.starts_with('d') {
            "drwxr-xr-x"
        } else {
            "-rw-r--r--"
        };
        assert!(line.starts_with(mode), "{line}");
    }

    let target = format!("oci-archive:{}", file.display());
    let inspect: Value =
        serde_json::from_str(&run(Command::new("skopeo").args(["inspect", &target]))).unwrap();
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 3, "{inspect}");
    assert_eq!(inspect["Architecture"], "amd64");
    let config: Value = serde_json::from_str(&run(
        Command::new("skopeo").args(["inspect", "--config", &target])
    ))
    .unwrap();
    assert_eq!(config["config"]["User"], "1000:1000");
    let copy = l.path("copy");
    run(Command::new("skopeo")
        .args(["copy", "--quiet", &target])
        .arg(format!("dir:{}", copy.display())));
    // The same file read as a Docker archive (what `docker load` reads):
    // the same config, the layers by their uncompressed digests (as Docker
    // archives name them), tagged from the ref name. Copying it out
    // decompresses every layer and checks it against those digests.
    let docker = format!("docker-archive:{}", file.display());
    let as_docker: Value =
        serde_json::from_str(&run(Command::new("skopeo").args(["inspect", &docker]))).unwrap();
    assert_eq!(
        as_docker["Layers"], config["rootfs"]["diff_ids"],
        "{as_docker}"
    );
    let docker_config: Value = serde_json::from_str(&run(
        Command::new("skopeo").args(["inspect", "--config", &docker])
    ))
    .unwrap();
    assert_eq!(docker_config, config);
    let manifest: Value = serde_json::from_str(&run(Command::new("tar")
        .args(["-xOf"])
        .arg(&file)
        .arg("manifest.json")))
    .unwrap();
    assert_eq!(
        manifest[0]["RepoTags"],
        serde_json::json!(["kiln-test:latest"])
    );
    let copy = l.path("copy-docker");
    run(Command::new("skopeo")
        .args(["copy", "--quiet", &docker])
        .arg(format!("dir:{}", copy.display())));

    if !is_root() {
        kiln_testkit::require::skip("podman load needs root here");
        return;
    }
    if !have("podman") {
        return;
    }
    // A private store, so the test touches nothing of the machine's.
    let store = l.path("podman");
    let podman = || {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(store.join("root"))
            .arg("--runroot")
            .arg(store.join("run"))
            .args(["--storage-driver", "vfs", "--events-backend", "none"]);
        c
    };
    let loaded = run(podman().args(["load", "--quiet", "-i"]).arg(&file));
    assert!(loaded.contains("kiln-test"), "{loaded}");
    let image = "localhost/kiln-test:latest";
    let config: Value = serde_json::from_str(&run(podman().args([
        "image",
        "inspect",
        "--format",
        "{{json .Config}}",
        image,
    ])))
    .unwrap();
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/bin/tool"]),
        "{config}"
    );
    // vfs "mounts" are plain folders in the private store.
    let mounted = run(podman().args(["image", "mount", image]));
    assert_is_merged_root(&l.stack, Path::new(mounted.trim()));
    run(podman().args(["image", "unmount", image]));
    run(podman().args(["rmi", "--all", "--force"]));
}

#[test]
fn a_base_and_its_children_share_the_base_layers_blobs() {
    let l = layered();
    let digests: Vec<Vec<String>> = (1..=3)
        .map(|n| {
            let out = l.path(&format!("image-{n}"));
            write(&Spec::Oci(OciOptions::default()), &l.upto(n), &out);
            layer_digests(&out)
        })
        .collect();
    assert_eq!(digests[0].len(), 1);
    assert_eq!(digests[1][..1], digests[0][..]);
    assert_eq!(digests[2][..2], digests[1][..]);
    assert_ne!(digests[2][1], digests[2][2]);
}

#[test]
fn the_same_layers_give_the_same_bytes_whatever_the_threads_and_path() {
    let l = layered();
    let spec = Spec::Oci(options());
    let (a, b) = (l.path("a/image"), l.path("b/other-name"));
    write_with(&spec, &l.stack, &[], 1, None, &a).unwrap();
    write_with(&spec, &l.stack, &[], 2, None, &b).unwrap();
    assert_eq!(listing(&a), listing(&b));
    let tar = Spec::OciTar(options());
    let (a, b) = (l.path("a.oci.tar"), l.path("b/b.oci.tar"));
    write_with(&tar, &l.stack, &[], 1, None, &a).unwrap();
    write_with(&tar, &l.stack, &[], 3, None, &b).unwrap();
    assert_eq!(sha256(&a), sha256(&b));
    // zstd layers too, with the same tars inside.
    let zstd = |threads| {
        let out = l.path(&format!("zstd-{threads}"));
        let spec = Spec::Oci(OciOptions {
            compression: Compression::ZSTD,
            ..options()
        });
        write_with(&spec, &l.stack, &[], threads, None, &out).unwrap();
        out
    };
    let (z1, z2) = (zstd(1), zstd(2));
    assert_eq!(listing(&z1), listing(&z2));
    let (gzip_manifest, gzip_config) = manifest_and_config(&l.path("a/image"));
    let (zstd_manifest, zstd_config) = manifest_and_config(&z1);
    assert_eq!(gzip_config["rootfs"], zstd_config["rootfs"]);
    assert_eq!(
        zstd_manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    for (i, layer) in zstd_manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let tar = decompressed(&blob(&z1, &layer["digest"]), "+zstd");
        assert_eq!(hex_sha256(&tar), zstd_config["rootfs"]["diff_ids"][i]);
    }
    assert_ne!(gzip_manifest["layers"], zstd_manifest["layers"]);
    if have("skopeo") {
        run(Command::new("skopeo")
            .args(["copy", "--quiet"])
            .arg(format!("oci:{}", z1.display()))
            .arg(format!("dir:{}", l.path("zstd-copy").display())));
    }
}

/// The inode and size of every entry of the blob cache. Entries are written
/// by renaming a new file over the old one, so a rewrite changes the inode;
/// the mtime is no witness, as every hit refreshes it for `kiln store gc`.
fn cache_entries(cache: &Path) -> BTreeMap<String, (u64, u64)> {
    fs::read_dir(cache.join("oci-blobs"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                (m.ino(), m.len()),
            )
        })
        .collect()
}

/// The mtime of a blob cache entry, in nanoseconds.
fn used_at(cache: &Path, name: &str) -> i128 {
    let m = fs::metadata(cache.join("oci-blobs").join(name)).unwrap();
    i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec())
}

#[test]
fn the_blob_cache_reuses_layers_and_rewrites_a_corrupt_entry() {
    let l = layered();
    let cache = l.path("cache");
    let ids = [[1u8; 32], [2u8; 32], [3u8; 32]];
    let spec = Spec::Oci(options());
    let build = |stack: &LayerStack, ids: &[[u8; 32]], out: &str| {
        let out = l.path(out);
        write_with(&spec, stack, ids, 2, Some(&cache), &out).unwrap();
        listing(&out)
    };
    let plain = build(&l.stack, &[], "plain");
    assert!(!cache.join("oci-blobs").exists(), "no ids, no cache");

    // The base variant fills the cache with its layer, the child reuses it.
    build(&l.upto(1), &ids[..1], "base-image");
    let base_entries = cache_entries(&cache);
    assert_eq!(base_entries.len(), 1);
    let base_name = base_entries.keys().next().unwrap().clone();
    let base_made = used_at(&cache, &base_name);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let first = build(&l.stack, &ids, "first");
    assert!(
        used_at(&cache, &base_name) > base_made,
        "a hit marks the entry used, for `kiln store gc`"
    );
    assert_eq!(first, plain, "cached blobs are the same bytes");
    let entries = cache_entries(&cache);
    assert_eq!(entries.len(), 3);
    for (name, stat) in &base_entries {
        assert_eq!(&entries[name], stat, "the base layer was not written again");
    }

    // A hit is not compressed again: the cache trusts the layer id, so a
    // layer changed under the same id still gives the cached blob.
    fs::write(l.stack.layers[2].join("opt/other"), b"changed").unwrap();
    assert_eq!(build(&l.stack, &ids, "second"), first);
    assert_eq!(cache_entries(&cache), entries, "no entry rewritten");
    fs::write(l.stack.layers[2].join("opt/other"), b"replaces all of /opt").unwrap();

    // A flipped bit and a truncated entry are misses: written again.
    let names: Vec<&String> = entries.keys().collect();
    let flipped = cache.join("oci-blobs").join(names[0]);
    let mut bytes = fs::read(&flipped).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 0x40;
    fs::write(&flipped, &bytes).unwrap();
    let truncated = cache.join("oci-blobs").join(names[1]);
    let bytes = fs::read(&truncated).unwrap();
    fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    assert_eq!(build(&l.stack, &ids, "third"), first);
    let repaired = cache_entries(&cache);
    assert_ne!(repaired[names[0]], entries[names[0]], "rewritten");
    assert_ne!(repaired[names[1]], entries[names[1]], "rewritten");
    assert_eq!(repaired[names[2]], entries[names[2]], "kept");
    assert_eq!(build(&l.stack, &ids, "fourth"), first);
    assert_eq!(
        cache_entries(&cache),
        repaired,
        "the repaired entries are hits"
    );

    // Another compression is another blob.
    let zstd = Spec::Oci(OciOptions {
        compression: Compression::ZSTD,
        ..options()
    });
    write_with(&zstd, &l.stack, &ids, 2, Some(&cache), &l.path("zstd")).unwrap();
    assert_eq!(cache_entries(&cache).len(), 6);

    let err = write_with(&spec, &l.stack, &ids[..2], 2, Some(&cache), &l.path("bad"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "Failed to use the oci options: 2 layer ids were given for 3 layers"
    );
}

#[test]
fn a_layout_folder_replaces_the_previous_one_atomically() {
    let l = layered();
    let dest = l.path("out/image");
    write(&Spec::Oci(options()), &l.upto(1), &dest);
    let first = listing(&dest);
    // A stale temporary folder of a write that died is removed first.
    let stale = l
        .path("out")
        .join(format!(".image.partial-{}", std::process::id()));
    fs::create_dir_all(stale.join("junk")).unwrap();
    write(&Spec::Oci(options()), &l.stack, &dest);
    let second = listing(&dest);
    assert_ne!(first, second);
    assert_eq!(layer_digests(&dest).len(), 3);
    let left: Vec<_> = fs::read_dir(l.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["image"], "nothing left beside it");
    // A file in its place is replaced too.
    fs::remove_dir_all(&dest).unwrap();
    fs::write(&dest, b"an old file").unwrap();
    write(&Spec::Oci(options()), &l.stack, &dest);
    assert_eq!(listing(&dest), second);
    // The archive: no layout folder left behind.
    write(
        &Spec::OciTar(options()),
        &l.stack,
        &l.path("out/image.oci.tar"),
    );
    let mut left: Vec<_> = fs::read_dir(l.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["image", "image.oci.tar"]);
}

#[test]
fn what_oci_cannot_hold_is_refused() {
    let temp = tempfile::tempdir().unwrap();
    let [base, top] = ["base", "top"].map(|n| temp.path().join(n));
    fs::create_dir_all(&base).unwrap();
    fs::create_dir_all(top.join("etc")).unwrap();
    fs::write(top.join("etc/.wh.name"), b"").unwrap();
    let stack = LayerStack::new(vec![base, top]);
    let dest = temp.path().join("image");
    let err = write_with(
        &Spec::Oci(OciOptions::default()),
        &stack,
        &[],
        1,
        None,
        &dest,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "Failed to write `etc/.wh.name` as an OCI layer: names starting with `.wh.` mark whiteouts there"
    );
    assert!(!dest.exists());
    assert_eq!(
        fs::read_dir(temp.path()).unwrap().count(),
        2,
        "nothing left behind"
    );

    for (options, reason) in [
        (
            OciOptions {
                compression: Compression::XZ,
                ..OciOptions::default()
            },
            "OCI layers cannot be compressed with xz; use gzip, zstd or none",
        ),
        (
            OciOptions {
                ref_name: Some("my tag".into()),
                ..OciOptions::default()
            },
            "ref name `my tag` is not an OCI reference (letters and digits separated by one of `-._:@+`, `--` or `/`)",
        ),
        (
            OciOptions {
                env: vec!["NOVALUE".into()],
                ..OciOptions::default()
            },
            "environment entry `NOVALUE` is not `NAME=value`",
        ),
        (
            OciOptions {
                docker_reference: Some("Vm:latest".into()),
                ..OciOptions::default()
            },
            "`Vm:latest` is not a Docker reference `REPOSITORY:TAG` (a lower-case repository, a tag of letters, digits, `_`, `.` and `-`)",
        ),
    ] {
        let err = write_with(&Spec::OciTar(options), &stack, &[], 1, None, &dest)
            .unwrap_err()
            .to_string();
        assert_eq!(err, format!("Failed to use the oci.tar options: {reason}"));
    }
}

/// A private `dockerd` (its own data root and socket, no networking),
/// stopped when dropped.
struct Dockerd {
    child: std::process::Child,
    socket: PathBuf,
}

impl Dockerd {
    fn start(dir: &Path) -> Dockerd {
        use std::os::unix::process::CommandExt as _;
        let socket = dir.join("docker.sock");
        let log = fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(dir.join("root"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .args(["--storage-driver", "vfs"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            // Its own process group: its containerd goes with it.
            .process_group(0)
            .spawn()
            .unwrap();
        let daemon = Dockerd { child, socket };
        let started = std::time::Instant::now();
        while daemon
            .docker()
            .arg("info")
            .output()
            .is_ok_and(|o| !o.status.success())
        {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "dockerd did not start: {}",
                fs::read_to_string(dir.join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        daemon
    }

    fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.arg("-H").arg(format!("unix://{}", self.socket.display()));
        c
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let pgid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::TERM);
        let _ = self.child.wait();
    }
}

/// `oci.tar` carries Docker's `manifest.json`: a Docker daemon older than
/// 25 (Debian bookworm's is 20.10), which reads no OCI archive, loads it,
/// tagged, with the image's config and every layer.
#[test]
fn docker_loads_the_archive() {
    if !is_root() {
        kiln_testkit::require::skip("dockerd needs root here");
        return;
    }
    if !have("dockerd") || !have("docker") {
        return;
    }
    let l = layered();
    let file = l.path("image.oci.tar");
    write(&Spec::OciTar(options()), &l.stack, &file);
    let daemon_dir = tempfile::Builder::new()
        .prefix("kiln-dockerd")
        .tempdir_in("/tmp")
        .unwrap();
    let daemon = Dockerd::start(daemon_dir.path());
    let loaded = run(daemon.docker().args(["load", "-i"]).arg(&file));
    assert!(
        loaded.contains("Loaded image: kiln-test:latest"),
        "{loaded}"
    );
    let image: Value = serde_json::from_str(&run(daemon.docker().args([
        "image",
        "inspect",
        "--format",
        "{{json .}}",
        "kiln-test:latest",
    ])))
    .unwrap();
    let target = format!("oci-archive:{}", file.display());
    let config: Value = serde_json::from_str(&run(
        Command::new("skopeo").args(["inspect", "--config", &target])
    ))
    .unwrap();
    assert_eq!(
        image["RootFS"]["Layers"], config["rootfs"]["diff_ids"],
        "{image}"
    );
    assert_eq!(image["Config"]["User"], "1000:1000");
    assert_eq!(
        image["Config"]["Entrypoint"],
        serde_json::json!(["/usr/bin/tool"])
    );
    assert_eq!(image["Architecture"], "amd64");
}
