//! A small signed repository, made and served inside the test: the trust
//! chain keyring → `InRelease` → `Packages` → `.deb`, and the caches.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_debian::{
    AptSource, Architecture, BaseSet, DebianSource, DistributionSource, Error, Event, LockFile,
    NoProgress, PackageCache, RepositoryOptions, ResolveRequest, RetryPolicy,
};
use pgp::composed::{
    ArmorOptions, CleartextSignedMessage, DetachedSignature, KeyType, SecretKeyParamsBuilder,
    SignedPublicKey, SignedSecretKey,
};
use pgp::crypto::hash::HashAlgorithm;
use pgp::ser::Serialize;
use pgp::types::Password;
use sha2::{Digest, Sha256};

/// `Date` of the fixture `Release`; tests pass a "now" relative to it.
const DATE: i64 = 1_747_474_295; // Sat, 17 May 2025 09:31:35 UTC
const VALID_UNTIL: i64 = DATE + 7 * 86_400;

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .fold(String::new(), |mut out, b| {
            use std::fmt::Write as _;
            let _ = write!(out, "{b:02x}");
            out
        })
}

fn generate_key() -> SignedSecretKey {
    let params = SecretKeyParamsBuilder::default()
        .key_type(KeyType::Ed25519Legacy)
        .can_certify(true)
        .can_sign(true)
        .primary_user_id("kiln test archive <test@kiln.invalid>".into())
        .build()
        .unwrap();
    params.generate(rand::thread_rng()).unwrap()
}

/// Serves files under `root` over HTTP on 127.0.0.1, one request per
/// connection, and logs request paths.
struct Server {
    url: String,
    log: Arc<Mutex<Vec<String>>>,
    /// Answer this many requests with 503 before serving normally.
    fail_next: Arc<AtomicUsize>,
}

impl Server {
    fn start(root: &Path) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let fail_next = Arc::new(AtomicUsize::new(0));
        let (root, thread_log, thread_fail) = (root.to_owned(), log.clone(), fail_next.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let _ = serve(stream, &root, &thread_log, &thread_fail);
            }
        });
        Self {
            url,
            log,
            fail_next,
        }
    }

    fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

