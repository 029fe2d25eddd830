//! Checks of the shipped monitoring: the Prometheus alert rules (`docs/prometheus/alerts.yml`)
//! with `promtool check rules` and their unit tests (`promtool test rules`), that those tests
//! cover every alert both firing and quiet, and the Grafana dashboard (`docs/grafana/isthmus.json`):
//! its variables, data sources and that every query is filtered by the gateway selector. Every
//! metric name used must be one documented in `docs/metrics.md`.
//!
//! No root and no running agentd: plain file checks plus `promtool`, which must be installed
//! (Debian: `apt-get install prometheus`); the test fails, rather than skips, without it. Whether
//! the queries return data from a live agentd is checked by the end-to-end metrics tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use isthmus_tests::monitoring::{dashboard, queries, read, selectors, ALERTS, DASHBOARD};
use serde_json::Value;

const ALERT_TESTS: &str = "docs/prometheus/alerts.test.yml";
const RUNBOOK: &str = "docs/prometheus/README.md";
const METRICS_DOC: &str = "docs/metrics.md";

/// The only dashboard variables a query may use.
const QUERY_VARIABLES: &[&str] = &["instance", "job", "__rate_interval", "__interval"];

/// Panels and annotations whose queries may be empty on a healthy gateway, and why. A query marks
/// itself with `"isthmusMayBeEmpty": true`; the end-to-end test skips its non-empty check.
const MAY_BE_EMPTY: &[&str] = &[
    // Only `> 0` rates are shown, and a healthy link drops nothing.
    "Drops by reason",
    // Only links with `egress_price_per_gb` have a cost counter.
    "Estimated egress cost (24h)",
    // Only gateways with a `[[dns_group]]` have its answers.
    "DNS answer published",
    // Only DNS groups and `aws_route_tables` / `oci_route_tables` are action targets.
    "Actions in sync",
    // Observed only when a decision changed a DNS record or a cloud route table.
    "Action duration p95",
    // Only `> 0` increases are shown, and a healthy target (and hook) fails nothing.
    "Action failures by kind",
    // Only route groups with `checks` have service checks per link.
    "Service checks per link",
    // Only gateways with `[ha]` are of a pair.
    "HA role",
    "HA takeovers",
];

/// The standard process collector's names (`process_*` in docs/metrics.md).
const PROCESS_METRICS: &[&str] = &[
    "process_cpu_seconds_total",
    "process_max_fds",
    "process_open_fds",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_virtual_memory_bytes",
];

fn path(rel: &str) -> PathBuf {
    isthmus_tests::repo_root().join(rel)
}

/// Runs `promtool ARGS` in the repository root; panics with its output if it fails.
fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(isthmus_tests::repo_root())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}): install it (Debian: `apt-get install prometheus`)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {} failed:\n{text}",
        args.join(" ")
    );
    text
}

#[test]
fn alert_rules_pass_promtool_check() {
    let out = promtool(&["check", "rules", ALERTS]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    let out = promtool(&["test", "rules", ALERT_TESTS]);
    assert!(out.contains("SUCCESS"), "{out}");
}

/// One alert rule as far as these checks need it, from a line scan of `alerts.yml`.
#[derive(Debug, Default)]
struct Alert {
    severity: Option<String>,
    runbook: Option<String>,
}

/// Alert name -> its severity and runbook, in file order of names (a `BTreeMap` for stable
/// messages). Relies on the file's plain layout: `- alert: Name`, then its keys, one per line.
fn alerts() -> BTreeMap<String, Alert> {
    let mut alerts = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in read(ALERTS).lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("- alert:") {
            let name = name.trim().to_owned();
            assert!(
                alerts.insert(name.clone(), Alert::default()).is_none(),
                "alert {name} defined twice"
            );
            current = Some(name);
        } else if let Some(name) = &current {
            let alert = alerts.get_mut(name).unwrap();
            if let Some(v) = line.strip_prefix("severity:") {
                alert.severity = Some(unquote(v));
            } else if let Some(v) = line.strip_prefix("runbook:") {
                alert.runbook = Some(unquote(v));
            }
        }
    }
    assert!(!alerts.is_empty(), "no `- alert:` lines in {ALERTS}");
    alerts
}

fn unquote(v: &str) -> String {
    v.trim().trim_matches('"').to_owned()
}

/// GitHub's anchor for a Markdown heading: lower case, spaces to `-`, other punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_alert_has_a_severity_and_a_runbook_section() {
    let readme = read(RUNBOOK);
    let anchors: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect();
    for (name, alert) in alerts() {
        let severity = alert.severity.as_deref();
        assert!(
            matches!(severity, Some("critical" | "warning")),
            "{name}: severity {severity:?}, want critical or warning"
        );
        let runbook = alert
            .runbook
            .unwrap_or_else(|| panic!("{name}: no runbook annotation"));
        let (file, section) = runbook
            .split_once('#')
            .unwrap_or_else(|| panic!("{name}: runbook {runbook} names no section"));
        assert_eq!(file, RUNBOOK, "{name}: runbook");
        assert!(
            anchors.contains(section),
            "{name}: {RUNBOOK} has no section #{section}"
        );
    }
}

