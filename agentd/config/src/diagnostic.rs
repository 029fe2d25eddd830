//! What a config check tells the operator: a [`Diagnostic`] names one problem (severity, file,
//! line, column, span width, message, hint) and carries the text of its line, so that a remote
//! client (`netctl` over the control socket) renders it exactly as `agentd --check-config` does
//! without having the file. A [`Report`] is the diagnostics of one load, errors and warnings
//! together; it is what a failed load returns. It lists at most [`MAX_LISTED`] errors and as many
//! warnings (the first in file order) and counts the rest: a file with 200,000 mistakes is
//! fixed from its first ones, and listing them all would only bury those. Rendering follows
//! rustc's layout, which operators already read fluently.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How many errors, and how many warnings, a [`Report`] lists; the rest are counted. A hundred
/// fill a few screens: enough to see a pattern (a whole section pasted at the wrong level), few
/// enough to read.
pub const MAX_LISTED: usize = 100;

/// Errors make a load fail; warnings never do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem in one place. Fields are plain so that the JSON form is obvious.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: String,
    /// 1-based; `None` when the problem has no place in the text (an unreadable file).
    pub line: Option<u32>,
    /// 1-based, counted in characters.
    pub column: Option<u32>,
    /// Characters of the span on that line, at least 1.
    pub width: u32,
    pub message: String,
    pub hint: Option<String>,
    /// The text of `line`, without its line ending; of a long line only the part around
    /// `column` (see `source_offset`). Control characters show as U+FFFD.
    pub source_line: Option<String>,
    /// Characters of the line left out before `source_line` (0 unless the line is long).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub source_offset: u32,
}

fn is_zero<T: Default + PartialEq>(n: &T) -> bool {
    *n == T::default()
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {}", self.severity, self.message)?;
        let line_no = self.line.map(|l| l.to_string());
        let gutter = line_no.as_ref().map_or(1, String::len);
        let pad = " ".repeat(gutter);
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, "{pad}--> {}:{line}:{column}", self.file)?,
            (Some(line), None) => write!(f, "{pad}--> {}:{line}", self.file)?,
            _ => write!(f, "{pad}--> {}", self.file)?,
        }
        if let (Some(line_no), Some(text)) = (&line_no, &self.source_line) {
            // A cut line starts with an ellipsis, one character like the one it stands for.
            let (cut, lead) = if self.source_offset > 0 {
                ("…", 1)
            } else {
                ("", 0)
            };
            write!(f, "\n{pad} |\n{line_no} | {cut}{text}")?;
            if let Some(column) = self.column {
                // Keep tabs so that the carets line up under the text in any terminal.
                let before = column.saturating_sub(1).saturating_sub(self.source_offset);
                let indent: String = std::iter::repeat_n(' ', lead)
                    .chain(text.chars().take(before as usize).map(|c| {
                        if c == '\t' {
                            '\t'
                        } else {
                            ' '
                        }
                    }))
                    .collect();
                let carets = "^".repeat(self.width.max(1) as usize);
                write!(f, "\n{pad} | {indent}{carets}")?;
            }
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n{pad} = hint: {hint}")?;
        }
        Ok(())
    }
}

/// The diagnostics of one load, in file order: at most [`MAX_LISTED`] errors and as many
/// warnings, and the count of those left out. Returned as the error of a failed load, so it
/// always holds at least one error then.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Report {
    pub diagnostics: Vec<Diagnostic>,
    /// Errors found beyond those listed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted_errors: usize,
    /// Warnings found beyond those listed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted_warnings: usize,
}

impl Report {
    /// A report that lists every diagnostic found.
    pub fn new(diagnostics: Vec<Diagnostic>) -> Self {
        Report {
            diagnostics,
            omitted_errors: 0,
            omitted_warnings: 0,
        }
    }

    /// The line that says how many were not listed, if any were left out.
    pub fn omitted_note(&self) -> Option<String> {
        omitted_note(self.omitted_errors, self.omitted_warnings)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| !d.is_error())
    }

    /// Every error found, listed or not.
    pub fn error_count(&self) -> usize {
        self.errors().count() + self.omitted_errors
    }

    /// Every warning found, listed or not.
    pub fn warning_count(&self) -> usize {
        self.warnings().count() + self.omitted_warnings
    }

    /// Every listed diagnostic, a blank line between them, the count of those not listed
    /// (`… and 199900 more errors`), then a summary line such as
    /// `2 errors, 1 warning in /etc/isthmus/agentd.toml`, ending in a newline.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for d in &self.diagnostics {
            out.push_str(&d.to_string());
            out.push_str("\n\n");
        }
        if let Some(note) = self.omitted_note() {
            out.push_str(&note);
            out.push_str("\n\n");
        }
        out.push_str(&self.summary());
        out.push('\n');
        out
    }

    fn summary(&self) -> String {
        let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        let (errors, warnings) = (self.error_count(), self.warning_count());
        let counts = match (errors, warnings) {
            (0, 0) => "no problems".to_string(),
            (e, 0) => count(e, "error"),
            (0, w) => count(w, "warning"),
            (e, w) => format!("{}, {}", count(e, "error"), count(w, "warning")),
        };
        let mut files: Vec<&str> = self.diagnostics.iter().map(|d| d.file.as_str()).collect();
        files.dedup();
        if files.is_empty() {
            counts
        } else {
            format!("{counts} in {}", files.join(", "))
        }
    }
}

/// `… and 199900 more errors (not listed: only the first 100 are)`, or `None` when nothing was
/// left out. For clients that hold the counts without a [`Report`] (`netctl` after a rejected
/// reload).
pub fn omitted_note(errors: usize, warnings: usize) -> Option<String> {
    let more = |n: usize, what: &str| format!("{n} more {what}{}", if n == 1 { "" } else { "s" });
    let what = match (errors, warnings) {
        (0, 0) => return None,
        (e, 0) => more(e, "error"),
        (0, w) => more(w, "warning"),
        (e, w) => format!("{} and {}", more(e, "error"), more(w, "warning")),
    };
    Some(format!(
        "… and {what} (not listed: only the first {MAX_LISTED} of each kind are)"
    ))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

impl std::error::Error for Report {}
