//! Binary package indexes (`Packages` files).
//!
//! Owns the fields kiln reads from a stanza and a fast parser for a whole
//! file. Does no I/O and no verification: [`crate::repository`] hands it text
//! whose hash was already checked against a signed `Release`.

use crate::control::{self, Field};
use crate::error::Error;
use crate::relation::{self, Dependency, Relation};
use crate::version::Version;

/// `Multi-Arch` field values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MultiArch {
    /// No field: installable for one architecture, satisfies same-arch deps.
    #[default]
    No,
    /// `same`: co-installable across architectures.
    Same,
    /// `foreign`: satisfies dependencies from any architecture.
    Foreign,
    /// `allowed`: satisfies `:any` dependencies.
    Allowed,
}

/// `Priority` field values, in apt's order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Priority {
    /// `required`: needed for the system to work.
    Required,
    /// `important`.
    Important,
    /// `standard`.
    Standard,
    /// `optional` (and a missing field).
    #[default]
    Optional,
    /// `extra` (obsolete).
    Extra,
    /// Any other value.
    Other,
}

impl Priority {
    fn parse(value: &str) -> Self {
        match value {
            "required" => Priority::Required,
            "important" => Priority::Important,
            "standard" => Priority::Standard,
            "optional" => Priority::Optional,
            "extra" => Priority::Extra,
            _ => Priority::Other,
        }
    }
}

/// One stanza of a `Packages` file.
#[derive(Debug, Clone)]
pub struct Package {
    /// `Package`.
    pub name: String,
    /// `Version`.
    pub version: Version,
    /// `Architecture` (`amd64`, `all`, …).
    pub architecture: String,
    /// `Multi-Arch`.
    pub multi_arch: MultiArch,
    /// `Essential: yes`.
    pub essential: bool,
    /// `Priority`.
    pub priority: Priority,
    /// `Depends`.
    pub depends: Vec<Dependency>,
    /// `Pre-Depends`.
    pub pre_depends: Vec<Dependency>,
    /// `Provides`.
    pub provides: Vec<Relation>,
    /// `Conflicts`.
    pub conflicts: Vec<Relation>,
    /// `Breaks`.
    pub breaks: Vec<Relation>,
    /// `Replaces`.
    pub replaces: Vec<Relation>,
    /// `Filename`: path of the `.deb` relative to the archive root.
    pub filename: String,
    /// `Size` in bytes.
    pub size: u64,
    /// `SHA256` of the `.deb`, lowercase hex.
    pub sha256: String,
    /// `Source` name (without the version in parentheses), if different.
    pub source: Option<String>,
}

/// Parses a whole `Packages` file. `origin` names it in errors.
pub fn parse_packages(text: &str, origin: &str) -> Result<Vec<Package>, Error> {
    let mut out = Vec::with_capacity(text.len() / 800);
    for para in control::paragraphs(text) {
        out.push(parse_stanza(para, origin)?);
    }
    Ok(out)
}

