//! DNS failover end to end: the real agentd publishes a DNS group's answer to a real BIND 9
//! (RFC 2136 with TSIG) and `dig` at that server sees what it decided.
//!
//! Each test builds its own bed ([`DnsBed`]: two clouds, a primary and a DR database listener
//! behind the OCI gateway, named in the AWS gateway's namespace) and makes one or both gateways
//! serve group `orders-db`, whose answers are checked by TCP probes of the listeners. From the
//! AWS gateway the checks run through the tunnel; from the OCI gateway they go straight to the
//! database namespace. Failures are a stopped listener (refused), nftables drops on a gateway's
//! own output (the check times out), a wrong TSIG key, and a stopped named.
//!
//! The tests are serialized: they are timing-sensitive and each runs two agentd and a named on
//! 2 shared cores. Bounds are generous; what is asserted is behaviour (what is served, the
//! order of events, that failback waits), not speed.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use isthmus_tests::bind::{require_named, tsig_keygen};
use isthmus_tests::dns_bed::{
    actions, events_of, listener_addr, ms, record_action, run, serve_group, wait_event,
    wait_in_sync, DnsBed, Listener, DR, GROUP, KEY_NAME, LISTENER_PORT, PRIMARY,
};
use isthmus_tests::topology::{now_ms, Side, VPCS};
use isthmus_tests::Agentd;

static SERIAL: Mutex<()> = Mutex::new(());

/// Long enough to tell "after failback_after" from "at once" (a check passes within 200 ms).
const FAILBACK_AFTER: Duration = Duration::from_secs(4);
const LONG: Duration = Duration::from_secs(30);

/// The start-up decision settles within about a second (a preferred answer is taken without
/// the failback wait meanwhile): let it end before timing a failback.
fn let_start_up_settle() {
    std::thread::sleep(Duration::from_secs(2));
}

#[test]
fn failing_the_primary_checks_serves_the_dr_answer_and_recovery_fails_back_after_failback_after() {
    if !require_named() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut bed = DnsBed::new("dn", None);
    serve_group(&bed.clouds.aws, &bed.key.text, FAILBACK_AFTER);
    let (_aws, _oci) = bed.clouds.start_agents();
    let aws = &bed.clouds.aws;

    // Start-up: the first answer whose checks pass is published.
    bed.wait_served(PRIMARY, LONG);
    let first = wait_event(aws, "answer_changed", 0, LONG, |e| e["to"] == PRIMARY);
    assert!(first["from"].is_null(), "{first:#}");
    wait_in_sync(aws, PRIMARY, LONG);
    let_start_up_settle();
    let serial = bed.bind.serial();

    // The primary's listener goes away: its check is refused, the DR answer is published.
    let failed_at = now_ms();
    bed.primary.stop();
    bed.wait_served(DR, LONG);
    let seen_ms = now_ms();
    let changed = wait_event(aws, "answer_changed", failed_at, LONG, |e| e["to"] == DR);
    assert_eq!(changed["from"], PRIMARY, "{changed:#}");
    assert!(
        changed["reason"]
            .as_str()
            .unwrap()
            .contains("service checks fail"),
        "{changed:#}"
    );
    let done = wait_event(aws, "action_done", failed_at, LONG, |e| e["to"] == DR);
    assert_eq!(done["from"], PRIMARY, "{done:#}");
    assert!(
        done["reason"]
            .as_str()
            .unwrap()
            .contains("changed and verified"),
        "{done:#}"
    );
    assert!(bed.bind.serial() > serial, "the update bumps the serial");
    let status = actions(aws);
    let group = &status["dns_groups"][0];
    assert_eq!(group["name"], GROUP, "{status:#}");
    assert_eq!(group["chosen"], DR, "{status:#}");
    let entry = wait_in_sync(aws, DR, LONG);
    let last_change = entry["last_change_ms"].as_f64().expect("last_change_ms");
    assert!(last_change > 0.0 && last_change < 10_000.0, "{entry:#}");
    eprintln!(
        "failover: listener stopped → answer_changed {} ms, → dig sees DR ≤ {} ms, \
         decision → verified {last_change} ms",
        ms(&changed) - failed_at,
        seen_ms - failed_at
    );

    // The primary answers again: the DR answer stays for failback_after, then the primary is
    // published again.
    let restored_at = now_ms();
    bed.primary = Listener::start(bed.clouds.oci_app(), listener_addr(PRIMARY));
    let deadline = Instant::now() + LONG;
    let back_seen = loop {
        let got = bed.answer();
        let t = now_ms();
        if got == [PRIMARY] {
            break t;
        }
        assert_eq!(got, [DR], "only DR until the failback");
        assert!(Instant::now() < deadline, "no failback within {LONG:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let back = wait_event(aws, "answer_changed", restored_at, LONG, |e| {
        e["to"] == PRIMARY
    });
    assert_eq!(back["from"], DR, "{back:#}");
    assert!(
        back["reason"].as_str().unwrap().contains("passes again"),
        "{back:#}"
    );
    let waited = ms(&back) - restored_at;
    let bound = FAILBACK_AFTER.as_millis() as u64;
    assert!(
        waited >= bound && back_seen - restored_at >= bound,
        "failback {waited} ms (served at {} ms) after the primary came back: before failback_after ({bound} ms)",
        back_seen - restored_at
    );
    wait_event(aws, "action_done", restored_at, LONG, |e| {
        e["to"] == PRIMARY
    });
    let entry = wait_in_sync(aws, PRIMARY, LONG);
    assert!(entry["last_change_ms"].as_f64().is_some(), "{entry:#}");
    eprintln!(
        "failback: listener back → answer_changed {waited} ms (failback_after {bound} ms), \
         → dig sees primary ≤ {} ms",
        back_seen - restored_at
    );
}

