//! Failover carried into AWS, end to end: the real agentd publishes to moto_server (Route 53
//! records, EC2 route tables), and every outcome is read back from moto by boto3, a client we
//! did not write (ListResourceRecordSets, DescribeRouteTables).
//!
//! moto runs inside the AWS gateway's namespace, on that namespace's loopback
//! ([`Moto::start_in`]): agentd there reaches it, the host's loopback and addresses stay out of
//! it, and no packet leaves the namespaces. The DNS and credentials tests need no tunnels: one
//! namespace with agentd, moto and the services its checks probe (TCP listeners on loopback).
//! The route table test runs the two-cloud bed and cuts the links with nftables.
//!
//! Credentials come from one source of the chain per run (environment, a shared file with a
//! named profile, IMDSv2 served by moto), the others made empty: a run publishes only if
//! that source works. Every run also checks that no secret (secret key, session token, the
//! IMDS session token) reaches agentd's log, `netctl` status, actions and events, or
//! `/metrics`.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use isthmus_tests::fault_checks::{fault_series, lines_with};
use isthmus_tests::moto::{self, Moto, Vpc};
use isthmus_tests::topology::{now_ms, Side, TwoClouds};
use isthmus_tests::{http_get, netctl, Agentd, Fixture, Gate, Netns};

/// moto inside the test's namespace, on its loopback (nothing else there uses the port).
const MOTO: &str = "127.0.0.1:5055";
const ENDPOINT: &str = "http://127.0.0.1:5055";
/// Where nothing listens: the metadata service of runs that must not find instance
/// credentials (refused at once, inside the namespace).
const DEAD_IMDS: &str = "http://127.0.0.1:1";
const METRICS: &str = "127.0.0.1:9477";
const REGION: &str = "eu-central-1";
const RECORD: &str = "db.example.test.";
const PRIMARY: &str = "10.2.0.10";
const STANDBY: &str = "10.2.0.11";
/// The services behind the answers, on the namespace's loopback.
const PRIMARY_SERVICE: &str = "127.0.0.1:1522";
const STANDBY_SERVICE: &str = "127.0.0.2:1522";
/// The DNS group's `failback_after`.
const FAILBACK_AFTER: Duration = Duration::from_secs(3);
/// Generous: 2 shared cores, Python, two agentd.
const LONG: Duration = Duration::from_secs(60);
/// Secrets the runs hand agentd (distinct from anything else in the output).
const ENV_SECRET: &str = "isthmusEnvSecret/kJ8q2Zp4Wv7Xr1Lm";
const FILE_SECRET: &str = "isthmusFileSecret/Qz5Ty8Un3Bc6Df0G";
const FILE_TOKEN: &str = "isthmusFileToken/Hh2Jj4Kk6Ll8Mm0N";
/// What moto's metadata service hands out (fixed in moto).
const IMDS_SECRETS: [&str; 3] = ["test-secret-key", "test-session-token", "fake-imdsv2-token"];

