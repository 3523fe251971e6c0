//! `Release` files: the signed table of contents of one suite.
//!
//! Owns the fields kiln trusts after the signature is checked: `Date`,
//! `Valid-Until`, `Acquire-By-Hash` and the `SHA256` section. Verifying the
//! signature is [`crate::keyring`]'s job; fetching is [`crate::repository`]'s.

use std::collections::BTreeMap;

use crate::control;
use crate::date;
use crate::error::Error;

/// How far in the future a `Date` may lie before it is rejected, for clocks
/// that are slightly off.
pub const DATE_TOLERANCE_SECS: i64 = 600;

/// The digest and size of one file listed in a `Release`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    /// SHA256, lowercase hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// A parsed `Release` (the signed text of an `InRelease`).
#[derive(Debug, Clone)]
pub struct Release {
    /// `Suite`, such as `oldstable`.
    pub suite: Option<String>,
    /// `Codename`, such as `bookworm`.
    pub codename: Option<String>,
    /// `Date` in seconds since the epoch.
    pub date: Option<i64>,
    /// `Valid-Until` in seconds since the epoch.
    pub valid_until: Option<i64>,
    /// `Acquire-By-Hash: yes`.
    pub acquire_by_hash: bool,
    /// `NotAutomatic: yes` (experimental, backports).
    pub not_automatic: bool,
    /// `ButAutomaticUpgrades: yes` (backports).
    pub but_automatic_upgrades: bool,
    /// `Architectures`.
    pub architectures: Vec<String>,
    /// `Components`.
    pub components: Vec<String>,
    /// The `SHA256` section: path relative to `dists/<suite>/` → digest.
    pub sha256: BTreeMap<String, FileDigest>,
}

