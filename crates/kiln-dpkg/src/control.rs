//! deb822 control stanzas as dpkg reads and writes them: a package's
//! `control` file and the paragraphs of `/var/lib/dpkg/status`.
//!
//! Values are kept verbatim (continuation lines included), so a stanza
//! read and written again is byte-identical apart from field order.

/// One control stanza: fields in the order read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stanza {
    fields: Vec<(String, String)>,
}

/// dpkg's field order for the status file (`lib/dpkg/parse.c`
/// `fieldinfos`); other fields follow in the order they were read.
const STATUS_ORDER: &[&str] = &[
    "Package",
    "Essential",
    "Protected",
    "Status",
    "Priority",
    "Section",
    "Installed-Size",
    "Origin",
    "Maintainer",
    "Bugs",
    "Architecture",
    "Multi-Arch",
    "Source",
    "Version",
    "Config-Version",
    "Replaces",
    "Provides",
    "Depends",
    "Pre-Depends",
    "Recommends",
    "Suggests",
    "Breaks",
    "Conflicts",
    "Enhances",
    "Conffiles",
    "Filename",
    "Size",
    "MD5sum",
    "MSDOS-Filename",
    "Description",
    "Triggers-Pending",
    "Triggers-Awaited",
];

impl Stanza {
    /// Parses one stanza. Returns `Err` with a reason on a malformed line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut stanzas = parse_all(text)?;
        match stanzas.len() {
            1 => Ok(stanzas.remove(0)),
            0 => Err("empty control stanza".to_owned()),
            n => Err(format!("expected one stanza, found {n}")),
        }
    }

    /// The value of `name` (case-insensitive), without trailing blanks.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim_end())
    }

    /// Sets `name` to `value`, in place if present, else at the end.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self
            .fields
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(field) => field.1 = value,
            None => self.fields.push((name.to_owned(), value)),
        }
    }

    /// Removes `name`.
    pub fn remove(&mut self, name: &str) {
        self.fields.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    /// The fields in the order read.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Writes the stanza in the order read, ending with a newline (no
    /// blank separator line).
    #[must_use]
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (name, value) in &self.fields {
            write_field(&mut out, name, value);
        }
        out
    }

    /// Writes the stanza in dpkg's status field order.
    #[must_use]
    pub fn to_status_text(&self) -> String {
        let mut out = String::new();
        for known in STATUS_ORDER {
            if let Some((name, value)) = self
                .fields
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(known))
            {
                write_field(&mut out, name, value);
            }
        }
        for (name, value) in &self.fields {
            if !STATUS_ORDER.iter().any(|k| k.eq_ignore_ascii_case(name)) {
                write_field(&mut out, name, value);
            }
        }
        out
    }
}

fn write_field(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push(':');
    if !value.starts_with('\n') {
        out.push(' ');
    }
    out.push_str(value);
    out.push('\n');
}

/// Parses a file of stanzas separated by blank lines (the status file).
pub fn parse_all(text: &str) -> Result<Vec<Stanza>, String> {
    let mut out = Vec::new();
    let mut current = Stanza::default();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            if !current.fields.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            continue;
        }
        if line.starts_with('#') && current.fields.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            let Some(last) = current.fields.last_mut() else {
                return Err(format!(
                    "line {}: continuation line without a field",
                    number + 1
                ));
            };
            last.1.push('\n');
            last.1.push_str(line);
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("line {}: expected `Field: value`", number + 1));
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(format!("line {}: bad field name `{name}`", number + 1));
        }
        current
            .fields
            // Trailing blanks are kept: dpkg keeps them in the status.
            .push((name.to_owned(), value.trim_start().to_owned()));
    }
    if !current.fields.is_empty() {
        out.push(current);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTROL: &str = "\
Package: base-files
Version: 12.4+deb12u10
Architecture: amd64
Essential: yes
Pre-Depends: awk
Maintainer: Santiago Vila <sanvila@debian.org>
Installed-Size: 340
Breaks: initscripts (<< 2.88dsf-13.3)
Section: admin
Priority: required
Homepage: https://tracker.debian.org/pkg/base-files
Description: Debian base system miscellaneous files
 This package contains the basic filesystem hierarchy of a Debian system, and
 .
 several important miscellaneous files.
";

    #[test]
    fn round_trips_verbatim() {
        let stanza = Stanza::parse(CONTROL).unwrap();
        assert_eq!(stanza.to_text(), CONTROL);
        let trailing = "Package: libgdbm6 \nDescription: GNU dbm \n more \n";
        let other = Stanza::parse(trailing).unwrap();
        assert_eq!(other.to_text(), trailing);
        assert_eq!(other.get("Package"), Some("libgdbm6"));
        assert_eq!(stanza.get("package"), Some("base-files"));
        assert!(
            stanza
                .get("Description")
                .unwrap()
                .ends_with("\n several important miscellaneous files.")
        );
    }

    #[test]
    fn status_order() {
        let mut stanza = Stanza::parse(CONTROL).unwrap();
        stanza.set("Status", "install ok unpacked");
        stanza.set("Conffiles", "\n /etc/debian_version newconffile");
        let expected = "\
Package: base-files
Essential: yes
Status: install ok unpacked
Priority: required
Section: admin
Installed-Size: 340
Maintainer: Santiago Vila <sanvila@debian.org>
Architecture: amd64
Version: 12.4+deb12u10
Pre-Depends: awk
Breaks: initscripts (<< 2.88dsf-13.3)
Conffiles:
 /etc/debian_version newconffile
Description: Debian base system miscellaneous files
 This package contains the basic filesystem hierarchy of a Debian system, and
 .
 several important miscellaneous files.
Homepage: https://tracker.debian.org/pkg/base-files
";
        assert_eq!(stanza.to_status_text(), expected);
        // What is written parses back to the same fields.
        let again = Stanza::parse(&stanza.to_status_text()).unwrap();
        assert_eq!(again.get("Conffiles"), stanza.get("Conffiles"));
        assert_eq!(again.get("Description"), stanza.get("Description"));
    }

    #[test]
    fn parses_several_and_rejects_garbage() {
        let all = parse_all("Package: a\n\n\nPackage: b\nVersion: 1\n").unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].get("Version"), Some("1"));
        assert_eq!(
            parse_all(" leading").unwrap_err(),
            "line 1: continuation line without a field"
        );
        assert_eq!(
            parse_all("Package: a\nnonsense\n").unwrap_err(),
            "line 2: expected `Field: value`"
        );
        assert_eq!(Stanza::parse("").unwrap_err(), "empty control stanza");
    }
}