fn serve(
    mut stream: TcpStream,
    root: &Path,
    log: &Mutex<Vec<String>>,
    fail_next: &AtomicUsize,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_owned();
    log.lock().unwrap().push(path.clone());
    if fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return stream.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    let file = root.join(path.trim_start_matches('/'));
    if path.contains("..") || !file.is_file() {
        return stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    let body = std::fs::read(file)?;
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(&body)
}

#[derive(Clone, Copy)]
struct Layout {
    in_release: bool,
    by_hash: bool,
    xz: bool,
}

const FULL: Layout = Layout {
    in_release: true,
    by_hash: true,
    xz: true,
};

struct Fixture {
    repo: tempfile::TempDir,
    cache: tempfile::TempDir,
    keyring: PathBuf,
    server: Server,
    key: SignedSecretKey,
}

const HELLO_DEB: &[u8] = b"!<arch>\nhello: not really a deb, but bytes with a digest\n";
const LIBGREET_DEB: &[u8] = b"!<arch>\nlibgreet: also bytes with a digest\n";

impl Fixture {
    fn new(layout: Layout) -> Self {
        let repo = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let key = generate_key();
        let keyring = repo.path().join("keyring.gpg");
        std::fs::write(
            &keyring,
            SignedPublicKey::from(key.clone()).to_bytes().unwrap(),
        )
        .unwrap();
        let server = Server::start(repo.path());
        let fixture = Self {
            repo,
            cache,
            keyring,
            server,
            key,
        };
        fixture.write_repo(layout);
        fixture
    }

    fn root(&self) -> &Path {
        self.repo.path()
    }

    fn write(&self, path: &str, bytes: &[u8]) {
        let path = self.root().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    fn write_repo(&self, layout: Layout) {
        self.write("pool/main/h/hello/hello_1.0_amd64.deb", HELLO_DEB);
        self.write(
            "pool/main/libg/libgreet/libgreet1_2.0_amd64.deb",
            LIBGREET_DEB,
        );
        let packages = format!(
            "Package: hello\nVersion: 1.0\nArchitecture: amd64\nDepends: libgreet1 (>= 2)\n\
             Filename: pool/main/h/hello/hello_1.0_amd64.deb\nSize: {}\nSHA256: {}\n\n\
             Package: libgreet1\nVersion: 2.0\nArchitecture: amd64\nMulti-Arch: same\n\
             Filename: pool/main/libg/libgreet/libgreet1_2.0_amd64.deb\nSize: {}\nSHA256: {}\n",
            HELLO_DEB.len(),
            sha256(HELLO_DEB),
            LIBGREET_DEB.len(),
            sha256(LIBGREET_DEB),
        );
        let (name, compressed) = if layout.xz {
            let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 6);
            enc.write_all(packages.as_bytes()).unwrap();
            ("Packages.xz", enc.finish().unwrap())
        } else {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(packages.as_bytes()).unwrap();
            ("Packages.gz", enc.finish().unwrap())
        };
        let dir = "dists/test/main/binary-amd64";
        self.write(&format!("{dir}/{name}"), &compressed);
        if layout.by_hash {
            self.write(
                &format!("{dir}/by-hash/SHA256/{}", sha256(&compressed)),
                &compressed,
            );
        }
        let release = format!(
            "Origin: kiln\nSuite: test\nCodename: test\n\
             Date: Sat, 17 May 2025 09:31:35 UTC\nValid-Until: Sat, 24 May 2025 09:31:35 UTC\n\
             Acquire-By-Hash: {}\nArchitectures: amd64\nComponents: main\nSHA256:\n \
             {} {} main/binary-amd64/Packages\n {} {} main/binary-amd64/{name}\n",
            if layout.by_hash { "yes" } else { "no" },
            sha256(packages.as_bytes()),
            packages.len(),
            sha256(&compressed),
            compressed.len(),
        );
        if layout.in_release {
            let signed = CleartextSignedMessage::sign(
                rand::thread_rng(),
                &release,
                &self.key.primary_key,
                &Password::empty(),
            )
            .unwrap();
            self.write(
                "dists/test/InRelease",
                signed
                    .to_armored_string(ArmorOptions::default())
                    .unwrap()
                    .as_bytes(),
            );
        } else {
            let signature = DetachedSignature::sign_binary_data(
                rand::thread_rng(),
                &self.key.primary_key,
                &Password::empty(),
                HashAlgorithm::Sha256,
                release.as_bytes(),
            )
            .unwrap();
            self.write("dists/test/Release", release.as_bytes());
            self.write(
                "dists/test/Release.gpg",
                &signature.to_armored_bytes(ArmorOptions::default()).unwrap(),
            );
        }
    }

    fn options(&self) -> RepositoryOptions {
        RepositoryOptions {
            cache_dir: self.cache.path().to_owned(),
            offline: false,
            retry: RetryPolicy {
                attempts: 3,
                initial_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(50),
            },
            now: Some(DATE + 3600),
        }
    }

    fn source(&self, options: RepositoryOptions) -> DebianSource {
        let source = AptSource {
            uris: vec![format!("{}/", self.server.url)],
            suites: vec!["test".into()],
            components: vec!["main".into()],
            keyring: self.keyring.clone(),
        };
        DebianSource::new(vec![source], Architecture::default(), options).unwrap()
    }

    fn fetch(&self, options: RepositoryOptions) -> Result<DebianSource, Error> {
        let mut source = self.source(options);
        source.fetch_indexes(&NoProgress)?;
        Ok(source)
    }

    fn package_cache(&self) -> PackageCache {
        PackageCache::new(self.cache.path(), self.options().retry).with_jobs(4)
    }

    fn files_under(&self, dir: &str) -> Vec<String> {
        let path = self.cache.path().join(dir);
        let mut names: Vec<String> = std::fs::read_dir(path)
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Error text with the random port blanked out.
    fn redact(&self, err: &Error) -> String {
        err.to_string()
            .replace(&self.server.url, "http://[server]")
            .replace(&self.keyring.display().to_string(), "[keyring]")
    }
}

fn hello() -> ResolveRequest {
    ResolveRequest {
        base: BaseSet::None,
        base_suite: None,
        packages: vec!["hello".parse().unwrap()],
    }
}

#[test]
fn verified_fetch_resolve_download_and_warm_runs() {
    let fx = Fixture::new(FULL);
    let source = fx.fetch(fx.options()).unwrap();
    assert_eq!(
        fx.server.take_log(),
        [
            "/dists/test/InRelease".to_owned(),
            format!(
                "/dists/test/main/binary-amd64/by-hash/SHA256/{}",
                fx.files_under("indexes")[0]
            ),
        ]
    );
    let set = source.resolve(&hello()).unwrap();
    assert_eq!(set.names().collect::<Vec<_>>(), ["hello", "libgreet1"]);

    let events = Mutex::new(Vec::new());
    let progress = |e: &Event<'_>| {
        if let Event::PackageReady { name, cached, .. } = e {
            events
                .lock()
                .unwrap()
                .push(format!("{name} cached={cached}"));
        }
    };
    let debs = source
        .download(&set, &fx.package_cache(), &progress)
        .unwrap();
    assert_eq!(std::fs::read(&debs[0].path).unwrap(), HELLO_DEB);
    assert_eq!(
        fx.files_under("debs"),
        [
            format!("{}.deb", sha256(HELLO_DEB)),
            format!("{}.deb", sha256(LIBGREET_DEB))
        ]
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
    );
    fx.server.take_log();

    // Warm: only the InRelease round-trip; the debs come from the cache.
    let warm = fx.fetch(fx.options()).unwrap();
    assert_eq!(warm.resolve(&hello()).unwrap(), set);
    warm.download(&set, &fx.package_cache(), &NoProgress)
        .unwrap();
    assert_eq!(fx.server.take_log(), ["/dists/test/InRelease"]);

    // Offline: no requests at all.
    let mut options = fx.options();
    options.offline = true;
    let offline = fx.fetch(options).unwrap();
    let lock = LockFile::from_install_set(&set);
    assert_eq!(offline.resolve_locked(&hello(), &lock).unwrap(), set);
    offline
        .download(&set, &fx.package_cache().offline(true), &NoProgress)
        .unwrap();
    assert!(fx.server.take_log().is_empty());

    // A corrupt cache entry is detected and fetched again.
    std::fs::write(&debs[0].path, b"bit rot").unwrap();
    events.lock().unwrap().clear();
    source
        .download(&set, &fx.package_cache(), &progress)
        .unwrap();
    let mut seen = events.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen, ["hello cached=false", "libgreet1 cached=true"]);
    assert_eq!(std::fs::read(&debs[0].path).unwrap(), HELLO_DEB);
}

