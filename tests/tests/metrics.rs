//! Metrics end to end: a real Prometheus (Debian's) scrapes agentd on both gateways of the
//! two-cloud test bed, with the shipped alert rules loaded. After a failover, every query of the
//! shipped Grafana dashboard returns data through Prometheus's HTTP API, every series selector
//! of the alert rules matches series, and the link-down alert fires.
//!
//! Prometheus runs in the AWS app namespace, as a monitoring host in the app VPC would: it
//! reaches the AWS gateway directly and the OCI gateway through the tunnels, so the scrape of the
//! far side follows the failover too.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use isthmus_tests::monitoring;
use isthmus_tests::topology::{TwoClouds, VPCS};
use isthmus_tests::{http_get, http_get_response, promtool_check_metrics, repo_root, Prometheus};

const UP: Duration = Duration::from_secs(20);

fn metrics_addr(side: usize) -> SocketAddr {
    format!("{}:9477", VPCS[side].1).parse().unwrap()
}

/// The AWS side also checks two targets behind the tunnel (one answers, one refuses) and
/// prices its internet link, so that every family has series.
fn configure(clouds: &TwoClouds) {
    for (i, side) in [&clouds.aws, &clouds.oci].into_iter().enumerate() {
        side.fx
            .set("metrics", "listen", metrics_addr(i).to_string().into());
    }
    let listener = format!("{}:1522", VPCS[1].2);
    clouds.aws.fx.set_probes(
        &[
            ("db-ping", "icmp", VPCS[1].2),
            ("db-listener", "tcp", &listener),
        ],
        "500ms",
        "300ms",
    );
    let path = clouds.aws.fx.config_path();
    let mut doc: toml::Table = std::fs::read_to_string(path).unwrap().parse().unwrap();
    for link in doc["link"].as_array_mut().unwrap() {
        let link = link.as_table_mut().unwrap();
        if link["name"].as_str() == Some("internet") {
            link.insert("egress_price_per_gb".into(), 0.09.into());
        }
    }
    clouds.aws.fx.write_config(&toml::to_string(&doc).unwrap());
}

