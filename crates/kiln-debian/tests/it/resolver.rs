//! Resolver behaviour on small synthetic indexes.

use kiln_debian::index::parse_packages;
use kiln_debian::{
    Architecture, BaseSet, Error, LockFile, PackageIndex, PackageRequest, ResolveRequest, Resolver,
};
use proptest::prelude::*;

/// One stanza; `extra` holds more fields, one per line.
fn stanza(name: &str, version: &str, extra: &str) -> String {
    let mut s = format!("Package: {name}\nVersion: {version}\n");
    if !extra.contains("Architecture:") {
        s.push_str("Architecture: amd64\n");
    }
    for line in extra.lines().map(str::trim).filter(|l| !l.is_empty()) {
        s.push_str(line);
        s.push('\n');
    }
    let digest = format!("{:064x}", fxhash(&format!("{name}{version}{extra}")));
    s + &format!("Filename: pool/{name}_{version}.deb\nSize: 100\nSHA256: {digest}\n\n")
}

fn fxhash(s: &str) -> u128 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325_u128, |h, b| {
        (h ^ u128::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn index(suite: &str, stanzas: &[String]) -> PackageIndex {
    PackageIndex {
        uri: "http://mirror.invalid/debian".into(),
        suite: suite.into(),
        codename: Some(suite.into()),
        component: "main".into(),
        pin_priority: 500,
        packages: parse_packages(&stanzas.concat(), suite).unwrap(),
        files: None,
    }
}

fn request(packages: &[&str]) -> ResolveRequest {
    ResolveRequest {
        base: BaseSet::None,
        base_suite: None,
        packages: packages.iter().map(|p| p.parse().unwrap()).collect(),
    }
}

fn resolve(indexes: &[PackageIndex], packages: &[&str]) -> Result<Vec<String>, Error> {
    let arch = Architecture::default();
    let set = Resolver::new(indexes, &arch).resolve(&request(packages))?;
    Ok(set
        .packages
        .iter()
        .map(|p| format!("{}={}", p.name, p.version))
        .collect())
}

#[test]
fn first_satisfiable_alternative_wins() {
    let idx = [index(
        "s",
        &[
            stanza("a", "1", "Depends: missing | b | c"),
            stanza("b", "1", ""),
            stanza("c", "1", ""),
        ],
    )];
    assert_eq!(resolve(&idx, &["a"]).unwrap(), ["a=1", "b=1"]);
}

#[test]
fn alternative_already_in_the_set_is_preferred() {
    let idx = [index(
        "s",
        &[
            stanza("a", "1", "Depends: b | c"),
            stanza("b", "1", ""),
            stanza("c", "1", ""),
        ],
    )];
    assert_eq!(resolve(&idx, &["a", "c"]).unwrap(), ["a=1", "c=1"]);
}

#[test]
fn versioned_alternative_falls_through() {
    let idx = [index(
        "s",
        &[
            stanza("a", "1", "Depends: b (>= 2) | c"),
            stanza("b", "1", ""),
            stanza("c", "1", ""),
        ],
    )];
    assert_eq!(resolve(&idx, &["a"]).unwrap(), ["a=1", "c=1"]);
}

#[test]
fn virtual_packages_and_versioned_provides() {
    let idx = [index(
        "s",
        &[
            stanza("mua", "1", "Depends: mta, libfoo-abi (>= 2)"),
            stanza("zmta", "1", "Provides: mta\nPriority: optional"),
            stanza("amta", "1", "Provides: mta\nPriority: extra"),
            stanza("libfoo2", "2.1", "Provides: libfoo-abi (= 2.1)"),
            stanza("libfoo-old", "1", "Provides: libfoo-abi"),
        ],
    )];
    // The provider with the better priority wins over the first by name;
    // an unversioned Provides cannot satisfy a versioned dependency.
    assert_eq!(
        resolve(&idx, &["mua"]).unwrap(),
        ["libfoo2=2.1", "mua=1", "zmta=1"]
    );
}

#[test]
fn alternative_that_would_conflict_is_skipped() {
    let idx = [index(
        "s",
        &[
            stanza("a", "1", "Depends: b | c"),
            stanza("b", "1", "Conflicts: x"),
            stanza("c", "1", ""),
            stanza("x", "1", ""),
        ],
    )];
    assert_eq!(resolve(&idx, &["x", "a"]).unwrap(), ["a=1", "c=1", "x=1"]);
}

#[test]
fn alternative_whose_dependencies_conflict_is_given_up() {
    // apt's greedy choice `b` pulls in `d`, which conflicts with `x`; the
    // resolver goes back and takes `c`.
    let idx = [index(
        "s",
        &[
            stanza("a", "1", "Depends: b | c"),
            stanza("b", "1", "Depends: d"),
            stanza("d", "1", "Conflicts: x"),
            stanza("c", "1", ""),
            stanza("x", "1", ""),
        ],
    )];
    assert_eq!(resolve(&idx, &["x", "a"]).unwrap(), ["a=1", "c=1", "x=1"]);
}

#[test]
fn a_later_conflict_revisits_an_earlier_choice() {
    // `b` is fine when chosen; only `a`'s next dependency, through `e -> f`,
    // rules it out. Nothing chosen under the abandoned branch is kept.
    let idx = [index(
        "s",
        &[
            stanza("a", "1", "Depends: b | c, e"),
            stanza("b", "1", "Depends: g"),
            stanza("g", "1", ""),
            stanza("c", "1", ""),
            stanza("e", "1", "Depends: f"),
            stanza("f", "1", "Breaks: b"),
        ],
    )];
    assert_eq!(resolve(&idx, &["a"]).unwrap(), ["a=1", "c=1", "e=1", "f=1"]);
}

#[test]
fn without_a_way_out_the_greedy_failure_is_reported() {
    let idx = [index(
        "s",
        &[
            stanza("a", "1", "Depends: b | c, e"),
            stanza("b", "1", ""),
            stanza("c", "1", "Conflicts: e"),
            stanza("e", "1", "Conflicts: b"),
        ],
    )];
    let err = resolve(&idx, &["a"]).unwrap_err();
    insta::assert_snapshot!(err, @"Failed to install `e` together with `b`: `e` conflicts with `b` (adding `a -> e` to a set holding `a -> b`)");
}

/// `r` with 15 two-way choices before its last dependency, and what that
/// last dependency is.
fn fifteen_choices_then(last: &str, extra: &[String]) -> [PackageIndex; 1] {
    let mut stanzas = extra.to_vec();
    let mut depends: Vec<String> = (0..15).map(|i| format!("x{i} | y{i}")).collect();
    depends.push(last.to_owned());
    stanzas.push(stanza(
        "r",
        "1",
        &format!("Depends: {}", depends.join(", ")),
    ));
    for i in 0..15 {
        stanzas.push(stanza(&format!("x{i}"), "1", ""));
        stanzas.push(stanza(&format!("y{i}"), "1", ""));
    }
    [index("s", &stanzas)]
}

#[test]
fn a_dependency_nothing_satisfies_fails_without_trying_other_choices() {
    // No choice can help `r -> missing`: the resolver jumps straight back
    // past them instead of trying 2^15 combinations.
    let idx = fifteen_choices_then("missing", &[]);
    let err = resolve(&idx, &["r"]).unwrap_err();
    insta::assert_snapshot!(err, @"Failed to resolve `r -> missing`: no version satisfies; available: none");
}

#[test]
fn a_search_that_cannot_end_well_gives_up_and_says_so() {
    // `z` conflicts with both ways of the last choice, and only that
    // choice's packages are named as blocking: every combination of the
    // choices before it is tried, more than the resolver's bound.
    let idx = fifteen_choices_then("z", &[stanza("z", "1", "Conflicts: x14, y14")]);
    let started = std::time::Instant::now();
    let err = resolve(&idx, &["r"]).unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    insta::assert_snapshot!(err, @"Failed to resolve the packages after trying 10000 other alternatives; the first failure was: Failed to install `z` together with `x14`: `z` conflicts with `x14` (adding `r -> z` to a set holding `r -> x14`)");
}

#[test]
fn conflict_names_both_packages() {
    let idx = [index(
        "s",
        &[
            stanza("web", "1", "Depends: libssl"),
            stanza("libssl", "1", "Breaks: legacy (<< 2)"),
            stanza("legacy", "1", ""),
        ],
    )];
    let err = resolve(&idx, &["legacy", "web"]).unwrap_err();
    insta::assert_snapshot!(err, @"Failed to install `libssl` together with `legacy`: `libssl` breaks `legacy (<< 2)` (adding `web -> libssl` to a set holding `legacy`)");
    let idx = [index(
        "s",
        &[stanza("a", "1", "Conflicts: b"), stanza("b", "1", "")],
    )];
    let err = resolve(&idx, &["a", "b"]).unwrap_err();
    insta::assert_snapshot!(err, @"Failed to install `a` together with `b`: `a` conflicts with `b` (adding `b` to a set holding `a`)");
}

#[test]
fn conflicts_with_own_provides_are_ignored() {
    let idx = [index(
        "s",
        &[stanza("postfix", "1", "Provides: mta\nConflicts: mta")],
    )];
    assert_eq!(resolve(&idx, &["postfix"]).unwrap(), ["postfix=1"]);
}

#[test]
fn unsatisfiable_dependency_names_the_chain() {
    let idx = [index(
        "s",
        &[
            stanza("openssh-server", "1", "Depends: openssh-client"),
            stanza("openssh-client", "1", "Depends: libfoo (>= 2)"),
            stanza("libfoo", "1.0", ""),
            stanza("libfoo", "0.9", ""),
        ],
    )];
    let err = resolve(&idx, &["openssh-server"]).unwrap_err();
    insta::assert_snapshot!(err, @"Failed to resolve `openssh-server -> openssh-client -> libfoo (>= 2)`: no version satisfies; available: 1.0, 0.9");
    let idx = [index(
        "s",
        &[stanza(
            "openssh-server",
            "1",
            "Depends: libfoo (>= 2) | libbar",
        )],
    )];
    let err = resolve(&idx, &["openssh-server"]).unwrap_err();
    insta::assert_snapshot!(err, @"Failed to resolve `openssh-server -> libfoo (>= 2) | libbar`: no version satisfies; available: libfoo (none), libbar (none)");
}

#[test]
fn unknown_package_and_pins() {
    let idx = [index(
        "s",
        &[stanza("a", "2.0", ""), stanza("a", "1.0", "")],
    )];
    insta::assert_snapshot!(resolve(&idx, &["nope"]).unwrap_err(), @"Failed to find package `nope` in any configured source");
    assert_eq!(resolve(&idx, &["a"]).unwrap(), ["a=2.0"]);
    assert_eq!(resolve(&idx, &["a=1.0"]).unwrap(), ["a=1.0"]);
    insta::assert_snapshot!(resolve(&idx, &["a=3"]).unwrap_err(), @"Failed to find version `3` of package `a`; available: 2.0, 1.0");
    insta::assert_snapshot!("a (>= 1)".parse::<PackageRequest>().unwrap_err(), @"Failed to parse package request `a (>= 1)`: expected `name` or `name=version`");
}

#[test]
fn candidate_is_highest_version_then_first_source() {
    let main = index(
        "bookworm",
        &[stanza("a", "1.0", ""), stanza("b", "1.0", "")],
    );
    let security = index(
        "bookworm-security",
        &[stanza("a", "1.0+deb12u1", ""), stanza("b", "1.0", "")],
    );
    let arch = Architecture::default();
    let both = [main, security];
    let set = Resolver::new(&both, &arch)
        .resolve(&request(&["a", "b"]))
        .unwrap();
    assert_eq!(set.get("a").unwrap().suite, "bookworm-security");
    assert_eq!(
        set.get("b").unwrap().suite,
        "bookworm",
        "equal versions: first source"
    );
    let reversed = [both[1].clone(), both[0].clone()];
    let set = Resolver::new(&reversed, &arch)
        .resolve(&request(&["a", "b"]))
        .unwrap();
    assert_eq!(set.get("a").unwrap().suite, "bookworm-security");
    assert_eq!(set.get("b").unwrap().suite, "bookworm-security");
}

#[test]
fn not_automatic_suites_lose_to_default_ones() {
    let main = index("bookworm", &[stanza("a", "1.0", "")]);
    let mut backports = index("bookworm-backports", &[stanza("a", "2.0", "")]);
    backports.pin_priority = 100;
    let idx = [main, backports];
    assert_eq!(resolve(&idx, &["a"]).unwrap(), ["a=1.0"]);
    assert_eq!(resolve(&idx, &["a=2.0"]).unwrap(), ["a=2.0"]);
}

#[test]
fn base_sets_follow_mmdebstrap() {
    let main = index(
        "bookworm",
        &[
            stanza(
                "dpkg",
                "1",
                "Essential: yes\nPriority: required\nDepends: libc6",
            ),
            stanza("libc6", "1", "Priority: optional"),
            stanza("mawk", "1", "Priority: required"),
            stanza("apt", "1", "Priority: important"),
            stanza("vim", "1", "Priority: important"),
            stanza("i386-only", "1", "Essential: yes\nArchitecture: i386"),
        ],
    );
    let other = index(
        "bookworm-backports",
        &[stanza("extra", "1", "Essential: yes")],
    );
    let idx = [main, other];
    let arch = Architecture::default();
    let resolver = Resolver::new(&idx, &arch);
    let names = |base: BaseSet| {
        let request = ResolveRequest {
            base,
            base_suite: Some("bookworm".into()),
            packages: vec![],
        };
        resolver
            .resolve(&request)
            .unwrap()
            .names()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(names(BaseSet::Essential), ["dpkg", "libc6"]);
    assert_eq!(names(BaseSet::Required), ["apt", "dpkg", "libc6", "mawk"]);
    assert_eq!("minbase".parse::<BaseSet>().unwrap(), BaseSet::Required);
    insta::assert_snapshot!("buildd".parse::<BaseSet>().unwrap_err(), @"Failed to parse base set `buildd`: expected one of `essential`, `required`, `minbase`");
}

#[test]
fn multi_arch_qualifiers() {
    let idx = [index(
        "s",
        &[
            stanza("tool", "1", "Depends: perl:any, libz:amd64, python3:native"),
            stanza("perl", "1", "Multi-Arch: allowed"),
            stanza("libz", "1", "Multi-Arch: same"),
            stanza("python3", "1", "Architecture: all"),
            stanza("strict", "1", "Depends: notallowed:any"),
            stanza("notallowed", "1", ""),
            stanza("foreign", "1", "Depends: libz:i386"),
            stanza("libz", "1", "Architecture: i386\nMulti-Arch: same"),
        ],
    )];
    assert_eq!(
        resolve(&idx, &["tool"]).unwrap(),
        ["libz=1", "perl=1", "python3=1", "tool=1"]
    );
    insta::assert_snapshot!(resolve(&idx, &["strict"]).unwrap_err(), @"Failed to resolve `strict -> notallowed:any`: no version satisfies; available: 1");
    insta::assert_snapshot!(resolve(&idx, &["foreign"]).unwrap_err(), @"Failed to resolve `foreign -> libz:i386`: no version satisfies; available: 1");
}

#[test]
fn locked_mode_reproduces_the_lock_exactly() {
    let old = [index(
        "s",
        &[stanza("a", "1", "Depends: b"), stanza("b", "1", "")],
    )];
    let arch = Architecture::default();
    let set = Resolver::new(&old, &arch)
        .resolve(&request(&["a"]))
        .unwrap();
    let lock = LockFile::from_install_set(&set);

    // The archive moved on: b 2 is the candidate now, b 1 is still there.
    let newer = [index(
        "s",
        &[
            stanza("a", "1", "Depends: b"),
            stanza("b", "2", ""),
            stanza("b", "1", ""),
        ],
    )];
    let resolver = Resolver::new(&newer, &arch);
    assert_eq!(
        resolver
            .resolve(&request(&["a"]))
            .unwrap()
            .get("b")
            .unwrap()
            .version
            .as_str(),
        "2"
    );
    assert_eq!(
        resolver.resolve_locked(&request(&["a"]), &lock).unwrap(),
        set
    );

    // b 1 is gone from the archive.
    let gone = [index(
        "s",
        &[stanza("a", "1", "Depends: b"), stanza("b", "2", "")],
    )];
    let err = Resolver::new(&gone, &arch)
        .resolve_locked(&request(&["a"]), &lock)
        .unwrap_err();
    insta::assert_snapshot!(err.to_string().replace(&lock.packages[1].sha256, "<sha256>"), @"Failed to find locked package `b=1` (amd64, sha256 <sha256>) in any configured source");

    // The request grew: c is needed but not locked.
    let more = [index(
        "s",
        &[
            stanza("a", "1", "Depends: b"),
            stanza("b", "1", ""),
            stanza("c", "1", ""),
        ],
    )];
    let err = Resolver::new(&more, &arch)
        .resolve_locked(&request(&["a", "c"]), &lock)
        .unwrap_err();
    insta::assert_snapshot!(err, @"Failed to resolve in locked mode: `request` needs `c`, which is not in the lock file; resolve without `--locked` to update it");

    // The request shrank: b is locked but no longer needed.
    let err = Resolver::new(&more, &arch)
        .resolve_locked(
            &request(&["b"]),
            &LockFile::from_install_set(
                &Resolver::new(&more, &arch)
                    .resolve(&request(&["a", "c"]))
                    .unwrap(),
            ),
        )
        .unwrap_err();
    insta::assert_snapshot!(err, @"Failed to resolve in locked mode: `a` is in the lock file but no longer needed; resolve without `--locked` to update it");
}

/// Alternatives of one dependency: (target package, operator, version).
type Alternatives = Vec<(u8, u8, u8)>;
/// A package: (name, version, dependencies).
type Stanza = (u8, u8, Vec<Alternatives>);

fn universe() -> impl Strategy<Value = Vec<Stanza>> {
    // Up to 8 packages p0..p7, each with 1-2 versions and up to 3
    // dependencies of 1-2 alternatives (target, operator, version).
    prop::collection::vec(
        (
            0u8..8,
            1u8..4,
            prop::collection::vec(prop::collection::vec((0u8..9, 0u8..6, 1u8..4), 1..3), 0..3),
        ),
        1..12,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever resolves is closed under dependencies, has one version per
    /// name, and resolving again gives the same answer.
    #[test]
    fn resolution_is_closed_and_deterministic(universe in universe(), roots in prop::collection::vec(0u8..8, 1..3)) {
        let ops = ["", "<<", "<=", "=", ">=", ">>"];
        let mut stanzas = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (name, version, deps) in &universe {
            if !seen.insert((name, version)) {
                continue;
            }
            let depends: Vec<String> = deps.iter().map(|alts| {
                alts.iter().map(|(t, op, v)| {
                    if *op == 0 { format!("p{t}") } else { format!("p{t} ({} {v})", ops[*op as usize]) }
                }).collect::<Vec<_>>().join(" | ")
            }).collect();
            let extra = if depends.is_empty() { String::new() } else { format!("Depends: {}", depends.join(", ")) };
            stanzas.push(stanza(&format!("p{name}"), &version.to_string(), &extra));
        }
        let idx = [index("s", &stanzas)];
        let arch = Architecture::default();
        let resolver = Resolver::new(&idx, &arch);
        let roots: Vec<String> = roots.iter().map(|r| format!("p{r}")).collect();
        let req = ResolveRequest {
            base: BaseSet::None,
            base_suite: None,
            packages: roots.iter().map(|r| r.parse().unwrap()).collect(),
        };
        let first = resolver.resolve(&req);
        let second = resolver.resolve(&req);
        prop_assert_eq!(format!("{first:?}"), format!("{second:?}"));
        if let Ok(set) = first {
            for pkg in &set.packages {
                let record = idx[0].packages.iter().find(|p| p.name == pkg.name && p.version == pkg.version).unwrap();
                for dep in &record.depends {
                    let ok = dep.alternatives.iter().any(|rel| {
                        set.get(&rel.name).is_some_and(|chosen| {
                            rel.constraint.as_ref().is_none_or(|c| c.satisfied_by(&chosen.version))
                        })
                    });
                    prop_assert!(ok, "{} {}: `{}` is not satisfied in {:?}", pkg.name, pkg.version, dep, set.names().collect::<Vec<_>>());
                }
            }
            for root in &roots {
                prop_assert!(set.get(root).is_some());
            }
        }
    }
}

/// A package with conflicts: (name, version, dependencies, conflicts as
/// (target, operator, version)).
type ConflictStanza = (u8, u8, Vec<Alternatives>, Vec<(u8, u8, u8)>);

fn conflict_universe() -> impl Strategy<Value = Vec<ConflictStanza>> {
    prop::collection::vec(
        (
            0u8..6,
            1u8..3,
            prop::collection::vec(prop::collection::vec((0u8..6, 0u8..6, 1u8..3), 2..4), 0..3),
            prop::collection::vec((0u8..6, 0u8..3, 1u8..3), 0..3),
        ),
        2..12,
    )
}

/// Whether `version` (a small integer) satisfies `op v` (`op` indexes
/// `["", "<<", "<=", "=", ">=", ">>"]`, 0 meaning any version).
fn small_satisfies(version: u8, op: u8, v: u8) -> bool {
    match op {
        0 => true,
        1 => version < v,
        2 => version <= v,
        3 => version == v,
        4 => version >= v,
        _ => version > v,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// With conflicts in play the resolver is sound (what it returns is
    /// closed and conflict-free) and complete over candidates: whenever some
    /// set of candidate versions holding the roots is closed and
    /// conflict-free (found by trying every subset), it resolves.
    #[test]
    fn resolution_with_conflicts_is_sound_and_complete(
        universe in conflict_universe(),
        roots in prop::collection::vec(0u8..6, 1..3),
    ) {
        let ops = ["", "<<", "<=", "=", ">=", ">>"];
        let rel = |(t, op, v): &(u8, u8, u8)| {
            if *op == 0 { format!("p{t}") } else { format!("p{t} ({} {v})", ops[*op as usize]) }
        };
        // The candidate (highest version) of each name, as the resolver sees it.
        let mut candidates: std::collections::BTreeMap<u8, &ConflictStanza> = std::collections::BTreeMap::new();
        let mut stanzas = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for s @ (name, version, deps, conflicts) in &universe {
            if !seen.insert((name, version)) {
                continue;
            }
            if candidates.get(name).is_none_or(|c| c.1 < *version) {
                candidates.insert(*name, s);
            }
            let mut extra = String::new();
            if !deps.is_empty() {
                let groups: Vec<String> = deps.iter().map(|alts| alts.iter().map(rel).collect::<Vec<_>>().join(" | ")).collect();
                extra += &format!("Depends: {}\n", groups.join(", "));
            }
            if !conflicts.is_empty() {
                extra += &format!("Conflicts: {}\n", conflicts.iter().map(rel).collect::<Vec<_>>().join(", "));
            }
            stanzas.push(stanza(&format!("p{name}"), &version.to_string(), &extra));
        }
        let names: Vec<u8> = candidates.keys().copied().collect();
        let valid = |set: &[u8]| -> bool {
            let version_of = |n: u8| set.contains(&n).then(|| candidates[&n].1);
            set.iter().all(|n| {
                let (_, _, deps, conflicts) = candidates[n];
                let closed = deps.iter().all(|alts| alts.iter().any(|(t, op, v)| {
                    version_of(*t).is_some_and(|have| small_satisfies(have, *op, *v))
                }));
                let clean = conflicts.iter().all(|(t, op, v)| {
                    *t == *n || version_of(*t).is_none_or(|have| !small_satisfies(have, *op, *v))
                });
                closed && clean
            })
        };
        let exists = roots.iter().all(|r| candidates.contains_key(r))
            && (0u32..1 << names.len()).any(|mask| {
                let set: Vec<u8> = names.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, n)| *n).collect();
                roots.iter().all(|r| set.contains(r)) && valid(&set)
            });
        let idx = [index("s", &stanzas)];
        let arch = Architecture::default();
        let req = ResolveRequest {
            base: BaseSet::None,
            base_suite: None,
            packages: roots.iter().map(|r| format!("p{r}").parse().unwrap()).collect(),
        };
        match Resolver::new(&idx, &arch).resolve(&req) {
            Ok(set) => {
                let chosen: Vec<u8> = set.names().map(|n| n[1..].parse().unwrap()).collect();
                for pkg in &set.packages {
                    let n: u8 = pkg.name[1..].parse().unwrap();
                    prop_assert_eq!(pkg.version.as_str(), candidates[&n].1.to_string());
                }
                prop_assert!(valid(&chosen), "{:?} is not closed and conflict-free", chosen);
                prop_assert!(exists);
            }
            Err(e) => prop_assert!(!exists, "a valid set exists, yet: {e}"),
        }
    }
}
