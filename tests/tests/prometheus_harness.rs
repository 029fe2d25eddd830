//! The Prometheus harness itself: a real Prometheus in a test namespace, scraping its own
//! metrics as job `isthmus`, queried through the in-namespace HTTP client.

use std::net::SocketAddr;
use std::time::Duration;

use isthmus_tests::{http_get_response, promtool_check_metrics, Netns, Prometheus};

#[test]
fn prometheus_scrapes_itself_in_a_namespace() {
    isthmus_tests::require_root();
    // Declared first, dropped last: Prometheus runs inside it.
    let ns = Netns::new("prom");
    let own: SocketAddr = "127.0.0.1:9090".parse().unwrap();
    let prom = Prometheus::start(&ns, &[own], &[]);
    assert_eq!(prom.addr(), own);

    prom.wait_targets_up(Duration::from_secs(15));
    assert!(prom.targets_up());

    // The first scrape has happened, so `up` has a sample (evaluation is instant).
    let up = prom.query("up{job=\"isthmus\"}");
    let up = up.as_array().expect("a vector");
    assert_eq!(up.len(), 1, "one target: {up:?}");
    assert_eq!(up[0]["metric"]["job"], "isthmus");
    assert_eq!(up[0]["metric"]["instance"], own.to_string());
    assert_eq!(up[0]["value"][1], "1", "{up:?}");
    assert_eq!(prom.query_f64("sum(up)"), Some(1.0));
    assert_eq!(prom.query_f64("scalar(sum(up))"), Some(1.0));
    assert_eq!(prom.query_f64("up{job=\"no such job\"}"), None);

    let series = prom.series("up");
    assert!(!series.is_empty());
    assert!(series.iter().all(|s| s["__name__"] == "up"), "{series:?}");

    assert!(prom.alerts().is_empty());

    // The scrape endpoint, fetched from inside the namespace (and only there: the host has no
    // route to the namespace's loopback).
    let r = http_get_response(&ns, own, "/metrics", Duration::from_secs(5)).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.contains("prometheus_build_info"), "{}", r.body);
    assert!(r.elapsed > Duration::ZERO && r.elapsed < Duration::from_secs(5));
    eprintln!(
        "/metrics: {} bytes in {:?} (chunked: {})",
        r.body.len(),
        r.elapsed,
        r.was_chunked()
    );
    // Prometheus's own metrics may have lint findings; only that promtool ran and parsed them.
    let (_ok, out) = promtool_check_metrics(&r.body);
    assert!(!out.contains("error while linting"), "{out}");

    // promtool does report problems in what it is given.
    let (ok, out) = promtool_check_metrics("# TYPE foo counter\nfoo 1\n");
    assert!(!ok && out.contains("foo"), "{out}");
    let (ok, out) = promtool_check_metrics(
        "# HELP isthmus_good_total A good counter.\n# TYPE isthmus_good_total counter\n\
         isthmus_good_total 1\n",
    );
    assert!(ok && out.trim().is_empty(), "{out}");
}

#[test]
fn prometheus_loads_rule_files_and_reports_alerts() {
    isthmus_tests::require_root();
    let ns = Netns::new("promr");
    let rules_dir = tempfile::tempdir().unwrap();
    let rules = rules_dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: harness\n    rules:\n      - alert: HarnessAlwaysFiring\n        \
         expr: vector(1)\n        labels:\n          severity: test\n",
    )
    .unwrap();
    let own: SocketAddr = "127.0.0.1:9090".parse().unwrap();
    let prom = Prometheus::start(&ns, &[own], &[rules]);
    prom.wait_for(
        "HarnessAlwaysFiring to fire",
        Duration::from_secs(10),
        |p| {
            p.alerts().iter().any(|a| {
                a["labels"]["alertname"] == "HarnessAlwaysFiring" && a["state"] == "firing"
            })
        },
    );
    let alerts = prom.alerts();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["labels"]["severity"], "test");
}

#[test]
#[should_panic(expected = "prometheus exited before it was ready")]
fn prometheus_with_a_broken_rule_file_fails_fast() {
    isthmus_tests::require_root();
    let ns = Netns::new("promb");
    let rules_dir = tempfile::tempdir().unwrap();
    let rules = rules_dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups: [{name: x, rules: [{alert: A, expr: 'up{'}]}]\n",
    )
    .unwrap();
    let _prom = Prometheus::start(&ns, &[], &[rules]);
}