#[test]
fn tampered_in_release_is_rejected() {
    let fx = Fixture::new(FULL);
    let path = fx.root().join("dists/test/InRelease");
    let text = std::fs::read_to_string(&path).unwrap();
    // One byte of the signed text: `Suite: test` becomes `Suite: tesT`.
    std::fs::write(&path, text.replacen("Suite: test", "Suite: tesT", 1)).unwrap();
    let err = fx.fetch(fx.options()).unwrap_err();
    assert!(matches!(err, Error::BadSignature { .. }), "{err:?}");
    insta::assert_snapshot!(fx.redact(&err), @"Failed to verify `http://[server]/dists/test/InRelease`: no valid signature by a key in `[keyring]`");
    assert!(
        fx.files_under("releases").is_empty(),
        "nothing unverified is cached"
    );
}

#[test]
fn signature_by_another_key_is_rejected() {
    let fx = Fixture::new(FULL);
    let other = generate_key();
    std::fs::write(
        &fx.keyring,
        SignedPublicKey::from(other)
            .to_armored_string(ArmorOptions::default())
            .unwrap(),
    )
    .unwrap();
    let err = fx.fetch(fx.options()).unwrap_err();
    assert!(matches!(err, Error::BadSignature { .. }), "{err:?}");
}

#[test]
fn armored_keyring_with_several_keys_is_accepted() {
    let fx = Fixture::new(FULL);
    let mut keyring = SignedPublicKey::from(generate_key()).to_bytes().unwrap();
    keyring.extend(SignedPublicKey::from(fx.key.clone()).to_bytes().unwrap());
    std::fs::write(&fx.keyring, &keyring).unwrap();
    fx.fetch(fx.options()).unwrap();
    let armored = SignedPublicKey::from(fx.key.clone())
        .to_armored_string(ArmorOptions::default())
        .unwrap();
    std::fs::write(&fx.keyring, armored).unwrap();
    fx.fetch(fx.options()).unwrap();
}

