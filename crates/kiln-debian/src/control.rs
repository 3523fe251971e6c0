//! The deb822 control-file syntax shared by `Release` and `Packages` files.
//!
//! Owns splitting text into paragraphs and fields (with continuation lines)
//! and nothing else: what a field means belongs to [`crate::release`] and
//! [`crate::index`]. Borrows from the input and allocates nothing, so the
//! ~63k paragraphs of a `Packages` file scan quickly.

/// One paragraph (stanza) of a control file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Paragraph<'a> {
    text: &'a str,
    /// 1-based line number of the paragraph's first line.
    pub line: usize,
}

impl<'a> Paragraph<'a> {
    /// The fields of this paragraph, in order.
    pub fn fields(&self) -> Fields<'a> {
        Fields {
            rest: self.text,
            line: self.line,
        }
    }
}

/// Splits `text` into paragraphs separated by blank lines.
pub(crate) fn paragraphs(text: &str) -> Paragraphs<'_> {
    Paragraphs {
        rest: text,
        line: 1,
    }
}

/// Iterator returned by [`paragraphs`].
#[derive(Debug)]
pub(crate) struct Paragraphs<'a> {
    rest: &'a str,
    line: usize,
}

fn split_line(text: &str) -> (&str, &str) {
    match text.find('\n') {
        Some(end) => (&text[..end], &text[end + 1..]),
        None => (text, ""),
    }
}

fn is_blank(line: &str) -> bool {
    line.bytes().all(|b| b.is_ascii_whitespace())
}

impl<'a> Iterator for Paragraphs<'a> {
    type Item = Paragraph<'a>;

    fn next(&mut self) -> Option<Paragraph<'a>> {
        // Skip blank lines before the paragraph.
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let (line, after) = split_line(self.rest);
            if !is_blank(line) {
                break;
            }
            self.rest = after;
            self.line += 1;
        }
        let start = self.rest;
        let start_line = self.line;
        let mut len = 0;
        loop {
            if self.rest.is_empty() {
                break;
            }
            let (line, after) = split_line(self.rest);
            if is_blank(line) {
                break;
            }
            len += self.rest.len() - after.len();
            self.rest = after;
            self.line += 1;
        }
        Some(Paragraph {
            text: &start[..len],
            line: start_line,
        })
    }
}

/// One field: its name, its value (continuation lines included, trimmed)
/// and the line it starts on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field<'a> {
    pub name: &'a str,
    pub value: &'a str,
    pub line: usize,
}

/// A line that is neither a field nor a continuation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SyntaxError {
    pub line: usize,
    pub message: &'static str,
}

/// Iterator returned by [`Paragraph::fields`].
#[derive(Debug)]
pub(crate) struct Fields<'a> {
    rest: &'a str,
    line: usize,
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, SyntaxError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let (line, after) = split_line(self.rest);
            if line.starts_with('#') {
                self.rest = after;
                self.line += 1;
                continue;
            }
            let field_line = self.line;
            if line.starts_with([' ', '\t']) {
                self.rest = "";
                return Some(Err(SyntaxError {
                    line: field_line,
                    message: "a continuation line has no field before it",
                }));
            }
            let Some(colon) = line.find(':') else {
                self.rest = "";
                return Some(Err(SyntaxError {
                    line: field_line,
                    message: "a line is not of the form `Field: value`",
                }));
            };
            let name = &line[..colon];
            let value_start = colon + 1;
            let whole = self.rest;
            self.rest = after;
            self.line += 1;
            let mut end = line.len();
            // Continuation lines start with a space or a tab.
            while self.rest.starts_with([' ', '\t']) {
                let (cont, after) = split_line(self.rest);
                end = whole.len() - self.rest.len() + cont.len();
                self.rest = after;
                self.line += 1;
            }
            let value = whole[value_start..end].trim();
            return Some(Ok(Field {
                name: name.trim_end(),
                value,
                line: field_line,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_paragraphs_and_fields() {
        let text = "\nA: 1\nB: two\n words\n\t.\n\n\nC:3\n# comment\nD: x\n";
        let paras: Vec<_> = paragraphs(text).collect();
        assert_eq!(paras.len(), 2);
        assert_eq!(paras[0].line, 2);
        assert_eq!(paras[1].line, 8);
        let fields: Vec<_> = paras[0].fields().map(Result::unwrap).collect();
        assert_eq!(fields[0].name, "A");
        assert_eq!(fields[0].value, "1");
        assert_eq!(fields[1].value, "two\n words\n\t.");
        assert_eq!(fields[1].line, 3);
        let fields: Vec<_> = paras[1].fields().map(Result::unwrap).collect();
        assert_eq!(
            fields.iter().map(|f| (f.name, f.value)).collect::<Vec<_>>(),
            [("C", "3"), ("D", "x")]
        );
    }

    #[test]
    fn reports_the_bad_line() {
        let text = "A: 1\nnot a field\n";
        let para = paragraphs(text).next().unwrap();
        let err = para.fields().nth(1).unwrap().unwrap_err();
        assert_eq!(err.line, 2);
    }
}
