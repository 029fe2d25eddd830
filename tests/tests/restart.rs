//! A warm restart end to end: agentd SIGKILLed on the AWS gateway under a 10 ms ping from the
//! app namespace, started again 2 s later (systemd's `RestartSec=2s`), with the active links it
//! kept in `<state_dir>/active.json`. Traffic resumes within a second of READY (typically a few
//! tens of milliseconds), the routes are adopted, not duplicated, and written once, and nothing
//! leaves in clear text meanwhile.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use isthmus_tests::topology::{now_ms, Side, TwoClouds, VPCS};
use isthmus_tests::{netctl, Agentd, Netns};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const UP: Duration = Duration::from_secs(15);
/// systemd's `RestartSec=` in the shipped unit.
const RESTART_SEC: Duration = Duration::from_secs(2);
/// The bound on READY → first reply through the tunnel: generous, the typical figure is far
/// below (printed).
const RESUME_WITHIN: Duration = Duration::from_secs(1);
const PROTO: &str = "73";

/// A `ping -D -i 0.01` from a namespace, its replies timestamped (wall clock, ms) by ping.
struct Pinger {
    child: Option<Child>,
    replies: Arc<Mutex<Vec<u64>>>,
    reader: Option<JoinHandle<()>>,
}

impl Pinger {
    fn start(ns: &Netns, addr: &str) -> Pinger {
        let mut child = ns
            .command("ping")
            .args(["-D", "-n", "-i", "0.01", "-W", "1", addr])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ping");
        let out = child.stdout.take().expect("stdout");
        let replies = Arc::new(Mutex::new(Vec::new()));
        let sink = replies.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if let Some(at) = reply_time(&line) {
                    sink.lock().unwrap().push(at);
                }
            }
        });
        Pinger {
            child: Some(child),
            replies,
            reader: Some(reader),
        }
    }

    /// The first reply at or after `since_ms`, waiting up to `timeout` for it.
    fn reply_after(&self, since_ms: u64, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let first = self
                .replies
                .lock()
                .unwrap()
                .iter()
                .copied()
                .find(|t| *t >= since_ms);
            if first.is_some() || Instant::now() >= deadline {
                return first;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Replies in `[from_ms, to_ms)`.
    fn replies_between(&self, from_ms: u64, to_ms: u64) -> usize {
        let r = self.replies.lock().unwrap();
        r.iter().filter(|t| (from_ms..to_ms).contains(*t)).count()
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGINT);
            let _ = child.wait();
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// `[1733100000.123456] 64 bytes from 10.2.0.10: icmp_seq=7 ttl=62 time=0.5 ms` → its time.
fn reply_time(line: &str) -> Option<u64> {
    if !line.contains(" bytes from ") {
        return None;
    }
    let stamp = line.strip_prefix('[')?.split(']').next()?;
    let secs: f64 = stamp.parse().ok()?;
    Some((secs * 1000.0) as u64)
}

#[test]
fn reply_times_come_from_ping_d_lines_only() {
    let line = "[1733100000.123456] 64 bytes from 10.2.0.10: icmp_seq=7 ttl=62 time=0.5 ms";
    assert_eq!(reply_time(line), Some(1_733_100_000_123));
    assert_eq!(
        reply_time("[1733100000.2] From 10.1.0.1 icmp_seq=8 Destination Net Unreachable"),
        None
    );
    assert_eq!(reply_time("64 bytes from 10.2.0.10: icmp_seq=7"), None);
}

/// An nftables counter of clear-text packets to the remote VPC leaving the AWS gateway through
/// its underlay (what the fail-closed routes must prevent).
struct LeakCounter<'a> {
    ns: &'a Netns,
}

impl<'a> LeakCounter<'a> {
    fn install(clouds: &'a TwoClouds) -> LeakCounter<'a> {
        let [u0, u1] = clouds.underlay_interfaces(0);
        clouds.aws.nft(&format!(
            "table inet leak {{\n  chain out {{\n    type filter hook postrouting priority 0;\n    \
             oifname {{ \"{u0}\", \"{u1}\" }} ip daddr {} counter\n  }}\n}}\n",
            VPCS[1].0
        ));
        LeakCounter { ns: &clouds.aws.ns }
    }

    fn packets(&self) -> u64 {
        let out = self
            .ns
            .command("nft")
            .args(["list", "table", "inet", "leak"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.split("packets ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no counter in {text}"))
    }
}

fn owned_routes(ns: &Netns) -> Vec<String> {
    let out = ns
        .command("ip")
        .args(["route", "show", "proto", PROTO])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .collect()
}

/// Route writes of the running agentd (since its start).
fn writes(side: &Side) -> u64 {
    netctl(&side.fx.socket(), &["--json", "routes"]).json()["writes"]
        .as_u64()
        .unwrap()
}

/// A side's `active_link_changed` events at or after `since_ms`: (to, reason).
fn switches(side: &Side, since_ms: u64) -> Vec<(String, String)> {
    side.events()
        .into_iter()
        .filter(|e| e["kind"] == "active_link_changed")
        .filter(|e| e["unix_ms"].as_u64().is_some_and(|t| t >= since_ms))
        .map(|e| {
            (
                e["to"].as_str().unwrap_or("none").to_owned(),
                e["reason"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// What one crash and warm restart of the AWS gateway's agentd showed.
struct Restart {
    killed: u64,
    ready: u64,
    resumed: Option<u64>,
    agentd: Agentd,
}

impl Restart {
    fn print(&self, what: &str) {
        // Negative: traffic was back a moment before READY was sent.
        let gap = |t: u64| format!("{} ms", t as i64 - self.ready as i64);
        println!(
            "{what}: kill → READY {} ms; READY → first reply through the tunnel {}; kill → first \
             reply {}",
            self.ready - self.killed,
            self.resumed.map_or("never".into(), gap),
            self.resumed
                .map_or("never".into(), |t| format!("{} ms", t - self.killed)),
        );
    }
}

/// SIGKILL the AWS agentd under `pinger`, check that nothing gets through meanwhile, start it
/// again after [`RESTART_SEC`] and wait for the first reply after READY.
fn crash_and_restart(
    clouds: &TwoClouds,
    aws: &mut Agentd,
    pinger: &Pinger,
    leaks: &LeakCounter,
) -> Restart {
    let killed = now_ms();
    aws.signal(Signal::SIGKILL);
    aws.wait_exit(Duration::from_secs(5));
    let routes = owned_routes(&clouds.aws.ns);
    assert_eq!(routes.len(), 1, "only the fail-closed route: {routes:#?}");
    std::thread::sleep(RESTART_SEC);
    let spawned = now_ms();
    let agentd = Agentd::start(&clouds.aws.fx, &clouds.aws.ns);
    let ready = now_ms();
    // 200 pings went out while agentd was dead: the fail-closed route refused them all.
    assert_eq!(
        pinger.replies_between(killed + 50, spawned),
        0,
        "pings reached the remote VPC while agentd was dead"
    );
    assert_eq!(leaks.packets(), 0, "clear text left while agentd was dead");
    // The routes may be in a moment before READY is sent: count from the start.
    let resumed = pinger.reply_after(spawned, UP);
    Restart {
        killed,
        ready,
        resumed,
        agentd,
    }
}

fn assert_resumed_in_time(r: &Restart) {
    let resumed = r.resumed.expect("traffic never came back");
    let took = Duration::from_millis(resumed.saturating_sub(r.ready));
    assert!(
        took <= RESUME_WITHIN,
        "traffic back {took:?} after READY (bound {RESUME_WITHIN:?})"
    );
}

/// Adopted, not duplicated: one tunnel route over `link` and the fail-closed route; written once.
fn assert_routes_adopted(clouds: &TwoClouds, link: usize) {
    let routes = owned_routes(&clouds.aws.ns);
    assert_eq!(routes.len(), 2, "{routes:#?}");
    let tunnel = format!("{} dev {} ", VPCS[1].0, clouds.interface(link));
    assert!(routes.iter().any(|r| r.starts_with(&tunnel)), "{routes:#?}");
    assert!(routes
        .iter()
        .any(|r| r.starts_with(&format!("unreachable {}", VPCS[1].0))));
    // The tunnel route, once: the fail-closed route is adopted, and the route does not come
    // and go while the peer still has the links down from the crash.
    assert_eq!(writes(&clouds.aws), 1, "{routes:#?}");
}

#[test]
fn a_warm_restart_after_sigkill_carries_traffic_within_a_second_of_ready() {
    let clouds = TwoClouds::new("wr").with_apps();
    let (mut aws, _oci) = clouds.start_agents();
    let leaks = LeakCounter::install(&clouds);
    let pinger = Pinger::start(clouds.aws_app(), VPCS[1].2);
    assert!(pinger.reply_after(0, Duration::from_secs(5)).is_some());
    let state = clouds.aws.fx.dir().join("state").join("active.json");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(saved["route_groups"]["remote"], "interconnect", "{saved:#}");

    let r = crash_and_restart(&clouds, &mut aws, &pinger, &leaks);
    r.print("warm restart");
    assert_resumed_in_time(&r);
    // Both gateways route through the interconnect again, and the restarted one went straight
    // there (the link it kept), with no stop at fail-closed.
    clouds.aws.wait_active("remote", "interconnect", UP);
    clouds.oci.wait_active("remote", "interconnect", UP);
    let here = switches(&clouds.aws, r.killed);
    assert_eq!(here.len(), 1, "{here:?}");
    assert!(
        here[0].0 == "interconnect" && here[0].1.contains("restart"),
        "{here:?}"
    );
    let there = switches(&clouds.oci, r.ready);
    assert!(
        there.iter().all(|(to, _)| to != "none"),
        "the peer failed closed after the restart: {there:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_routes_adopted(&clouds, 0);
    assert_eq!(leaks.packets(), 0);
    drop(r.agentd);
}

#[test]
fn a_restart_while_failed_over_stays_off_the_cut_link() {
    let clouds = TwoClouds::new("wf").with_apps();
    let (mut aws, _oci) = clouds.start_agents();
    let leaks = LeakCounter::install(&clouds);
    let pinger = Pinger::start(clouds.aws_app(), VPCS[1].2);
    clouds.cut_interconnect(true);
    clouds.aws.wait_active("remote", "internet", UP);
    clouds.oci.wait_active("remote", "internet", UP);
    std::thread::sleep(Duration::from_millis(500));

    let r = crash_and_restart(&clouds, &mut aws, &pinger, &leaks);
    r.print("warm restart while failed over");
    assert_resumed_in_time(&r);
    // Longer than failback_after (3 s): the cut lasts, neither gateway goes back to it.
    let hold = Instant::now();
    while hold.elapsed() < Duration::from_secs(5) {
        for side in [&clouds.aws, &clouds.oci] {
            assert_eq!(
                side.active("remote").as_deref(),
                Some("internet"),
                "{}: left the internet link while the interconnect is cut",
                side.name
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for side in [&clouds.aws, &clouds.oci] {
        let s = switches(side, r.killed);
        assert!(
            s.iter().all(|(to, _)| to != "interconnect"),
            "{}: went to the cut link: {s:?}",
            side.name
        );
    }
    assert_eq!(switches(&clouds.aws, r.killed).len(), 1);
    assert_routes_adopted(&clouds, 1);
    assert_eq!(leaks.packets(), 0);
    drop(r.agentd);
}

#[test]
fn a_corrupt_or_stale_state_file_is_ignored_with_one_warning_and_the_start_is_cold() {
    let clouds = TwoClouds::new("wc").with_apps();
    let (aws, _oci) = clouds.start_agents();
    let leaks = LeakCounter::install(&clouds);
    let pinger = Pinger::start(clouds.aws_app(), VPCS[1].2);
    let state = clouds.aws.fx.dir().join("state").join("active.json");
    let unknown_link = format!(
        "{{\"version\": 1, \"saved_unix_ms\": {}, \"route_groups\": {{\"remote\": \"direct-connect\"}}}}",
        now_ms()
    );
    let cases = [
        (
            "corrupt",
            "{\"version\": 1, \"route_gr".to_owned(),
            "not restoring",
        ),
        (
            "a link no longer configured",
            unknown_link,
            "remote → direct-connect",
        ),
    ];
    let mut aws = aws;
    for (what, text, says) in cases {
        let killed = now_ms();
        aws.signal(Signal::SIGKILL);
        aws.wait_exit(Duration::from_secs(5));
        std::fs::write(&state, text).unwrap();
        std::thread::sleep(RESTART_SEC);
        aws = Agentd::start(&clouds.aws.fx, &clouds.aws.ns);
        let ready = now_ms();
        let resumed = pinger.reply_after(ready, UP);
        println!(
            "cold start ({what} state file): READY → first reply {}",
            resumed.map_or("never".into(), |t| format!(
                "{} ms",
                t as i64 - ready as i64
            ))
        );
        assert!(resumed.is_some(), "{what}: traffic never came back");
        clouds.aws.wait_active("remote", "interconnect", UP);
        let log = aws.log_text();
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.contains("WARN") && (l.contains("state file") || l.contains("active.json"))
            })
            .collect();
        assert_eq!(warnings.len(), 1, "{what}: {log}");
        assert!(warnings[0].contains(says), "{what}: {log}");
        let here = switches(&clouds.aws, killed);
        assert!(
            here.first()
                .is_some_and(|(_, why)| why == "first usable link"),
            "{what}: a cold start's choice: {here:?}"
        );
        // The file is rewritten with the new choice.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(&state).unwrap_or_default();
            if serde_json::from_str::<serde_json::Value>(&text)
                .is_ok_and(|v| v["route_groups"]["remote"] == "interconnect")
            {
                break;
            }
            assert!(Instant::now() < deadline, "{what}: never rewritten: {text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert_eq!(leaks.packets(), 0);
}
