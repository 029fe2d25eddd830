//! The OCI actions end to end: the real agentd on the OCI gateway of the two-cloud bed, signing
//! its requests with an API key made for the test, against the signature-checking, etag-enforcing
//! OCI stub (`isthmus_tests::oci_stub`), which listens on the loopback of the OCI gateway's
//! namespace (the namespace cannot reach the host's) and is served by the test's runtime.
//!
//! ```text
//!  aws gw ══ tunnels ══ oci gw ── oci-db: 10.2.1.10:1522 (primary), 10.2.2.10:1522 (DR)
//!                        agentd → stub on 127.0.0.1:8080 (DNS and VCN APIs)
//! ```
//!
//! The OCI gateway's route group `remote` (the AWS VPC, 10.1.0.0/16) steers a VCN route table
//! that also holds rules of somebody else; a DNS group publishes the primary or the DR
//! database's address in an OCI DNS zone. Failures are a stopped listener, both tunnels cut
//! with nftables on the AWS gateway, another writer racing agentd in the route table, and an
//! API key that OCI does not know.
//!
//! The tests are serialized: each runs two agentd on 2 shared cores. Bounds are generous;
//! what is asserted is behaviour, not speed.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use isthmus_tests::fault_checks::{fault_series, lines_with};
use isthmus_tests::oci_stub::{api_key, ApiKey, OciStub};
use isthmus_tests::topology::{now_ms, Side, TwoClouds, VPCS};
use isthmus_tests::{http_get, netctl, Agentd, Gate, TcpService};
use serde_json::{json, Value};

static SERIAL: Mutex<()> = Mutex::new(());

const TENANCY: &str = "ocid1.tenancy.oc1..aaaaaaaaisthmustesttenancy";
const USER: &str = "ocid1.user.oc1..aaaaaaaaisthmustestuser";
const TABLE: &str = "ocid1.routetable.oc1.iad.aaaaaaaaisthmustesttable";
/// The OCI gateway's private IP: where the rule points while a link is up.
const PRIVATE_IP: &str = "ocid1.privateip.oc1.iad.aaaaaaaaisthmusgateway";
/// Where the rule points when the group fails closed.
const DRG: &str = "ocid1.drg.oc1.iad.aaaaaaaaisthmusdrg";
/// The stub, on the OCI gateway namespace's loopback.
const STUB: &str = "127.0.0.1:8080";
/// A gate in front of the stub, for the test of an endpoint that never answers.
const GATE: &str = "127.0.0.1:8081";
const ZONE: &str = "oci.test";
const RECORD: &str = "orders-db.oci.test";
const GROUP: &str = "orders-db";
const PRIMARY: &str = "10.2.1.10";
const DR: &str = "10.2.2.10";
const DB_PORT: u16 = 1522;
const TTL: u64 = 30;
/// Long enough to tell "after failback_after" from "at once" (a check passes within 200 ms).
const FAILBACK_AFTER: Duration = Duration::from_secs(4);
/// How the targets show in events (`group` of `action_*`).
const DNS_TARGET: &str = "dns group orders-db";
const TABLE_TARGET: &str = "oci route table ocid1.routetable.oc1.iad.aaaaaaaaisthmustesttable";
const LONG: Duration = Duration::from_secs(30);

/// The rules somebody else keeps in the table: a default route with a description, a route to
/// an on-premises network through another DRG, and one to Oracle's services.
fn foreign_rules() -> Vec<Value> {
    vec![
        json!({"destination": "0.0.0.0/0", "destinationType": "CIDR_BLOCK",
               "networkEntityId": "ocid1.internetgateway.oc1.iad.aaaaaaaaigw",
               "description": "default route", "routeType": "STATIC"}),
        json!({"cidrBlock": "192.168.0.0/16", "destination": "192.168.0.0/16",
               "destinationType": "CIDR_BLOCK",
               "networkEntityId": "ocid1.drg.oc1.iad.aaaaaaaaonprem", "description": "on-prem"}),
        json!({"destination": "all-iad-services-in-oracle-services-network",
               "destinationType": "SERVICE_CIDR_BLOCK",
               "networkEntityId": "ocid1.servicegateway.oc1.iad.aaaaaaaasgw"}),
    ]
}

