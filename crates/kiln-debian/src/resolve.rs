//! Dependency resolution: from a request (a base set plus packages) to the
//! exact set of `.deb`s to install.
//!
//! Owns apt's candidate rule (highest version wins; on equal versions the
//! source listed first), the base sets as mmdebstrap defines them, and the
//! install closure over `Pre-Depends`/`Depends` with alternatives, virtual
//! packages, `Conflicts`/`Breaks` and Multi-Arch. Deterministic; apt's
//! greedy choices first, going back to another alternative only where they
//! end in a conflict. Does no I/O.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use crate::error::{Chain, Conflict, Error};
use crate::index::{MultiArch, Package};
use crate::lock::LockFile;
use crate::relation::{ArchQualifier, Dependency, Relation};
use crate::repository::PackageIndex;
use crate::source::Architecture;
use crate::version::Version;

/// A base package set, as mmdebstrap's `--variant` defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BaseSet {
    /// Only the requested packages (mmdebstrap `custom`).
    #[default]
    None,
    /// `Essential: yes` packages (mmdebstrap `essential`).
    Essential,
    /// The essential set plus `Priority: required` and `apt`
    /// (mmdebstrap `required`, and its alias `minbase`).
    Required,
}

impl FromStr for BaseSet {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "none" | "custom" => Ok(BaseSet::None),
            "essential" => Ok(BaseSet::Essential),
            "required" | "minbase" => Ok(BaseSet::Required),
            _ => Err(Error::InvalidBaseSet { name: s.to_owned() }),
        }
    }
}

/// One requested package, optionally pinned to a version (`name=version`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageRequest {
    /// Package name.
    pub name: String,
    /// Exact version wanted, if pinned.
    pub version: Option<String>,
}

impl FromStr for PackageRequest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let invalid = || Error::InvalidRequest {
            request: s.to_owned(),
        };
        let (name, version) = match s.split_once('=') {
            Some((name, version)) => (name, Some(version)),
            None => (s, None),
        };
        let rel = Relation::parse(name).map_err(|_| invalid())?;
        if rel.arch.is_some() || rel.constraint.is_some() {
            return Err(invalid());
        }
        if let Some(v) = version {
            Version::parse(v).map_err(|_| invalid())?;
        }
        Ok(Self {
            name: rel.name,
            version: version.map(str::to_owned),
        })
    }
}

/// What to resolve.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolveRequest {
    /// The base set.
    pub base: BaseSet,
    /// The suite (name as configured, or `Codename`) whose packages define
    /// the base set, as mmdebstrap's SUITE argument does; `None`: every suite.
    pub base_suite: Option<String>,
    /// Extra packages, in order.
    pub packages: Vec<PackageRequest>,
}

/// One package chosen for installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPackage {
    /// Package name.
    pub name: String,
    /// Chosen version.
    pub version: Version,
    /// `amd64`, `all`, ….
    pub architecture: String,
    /// SHA256 of the `.deb`.
    pub sha256: String,
    /// Size of the `.deb`.
    pub size: u64,
    /// Path of the `.deb` relative to `uri`.
    pub filename: String,
    /// Archive root it is downloaded from.
    pub uri: String,
    /// Suite it was found in.
    pub suite: String,
    /// `Essential: yes`: its preinst runs first when a root is assembled.
    pub essential: bool,
    /// Installed because it was asked for, not as a dependency: a package
    /// of the request or the base set's roots, or of the essential set's
    /// closure (which mmdebstrap installs with dpkg, before apt). apt's
    /// "manually installed"; the others are recorded as automatically
    /// installed in `/var/lib/apt/extended_states`, so `apt autoremove`
    /// removes them once nothing needs them.
    pub manual: bool,
}

impl ResolvedPackage {
    /// Download URL of the `.deb`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("{}/{}", self.uri.trim_end_matches('/'), self.filename)
    }
}

