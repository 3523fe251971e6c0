//! `OpenPGP` keyrings and the signatures on `InRelease` / `Release.gpg`.
//!
//! Owns loading a keyring file (binary `.gpg` with any number of keys, or
//! armored `.asc`) and checking that some key in it made a signature. Returns
//! only text that a signature covers; never interprets it.
//!
//! As apt (through gpgv) does, a signature counts only when the key that
//! made it is valid now: not revoked (a revocation signature the key made
//! on itself, or on the subkey), not expired (the key expiration time of
//! its newest self-signature or binding signature). A signature that only
//! an expired or revoked key makes is reported as such, naming the key.

use std::fmt;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use pgp::composed::{CleartextSignedMessage, Deserializable, DetachedSignature, SignedPublicKey};
use pgp::packet::{Signature, SignatureType};
use pgp::types::KeyDetails;

use crate::error::Error;

/// The keyring apt uses for the Debian archive.
pub const DEBIAN_ARCHIVE_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// At most this many keys are read from one file, so a malformed file
/// cannot keep the parser busy.
const MAX_KEYS: usize = 4096;

/// The public keys of one keyring file.
pub struct Keyring {
    path: PathBuf,
    keys: Vec<SignedPublicKey>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("path", &self.path)
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl Keyring {
    /// Reads a keyring file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::ReadKeyring {
            path: path.to_owned(),
            source,
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses keyring bytes; `path` names them in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, Error> {
        let parse_err = |source| Error::ParseKeyring {
            path: path.to_owned(),
            source: Box::new(source),
        };
        let armored = bytes
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .is_some_and(|start| bytes[start..].starts_with(b"-----BEGIN PGP"));
        let mut keys = Vec::new();
        let mut first_error = None;
        {
            let iter: Box<dyn Iterator<Item = pgp::errors::Result<SignedPublicKey>>> = if armored {
                SignedPublicKey::from_armor_many(Cursor::new(bytes))
                    .map_err(parse_err)?
                    .0
            } else {
                SignedPublicKey::from_bytes_many(Cursor::new(bytes)).map_err(parse_err)?
            };
            // A key with an algorithm rPGP does not know is skipped; the others still count.
            for key in iter.take(MAX_KEYS) {
                match key {
                    Ok(key) => keys.push(key),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        if keys.is_empty() {
            return Err(match first_error {
                Some(source) => parse_err(source),
                None => Error::EmptyKeyring {
                    path: path.to_owned(),
                },
            });
        }
        Ok(Self {
            path: path.to_owned(),
            keys,
        })
    }

    /// Where the keyring was read from.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of primary keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the keyring holds no keys (never true for a loaded keyring).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Which key (a primary key, or a subkey with a valid binding) made
    /// `signature` over `data`, and whether it is valid at `now`.
    fn verifies(&self, signature: &Signature, data: &[u8], now: i64) -> Verdict {
        let mut verdict = Verdict::Unsigned;
        for key in &self.keys {
            let primary = key_state(key, None, now);
            if signature.verify(&key.primary_key, data).is_ok() {
                verdict = verdict.better(primary.clone());
            }
            for sub in &key.public_subkeys {
                if signature.verify(&sub.key, data).is_ok()
                    && sub.verify_bindings(&key.primary_key).is_ok()
                {
                    // A subkey is no better than its primary key.
                    let state = match &primary {
                        Verdict::Valid => key_state(key, Some(sub), now),
                        other => other.clone(),
                    };
                    verdict = verdict.better(state);
                }
            }
        }
        verdict
    }

    fn check(&self, verdict: Verdict, origin: &str) -> Result<(), Error> {
        match verdict {
            Verdict::Valid => Ok(()),
            Verdict::Unsigned => Err(Error::BadSignature {
                origin: origin.to_owned(),
                keyring: self.path.clone(),
            }),
            Verdict::Expired { key, at } => Err(Error::KeyExpired {
                origin: origin.to_owned(),
                keyring: self.path.clone(),
                key,
                at: crate::date::format_rfc2822(at),
            }),
            Verdict::Revoked { key } => Err(Error::KeyRevoked {
                origin: origin.to_owned(),
                keyring: self.path.clone(),
                key,
            }),
        }
    }

    /// Verifies a clearsigned `InRelease` and returns the signed text with
    /// `\n` line endings. Text outside the signed part is never returned.
    /// `now` (seconds since the epoch) decides whether the signing key has
    /// expired.
    pub fn verify_cleartext(&self, bytes: &[u8], origin: &str, now: i64) -> Result<String, Error> {
        let text = std::str::from_utf8(bytes).map_err(|_| Error::BadSignature {
            origin: origin.to_owned(),
            keyring: self.path.clone(),
        })?;
        let (message, _headers) =
            CleartextSignedMessage::from_string(text).map_err(|source| Error::ParseSignature {
                origin: origin.to_owned(),
                source: Box::new(source),
            })?;
        let signed = message.signed_text();
        let verdict = message
            .signatures()
            .iter()
            .fold(Verdict::Unsigned, |v, sig| {
                v.better(self.verifies(sig, signed.as_bytes(), now))
            });
        self.check(verdict, origin)?;
        Ok(signed.replace("\r\n", "\n"))
    }

    /// Verifies a detached signature (`Release.gpg`, armored or binary)
    /// over `data`, by a key valid at `now`.
    pub fn verify_detached(
        &self,
        data: &[u8],
        signature: &[u8],
        origin: &str,
        now: i64,
    ) -> Result<(), Error> {
        let parse_err = |source| Error::ParseSignature {
            origin: origin.to_owned(),
            source: Box::new(source),
        };
        let armored = signature.starts_with(b"-----BEGIN PGP");
        let sigs: Vec<DetachedSignature> = if armored {
            DetachedSignature::from_armor_many(Cursor::new(signature))
                .map_err(parse_err)?
                .0
                .take(MAX_KEYS)
                .filter_map(Result::ok)
                .collect()
        } else {
            DetachedSignature::from_bytes_many(Cursor::new(signature))
                .map_err(parse_err)?
                .take(MAX_KEYS)
                .filter_map(Result::ok)
                .collect()
        };
        let verdict = sigs.iter().fold(Verdict::Unsigned, |v, sig| {
            v.better(self.verifies(&sig.signature, data, now))
        });
        self.check(verdict, origin)
    }
}

/// What checking a signature against a keyring found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// No key of the keyring made it.
    Unsigned,
    /// Only a key that expired at `at` made it.
    Expired { key: String, at: i64 },
    /// Only a revoked key made it.
    Revoked { key: String },
    /// A valid key made it.
    Valid,
}

impl Verdict {
    /// The better of two findings: a valid signature wins; an expired or
    /// revoked key is worth reporting over none at all.
    fn better(self, other: Verdict) -> Verdict {
        let rank = |v: &Verdict| match v {
            Verdict::Unsigned => 0,
            Verdict::Revoked { .. } => 1,
            Verdict::Expired { .. } => 2,
            Verdict::Valid => 3,
        };
        if rank(&other) > rank(&self) {
            other
        } else {
            self
        }
    }
}

/// Whether `key` (or its subkey `sub`) is valid at `now`: not revoked by
/// itself, not past the expiration its newest self-signature (for a
/// subkey: binding signature) sets.
fn key_state(
    key: &SignedPublicKey,
    sub: Option<&pgp::composed::SignedPublicSubKey>,
    now: i64,
) -> Verdict {
    let fingerprint = match sub {
        Some(sub) => sub.key.fingerprint(),
        None => key.primary_key.fingerprint(),
    };
    let name = format!("{fingerprint:X}");
    let (revocations, self_signatures, created): (Vec<&Signature>, Vec<&Signature>, i64) = match sub
    {
        None => (
            key.details
                .revocation_signatures
                .iter()
                .filter(|s| s.verify_key(&key.primary_key).is_ok())
                .collect(),
            key.details
                .users
                .iter()
                .flat_map(|u| {
                    u.signatures.iter().filter(|s| {
                        s.verify_certification(&key.primary_key, pgp::types::Tag::UserId, &u.id)
                            .is_ok()
                    })
                })
                .chain(key.details.direct_signatures.iter())
                .collect(),
            i64::from(key.primary_key.created_at().as_secs()),
        ),
        Some(sub) => (
            sub.signatures
                .iter()
                .filter(|s| s.typ() == Some(SignatureType::SubkeyRevocation))
                .filter(|s| s.verify_subkey_binding(&key.primary_key, &sub.key).is_ok())
                .collect(),
            sub.signatures
                .iter()
                .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding))
                .collect(),
            i64::from(sub.key.created_at().as_secs()),
        ),
    };
    if !revocations.is_empty() {
        return Verdict::Revoked { key: name };
    }
    // The newest self-signature says how long the key lives.
    let newest = self_signatures
        .iter()
        .max_by_key(|s| s.created().map_or(0, pgp::types::Timestamp::as_secs));
    let lifetime = newest.and_then(|s| s.key_expiration_time());
    match lifetime.map(pgp::types::Duration::as_secs) {
        Some(secs) if secs > 0 => {
            let at = created + i64::from(secs);
            if now >= at {
                Verdict::Expired { key: name, at }
            } else {
                Verdict::Valid
            }
        }
        _ => Verdict::Valid,
    }
}
