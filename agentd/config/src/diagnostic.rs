//! What a config check tells the operator: a [`Diagnostic`] names one problem (severity, file,
//! line, column, span width, message, hint) and carries the text of its line, so that a remote
//! client (`netctl` over the control socket) renders it exactly as `agentd --check-config` does
//! without having the file. A [`Report`] is every diagnostic of one load, errors and warnings
//! together; it is what a failed load returns. Rendering follows rustc's layout, which operators
//! already read fluently.

use std::fmt;

use serde::{Deserialize, Serialize};

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
    /// The text of `line`, without its line ending.
    pub source_line: Option<String>,
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
            write!(f, "\n{pad} |\n{line_no} | {text}")?;
            if let Some(column) = self.column {
                // Keep tabs so that the carets line up under the text in any terminal.
                let indent: String = text
                    .chars()
                    .take(column.saturating_sub(1) as usize)
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
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

/// Every diagnostic of one load, in file order. Returned as the error of a failed load, so it
/// always holds at least one error then.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Report {
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    pub fn new(diagnostics: Vec<Diagnostic>) -> Self {
        Report { diagnostics }
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| !d.is_error())
    }

    pub fn error_count(&self) -> usize {
        self.errors().count()
    }

    pub fn warning_count(&self) -> usize {
        self.warnings().count()
    }

    /// Every diagnostic, a blank line between them, then a summary line such as
    /// `2 errors, 1 warning in /etc/isthmus/agentd.toml`, ending in a newline.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for d in &self.diagnostics {
            out.push_str(&d.to_string());
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

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

impl std::error::Error for Report {}