/// The result of resolution: packages sorted by name, one per name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstallSet {
    /// The packages, sorted by name.
    pub packages: Vec<ResolvedPackage>,
}

impl InstallSet {
    /// The entry named `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&ResolvedPackage> {
        self.packages
            .binary_search_by(|p| p.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.packages[i])
    }

    /// Names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.packages.iter().map(|p| p.name.as_str())
    }

    /// Number of packages.
    #[must_use]
    pub fn len(&self) -> usize {
        self.packages.len()
    }

    /// Whether the set is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.packages.is_empty()
    }
}

#[derive(Clone, Copy)]
struct Entry<'a> {
    pkg: &'a Package,
    index: &'a PackageIndex,
}

impl fmt::Debug for Entry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.pkg.name, self.pkg.version)
    }
}

/// Resolves requests against a fixed list of indexes.
#[derive(Debug)]
pub struct Resolver<'a> {
    indexes: &'a [PackageIndex],
    arch: &'a Architecture,
    /// Installable versions per name, best first (apt's candidate order).
    versions: HashMap<&'a str, Vec<Entry<'a>>>,
    /// Virtual name → (provider entry, its `Provides` relation).
    providers: HashMap<&'a str, Vec<(Entry<'a>, &'a Relation)>>,
}

impl<'a> Resolver<'a> {
    /// Indexes the packages installable on `arch`. `indexes` are in source
    /// order: on equal versions the first one wins.
    #[must_use]
    pub fn new(indexes: &'a [PackageIndex], arch: &'a Architecture) -> Self {
        let mut versions: HashMap<&'a str, Vec<(usize, Entry<'a>)>> = HashMap::new();
        let mut providers: HashMap<&'a str, Vec<(Entry<'a>, &'a Relation)>> = HashMap::new();
        let mut seq = 0usize;
        for index in indexes {
            for pkg in &index.packages {
                if !arch.installs(&pkg.architecture) {
                    continue;
                }
                let entry = Entry { pkg, index };
                versions.entry(&pkg.name).or_default().push((seq, entry));
                seq += 1;
                for provide in &pkg.provides {
                    providers
                        .entry(&provide.name)
                        .or_default()
                        .push((entry, provide));
                }
            }
        }
        let versions = versions
            .into_iter()
            .map(|(name, mut list)| {
                // apt: the highest pin priority first, then the highest
                // version, then the source listed first.
                list.sort_by(|(sa, a), (sb, b)| {
                    (b.index.pin_priority.cmp(&a.index.pin_priority))
                        .then_with(|| b.pkg.version.cmp(&a.pkg.version))
                        .then(sa.cmp(sb))
                });
                // The same version from several sources is one version (apt
                // merges them); it is downloaded from the first source.
                list.dedup_by(|later, earlier| later.1.pkg.version == earlier.1.pkg.version);
                (name, list.into_iter().map(|(_, e)| e).collect())
            })
            .collect();
        Self {
            indexes,
            arch,
            versions,
            providers,
        }
    }

    /// The names of the base set, sorted.
    fn base_names(&self, base: BaseSet, suite: Option<&str>) -> (Vec<&'a str>, Vec<&'a str>) {
        let mut essential = Vec::new();
        let mut required = Vec::new();
        if base == BaseSet::None {
            return (essential, required);
        }
        for index in self.indexes {
            let in_suite =
                suite.is_none_or(|s| index.suite == s || index.codename.as_deref() == Some(s));
            if !in_suite {
                continue;
            }
            for pkg in &index.packages {
                if !self.arch.installs(&pkg.architecture) {
                    continue;
                }
                if pkg.essential {
                    essential.push(pkg.name.as_str());
                } else if base == BaseSet::Required
                    && pkg.priority == crate::index::Priority::Required
                {
                    required.push(pkg.name.as_str());
                }
            }
        }
        if base == BaseSet::Required {
            // mmdebstrap: "the essential set plus all packages with
            // Priority:required and apt".
            if let Some((name, _)) = self.versions.get_key_value("apt") {
                required.push(name);
            }
        }
        essential.sort_unstable();
        essential.dedup();
        required.sort_unstable();
        required.dedup();
        required.retain(|name| essential.binary_search(name).is_err());
        (essential, required)
    }

    /// Resolves `request` with apt's candidate versions (or the pinned ones).
    pub fn resolve(&self, request: &ResolveRequest) -> Result<InstallSet, Error> {
        let mut pins = BTreeMap::new();
        for req in &request.packages {
            if let Some(version) = &req.version {
                pins.insert(req.name.as_str(), Pin::Request(version.as_str()));
            }
        }
        let state = self.run(request, pins, None)?;
        Ok(state.into_set())
    }

    /// Resolves `request` to exactly the packages of `lock`: each needed
    /// package must be in the lock and available with the locked digest,
    /// and every locked package must still be needed.
    pub fn resolve_locked(
        &self,
        request: &ResolveRequest,
        lock: &LockFile,
    ) -> Result<InstallSet, Error> {
        let mut pins = BTreeMap::new();
        for locked in &lock.packages {
            pins.insert(locked.name.as_str(), Pin::Locked(locked));
        }
        let state = self.run(request, pins, Some(lock))?;
        let set = state.into_set();
        for locked in &lock.packages {
            if set.get(&locked.name).is_none() {
                return Err(Error::StaleLockEntry {
                    name: locked.name.clone(),
                });
            }
        }
        Ok(set)
    }

    fn run<'r>(
        &'r self,
        request: &ResolveRequest,
        pins: BTreeMap<&'r str, Pin<'r>>,
        lock: Option<&'r LockFile>,
    ) -> Result<State<'a, 'r>, Error> {
        let mut state = State {
            resolver: self,
            pins,
            locked: lock.is_some(),
            chosen: HashMap::new(),
            order: Vec::new(),
            parent: HashMap::new(),
            before_apt: HashSet::new(),
        };
        let (essential, required) = self.base_names(request.base, request.base_suite.as_deref());
        // Like mmdebstrap: the essential set is installed (closure included)
        // first, then the required set together with the requested packages.
        let mut phases: Vec<Vec<&str>> = vec![essential, required];
        phases[1].extend(request.packages.iter().map(|p| p.name.as_str()));
        for (phase, roots) in phases.into_iter().enumerate() {
            if phase == 1 {
                state.before_apt = state.chosen.keys().copied().collect();
            }
            let mut marked = Vec::new();
            for name in roots {
                if state.chosen.contains_key(name) {
                    continue;
                }
                let entry = state
                    .candidate(name, &[])?
                    .ok_or_else(|| Error::UnknownPackage {
                        name: name.to_owned(),
                    })?;
                state.check_conflicts(entry, &[])?;
                state.mark(entry, None);
                marked.push(entry);
            }
            state.solve(&marked)?;
        }
        Ok(state)
    }
}

