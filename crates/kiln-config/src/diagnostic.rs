//! Problems found in a tree, as data.
//!
//! A loader never stops at the first problem: it records a [`Diagnostic`] and
//! goes on, so a user sees every problem of a run at once. Each diagnostic
//! points into a [`SourceFile`] of the [`SourceMap`] by byte span; the binary
//! turns them into rendered reports. Nothing here prints.

use std::ops::Range;
use std::path::{Path, PathBuf};

/// An index into a [`SourceMap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub(crate) u32);

impl FileId {
    /// The id of the `i`-th file added to a map.
    #[must_use]
    pub fn from_index(i: usize) -> Self {
        Self(u32::try_from(i).expect("fewer than 2^32 files"))
    }

    /// Its position in the map.
    #[must_use]
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Where a value came from: a file and a byte range within it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The file the value was read from.
    pub file: FileId,
    /// Byte range of the value in that file.
    pub span: Range<usize>,
}

/// A file read while loading a tree, kept so diagnostics can quote it.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// Path as shown to the user: relative to the tree root when inside it.
    pub display: String,
    /// Absolute (or as given) path on disk.
    pub path: PathBuf,
    /// The file's text.
    pub text: String,
}

/// Every file whose text a diagnostic may point into.
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    /// Adds a file and returns its id.
    pub fn add(&mut self, display: String, path: PathBuf, text: String) -> FileId {
        let id = FileId(u32::try_from(self.files.len()).expect("fewer than 2^32 files"));
        self.files.push(SourceFile {
            display,
            path,
            text,
        });
        id
    }

    /// The file behind an id.
    #[must_use]
    pub fn get(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }

    /// How many files were read.
    #[must_use]
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// True if no file was read.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The id of a file by its on-disk path, if it was read.
    #[must_use]
    pub fn find(&self, path: &Path) -> Option<FileId> {
        self.files
            .iter()
            .position(|f| f.path == path)
            .map(|i| FileId(i as u32))
    }

    /// Line and column (both 1-based, column in characters) of a byte offset.
    #[must_use]
    pub fn line_col(&self, id: FileId, offset: usize) -> (usize, usize) {
        line_col(&self.get(id).text, offset)
    }
}

/// Line and column (both 1-based, column in characters) of byte `offset`
/// in `text`; for files that are not part of a tree (`serve.toml`).
#[must_use]
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A label under a span of source text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    /// Where.
    pub origin: Origin,
    /// Short text shown under the span (may be empty).
    pub text: String,
}

/// One problem with the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// What is wrong, in one sentence that names the thing.
    pub message: String,
    /// The main place, if the problem has one in a file.
    pub primary: Option<Label>,
    /// Other places that explain it (the first definition of a duplicate, ...).
    pub secondary: Vec<Label>,
    /// A file the problem concerns when there is no span (an unreadable file).
    pub path: Option<PathBuf>,
    /// What to do about it.
    pub help: Option<String>,
}

impl Diagnostic {
    /// A problem without a location.
    #[must_use]
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            primary: None,
            secondary: Vec::new(),
            path: None,
            help: None,
        }
    }

    /// A problem at a place in a file.
    #[must_use]
    pub fn at(origin: &Origin, message: impl Into<String>, label: impl Into<String>) -> Self {
        Self {
            primary: Some(Label {
                origin: origin.clone(),
                text: label.into(),
            }),
            ..Self::new(message)
        }
    }

    /// Adds a secondary label.
    #[must_use]
    pub fn with_secondary(mut self, origin: &Origin, text: impl Into<String>) -> Self {
        self.secondary.push(Label {
            origin: origin.clone(),
            text: text.into(),
        });
        self
    }

    /// Adds a help line.
    #[must_use]
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Names the file the problem concerns.
    #[must_use]
    pub fn with_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = Some(path.into());
        self
    }
}

/// A list of diagnostics that drops exact repeats.
///
/// One fragment merged into many variants would otherwise report the same
/// problem once per variant.
#[derive(Clone, Debug, Default)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
    reported: usize,
}

impl Diagnostics {
    /// Records a problem unless the same one was recorded already.
    pub fn push(&mut self, d: Diagnostic) {
        self.reported += 1;
        if !self.items.contains(&d) {
            self.items.push(d);
        }
    }

    /// How many problems were reported, repeats included: compare two
    /// readings to learn whether a step found anything.
    #[must_use]
    pub fn reported(&self) -> usize {
        self.reported
    }

    /// True if nothing was recorded.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Number of problems recorded.
    #[must_use]
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// The problems, in the order found.
    #[must_use]
    pub fn into_vec(self) -> Vec<Diagnostic> {
        self.items
    }

    /// The problems, in the order found.
    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter()
    }

    /// Appends all of `other`.
    pub fn extend(&mut self, other: impl IntoIterator<Item = Diagnostic>) {
        for d in other {
            self.push(d);
        }
    }
}

/// The closest of `candidates` to `word`, if one is close enough to suggest.
#[must_use]
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// "did you mean `x`?" for the closest candidate, or nothing.
#[must_use]
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(word, candidates).map_or_else(String::new, |c| format!("did you mean `{c}`?"))
}
