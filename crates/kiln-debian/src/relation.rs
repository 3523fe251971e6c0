//! Package relations: `Depends`, `Pre-Depends`, `Provides`, `Conflicts`,
//! `Breaks` and `Replaces` fields.
//!
//! Owns the syntax (`name[:arch] [(op version)]`, alternatives with `|`) and
//! the meaning of a version constraint. Does not look packages up: that is
//! the resolver's job.

use std::cmp::Ordering;
use std::fmt;

use crate::error::Error;
use crate::version::Version;

/// A version comparison operator in a relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `<<`: strictly earlier.
    Lt,
    /// `<=`: earlier or equal (also the obsolete `<`).
    Le,
    /// `=`: exactly equal.
    Eq,
    /// `>=`: later or equal (also the obsolete `>`).
    Ge,
    /// `>>`: strictly later.
    Gt,
}

impl Op {
    /// The operator as written in control files.
    #[must_use]
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Lt => "<<",
            Op::Le => "<=",
            Op::Eq => "=",
            Op::Ge => ">=",
            Op::Gt => ">>",
        }
    }

    /// Whether `candidate.cmp(bound)` is allowed by this operator.
    #[must_use]
    pub fn admits(self, ordering: Ordering) -> bool {
        match self {
            Op::Lt => ordering == Ordering::Less,
            Op::Le => ordering != Ordering::Greater,
            Op::Eq => ordering == Ordering::Equal,
            Op::Ge => ordering != Ordering::Less,
            Op::Gt => ordering == Ordering::Greater,
        }
    }
}

/// A version constraint such as `(>= 2.36)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    /// The comparison.
    pub op: Op,
    /// The version compared against.
    pub version: Version,
}

impl Constraint {
    /// Whether `version` satisfies this constraint.
    #[must_use]
    pub fn satisfied_by(&self, version: &Version) -> bool {
        self.op.admits(version.cmp(&self.version))
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op.symbol(), self.version)
    }
}

/// The architecture qualifier of a relation (`foo:any`, `foo:native`, `foo:amd64`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ArchQualifier {
    /// `:any`: satisfied by a `Multi-Arch: allowed` package of any architecture.
    Any,
    /// `:native`: the native (target) architecture.
    Native,
    /// A named architecture.
    Named(String),
}

/// One relation: a package name with optional architecture and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// The (possibly virtual) package name.
    pub name: String,
    /// The architecture qualifier, if any.
    pub arch: Option<ArchQualifier>,
    /// The version constraint, if any.
    pub constraint: Option<Constraint>,
}

impl Relation {
    /// Parses one relation such as `libc6:amd64 (>= 2.36)`.
    pub fn parse(text: &str) -> Result<Self, Error> {
        parse_relation(text, text)
    }
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        match &self.arch {
            None => {}
            Some(ArchQualifier::Any) => f.write_str(":any")?,
            Some(ArchQualifier::Native) => f.write_str(":native")?,
            Some(ArchQualifier::Named(arch)) => write!(f, ":{arch}")?,
        }
        if let Some(c) = &self.constraint {
            write!(f, " ({c})")?;
        }
        Ok(())
    }
}

/// One entry of a `Depends` field: alternatives separated by `|`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The alternatives, in the order written (apt tries them in this order).
    pub alternatives: Vec<Relation>,
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, alt) in self.alternatives.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{alt}")?;
        }
        Ok(())
    }
}

/// Parses a field with alternatives (`Depends`, `Pre-Depends`).
pub fn parse_dependencies(field: &str) -> Result<Vec<Dependency>, Error> {
    let mut out = Vec::new();
    for entry in field.split(',') {
        if entry.trim().is_empty() {
            continue;
        }
        let alternatives = entry
            .split('|')
            .map(|alt| parse_relation(alt, field))
            .collect::<Result<Vec<_>, _>>()?;
        out.push(Dependency { alternatives });
    }
    Ok(out)
}

/// Parses a field without alternatives (`Provides`, `Conflicts`, `Breaks`, `Replaces`).
pub fn parse_relations(field: &str) -> Result<Vec<Relation>, Error> {
    field
        .split(',')
        .filter(|entry| !entry.trim().is_empty())
        .map(|entry| parse_relation(entry, field))
        .collect()
}