/// A TCP service that accepts and closes connections until stopped (drop stops it too).
struct Service {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Service {
    fn start(ns: &Netns, addr: &str) -> Service {
        let addr: SocketAddr = addr.parse().unwrap();
        let listener = ns.run_in(move || TcpListener::bind(addr).expect("binding the service"));
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => drop(conn),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(e) => panic!("service {addr}: {e}"),
                }
            }
        });
        Service {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Poll `f` every 200 ms until it returns `Some`, for at most `timeout`; panics with `what`
/// and the last value seen.
fn wait_for<T, V: std::fmt::Debug>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> (Option<T>, V),
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let (done, seen) = f();
        if let Some(t) = done {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {timeout:?}; last seen: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------------------------
// Route 53: one namespace with agentd, moto and the answers' services.

/// A namespace with moto and a hosted zone `example.test.`, and the fixture of an agentd that
/// publishes the DNS group `orders-db` (record `db.example.test.`) there.
struct DnsBed {
    // Field order is drop order: agentd, moto, then the namespace.
    moto: Moto,
    zone: String,
    fx: Fixture,
    ns: Netns,
}

impl DnsBed {
    /// `aws`: lines of `[aws]` after `region`; `answers`: `(value, checks)`.
    fn new(pyenv: &std::path::Path, aws: &str, answers: &[(&str, &[&str])]) -> DnsBed {
        let ns = Netns::new("cd");
        let moto = Moto::start_in(pyenv, &ns, MOTO.parse().unwrap());
        let zone = moto.boto3(
            r#"
r53 = client("route53")
z = r53.create_hosted_zone(Name="example.test.", CallerReference="isthmus")["HostedZone"]["Id"]
print(json.dumps(z))
"#,
        );
        let zone = zone.as_str().unwrap().to_string();
        let mut text = format!(
            "[agent]\nname = \"cloud-gw\"\nlog_level = \"debug\"\n\
             [control]\nread_group = 0\nadmin_group = 0\n[metrics]\nlisten = \"{METRICS}\"\n\
             [aws]\nregion = \"{REGION}\"\n{aws}\n\
             [actions]\nretry_initial = \"200ms\"\nretry_max = \"2s\"\n\
             [[dns_provider]]\nname = \"r53\"\nkind = \"route53\"\nhosted_zone_id = \"{zone}\"\n\
             endpoint = \"{ENDPOINT}\"\n"
        );
        let mut checks: Vec<&str> = answers
            .iter()
            .flat_map(|(_, c)| c.iter().copied())
            .collect();
        checks.dedup();
        for c in checks {
            let target = match c {
                "primary" => PRIMARY_SERVICE,
                "standby" => STANDBY_SERVICE,
                other => panic!("no service for check {other}"),
            };
            text += &format!(
                "[[probe]]\nname = \"{c}\"\nkind = \"tcp\"\ntarget = \"{target}\"\n\
                 interval = \"200ms\"\ntimeout = \"150ms\"\n"
            );
        }
        let answers: Vec<String> = answers
            .iter()
            .map(|(v, c)| format!("{{ value = \"{v}\", checks = {c:?} }}"))
            .collect();
        text += &format!(
            "[[dns_group]]\nname = \"orders-db\"\nprovider = \"r53\"\nrecord = \"{RECORD}\"\n\
             ttl = 30\nfailback_after = \"{}s\"\nhold_down = \"1s\"\nanswers = [{}]\n",
            FAILBACK_AFTER.as_secs(),
            answers.join(", ")
        );
        let fx = Fixture::new(&text);
        DnsBed { moto, zone, fx, ns }
    }

    /// agentd with `env` (and HOME in the fixture, where no `.aws` is), ready.
    fn start(&self, env: &[(&str, String)]) -> Agentd {
        let mut env = env.to_vec();
        env.push(("HOME", self.fx.dir().display().to_string()));
        Agentd::spawn(&self.fx, &self.ns, &env).wait_ready()
    }

    /// The record's values as moto serves them (ListResourceRecordSets, through boto3).
    fn record(&self) -> Option<(u64, Vec<String>)> {
        let v = self.moto.boto3(&format!(
            r#"
sets = client("route53").list_resource_record_sets(HostedZoneId="{}", StartRecordName="{RECORD}", StartRecordType="A")["ResourceRecordSets"]
s = [s for s in sets if s["Name"] == "{RECORD}" and s["Type"] == "A"]
print(json.dumps([s[0]["TTL"], sorted(r["Value"] for r in s[0]["ResourceRecords"])] if s else None))
"#,
            self.zone
        ));
        serde_json::from_value(v).unwrap()
    }

    /// Wait until moto serves `value` for the record (TTL 30).
    fn wait_record(&self, value: &str, timeout: Duration) {
        wait_for(&format!("{RECORD} = {value} at moto"), timeout, || {
            let r = self.record();
            let ok = r.as_ref() == Some(&(30, vec![value.to_string()]));
            (ok.then_some(()), r)
        });
    }

    fn actions(&self) -> serde_json::Value {
        netctl(&self.fx.socket(), &["--json", "actions"]).json()
    }

    fn events(&self) -> Vec<serde_json::Value> {
        netctl(&self.fx.socket(), &["--json", "events", "--limit", "1000"])
            .stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Wait until `netctl --json actions` shows the group's record in sync, holding `value`.
    fn wait_in_sync(&self, value: &str) -> serde_json::Value {
        wait_for("the DNS target in_sync", LONG, || {
            let a = self.actions();
            let target = a["actions"]
                .as_array()
                .and_then(|l| l.iter().find(|t| t["target"] == "orders-db"))
                .cloned();
            let ok = target
                .as_ref()
                .filter(|t| t["kind"] == "dns" && t["state"] == "in_sync" && t["observed"] == value)
                .cloned();
            (ok, a)
        })
    }

    /// Nothing agentd shows anyone holds one of `secrets`.
    fn assert_no_secret(&self, agentd: &Agentd, secrets: &[&str]) {
        let (status, metrics) = http_get(
            &self.ns,
            METRICS.parse().unwrap(),
            "/metrics",
            Duration::from_secs(10),
        )
        .expect("scraping /metrics");
        assert_eq!(status, 200);
        assert!(
            metrics.contains("isthmus_action_"),
            "no action metrics:\n{metrics}"
        );
        assert_secrets_absent(&self.fx, agentd, &metrics, secrets);
    }
}

/// Every secret is absent from agentd's log, `netctl --json status`, `actions`, `events` and
/// the `metrics` text given.
fn assert_secrets_absent(fx: &Fixture, agentd: &Agentd, metrics: &str, secrets: &[&str]) {
    let socket = fx.socket();
    let shown = [
        ("agentd log", agentd.log_text()),
        (
            "netctl status",
            netctl(&socket, &["--json", "status"]).stdout,
        ),
        (
            "netctl actions",
            netctl(&socket, &["--json", "actions"]).stdout,
        ),
        (
            "netctl events",
            netctl(&socket, &["--json", "events", "--limit", "1000"]).stdout,
        ),
        ("/metrics", metrics.to_string()),
    ];
    for (what, text) in &shown {
        assert!(!text.is_empty(), "{what} is empty");
        for s in secrets {
            assert!(!text.contains(s), "{what} holds the secret {s:?}:\n{text}");
        }
    }
}

#[test]
fn the_route53_record_follows_the_dns_group_to_the_standby_and_back_after_failback_after() {
    let Some(pyenv) = moto::pyenv(
        "the_route53_record_follows_the_dns_group_to_the_standby_and_back_after_failback_after",
    ) else {
        return;
    };
    let bed = DnsBed::new(
        &pyenv,
        &format!("imds_endpoint = \"{DEAD_IMDS}\""),
        &[(PRIMARY, &["primary"]), (STANDBY, &["standby"])],
    );
    let primary = Service::start(&bed.ns, PRIMARY_SERVICE);
    let _standby = Service::start(&bed.ns, STANDBY_SERVICE);
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKIDISTHMUSENV".to_string()),
        ("AWS_SECRET_ACCESS_KEY", ENV_SECRET.to_string()),
    ];
    let agentd = bed.start(&env);

    // Both pass: the preferred answer is published (the record did not exist).
    bed.wait_record(PRIMARY, LONG);
    bed.wait_in_sync(PRIMARY);

    // The primary's service stops: its check fails, the standby is published.
    drop(primary);
    bed.wait_record(STANDBY, LONG);
    bed.wait_in_sync(STANDBY);

    // It comes back: published again, and not before it has been healthy for failback_after.
    let back_ms = now_ms();
    let _primary = Service::start(&bed.ns, PRIMARY_SERVICE);
    bed.wait_record(PRIMARY, LONG);
    let t = bed.wait_in_sync(PRIMARY);
    assert!(t["provider"].as_str().unwrap().contains("route53"), "{t:#}");
    let events = bed.events();
    let changed: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["kind"] == "answer_changed")
        .collect();
    let to: Vec<&str> = changed.iter().filter_map(|e| e["to"].as_str()).collect();
    assert_eq!(to, [PRIMARY, STANDBY, PRIMARY], "{changed:#?}");
    let failback_ms = changed[2]["unix_ms"].as_u64().unwrap();
    assert!(
        failback_ms >= back_ms + FAILBACK_AFTER.as_millis() as u64,
        "failback {} ms after the service came back: {:#}",
        failback_ms.saturating_sub(back_ms),
        changed[2]
    );
    // Each change reached moto, and was reported as done.
    let done: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "action_done" && e["group"] == "dns group orders-db")
        .filter_map(|e| e["to"].as_str())
        .collect();
    assert_eq!(done, [PRIMARY, STANDBY, PRIMARY], "{events:#?}");
    bed.assert_no_secret(&agentd, &[ENV_SECRET]);
}