fn parse_stanza(para: control::Paragraph<'_>, origin: &str) -> Result<Package, Error> {
    let err = |line: usize, message: String| Error::ParseIndex {
        origin: origin.to_owned(),
        line,
        message,
    };
    let mut name = None;
    let mut version = None;
    let mut architecture = None;
    let mut multi_arch = MultiArch::No;
    let mut essential = false;
    let mut priority = Priority::Optional;
    let mut depends = Vec::new();
    let mut pre_depends = Vec::new();
    let mut provides = Vec::new();
    let mut conflicts = Vec::new();
    let mut breaks = Vec::new();
    let mut replaces = Vec::new();
    let mut filename = None;
    let mut size = None;
    let mut sha256 = None;
    let mut source = None;
    for field in para.fields() {
        let Field {
            name: key,
            value,
            line,
        } = field.map_err(|e| err(e.line, e.message.to_owned()))?;
        let rel = |e: Error| err(line, e.to_string());
        match key {
            "Package" => name = Some(value),
            "Version" => version = Some(Version::parse(value).map_err(rel)?),
            "Architecture" => architecture = Some(value),
            "Multi-Arch" => {
                multi_arch = match value {
                    "same" => MultiArch::Same,
                    "foreign" => MultiArch::Foreign,
                    "allowed" => MultiArch::Allowed,
                    _ => MultiArch::No,
                }
            }
            "Essential" => essential = value == "yes",
            "Priority" => priority = Priority::parse(value),
            "Depends" => depends = relation::parse_dependencies(value).map_err(rel)?,
            "Pre-Depends" => pre_depends = relation::parse_dependencies(value).map_err(rel)?,
            "Provides" => provides = relation::parse_relations(value).map_err(rel)?,
            "Conflicts" => conflicts = relation::parse_relations(value).map_err(rel)?,
            "Breaks" => breaks = relation::parse_relations(value).map_err(rel)?,
            "Replaces" => replaces = relation::parse_relations(value).map_err(rel)?,
            "Filename" => filename = Some(value),
            "Size" => {
                size = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| err(line, format!("`Size: {value}` is not a number")))?,
                );
            }
            "SHA256" => {
                if value.len() != 64 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(err(
                        line,
                        format!("`SHA256: {value}` is not a SHA256 digest"),
                    ));
                }
                sha256 = Some(value);
            }
            "Source" => {
                let src = value.split_whitespace().next().unwrap_or(value);
                source = Some(src.to_owned());
            }
            _ => {}
        }
    }
    let missing = |field: &str| err(para.line, format!("the stanza has no `{field}` field"));
    let name = name.ok_or_else(|| missing("Package"))?;
    Ok(Package {
        name: name.to_owned(),
        version: version.ok_or_else(|| missing("Version"))?,
        architecture: architecture
            .ok_or_else(|| missing("Architecture"))?
            .to_owned(),
        multi_arch,
        essential,
        priority,
        depends,
        pre_depends,
        provides,
        conflicts,
        breaks,
        replaces,
        filename: filename.ok_or_else(|| missing("Filename"))?.to_owned(),
        size: size.ok_or_else(|| missing("Size"))?,
        sha256: sha256
            .ok_or_else(|| missing("SHA256"))?
            .to_ascii_lowercase(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STANZA: &str = "\
Package: libc6
Source: glibc (2.36-9+deb12u4)
Version: 2.36-9+deb12u4
Installed-Size: 12000
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Architecture: amd64
Multi-Arch: same
Replaces: libc6-amd64
Depends: libgcc-s1, libc6 (<< 1) | gcc-12-base
Breaks: hurd (<< 1:0.9.git20220301-2), nscd (<< 2.36)
Description: GNU C Library: Shared libraries
 Contains the standard libraries.
 .
 More text: with colons.
Priority: optional
Filename: pool/main/g/glibc/libc6_2.36-9+deb12u4_amd64.deb
Size: 2757936
SHA256: 00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff

Package: dpkg
Essential: yes
Priority: required
Version: 1.21.22
Architecture: amd64
Pre-Depends: libbz2-1.0, tar (>= 1.28-1)
Provides: dpkg-dev (= 1.0)
Filename: pool/main/d/dpkg/dpkg_1.21.22_amd64.deb
Size: 1
SHA256: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA
";

    #[test]
    fn parses_stanzas() {
        let pkgs = parse_packages(STANZA, "test").unwrap();
        assert_eq!(pkgs.len(), 2);
        let libc = &pkgs[0];
        assert_eq!(libc.name, "libc6");
        assert_eq!(libc.source.as_deref(), Some("glibc"));
        assert_eq!(libc.multi_arch, MultiArch::Same);
        assert_eq!(libc.depends.len(), 2);
        assert_eq!(libc.breaks.len(), 2);
        assert_eq!(libc.size, 2_757_936);
        let dpkg = &pkgs[1];
        assert!(dpkg.essential);
        assert_eq!(dpkg.priority, Priority::Required);
        assert_eq!(dpkg.provides[0].to_string(), "dpkg-dev (= 1.0)");
        assert_eq!(dpkg.sha256, "a".repeat(64));
    }

    #[test]
    fn names_the_line_of_a_bad_field() {
        let text = "Package: a\nVersion: 1\nArchitecture: all\nSize: lots\n";
        let err = parse_packages(text, "main/binary-amd64/Packages").unwrap_err();
        insta::assert_snapshot!(err, @"Failed to parse `main/binary-amd64/Packages` at line 4: `Size: lots` is not a number");
    }

    #[test]
    fn names_a_missing_field() {
        let text = "\n\nPackage: a\nVersion: 1\nArchitecture: all\n";
        let err = parse_packages(text, "Packages").unwrap_err();
        insta::assert_snapshot!(err, @"Failed to parse `Packages` at line 3: the stanza has no `Filename` field");
    }
}