impl Release {
    /// Parses the text of a `Release` file. `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, Error> {
        let err = |line: usize, message: String| Error::ParseRelease {
            origin: origin.to_owned(),
            line,
            message,
        };
        let para = control::paragraphs(text)
            .next()
            .ok_or_else(|| err(1, "the file is empty".to_owned()))?;
        let mut release = Release {
            suite: None,
            codename: None,
            date: None,
            valid_until: None,
            acquire_by_hash: false,
            not_automatic: false,
            but_automatic_upgrades: false,
            architectures: Vec::new(),
            components: Vec::new(),
            sha256: BTreeMap::new(),
        };
        let words = |v: &str| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        for field in para.fields() {
            let field = field.map_err(|e| err(e.line, e.message.to_owned()))?;
            let value = field.value;
            let parse_date = |v: &str| {
                date::parse_rfc2822(v)
                    .ok_or_else(|| err(field.line, format!("`{}: {v}` is not a date", field.name)))
            };
            match field.name {
                "Suite" => release.suite = Some(value.to_owned()),
                "Codename" => release.codename = Some(value.to_owned()),
                "Date" => release.date = Some(parse_date(value)?),
                "Valid-Until" => release.valid_until = Some(parse_date(value)?),
                "Acquire-By-Hash" => release.acquire_by_hash = value == "yes",
                "NotAutomatic" => release.not_automatic = value == "yes",
                "ButAutomaticUpgrades" => release.but_automatic_upgrades = value == "yes",
                "Architectures" => release.architectures = words(value),
                "Components" => release.components = words(value),
                "SHA256" => {
                    for (i, line) in value.lines().enumerate() {
                        let line_no = field.line + 1 + i;
                        let mut parts = line.split_whitespace();
                        let (Some(hash), Some(size), Some(path), None) =
                            (parts.next(), parts.next(), parts.next(), parts.next())
                        else {
                            if line.trim().is_empty() {
                                continue;
                            }
                            return Err(err(
                                line_no,
                                "a SHA256 line is not `digest size path`".into(),
                            ));
                        };
                        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                            return Err(err(line_no, format!("`{hash}` is not a SHA256 digest")));
                        }
                        let size = size
                            .parse()
                            .map_err(|_| err(line_no, format!("`{size}` is not a size")))?;
                        release.sha256.insert(
                            path.to_owned(),
                            FileDigest {
                                sha256: hash.to_ascii_lowercase(),
                                size,
                            },
                        );
                    }
                }
                _ => {}
            }
        }
        Ok(release)
    }

    /// Rejects a `Release` that is expired (`Valid-Until` in the past) or
    /// dated in the future, as apt does.
    pub fn check_freshness(&self, now: i64, origin: &str) -> Result<(), Error> {
        if let Some(until) = self.valid_until.filter(|&until| until < now) {
            return Err(Error::ReleaseExpired {
                origin: origin.to_owned(),
                valid_until: date::format_rfc2822(until),
            });
        }
        if let Some(date) = self.date.filter(|&date| date > now + DATE_TOLERANCE_SECS) {
            return Err(Error::ReleaseNotYetValid {
                origin: origin.to_owned(),
                date: date::format_rfc2822(date),
            });
        }
        Ok(())
    }

    /// apt's default pin priority for this suite: 500, or 1 for
    /// `NotAutomatic: yes`, or 100 if also `ButAutomaticUpgrades: yes`.
    #[must_use]
    pub fn default_pin_priority(&self) -> i32 {
        match (self.not_automatic, self.but_automatic_upgrades) {
            (false, _) => 500,
            (true, false) => 1,
            (true, true) => 100,
        }
    }

    /// The digest of `path` (relative to `dists/<suite>/`).
    #[must_use]
    pub fn digest(&self, path: &str) -> Option<&FileDigest> {
        self.sha256.get(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELEASE: &str = "\
Origin: Debian
Suite: oldstable
Codename: bookworm
Date: Sat, 17 May 2025 09:31:35 UTC
Valid-Until: Sat, 24 May 2025 09:31:35 UTC
Acquire-By-Hash: yes
Architectures: all amd64 arm64
Components: main contrib
MD5Sum:
 0ed6d4c8891eb86358b94bb35d9e4da4  1484322 contrib/Contents-all
SHA256:
 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855        0 main/binary-amd64/Packages
 E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855     1234 main/binary-amd64/Packages.xz
";

    #[test]
    fn parses_fields_and_sha256() {
        let r = Release::parse(RELEASE, "InRelease").unwrap();
        assert_eq!(r.codename.as_deref(), Some("bookworm"));
        assert!(r.acquire_by_hash);
        assert_eq!(r.components, ["main", "contrib"]);
        assert_eq!(r.sha256.len(), 2);
        let xz = r.digest("main/binary-amd64/Packages.xz").unwrap();
        assert_eq!(xz.size, 1234);
        assert!(xz.sha256.starts_with("e3b0c442"));
    }

    #[test]
    fn enforces_valid_until_and_date() {
        let r = Release::parse(RELEASE, "InRelease").unwrap();
        let date = r.date.unwrap();
        assert!(r.check_freshness(date + 3600, "InRelease").is_ok());
        let expired = r.check_freshness(
            r.valid_until.unwrap() + 1,
            "http://m/dists/bookworm/InRelease",
        );
        insta::assert_snapshot!(expired.unwrap_err(), @"Failed to accept `http://m/dists/bookworm/InRelease`: it expired at Sat, 24 May 2025 09:31:35 UTC (Valid-Until)");
        let early = r.check_freshness(date - 86_400, "InRelease");
        insta::assert_snapshot!(early.unwrap_err(), @"Failed to accept `InRelease`: its Date Sat, 17 May 2025 09:31:35 UTC is in the future");
    }

    #[test]
    fn rejects_bad_sha256_lines() {
        let text = "Suite: x\nSHA256:\n nothex 12 main/Packages\n";
        let err = Release::parse(text, "Release").unwrap_err();
        insta::assert_snapshot!(err, @"Failed to parse `Release` at line 3: `nothex` is not a SHA256 digest");
    }
}