#[test]
fn alert_tests_cover_every_alert_firing_and_quiet() {
    // alertname -> (cases where it fires, cases where it stays quiet). A case is an
    // `alertname:` line; the `exp_alerts:` line that follows says which kind it is.
    let mut cases: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut pending: Option<String> = None;
    for (n, line) in read(ALERT_TESTS).lines().enumerate() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("alertname:") {
            assert!(
                pending.is_none(),
                "{ALERT_TESTS}:{}: alertname without exp_alerts before it",
                n + 1
            );
            pending = Some(name.trim().to_owned());
        } else if let Some(exp) = line.strip_prefix("exp_alerts:") {
            let name = pending
                .take()
                .unwrap_or_else(|| panic!("{ALERT_TESTS}:{}: exp_alerts without alertname", n + 1));
            let entry = cases.entry(name).or_default();
            if exp.trim() == "[]" {
                entry.1 += 1;
            } else {
                entry.0 += 1;
            }
        }
    }
    let alerts = alerts();
    for name in alerts.keys() {
        let (firing, quiet) = cases.get(name).copied().unwrap_or_default();
        assert!(
            firing >= 1 && quiet >= 1,
            "{name}: {firing} firing and {quiet} quiet cases in {ALERT_TESTS}, want at least one of each"
        );
    }
    for name in cases.keys() {
        assert!(
            alerts.contains_key(name),
            "{ALERT_TESTS} tests {name}, which {ALERTS} does not define"
        );
    }
}

/// `$name` and `${name}` uses in a string.
fn variables(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(p) = rest.find('$') {
        rest = &rest[p + 1..];
        let name: String = if let Some(braced) = rest.strip_prefix('{') {
            braced.chars().take_while(|&c| c != '}').collect()
        } else {
            rest.chars()
                .take_while(|&c| c.is_ascii_alphanumeric() || c == '_')
                .collect()
        };
        out.push(name);
    }
    out
}

#[test]
fn dashboard_has_its_identity_and_variables() {
    let d = dashboard();
    assert_eq!(d["uid"], "isthmus");
    assert_eq!(d["title"], "isthmus: cross-cloud links");
    assert_eq!(d["schemaVersion"], 39);

    let vars: BTreeMap<&str, &Value> = d["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .map(|v| (v["name"].as_str().expect("variable name"), v))
        .collect();
    let names: Vec<&str> = vars.keys().copied().collect();
    assert_eq!(names, ["datasource", "instance", "job"], "variables");

    let ds = vars["datasource"];
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");

    let job = vars["job"];
    assert_eq!(job["type"], "query");
    assert_eq!(job["query"], "label_values(isthmus_build_info, job)");
    assert_eq!(job["datasource"]["uid"], "${datasource}");

    let instance = vars["instance"];
    assert_eq!(instance["type"], "query");
    assert_eq!(
        instance["query"],
        "label_values(isthmus_build_info{job=~\"$job\"}, instance)"
    );
    assert_eq!(instance["datasource"]["uid"], "${datasource}");
    assert_eq!(instance["multi"], true, "instance selects several gateways");
    assert_eq!(instance["includeAll"], true, "instance offers All");
}

#[test]
fn dashboard_queries_use_the_chosen_datasource_and_filter_by_gateway() {
    let d = dashboard();
    let queries = queries(&d);
    assert!(queries.len() >= 20, "only {} queries", queries.len());
    for (place, q) in &queries {
        assert_eq!(
            q["datasource"],
            serde_json::json!({"type": "prometheus", "uid": "${datasource}"}),
            "{place}: datasource"
        );
        let expr = q["expr"]
            .as_str()
            .unwrap_or_else(|| panic!("{place}: no expr"));
        if let Some(inner) = q["target"]["expr"].as_str() {
            assert_eq!(inner, expr, "{place}: target.expr and expr differ");
        }
        let sels = selectors(expr);
        assert!(!sels.is_empty(), "{place}: no isthmus metric in {expr}");
        for (metric, matchers) in sels {
            let matchers =
                matchers.unwrap_or_else(|| panic!("{place}: {metric} has no {{...}} in {expr}"));
            for want in ["instance=~\"$instance\"", "job=~\"$job\""] {
                assert!(
                    matchers.contains(want),
                    "{place}: {metric}{{{matchers}}} lacks {want}"
                );
            }
        }
        for var in variables(expr) {
            assert!(
                QUERY_VARIABLES.contains(&var.as_str()),
                "{place}: variable ${var} in {expr}; allowed: {QUERY_VARIABLES:?}"
            );
        }
    }
}

#[test]
fn dashboard_marks_only_the_justified_queries_as_possibly_empty() {
    let d = dashboard();
    let mut marked = BTreeSet::new();
    for panel in d["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().into_iter().flatten() {
            if t["isthmusMayBeEmpty"] == true {
                marked.insert(panel["title"].as_str().unwrap().to_owned());
            }
        }
    }
    for a in d["annotations"]["list"].as_array().expect("annotations") {
        if a["isthmusMayBeEmpty"] == true || a["target"]["isthmusMayBeEmpty"] == true {
            marked.insert(a["name"].as_str().unwrap().to_owned());
        }
    }
    let allowed: BTreeSet<String> = MAY_BE_EMPTY.iter().map(|s| s.to_string()).collect();
    assert_eq!(marked, allowed, "isthmusMayBeEmpty marks");
}

