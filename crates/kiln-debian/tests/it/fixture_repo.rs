//! A small signed repository, made and served inside the test: the trust
//! chain keyring → `InRelease` → `Packages` → `.deb`, and the caches.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kiln_debian::{
    AptSource, Architecture, BaseSet, DebianSource, DistributionSource, Error, Event, LockFile,
    NoProgress, PackageCache, RepositoryOptions, ResolveRequest, RetryPolicy,
};
use kiln_testkit::{
    Dates, FIXED_DATE as DATE, FIXED_VALID_UNTIL as VALID_UNTIL, FULL, HELLO_DEB, LIBGREET_DEB,
    Layout, Repo, generate_key, sha256,
};
use pgp::composed::{ArmorOptions, SignedPublicKey};
use pgp::ser::Serialize;

/// The repository and a cache of the test's own.
struct Fixture {
    repo: Repo,
    cache: tempfile::TempDir,
    keyring: PathBuf,
}

impl Fixture {
    fn new(layout: Layout) -> Self {
        let repo = Repo::new(layout, Dates::Fixed);
        let keyring = repo.keyring().to_owned();
        Self {
            repo,
            cache: tempfile::tempdir().unwrap(),
            keyring,
        }
    }

    fn root(&self) -> PathBuf {
        self.repo.root()
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
            uris: vec![format!("{}/", self.repo.url())],
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
        self.repo.redact(&err.to_string())
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
        fx.repo.take_log(),
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
    let _ = fx.repo.take_log();

    // Warm: only the InRelease round-trip; the debs come from the cache.
    let warm = fx.fetch(fx.options()).unwrap();
    assert_eq!(warm.resolve(&hello()).unwrap(), set);
    warm.download(&set, &fx.package_cache(), &NoProgress)
        .unwrap();
    assert_eq!(fx.repo.take_log(), ["/dists/test/InRelease"]);

    // Offline: no requests at all.
    let mut options = fx.options();
    options.offline = true;
    let offline = fx.fetch(options).unwrap();
    let lock = LockFile::from_install_set(&set);
    assert_eq!(offline.resolve_locked(&hello(), &lock).unwrap(), set);
    offline
        .download(&set, &fx.package_cache().offline(true), &NoProgress)
        .unwrap();
    assert!(fx.repo.take_log().is_empty());

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
    fx.repo.tamper_in_release();
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
    keyring.extend(
        SignedPublicKey::from(fx.repo.key().clone())
            .to_bytes()
            .unwrap(),
    );
    std::fs::write(&fx.keyring, &keyring).unwrap();
    fx.fetch(fx.options()).unwrap();
    let armored = SignedPublicKey::from(fx.repo.key().clone())
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
    fx.repo.replace_hello();
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
        fx.repo.take_log(),
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
    assert!(fx.repo.take_log().is_empty());
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
    assert!(fx.repo.take_log().is_empty());
}

#[test]
fn server_errors_are_retried_with_backoff() {
    let fx = Fixture::new(FULL);
    fx.repo.fail_next(2);
    let retries = AtomicUsize::new(0);
    let progress = |e: &Event<'_>| {
        if matches!(e, Event::Retrying { .. }) {
            retries.fetch_add(1, Ordering::SeqCst);
        }
    };
    let mut source = fx.source(fx.options());
    source.fetch_indexes(&progress).unwrap();
    assert_eq!(retries.load(Ordering::SeqCst), 2);

    fx.repo.fail_next(10);
    let err = fx.fetch(fx.options()).unwrap_err();
    insta::assert_snapshot!(fx.redact(&err), @"Failed to fetch `http://[server]/dists/test/InRelease` after 3 attempt(s)");
}

/// `GnuPG` in a home of its own, at a faked time: keys that expire or are
/// revoked, made and used as a real archive's would be.
struct Gpg {
    home: tempfile::TempDir,
}

impl Gpg {
    /// `None` (and a SKIPPED line) when gpg is not installed.
    fn new() -> Option<Self> {
        if std::process::Command::new("gpg")
            .arg("--version")
            .output()
            .is_err()
        {
            #[allow(clippy::print_stderr)]
            {
                kiln_testkit::require::skip("gpg is not installed");
            }
            return None;
        }
        Some(Self {
            home: tempfile::tempdir().unwrap(),
        })
    }