/// In front of moto, for the test of an endpoint that never answers.
const GATE: &str = "127.0.0.1:5056";

#[test]
fn a_route53_endpoint_that_accepts_and_never_answers_is_one_fault_and_the_record_follows_once_it_answers(
) {
    let Some(pyenv) = moto::pyenv(
        "a_route53_endpoint_that_accepts_and_never_answers_is_one_fault_and_the_record_follows_once_it_answers",
    ) else {
        return;
    };
    let bed = DnsBed::new(
        &pyenv,
        &format!("imds_endpoint = \"{DEAD_IMDS}\""),
        &[(PRIMARY, &["primary"]), (STANDBY, &["standby"])],
    );
    // agentd reaches moto through the gate; each attempt ends at a 2 s deadline.
    let gate = Gate::start(&bed.ns, GATE.parse().unwrap(), MOTO.parse().unwrap());
    let text = std::fs::read_to_string(bed.fx.config_path())
        .unwrap()
        .replace(
            &format!("endpoint = \"{ENDPOINT}\""),
            &format!("endpoint = \"http://{GATE}\""),
        )
        .replace("[actions]\n", "[actions]\ntimeout = \"2s\"\n");
    bed.fx.write_config(&text);
    let primary = Service::start(&bed.ns, PRIMARY_SERVICE);
    let _standby = Service::start(&bed.ns, STANDBY_SERVICE);
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKIDISTHMUSENV".to_string()),
        ("AWS_SECRET_ACCESS_KEY", ENV_SECRET.to_string()),
    ];
    let agentd = bed.start(&env);
    bed.wait_record(PRIMARY, LONG);
    bed.wait_in_sync(PRIMARY);
    let scrape = || {
        let (status, text) = http_get(
            &bed.ns,
            METRICS.parse().unwrap(),
            "/metrics",
            Duration::from_secs(10),
        )
        .expect("scraping /metrics");
        assert_eq!(status, 200);
        text
    };
    let total = |m: &str| fault_series(m, "isthmus_faults_total", "action_timeout");
    let before = total(&scrape());

    // Route 53 hangs, and the standby must be published.
    gate.shut();
    drop(primary);
    std::thread::sleep(Duration::from_secs(10));
    let a = bed.actions();
    let target = a["actions"]
        .as_array()
        .and_then(|l| l.iter().find(|t| t["target"] == "orders-db"))
        .cloned()
        .unwrap();
    assert_eq!(target["state"], "failing", "{target:#}");
    assert!(
        target["failures"].as_u64().unwrap_or(0) >= 2,
        "retried: {target:#}"
    );
    assert!(gate.held() >= 2, "the silent endpoint was asked");
    let said = lines_with(&agentd.log_text(), &["fault: action_timeout"]);
    assert_eq!(said.len(), 1, "said once, not per retry: {said:#?}");
    assert_eq!(total(&scrape()) - before, 1.0, "counted once");
    assert_eq!(bed.record(), Some((30, vec![PRIMARY.to_string()])));

    // Route 53 answers again: the standby is published at the next attempt.
    let opened = Instant::now();
    gate.open();
    bed.wait_record(STANDBY, LONG);
    let recovered = opened.elapsed();
    bed.wait_in_sync(STANDBY);
    let log = agentd.log_text();
    assert_eq!(
        lines_with(&log, &["fault cleared: action_timeout"]).len(),
        1,
        "{log}"
    );
    assert_eq!(lines_with(&log, &["fault: action_timeout"]).len(), 1);
    assert_eq!(
        fault_series(&scrape(), "isthmus_faults_active", "action_timeout"),
        0.0
    );
    eprintln!(
        "Route 53 silent: {} attempts, {} connections held; standby published {recovered:.1?} after it answered again",
        target["failures"],
        gate.held()
    );
}