fn parse_relation(text: &str, field: &str) -> Result<Relation, Error> {
    let invalid = |reason: &'static str| Error::InvalidRelation {
        relation: field.trim().to_owned(),
        reason,
    };
    let text = text.trim();
    let name_end = text
        .find(|c: char| c.is_whitespace() || matches!(c, '(' | '[' | '<'))
        .unwrap_or(text.len());
    let (full_name, mut rest) = text.split_at(name_end);
    if full_name.is_empty() {
        return Err(invalid("a package name is missing"));
    }
    let (name, arch) = match full_name.split_once(':') {
        Some((name, "any")) => (name, Some(ArchQualifier::Any)),
        Some((name, "native")) => (name, Some(ArchQualifier::Native)),
        Some((name, arch)) if !arch.is_empty() => {
            (name, Some(ArchQualifier::Named(arch.to_owned())))
        }
        Some(_) => return Err(invalid("the architecture qualifier is empty")),
        None => (full_name, None),
    };
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.'))
        || name.is_empty()
    {
        return Err(invalid(
            "a package name has a character other than [a-z0-9+.-]",
        ));
    }
    rest = rest.trim_start();
    let mut constraint = None;
    if let Some(inner) = rest.strip_prefix('(') {
        let close = inner
            .find(')')
            .ok_or_else(|| invalid("a `(` is not closed"))?;
        let spec = inner[..close].trim();
        rest = inner[close + 1..].trim_start();
        let (op, version) = if let Some(v) = spec.strip_prefix("<<") {
            (Op::Lt, v)
        } else if let Some(v) = spec.strip_prefix("<=") {
            (Op::Le, v)
        } else if let Some(v) = spec.strip_prefix(">=") {
            (Op::Ge, v)
        } else if let Some(v) = spec.strip_prefix(">>") {
            (Op::Gt, v)
        } else if let Some(v) = spec.strip_prefix('=') {
            (Op::Eq, v)
        } else if let Some(v) = spec.strip_prefix('<') {
            (Op::Le, v)
        } else if let Some(v) = spec.strip_prefix('>') {
            (Op::Ge, v)
        } else {
            return Err(invalid("a version constraint has no operator"));
        };
        let version =
            Version::parse(version.trim()).map_err(|_| invalid("a version is malformed"))?;
        constraint = Some(Constraint { op, version });
    }
    // Architecture restrictions and build profiles only occur in source
    // packages; accept and ignore them so a stray one does not fail a build.
    while let Some(open) = rest.chars().next().filter(|c| matches!(c, '[' | '<')) {
        let close = if open == '[' { ']' } else { '>' };
        let end = rest
            .find(close)
            .ok_or_else(|| invalid("a restriction list is not closed"))?;
        rest = rest[end + 1..].trim_start();
    }
    if !rest.is_empty() {
        return Err(invalid("unexpected text after the relation"));
    }
    Ok(Relation {
        name: name.to_owned(),
        arch,
        constraint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_alternatives_arch_and_constraints() {
        let deps = parse_dependencies(
            "libc6 (>= 2.34), perl:any | perl-base (<<5.38) , libfoo:amd64 (= 1:2.0-1)",
        )
        .unwrap();
        let text: Vec<String> = deps.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "libc6 (>= 2.34)",
                "perl:any | perl-base (<< 5.38)",
                "libfoo:amd64 (= 1:2.0-1)"
            ]
        );
        assert_eq!(deps[1].alternatives[0].arch, Some(ArchQualifier::Any));
        assert_eq!(
            deps[2].alternatives[0].arch,
            Some(ArchQualifier::Named("amd64".into()))
        );
    }

    #[test]
    fn ignores_restrictions_and_empty_entries() {
        let deps = parse_dependencies("foo [amd64] <!nocheck>, , bar").unwrap();
        assert_eq!(deps.len(), 2);
        assert_eq!(deps[0].to_string(), "foo");
    }

    #[test]
    fn obsolete_operators_mean_or_equal() {
        let rel = Relation::parse("foo (< 2)").unwrap();
        assert_eq!(rel.constraint.unwrap().op, Op::Le);
        let rel = Relation::parse("foo (> 2)").unwrap();
        assert_eq!(rel.constraint.unwrap().op, Op::Ge);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "foo (>= )",
            "foo (2.0)",
            "Foo",
            "foo (>= 1",
            "foo bar",
            ":any",
        ] {
            assert!(Relation::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn constraint_table() {
        let table = [
            ("<<", "1.0", "0.9", true),
            ("<<", "1.0", "1.0", false),
            ("<=", "1.0", "1.0", true),
            ("<=", "1.0", "1.0+b1", false),
            ("=", "1.0", "1.0-0", true),
            ("=", "1.0", "1.0-1", false),
            (">=", "1.0", "1.0~rc1", false),
            (">=", "1.0", "1:0.1", true),
            (">>", "1.0", "1.0", false),
            (">>", "1.0", "1.0.1", true),
        ];
        for (op, bound, candidate, expected) in table {
            let rel = Relation::parse(&format!("x ({op} {bound})")).unwrap();
            let ok = rel
                .constraint
                .unwrap()
                .satisfied_by(&Version::parse(candidate).unwrap());
            assert_eq!(ok, expected, "{candidate} {op} {bound}");
        }
    }

    proptest! {
        #[test]
        fn operators_partition_the_ordering(a in "[0-9][0-9a-z.+~]{0,5}", b in "[0-9][0-9a-z.+~]{0,5}") {
            let (va, vb) = (Version::parse(&a).unwrap(), Version::parse(&b).unwrap());
            let sat = |op: Op| Constraint { op, version: vb.clone() }.satisfied_by(&va);
            // Exactly one of <<, =, >> holds; <= is << or =; >= is >> or =.
            prop_assert_eq!(u8::from(sat(Op::Lt)) + u8::from(sat(Op::Eq)) + u8::from(sat(Op::Gt)), 1);
            prop_assert_eq!(sat(Op::Le), sat(Op::Lt) || sat(Op::Eq));
            prop_assert_eq!(sat(Op::Ge), sat(Op::Gt) || sat(Op::Eq));
        }

        #[test]
        fn display_round_trips(name in "[a-z0-9][a-z0-9+.-]{0,8}", op in 0usize..5, ver in "[0-9][0-9a-z.+~]{0,5}") {
            let ops = ["<<", "<=", "=", ">=", ">>"];
            let text = format!("{name} ({} {ver})", ops[op]);
            let rel = Relation::parse(&text).unwrap();
            prop_assert_eq!(rel.to_string(), text);
        }
    }
}