#[test]
fn packages_not_matching_the_release_are_rejected() {
    let fx = Fixture::new(FULL);
    let dir = fx
        .root()
        .join("dists/test/main/binary-amd64/by-hash/SHA256");
    let entry = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 6);
    enc.write_all(b"Package: evil\n").unwrap();
    std::fs::write(&entry, enc.finish().unwrap()).unwrap();
    let err = fx.fetch(fx.options()).unwrap_err();
    assert!(matches!(err, Error::Checksum { .. }), "{err:?}");
    assert!(
        fx.files_under("indexes").is_empty(),
        "nothing unverified is cached"
    );
}

#[test]
fn deb_with_wrong_digest_is_rejected_and_not_cached() {
    let fx = Fixture::new(FULL);
    let source = fx.fetch(fx.options()).unwrap();
    let set = source.resolve(&hello()).unwrap();
    fx.write(
        "pool/main/h/hello/hello_1.0_amd64.deb",
        b"!<arch>\nhellO: not really a deb, but bytes with a digest\n",
    );
    let err = source
        .download(&set, &fx.package_cache().with_jobs(1), &NoProgress)
        .unwrap_err();
    assert!(matches!(err, Error::Checksum { .. }), "{err:?}");
    let text = fx.redact(&err).replace(&sha256(HELLO_DEB), "<expected>");
    let text = text.split(", got").next().unwrap().to_owned();
    insta::assert_snapshot!(text, @"Failed to verify `http://[server]/pool/main/h/hello/hello_1.0_amd64.deb`: expected SHA256 <expected> (57 bytes)");
    assert!(
        !fx.files_under("debs")
            .iter()
            .any(|f| f.starts_with(&sha256(HELLO_DEB)) || f.starts_with(".partial")),
        "{:?}",
        fx.files_under("debs")
    );
}

#[test]
fn release_gpg_fallback_without_by_hash_and_gzip() {
    let fx = Fixture::new(Layout {
        in_release: false,
        by_hash: false,
        xz: false,
    });
    let source = fx.fetch(fx.options()).unwrap();
    assert_eq!(
        fx.server.take_log(),
        [
            "/dists/test/InRelease",
            "/dists/test/Release",
            "/dists/test/Release.gpg",
            "/dists/test/main/binary-amd64/Packages.gz"
        ]
    );
    assert_eq!(source.resolve(&hello()).unwrap().len(), 2);
    // Offline mode uses the stored Release + Release.gpg.
    let mut options = fx.options();
    options.offline = true;
    fx.fetch(options).unwrap();
    assert!(fx.server.take_log().is_empty());
}

#[test]
fn expired_release_is_rejected() {
    let fx = Fixture::new(FULL);
    let mut options = fx.options();
    options.now = Some(VALID_UNTIL + 1);
    let err = fx.fetch(options).unwrap_err();
    insta::assert_snapshot!(fx.redact(&err), @"Failed to accept `http://[server]/dists/test/InRelease`: it expired at Sat, 24 May 2025 09:31:35 UTC (Valid-Until)");
}

#[test]
fn offline_without_cache_makes_no_requests() {
    let fx = Fixture::new(FULL);
    let mut options = fx.options();
    options.offline = true;
    let err = fx.fetch(options).unwrap_err();
    insta::assert_snapshot!(fx.redact(&err), @"Failed to find a verified `InRelease` for `http://[server]/dists/test` in the cache (offline mode makes no requests)");
    assert!(fx.server.take_log().is_empty());
}

#[test]
fn server_errors_are_retried_with_backoff() {
    let fx = Fixture::new(FULL);
    fx.server.fail_next.store(2, Ordering::SeqCst);
    let retries = AtomicUsize::new(0);
    let progress = |e: &Event<'_>| {
        if matches!(e, Event::Retrying { .. }) {
            retries.fetch_add(1, Ordering::SeqCst);
        }
    };
    let mut source = fx.source(fx.options());
    source.fetch_indexes(&progress).unwrap();
    assert_eq!(retries.load(Ordering::SeqCst), 2);

    fx.server.fail_next.store(10, Ordering::SeqCst);
    let err = fx.fetch(fx.options()).unwrap_err();
    insta::assert_snapshot!(fx.redact(&err), @"Failed to fetch `http://[server]/dists/test/InRelease` after 3 attempt(s)");
}
