//! Debian version numbers and their ordering.
//!
//! Owns parsing of `[epoch:]upstream[-revision]` and the comparison rules of
//! dpkg (`verrevcmp`), including `~` sorting before everything. Knows nothing
//! about packages or relations.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// A parsed Debian version, ordered as dpkg orders them.
///
/// Equality follows the ordering, so `1.0`, `0:1.0` and `1.0-0` are equal;
/// [`Version::as_str`] keeps the text as written.
#[derive(Clone)]
pub struct Version {
    text: Box<str>,
    epoch: u32,
    /// Byte range of the upstream part inside `text`.
    upstream: (u32, u32),
    /// Start of the revision inside `text`, if there is one.
    revision: Option<u32>,
}

impl Version {
    /// Parses a version such as `1:2.36-9+deb12u4`.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let invalid = |reason: &'static str| Error::InvalidVersion {
            version: text.to_owned(),
            reason,
        };
        if text.is_empty() {
            return Err(invalid("it is empty"));
        }
        if text.len() > u32::MAX as usize {
            return Err(invalid("it is too long"));
        }
        let (epoch, upstream_start) = match text.find(':') {
            Some(colon) => {
                let epoch = text[..colon]
                    .parse::<u32>()
                    .map_err(|_| invalid("the epoch is not a number"))?;
                (epoch, colon + 1)
            }
            None => (0, 0),
        };
        let rest = &text[upstream_start..];
        let (upstream_end, revision) = match rest.rfind('-') {
            Some(dash) => (upstream_start + dash, Some(upstream_start + dash + 1)),
            None => (text.len(), None),
        };
        let upstream = &text[upstream_start..upstream_end];
        if upstream.is_empty() {
            return Err(invalid("the upstream version is empty"));
        }
        if !upstream.as_bytes()[0].is_ascii_digit() {
            return Err(invalid("the upstream version does not start with a digit"));
        }
        let allowed =
            |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~' | '-' | ':');
        if !upstream.chars().all(allowed) {
            return Err(invalid(
                "the upstream version has a character other than [A-Za-z0-9.+~-:]",
            ));
        }
        if let Some(start) = revision {
            let rev = &text[start..];
            if rev.is_empty() {
                return Err(invalid("the revision is empty"));
            }
            if !rev
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~'))
            {
                return Err(invalid(
                    "the revision has a character other than [A-Za-z0-9.+~]",
                ));
            }
        }
        Ok(Self {
            text: text.into(),
            epoch,
            upstream: (upstream_start as u32, upstream_end as u32),
            revision: revision.map(|r| r as u32),
        })
    }

    /// The version as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The epoch (`0` when absent).
    #[must_use]
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The upstream part.
    #[must_use]
    pub fn upstream(&self) -> &str {
        &self.text[self.upstream.0 as usize..self.upstream.1 as usize]
    }

    /// The Debian revision (`""` when absent).
    #[must_use]
    pub fn revision(&self) -> &str {
        self.revision
            .map_or("", |start| &self.text[start as usize..])
    }
}

impl FromStr for Version {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Version({:?})", &*self.text)
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| verrevcmp(self.upstream().as_bytes(), other.upstream().as_bytes()))
            .then_with(|| verrevcmp(self.revision().as_bytes(), other.revision().as_bytes()))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

/// The weight of one non-digit byte: `~` sorts before the end of the string,
/// letters before everything else.
fn order(c: u8) -> i32 {
    match c {
        b'~' => -1,
        0 => 0,
        c if c.is_ascii_digit() => 0,
        c if c.is_ascii_alphabetic() => i32::from(c),
        c => i32::from(c) + 256,
    }
}

/// dpkg's `verrevcmp`: alternating non-digit and digit runs.
fn verrevcmp(a: &[u8], b: &[u8]) -> Ordering {
    let at = |i: usize| a.get(i).copied().unwrap_or(0);
    let bt = |j: usize| b.get(j).copied().unwrap_or(0);
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !at(i).is_ascii_digit()) || (j < b.len() && !bt(j).is_ascii_digit()) {
            let (ac, bc) = (order(at(i)), order(bt(j)));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while at(i) == b'0' {
            i += 1;
        }
        while bt(j) == b'0' {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while at(i).is_ascii_digit() && bt(j).is_ascii_digit() {
            if first_diff == Ordering::Equal {
                first_diff = at(i).cmp(&bt(j));
            }
            i += 1;
            j += 1;
        }
        if at(i).is_ascii_digit() {
            return Ordering::Greater;
        }
        if bt(j).is_ascii_digit() {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn orders_like_dpkg() {
        // Pairs taken from dpkg's own test suite and Debian policy 5.6.12.
        let ascending = [
            ("1.0~rc1", "1.0"),
            ("1.0~~", "1.0~"),
            ("1.0~", "1.0"),
            ("1.0", "1.0a"),
            ("1.0", "1.0+b1"),
            ("1.0", "1.0.1"),
            ("1.0-1", "1.0-2"),
            ("1.0-9", "1.0-10"),
            ("2.36-9", "2.36-9+deb12u4"),
            ("9.9", "1:0.1"),
            ("1.2.3", "1.2.10"),
            ("1.0a", "1.0.0"),
            ("0.9", "0.10"),
        ];
        for (lo, hi) in ascending {
            assert!(v(lo) < v(hi), "{lo} < {hi}");
            assert!(v(hi) > v(lo), "{hi} > {lo}");
        }
        assert_eq!(v("1.0"), v("0:1.0"));
        assert_eq!(v("1.0"), v("1.0-0"));
        assert_eq!(v("1.00"), v("1.0"));
    }

    #[test]
    fn splits_parts() {
        let x = v("1:2.3-4-5");
        assert_eq!((x.epoch(), x.upstream(), x.revision()), (1, "2.3-4", "5"));
        let y = v("2.3");
        assert_eq!((y.epoch(), y.upstream(), y.revision()), (0, "2.3", ""));
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "x:1", "1:", "a1", "1.0-", "1.0 2", "1.0-a_b"] {
            assert!(Version::parse(bad).is_err(), "{bad}");
        }
    }

    fn version_strategy() -> impl Strategy<Value = String> {
        (
            proptest::option::of(0u32..3),
            "[0-9][0-9a-z.+~]{0,6}",
            proptest::option::of("[0-9a-z][0-9a-z.+~]{0,4}"),
        )
            .prop_map(|(e, up, rev)| {
                let mut s = String::new();
                if let Some(e) = e {
                    s = format!("{e}:");
                }
                s.push_str(&up);
                if let Some(r) = rev {
                    s.push('-');
                    s.push_str(&r);
                }
                s
            })
    }

    proptest! {
        #[test]
        fn ordering_is_total_and_consistent(a in version_strategy(), b in version_strategy(), c in version_strategy()) {
            let (a, b, c) = (v(&a), v(&b), v(&c));
            prop_assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
            if a <= b && b <= c {
                prop_assert!(a <= c);
            }
            prop_assert_eq!(a.cmp(&a), Ordering::Equal);
        }

        #[test]
        fn tilde_sorts_before_release(a in "[0-9][0-9a-z.]{0,6}") {
            let (rc, rel, bin) = (v(&format!("{a}~rc1")), v(&a), v(&format!("{a}+b1")));
            prop_assert!(rc < rel);
            prop_assert!(rel < bin);
        }
    }
}