#[test]
fn prometheus_scrapes_both_gateways_dashboard_queries_answer_and_the_link_down_alert_fires() {
    let clouds = TwoClouds::new("mx").with_apps();
    configure(&clouds);
    let (_aws, _oci) = clouds.start_agents();
    let monitor = clouds.aws_app();

    // The endpoints themselves, as a scraper sees them.
    for side in 0..2 {
        let (status, body) = http_get(
            monitor,
            metrics_addr(side),
            "/healthz",
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(status, 200, "{body}");
        let health: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(health["healthy"], true, "{body}");
        assert_eq!(health["links"]["interconnect"], "ok", "{body}");
        let (status, text) = http_get(
            monitor,
            metrics_addr(side),
            "/metrics",
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(status, 200);
        let (ok, problems) = promtool_check_metrics(&text);
        assert!(
            ok && problems.trim().is_empty(),
            "promtool check metrics:\n{problems}"
        );
        let (status, _) = http_get(
            monitor,
            metrics_addr(side),
            "/nothing",
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(status, 404);
    }

    let rules = repo_root().join("docs/prometheus/alerts.yml");
    let prom = Prometheus::start(
        monitor,
        &[metrics_addr(0), metrics_addr(1)],
        std::slice::from_ref(&rules),
    );
    prom.wait_targets_up(Duration::from_secs(30));
    // Both gateways on the interconnect, as Prometheus sees them.
    prom.wait_for(
        "both gateways reported active on the interconnect",
        UP,
        |p| {
            p.query(r#"isthmus_group_active_link{group="remote",link="interconnect"} == 1"#)
                .as_array()
                .unwrap()
                .len()
                == 2
        },
    );

    // The failover.
    let cut_at = Instant::now();
    clouds.cut_interconnect(true);
    for side in [&clouds.aws, &clouds.oci] {
        side.wait_active("remote", "internet", UP);
    }
    println!(
        "both gateways moved to the internet link after {:?}",
        cut_at.elapsed()
    );
    // Some traffic through the tunnel, for the throughput panels.
    assert!(clouds
        .aws_app()
        .command("ping")
        .args(["-c", "5", "-i", "0.2", "-W", "1", VPCS[1].2])
        .status()
        .unwrap()
        .success());
    prom.wait_for("Prometheus saw the failover on both gateways", UP, |p| {
        p.query(r#"isthmus_group_failovers_total{group="remote",reason="active_down"} >= 1"#)
            .as_array()
            .unwrap()
            .len()
            == 2
    });
    // Two scrapes after the switch, so that rate() over it has points on both sides.
    std::thread::sleep(Duration::from_secs(3));

    check_values(&prom);
    check_dashboard(&prom);
    check_alert_selectors(&prom, &std::fs::read_to_string(&rules).unwrap());

    // The interconnect has been down for over a minute: IsthmusLinkDown fires, for both
    // gateways' interconnect link, and for no other link.
    prom.wait_for(
        "IsthmusLinkDown firing for the interconnect on both gateways",
        Duration::from_secs(120),
        |p| firing(p, "IsthmusLinkDown").len() == 2,
    );
    for alert in firing(&prom, "IsthmusLinkDown") {
        assert_eq!(alert["labels"]["link"], "interconnect", "{alert:#}");
        assert_eq!(alert["labels"]["severity"], "warning", "{alert:#}");
    }
    // Nothing that should be quiet fires: the group still has a link, the agents are up.
    for quiet in [
        "IsthmusAgentDown",
        "IsthmusGroupNoActiveLink",
        "IsthmusActionFailures",
        "IsthmusActionNotInSync",
        "IsthmusHookFailing",
    ] {
        assert!(
            firing(&prom, quiet).is_empty(),
            "{quiet} fires: {:#?}",
            prom.alerts()
        );
    }
    println!("IsthmusLinkDown fired {:?} after the cut", cut_at.elapsed());
    clouds.restore_interconnect();
}

fn firing(prom: &Prometheus, name: &str) -> Vec<serde_json::Value> {
    prom.alerts()
        .into_iter()
        .filter(|a| a["labels"]["alertname"] == name && a["state"] == "firing")
        .collect()
}

/// A few values that must be right, not just present.
fn check_values(prom: &Prometheus) {
    let one = |q: &str| {
        prom.query_f64(q)
            .unwrap_or_else(|| panic!("no data for {q}"))
    };
    let aws = format!("{}:9477", VPCS[0].1);
    let on = |metric: &str| format!(r#"{metric}{{instance="{aws}"}}"#);
    assert_eq!(
        one(&format!(
            r#"isthmus_link_up{{instance="{aws}",link="interconnect"}}"#
        )),
        0.0
    );
    assert_eq!(
        one(&format!(
            r#"isthmus_link_up{{instance="{aws}",link="internet"}}"#
        )),
        1.0
    );
    assert_eq!(
        one(&format!(
            r#"isthmus_link_state{{instance="{aws}",link="interconnect",state="down"}}"#
        )),
        1.0
    );
    assert_eq!(one(&on("isthmus_group_on_backup")), 1.0);
    assert_eq!(one(&on("isthmus_group_up")), 1.0);
    assert!(
        one(&format!(
            r#"isthmus_link_rtt_seconds_count{{instance="{aws}",link="internet"}}"#
        )) > 10.0
    );
    assert_eq!(
        one(&format!(
            r#"isthmus_target_up{{instance="{aws}",target="db-ping"}}"#
        )),
        1.0
    );
    assert_eq!(
        one(&format!(
            r#"isthmus_target_up{{instance="{aws}",target="db-listener"}}"#
        )),
        0.0
    );
    assert!(
        one(&format!(
            r#"isthmus_target_probe_failures_total{{instance="{aws}",target="db-listener",reason="refused"}}"#
        )) >= 1.0
    );
    assert!(
        one(&format!(
            r#"isthmus_link_egress_cost_total{{instance="{aws}",link="internet"}}"#
        )) > 0.0
    );
    assert!(
        one(&format!(
            r#"isthmus_actions_total{{instance="{aws}",action="route",result="success"}}"#
        )) >= 2.0
    );
    // The test's own netctl calls.
    assert!(
        one(&format!(
            r#"sum(isthmus_control_requests_total{{instance="{aws}",endpoint="/v1/status",status="200"}})"#
        )) >= 1.0
    );
    assert!(one(&on("process_resident_memory_bytes")) > 1e6);
    let info = prom.query(r#"isthmus_build_info{agent="aws-gw"}"#);
    assert_eq!(info.as_array().unwrap().len(), 1, "{info:#}");
    // The egress price shows in no label or value of the other link.
    assert!(prom
        .query(&format!(
            r#"isthmus_link_egress_cost_total{{instance="{aws}",link="interconnect"}}"#
        ))
        .as_array()
        .unwrap()
        .is_empty());
}

/// Every query of the dashboard's panels and annotations, with its variables filled in as
/// Grafana would, returns data (targets marked `isthmusMayBeEmpty` may be empty in a healthy
/// lab: no drops, no action failures).
fn check_dashboard(prom: &Prometheus) {
    let text = std::fs::read_to_string(repo_root().join("docs/grafana/isthmus.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut queries = Vec::new();
    collect_panel_queries(&dash["panels"], &mut queries);
    for a in dash["annotations"]["list"].as_array().unwrap() {
        if let Some(expr) = a["expr"].as_str() {
            let name = a["name"].as_str().unwrap_or("annotation");
            queries.push((format!("annotation {name}"), expr.to_owned(), false));
        }
    }
    assert!(
        queries.len() >= 10,
        "only {} dashboard queries",
        queries.len()
    );
    let mut empty = Vec::new();
    for (title, expr, may_be_empty) in &queries {
        let q = expr
            .replace("$__rate_interval", "1m")
            .replace("$__interval", "1m")
            .replace("$instance", ".*")
            .replace("$job", ".*");
        let result = prom.query(&q);
        let n = result.as_array().map_or(1, Vec::len);
        println!("{n:>3} series  {title}: {q}");
        if n == 0 && !may_be_empty {
            empty.push(format!("{title}: {q}"));
        }
    }
    assert!(
        empty.is_empty(),
        "dashboard queries without data:\n{}",
        empty.join("\n")
    );
}

fn collect_panel_queries(panels: &serde_json::Value, out: &mut Vec<(String, String, bool)>) {
    for p in panels.as_array().into_iter().flatten() {
        let title = p["title"].as_str().unwrap_or("?").to_owned();
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = t["expr"].as_str() {
                let may = t["isthmusMayBeEmpty"].as_bool().unwrap_or(false);
                out.push((title.clone(), expr.to_owned(), may));
            }
        }
        collect_panel_queries(&p["panels"], out);
    }
}

/// Metrics of alert rules that have no series in this lab, and why: the test bed configures no
/// DNS groups, cloud route tables, hooks or route-group `checks`. Their rules are checked by
/// `promtool test rules` (tests/rules.rs) instead.
const ALERT_METRICS_MAY_BE_EMPTY: &[&str] = &[
    // Only DNS groups and `aws_route_tables` / `oci_route_tables` are action targets.
    "isthmus_action_in_sync",
    // Only route groups with `checks`.
    "isthmus_group_checks_failing_everywhere",
    // Only `[[dns_group]]`s.
    "isthmus_dns_group_no_answer_passes",
    // Only gateways with a `[[hook]]`.
    "isthmus_hook_runs_total",
    // Only gateways with `[ha]` (tests/tests/ha.rs checks them on a pair).
    "isthmus_ha_store_up",
];

/// Every series selector in the alert rules' expressions matches series in Prometheus (but
/// those of [`ALERT_METRICS_MAY_BE_EMPTY`]).
fn check_alert_selectors(prom: &Prometheus, rules: &str) {
    let exprs = alert_exprs(rules);
    assert!(exprs.len() >= 8, "only {} alert expressions", exprs.len());
    let mut missing = Vec::new();
    for expr in &exprs {
        for selector in selectors(expr) {
            let n = prom.series(&selector).len();
            println!("{n:>3} series  {selector}");
            let metric = selector.split('{').next().unwrap_or_default();
            if n == 0 && !ALERT_METRICS_MAY_BE_EMPTY.contains(&metric) {
                missing.push(format!("{selector}  (in {expr})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "alert selectors without series:\n{}",
        missing.join("\n")
    );
}

/// The `expr:` of each rule in a rules file, single-line or block (`|`, `>`) style.
fn alert_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("expr:") {
            let rest = rest.trim();
            if rest.starts_with('|') || rest.starts_with('>') {
                let indent = line.len() - trimmed.len();
                let mut block = String::new();
                i += 1;
                while i < lines.len() {
                    let l = lines[i];
                    let ind = l.len() - l.trim_start().len();
                    if !l.trim().is_empty() && ind <= indent {
                        break;
                    }
                    block.push_str(l.trim());
                    block.push(' ');
                    i += 1;
                }
                out.push(block.trim().to_owned());
                continue;
            }
            out.push(rest.trim_matches(|c| c == '\'' || c == '"').to_owned());
        }
        i += 1;
    }
    out
}

/// The series selectors of a PromQL expression: metric names of isthmus, the process collector
/// and `up`, with their label matchers. Strings and label lists are skipped.
fn selectors(expr: &str) -> Vec<String> {
    let b = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' {
            i += 1;
            while i < b.len() && b[i] != c {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                i += 1;
            }
            let name = &expr[start..i];
            let metric =
                name.starts_with("isthmus_") || name.starts_with("process_") || name == "up";
            let mut j = i;
            while j < b.len() && b[j] == b' ' {
                j += 1;
            }
            let mut selector = name.to_owned();
            if j < b.len() && b[j] == b'{' {
                let end = expr[j..].find('}').map_or(b.len(), |k| j + k + 1);
                selector.push_str(&expr[j..end]);
                i = end;
            }
            // `up` only as a metric, not inside another word or as a label in `by (...)`.
            if metric && !(name == "up" && selector == "up" && !expr.trim().starts_with("up")) {
                out.push(selector);
            }
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn selector_extraction_finds_metrics_with_their_matchers() {
    assert_eq!(
        selectors(
            r#"sum by (instance, group) (increase(isthmus_group_failovers_total{reason!="first_usable"}[15m])) >= 4"#
        ),
        vec![r#"isthmus_group_failovers_total{reason!="first_usable"}"#]
    );
    assert_eq!(
        selectors(r#"isthmus_link_up == 0 unless on (instance, link) isthmus_link_drained == 1"#),
        vec!["isthmus_link_up", "isthmus_link_drained"]
    );
    assert_eq!(
        selectors(r#"up{job="isthmus"} == 0"#),
        vec![r#"up{job="isthmus"}"#]
    );
    assert_eq!(
        alert_exprs("  - alert: A\n    expr: up == 0\n  - alert: B\n    expr: |\n      a\n      > 1\n    for: 1m\n"),
        vec!["up == 0", "a > 1"]
    );
}

/// `/healthz` reflects the data plane: with the example config in an empty namespace the
/// links cannot bind their underlay addresses, so it answers 503 and says why; once the
/// addresses exist, agentd's retry brings the links up and it answers 200. A reload that moves
/// `[metrics].listen` moves the listener; the metrics say what happened.
#[test]
fn healthz_follows_the_data_plane_and_a_reload_moves_the_listener() {
    let ns = isthmus_tests::Netns::new("mh");
    let fx = isthmus_tests::Fixture::example("aws-gateway.toml");
    let _agentd = isthmus_tests::Agentd::start(&fx, &ns);
    let first: SocketAddr = "127.0.0.1:9477".parse().unwrap();
    let get = |addr: SocketAddr, path: &str| {
        http_get(&ns, addr, path, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("GET {addr}{path}: {e}"))
    };

    let (status, body) = get(first, "/healthz");
    assert_eq!(status, 503, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["healthy"], false);
    assert!(health["event_loop_ms"].as_f64().unwrap() < 1000.0, "{body}");
    let why = health["links"]["interconnect"].as_str().unwrap();
    assert!(why.starts_with("not running:"), "{body}");
    let (status, text) = get(first, "/metrics");
    assert_eq!(status, 200);
    assert!(
        text.contains("isthmus_link_up{link=\"interconnect\"} 0\n"),
        "{text}"
    );
    assert!(
        text.contains("isthmus_group_up{group=\"oci-vcn\"} 0\n"),
        "{text}"
    );

    // The underlay addresses appear; the 5-second retry starts the links.
    ns.add_addresses(&["192.0.2.1/24", "198.51.100.1/24"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = get(first, "/healthz");
        if status == 200 {
            let health: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(health["links"]["internet"], "ok", "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "still unhealthy: {body}");
        std::thread::sleep(Duration::from_millis(250));
    }

    // Unknown path; gzip for a client that asks (as Prometheus does), plain text otherwise.
    assert_eq!(get(first, "/").0, 404);
    let gz = isthmus_tests::http_get_gzip(&ns, first, "/metrics", Duration::from_secs(5)).unwrap();
    assert_eq!(
        gz.header("content-encoding"),
        Some("gzip"),
        "{:?}",
        gz.headers
    );
    let plain = http_get_response(&ns, first, "/metrics", Duration::from_secs(5)).unwrap();
    assert_eq!(plain.header("content-encoding"), None);
    assert!(
        gz.body_bytes * 3 < plain.body_bytes,
        "gzip {} bytes, plain {}",
        gz.body_bytes,
        plain.body_bytes
    );

    // Garbage and idle clients: a 400 for what is not HTTP, a 503 beyond the connection cap,
    // idle connections closed after the header timeout, and the scrape answers all along.
    let garbage = ns.run_in(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(first).unwrap();
        s.write_all(b"\x16\x03\x01 not http at all\r\n\r\n")
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer
    });
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage:?}");
    let idle = ns.run_in(move || {
        (0..8)
            .map(|_| std::net::TcpStream::connect(first).unwrap())
            .collect::<Vec<_>>()
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(get(first, "/metrics").0, 503, "a ninth client past the cap");
    let closed_at = Instant::now();
    loop {
        if get(first, "/metrics").0 == 200 {
            break;
        }
        assert!(
            closed_at.elapsed() < Duration::from_secs(10),
            "idle connections still hold every slot"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    println!("idle clients released after {:?}", closed_at.elapsed());
    drop(idle);

    // Names from requests never become labels, and no key material shows.
    let out = isthmus_tests::netctl(
        &fx.socket(),
        &[
            "failover",
            "zz-untrusted-group",
            "--to",
            "internet",
            "--reason",
            "x",
            "--yes",
        ],
    );
    assert_ne!(out.code, 0);
    let (_, text) = get(first, "/metrics");
    assert!(!text.contains("zz-untrusted"), "{text}");
    assert!(
        text.contains(
            "isthmus_control_requests_total{endpoint=\"/v1/groups/{group}/failover\",status=\"404\"} 1\n"
        ),
        "{text}"
    );
    for key in ["private.key", "interconnect.psk", "internet.psk"] {
        let secret = std::fs::read_to_string(fx.dir().join(key)).unwrap();
        assert!(!text.contains(secret.trim()), "{key} appears in /metrics");
    }

    let status = isthmus_tests::netctl(&fx.socket(), &["status"]);
    assert!(
        status
            .stdout
            .contains("metrics  http://127.0.0.1:9477/metrics"),
        "{}",
        status.stdout
    );

    // An address the host does not have: netctl says so (and agentd retries), the rest runs.
    fx.set("metrics", "listen", "192.0.2.99:9477".into());
    let out = isthmus_tests::netctl(&fx.socket(), &["reload"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = isthmus_tests::netctl(&fx.socket(), &["--json", "status"]).json();
        if status["agent"]["metrics"]["listening"] == false {
            assert_eq!(status["agent"]["metrics"]["listen"], "192.0.2.99:9477");
            assert!(
                status["agent"]["metrics"]["error"]
                    .as_str()
                    .unwrap()
                    .contains("address"),
                "{status:#}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{status:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = isthmus_tests::netctl(&fx.socket(), &["status"]);
    assert!(
        status
            .stdout
            .contains("metrics NOT LISTENING on 192.0.2.99:9477"),
        "{}",
        status.stdout
    );

    // Move the listener.
    let second: SocketAddr = "127.0.0.1:9478".parse().unwrap();
    fx.set("metrics", "listen", second.to_string().into());
    let out = isthmus_tests::netctl(&fx.socket(), &["reload"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        match http_get(&ns, second, "/metrics", Duration::from_secs(2)) {
            Ok((200, text)) => break text,
            other => assert!(Instant::now() < deadline, "{second}: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        http_get(&ns, first, "/metrics", Duration::from_secs(2)).is_err(),
        "{first} still answers after the reload"
    );
    for line in [
        "isthmus_config_reloads_total{result=\"applied\"} 2\n",
        "isthmus_config_last_reload_successful 1\n",
        "isthmus_control_requests_total{endpoint=\"/v1/reload\",status=\"200\"} 2\n",
    ] {
        assert!(text.contains(line), "no {line:?} in\n{text}");
    }
    let (ok, problems) = promtool_check_metrics(&text);
    assert!(
        ok && problems.trim().is_empty(),
        "promtool check metrics:\n{problems}"
    );
}

/// Families the dashboard or the alert rules use that have no series on a fresh start, and why:
/// each is a measurement or a state, and before there is one no value would be true (0 would
/// claim a jitter of zero, a failing check, or a success in 1970), and the alerts on them compare
/// values, not increases. Every counter is there from the start, at 0, so that `increase()`
/// and `rate()` see the first event too.
const ABSENT_UNTIL_MEASURED: &[&str] = &[
    // Needs two probe replies.
    "isthmus_link_jitter_seconds",
    // Unknown until the target's first check finished; 0 means "failing" (IsthmusTargetFailing).
    "isthmus_target_up",
    // Unknown until the first check of the group finished; 0 means "failing".
    "isthmus_group_link_checks_passing",
    // Whether a target holds agentd's decision: there is none before the first (a DNS group's
    // first answer, a route group's first active link); 0 would page IsthmusActionNotInSync
    // for a target agentd never meant to touch.
    "isthmus_action_in_sync",
    // Absent until the first success: there is no time to give.
    "isthmus_action_last_success_timestamp_seconds",
];

/// Series of a Prometheus text scrape: family name -> sample lines (`name{labels} value`).
fn scrape_families(text: &str) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut types = std::collections::BTreeMap::new();
    let mut samples: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            types.insert(name.to_owned(), kind.to_owned());
            samples.entry(name.to_owned()).or_default();
        } else if !line.starts_with('#') && !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = monitoring::family_of(name, &types);
            samples
                .entry(family.to_owned())
                .or_default()
                .push(line.to_owned());
        }
    }
    samples
}

/// The first scrape of an agentd that has done nothing yet (its links cannot even bind: the
/// namespace has no underlay addresses) has every counter and gauge that a dashboard panel or an
/// alert rule uses, with a zero series for every label set the config determines.
#[test]
fn the_first_scrape_has_every_family_the_dashboard_and_the_alerts_use() {
    let ns = isthmus_tests::Netns::new("mz");
    let fx = isthmus_tests::Fixture::example("aws-gateway.toml");
    let _agentd = isthmus_tests::Agentd::start(&fx, &ns);
    let (status, text) = http_get(
        &ns,
        "127.0.0.1:9477".parse().unwrap(),
        "/metrics",
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(status, 200);
    let families = scrape_families(&text);
    let types = monitoring::documented_types();

    let used = monitoring::metrics_used();
    assert!(used.len() >= 30, "{used:?}");
    let mut missing = Vec::new();
    for (name, place) in &used {
        let family = monitoring::family_of(name, &types);
        if ABSENT_UNTIL_MEASURED.contains(&family) || monitoring::HA_FAMILIES.contains(&family) {
            continue;
        }
        let kind = types.get(family).map_or("process", String::as_str);
        let present = families.get(family).is_some_and(|s| !s.is_empty());
        println!(
            "{:>8} {:<7} {family} ({place})",
            if present { "present" } else { "MISSING" },
            kind
        );
        if !present {
            missing.push(format!("{family} ({kind}, used in {place})"));
        }
    }
    assert!(
        missing.is_empty(),
        "not on the first scrape:\n{}\n\n{text}",
        missing.join("\n")
    );
    for name in ABSENT_UNTIL_MEASURED {
        assert!(
            used.iter().any(|(n, _)| n == name),
            "{name} is allowed to be absent but no dashboard query or alert uses it"
        );
    }

    // Every label set the config determines, at 0 (the example: links interconnect and
    // internet, route group oci-vcn, hook page-oncall, DNS groups orders-db and orders-db-r53,
    // two AWS route tables). Registered families list labels in alphabetical order.
    let zero = |series: String| {
        assert!(
            text.contains(&format!("{series} 0\n")),
            "no {series} 0 in\n{text}"
        );
    };
    for link in ["interconnect", "internet"] {
        for reason in ["malformed", "version", "forged", "replayed"] {
            zero(format!(
                r#"isthmus_link_probe_dropped_total{{link="{link}",reason="{reason}"}}"#
            ));
        }
        for reason in ["bad_mac", "replay", "no_route", "under_load"] {
            zero(format!(
                r#"isthmus_link_dropped_packets_total{{link="{link}",reason="{reason}"}}"#
            ));
        }
        zero(format!(
            r#"isthmus_link_receive_bytes_total{{link="{link}"}}"#
        ));
        zero(format!(
            r#"isthmus_link_transmit_bytes_total{{link="{link}"}}"#
        ));
    }
    for reason in ["active_down", "manual", "checks_failing"] {
        zero(format!(
            r#"isthmus_group_failovers_total{{group="oci-vcn",reason="{reason}"}}"#
        ));
    }
    for result in ["ok", "failed", "timeout", "dropped"] {
        zero(format!(
            r#"isthmus_hook_runs_total{{hook="page-oncall",result="{result}"}}"#
        ));
    }
    for (kind, target) in [
        ("dns", "orders-db"),
        ("dns", "orders-db-r53"),
        ("aws_route_table", "rtb-0a1b2c3d"),
        ("aws_route_table", "rtb-0a1b2c3e"),
    ] {
        for result in ["changed", "conflict", "auth", "throttled", "not_verified"] {
            zero(format!(
                r#"isthmus_action_results_total{{kind="{kind}",result="{result}",target="{target}"}}"#
            ));
        }
    }
    for action in ["route", "dns", "aws_route_table", "hook"] {
        zero(format!(
            r#"isthmus_actions_total{{action="{action}",result="failure"}}"#
        ));
    }
    let (ok, problems) = promtool_check_metrics(&text);
    assert!(
        ok && problems.trim().is_empty(),
        "promtool check metrics:\n{problems}"
    );
}
