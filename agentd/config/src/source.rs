//! The one place where byte offsets become places: [`Source`] indexes line starts of the config
//! text once and turns a byte span (as the TOML parser and serde report it) into line, column
//! (1-based, in characters), width and the text of the line. [`Sink`] collects diagnostics for
//! one load; every check reports through it, so every message gets a place the same way.
//!
//! The cost of a load grows with the file, not with the number of problems in it: the sink keeps
//! the first [`MAX_LISTED`] errors and warnings by place (a bounded map) and only counts the
//! rest, and a place is worked out (line, column, the text of the line) only for those listed.

use std::collections::BTreeMap;
use std::ops::Range;

use crate::diagnostic::{Diagnostic, Severity, MAX_LISTED};

/// Characters of a line shown around the place of a diagnostic; a longer line (minified or
/// binary text) is cut around the column.
const MAX_SHOWN: usize = 160;
/// Of those, how many come before the column in a cut line.
const SHOWN_BEFORE: usize = 60;

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
            source_offset: 0,
        };
        let Some(span) = span else { return d };
        let start = floor_char_boundary(self.text, span.start.min(self.text.len()));
        let end = floor_char_boundary(self.text, span.end.clamp(start, self.text.len()));
        let line = self.line_of(start);
        let line_start = self.line_starts[line as usize - 1];
        let line_end = self
            .line_starts
            .get(line as usize)
            .map_or(self.text.len(), |next| next - 1);
        let line_text = self.text[line_start..line_end].trim_end_matches('\r');
        // Same width: the column and width below still count characters of the real line.
        let line_text = crate::redact::mask_line(line_text);
        let line_text = line_text.as_ref();
        let column = self.text[line_start..start].chars().count();
        let width = self.text[start..end.min(line_end)].chars().count().max(1);
        let length = line_text.chars().count();
        let (from, shown) = if length <= MAX_SHOWN {
            (0, line_text.chars().map(visible).collect::<String>())
        } else {
            let from = column.saturating_sub(SHOWN_BEFORE).min(length - MAX_SHOWN);
            let mut shown: String = line_text
                .chars()
                .skip(from)
                .take(MAX_SHOWN)
                .map(visible)
                .collect();
            if from + MAX_SHOWN < length {
                shown.push('…');
            }
            (from, shown)
        };
        let width = width.min((from + MAX_SHOWN).saturating_sub(column)).max(1);
        d.line = Some(line);
        d.column = Some(u32::try_from(column + 1).unwrap_or(u32::MAX));
        d.width = u32::try_from(width).unwrap_or(u32::MAX);
        d.source_line = Some(shown);
        d.source_offset = u32::try_from(from).unwrap_or(u32::MAX);
        d
    }
}

/// Control characters (a NUL, an escape sequence) would garble the terminal: one replacement
/// character each keeps the carets in place. Tabs stay, for the carets' indent.
fn visible(c: char) -> char {
    if c.is_control() && c != '\t' {
        '\u{FFFD}'
    } else {
        c
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
    errors: Kept,
    warnings: Kept,
    /// Order of reporting, which breaks ties between diagnostics at the same place.
    reported: u64,
}

/// Where a diagnostic sorts: those without a place first, then by byte offset (which is line
/// and column order), then in the order reported.
type Place = (Option<usize>, u64);

/// The first [`MAX_LISTED`] diagnostics of one severity by place, and how many more were found.
#[derive(Default)]
struct Kept {
    first: BTreeMap<Place, Pending>,
    omitted: usize,
}

impl Kept {
    fn insert(&mut self, place: Place, pending: Pending) {
        self.first.insert(place, pending);
        if self.first.len() > MAX_LISTED {
            self.first.pop_last();
            self.omitted += 1;
        }
    }

    fn count(&self) -> usize {
        self.first.len() + self.omitted
    }

    /// Whether a diagnostic at `start` would be kept now (and so, perhaps, listed): the set only
    /// ever fills with earlier places, so one refused now is never listed.
    fn would_keep(&self, start: Option<usize>) -> bool {
        self.first.len() < MAX_LISTED
            || self
                .first
                .last_key_value()
                .is_some_and(|((last, _), _)| start < *last)
    }
}

/// A diagnostic whose place is not worked out yet.
struct Pending {
    severity: Severity,
    span: Option<Span>,
    message: String,
    hint: Option<String>,
}

/// What a load found: the diagnostics listed, in file order, and the counts of those left out.
pub(crate) struct Findings {
    pub diagnostics: Vec<Diagnostic>,
    pub omitted_errors: usize,
    pub omitted_warnings: usize,
}

impl<'a> Sink<'a> {
    pub(crate) fn new(source: &'a Source<'a>) -> Self {
        Sink {
            source,
            errors: Kept::default(),
            warnings: Kept::default(),
            reported: 0,
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
        let place = (span.as_ref().map(|s| s.start), self.reported);
        self.reported += 1;
        let pending = Pending {
            severity,
            span,
            message,
            hint,
        };
        match severity {
            Severity::Error => self.errors.insert(place, pending),
            Severity::Warning => self.warnings.insert(place, pending),
        }
    }

    /// Whether an error at `span` could still be listed. A check whose hint is costly to build
    /// (a "did you mean" over thousands of names) builds it only then: an error that will only be
    /// counted needs no hint.
    pub(crate) fn may_list_error(&self, span: &Span) -> bool {
        self.errors.would_keep(Some(span.start))
    }

    /// Every error reported so far, listed or not.
    pub(crate) fn error_count(&self) -> usize {
        self.errors.count()
    }

    /// The diagnostics kept, in file order (those without a place first; stable for equal
    /// places), each with its place worked out.
    pub(crate) fn finish(self) -> Findings {
        let mut kept: Vec<(Place, Pending)> = self
            .errors
            .first
            .into_iter()
            .chain(self.warnings.first)
            .collect();
        kept.sort_by_key(|(place, _)| *place);
        let diagnostics = kept
            .into_iter()
            .map(|(_, p)| {
                self.source
                    .diagnostic(p.severity, p.span, p.message, p.hint)
            })
            .collect();
        Findings {
            diagnostics,
            omitted_errors: self.errors.omitted,
            omitted_warnings: self.warnings.omitted,
        }
    }
}
