//! DNS failover benchmark (not part of the test suite): from agentd's decision to a new answer
//! to the moment the DNS server serves it, over many switches, against `nsupdate` doing the
//! same update in the same run.
//!
//! One bed (`dns_bed::DnsBed`: two clouds, a primary and a DR database listener behind the OCI
//! gateway, BIND 9 in the AWS gateway's namespace), the AWS gateway serving DNS group
//! `orders-db` (`failback_after` 1 s). A poller in the AWS gateway's namespace asks named for
//! the record every millisecond and notes when each answer first appears. `SWITCHES` times
//! (default 20) the primary listener is stopped (failover to DR) or started again (failback to
//! the primary); each switch is measured from the `answer_changed` event (`unix_ms`, the
//! engine's decision) to the poller's first sight of the new answer. agentd's own figure
//! (`last_change_ms` in `netctl actions`: decision → update verified by its own read) is
//! printed beside it.
//!
//! The peer: with agentd stopped, `nsupdate -k` sends the same signed delete+add `SWITCHES`
//! times, measured from its spawn to the poller's first sight (so it includes starting a
//! process, as a hook that calls nsupdate would).
//!
//! ```text
//! cargo build --release -p isthmus-agentd -p isthmus-netctl
//! cargo build --release -p isthmus-tests --bin dns-bench
//! (as root) target/release/dns-bench          # SWITCHES=20
//! ```

use std::io::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use isthmus_tests::bind::require_named;
use isthmus_tests::dns_bed::{
    listener_addr, serve_group, DnsBed, Listener, DR, GROUP, NAMED, PRIMARY, RECORD,
};
use isthmus_tests::topology::{now_ms, Side};
use isthmus_tests::{netctl, Netns};

const LONG: Duration = Duration::from_secs(30);
/// How often the poller asks.
const POLL: Duration = Duration::from_millis(1);

