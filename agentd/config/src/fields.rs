//! Reading the fields of one entry (a section or a list entry) with its label in every message.
//!
//! Each read returns a [`Got`]: the key is absent (use the default), bad (already reported;
//! the entry will not be built and checks that depend on the value are skipped, so one mistake
//! gives one message), or a value with its span (for errors about relations between fields).

use std::ops::RangeInclusive;
use std::time::Duration;

use toml::Spanned;

use crate::duration;
use crate::parse::Entry;
use crate::raw::{Dur, Int, Scalar, Text, Texts, Value};
use crate::source::{Sink, Span};
use crate::values::Invalid;

/// The outcome of reading one key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Got<V> {
    Absent,
    Bad,
    Is(V, Span),
}

impl<V> Got<V> {
    /// The value, or `default` when absent; `None` when bad.
    pub(crate) fn or(self, default: V) -> Option<V> {
        match self {
            Got::Absent => Some(default),
            Got::Bad => None,
            Got::Is(v, _) => Some(v),
        }
    }

    /// `Some(value)`, `Some(None)` when absent, `None` when bad: for optional keys.
    pub(crate) fn optional(self) -> Option<Option<V>> {
        match self {
            Got::Absent => Some(None),
            Got::Bad => None,
            Got::Is(v, _) => Some(Some(v)),
        }
    }

    pub(crate) fn is_present(&self) -> bool {
        !matches!(self, Got::Absent)
    }

    pub(crate) fn map<W>(self, f: impl FnOnce(V) -> W) -> Got<W> {
        match self {
            Got::Absent => Got::Absent,
            Got::Bad => Got::Bad,
            Got::Is(v, s) => Got::Is(f(v), s),
        }
    }
}

/// Reads the fields of one entry, reporting to the sink. Missing keys are collected and
/// reported together, as one diagnostic at the entry's header, when it is dropped.
pub(crate) struct Fields<'e, 's, 'a> {
    pub label: &'e str,
    table: &'static str,
    span: Span,
    failed: &'e std::collections::BTreeSet<String>,
    missing: Vec<String>,
    pub sink: &'s mut Sink<'a>,
}

impl Drop for Fields<'_, '_, '_> {
    fn drop(&mut self) {
        if self.missing.is_empty() {
            return;
        }
        let keys: Vec<String> = self.missing.iter().map(|k| format!("`{k}`")).collect();
        let examples: Vec<String> = self
            .missing
            .iter()
            .map(|k| crate::raw::example(self.table, k).map_or_else(|| k.clone(), str::to_string))
            .collect();
        let (message, hint) = if keys.len() == 1 {
            (
                format!("missing required key {}", keys[0]),
                format!("add: {}", examples[0]),
            )
        } else {
            (
                format!("missing required keys {}", keys.join(", ")),
                format!("add them, e.g.: {}", examples.join(" / ")),
            )
        };
        let span = self.span();
        self.error(span, message, hint);
    }
}

impl<'e, 's, 'a> Fields<'e, 's, 'a> {
    pub(crate) fn of<T>(entry: &'e Entry<T>, sink: &'s mut Sink<'a>) -> Self {
        Fields {
            label: &entry.label,
            table: entry.table,
            span: entry.span.clone(),
            failed: &entry.failed,
            missing: Vec::new(),
            sink,
        }
    }

    /// The entry's header or inline table.
    pub(crate) fn span(&self) -> Span {
        self.span.clone()
    }

    /// `{label}: {message}` at `span`.
    pub(crate) fn error(&mut self, span: Span, message: impl AsRef<str>, hint: impl Into<String>) {
        let message = format!("{}: {}", self.label, message.as_ref());
        self.sink.error(span, message, hint);
    }

    pub(crate) fn warning(
        &mut self,
        span: Span,
        message: impl AsRef<str>,
        hint: impl Into<String>,
    ) {
        let message = format!("{}: {}", self.label, message.as_ref());
        self.sink.warning(span, message, hint);
    }

    fn invalid(&mut self, span: Span, key: &str, e: Invalid) {
        self.error(span, format!("{key}: {}", e.message), e.hint);
    }

    /// `Some(value)`; reports a missing key (unless its value was already rejected).
    pub(crate) fn require<V>(&mut self, got: Got<V>, key: &str) -> Option<V> {
        match got {
            Got::Is(v, _) => Some(v),
            Got::Bad => None,
            Got::Absent => {
                self.missing(key);
                None
            }
        }
    }

    pub(crate) fn missing(&mut self, key: &str) {
        if !self.failed.contains(key) && !self.missing.iter().any(|k| k == key) {
            self.missing.push(key.to_string());
        }
    }

    /// A key that must not be set in this entry (it belongs to another kind).
    pub(crate) fn forbid<V>(
        &mut self,
        field: &Option<Spanned<V>>,
        key: &str,
        why: &str,
        hint: &str,
    ) {
        if let Some(v) = field {
            self.error(v.span(), format!("{key} {why}"), hint);
        }
    }

