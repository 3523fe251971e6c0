//! `OpenPGP` keyrings and the signatures on `InRelease` / `Release.gpg`.
//!
//! Owns loading a keyring file (binary `.gpg` with any number of keys, or
//! armored `.asc`) and checking that some key in it made a signature. Returns
//! only text that a signature covers; never interprets it.

use std::fmt;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use pgp::composed::{CleartextSignedMessage, Deserializable, DetachedSignature, SignedPublicKey};
use pgp::packet::Signature;

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

    /// Whether any key (a primary key, or a subkey with a valid binding)
    /// made `signature` over `data`.
    fn verifies(&self, signature: &Signature, data: &[u8]) -> bool {
        self.keys.iter().any(|key| {
            signature.verify(&key.primary_key, data).is_ok()
                || key.public_subkeys.iter().any(|sub| {
                    signature.verify(&sub.key, data).is_ok()
                        && sub.verify_bindings(&key.primary_key).is_ok()
                })
        })
    }

    /// Verifies a clearsigned `InRelease` and returns the signed text with
    /// `\n` line endings. Text outside the signed part is never returned.
    pub fn verify_cleartext(&self, bytes: &[u8], origin: &str) -> Result<String, Error> {
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
        let ok = message
            .signatures()
            .iter()
            .any(|sig| self.verifies(sig, signed.as_bytes()));
        if !ok {
            return Err(Error::BadSignature {
                origin: origin.to_owned(),
                keyring: self.path.clone(),
            });
        }
        Ok(signed.replace("\r\n", "\n"))
    }

    /// Verifies a detached signature (`Release.gpg`, armored or binary) over `data`.
    pub fn verify_detached(
        &self,
        data: &[u8],
        signature: &[u8],
        origin: &str,
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
        if sigs.iter().any(|sig| self.verifies(&sig.signature, data)) {
            Ok(())
        } else {
            Err(Error::BadSignature {
                origin: origin.to_owned(),
                keyring: self.path.clone(),
            })
        }
    }
}
