//! From text to [`RawConfig`], reporting every syntax and type error rather than the first.
//!
//! The TOML parser recovers from syntax errors and returns what it could read. Each section and
//! each `[[list]]` entry is then deserialized on its own, so an error in one entry never hides
//! the others. Unknown keys of an entry are picked out first, in one pass against the keys its
//! struct declares. Within the rest serde stops at its first error; we report it, drop the
//! offending key and deserialize the entry again, until it passes: so every bad key of an entry
//! is reported too (only a second error nested inside the same key's value, e.g. inside
//! `answers`, waits for the next run). That retry runs at most once per known key, so an entry
//! with 100,000 unknown keys costs one pass, not 100,000 runs over it. Dropped keys are
//! remembered in [`Entry::failed`] so that `validate` does not also call them missing.

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;
use toml::de::{DeString, DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use crate::raw::{
    self, RawActions, RawAgent, RawAws, RawControl, RawDamping, RawDnsGroup, RawDnsProvider, RawHa,
    RawHealth, RawHook, RawLink, RawMetrics, RawOci, RawProbe, RawRouteGroup, RawRoutes,
};
use crate::source::{Sink, Span};
use crate::values::closest;

/// One table of the file (a section or a list entry) as serde read it.
#[derive(Debug)]
pub(crate) struct Entry<T> {
    pub value: T,
    /// The header (`[[link]]`) or inline table: where "missing key" errors point.
    pub span: Span,
    /// Keys whose values were rejected and already reported.
    pub failed: BTreeSet<String>,
    /// How messages name this entry: `[agent]`, `link "interconnect"`, `link #2`.
    pub label: String,
    /// Section or list name, for examples in hints: `agent`, `link`, `health.damping`.
    pub table: &'static str,
}

#[derive(Debug, Default)]
pub(crate) struct RawConfig {
    pub agent: Option<Entry<RawAgent>>,
    pub control: Option<Entry<RawControl>>,
    pub metrics: Option<Entry<RawMetrics>>,
    pub routes: Option<Entry<RawRoutes>>,
    pub health: Option<Entry<RawHealth>>,
    pub damping: Option<Entry<RawDamping>>,
    pub links: Vec<Entry<RawLink>>,
    pub probes: Vec<Entry<RawProbe>>,
    pub route_groups: Vec<Entry<RawRouteGroup>>,
    pub dns_providers: Vec<Entry<RawDnsProvider>>,
    pub dns_groups: Vec<Entry<RawDnsGroup>>,
    pub actions: Option<Entry<RawActions>>,
    pub aws: Option<Entry<RawAws>>,
    pub oci: Option<Entry<RawOci>>,
    pub ha: Option<Entry<RawHa>>,
    pub hooks: Vec<Entry<RawHook>>,
}

const SECTIONS: &[&str] = &[
    "agent",
    "control",
    "metrics",
    "routes",
    "health",
    "link",
    "probe",
    "route_group",
    "dns_provider",
    "dns_group",
    "actions",
    "aws",
    "oci",
    "ha",
    "hook",
];

/// Parses the sink's source text; every problem goes to `sink`.
pub(crate) fn parse(sink: &mut Sink) -> RawConfig {
    let text = sink.source().text();
    let (doc, errors) = DeTable::parse_recoverable(text);
    // The parser often reports a follow-up error on the same line (after `a = = 1`: "extra
    // `=`", then "unexpected key or value"); the first one is the cause.
    // An unclosed array repeats "missing comma" on every following line: once is enough.
    let mut lines_with_errors = BTreeSet::new();
    let mut previous = "";
    for e in &errors {
        let line = e.span().map(|s| sink.source().line_of(s.start));
        let new_line = line.is_none() || lines_with_errors.insert(line);
        if new_line && e.message() != previous {
            syntax_error(sink, e);
        }
        previous = e.message();
    }
    let mut raw = RawConfig::default();
    for (key, value) in doc.into_inner() {
        match key.get_ref().as_ref() {
            "agent" => raw.agent = section(sink, "agent", &key, value),
            "control" => raw.control = section(sink, "control", &key, value),
            "metrics" => raw.metrics = section(sink, "metrics", &key, value),
            "routes" => raw.routes = section(sink, "routes", &key, value),
            "health" => {
                let (health, damping) = health(sink, &key, value);
                raw.health = health;
                raw.damping = damping;
            }
            "link" => raw.links = list(sink, "link", &key, value),
            "probe" => raw.probes = list(sink, "probe", &key, value),
            "route_group" => raw.route_groups = list(sink, "route_group", &key, value),
            "dns_provider" => raw.dns_providers = list(sink, "dns_provider", &key, value),
            "dns_group" => raw.dns_groups = list(sink, "dns_group", &key, value),
            "actions" => raw.actions = section(sink, "actions", &key, value),
            "aws" => raw.aws = section(sink, "aws", &key, value),
            "oci" => raw.oci = section(sink, "oci", &key, value),
            "ha" => raw.ha = section(sink, "ha", &key, value),
            "hook" => raw.hooks = list(sink, "hook", &key, value),
            other => {
                let listed = "[agent], [control], [metrics], [routes], [health], [[link]], \
                              [[probe]], [[route_group]], [[dns_provider]], [[dns_group]], \
                              [actions], [aws], [oci], [ha], [[hook]]";
                let owners = raw::tables_with_key(other);
                let hint = match closest(other, SECTIONS) {
                    Some(near) => format!("did you mean `{near}`? sections: {listed}"),
                    None if !owners.is_empty() => format!(
                        "`{other}` is a key of {}: is the table header above it missing or broken?",
                        owners.join(", ")
                    ),
                    None => format!("remove it; sections: {listed}"),
                };
                sink.error(key.span(), format!("unknown section `{other}`"), hint);
            }
        }
    }
    raw
}

fn syntax_error(sink: &mut Sink, e: &toml::de::Error) {
    let message = e.message().trim();
    let hint = if message.starts_with("duplicate key") {
        "a key, and a [table], may appear only once: remove or merge the repeated one"
    } else {
        "fix the TOML syntax here: `key = value` per line, strings in double quotes, \
         [table] and [[list]] headers on their own line; the rest of the file was still checked"
    };
    sink.push(
        crate::Severity::Error,
        e.span(),
        format!("invalid TOML: {message}"),
        Some(hint.to_string()),
    );
}

/// A single table such as `[agent]`.
fn section<T: DeserializeOwned + Default>(
    sink: &mut Sink,
    table: &'static str,
    key: &Spanned<DeString<'_>>,
    value: Spanned<DeValue<'_>>,
) -> Option<Entry<T>> {
    match value.get_ref() {
        DeValue::Table(_) => Some(entry(sink, table, format!("[{table}]"), value)),
        DeValue::Array(_) => {
            sink.error(
                key.span(),
                format!("[{table}] must be a single table, not a list"),
                format!("write [{table}] (single brackets) once"),
            );
            None
        }
        other => {
            sink.error(
                value.span(),
                format!("`{table}` must be a table, not {}", other.type_str()),
                format!("write [{table}] on a line of its own, followed by its keys"),
            );
            None
        }
    }
}

/// `[health]`, with `[health.damping]` taken out and read on its own.
fn health(
    sink: &mut Sink,
    key: &Spanned<DeString<'_>>,
    mut value: Spanned<DeValue<'_>>,
) -> (Option<Entry<RawHealth>>, Option<Entry<RawDamping>>) {
    let mut damping = None;
    if let DeValue::Table(items) = value.get_mut() {
        if let Some((damping_key, damping_value)) = items.remove_entry("damping") {
            damping = section(sink, "health.damping", &damping_key, damping_value);
        }
    }
    (section(sink, "health", key, value), damping)
}

/// A list of tables such as `[[link]]`.
fn list<T: DeserializeOwned + Default>(
    sink: &mut Sink,
    table: &'static str,
    key: &Spanned<DeString<'_>>,
    value: Spanned<DeValue<'_>>,
) -> Vec<Entry<T>> {
    match value.get_ref() {
        DeValue::Array(_) => {}
        DeValue::Table(_) => {
            sink.error(
                key.span(),
                format!("[{table}] is a list: each entry needs double brackets"),
                format!("write [[{table}]], once per {table}"),
            );
            // Check its contents anyway: the operator gets everything in one run.
            let label = label(table, 0, &value);
            return vec![entry(sink, table, label, value)];
        }
        other => {
            sink.error(
                value.span(),
                format!(
                    "`{table}` must be a list of tables, not {}",
                    other.type_str()
                ),
                format!("write [[{table}]] on a line of its own, followed by its keys"),
            );
            return Vec::new();
        }
    }
    let DeValue::Array(items) = value.into_inner() else {
        return Vec::new();
    };
    let mut entries = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        if let DeValue::Table(_) = item.get_ref() {
            let label = label(table, index, &item);
            entries.push(entry(sink, table, label, item));
        } else {
            sink.error(
                item.span(),
                format!(
                    "{table} #{}: must be a table, not {}",
                    index + 1,
                    item.get_ref().type_str()
                ),
                format!("write each {table} as [[{table}]] followed by its keys"),
            );
        }
    }
    entries
}

