//! Service checks end to end: the two-cloud test bed with a database listener in the OCI app
//! namespace (10.2.0.10:1521), checked by the AWS gateway's route group over each link.
//!
//! - A changed security list (nftables on the OCI gateway dropping the check's TCP arriving
//!   over the interconnect tunnel) makes the service unreachable over that link only, while the
//!   peer probes still answer: both gateways move to the internet link (the OCI gateway, which
//!   checks nothing, because the AWS gateway says so in its probes), and move back after
//!   `failback_after` once the drop is gone.
//! - A database that stops answering over every link is a fault behind the tunnels: the routes
//!   stay, and agentd says why (event, `netctl status`, metric).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use isthmus_tests::topology::{now_ms, switch_at, Side, TwoClouds, VPCS};
use isthmus_tests::{http_get, netctl, Agentd, Netns, TcpService};

const DB_PORT: u16 = 1521;
const METRICS: &str = "127.0.0.1:9477";
/// Generous: a shared 2-core machine.
const SWITCH: Duration = Duration::from_secs(20);

fn db_addr() -> SocketAddr {
    format!("{}:{DB_PORT}", VPCS[1].2).parse().unwrap()
}

/// The test bed with the database listening and the AWS gateway's group checking it.
struct Bed {
    clouds: TwoClouds,
    _db: TcpService,
    _aws: Agentd,
    _oci: Agentd,
}

fn start(tag: &str) -> Bed {
    let clouds = TwoClouds::new(tag).with_apps();
    let db = TcpService::start(clouds.oci_app(), db_addr());
    let fx = &clouds.aws.fx;
    fx.set_probes(&[("db", "tcp", &db_addr().to_string())], "500ms", "400ms");
    let mut doc: toml::Table = std::fs::read_to_string(fx.config_path())
        .unwrap()
        .parse()
        .unwrap();
    doc["route_group"].as_array_mut().unwrap()[0]
        .as_table_mut()
        .unwrap()
        .insert("checks".into(), toml::Value::Array(vec!["db".into()]));
    fx.write_config(&toml::to_string(&doc).unwrap());
    fx.set("metrics", "listen", METRICS.into());
    let (aws, oci) = clouds.start_agents();
    let bed = Bed {
        clouds,
        _db: db,
        _aws: aws,
        _oci: oci,
    };
    bed.wait_checks(&[("interconnect", "pass"), ("internet", "pass")]);
    bed
}

