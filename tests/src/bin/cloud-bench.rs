//! Cloud route table benchmark (not part of the test suite): how long after agentd's decision
//! the VPC route table changes at the cloud API, beside the kernel route move of the same
//! failover.
//!
//! One two-cloud bed (`TwoClouds`), moto_server inside the AWS gateway's namespace, a VPC there
//! whose route table sends the OCI VCN (10.2.0.0/16) to the gateway's ENI while the route group
//! has a link and to a VPN gateway when it fails closed. A link failover does not change the
//! table (the ENI stays the target), so each trial measures the two moves that do:
//!
//! 1. **fail closed**: both links cut (nftables, UDP on both underlays of the AWS gateway):
//!    the decision (`active_link_changed` to none), the kernel's tunnel route deleted (`ip
//!    monitor route`), the table's route on the VGW at moto (DescribeRouteTables polled);
//! 2. **return**: the internet link restored: the decision (to `internet`), the kernel route
//!    over its tunnel added, the table's route back on the ENI.
//!
//! Then the interconnect is restored and the group fails back to it before the next trial.
//!
//! ```text
//! cargo build --release -p isthmus-agentd -p isthmus-netctl
//! cargo build --release -p isthmus-tests --bin cloud-bench
//! (as root) TRIALS=10 target/release/cloud-bench
//! ```
//!
//! It runs agentd and netctl from the directory of its own binary; the Python venv with moto
//! as the tests find it (`ISTHMUS_PYENV`, else /var/tmp/isthmus-pyenv). See
//! tests/bench/README.md for how to read the output.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use isthmus_tests::moto::{self, route_target, steer_route_tables, Moto, Vpc};
use isthmus_tests::topology::{now_ms, Side, TwoClouds};
use isthmus_tests::Agentd;

const GROUP: &str = "remote";
const REMOTE: &str = "10.2.0.0/16";
const REGION: &str = "eu-central-1";
const MOTO: &str = "127.0.0.1:5055";
const ENDPOINT: &str = "http://127.0.0.1:5055";
const UP: Duration = Duration::from_secs(60);
/// Longer than `[actions] min_interval` (default 1 s).
const MIN_INTERVAL_AND_MORE: Duration = Duration::from_millis(1500);
/// How often the table is read at moto (each read costs moto a few ms of Python).
const POLL: Duration = Duration::from_millis(10);

/// Lines of `ip monitor route` in the AWS gateway's namespace, with their arrival time.
type Lines = Arc<Mutex<Vec<(u64, String)>>>;
/// The table's route target at moto, each time it changed: (time, target).
type Seen = Arc<Mutex<Vec<(u64, Option<String>)>>>;

fn main() {
    isthmus_tests::require_root();
    let trials: usize = std::env::var("TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(10);
    let Some(pyenv) = moto::pyenv("cloud-bench") else {
        std::process::exit(2);
    };
    let bed = TwoClouds::new("cb");
    let moto = Arc::new(Moto::start_in(&pyenv, &bed.aws.ns, MOTO.parse().unwrap()));
    let vpc = Vpc::create(&moto, REGION);
    steer_route_tables(
        &bed.aws.fx,
        &format!("region = \"{REGION}\"\nec2_endpoint = \"{ENDPOINT}\"\nimds_endpoint = \"http://127.0.0.1:1\"\n"),
        &[(&vpc.rtb, &vpc.eni, &vpc.vgw)],
    );
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKIDBENCH".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "bench-secret".to_string()),
    ];
    let _aws = Agentd::spawn(&bed.aws.fx, &bed.aws.ns, &env).wait_ready();
    let _oci = Agentd::start(&bed.oci.fx, &bed.oci.ns);
    bed.aws.wait_links_up(&["interconnect", "internet"], UP);
    bed.aws.wait_active(GROUP, "interconnect", UP);

    let stop = Arc::new(AtomicBool::new(false));
    let lines: Lines = Arc::default();
    let mut monitor = bed
        .aws
        .ns
        .command("ip")
        .args(["monitor", "route"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("ip monitor route");
    let out = monitor.stdout.take().expect("stdout");
    let l = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            l.lock().unwrap().push((now_ms(), line));
        }
    });
    let seen: Seen = Arc::default();
    let call_ms: Arc<Mutex<Vec<f64>>> = Arc::default();
    let poller = {
        let (seen, stop, call_ms) = (seen.clone(), stop.clone(), call_ms.clone());
        let form = format!(
            "Action=DescribeRouteTables&Version=2016-11-15&RouteTableId.1={}",
            vpc.rtb
        );
        let moto = moto.clone();
        std::thread::spawn(move || {
            let mut last: Option<Option<String>> = None;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                if let Ok((200, body)) = moto.call("ec2", REGION, "POST", "/", &form) {
                    call_ms
                        .lock()
                        .unwrap()
                        .push(t.elapsed().as_secs_f64() * 1e3);
                    let target = route_target(&body, REMOTE);
                    if last.as_ref() != Some(&target) {
                        seen.lock().unwrap().push((now_ms(), target.clone()));
                        last = Some(target);
                    }
                }
                std::thread::sleep(POLL);
            }
        })
    };
    wait_moto(&seen, Some(&vpc.eni), 0);

    // The first write (the ENI at start-up) must not hold the first trial's.
    std::thread::sleep(MIN_INTERVAL_AND_MORE);
    let ifaces = [bed.interface(0), bed.interface(1)];
    let mut closed = Vec::new();
    let mut back = Vec::new();
    println!(
        "trial  move         decision→kernel  decision→moto  agentd's own (decision→verified)"
    );
    for trial in 1..=trials {
        // Fail closed.
        let t0 = now_ms();
        cut(&bed, 0);
        cut(&bed, 1);
        let decided = wait_event(&bed.aws, t0, None);
        // After the decision: a move to the internet link first (one cut seen before the other)
        // deletes a route too.
        let kernel = wait_line(&lines, decided, &format!("Deleted {REMOTE} dev"));
        let at_moto = wait_moto(&seen, Some(&vpc.vgw), t0);
        let own = last_change_ms(&bed.aws);
        let m = Move::new(decided, kernel, at_moto, own);
        m.print(trial, "fail closed");
        closed.push(m);
        // Return over the internet link, after `[actions] min_interval` (1 s): a return
        // sooner waits for it (at most one write per table per interval), which is pacing,
        // not the time to publish.
        std::thread::sleep(MIN_INTERVAL_AND_MORE);
        let t1 = now_ms();
        restore(&bed.aws, 1);
        let decided = wait_event(&bed.aws, t1, Some("internet"));
        let kernel = wait_line(&lines, t1, &format!("{REMOTE} dev {}", ifaces[1]));
        let at_moto = wait_moto(&seen, Some(&vpc.eni), t1);
        let own = last_change_ms(&bed.aws);
        let m = Move::new(decided, kernel, at_moto, own);
        m.print(trial, "return");
        back.push(m);
        // Back to the interconnect (no table change) before the next trial.
        restore(&bed.aws, 0);
        bed.aws.wait_active(GROUP, "interconnect", UP);
        std::thread::sleep(Duration::from_secs(2));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = poller.join();
    let _ = monitor.kill();
    let _ = monitor.wait();

    let calls = call_ms.lock().unwrap().clone();
    println!(
        "\nmoto DescribeRouteTables poll every {} ms, one call median {:.1} ms (the resolution of decision→moto)",
        POLL.as_millis(),
        median(calls)
    );
    println!("median of {trials}      decision→kernel  decision→moto  agentd's own  moto/kernel");
    for (name, ms) in [("fail closed", &closed), ("return", &back)] {
        let k = median(ms.iter().map(|m| m.kernel).collect());
        let c = median(ms.iter().map(|m| m.moto).collect());
        let o = median(ms.iter().map(|m| m.own).collect());
        println!(
            "{name:<12}      {k:>10.0} ms  {c:>10.0} ms  {o:>8.0} ms  {:>8.1}×",
            c / k.max(1.0)
        );
    }
}