// ---------------------------------------------------------------------------------------------
// The credentials chain, one source per run.

/// A bed with one answer whose service is up: whatever credentials work get it published.
fn publishing_bed(pyenv: &std::path::Path, aws: &str) -> (DnsBed, Service) {
    let bed = DnsBed::new(pyenv, aws, &[(PRIMARY, &["primary"])]);
    let service = Service::start(&bed.ns, PRIMARY_SERVICE);
    (bed, service)
}

#[test]
fn credentials_from_the_environment_publish_the_record() {
    let Some(pyenv) = moto::pyenv("credentials_from_the_environment_publish_the_record") else {
        return;
    };
    let (bed, _service) = publishing_bed(&pyenv, &format!("imds_endpoint = \"{DEAD_IMDS}\""));
    let agentd = bed.start(&[
        ("AWS_ACCESS_KEY_ID", "AKIDISTHMUSENV".to_string()),
        ("AWS_SECRET_ACCESS_KEY", ENV_SECRET.to_string()),
        ("AWS_SESSION_TOKEN", FILE_TOKEN.to_string()),
    ]);
    bed.wait_in_sync(PRIMARY);
    bed.wait_record(PRIMARY, LONG);
    bed.assert_no_secret(&agentd, &[ENV_SECRET, FILE_TOKEN]);
}

