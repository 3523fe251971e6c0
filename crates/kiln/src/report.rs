//! Rendering configuration diagnostics with <file:line:column> and the
//! offending text, through miette.
//!
//! Diagnostics may point into several files (a duplicate image name points
//! at both `image.toml`s), while miette renders one source per report. The
//! files are therefore laid end to end in one virtual address space:
//! [`TreeSource`] maps a virtual offset back to its file and names the file
//! in the snippet header.

use std::fmt::{self, Write};

use kiln_config::diagnostic::{Diagnostic, Label, SourceMap};
use miette::{
    GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteError, MietteSpanContents,
    SourceCode, SourceSpan, SpanContents,
};

/// Every file of a [`SourceMap`], addressed as one byte space.
struct TreeSource<'a> {
    files: Vec<(String, &'a str, usize)>,
}

impl<'a> TreeSource<'a> {
    fn new(map: &'a SourceMap, count: usize) -> Self {
        let mut base = 0;
        let mut files = Vec::new();
        for i in 0..count {
            let f = map.get(kiln_config::FileId::from_index(i));
            files.push((f.display.clone(), f.text.as_str(), base));
            // A gap of two bytes keeps miette from joining the last line of one
            // file and the first of the next into one snippet.
            base += f.text.len() + 2;
        }
        Self { files }
    }

    fn virtual_span(&self, label: &Label) -> SourceSpan {
        let base = self.files[label.origin.file.index()].2;
        let len = label
            .origin
            .span
            .end
            .saturating_sub(label.origin.span.start);
        SourceSpan::new((base + label.origin.span.start).into(), len)
    }
}

impl SourceCode for TreeSource<'_> {
    fn read_span<'b>(
        &'b self,
        span: &SourceSpan,
        before: usize,
        after: usize,
    ) -> Result<Box<dyn SpanContents<'b> + 'b>, MietteError> {
        let (name, text, base) = self
            .files
            .iter()
            .rev()
            .find(|(_, _, base)| *base <= span.offset())
            .ok_or(MietteError::OutOfBounds)?;
        let local = SourceSpan::new((span.offset() - base).into(), span.len());
        let inner = text.read_span(&local, before, after)?;
        let data = inner.data();
        let shifted = SourceSpan::new((inner.span().offset() + base).into(), inner.span().len());
        Ok(Box::new(MietteSpanContents::new_named(
            name.clone(),
            data,
            shifted,
            inner.line(),
            inner.column(),
            inner.line_count(),
        )))
    }
}

/// One diagnostic, ready for miette.
struct Rendered<'a> {
    diag: &'a Diagnostic,
    source: &'a TreeSource<'a>,
}

impl fmt::Debug for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diag.message)
    }
}

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Messages without a span name their file themselves.
        f.write_str(&self.diag.message)
    }
}

impl std::error::Error for Rendered<'_> {}

impl miette::Diagnostic for Rendered<'_> {
    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.diag
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.diag
            .primary
            .as_ref()
            .map(|_| self.source as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let primary = self.diag.primary.as_ref()?;
        let mut labels = vec![LabeledSpan::new_primary_with_span(
            (!primary.text.is_empty()).then(|| primary.text.clone()),
            self.source.virtual_span(primary),
        )];
        for l in &self.diag.secondary {
            labels.push(LabeledSpan::new_with_span(
                (!l.text.is_empty()).then(|| l.text.clone()),
                self.source.virtual_span(l),
            ));
        }
        Some(Box::new(labels.into_iter()))
    }
}

/// How diagnostics look.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    /// Use colours.
    pub color: bool,
    /// Wrap width.
    pub width: usize,
}

/// Renders diagnostics into text, each followed by a blank line, and a
/// closing count.
pub fn render(map: &SourceMap, diags: &[Diagnostic], style: Style) -> String {
    let source = TreeSource::new(map, map.len());
    let theme = if style.color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(style.width)
        .with_links(false);
    let mut out = String::new();
    for d in diags {
        let r = Rendered {
            diag: d,
            source: &source,
        };
        if handler.render_report(&mut out, &r).is_err() {
            out.push_str(&d.message);
            out.push('\n');
        }
        out.push('\n');
    }
    let n = diags.len();
    let _ = writeln!(
        out,
        "error: {n} problem{} found; nothing was changed",
        if n == 1 { "" } else { "s" }
    );
    out
}