    fn run(&self, at: &str, args: &[&str]) -> Vec<u8> {
        let out = std::process::Command::new("gpg")
            .arg("--homedir")
            .arg(self.home.path())
            .args([
                "--batch",
                "--yes",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ])
            .args(["--faked-system-time", at])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// A signing key made at `at`, valid for `expire` (gpg's notation).
    fn key(&self, at: &str, expire: &str) -> String {
        self.run(
            at,
            &[
                "--quick-gen-key",
                "kiln test <gpg@kiln.invalid>",
                "ed25519",
                "sign",
                expire,
            ],
        );
        let listing = String::from_utf8(self.run(at, &["--with-colons", "--list-keys"])).unwrap();
        listing
            .lines()
            .find_map(|l| l.strip_prefix("fpr:::::::::"))
            .unwrap()
            .trim_end_matches(':')
            .to_owned()
    }

    /// Signs `release` as `InRelease` at `at`, and makes the keyring.
    fn publish(&self, fx: &Fixture, at: &str) {
        let release = self.home.path().join("Release");
        std::fs::write(&release, fx.repo.release()).unwrap();
        let signed = self.run(at, &["--clearsign", "-o", "-", release.to_str().unwrap()]);
        fx.repo.write("dists/test/InRelease", &signed);
        std::fs::write(&fx.keyring, self.run(at, &["--export"])).unwrap();
    }
}

#[test]
fn a_key_that_is_valid_now_is_accepted_and_an_expired_one_is_named() {
    let Some(gpg) = Gpg::new() else { return };
    let fx = Fixture::new(FULL);
    // Made a day before the Release, valid for ten years: fine.
    gpg.key("20250516T000000", "10y");
    gpg.publish(&fx, "20250517T093000");
    fx.fetch(fx.options()).expect("a valid key's signature");

    // Made in 2020 for a day: its signature is no longer accepted, and the
    // error says which key and since when.
    let Some(gpg) = Gpg::new() else { return };
    let fx = Fixture::new(FULL);
    let fingerprint = gpg.key("20200101T000000", "1d");
    gpg.publish(&fx, "20200101T010000");
    let err = fx.fetch(fx.options()).unwrap_err();
    assert!(matches!(err, Error::KeyExpired { .. }), "{err:?}");
    let text = fx.redact(&err).replace(&fingerprint, "<fingerprint>");
    insta::assert_snapshot!(text, @"Failed to verify `http://[server]/dists/test/InRelease`: the key <fingerprint> of `[keyring]` that signed it expired on Thu, 02 Jan 2020 00:00:00 UTC");
    assert!(fx.files_under("releases").is_empty(), "nothing is cached");
}

#[test]
fn a_revoked_key_is_refused() {
    let Some(gpg) = Gpg::new() else { return };
    let fx = Fixture::new(FULL);
    let fingerprint = gpg.key("20250516T000000", "10y");
    gpg.publish(&fx, "20250517T093000");
    fx.fetch(fx.options()).expect("valid before the revocation");
    // GnuPG keeps a revocation certificate for every key it makes, its
    // armor line guarded by a `:`.
    let certificate = std::fs::read_to_string(
        gpg.home
            .path()
            .join(format!("openpgp-revocs.d/{fingerprint}.rev")),
    )
    .unwrap()
    .replace(
        ":-----BEGIN PGP PUBLIC KEY BLOCK-----",
        "-----BEGIN PGP PUBLIC KEY BLOCK-----",
    );
    let path = gpg.home.path().join("revocation.asc");
    std::fs::write(&path, certificate).unwrap();
    gpg.run("20250518T000000", &["--import", path.to_str().unwrap()]);
    std::fs::write(&fx.keyring, gpg.run("20250518T000000", &["--export"])).unwrap();
    let err = Fixture::fetch(&fx, fx.options()).unwrap_err();
    assert!(matches!(err, Error::KeyRevoked { .. }), "{err:?}");
    let text = fx.redact(&err).replace(&fingerprint, "<fingerprint>");
    insta::assert_snapshot!(text, @"Failed to verify `http://[server]/dists/test/InRelease`: the key <fingerprint> of `[keyring]` that signed it is revoked");
}