#[test]
fn credentials_from_a_named_profile_in_a_shared_file_publish_the_record() {
    let Some(pyenv) =
        moto::pyenv("credentials_from_a_named_profile_in_a_shared_file_publish_the_record")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("aws-credentials");
    // The default profile holds nothing usable: only the named one may be what signs.
    std::fs::write(
        &file,
        format!(
            "[default]\naws_access_key_id = AKIDDEFAULT\n\n[isthmus]\n\
             aws_access_key_id = AKIDISTHMUSFILE\naws_secret_access_key = {FILE_SECRET}\n\
             aws_session_token = {FILE_TOKEN}\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (bed, _service) = publishing_bed(
        &pyenv,
        &format!(
            "profile = \"isthmus\"\ncredentials_file = \"{}\"\nimds_endpoint = \"{DEAD_IMDS}\"",
            file.display()
        ),
    );
    let agentd = bed.start(&[]);
    bed.wait_in_sync(PRIMARY);
    bed.wait_record(PRIMARY, LONG);
    bed.assert_no_secret(&agentd, &[FILE_SECRET, FILE_TOKEN]);
}

#[test]
fn credentials_from_the_instance_metadata_service_publish_the_record() {
    let Some(pyenv) =
        moto::pyenv("credentials_from_the_instance_metadata_service_publish_the_record")
    else {
        return;
    };
    let (bed, _service) = publishing_bed(&pyenv, &format!("imds_endpoint = \"{ENDPOINT}\""));
    let agentd = bed.start(&[]);
    bed.wait_in_sync(PRIMARY);
    bed.wait_record(PRIMARY, LONG);
    assert!(
        agentd
            .log_text()
            .contains("instance metadata (role default-role)"),
        "the log does not say where the credentials came from:\n{}",
        agentd.log_text()
    );
    bed.assert_no_secret(&agentd, &IMDS_SECRETS);
}

#[test]
fn without_credentials_the_action_fails_naming_every_source_tried_and_no_secret_leaks() {
    let Some(pyenv) = moto::pyenv(
        "without_credentials_the_action_fails_naming_every_source_tried_and_no_secret_leaks",
    ) else {
        return;
    };
    let (bed, _service) = publishing_bed(&pyenv, &format!("imds_endpoint = \"{DEAD_IMDS}\""));
    // Half a pair in the environment would be an error of its own; this is nothing at all.
    let agentd = bed.start(&[]);
    let failed = wait_for("an action_failed event", LONG, || {
        let events = bed.events();
        let e = events
            .iter()
            .find(|e| e["kind"] == "action_failed" && e["group"] == "dns group orders-db")
            .cloned();
        (e, events.len())
    });
    let reason = failed["reason"].as_str().unwrap();
    let home = bed.fx.dir().display().to_string();
    for words in [
        "no AWS credentials",
        "environment",
        &format!("{home}/.aws/credentials"),
        "profile [default]",
        "instance metadata",
        DEAD_IMDS.trim_start_matches("http://"),
    ] {
        assert!(
            reason.contains(words),
            "the reason does not name {words:?}: {reason}"
        );
    }
    let a = bed.actions();
    let t = &a["actions"][0];
    assert_eq!(t["state"], "failing", "{a:#}");
    // Every source was tried and none gave credentials: an `auth` failure, whatever the
    // metadata service said; the message says the rest.
    assert_eq!(t["last_error"]["kind"], "auth", "{a:#}");
    let message = t["last_error"]["message"].as_str().unwrap();
    assert!(message.contains("no AWS credentials"), "{a:#}");
    assert_eq!(bed.record(), None, "nothing was published");
    // The moto IMDS secrets are known strings: none may appear although IMDS was never asked.
    bed.assert_no_secret(&agentd, &IMDS_SECRETS);
}

#[test]
fn secrets_stay_out_of_the_log_status_events_and_metrics_even_at_trace_level() {
    let Some(pyenv) =
        moto::pyenv("secrets_stay_out_of_the_log_status_events_and_metrics_even_at_trace_level")
    else {
        return;
    };
    // The session token travels in a request header of every call: the most exposed secret.
    let (bed, _service) = publishing_bed(&pyenv, &format!("imds_endpoint = \"{ENDPOINT}\""));
    bed.fx.set("agent", "log_level", "trace".into());
    let agentd = bed.start(&[]);
    bed.wait_in_sync(PRIMARY);
    bed.wait_record(PRIMARY, LONG);
    // Let a few probe rounds and a status read pass through the trace log.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        agentd.log_text().contains("TRACE"),
        "not logging at trace level:\n{}",
        agentd.log_text()
    );
    bed.assert_no_secret(&agentd, &IMDS_SECRETS);
}