enum Pin<'r> {
    Request(&'r str),
    Locked(&'r crate::lock::LockedPackage),
}

struct State<'a, 'r> {
    resolver: &'r Resolver<'a>,
    pins: BTreeMap<&'r str, Pin<'r>>,
    locked: bool,
    chosen: HashMap<&'a str, Entry<'a>>,
    order: Vec<&'a str>,
    parent: HashMap<&'a str, Option<&'a str>>,
    /// What the essential phase chose: installed as mmdebstrap's dpkg
    /// step does, so never "automatically installed".
    before_apt: HashSet<&'a str>,
}

/// How many times [`State::solve`] may go back to an earlier choice before
/// it gives up and reports the first failure. Real archives need none or a
/// few; the bound keeps a pathological index from taking exponential time.
pub(crate) const MAX_BACKTRACKS: usize = 10_000;

/// A package whose dependencies are being installed.
#[derive(Clone, Copy)]
struct Frame<'a> {
    entry: Entry<'a>,
    /// Index into its `Pre-Depends` followed by its `Depends`.
    next_dep: usize,
    /// A package of the request (or base set), not a dependency.
    root: bool,
}

/// The requested package down to the innermost one: the chain that errors
/// name.
fn frame_chain<'a>(frames: &[Frame<'a>]) -> Vec<&'a str> {
    let start = frames.iter().rposition(|f| f.root).unwrap_or(0);
    frames[start..]
        .iter()
        .map(|f| f.entry.pkg.name.as_str())
        .collect()
}