/// How the bed is set up.
struct Options {
    /// `oci_route_tables` `fallback`: a DRG OCID or `"none"`.
    fallback: &'static str,
    /// The stub knows another key than the one agentd signs with.
    wrong_key: bool,
    /// agentd reaches the stub through a [`Gate`] (on [`GATE`]) that the test can shut.
    gate: bool,
}

/// The test bed. Fields drop in order: agentd, the listeners, the stub and its runtime, then
/// the namespaces.
struct Bed {
    _aws_agentd: Agentd,
    oci_agentd: Agentd,
    gate: Option<Gate>,
    primary: Option<TcpService>,
    _dr: TcpService,
    stub: OciStub,
    _runtime: tokio::runtime::Runtime,
    clouds: TwoClouds,
    key: ApiKey,
}

fn listener_addr(ip: &str) -> SocketAddr {
    format!("{ip}:{DB_PORT}").parse().unwrap()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("running a command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start(tag: &str, options: Options) -> Bed {
    let clouds = TwoClouds::new(tag).with_apps();
    let db = clouds.oci_app();
    for ip in [PRIMARY, DR] {
        run(db
            .command("ip")
            .args(["addr", "add", &format!("{ip}/32"), "dev", "lo"]));
        run(clouds.oci.ns.command("ip").args([
            "route",
            "add",
            &format!("{ip}/32"),
            "via",
            VPCS[1].2,
        ]));
    }
    let primary = TcpService::start(db, listener_addr(PRIMARY));
    let dr = TcpService::start(db, listener_addr(DR));

    let key = api_key();
    let key_id = format!("{TENANCY}/{USER}/{}", key.fingerprint);
    let known = if options.wrong_key {
        api_key().public_der
    } else {
        key.public_der.clone()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let stub = {
        let _in = runtime.enter();
        OciStub::start_in(&clouds.oci.ns, STUB.parse().unwrap(), known, &key_id)
    };
    stub.add_zone(ZONE, None);
    stub.set_rules(TABLE, foreign_rules());

    let gate = options
        .gate
        .then(|| Gate::start(&clouds.oci.ns, GATE.parse().unwrap(), STUB.parse().unwrap()));
    let endpoint = if options.gate { GATE } else { STUB };
    configure(&clouds.oci, &key, options.fallback, endpoint);
    let (aws_agentd, oci_agentd) = clouds.start_agents();
    Bed {
        _aws_agentd: aws_agentd,
        oci_agentd,
        gate,
        primary: Some(primary),
        _dr: dr,
        stub,
        _runtime: runtime,
        clouds,
        key,
    }
}

/// The OCI gateway's config: `[oci]` pointing at the stub, the route table on group `remote`,
/// the DNS group with a TCP check per answer, fast action pacing and re-assertion.
fn configure(side: &Side, key: &ApiKey, fallback: &str, endpoint: &str) {
    side.fx
        .write_key_text("oci_api_key.pem", key.pem.trim_end());
    side.fx.set_probes(
        &[
            ("primary-db", "tcp", &listener_addr(PRIMARY).to_string()),
            ("dr-db", "tcp", &listener_addr(DR).to_string()),
        ],
        "200ms",
        "150ms",
    );
    let path = side.fx.config_path();
    let mut doc: toml::Table = std::fs::read_to_string(path).unwrap().parse().unwrap();
    let extra: toml::Table = toml::from_str(&format!(
        r#"
[oci]
region = "us-ashburn-1"
tenancy = "{TENANCY}"
user = "{USER}"
fingerprint = "{fingerprint}"
key_file = "oci_api_key.pem"
dns_endpoint = "http://{endpoint}"
iaas_endpoint = "http://{endpoint}"

[actions]
min_interval = "0s"
timeout = "2s"
retry_initial = "200ms"
retry_max = "2s"
verify_timeout = "5s"
reassert_every = "2s"

[[dns_provider]]
name = "oci-dns"
kind = "oci"
zone = "{ZONE}"

[[dns_group]]
name = "{GROUP}"
provider = "oci-dns"
record = "{RECORD}."
ttl = {TTL}
failback_after = "{failback}ms"
hold_down = "1s"
answers = [{{ value = "{PRIMARY}", checks = ["primary-db"] }}, {{ value = "{DR}", checks = ["dr-db"] }}]
"#,
        fingerprint = key.fingerprint,
        failback = FAILBACK_AFTER.as_millis(),
    ))
    .unwrap();
    doc.extend(extra);
    let table: toml::Table = toml::from_str(&format!(
        "id = \"{TABLE}\"\ntarget = \"{PRIVATE_IP}\"\nfallback = \"{fallback}\"\n"
    ))
    .unwrap();
    doc["route_group"].as_array_mut().unwrap()[0]
        .as_table_mut()
        .unwrap()
        .insert("oci_route_tables".into(), vec![table].into());
    side.fx.write_config(&toml::to_string(&doc).unwrap());
}

impl Bed {
    fn oci(&self) -> &Side {
        &self.clouds.oci
    }

    /// The record set as the stub holds it.
    fn record(&self) -> Vec<(String, u64)> {
        self.stub.record(ZONE, RECORD, "A")
    }

    /// Our rule (to the AWS VPC) in the stub's table.
    fn our_rule(&self) -> Option<Value> {
        self.stub
            .rules(TABLE)
            .into_iter()
            .find(|r| r["destination"] == VPCS[0].0)
    }

    /// The table's rules without ours.
    fn other_rules(&self) -> Vec<Value> {
        self.stub
            .rules(TABLE)
            .into_iter()
            .filter(|r| r["destination"] != VPCS[0].0)
            .collect()
    }

    fn wait_rule_to(&self, target: Option<&str>, within: Duration) -> Option<Value> {
        let deadline = Instant::now() + within;
        loop {
            let rule = self.our_rule();
            let to = rule.as_ref().map(|r| r["networkEntityId"].clone());
            if to.as_ref().and_then(Value::as_str) == target {
                return rule;
            }
            assert!(
                Instant::now() < deadline,
                "our rule never went to {target:?}: {:#?}\n{:#}",
                self.stub.rules(TABLE),
                actions(self.oci())
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stub log lines from index `from` on.
    fn log_since(&self, from: usize) -> Vec<String> {
        self.stub.log().split_off(from)
    }

    /// Drop the tunnels' UDP on the AWS gateway's underlay interface `i`, both ways.
    fn cut(&self, i: usize) {
        let dev = &self.clouds.underlay_interfaces(0)[i];
        self.clouds.aws.nft(&format!(
            "table inet cut{i} {{\n  chain out {{\n    type filter hook output priority -10;\n    \
             oifname \"{dev}\" meta l4proto udp drop\n  }}\n  chain in {{\n    \
             type filter hook input priority -10;\n    iifname \"{dev}\" meta l4proto udp drop\n  }}\n}}\n"
        ));
    }

    fn restore(&self, i: usize) {
        run(self.clouds.aws.ns.command("nft").args([
            "delete",
            "table",
            "inet",
            &format!("cut{i}"),
        ]));
    }
}

/// `netctl --json actions` of a side.
fn actions(side: &Side) -> Value {
    let out = netctl(&side.fx.socket(), &["--json", "actions"]);
    assert_eq!(out.code, 0, "netctl actions: {out:?}");
    out.json()
}

/// The entry of target `name` (a DNS group or a table id) in `netctl --json actions`.
fn action(side: &Side, name: &str) -> Value {
    actions(side)["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["target"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

fn wait_in_sync(side: &Side, name: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let a = action(side, name);
        if a["state"] == "in_sync" {
            return a;
        }
        assert!(
            Instant::now() < deadline,
            "{name} not in sync: {:#}",
            actions(side)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Events of `kind` for `group` at or after `since_ms`.
fn events_of(side: &Side, kind: &str, group: &str, since_ms: u64) -> Vec<Value> {
    side.events()
        .into_iter()
        .filter(|e| e["kind"] == kind && e["group"] == group)
        .filter(|e| e["unix_ms"].as_u64().unwrap_or(0) >= since_ms)
        .collect()
}

fn wait_event(
    side: &Side,
    kind: &str,
    group: &str,
    since_ms: u64,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + LONG;
    loop {
        if let Some(e) = events_of(side, kind, group, since_ms)
            .into_iter()
            .find(&pred)
        {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no matching {kind} event of {group} since {since_ms}: {:#?}",
            side.events()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn reason(e: &Value) -> &str {
    e["reason"].as_str().unwrap_or_default()
}

fn answered(line: &str, status: u16) -> bool {
    line.ends_with(&format!("→ {status}"))
}

#[test]
fn the_oci_dns_record_follows_the_dns_group_and_every_request_is_signed() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut bed = start(
        "od",
        Options {
            fallback: DRG,
            wrong_key: false,
            gate: false,
        },
    );
    // (A field, not `bed.oci()`: the test replaces `bed.primary` meanwhile.)
    let oci = &bed.clouds.oci;

    // Start-up: the primary's check passes, its address is published.
    let deadline = Instant::now() + LONG;
    while bed.record() != [(PRIMARY.to_string(), TTL)] {
        assert!(
            Instant::now() < deadline,
            "never published: {:?}",
            bed.record()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let a = wait_in_sync(oci, GROUP, LONG);
    assert_eq!(a["observed"], PRIMARY, "{a:#}");
    // Let the start-up decision settle before timing a failback.
    std::thread::sleep(Duration::from_secs(2));

    // The primary's listener goes away: its check is refused, the DR answer is published.
    let failed_at = now_ms();
    bed.primary = None;
    let deadline = Instant::now() + LONG;
    while bed.record() != [(DR.to_string(), TTL)] {
        assert!(
            Instant::now() < deadline,
            "never failed over: {:?}\n{:#}",
            bed.record(),
            actions(oci)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let changed = wait_event(oci, "answer_changed", GROUP, failed_at, |e| e["to"] == DR);
    assert_eq!(changed["from"], PRIMARY, "{changed:#}");
    assert!(
        reason(&changed).contains("service checks fail"),
        "{changed:#}"
    );
    let done = wait_event(oci, "action_done", DNS_TARGET, failed_at, |e| e["to"] == DR);
    assert_eq!(done["from"], PRIMARY, "{done:#}");
    assert!(reason(&done).contains("changed and verified"), "{done:#}");

    // The primary answers again: DR stays for failback_after, then the primary comes back.
    let restored = Instant::now();
    let restored_ms = now_ms();
    bed.primary = Some(TcpService::start(
        bed.clouds.oci_app(),
        listener_addr(PRIMARY),
    ));
    loop {
        let got = bed.record();
        if got == [(PRIMARY.to_string(), TTL)] {
            break;
        }
        assert_eq!(got, [(DR.to_string(), TTL)], "only DR until the failback");
        assert!(restored.elapsed() < LONG, "no failback within {LONG:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let waited = restored.elapsed();
    assert!(
        waited >= FAILBACK_AFTER,
        "failed back after {waited:?}: before failback_after ({FAILBACK_AFTER:?})"
    );
    let back = wait_event(oci, "answer_changed", GROUP, restored_ms, |e| {
        e["to"] == PRIMARY
    });
    assert!(reason(&back).contains("passes again"), "{back:#}");
    let deadline = Instant::now() + LONG;
    loop {
        let a = action(oci, GROUP);
        if a["state"] == "in_sync" && a["observed"] == PRIMARY {
            assert_eq!(a["kind"], "dns", "{a:#}");
            assert_eq!(a["failures"], 0, "{a:#}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not in sync on the primary: {a:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Every request verified (signature, body hash, date), none rejected; three record
    // writes (primary, DR, primary), each conditional (the stub answers 428 without if-match).
    let log = bed.stub.log();
    assert!(log.iter().all(|l| answered(l, 200)), "{log:#?}");
    let puts = log
        .iter()
        .filter(|l| l.starts_with(&format!("PUT /20180115/zones/{ZONE}/records/{RECORD}/A ")))
        .count();
    assert_eq!(puts, 3, "{log:#?}");
    // The route table was steered as well (group `remote` is up): created once.
    assert_eq!(bed.our_rule().unwrap()["networkEntityId"], PRIVATE_IP);
}

/// Both links cut: the table goes to the fallback (`Some(DRG)`, or our rule removed with
/// `None`); one link back: to this gateway. The foreign rules stay exactly as they were.
fn fail_closed_and_back(bed: &Bed, fallback: Option<&str>) {
    let oci = bed.oci();
    let created = bed.wait_rule_to(Some(PRIVATE_IP), LONG).unwrap();
    assert_eq!(
        created,
        json!({"destination": VPCS[0].0, "destinationType": "CIDR_BLOCK",
               "networkEntityId": PRIVATE_IP}),
    );
    assert_eq!(bed.other_rules(), foreign_rules());
    wait_in_sync(oci, TABLE, LONG);

    let cut_at = now_ms();
    bed.cut(0);
    bed.cut(1);
    let rule = bed.wait_rule_to(fallback, LONG);
    if let Some(rule) = rule {
        assert_eq!(rule["destinationType"], "CIDR_BLOCK", "{rule:#}");
    }
    assert_eq!(bed.other_rules(), foreign_rules(), "foreign rules changed");
    assert_eq!(oci.active("remote"), None);
    let done = wait_event(oci, "action_done", TABLE_TARGET, cut_at, |e| {
        reason(e).contains("changed and verified")
    });
    eprintln!("fail closed: {done}");

    let back_at = now_ms();
    bed.restore(0);
    oci.wait_active("remote", "interconnect", LONG);
    bed.wait_rule_to(Some(PRIVATE_IP), LONG);
    assert_eq!(bed.other_rules(), foreign_rules(), "foreign rules changed");
    wait_event(oci, "action_done", TABLE_TARGET, back_at, |e| {
        reason(e).contains("changed and verified")
    });
    let a = wait_in_sync(oci, TABLE, LONG);
    assert_eq!(a["kind"], "oci_route_table", "{a:#}");

    // Every write was on the etag of a read, every request signed.
    let log = bed.stub.log();
    assert!(log.iter().all(|l| answered(l, 200)), "{log:#?}");
}

#[test]
fn the_vcn_route_rule_goes_to_the_fallback_drg_when_both_links_are_cut_and_back_when_one_returns() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bed = start(
        "or",
        Options {
            fallback: DRG,
            wrong_key: false,
            gate: false,
        },
    );
    fail_closed_and_back(&bed, Some(DRG));
    // The rule was retargeted in place each time: it is still the last one.
    let rules = bed.stub.rules(TABLE);
    assert_eq!(
        rules.last().unwrap()["destination"],
        VPCS[0].0,
        "{rules:#?}"
    );
}

#[test]
fn with_fallback_none_our_route_rule_is_removed_when_both_links_are_cut_and_recreated() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bed = start(
        "on",
        Options {
            fallback: "none",
            wrong_key: false,
            gate: false,
        },
    );
    fail_closed_and_back(&bed, None);
}

#[test]
fn a_writer_racing_agentd_loses_nothing_and_our_rule_is_put_back_at_the_reassertion() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bed = start(
        "oc",
        Options {
            fallback: DRG,
            wrong_key: false,
            gate: false,
        },
    );
    let oci = bed.oci();
    bed.wait_rule_to(Some(PRIVATE_IP), LONG);
    wait_in_sync(oci, TABLE, LONG);

    // Somebody points our rule elsewhere by hand (with a description of theirs), and adds a
    // rule of their own right after agentd's next read of the table, before its write.
    let intruder = "ocid1.privateip.oc1.iad.aaaaaaaaintruder";
    let hand_edited = json!({"destination": VPCS[0].0, "destinationType": "CIDR_BLOCK",
                             "networkEntityId": intruder, "description": "hand edit"});
    let theirs = json!({"destination": "172.16.0.0/12", "destinationType": "CIDR_BLOCK",
                        "networkEntityId": "ocid1.localpeeringgateway.oc1.iad.aaaaaaaalpg",
                        "description": "peering", "routeType": "STATIC"});
    let mut now = foreign_rules();
    now.push(hand_edited.clone());
    let mut after = now.clone();
    after.push(theirs.clone());
    let since = now_ms();
    let log_from = bed.stub.log().len();
    bed.stub.set_rules_racing(TABLE, now, after);

    // Within a re-assertion (2 s) and the retries: our rule is back, in its place, with the
    // other writer's description; the other writer's new rule is there as they wrote it.
    let deadline = Instant::now() + LONG;
    let mut want = foreign_rules();
    let mut ours = hand_edited;
    ours["networkEntityId"] = json!(PRIVATE_IP);
    want.push(ours);
    want.push(theirs);
    while bed.race_pending_or_differs(&want) {
        assert!(
            Instant::now() < deadline,
            "table never repaired: {:#?}\n{:#}",
            bed.stub.rules(TABLE),
            actions(oci)
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // agentd lost the race once (412 on the etag of its read), read again and wrote over the
    // other writer's version.
    let log = bed.log_since(log_from);
    let put = format!("PUT /20160918/routeTables/{TABLE} ");
    let puts: Vec<&String> = log.iter().filter(|l| l.starts_with(&put)).collect();
    assert!(
        puts.len() == 2 && answered(puts[0], 412) && answered(puts[1], 200),
        "{log:#?}"
    );
    assert!(
        log.iter().all(|l| answered(l, 200) || answered(l, 412)),
        "{log:#?}"
    );
    let conflict = wait_event(oci, "action_conflict", TABLE_TARGET, since, |_| true);
    assert!(reason(&conflict).contains("another writer"), "{conflict:#}");
    let put_back = wait_event(oci, "action_done", TABLE_TARGET, since, |e| {
        reason(e).contains("put back")
    });
    assert!(
        put_back["id"].as_u64() > conflict["id"].as_u64(),
        "{put_back:#}"
    );
    let a = wait_in_sync(oci, TABLE, LONG);
    assert_eq!(a["failures"], 0, "{a:#}");
    // And it stays that way: the next re-assertions find it in place.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(bed.stub.rules(TABLE), want);
}

impl Bed {
    fn race_pending_or_differs(&self, want: &[Value]) -> bool {
        self.stub.race_pending(TABLE) || self.stub.rules(TABLE) != want
    }
}

/// Every line of the key's base64 body, and its header.
fn key_material(pem: &str) -> Vec<&str> {
    let mut out: Vec<&str> = pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .collect();
    out.push("PRIVATE KEY");
    out
}

#[test]
fn a_wrong_api_key_is_an_auth_failure_retried_that_changes_nothing_and_shows_no_key() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bed = start(
        "ok",
        Options {
            fallback: DRG,
            wrong_key: true,
            gate: false,
        },
    );
    let oci = bed.oci();

    // Both targets fail as auth failures, and keep being retried.
    for (name, target) in [(GROUP, DNS_TARGET), (TABLE, TABLE_TARGET)] {
        let failed = wait_event(oci, "action_failed", target, 0, |_| true);
        assert!(reason(&failed).contains("(auth)"), "{failed:#}");
        assert!(reason(&failed).contains("401"), "{failed:#}");
        let deadline = Instant::now() + LONG;
        loop {
            let a = action(oci, name);
            if a["failures"].as_u64().unwrap_or(0) >= 3 {
                assert_eq!(a["state"], "failing", "{a:#}");
                assert_eq!(a["last_error"]["kind"], "auth", "{a:#}");
                break;
            }
            assert!(Instant::now() < deadline, "not retried: {a:#}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // Nothing changed: every request was refused, the table and the zone are as they were.
    let log = bed.stub.log();
    assert!(log.len() >= 6, "{log:#?}");
    assert!(log.iter().all(|l| answered(l, 401)), "{log:#?}");
    assert_eq!(bed.stub.rules(TABLE), foreign_rules());
    assert!(bed.record().is_empty(), "{:?}", bed.record());

    // No key material anywhere agentd reports.
    let status = netctl(&oci.fx.socket(), &["status"]).stdout;
    let actions_text = netctl(&oci.fx.socket(), &["actions"]).stdout;
    let reports = [
        ("log", bed.oci_agentd.log_text()),
        ("events", serde_json::to_string(&oci.events()).unwrap()),
        ("actions", actions(oci).to_string()),
        ("netctl actions", actions_text),
        ("status", status),
    ];
    for (what, text) in &reports {
        for secret in key_material(&bed.key.pem) {
            assert!(!text.contains(secret), "{what} shows key material: {text}");
        }
    }
}

/// The side's `/metrics` page.
fn metrics(side: &Side) -> String {
    match http_get(
        &side.ns,
        "127.0.0.1:9477".parse().unwrap(),
        "/metrics",
        Duration::from_secs(10),
    ) {
        Ok((200, body)) => body,
        other => panic!("{}: GET /metrics: {other:?}", side.name),
    }
}

#[test]
fn an_oci_api_that_accepts_and_never_answers_is_one_fault_per_target_and_the_table_follows_once_it_answers(
) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bed = start(
        "of",
        Options {
            fallback: DRG,
            wrong_key: false,
            gate: true,
        },
    );
    let oci = bed.oci();
    bed.wait_rule_to(Some(PRIVATE_IP), LONG).unwrap();
    wait_in_sync(oci, TABLE, LONG);
    wait_in_sync(oci, GROUP, LONG);
    let gate = bed.gate.as_ref().unwrap();
    let total = |m: &str| fault_series(m, "isthmus_faults_total", "action_timeout");
    let before = total(&metrics(oci));

    // The API hangs; then both links are cut: the table must move to the fallback DRG.
    gate.shut();
    let cut_at = now_ms();
    bed.cut(0);
    bed.cut(1);
    let started = Instant::now();
    while oci.active("remote").is_some() {
        assert!(started.elapsed() < LONG, "the group did not fail closed");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Attempts end at the 2 s deadline and back off at most 2 s: several in 10 s.
    std::thread::sleep(Duration::from_secs(10));
    let a = action(oci, TABLE);
    assert_eq!(a["state"], "failing", "{a:#}");
    assert!(a["failures"].as_u64().unwrap_or(0) >= 2, "retried: {a:#}");
    let failed = events_of(oci, "action_failed", TABLE_TARGET, cut_at);
    assert!(
        !failed.is_empty() && failed.iter().all(|e| reason(e).contains("(unavailable)")),
        "{failed:#?}"
    );
    assert!(gate.held() >= 2, "the silent endpoint was asked");
    assert_eq!(bed.our_rule().unwrap()["networkEntityId"], PRIVATE_IP);
    let log = bed.oci_agentd.log_text();
    let said = lines_with(&log, &["fault: action_timeout", TABLE_TARGET]);
    assert_eq!(said.len(), 1, "said once, not per retry: {said:#?}");
    let all = lines_with(&log, &["fault: action_timeout"]);
    assert!(all.len() <= 2, "one per target at most: {all:#?}");
    let m = metrics(oci);
    assert_eq!(
        total(&m) - before,
        all.len() as f64,
        "counted once per target"
    );

    // The API answers again: the pending change goes through at the next attempt.
    let opened = Instant::now();
    gate.open();
    bed.wait_rule_to(Some(DRG), LONG);
    let recovered = opened.elapsed();
    wait_in_sync(oci, TABLE, LONG);
    wait_in_sync(oci, GROUP, LONG);
    let log = bed.oci_agentd.log_text();
    assert_eq!(
        lines_with(&log, &["fault cleared: action_timeout", TABLE_TARGET]).len(),
        1,
        "{log}"
    );
    assert_eq!(
        lines_with(&log, &["fault: action_timeout"]).len(),
        all.len()
    );
    assert_eq!(
        fault_series(&metrics(oci), "isthmus_faults_active", "action_timeout"),
        0.0
    );
    assert_eq!(bed.other_rules(), foreign_rules(), "foreign rules changed");
    eprintln!(
        "OCI API silent: {} attempts on the table, {} connections held; fallback rule {recovered:.1?} after it answered again",
        a["failures"],
        gate.held()
    );
}