// ---------------------------------------------------------------------------------------------
// EC2 route tables: the two-cloud bed.

/// DescribeRouteTables of `rtb` through boto3: destination → target (ENI, gateway, `local`).
fn routes_in_moto(moto: &Moto, rtb: &str) -> std::collections::BTreeMap<String, String> {
    let v = moto.boto3(&format!(
        r#"
t = client("ec2", "{REGION}").describe_route_tables(RouteTableIds=["{rtb}"])["RouteTables"][0]
print(json.dumps({{r["DestinationCidrBlock"]: r.get("NetworkInterfaceId") or r.get("GatewayId") for r in t["Routes"]}}))
"#
    ));
    serde_json::from_value(v).unwrap()
}

/// Drop UDP both ways on the AWS gateway's underlay interface of path `i` (table `cut{i}`).
fn cut(bed: &TwoClouds, i: usize) {
    let dev = &bed.underlay_interfaces(0)[i];
    bed.aws.nft(&format!(
        "table inet cut{i} {{\n  chain out {{\n    type filter hook output priority -10;\n    \
         oifname \"{dev}\" meta l4proto udp drop\n  }}\n  chain in {{\n    \
         type filter hook input priority -10;\n    iifname \"{dev}\" meta l4proto udp drop\n  }}\n}}\n"
    ));
}

fn restore(side: &Side, i: usize) {
    let ok = side
        .ns
        .command("nft")
        .args(["delete", "table", "inet", &format!("cut{i}")])
        .status()
        .expect("nft");
    assert!(ok.success(), "nft delete table inet cut{i}");
}