    pub(crate) fn text<'v>(&mut self, field: &'v Text) -> Got<&'v str> {
        match field {
            None => Got::Absent,
            Some(v) => Got::Is(v.get_ref().as_str(), v.span()),
        }
    }

    /// A string read by `parse`.
    pub(crate) fn parsed<V>(
        &mut self,
        field: &Text,
        key: &str,
        parse: impl FnOnce(&str) -> Result<V, Invalid>,
    ) -> Got<V> {
        let Some(v) = field else { return Got::Absent };
        match parse(v.get_ref()) {
            Ok(value) => Got::Is(value, v.span()),
            Err(e) => {
                self.invalid(v.span(), key, e);
                Got::Bad
            }
        }
    }

    /// A string-or-integer read by `parse`.
    pub(crate) fn scalar<V>(
        &mut self,
        field: &Value,
        key: &str,
        parse: impl FnOnce(&Scalar) -> Result<V, Invalid>,
    ) -> Got<V> {
        let Some(v) = field else { return Got::Absent };
        match parse(v.get_ref()) {
            Ok(value) => Got::Is(value, v.span()),
            Err(e) => {
                self.invalid(v.span(), key, e);
                Got::Bad
            }
        }
    }

    /// An integer within `range`.
    pub(crate) fn int(&mut self, field: &Int, key: &str, range: RangeInclusive<i64>) -> Got<i64> {
        let Some(v) = field else { return Got::Absent };
        let n = *v.get_ref();
        if range.contains(&n) {
            return Got::Is(n, v.span());
        }
        let default = crate::raw::example(self.table, key)
            .map(|line| format!(" (e.g. {line})"))
            .unwrap_or_default();
        self.error(
            v.span(),
            format!(
                "{key} {n} is out of range {}..={}",
                range.start(),
                range.end()
            ),
            format!(
                "use a value from {} to {}{default}",
                range.start(),
                range.end()
            ),
        );
        Got::Bad
    }

    /// A duration within `min..=max`.
    pub(crate) fn duration(
        &mut self,
        field: &Dur,
        key: &str,
        min: Duration,
        max: Option<Duration>,
    ) -> Got<Duration> {
        let Some(v) = field else { return Got::Absent };
        let parsed = match &v.get_ref().0 {
            Scalar::Text(text) => duration::parse(text),
            Scalar::Int(n) => Err(Invalid::new(
                format!("duration {n} has no unit"),
                format!(
                    "write durations as strings with a unit: \"{n}s\" for seconds or \"{n}ms\" for milliseconds"
                ),
            )),
        };
        let d = match parsed {
            Ok(d) => d,
            Err(e) => {
                self.invalid(v.span(), key, e);
                return Got::Bad;
            }
        };
        let too_long = max.is_some_and(|max| d > max);
        if d < min || too_long {
            let problem = if too_long { "too long" } else { "too short" };
            let range = match (min, max) {
                (min, Some(max)) if min.is_zero() => {
                    format!("of at most {}", duration::format(max))
                }
                (min, Some(max)) => format!(
                    "from {} to {}",
                    duration::format(min),
                    duration::format(max)
                ),
                (min, None) => format!("of at least {}", duration::format(min)),
            };
            self.error(
                v.span(),
                format!("{key} {} is {problem}", duration::format(d)),
                format!("use a duration {range}"),
            );
            return Got::Bad;
        }
        Got::Is(d, v.span())
    }

    /// A list of strings, each read by `parse`; `Bad` if any item is bad (each one reported).
    pub(crate) fn list<V>(
        &mut self,
        field: &Texts,
        mut parse: impl FnMut(&mut Self, &str, Span) -> Option<V>,
    ) -> Got<Vec<V>> {
        let Some(items) = field else {
            return Got::Absent;
        };
        let mut out = Vec::new();
        let mut bad = false;
        for item in items.get_ref() {
            match parse(self, item.get_ref(), item.span()) {
                Some(v) => out.push(v),
                None => bad = true,
            }
        }
        if bad {
            Got::Bad
        } else {
            Got::Is(out, items.span())
        }
    }

    /// Like [`Fields::list`], and the list must not be empty.
    pub(crate) fn non_empty_list<V>(
        &mut self,
        field: &Texts,
        key: &str,
        parse: impl FnMut(&mut Self, &str, Span) -> Option<V>,
    ) -> Got<Vec<V>> {
        let got = self.list(field, parse);
        if let Got::Is(items, span) = &got {
            if items.is_empty() {
                let hint = match crate::raw::example(self.table, key) {
                    Some(line) => format!("list at least one, e.g. {line}"),
                    None => "list at least one".to_string(),
                };
                self.error(span.clone(), format!("{key} is empty"), hint);
                return Got::Bad;
            }
        }
        got
    }

    /// Reports `e` for a list item (or any value) at `span` under `key`.
    pub(crate) fn report(&mut self, span: Span, key: &str, e: Invalid) {
        self.invalid(span, key, e);
    }
}
