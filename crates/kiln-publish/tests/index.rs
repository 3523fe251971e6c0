//! Multi-architecture indexes against Debian's `docker-registry` on
//! loopback, with two tiny hand-made images (amd64 and arm64: kiln does
//! not build arm64 roots yet), read back with `skopeo`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_publish::client::{Client, ClientOptions};
use kiln_publish::index::{push_index, push_layout};
use serde_json::{Value, json};

struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_registry() -> Option<Registry> {
    if !kiln_testkit::require::have("docker-registry") || !kiln_testkit::require::have("skopeo") {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        dir.path().join("config.yml"),
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(dir.path().join("config.yml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let registry = Registry {
        child,
        port,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the registry listens");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(registry)
}

fn sha256(bytes: &[u8]) -> String {
    kiln_publish::sha256_hex(bytes)
}

/// An OCI layout at `dir` with one uncompressed layer holding `arch.txt`.
fn layout(dir: &Path, arch: &str) -> String {
    let content = tempfile::tempdir().unwrap();
    std::fs::write(content.path().join("arch.txt"), format!("{arch}\n")).unwrap();
    let layer_path = dir.join("layer.tar");
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    let ok = Command::new("tar")
        .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "-C"])
        .arg(content.path())
        .arg("-cf")
        .arg(&layer_path)
        .arg("arch.txt")
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let layer = std::fs::read(&layer_path).unwrap();
    std::fs::remove_file(&layer_path).unwrap();
    let put = |bytes: &[u8]| {
        let d = sha256(bytes);
        std::fs::write(dir.join("blobs/sha256").join(&d), bytes).unwrap();
        format!("sha256:{d}")
    };
    let layer_digest = put(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": arch, "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }))
    .unwrap();
    let config_digest = put(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
    }))
    .unwrap();
    let manifest_digest = put(&manifest);
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest.len(),
        }]}))
        .unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    layer_digest
}

fn skopeo(args: &[&str]) -> Value {
    let out = Command::new("skopeo").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn images_of_two_architectures_become_one_index_that_resolves_per_platform() {
    let Some(registry) = start_registry() else {
        return;
    };
    let host = format!("127.0.0.1:{}", registry.port);
    let client = Client::new(
        &host,
        ClientOptions {
            plain_http: true,
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let amd64 = work.path().join("amd64");
    let arm64 = work.path().join("arm64");
    let _amd64_layer = layout(&amd64, "amd64");
    let arm64_layer = layout(&arm64, "arm64");
    let mut ann = BTreeMap::new();
    ann.insert("dev.kiln.variant".to_owned(), "tiny".to_owned());
    let a = push_layout(&client, "t/tiny", &amd64, &ann).unwrap();
    let b = push_layout(&client, "t/tiny", &arm64, &ann).unwrap();
    assert_eq!(b.platform, json!({"architecture": "arm64", "os": "linux"}));
    let digest = push_index(
        &client,
        "t/tiny",
        &[a.clone(), b.clone()],
        &ann,
        &["multi".to_owned()],
    )
    .unwrap();

    let reference = format!("docker://{host}/t/tiny:multi");
    let index = skopeo(&["inspect", "--raw", "--tls-verify=false", &reference]);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let platforms: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["amd64", "arm64"]);
    assert_eq!(index["annotations"]["dev.kiln.variant"], "tiny");
    // A pull for arm64 gets the arm64 image, and its layer.
    let arm = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--override-arch",
        "arm64",
        "--override-os",
        "linux",
        &reference,
    ]);
    assert_eq!(arm["Architecture"], "arm64");
    assert_eq!(arm["Layers"][0], arm64_layer.as_str());
    let amd = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--override-arch",
        "amd64",
        "--override-os",
        "linux",
        &reference,
    ]);
    assert_eq!(amd["Architecture"], "amd64");
    // The catalog sees the index as the published image.
    let published = kiln_publish::catalog::read(&client, "t/tiny").unwrap();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].digest, digest);
    assert_eq!(published[0].tags, ["multi"]);
    // Two images of one platform cannot share an index.
    let err = push_index(
        &client,
        "t/tiny",
        &[a.clone(), a],
        &ann,
        &["bad".to_owned()],
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("an index holds one per platform"),
        "{err}"
    );
    assert!(
        client.manifest("t/tiny", "bad").unwrap().is_none(),
        "nothing tagged"
    );
}