/// `link "interconnect"` if the entry has a string name, else `link #2`.
fn label(table: &str, index: usize, value: &Spanned<DeValue<'_>>) -> String {
    match value
        .get_ref()
        .get("name")
        .and_then(|n| n.get_ref().as_str())
    {
        Some(name) => format!("{table} {name:?}"),
        None => format!("{table} #{}", index + 1),
    }
}

/// Deserializes one table, dropping and reporting each rejected key until the rest passes.
fn entry<T: DeserializeOwned + Default>(
    sink: &mut Sink,
    table: &'static str,
    label: String,
    value: Spanned<DeValue<'_>>,
) -> Entry<T> {
    let span = value.span();
    let mut failed = BTreeSet::new();
    let DeValue::Table(mut items) = value.into_inner() else {
        return Entry {
            value: T::default(),
            span,
            failed,
            label,
            table,
        };
    };
    // Values the TOML parser made up while recovering from a syntax error (already reported)
    // have an empty span; reading them would only report the same mistake again.
    retain(&mut items, |k, v| {
        let made_up = recovered(v);
        if made_up {
            failed.insert(k.get_ref().to_string());
        }
        !made_up
    });
    if let Some(keys) = raw::keys_of::<T>() {
        let mut valid = keys.to_vec();
        if table == "health" {
            valid.push("damping");
        }
        let unknown: Vec<(String, Span)> = items
            .keys()
            .filter(|k| !keys.contains(&k.get_ref().as_ref()))
            .map(|k| (k.get_ref().to_string(), k.span()))
            .collect();
        if !unknown.is_empty() {
            retain(&mut items, |k, _| keys.contains(&k.get_ref().as_ref()));
        }
        for (name, span) in unknown {
            failed.extend(unknown_key(sink, &label, &name, span, &valid));
        }
    }
    loop {
        let attempt = Spanned::new(span.clone(), DeValue::Table(items.clone()));
        let error = match T::deserialize(ValueDeserializer::from(attempt)) {
            Ok(value) => {
                return Entry {
                    value,
                    span,
                    failed,
                    label,
                    table,
                }
            }
            Err(e) => e,
        };
        let culprit = error.span().and_then(|at| culprit(&items, at.start));
        let meant = report_serde_error(sink, table, &label, culprit.as_deref(), &error, &span);
        // After "unknown key `nmae`, did you mean `name`?", "missing `name`" adds nothing.
        failed.extend(meant);
        match culprit {
            Some(key) => {
                items.remove(key.as_str());
                failed.insert(key);
            }
            None => {
                // Cannot tell which key: keep nothing of this entry, and count every key
                // present as failed so that none is also reported as missing.
                failed.extend(items.keys().map(|k| k.get_ref().to_string()));
                return Entry {
                    value: T::default(),
                    span,
                    failed,
                    label,
                    table,
                };
            }
        }
    }
}