#[test]
fn cutting_both_links_moves_the_vpc_route_to_the_fallback_and_a_link_coming_back_returns_it() {
    let Some(pyenv) = moto::pyenv(
        "cutting_both_links_moves_the_vpc_route_to_the_fallback_and_a_link_coming_back_returns_it",
    ) else {
        return;
    };
    let bed = TwoClouds::new("ce");
    let moto = Moto::start_in(&pyenv, &bed.aws.ns, MOTO.parse().unwrap());
    // The AWS side's VPC, the gateway's ENI, a VPN gateway as the fallback, and two tables:
    // `rtb`, whose route falls back to the VGW and which holds a foreign route that must stay
    // as it is, and `bare`, whose route is removed when the group fails closed.
    let Vpc {
        eni,
        other,
        vgw,
        rtb,
        bare,
    } = Vpc::create(&moto, REGION);
    moto::steer_route_tables(
        &bed.aws.fx,
        &format!(
            "region = \"{REGION}\"\nec2_endpoint = \"{ENDPOINT}\"\nimds_endpoint = \"{DEAD_IMDS}\"\n"
        ),
        &[(&rtb, &eni, &vgw), (&bare, &eni, "none")],
    );

    let env = [
        ("AWS_ACCESS_KEY_ID", "AKIDISTHMUSENV".to_string()),
        ("AWS_SECRET_ACCESS_KEY", ENV_SECRET.to_string()),
    ];
    let aws = Agentd::spawn(&bed.aws.fx, &bed.aws.ns, &env).wait_ready();
    let _oci = Agentd::start(&bed.oci.fx, &bed.oci.ns);
    bed.aws.wait_links_up(&["interconnect", "internet"], LONG);
    bed.aws.wait_active("remote", "interconnect", LONG);

    let remote = "10.2.0.0/16";
    let check = |want: Option<&str>, want_bare: Option<&str>| {
        let what = format!("{remote} → {want:?} in {rtb}, {want_bare:?} in {bare}");
        wait_for(&what, LONG, || {
            let (main, second) = (routes_in_moto(&moto, &rtb), routes_in_moto(&moto, &bare));
            let ok = main.get(remote).map(String::as_str) == want
                && second.get(remote).map(String::as_str) == want_bare;
            (ok.then_some(()), (main, second))
        });
        // Never named by agentd: the foreign route and the VPC's local route.
        let main = routes_in_moto(&moto, &rtb);
        assert_eq!(main.get("10.9.0.0/16"), Some(&other), "{main:?}");
        assert_eq!(main.get("10.1.0.0/16").map(String::as_str), Some("local"));
        assert_eq!(main.len(), 3, "{main:?}");
    };
    // Up: both tables point the OCI VCN at this gateway's ENI (created: there was no route).
    check(Some(&eni), Some(&eni));

    // Both links cut: the group fails closed, the VGW takes the VCN's traffic in one table and
    // the route goes from the other.
    cut(&bed, 0);
    cut(&bed, 1);
    wait_for("the group failed closed", LONG, || {
        let a = bed.aws.active("remote");
        (a.is_none().then_some(()), a)
    });
    check(Some(&vgw), None);

    // A link comes back: the ENI again in both (the second re-created).
    restore(&bed.aws, 1);
    bed.aws.wait_active("remote", "internet", LONG);
    check(Some(&eni), Some(&eni));

    let done: Vec<(String, String)> = bed
        .aws
        .events()
        .iter()
        .filter(|e| e["kind"] == "action_done")
        .map(|e| {
            (
                e["group"].as_str().unwrap_or("").to_string(),
                e["to"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let to = |table: &str| -> Vec<&str> {
        done.iter()
            .filter(|(g, _)| g == &format!("aws route table {table}"))
            .map(|(_, t)| t.as_str())
            .collect()
    };
    let (e, v, n) = (
        format!("{remote} → {eni}"),
        format!("{remote} → {vgw}"),
        format!("{remote} → (none)"),
    );
    assert_eq!(to(&rtb), [e.as_str(), v.as_str(), e.as_str()], "{done:#?}");
    assert_eq!(to(&bare), [e.as_str(), n.as_str(), e.as_str()], "{done:#?}");
    assert_secrets_absent(&bed.aws.fx, &aws, "(no metrics here)", &[ENV_SECRET]);
}
