//! Input digests: BLAKE3 over a canonical encoding of everything a variant's
//! build depends on.
//!
//! The encoding is length-prefixed and tagged, tables are sorted by key, and
//! nothing in it depends on where the tree is checked out, on file times or
//! on directory read order. Changing the encoding changes every digest, so
//! it is versioned by [`DOMAIN`].

use std::fmt;

use kiln_config::tree::{FileEntry, FileKind, LinkTarget};
use kiln_config::{Kind, Table, Value};

/// Domain separator and version of the encoding.
pub const DOMAIN: &str = "kiln input digest v1";

/// The input digest of a variant.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InputDigest(pub [u8; 32]);

impl InputDigest {
    /// The full digest in lower-case hex.
    #[must_use]
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    /// The first 12 hex digits, as shown in tables.
    #[must_use]
    pub fn short(&self) -> String {
        self.to_hex()[..12].to_string()
    }
}

impl fmt::Display for InputDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for InputDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InputDigest({})", self.short())
    }
}

/// A canonical, streaming encoder.
pub(crate) struct Encoder {
    hasher: blake3::Hasher,
}

impl Encoder {
    pub(crate) fn new() -> Self {
        let mut e = Self {
            hasher: blake3::Hasher::new(),
        };
        e.str(DOMAIN);
        e
    }

    fn tag(&mut self, t: u8) {
        self.hasher.update(&[t]);
    }

    fn len(&mut self, n: usize) {
        self.hasher.update(&(n as u64).to_le_bytes());
    }

    pub(crate) fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.tag(b's');
        self.len(b.len());
        self.hasher.update(b);
    }

    pub(crate) fn u64(&mut self, n: u64) {
        self.tag(b'u');
        self.hasher.update(&n.to_le_bytes());
    }

    /// A labelled field: the label, then the value the caller writes.
    pub(crate) fn field(&mut self, label: &str) {
        self.tag(b'f');
        self.str(label);
    }

    pub(crate) fn list<T>(&mut self, items: &[T], mut each: impl FnMut(&mut Self, &T)) {
        self.tag(b'l');
        self.len(items.len());
        for i in items {
            each(self, i);
        }
    }

    pub(crate) fn value(&mut self, v: &Value) {
        match &v.kind {
            Kind::String(s) => self.str(s),
            Kind::Integer(i) => {
                self.tag(b'i');
                self.hasher.update(&i.to_le_bytes());
            }
            Kind::Float(f) => {
                self.tag(b'd');
                self.hasher.update(&f.to_bits().to_le_bytes());
            }
            Kind::Bool(b) => self.tag(if *b { b'T' } else { b'F' }),
            Kind::Datetime(d) => {
                self.tag(b't');
                self.str(d);
            }
            Kind::Array(items) => self.list(items, Encoder::value),
            Kind::Table(t) => self.table(t),
        }
    }

    pub(crate) fn table(&mut self, t: &Table) {
        let mut keys: Vec<&String> = t.keys().collect();
        keys.sort();
        self.tag(b'm');
        self.len(keys.len());
        for k in keys {
            self.str(k);
            self.value(&t[k.as_str()].value);
        }
    }

    pub(crate) fn file(&mut self, f: &FileEntry) {
        self.str(&f.path);
        match &f.kind {
            FileKind::File { mode, size, digest } => {
                self.tag(b'r');
                self.u64(u64::from(*mode));
                self.u64(*size);
                self.bytes(digest);
            }
            FileKind::Dir { mode } => {
                self.tag(b'D');
                self.u64(u64::from(*mode));
            }
            FileKind::Symlink { target, leads } => {
                self.tag(b'L');
                self.str(target);
                // What a followed link reads (a `files` source, a script);
                // nothing for the others, whose link alone is the input.
                if let LinkTarget::File { mode, size, digest } = leads {
                    self.tag(b'f');
                    self.u64(u64::from(*mode));
                    self.u64(*size);
                    self.bytes(digest);
                }
            }
        }
    }

    pub(crate) fn finish(self) -> InputDigest {
        InputDigest(*self.hasher.finalize().as_bytes())
    }
}