/// Keeps the items for which `keep` holds, in one pass. (Not `remove` per key: removing from the
/// ordered map shifts every item after it, and `DeTable::retain` hides the keys' spans.)
fn retain(
    items: &mut DeTable<'_>,
    mut keep: impl FnMut(&Spanned<DeString<'_>>, &Spanned<DeValue<'_>>) -> bool,
) {
    *items = std::mem::take(items)
        .into_iter()
        .filter(|(k, v)| keep(k, v))
        .collect();
}

/// Whether `value` is or contains a scalar that has no text (made up during recovery).
fn recovered(value: &Spanned<DeValue<'_>>) -> bool {
    match value.get_ref() {
        DeValue::Table(t) => t.values().any(recovered),
        DeValue::Array(a) => a.iter().any(recovered),
        _ => value.span().is_empty(),
    }
}

/// The key of `items` whose key or value text contains byte `at`.
fn culprit(items: &DeTable<'_>, at: usize) -> Option<String> {
    items
        .iter()
        .find(|(k, v)| within(&k.span(), at) || covers(v, at))
        .map(|(k, _)| k.get_ref().to_string())
}

fn within(span: &Span, at: usize) -> bool {
    span.start <= at && at < span.end.max(span.start + 1)
}

/// Whether `at` lies in `value` or anything nested in it (a sub-table's keys are not inside
/// its header's span).
fn covers(value: &Spanned<DeValue<'_>>, at: usize) -> bool {
    if within(&value.span(), at) {
        return true;
    }
    match value.get_ref() {
        DeValue::Table(t) => t
            .iter()
            .any(|(k, v)| within(&k.span(), at) || covers(v, at)),
        DeValue::Array(a) => a.iter().any(|v| covers(v, at)),
        _ => false,
    }
}

