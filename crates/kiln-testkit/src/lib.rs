//! Test fixtures shared by kiln's crates (dev-dependencies only).
//!
//! [`Repo`]: a small Debian repository — an `InRelease` (or `Release` and
//! `Release.gpg`) signed with a key generated in the test, a `Packages`
//! index, two `.deb`-named files — served over HTTP on 127.0.0.1 by a
//! thread of the test. It exists for the error paths the real archive
//! cannot show: a tampered signature, an index or a package that does not
//! match its digest. Everything that can be tested against the real
//! archive is tested there.
//!
//! Not for production use: the server reads whole files, one request per
//! connection, and panics on setup errors.
#![deny(missing_docs)]
#![allow(clippy::missing_panics_doc)]

pub mod require;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgp::composed::{
    ArmorOptions, CleartextSignedMessage, DetachedSignature, KeyType, SecretKeyParamsBuilder,
    SignedPublicKey, SignedSecretKey,
};
use pgp::crypto::hash::HashAlgorithm;
use pgp::ser::Serialize;
use pgp::types::Password;
use sha2::{Digest, Sha256};

/// `Date` of a [`Dates::Fixed`] `Release`: Sat, 17 May 2025 09:31:35 UTC.
pub const FIXED_DATE: i64 = 1_747_474_295;
/// Its `Valid-Until`, a week later.
pub const FIXED_VALID_UNTIL: i64 = FIXED_DATE + 7 * 86_400;

/// The content of the `hello` package file (not a real `.deb`: the
/// repository tests stop before unpacking).
pub const HELLO_DEB: &[u8] = b"!<arch>\nhello: not really a deb, but bytes with a digest\n";
/// The content of the `libgreet1` package file, which `hello` depends on.
pub const LIBGREET_DEB: &[u8] = b"!<arch>\nlibgreet: also bytes with a digest\n";
/// Where `hello` is in the pool.
pub const HELLO_PATH: &str = "pool/main/h/hello/hello_1.0_amd64.deb";

/// Lowercase hex SHA256 of `bytes`.
#[must_use]
pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A new signing key (Ed25519).
#[must_use]
pub fn generate_key() -> SignedSecretKey {
    let params = SecretKeyParamsBuilder::default()
        .key_type(KeyType::Ed25519Legacy)
        .can_certify(true)
        .can_sign(true)
        .primary_user_id("kiln test archive <test@kiln.invalid>".into())
        .build()
        .expect("key parameters");
    params.generate(rand::thread_rng()).expect("a key")
}

/// How the repository is laid out.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// An `InRelease`; else `Release` and `Release.gpg`.
    pub in_release: bool,
    /// `by-hash` copies of the index, and `Acquire-By-Hash: yes`.
    pub by_hash: bool,
    /// `Packages.xz`; else `Packages.gz`.
    pub xz: bool,
}

/// `InRelease`, `by-hash` and xz, as Debian's archive has them.
pub const FULL: Layout = Layout {
    in_release: true,
    by_hash: true,
    xz: true,
};

/// The dates a `Release` carries.
#[derive(Debug, Clone, Copy)]
pub enum Dates {
    /// [`FIXED_DATE`] and [`FIXED_VALID_UNTIL`]: for tests that pass
    /// their own "now".
    Fixed,
    /// An hour ago, valid for a week: for tests of the `kiln` binary,
    /// which reads the clock.
    Current,
}

/// A signed repository served on 127.0.0.1; see the crate documentation.
/// The suite is `test`, the component `main`, the architecture `amd64`.
#[derive(Debug)]
pub struct Repo {
    dir: tempfile::TempDir,
    keyring: PathBuf,
    key: SignedSecretKey,
    url: String,
    log: Arc<Mutex<Vec<String>>>,
    fail_next: Arc<AtomicUsize>,
    release: String,
}

