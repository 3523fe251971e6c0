//! The two digests a layer is known by: [`InputKey`] (what went into the
//! build, computed by `kiln-plan`) and [`ContentDigest`] (what came out,
//! computed here by [`content_digest`](crate::content_digest)).

use std::fmt;

use crate::error::Error;

macro_rules! digest_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The full digest in lower-case hex (64 digits).
            #[must_use]
            pub fn to_hex(&self) -> String {
                blake3::Hash::from_bytes(self.0).to_hex().to_string()
            }

            /// Parses 64 lower-case hex digits.
            pub fn from_hex(text: &str) -> Result<Self, Error> {
                let valid = text.len() == 64
                    && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
                match blake3::Hash::from_hex(text) {
                    Ok(hash) if valid => Ok(Self(*hash.as_bytes())),
                    _ => Err(Error::InvalidDigest {
                        text: text.to_owned(),
                    }),
                }
            }

            /// The first 12 hex digits, as shown in tables.
            #[must_use]
            pub fn short(&self) -> String {
                self.to_hex()[..12].to_owned()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl std::str::FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self, Error> {
                Self::from_hex(s)
            }
        }
    };
}

digest_type!(
    /// A variant's input digest: the key a layer is stored under.
    InputKey
);

digest_type!(
    /// The BLAKE3 digest of a layer tree's canonical encoding.
    ContentDigest
);
