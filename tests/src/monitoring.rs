//! The shipped monitoring as data: the queries of the Grafana dashboard
//! (`docs/grafana/isthmus.json`), the alert rules (`docs/prometheus/alerts.yml`), and the metric
//! names they use. `tests/rules.rs` checks the files themselves; `tests/metrics.rs` checks them
//! against a live agentd.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

pub const ALERTS: &str = "docs/prometheus/alerts.yml";
pub const DASHBOARD: &str = "docs/grafana/isthmus.json";
pub const METRICS_DOC: &str = "docs/metrics.md";

/// A file of the repository, as text.
pub fn read(rel: &str) -> String {
    let p = crate::repo_root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// Every query of the dashboard as (where, target object): panel targets and annotations.
pub fn queries(d: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for panel in d["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or("?");
        for t in panel["targets"].as_array().into_iter().flatten() {
            out.push((format!("panel {title:?} {}", t["refId"]), t.clone()));
        }
    }
    for a in d["annotations"]["list"].as_array().expect("annotations") {
        if a["builtIn"] == 1 {
            continue;
        }
        out.push((format!("annotation {:?}", a["name"]), a.clone()));
    }
    out
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Metric names (`isthmus_*`, `process_*`) in a PromQL expression, each with the text of the
/// `{...}` that follows it, or `None` if none does.
pub fn selectors(expr: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let bytes: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        if ident_char(bytes[i]) && (i == 0 || !ident_char(bytes[i - 1])) {
            while i < bytes.len() && ident_char(bytes[i]) {
                i += 1;
            }
            let word: String = bytes[start..i].iter().collect();
            if word.starts_with("isthmus_") || word.starts_with("process_") {
                let matchers = (bytes.get(i) == Some(&'{')).then(|| {
                    let end = bytes[i..].iter().position(|&c| c == '}').map(|p| i + p);
                    let end = end.unwrap_or_else(|| panic!("unclosed {{ in {expr}"));
                    bytes[i + 1..end].iter().collect()
                });
                out.push((word, matchers));
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Every metric name the alert rules, the dashboard's queries and its variables use, with where
/// each is first used.
pub fn metrics_used() -> Vec<(String, String)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut add = |place: &str, expr: &str| {
        for (metric, _) in selectors(expr) {
            if seen.insert(metric.clone()) {
                out.push((metric, place.to_owned()));
            }
        }
    };
    add(ALERTS, &read(ALERTS));
    let d = dashboard();
    for (place, q) in queries(&d) {
        add(&place, q["expr"].as_str().unwrap_or_default());
    }
    for v in d["templating"]["list"].as_array().expect("templating.list") {
        if let Some(q) = v["query"].as_str() {
            add(&format!("variable {}", v["name"]), q);
        }
    }
    out
}

/// The type (`counter`, `gauge`, `histogram`) of every `isthmus_*` family in the tables of
/// docs/metrics.md.
pub fn documented_types() -> BTreeMap<String, String> {
    read(METRICS_DOC)
        .lines()
        .filter(|l| l.starts_with("| `isthmus_"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells.get(1)?.trim_matches('`');
            Some((name.to_owned(), (*cells.get(2)?).to_owned()))
        })
        .collect()
}

/// The family a series name belongs to: `isthmus_x_seconds_bucket` is `isthmus_x_seconds` when
/// that is a histogram in `types`.
pub fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types.get(base).is_some_and(|t| t == "histogram") {
                return base;
            }
        }
    }
    name
}

/// The families of a gateway of an HA pair (`[ha]`), present from its first scrape and absent
/// on a gateway alone.
pub const HA_FAMILIES: &[&str] = &[
    "isthmus_ha_role",
    "isthmus_ha_lease_remaining_seconds",
    "isthmus_ha_store_up",
    "isthmus_ha_ready",
    "isthmus_ha_takeovers_total",
    "isthmus_ha_last_takeover_seconds",
];