impl Repo {
    /// Makes the repository and starts serving it.
    #[must_use]
    pub fn new(layout: Layout, dates: Dates) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = generate_key();
        let keyring = dir.path().join("keyring.gpg");
        std::fs::write(
            &keyring,
            SignedPublicKey::from(key.clone())
                .to_bytes()
                .expect("a keyring"),
        )
        .expect("write the keyring");
        let root = dir.path().join("repo");
        std::fs::create_dir(&root).expect("repo folder");
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let fail_next = Arc::new(AtomicUsize::new(0));
        let (thread_log, thread_fail) = (log.clone(), fail_next.clone());
        let served = root.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let _ = serve(stream, &served, &thread_log, &thread_fail);
            }
        });
        let mut repo = Self {
            dir,
            keyring,
            key,
            url,
            log,
            fail_next,
            release: String::new(),
        };
        repo.release = repo.write_repo(layout, dates);
        repo
    }

    /// The text of the `Release` (what `InRelease` signs), to sign again
    /// with another key.
    #[must_use]
    pub fn release(&self) -> &str {
        &self.release
    }

    /// The repository's URL (`http://127.0.0.1:<port>`), an apt source's
    /// `URIs`.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The keyring file with the signing key's public half.
    #[must_use]
    pub fn keyring(&self) -> &Path {
        &self.keyring
    }

    /// The signing key.
    #[must_use]
    pub fn key(&self) -> &SignedSecretKey {
        &self.key
    }

    /// The served folder.
    #[must_use]
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    /// Writes `bytes` to `path` (relative to the served folder).
    pub fn write(&self, path: &str, bytes: &[u8]) {
        let path = self.root().join(path);
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write");
    }

    /// The paths requested since the last call.
    #[must_use]
    pub fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().expect("not poisoned"))
    }

    /// Answers the next `n` requests with 503.
    pub fn fail_next(&self, n: usize) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// Changes one byte of the signed text of `InRelease`: `Suite: test`
    /// becomes `Suite: tesT`; the signature no longer matches.
    pub fn tamper_in_release(&self) {
        let path = self.root().join("dists/test/InRelease");
        let text = std::fs::read_to_string(&path).expect("InRelease");
        std::fs::write(&path, text.replacen("Suite: test", "Suite: tesT", 1)).expect("write");
    }

    /// Replaces the `Packages` index (every copy, `by-hash` included) by
    /// one the `Release` does not list.
    pub fn replace_index(&self) {
        let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 6);
        enc.write_all(b"Package: evil\nVersion: 6.6.6\nArchitecture: amd64\n")
            .expect("xz");
        let evil = enc.finish().expect("xz");
        let dir = self.root().join("dists/test/main/binary-amd64");
        for entry in walk(&dir) {
            std::fs::write(entry, &evil).expect("write");
        }
    }

    /// Replaces `hello`'s package file by one byte changed.
    pub fn replace_hello(&self) {
        self.write(
            HELLO_PATH,
            b"!<arch>\nhellO: not really a deb, but bytes with a digest\n",
        );
    }

    /// `text` with the server's address and the keyring's path replaced by
    /// `http://[server]` and `[keyring]`, for snapshots.
    #[must_use]
    pub fn redact(&self, text: &str) -> String {
        text.replace(&self.url, "http://[server]")
            .replace(&self.keyring.display().to_string(), "[keyring]")
    }

    fn write_repo(&self, layout: Layout, dates: Dates) -> String {
        self.write(HELLO_PATH, HELLO_DEB);
        self.write(
            "pool/main/libg/libgreet/libgreet1_2.0_amd64.deb",
            LIBGREET_DEB,
        );
        let packages = format!(
            "Package: hello\nVersion: 1.0\nArchitecture: amd64\nDepends: libgreet1 (>= 2)\n\
             Filename: {HELLO_PATH}\nSize: {}\nSHA256: {}\n\n\
             Package: libgreet1\nVersion: 2.0\nArchitecture: amd64\nMulti-Arch: same\n\
             Filename: pool/main/libg/libgreet/libgreet1_2.0_amd64.deb\nSize: {}\nSHA256: {}\n",
            HELLO_DEB.len(),
            sha256(HELLO_DEB),
            LIBGREET_DEB.len(),
            sha256(LIBGREET_DEB),
        );
        let (name, compressed) = if layout.xz {
            let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 6);
            enc.write_all(packages.as_bytes()).expect("xz");
            ("Packages.xz", enc.finish().expect("xz"))
        } else {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(packages.as_bytes()).expect("gzip");
            ("Packages.gz", enc.finish().expect("gzip"))
        };
        let dir = "dists/test/main/binary-amd64";
        self.write(&format!("{dir}/{name}"), &compressed);
        if layout.by_hash {
            self.write(
                &format!("{dir}/by-hash/SHA256/{}", sha256(&compressed)),
                &compressed,
            );
        }
        let (date, valid_until) = match dates {
            Dates::Fixed => (FIXED_DATE, FIXED_VALID_UNTIL),
            Dates::Current => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(FIXED_DATE, |d| i64::try_from(d.as_secs()).unwrap_or(0));
                (now - 3600, now + 7 * 86_400)
            }
        };
        let release = format!(
            "Origin: kiln\nSuite: test\nCodename: test\n\
             Date: {}\nValid-Until: {}\n\
             Acquire-By-Hash: {}\nArchitectures: amd64\nComponents: main\nSHA256:\n \
             {} {} main/binary-amd64/Packages\n {} {} main/binary-amd64/{name}\n",
            rfc2822(date),
            rfc2822(valid_until),
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
            .expect("sign");
            self.write(
                "dists/test/InRelease",
                signed
                    .to_armored_string(ArmorOptions::default())
                    .expect("armor")
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
            .expect("sign");
            self.write("dists/test/Release", release.as_bytes());
            self.write(
                "dists/test/Release.gpg",
                &signature
                    .to_armored_bytes(ArmorOptions::default())
                    .expect("armor"),
            );
        }
        release
    }
}

/// Every file below `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(entry.path());
            } else {
                out.push(entry.path());
            }
        }
    }
    out
}

/// `secs` as a `Release` writes dates: `Sat, 17 May 2025 09:31:35 UTC`.
fn rfc2822(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .expect("a date in jiff's range")
        .strftime("%a, %d %b %Y %H:%M:%S UTC")
        .to_string()
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
    log.lock().expect("not poisoned").push(path.clone());
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

#[cfg(test)]
mod tests {
    #[test]
    fn release_dates_are_written_as_debian_writes_them() {
        assert_eq!(
            super::rfc2822(super::FIXED_DATE),
            "Sat, 17 May 2025 09:31:35 UTC"
        );
        assert_eq!(super::rfc2822(0), "Thu, 01 Jan 1970 00:00:00 UTC");
        assert_eq!(super::rfc2822(951_782_400), "Tue, 29 Feb 2000 00:00:00 UTC");
    }
}