/// Reports an unknown key; returns the key it was probably meant to be.
fn unknown_key(
    sink: &mut Sink,
    label: &str,
    name: &str,
    span: Span,
    valid: &[&str],
) -> Option<String> {
    let list = valid.join(", ");
    let near = closest(name, valid);
    let hint = match near {
        Some(near) => format!("did you mean `{near}`? valid keys here: {list}"),
        None => format!("remove it; valid keys here: {list}"),
    };
    sink.error(span, format!("{label}: unknown key `{name}`"), hint);
    near.map(str::to_string)
}

/// Reports a serde error; returns the key that an unknown key was probably meant to be.
fn report_serde_error(
    sink: &mut Sink,
    table: &str,
    label: &str,
    key: Option<&str>,
    error: &toml::de::Error,
    entry_span: &Span,
) -> Option<String> {
    let message = error.message().trim();
    let span = error.span().unwrap_or_else(|| entry_span.clone());
    if let Some(rest) = message.strip_prefix("unknown field `") {
        // Nested tables (inline route tables, DNS answers); an entry's own unknown keys were
        // picked out before serde ran.
        let (name, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let mut valid: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        if table == "health" {
            valid.push("damping");
        }
        return unknown_key(sink, label, name, span, &valid);
    }
    let what = key.map_or_else(|| label.to_string(), |k| format!("{label}: {k}"));
    let example = key.and_then(|k| raw::example(table, k));
    let hint = match example {
        Some(line) => format!("write it like: {line}"),
        None => "see docs/config.md for the expected form".to_string(),
    };
    sink.error(span, format!("{what}: {message}"), hint);
    None
}