impl Bed {
    /// Wait until the AWS gateway's own verdicts of group `remote` over each link are these.
    fn wait_checks(&self, want: &[(&str, &str)]) {
        let deadline = Instant::now() + SWITCH;
        loop {
            let status = netctl(&self.clouds.aws.fx.socket(), &["--json", "status"]).json();
            let group = status["route_groups"]
                .as_array()
                .unwrap()
                .iter()
                .find(|g| g["name"] == "remote")
                .cloned()
                .unwrap();
            let got = |link: &str| {
                group["checks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|c| c["link"] == link)
                    .map(|c| c["own"].clone())
            };
            if want.iter().all(|(l, s)| got(l).is_some_and(|v| v == *s)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "checks never became {want:?}: {group:#}\nprobes: {}",
                netctl(&self.clouds.aws.fx.socket(), &["probes"]).stdout
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn metrics(&self) -> String {
        let (status, body) = http_get(
            &self.clouds.aws.ns,
            METRICS.parse().unwrap(),
            "/metrics",
            Duration::from_secs(5),
        )
        .expect("scraping the AWS gateway");
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// Load an nftables ruleset into a namespace.
fn nft(ns: &Netns, ruleset: &str) {
    use std::io::Write;
    let mut child = ns
        .command("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("nft");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(ruleset.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "nft rejected:\n{ruleset}");
}

fn nft_delete(ns: &Netns, table: &str) {
    let ok = ns
        .command("nft")
        .args(["delete", "table", "inet", table])
        .status()
        .expect("nft");
    assert!(ok.success(), "nft delete table inet {table}");
}

/// Both links still `up` on a side.
fn assert_links_up(side: &Side) {
    for link in ["interconnect", "internet"] {
        let l = side.link(link);
        assert_eq!(l["state"], "up", "{}: {l:#}", side.name);
    }
}

#[test]
fn checks_failing_over_the_active_link_only_move_both_gateways_and_they_fail_back() {
    let bed = start("ck");
    let clouds = &bed.clouds;
    let tun = clouds.interface(0);

    // A security list that no longer admits the database port from the interconnect.
    let cut = now_ms();
    nft(
        &clouds.oci.ns,
        &format!(
            "table inet seclist {{\n  chain forward_db {{\n    type filter hook forward priority 0;\n    \
             iifname \"{tun}\" tcp dport {DB_PORT} drop\n  }}\n}}\n"
        ),
    );
    clouds.aws.wait_active("remote", "internet", SWITCH);
    clouds.oci.wait_active("remote", "internet", SWITCH);
    for side in [&clouds.aws, &clouds.oci] {
        // The tunnel itself is fine: the probes never failed.
        assert_links_up(side);
        let events = side.events();
        let moved = events
            .iter()
            .find(|e| {
                e["kind"] == "active_link_changed"
                    && e["to"] == "internet"
                    && e["unix_ms"].as_u64().is_some_and(|t| t >= cut)
            })
            .unwrap_or_else(|| panic!("{}: no switch event: {events:#?}", side.name));
        assert_eq!(moved["from"], "interconnect", "{}: {moved:#}", side.name);
        assert!(
            moved["reason"]
                .as_str()
                .unwrap()
                .contains("service checks fail"),
            "{}: {moved:#}",
            side.name
        );
        assert!(
            !events
                .iter()
                .any(|e| e["kind"] == "checks_failing" && e["unix_ms"].as_u64() >= Some(cut)),
            "{}: the checks pass over the internet link: {events:#?}",
            side.name
        );
    }
    bed.wait_checks(&[("interconnect", "fail"), ("internet", "pass")]);
    // The OCI gateway knows why: the AWS gateway's verdict over the interconnect.
    let oci_status = netctl(&clouds.oci.fx.socket(), &["status"]);
    assert!(
        oci_status
            .stdout
            .contains("checks fail over interconnect (here: "),
        "{}",
        oci_status.stdout
    );
    // Traffic flows over the internet link.
    assert!(clouds
        .aws_app()
        .command("ping")
        .args(["-c", "3", "-i", "0.2", "-W", "2", "-q", VPCS[1].2])
        .output()
        .unwrap()
        .status
        .success());
    let text = bed.metrics();
    assert!(
        text.contains("isthmus_group_checks_failing_everywhere{")
            && !text.lines().any(
                |l| l.starts_with("isthmus_group_checks_failing_everywhere{") && l.ends_with(" 1")
            ),
        "{text}"
    );

    // The security list is fixed: back to the interconnect, after failback_after (3 s).
    let restored = now_ms();
    nft_delete(&clouds.oci.ns, "seclist");
    clouds.aws.wait_active("remote", "interconnect", SWITCH);
    clouds.oci.wait_active("remote", "interconnect", SWITCH);
    for side in [&clouds.aws, &clouds.oci] {
        let back = switch_at(&side.events(), restored, "interconnect")
            .unwrap_or_else(|| panic!("{}: no failback event", side.name));
        println!(
            "{}: failback {} ms after the drop was removed",
            side.name,
            back - restored
        );
        assert!(
            back - restored >= 3000,
            "{}: failed back before failback_after",
            side.name
        );
        assert_links_up(side);
    }
}

#[test]
fn checks_failing_over_every_link_keep_the_routes_and_say_why() {
    let bed = start("ce");
    let clouds = &bed.clouds;
    let routes = [clouds.aws.remote_routes(), clouds.oci.remote_routes()];
    assert!(routes[0].contains(&clouds.interface(0)), "{}", routes[0]);

    // The database stops answering: whatever the path, the fault is behind the tunnels.
    let since = now_ms();
    nft(
        clouds.oci_app(),
        &format!(
            "table inet dbdown {{\n  chain in {{\n    type filter hook input priority 0;\n    \
             tcp dport {DB_PORT} drop\n  }}\n}}\n"
        ),
    );
    bed.wait_checks(&[("interconnect", "fail"), ("internet", "fail")]);
    let deadline = Instant::now() + SWITCH;
    let failing = loop {
        let events = clouds.aws.events();
        if let Some(e) = events.iter().find(|e| {
            e["kind"] == "checks_failing"
                && e["to"] == "failing"
                && e["unix_ms"].as_u64() >= Some(since)
        }) {
            break e.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no checks_failing event: {events:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(failing["group"], "remote", "{failing:#}");
    assert!(
        failing["reason"]
            .as_str()
            .unwrap()
            .contains("behind the tunnels"),
        "{failing:#}"
    );
    // Let a few more check rounds pass: nothing moves.
    std::thread::sleep(Duration::from_secs(4));
    for (i, side) in [&clouds.aws, &clouds.oci].into_iter().enumerate() {
        assert_eq!(
            side.active("remote").as_deref(),
            Some("interconnect"),
            "{}",
            side.name
        );
        assert_eq!(
            side.remote_routes(),
            routes[i],
            "{}: kernel routes changed",
            side.name
        );
        assert_links_up(side);
        let moves = moves_since(side, since);
        assert!(
            moves.is_empty(),
            "{}: the group moved: {moves:#?}",
            side.name
        );
    }
    // Other hosts behind the tunnels are still reached, over the same link.
    assert!(
        clouds
            .aws_app()
            .command("ping")
            .args(["-c", "3", "-i", "0.2", "-W", "2", "-q", VPCS[1].2])
            .output()
            .unwrap()
            .status
            .success(),
        "ping through the tunnel"
    );
    let status = netctl(&clouds.aws.fx.socket(), &["status"]);
    assert!(
        status
            .stdout
            .contains("group remote: service checks FAIL OVER EVERY LINK"),
        "{}",
        status.stdout
    );
    let json = netctl(&clouds.aws.fx.socket(), &["--json", "status"]).json();
    assert_eq!(
        json["route_groups"][0]["checks_failing_everywhere"], true,
        "{json:#}"
    );
    let text = bed.metrics();
    assert!(
        text.lines().any(
            |l| l.starts_with("isthmus_group_checks_failing_everywhere{")
                && l.contains("group=\"remote\"")
                && l.ends_with(" 1")
        ),
        "{text}"
    );

    // The database answers again.
    let recovered = now_ms();
    nft_delete(clouds.oci_app(), "dbdown");
    let deadline = Instant::now() + SWITCH;
    loop {
        let events = clouds.aws.events();
        if events.iter().any(|e| {
            e["kind"] == "checks_failing"
                && e["to"] == "ok"
                && e["unix_ms"].as_u64() >= Some(recovered)
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no checks_failing to=ok event: {events:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    bed.wait_checks(&[("interconnect", "pass"), ("internet", "pass")]);
    let status = netctl(&clouds.aws.fx.socket(), &["status"]);
    assert!(
        !status.stdout.contains("FAIL OVER EVERY LINK"),
        "{}",
        status.stdout
    );
    // Over every link at once: the recovery moved nothing either.
    for (i, side) in [&clouds.aws, &clouds.oci].into_iter().enumerate() {
        assert_eq!(
            side.active("remote").as_deref(),
            Some("interconnect"),
            "{}",
            side.name
        );
        assert_eq!(side.remote_routes(), routes[i], "{}", side.name);
        let moves = moves_since(side, since);
        assert!(
            moves.is_empty(),
            "{}: the group moved: {moves:#?}",
            side.name
        );
    }
}

/// The `active_link_changed` events of a side since `since` (unix ms).
fn moves_since(side: &Side, since: u64) -> Vec<serde_json::Value> {
    side.events()
        .into_iter()
        .filter(|e| e["kind"] == "active_link_changed" && e["unix_ms"].as_u64() >= Some(since))
        .collect()
}