struct Move {
    kernel: f64,
    moto: f64,
    own: f64,
}

impl Move {
    fn new(decided: u64, kernel: u64, moto: u64, own: f64) -> Move {
        Move {
            kernel: kernel.saturating_sub(decided) as f64,
            moto: moto.saturating_sub(decided) as f64,
            own,
        }
    }

    fn print(&self, trial: usize, name: &str) {
        println!(
            "{trial:>5}  {name:<12} {:>12.0} ms  {:>10.0} ms  {:>10.0} ms",
            self.kernel, self.moto, self.own
        );
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

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

/// The time of the first `active_link_changed` of the group to `to` at or after `since`.
fn wait_event(side: &Side, since: u64, to: Option<&str>) -> u64 {
    let deadline = Instant::now() + UP;
    loop {
        let found = side
            .events()
            .iter()
            .filter(|e| e["kind"] == "active_link_changed" && e["group"] == GROUP)
            .filter(|e| e["to"].as_str() == to)
            .filter_map(|e| e["unix_ms"].as_u64())
            .find(|t| *t >= since);
        if let Some(t) = found {
            return t;
        }
        assert!(Instant::now() < deadline, "no switch of {GROUP} to {to:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The arrival time of the first monitor line at or after `since` that contains `text`.
fn wait_line(lines: &Lines, since: u64, text: &str) -> u64 {
    let deadline = Instant::now() + UP;
    loop {
        let found = lines
            .lock()
            .unwrap()
            .iter()
            .find(|(t, l)| *t >= since && l.contains(text))
            .map(|(t, _)| *t);
        if let Some(t) = found {
            return t;
        }
        assert!(Instant::now() < deadline, "no route change {text:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// When moto first showed `target` at or after `since`.
fn wait_moto(seen: &Seen, target: Option<&str>, since: u64) -> u64 {
    let deadline = Instant::now() + UP;
    loop {
        let found = seen
            .lock()
            .unwrap()
            .iter()
            .find(|(t, v)| *t >= since && v.as_deref() == target)
            .map(|(t, _)| *t);
        if let Some(t) = found {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "moto never showed {REMOTE} → {target:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// agentd's own figure for the table's last change (`netctl actions`: decision → verified).
fn last_change_ms(side: &Side) -> f64 {
    let deadline = Instant::now() + UP;
    loop {
        let a = isthmus_tests::netctl(&side.fx.socket(), &["--json", "actions"]).json();
        let t = &a["actions"][0];
        if t["state"] == "in_sync" {
            if let Some(ms) = t["last_change_ms"].as_f64() {
                return ms;
            }
        }
        assert!(Instant::now() < deadline, "the table is not in sync: {a:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