/// Asks named for the record every [`POLL`] from inside a namespace and keeps each change of
/// the answer with the time it was first seen (unix ms).
struct Poller {
    seen: Arc<Mutex<Vec<(u64, String)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Poller {
    fn start(ns: &Netns, server: SocketAddr, name: &str) -> Poller {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, flag) = (seen.clone(), stop.clone());
        let path = std::path::Path::new("/run/netns").join(ns.name());
        let query = query_message(name);
        let thread = std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("opening the namespace");
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let sock = UdpSocket::bind("0.0.0.0:0").expect("poller socket");
            sock.set_read_timeout(Some(Duration::from_millis(50)))
                .expect("read timeout");
            let mut last = String::new();
            let mut buf = [0u8; 1500];
            while !flag.load(Ordering::Relaxed) {
                let _ = sock.send_to(&query, server);
                if let Ok(n) = sock.recv(&mut buf) {
                    if let Some(answer) = a_values(&buf[..n], &query[..2]) {
                        if answer != last {
                            s.lock().unwrap().push((now_ms(), answer.clone()));
                            last = answer;
                        }
                    }
                }
                std::thread::sleep(POLL);
            }
        });
        Poller {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// When `value` was first served at or after `since_ms`.
    fn first_seen(&self, value: &str, since_ms: u64, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let found = self
                .seen
                .lock()
                .unwrap()
                .iter()
                .find(|(t, v)| *t >= since_ms && v == value)
                .map(|(t, _)| *t);
            if let Some(t) = found {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "{value} not served within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A query for `name` A (no recursion), with a fixed id.
fn query_message(name: &str) -> Vec<u8> {
    let mut m = vec![0x1a, 0x2b, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    m
}

/// The A values of a reply with id `id`, sorted and joined by spaces (empty: no records);
/// `None` for anything else.
fn a_values(reply: &[u8], id: &[u8]) -> Option<String> {
    if reply.len() < 12 || &reply[..2] != id {
        return None;
    }
    let answers = u16::from_be_bytes([reply[6], reply[7]]);
    let skip_name = |mut i: usize| -> Option<usize> {
        loop {
            let len = *reply.get(i)? as usize;
            if len == 0 {
                return Some(i + 1);
            }
            if len & 0xc0 == 0xc0 {
                return Some(i + 2);
            }
            i += 1 + len;
        }
    };
    let mut i = skip_name(12)? + 4;
    let mut values = Vec::new();
    for _ in 0..answers {
        i = skip_name(i)?;
        let head = reply.get(i..i + 10)?;
        let rtype = u16::from_be_bytes([head[0], head[1]]);
        let len = u16::from_be_bytes([head[8], head[9]]) as usize;
        let data = reply.get(i + 10..i + 10 + len)?;
        if rtype == 1 && len == 4 {
            values.push(format!("{}.{}.{}.{}", data[0], data[1], data[2], data[3]));
        }
        i += 10 + len;
    }
    values.sort();
    Some(values.join(" "))
}

/// The `unix_ms` of the first `answer_changed` to `to` at or after `since_ms`.
fn decision_at(side: &Side, to: &str, since_ms: u64) -> u64 {
    let deadline = Instant::now() + LONG;
    loop {
        let found = side
            .events()
            .iter()
            .filter(|e| e["kind"] == "answer_changed" && e["group"] == GROUP && e["to"] == to)
            .filter_map(|e| e["unix_ms"].as_u64())
            .find(|t| *t >= since_ms);
        if let Some(t) = found {
            return t;
        }
        assert!(Instant::now() < deadline, "no answer_changed to {to}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// agentd's own decision → verified time, once the record is in sync on `value`.
fn verified_ms(side: &Side, value: &str) -> f64 {
    let deadline = Instant::now() + LONG;
    loop {
        let json = netctl(&side.fx.socket(), &["--json", "actions"]).json();
        if let Some(a) = json["actions"].as_array().and_then(|l| {
            l.iter()
                .find(|a| a["target"] == GROUP && a["state"] == "in_sync" && a["observed"] == value)
        }) {
            return a["last_change_ms"].as_f64().unwrap_or(f64::NAN);
        }
        assert!(
            Instant::now() < deadline,
            "not in sync on {value}: {json:#}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// p50 / p95 / max by nearest rank.
fn summary(values: &[i64]) -> (i64, i64, i64) {
    let mut v = values.to_vec();
    v.sort();
    let rank = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    (rank(0.5), rank(0.95), *v.last().unwrap())
}

fn main() {
    isthmus_tests::require_root();
    if !require_named() {
        return;
    }
    let switches: usize = std::env::var("SWITCHES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let mut bed = DnsBed::new("bn", None);
    serve_group(&bed.clouds.aws, &bed.key.text, Duration::from_secs(1));
    let (aws_agentd, oci_agentd) = bed.clouds.start_agents();
    let named: SocketAddr = NAMED.parse().unwrap();
    let poller = Poller::start(&bed.clouds.aws.ns, named, RECORD);
    poller.first_seen(PRIMARY, 0, LONG);
    std::thread::sleep(Duration::from_secs(2));

    println!("switch  to          decision→served ms   agentd decision→verified ms");
    let mut agentd = Vec::new();
    for i in 0..switches {
        let to = if i % 2 == 0 { DR } else { PRIMARY };
        let since = now_ms();
        if to == DR {
            bed.primary.stop();
        } else {
            bed.primary = Listener::start(bed.clouds.oci_app(), listener_addr(PRIMARY));
        }
        let decided = decision_at(&bed.clouds.aws, to, since);
        let served = poller.first_seen(to, since, LONG);
        let verified = verified_ms(&bed.clouds.aws, to);
        let took = served as i64 - decided as i64;
        println!("{:>6}  {to:<10}  {took:>19}   {verified:>27.1}", i + 1);
        agentd.push(took);
        // Let the probes see the listener's new state settle before the next switch.
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(aws_agentd);
    drop(oci_agentd);

    // The peer: nsupdate, with the same key, the same signed delete+add.
    let key = bed.clouds.aws.fx.dir().join("tsig.key");
    let mut peer = Vec::new();
    for i in 0..switches {
        let value = if i % 2 == 0 { "10.2.3.10" } else { "10.2.4.10" };
        let script = format!(
            "server {} {}\nzone fo.test.\nupdate delete {RECORD} A\nupdate add {RECORD} 5 A {value}\nsend\n",
            named.ip(),
            named.port()
        );
        let since = now_ms();
        let mut child = bed
            .clouds
            .aws
            .ns
            .command("nsupdate")
            .arg("-k")
            .arg(&key)
            .stdin(Stdio::piped())
            .spawn()
            .expect("nsupdate (bind9-dnsutils)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "nsupdate failed");
        let served = poller.first_seen(value, since, LONG);
        peer.push(served as i64 - since as i64);
    }
    drop(poller);

    let (a50, a95, amax) = summary(&agentd);
    let (p50, p95, pmax) = summary(&peer);
    println!();
    println!("                         switches   p50 / p95 / max ms");
    println!(
        "agentd decision→served   {:>8}   {a50} / {a95} / {amax}",
        agentd.len()
    );
    println!(
        "nsupdate spawn→served    {:>8}   {p50} / {p95} / {pmax}",
        peer.len()
    );
    println!(
        "agentd p95 {a95} ms (goal ≤ 200 ms: {}); ratio to nsupdate p95: {:.2}",
        if a95 <= 200 { "PASS" } else { "MISS" },
        a95 as f64 / (p95.max(1)) as f64
    );
}
