//! The one place where byte offsets become places: [`Source`] indexes line starts of the config
//! text once and turns a byte span (as the TOML parser and serde report it) into line, column
//! (1-based, in characters), width and the text of the line. [`Sink`] collects diagnostics for
//! one load; every check reports through it, so every message gets a place the same way.

use std::ops::Range;

use crate::diagnostic::{Diagnostic, Severity};

/// A byte range in the config text.
pub(crate) type Span = Range<usize>;

pub(crate) struct Source<'a> {
    file: String,
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> Source<'a> {
    pub(crate) fn new(file: String, text: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Source {
            file,
            text,
            line_starts,
        }
    }

    pub(crate) fn text(&self) -> &'a str {
        self.text
    }

    /// 1-based line number of the byte at `offset`.
    pub(crate) fn line_of(&self, offset: usize) -> u32 {
        let index = self.line_starts.partition_point(|&start| start <= offset);
        u32::try_from(index.max(1)).unwrap_or(u32::MAX)
    }

    /// A diagnostic at `span`, or without a place for `None`.
    pub(crate) fn diagnostic(
        &self,
        severity: Severity,
        span: Option<Span>,
        message: String,
        hint: Option<String>,
    ) -> Diagnostic {
        let mut d = Diagnostic {
            severity,
            file: self.file.clone(),
            line: None,
            column: None,
            width: 1,
            message,
            hint,
            source_line: None,
        };
        let Some(span) = span else { return d };
        let start = floor_char_boundary(self.text, span.start.min(self.text.len()));
        let end = floor_char_boundary(self.text, span.end.clamp(start, self.text.len()));
        let line = self.line_of(start);
        let line_start = self.line_starts[line as usize - 1];
        let line_end = self.text[line_start..]
            .find('\n')
            .map_or(self.text.len(), |i| line_start + i);
        let line_text = self.text[line_start..line_end].trim_end_matches('\r');
        let column = self.text[line_start..start].chars().count() + 1;
        let width = self.text[start..end.min(line_end)].chars().count().max(1);
        d.line = Some(line);
        d.column = Some(u32::try_from(column).unwrap_or(u32::MAX));
        d.width = u32::try_from(width).unwrap_or(u32::MAX);
        d.source_line = Some(line_text.to_string());
        d
    }
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Collects the diagnostics of one load. Checks take a `&mut Sink` and report; none of them
/// stops at the first problem.
pub(crate) struct Sink<'a> {
    source: &'a Source<'a>,
    diagnostics: Vec<Diagnostic>,
}

impl<'a> Sink<'a> {
    pub(crate) fn new(source: &'a Source<'a>) -> Self {
        Sink {
            source,
            diagnostics: Vec::new(),
        }
    }

    pub(crate) fn source(&self) -> &'a Source<'a> {
        self.source
    }

    /// An error with a hint: what is wrong, and what to do about it.
    pub(crate) fn error(
        &mut self,
        span: Span,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.push(
            Severity::Error,
            Some(span),
            message.into(),
            Some(hint.into()),
        );
    }

    pub(crate) fn warning(
        &mut self,
        span: Span,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.push(
            Severity::Warning,
            Some(span),
            message.into(),
            Some(hint.into()),
        );
    }

    pub(crate) fn push(
        &mut self,
        severity: Severity,
        span: Option<Span>,
        message: String,
        hint: Option<String>,
    ) {
        let d = self.source.diagnostic(severity, span, message, hint);
        self.diagnostics.push(d);
    }

    pub(crate) fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    /// All diagnostics in file order (those without a place first); stable for equal places.
    pub(crate) fn finish(mut self) -> Vec<Diagnostic> {
        self.diagnostics.sort_by_key(|d| (d.line, d.column));
        self.diagnostics
    }
}