#[test]
fn dashboard_panels_have_unique_titles_descriptions_and_do_not_overlap() {
    let d = dashboard();
    let panels = d["panels"].as_array().expect("panels");
    let mut titles = BTreeSet::new();
    let mut ids = BTreeSet::new();
    let mut cells: BTreeMap<(u64, u64), String> = BTreeMap::new();
    for p in panels {
        let title = p["title"].as_str().expect("title").to_owned();
        assert!(titles.insert(title.clone()), "title {title:?} twice");
        assert!(
            ids.insert(p["id"].as_u64().expect("id")),
            "{title}: id twice"
        );
        let desc = p["description"].as_str().unwrap_or("");
        assert!(!desc.is_empty(), "{title}: no description");
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let g = &p["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| g[k].as_u64().expect("gridPos"));
        assert!(x + w <= 24 && w > 0 && h > 0, "{title}: gridPos {g}");
        for cx in x..x + w {
            for cy in y..y + h {
                if let Some(other) = cells.insert((cx, cy), title.clone()) {
                    panic!("{title} overlaps {other} at ({cx}, {cy})");
                }
            }
        }
    }
    for a in d["annotations"]["list"].as_array().expect("annotations") {
        let name = a["name"].as_str().expect("annotation name");
        assert!(
            titles.insert(name.to_owned()),
            "annotation {name:?}: name taken"
        );
    }
    assert!(
        d["annotations"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["builtIn"] == 1),
        "Grafana's built-in annotation is gone"
    );
}

/// Metric names documented in docs/metrics.md: the backquoted `isthmus_*` names of its tables.
fn documented_metrics() -> BTreeSet<String> {
    let doc = read(METRICS_DOC);
    let mut names = BTreeSet::new();
    for line in doc.lines().filter(|l| l.starts_with("| `isthmus_")) {
        let name = line
            .trim_start_matches("| `")
            .split('`')
            .next()
            .unwrap()
            .to_owned();
        if line.contains("| histogram |") {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
        names.insert(name);
    }
    assert!(names.len() > 20, "{METRICS_DOC}: only {names:?}");
    names.extend(PROCESS_METRICS.iter().map(|s| s.to_string()));
    names
}

fn assert_documented(place: &str, expr: &str, documented: &BTreeSet<String>) {
    for (metric, _) in selectors(expr) {
        assert!(
            documented.contains(&metric),
            "{place}: {metric} is not in {METRICS_DOC}"
        );
    }
}

#[test]
fn every_metric_used_is_documented() {
    let documented = documented_metrics();
    let alerts = read(ALERTS);
    let used_in_alerts = selectors(&alerts);
    assert!(used_in_alerts.len() >= 10, "{used_in_alerts:?}");
    assert_documented(ALERTS, &alerts, &documented);
    let d = dashboard();
    for (place, q) in queries(&d) {
        assert_documented(&place, q["expr"].as_str().unwrap(), &documented);
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"].as_str() {
            assert_documented(&format!("variable {}", v["name"]), q, &documented);
        }
    }
}

#[test]
fn selector_scan_finds_names_and_matchers() {
    let sels = selectors(
        "sum by (instance) (rate(isthmus_link_rtt_seconds_bucket{instance=~\"$instance\"}[5m])) \
         / process_open_fds",
    );
    assert_eq!(
        sels,
        [
            (
                "isthmus_link_rtt_seconds_bucket".to_owned(),
                Some("instance=~\"$instance\"".to_owned())
            ),
            ("process_open_fds".to_owned(), None),
        ]
    );
    assert_eq!(
        variables("a $job ${datasource} [$__rate_interval]"),
        ["job", "datasource", "__rate_interval"]
    );
    assert_eq!(anchor(" IsthmusAgentDown"), "isthmusagentdown");
    assert_eq!(anchor("Load the rules"), "load-the-rules");
    // The repository layout these tests read.
    assert!(path(DASHBOARD).exists());
}