#[test]
fn a_wrong_tsig_secret_or_key_name_fails_clearly_is_retried_and_changes_nothing_at_the_server() {
    if !require_named() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The record holds the DR answer; agentd wants the primary, whose checks pass.
    let bed = DnsBed::new("dk", Some(DR));
    let _oci = Agentd::start(&bed.clouds.oci.fx, &bed.clouds.oci.ns);
    let aws = &bed.clouds.aws;
    let serial = bed.bind.serial();
    let wrong_secret = tsig_keygen(KEY_NAME);
    assert_ne!(wrong_secret.secret_b64, bed.key.secret_b64);
    let wrong_name = tsig_keygen("not-the-failover-key");
    for (case, key, says) in [
        ("wrong secret", &wrong_secret, "bad signature"),
        ("wrong key name", &wrong_name, "does not know the key name"),
    ] {
        serve_group(aws, &key.text, FAILBACK_AFTER);
        let since = now_ms();
        let agentd = Agentd::start(&aws.fx, &aws.ns);
        let failed = wait_event(aws, "action_failed", since, LONG, |_| true);
        let reason = failed["reason"].as_str().unwrap();
        assert!(
            reason.contains(says) && reason.contains("(auth)"),
            "{case}: {failed:#}"
        );
        assert_eq!(failed["to"], PRIMARY, "{case}: {failed:#}");
        // Retried with back-off: the count grows and the next attempt is announced.
        let deadline = Instant::now() + LONG;
        let first = loop {
            let a = record_action(aws);
            if a["failures"].as_u64().unwrap_or(0) >= 2 {
                break a;
            }
            assert!(Instant::now() < deadline, "{case}: not retried: {a:#}");
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(first["state"], "failing", "{case}: {first:#}");
        assert_eq!(first["last_error"]["kind"], "auth", "{case}: {first:#}");
        assert!(
            first["last_error"]["message"]
                .as_str()
                .unwrap()
                .contains(says),
            "{case}: {first:#}"
        );
        assert!(
            first["last_error"]["retry_in_seconds"].as_f64().is_some(),
            "{case}: {first:#}"
        );
        let n = first["failures"].as_u64().unwrap();
        let deadline = Instant::now() + LONG;
        let later = loop {
            let a = record_action(aws);
            if a["failures"].as_u64().unwrap_or(0) > n {
                break a;
            }
            assert!(Instant::now() < deadline, "{case}: no further retry: {a:#}");
            std::thread::sleep(Duration::from_millis(100));
        };
        // The same failure again is counted, not logged again.
        let logged = events_of(aws, "action_failed", since);
        assert_eq!(logged.len(), 1, "{case}: {logged:#?}");
        // Nothing changed at the server.
        assert_eq!(bed.bind.serial(), serial, "{case}: the zone changed");
        assert_eq!(bed.answer(), [DR], "{case}: the record changed");
        let log = bed.bind.log_text();
        eprintln!(
            "{case}: {reason} | failures {n} → {} | named: {}",
            later["failures"],
            log.lines()
                .rfind(|l| l.contains("update") || l.contains("tsig"))
                .unwrap_or("")
        );
        drop(agentd);
    }
}

#[test]
fn bind_stopped_during_a_failover_is_retried_until_it_is_back_while_probes_and_routes_carry_on() {
    if !require_named() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut bed = DnsBed::new("db", None);
    serve_group(&bed.clouds.aws, &bed.key.text, FAILBACK_AFTER);
    let (_aws, _oci) = bed.clouds.start_agents();
    let (aws, oci) = (&bed.clouds.aws, &bed.clouds.oci);
    bed.wait_served(PRIMARY, LONG);
    wait_in_sync(aws, PRIMARY, LONG);
    let_start_up_settle();
    let routes = |side: &Side| {
        let out = side
            .ns
            .command("ip")
            .args(["route", "show", "table", "all"])
            .output()
            .expect("ip route");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let routes_before = (routes(aws), routes(oci));

    let stopped_at = now_ms();
    bed.bind.stop();
    bed.primary.stop();
    wait_event(aws, "answer_changed", stopped_at, LONG, |e| e["to"] == DR);
    let failed = wait_event(aws, "action_failed", stopped_at, LONG, |_| true);
    assert!(
        failed["reason"].as_str().unwrap().contains("(unavailable)"),
        "{failed:#}"
    );
    assert_eq!(failed["to"], DR, "{failed:#}");
    eprintln!("while named is down: {}", failed["reason"]);
    // Meanwhile traffic and health carry on: several seconds of pings through the tunnel.
    let pinged = bed
        .clouds
        .aws_app()
        .command("ping")
        .args(["-c", "25", "-i", "0.2", "-W", "2", "-q", VPCS[1].2])
        .output()
        .expect("ping");
    assert!(
        pinged.status.success(),
        "pings through the tunnel were lost while named was down: {}",
        String::from_utf8_lossy(&pinged.stdout)
    );
    let a = record_action(aws);
    assert_eq!(a["state"], "failing", "{a:#}");
    assert!(a["failures"].as_u64().unwrap() >= 2, "retried: {a:#}");
    assert!(
        a["last_error"]["retry_in_seconds"].as_f64().is_some(),
        "{a:#}"
    );
    for side in [aws, oci] {
        side.wait_links_up(&["interconnect", "internet"], Duration::from_secs(1));
        assert_eq!(side.active("remote").as_deref(), Some("interconnect"));
        let moved: Vec<_> = side
            .events()
            .into_iter()
            .filter(|e| e["kind"] == "health_changed" || e["kind"] == "active_link_changed")
            .filter(|e| ms(e) >= stopped_at)
            .collect();
        assert!(moved.is_empty(), "{}: {moved:#?}", side.name);
    }
    assert_eq!(
        (routes(aws), routes(oci)),
        routes_before,
        "kernel routes moved"
    );
    assert_eq!(bed.answer(), Vec::<String>::new(), "named is down");

    // named back (with its journal): the pending DR answer is published.
    let back_at = now_ms();
    let restart = Instant::now();
    bed.bind.start_again();
    let answering = restart.elapsed();
    let served = bed.wait_served(DR, LONG);
    let done = wait_event(aws, "action_done", back_at, LONG, |e| e["to"] == DR);
    assert_eq!(done["from"], PRIMARY, "{done:#}");
    wait_in_sync(aws, DR, LONG);
    eprintln!(
        "named down {} ms; restarted (answering after {} ms), DR served {} ms after the restart (retry_max 2 s)",
        back_at - stopped_at,
        answering.as_millis(),
        served.duration_since(restart).as_millis()
    );
}

/// Both gateways serve the group, both agentd publish to the same named.
fn two_publishers(tag: &str) -> (DnsBed, Agentd, Agentd) {
    let bed = DnsBed::new(tag, None);
    serve_group(&bed.clouds.aws, &bed.key.text, FAILBACK_AFTER);
    serve_group(&bed.clouds.oci, &bed.key.text, FAILBACK_AFTER);
    let (aws, oci) = bed.clouds.start_agents();
    bed.wait_served(PRIMARY, LONG);
    for side in [&bed.clouds.aws, &bed.clouds.oci] {
        wait_in_sync(side, PRIMARY, LONG);
    }
    let_start_up_settle();
    (bed, aws, oci)
}

/// Drop the gateway's own TCP to `ip`:1522 (its check of that answer times out).
fn drop_check(side: &Side, table: &str, ip: &str) {
    side.nft(&format!(
        "table inet {table} {{\n  chain out {{\n    type filter hook output priority 0;\n    \
         ip daddr {ip} tcp dport {LISTENER_PORT} drop\n  }}\n}}\n"
    ));
}

fn undrop(side: &Side, table: &str) {
    run(side
        .ns
        .command("nft")
        .args(["delete", "table", "inet", table]));
}

/// Wait until `side` reports the answers' check states: (own, peer) of primary and DR.
fn wait_checks(side: &Side, own: [&str; 2], peer: [&str; 2]) {
    let deadline = Instant::now() + LONG;
    loop {
        let status = actions(side);
        let answers = status["dns_groups"][0]["answers"]
            .as_array()
            .unwrap()
            .clone();
        let got_own: Vec<&str> = answers
            .iter()
            .map(|a| a["own"].as_str().unwrap_or(""))
            .collect();
        let got_peer: Vec<&str> = answers
            .iter()
            .map(|a| a["peer"].as_str().unwrap_or("-"))
            .collect();
        if got_own == own && got_peer == peer {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: checks own {got_own:?} peer {got_peer:?}, want {own:?} {peer:?}",
            side.name
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn two_gateways_with_opposite_check_results_both_keep_the_primary_and_never_fight() {
    if !require_named() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (bed, _aws_agentd, _oci_agentd) = two_publishers("do");
    let (aws, oci) = (&bed.clouds.aws, &bed.clouds.oci);
    let serial = bed.bind.serial();
    let since = now_ms();
    // The OCI gateway cannot reach the DR listener, the AWS gateway cannot reach the primary.
    // One after the other, as faults come: the first alone moves nothing (DR is not the
    // published answer), the second makes each answer fail at one gateway only. (Had the
    // primary's fault come first, both would rightly move to DR, the case of the next test,
    // and come back to the primary after failback_after once both answers are degraded.)
    drop_check(oci, "nodr", DR);
    wait_checks(oci, ["pass", "fail"], ["pass", "pass"]);
    wait_checks(aws, ["pass", "pass"], ["pass", "fail"]);
    drop_check(aws, "noprimary", PRIMARY);
    wait_checks(aws, ["fail", "pass"], ["pass", "fail"]);
    wait_checks(oci, ["pass", "fail"], ["fail", "pass"]);
    let opposite_at = now_ms();
    // ~10 s of opposite results: the record keeps the primary and nobody writes.
    let mut serials = Vec::new();
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        assert_eq!(bed.answer(), [PRIMARY], "the record left the primary");
        serials.push(bed.bind.serial());
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        serials.iter().all(|s| *s == serial),
        "serials {serials:?} from {serial}"
    );
    for side in [aws, oci] {
        let changed = events_of(side, "answer_changed", 0);
        assert_eq!(changed.len(), 1, "{}: {changed:#?}", side.name);
        assert!(changed[0]["from"].is_null(), "{changed:#?}");
        let conflicts = events_of(side, "action_conflict", since);
        assert!(conflicts.is_empty(), "{}: {conflicts:#?}", side.name);
        assert_eq!(actions(side)["dns_groups"][0]["chosen"], PRIMARY);
        wait_in_sync(side, PRIMARY, Duration::from_secs(1));
    }
    eprintln!(
        "opposite results for {} ms: serial stayed {serial}, one answer_changed per gateway",
        now_ms() - opposite_at
    );
    undrop(oci, "nodr");
    undrop(aws, "noprimary");
}

#[test]
fn two_gateways_move_to_the_dr_answer_when_one_of_them_sees_the_primary_fail() {
    if !require_named() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (bed, _aws_agentd, _oci_agentd) = two_publishers("d1");
    let (aws, oci) = (&bed.clouds.aws, &bed.clouds.oci);
    let serial = bed.bind.serial();
    let since = now_ms();
    drop_check(aws, "noprimary", PRIMARY);
    bed.wait_served(DR, LONG);
    for side in [aws, oci] {
        let changed = wait_event(side, "answer_changed", since, LONG, |e| e["to"] == DR);
        assert_eq!(changed["from"], PRIMARY, "{}: {changed:#}", side.name);
        wait_in_sync(side, DR, LONG);
        assert_eq!(actions(side)["dns_groups"][0]["chosen"], DR);
    }
    wait_checks(oci, ["pass", "pass"], ["fail", "pass"]);
    // One change of the record: whoever wrote second found it in place.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(bed.bind.serial(), serial + 1, "one write for one decision");
    assert_eq!(bed.answer(), [DR]);
    let writes: usize = [aws, oci]
        .iter()
        .map(|s| {
            events_of(s, "action_done", since)
                .iter()
                .filter(|e| e["from"] == PRIMARY)
                .count()
        })
        .sum();
    assert_eq!(writes, 1, "exactly one gateway changed the record");
    undrop(aws, "noprimary");
}

#[test]
fn a_group_whose_answers_have_no_checks_publishes_its_first_answer() {
    if !require_named() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bed = DnsBed::new("dc", None);
    let aws = &bed.clouds.aws;
    serve_group(aws, &bed.key.text, FAILBACK_AFTER);
    // "An answer without checks passes": without any, the first answer is the one.
    let mut doc: toml::Table = std::fs::read_to_string(aws.fx.config_path())
        .unwrap()
        .parse()
        .unwrap();
    for answer in doc["dns_group"][0]["answers"].as_array_mut().unwrap() {
        answer.as_table_mut().unwrap().remove("checks");
    }
    aws.fx.write_config(&toml::to_string(&doc).unwrap());
    let (_aws, _oci) = bed.clouds.start_agents();
    bed.wait_served(PRIMARY, LONG);
    wait_in_sync(aws, PRIMARY, LONG);
    let first = wait_event(aws, "answer_changed", 0, LONG, |e| e["to"] == PRIMARY);
    assert!(first["from"].is_null(), "{first:#}");
}