/// A dependency that had more than one usable package: where the search
/// resumes when a later one fails.
struct ChoicePoint<'a> {
    /// The frames as they were once the group was taken.
    frames: Vec<Frame<'a>>,
    /// `State::order.len()` before the choice.
    trail: usize,
    /// The package that has the dependency.
    parent: &'a str,
    /// The usable packages not tried yet, in order.
    candidates: Vec<Entry<'a>>,
    /// The next candidate to try.
    next: usize,
}

impl<'a> State<'a, '_> {
    fn into_set(self) -> InstallSet {
        let mut packages: Vec<ResolvedPackage> = self
            .chosen
            .values()
            .map(|e| ResolvedPackage {
                name: e.pkg.name.clone(),
                version: e.pkg.version.clone(),
                architecture: e.pkg.architecture.clone(),
                sha256: e.pkg.sha256.clone(),
                size: e.pkg.size,
                filename: e.pkg.filename.clone(),
                uri: e.index.uri.clone(),
                suite: e.index.suite.clone(),
                essential: e.pkg.essential,
                manual: self.before_apt.contains(e.pkg.name.as_str())
                    || self.parent.get(e.pkg.name.as_str()) == Some(&None),
            })
            .collect();
        packages.sort_by(|a, b| a.name.cmp(&b.name));
        InstallSet { packages }
    }

    fn chain_to(&self, name: &'a str) -> Vec<String> {
        let mut out = vec![name.to_owned()];
        let mut cur = name;
        while let Some(Some(parent)) = self.parent.get(cur) {
            out.push((*parent).to_owned());
            cur = parent;
            if out.len() > self.order.len() + 1 {
                break;
            }
        }
        out.reverse();
        out
    }

    /// The version of `name` that would be installed: the pinned one, or the
    /// candidate. `Ok(None)` if no installable version exists.
    fn candidate(&self, name: &str, chain: &[&str]) -> Result<Option<Entry<'a>>, Error> {
        if let Some(entry) = self.chosen.get(name) {
            return Ok(Some(*entry));
        }
        let versions = self.resolver.versions.get(name);
        match self.pins.get(name) {
            None if self.locked => {
                if versions.is_none() {
                    return Ok(None);
                }
                let mut chain: Vec<String> = chain.iter().map(|s| (*s).to_owned()).collect();
                if chain.is_empty() {
                    chain.push("request".to_owned());
                }
                Err(Error::NotInLock {
                    name: name.to_owned(),
                    chain: Chain(chain),
                })
            }
            None => Ok(versions.and_then(|v| v.first().copied())),
            Some(Pin::Request(version)) => {
                let found = versions.and_then(|list| {
                    list.iter()
                        .find(|e| Version::parse(version).is_ok_and(|v| v == e.pkg.version))
                        .copied()
                });
                match found {
                    Some(entry) => Ok(Some(entry)),
                    None if versions.is_none() => Ok(None),
                    None => Err(Error::PinNotAvailable {
                        name: name.to_owned(),
                        version: (*version).to_owned(),
                        available: self.available_versions(name),
                    }),
                }
            }
            Some(Pin::Locked(locked)) => versions
                .and_then(|list| {
                    list.iter()
                        .find(|e| {
                            e.pkg.version.as_str() == locked.version
                                && e.pkg.architecture == locked.architecture
                                && e.pkg.sha256 == locked.sha256
                        })
                        .copied()
                })
                .map(Some)
                .ok_or_else(|| Error::LockedPackageMissing {
                    name: locked.name.clone(),
                    version: locked.version.clone(),
                    architecture: locked.architecture.clone(),
                    sha256: locked.sha256.clone(),
                }),
        }
    }

    fn available_versions(&self, name: &str) -> String {
        match self.resolver.versions.get(name) {
            Some(list) => list
                .iter()
                .map(|e| e.pkg.version.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            None => "none".to_owned(),
        }
    }

    fn mark(&mut self, entry: Entry<'a>, parent: Option<&'a str>) {
        let name = entry.pkg.name.as_str();
        self.chosen.insert(name, entry);
        self.order.push(name);
        self.parent.insert(name, parent);
    }

    /// Whether `pkg` (at its version) satisfies `rel` directly or through a `Provides`.
    fn satisfies(&self, pkg: &Package, rel: &Relation) -> bool {
        if !self.arch_ok(pkg, rel.arch.as_ref()) {
            return false;
        }
        if pkg.name == rel.name
            && rel
                .constraint
                .as_ref()
                .is_none_or(|c| c.satisfied_by(&pkg.version))
        {
            return true;
        }
        pkg.provides
            .iter()
            .any(|p| p.name == rel.name && provide_satisfies(p, rel))
    }

    fn arch_ok(&self, pkg: &Package, qualifier: Option<&ArchQualifier>) -> bool {
        let arch = self.resolver.arch;
        match qualifier {
            // Only native and `all` packages are installable, and both satisfy
            // unqualified dependencies of native and `all` packages.
            None => true,
            Some(ArchQualifier::Any) => pkg.multi_arch == MultiArch::Allowed,
            Some(ArchQualifier::Native) => arch.installs(&pkg.architecture),
            Some(ArchQualifier::Named(name)) => {
                name == arch.as_str() && arch.installs(&pkg.architecture)
            }
        }
    }

    fn group_satisfied(&self, dep: &Dependency) -> bool {
        dep.alternatives.iter().any(|rel| {
            if let Some(entry) = self.chosen.get(rel.name.as_str()) {
                if self.satisfies(entry.pkg, rel) {
                    return true;
                }
            }
            self.resolver
                .providers
                .get(rel.name.as_str())
                .is_some_and(|list| {
                    list.iter().any(|(provider, _)| {
                        self.chosen
                            .get(provider.pkg.name.as_str())
                            .is_some_and(|c| {
                                std::ptr::eq(c.pkg, provider.pkg) && self.satisfies(c.pkg, rel)
                            })
                    })
                })
        })
    }

    /// Candidates that could satisfy `rel`, in apt's order of preference:
    /// the real package, then providers by priority and name.
    fn satisfiers(&self, rel: &Relation, chain: &[&str]) -> Result<Vec<Entry<'a>>, Error> {
        let mut out = Vec::new();
        if let Some(entry) = self.candidate(&rel.name, chain)? {
            if self.satisfies(entry.pkg, rel) {
                out.push(entry);
            }
        }
        let mut providers = Vec::new();
        if let Some(list) = self.resolver.providers.get(rel.name.as_str()) {
            for (provider, _) in list {
                if out
                    .iter()
                    .any(|e: &Entry<'_>| e.pkg.name == provider.pkg.name)
                    || providers
                        .iter()
                        .any(|e: &Entry<'_>| e.pkg.name == provider.pkg.name)
                {
                    continue;
                }
                if self.locked && !self.pins.contains_key(provider.pkg.name.as_str()) {
                    continue;
                }
                let Some(candidate) = self.candidate(&provider.pkg.name, chain)? else {
                    continue;
                };
                if std::ptr::eq(candidate.pkg, provider.pkg) && self.satisfies(candidate.pkg, rel) {
                    providers.push(candidate);
                }
            }
        }
        providers.sort_by(|a, b| {
            a.pkg
                .priority
                .cmp(&b.pkg.priority)
                .then(a.pkg.name.cmp(&b.pkg.name))
        });
        out.extend(providers);
        Ok(out)
    }

    /// The first selected package that `entry` conflicts with (either way).
    fn conflict(&self, entry: Entry<'a>) -> Option<(String, String, &'static str, String)> {
        let new = entry.pkg;
        let kinds = |pkg: &'a Package| {
            pkg.conflicts
                .iter()
                .map(|r| (r, "conflicts with"))
                .chain(pkg.breaks.iter().map(|r| (r, "breaks")))
        };
        for (rel, kind) in kinds(new) {
            for name in &self.order {
                let other = self.chosen[name].pkg;
                if other.name != new.name && self.rejects(rel, other) {
                    return Some((new.name.clone(), other.name.clone(), kind, rel.to_string()));
                }
            }
        }
        for name in &self.order {
            let other = self.chosen[name].pkg;
            if other.name == new.name {
                continue;
            }
            for (rel, kind) in kinds(other) {
                if self.rejects(rel, new) {
                    return Some((other.name.clone(), new.name.clone(), kind, rel.to_string()));
                }
            }
        }
        None
    }

    /// Whether a `Conflicts`/`Breaks` relation applies to `pkg`. An
    /// unversioned one applies to every provider; a versioned one only to
    /// versioned provides that match.
    fn rejects(&self, rel: &Relation, pkg: &Package) -> bool {
        if !self.arch_ok(pkg, rel.arch.as_ref()) {
            return false;
        }
        if pkg.name == rel.name {
            return rel
                .constraint
                .as_ref()
                .is_none_or(|c| c.satisfied_by(&pkg.version));
        }
        pkg.provides
            .iter()
            .any(|p| p.name == rel.name && provide_satisfies(p, rel))
    }

    fn check_conflicts(&self, entry: Entry<'a>, chain: &[&str]) -> Result<(), Error> {
        match self.conflict(entry) {
            None => Ok(()),
            Some(found) => Err(self.conflict_error(entry, found, chain)),
        }
    }

    /// The error for `entry` (reached through `chain`) meeting the
    /// conflict `found` that [`State::conflict`] gave.
    fn conflict_error(
        &self,
        entry: Entry<'a>,
        (package, other, kind, relation): (String, String, &'static str, String),
        chain: &[&str],
    ) -> Error {
        let present_name = if package == entry.pkg.name {
            &other
        } else {
            &package
        };
        let present = self
            .order
            .iter()
            .find(|n| **n == present_name.as_str())
            .map_or_else(|| vec![present_name.clone()], |n| self.chain_to(n));
        let mut added: Vec<String> = chain.iter().map(|s| (*s).to_owned()).collect();
        added.push(entry.pkg.name.clone());
        Error::Conflict(Box::new(Conflict {
            package,
            other,
            kind,
            relation,
            added: Chain(added),
            present: Chain(present),
        }))
    }

    /// Installs the dependencies of `roots` (already marked) depth-first,
    /// in apt's order: the dependencies of a package in the order it lists
    /// them, each chosen package's own dependencies before the next one.
    ///
    /// Where apt's greedy `MarkInstall` stops at a conflict, this search
    /// goes back to the most recent dependency that had another usable
    /// alternative and tries it, undoing everything chosen since. It is
    /// backtracking over the choices (not over versions: only candidates
    /// and pins are installable), jumping over choices that cannot remove
    /// the packages a failure involves, so it finds a
    /// conflict-free closure whenever one exists over those choices, and
    /// the greedy answer whenever the greedy answer works. If none exists
    /// the first failure met is reported: it is the one on apt's own path
    /// (wrapped in [`Error::GaveUp`] when [`MAX_BACKTRACKS`] ran out first).
    fn solve(&mut self, roots: &[Entry<'a>]) -> Result<(), Error> {
        let mut frames: Vec<Frame<'a>> = roots
            .iter()
            .rev()
            .map(|&entry| Frame {
                entry,
                next_dep: 0,
                root: true,
            })
            .collect();
        let mut choices: Vec<ChoicePoint<'a>> = Vec::new();
        let mut first_error: Option<Error> = None;
        let mut backtracks = 0usize;
        loop {
            let Some((dep, parent)) = self.next_unsatisfied(&mut frames) else {
                return Ok(());
            };
            let chain = frame_chain(&frames);
            // The first usable package; why the ones before it are not.
            let mut group_error = None;
            let mut options = self.options(dep, &chain).into_iter();
            let mut chosen = None;
            // The packages in the set that block a candidate.
            let mut blockers: Vec<String> = Vec::new();
            for option in options.by_ref() {
                let candidate = match option {
                    Ok(candidate) => candidate,
                    Err(e) => {
                        group_error.get_or_insert(e);
                        continue;
                    }
                };
                let Some(found) = self.conflict(candidate) else {
                    chosen = Some(candidate);
                    break;
                };
                blockers.push(if found.0 == candidate.pkg.name {
                    found.1.clone()
                } else {
                    found.0.clone()
                });
                if group_error.is_none() {
                    group_error = Some(self.conflict_error(candidate, found, &chain));
                }
            }
            if let Some(entry) = chosen {
                let candidates: Vec<Entry<'a>> = options.filter_map(Result::ok).collect();
                if !candidates.is_empty() {
                    choices.push(ChoicePoint {
                        frames: frames.clone(),
                        trail: self.order.len(),
                        parent,
                        candidates,
                        next: 0,
                    });
                }
                self.take(entry, parent, &mut frames);
                continue;
            }
            // Where the set must change for this group to succeed: the
            // package that has the dependency, or a package that blocks a
            // candidate, must go (the newest of them bounds the choices
            // worth revisiting).
            let culprit = blockers
                .iter()
                .map(|name| self.position(name))
                .fold(self.position(parent), usize::max);
            let failure = first_error.take().unwrap_or_else(|| {
                group_error.unwrap_or_else(|| {
                    let mut names: Vec<String> = chain.iter().map(|s| (*s).to_owned()).collect();
                    names.push(dep.to_string());
                    Error::Unsatisfiable {
                        chain: Chain(names),
                        available: self.describe_available(dep),
                    }
                })
            });
            if backtracks == MAX_BACKTRACKS && !choices.is_empty() {
                return Err(Error::GaveUp {
                    backtracks,
                    first: Box::new(failure),
                });
            }
            if !self.backtrack(&mut choices, &mut frames, culprit) {
                return Err(failure);
            }
            backtracks += 1;
            first_error = Some(failure);
        }
    }

    /// Goes back to the newest choice made before the set held the
    /// package at `culprit` (in `order`) that has an alternative left that
    /// fits, undoing what was chosen since; `false` if there is none.
    /// Choices made later cannot remove that package, so they are dropped
    /// without being tried (backjumping): a dependency nothing satisfies
    /// fails at once instead of after every combination of unrelated
    /// choices.
    fn backtrack(
        &mut self,
        choices: &mut Vec<ChoicePoint<'a>>,
        frames: &mut Vec<Frame<'a>>,
        culprit: usize,
    ) -> bool {
        while let Some(mut point) = choices.pop() {
            if point.trail > culprit {
                continue;
            }
            self.undo(point.trail);
            let Some(i) = self.pick(&point.candidates, point.next) else {
                continue;
            };
            let entry = point.candidates[i];
            frames.clone_from(&point.frames);
            let parent = point.parent;
            if i + 1 < point.candidates.len() {
                point.next = i + 1;
                choices.push(point);
            }
            self.take(entry, parent, frames);
            return true;
        }
        false
    }

    /// Marks `entry`, chosen for a dependency of `parent`, and makes it the
    /// innermost package, so its own dependencies come next.
    fn take(&mut self, entry: Entry<'a>, parent: &'a str, frames: &mut Vec<Frame<'a>>) {
        self.mark(entry, Some(parent));
        frames.push(Frame {
            entry,
            next_dep: 0,
            root: false,
        });
    }

    /// The next dependency group of the innermost package that the set
    /// does not satisfy yet, with that package's name; pops the packages
    /// whose dependencies are all handled. `None`: everything is closed.
    fn next_unsatisfied(&self, frames: &mut Vec<Frame<'a>>) -> Option<(&'a Dependency, &'a str)> {
        loop {
            let top = frames.last_mut()?;
            let pkg: &'a Package = top.entry.pkg;
            let i = top.next_dep;
            let dep = match pkg.pre_depends.get(i) {
                Some(dep) => dep,
                None => match pkg.depends.get(i - pkg.pre_depends.len()) {
                    Some(dep) => dep,
                    None => {
                        frames.pop();
                        continue;
                    }
                },
            };
            top.next_dep += 1;
            if !self.group_satisfied(dep) {
                return Some((dep, pkg.name.as_str()));
            }
        }
    }

    /// Every package that could satisfy `dep`, alternative by alternative,
    /// in apt's order of preference, with the reasons some alternative has
    /// none (a pin that is not available, a package not in the lock) in
    /// their place.
    fn options(&self, dep: &'a Dependency, chain: &[&str]) -> Vec<Result<Entry<'a>, Error>> {
        let mut out: Vec<Result<Entry<'a>, Error>> = Vec::new();
        for rel in &dep.alternatives {
            match self.satisfiers(rel, chain) {
                Ok(list) => {
                    for entry in list {
                        let seen = out
                            .iter()
                            .any(|e| e.as_ref().is_ok_and(|e| std::ptr::eq(e.pkg, entry.pkg)));
                        if !seen {
                            out.push(Ok(entry));
                        }
                    }
                }
                Err(e) => out.push(Err(e)),
            }
        }
        out
    }

    /// The first of `candidates[from..]` that conflicts with nothing in the
    /// set.
    fn pick(&self, candidates: &[Entry<'a>], from: usize) -> Option<usize> {
        (from..candidates.len()).find(|&i| self.conflict(candidates[i]).is_none())
    }

    /// Where `name` is in the order of marking (the length of the set
    /// before it came); past the end if it is not in the set.
    fn position(&self, name: &str) -> usize {
        self.order
            .iter()
            .position(|n| *n == name)
            .unwrap_or(self.order.len())
    }

    /// Unmarks everything marked after the first `len` packages.
    fn undo(&mut self, len: usize) {
        for name in self.order.split_off(len) {
            self.chosen.remove(name);
            self.parent.remove(name);
        }
    }

    fn describe_available(&self, dep: &Dependency) -> String {
        let describe = |rel: &Relation| {
            let versions = self.available_versions(&rel.name);
            if versions != "none" {
                return versions;
            }
            match self.resolver.providers.get(rel.name.as_str()) {
                Some(list) => {
                    let mut names: Vec<String> = list
                        .iter()
                        .map(|(e, p)| format!("{} {} provides {p}", e.pkg.name, e.pkg.version))
                        .collect();
                    names.dedup();
                    names.join(", ")
                }
                None => "none".to_owned(),
            }
        };
        if let [rel] = dep.alternatives.as_slice() {
            describe(rel)
        } else {
            dep.alternatives
                .iter()
                .map(|rel| format!("{} ({})", rel.name, describe(rel)))
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
}

/// Whether a `Provides` entry satisfies a dependency: an unversioned
/// dependency takes any provide; a versioned one needs `Provides: x (= v)`
/// with a matching `v`.
fn provide_satisfies(provide: &Relation, rel: &Relation) -> bool {
    match (&rel.constraint, &provide.constraint) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(want), Some(have)) => want.satisfied_by(&have.version),
    }
}
