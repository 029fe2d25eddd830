//! Path-MTU benchmark (not part of the test suite), on the bed of `isthmus_tests::mtu_bed`
//! (jumbo hosts and interconnect, a 1500-byte internet path, ICMP dropped):
//!
//! - **Throughput**: iperf3 from the AWS app to the OCI database over the interconnect, with the
//!   interconnect at `mtu = "auto"` (it finds 8920) against the fixed 1420, interleaved in the
//!   same run: Gbit/s, TCP retransmits and both agentds' CPU seconds per GB received.
//! - **Settle**: from agentd's start to both gateways reporting the jumbo interconnect in both
//!   directions.
//! - **Shrink**: a 50 MB transfer paced at 25 MB/s over the auto interconnect, which a relay
//!   shrinks to 1400-byte packets (silently, as with ICMP filtered) 0.6 s in: when each gateway
//!   found the black hole, the receiver's longest wait for data, and the checksums.
//!
//! ```text
//! cargo build --release -p isthmus-agentd -p isthmus-netctl
//! cargo build --release -p isthmus-tests --bin mtu-bench --bin xfer
//! (as root) ROUNDS=3 DURATION=10 target/release/mtu-bench
//! ```
//!
//! It runs agentd, netctl and xfer from the directory of its own binary, so build them in the
//! same profile. The machines are shared and noisy: only the ratios within one run compare.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use isthmus_tests::mtu_bed::{bed, db, figure, wait_jumbo, wait_mtu, Xfer, MB50, PACE};
use isthmus_tests::topology::{now_ms, TwoClouds, VPCS};
use isthmus_tests::{cpu_seconds, Agentd};

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Throughput {
    gbps: f64,
    retransmits: u64,
    cpu_per_gb: f64,
    settle: Option<Duration>,
}

fn iperf(clouds: &TwoClouds, agents: &(Agentd, Agentd), seconds: u64) -> (f64, u64, f64) {
    let mut server = clouds
        .oci_app()
        .command("iperf3")
        .args(["-s", "-1", "-B", VPCS[1].2])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 is missing: apt-get install iperf3");
    std::thread::sleep(Duration::from_millis(300));
    let cpu = || cpu_seconds(agents.0.pid()) + cpu_seconds(agents.1.pid());
    let before = cpu();
    let out = clouds
        .aws_app()
        .command("iperf3")
        .args(["-c", VPCS[1].2, "-t", &seconds.to_string(), "-J"])
        .output()
        .expect("iperf3");
    let used = cpu() - before;
    let _ = server.kill();
    let _ = server.wait();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("iperf3 -J output");
    let end = &json["end"];
    let bits = end["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    let bytes = end["sum_received"]["bytes"].as_f64().unwrap_or(0.0);
    let retransmits = end["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
    (bits / 1e9, retransmits, used / (bytes / 1e9).max(1e-9))
}

fn throughput(tag: &str, auto: bool, seconds: u64) -> Throughput {
    let clouds = bed(tag, if auto { &["interconnect"] } else { &[] });
    let started = Instant::now();
    let agents = clouds.start_agents();
    let settle = auto.then(|| {
        wait_jumbo(&clouds);
        started.elapsed()
    });
    let (gbps, retransmits, cpu_per_gb) = iperf(&clouds, &agents, seconds);
    Throughput {
        gbps,
        retransmits,
        cpu_per_gb,
        settle,
    }
}

struct Shrink {
    found_ms: [u64; 2],
    stall: Duration,
    ok: bool,
}

fn shrink(tag: &str) -> Shrink {
    let mut clouds = bed(tag, &["interconnect"]);
    let relay = clouds.relay(0);
    let _agents = clouds.start_agents();
    wait_jumbo(&clouds);
    let x = Xfer::start(
        clouds.aws_app(),
        clouds.oci_app(),
        db(5301),
        MB50,
        Some(PACE),
    );
    std::thread::sleep(Duration::from_millis(600));
    let at = now_ms();
    relay.set_max_datagram(Some(1400 - 28));
    let r = x.finish();
    let mut found_ms = [0; 2];
    for (i, side) in [&clouds.aws, &clouds.oci].into_iter().enumerate() {
        wait_mtu(side, "interconnect", Duration::from_secs(30), |m| {
            figure(m, "black_holes") >= 1
        });
        found_ms[i] = side
            .events()
            .iter()
            .find(|e| {
                e["kind"] == "path_mtu"
                    && e["link"] == "interconnect"
                    && e["to"] == "1280"
                    && e["unix_ms"].as_u64() >= Some(at)
            })
            .and_then(|e| e["unix_ms"].as_u64())
            .map_or(0, |t| t - at);
    }
    Shrink {
        found_ms,
        stall: r.stall,
        ok: r.sent == r.received,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn main() {
    isthmus_tests::require_root();
    if Command::new("iperf3").arg("--version").output().is_err() {
        eprintln!("mtu-bench: iperf3 is missing: apt-get install iperf3");
        std::process::exit(2);
    }
    let rounds = knob("ROUNDS", 3);
    let seconds = knob("DURATION", 10);
    let mut auto = Vec::new();
    let mut fixed = Vec::new();
    let mut shrinks = Vec::new();
    for round in 0..rounds {
        let a = throughput(&format!("xa{round}"), true, seconds);
        let f = throughput(&format!("xf{round}"), false, seconds);
        let s = shrink(&format!("xs{round}"));
        println!(
            "round {}: auto {:.2} Gbit/s ({} retrans, {:.2} CPU-s/GB, settled in {:.2} s), \
             fixed 1420 {:.2} Gbit/s ({} retrans, {:.2} CPU-s/GB); shrink: found after {} / {} ms, \
             longest stall {} ms, checksums {}",
            round + 1,
            a.gbps,
            a.retransmits,
            a.cpu_per_gb,
            a.settle.unwrap_or_default().as_secs_f64(),
            f.gbps,
            f.retransmits,
            f.cpu_per_gb,
            s.found_ms[0],
            s.found_ms[1],
            s.stall.as_millis(),
            if s.ok { "match" } else { "DIFFER" }
        );
        auto.push(a);
        fixed.push(f);
        shrinks.push(s);
    }
    let ratio = |f: &dyn Fn(&Throughput) -> f64| {
        median(auto.iter().zip(&fixed).map(|(a, b)| f(a) / f(b)).collect())
    };
    println!();
    println!("| | auto (8920) | fixed 1420 | auto / fixed |");
    println!("|---|---|---|---|");
    println!(
        "| iperf3 Gbit/s, 1 stream | {:.2} | {:.2} | {:.2} |",
        median(auto.iter().map(|t| t.gbps).collect()),
        median(fixed.iter().map(|t| t.gbps).collect()),
        ratio(&|t| t.gbps)
    );
    println!(
        "| agentd CPU-s per GB (both) | {:.2} | {:.2} | {:.2} |",
        median(auto.iter().map(|t| t.cpu_per_gb).collect()),
        median(fixed.iter().map(|t| t.cpu_per_gb).collect()),
        ratio(&|t| t.cpu_per_gb)
    );
    println!(
        "| TCP retransmits | {} | {} | |",
        median(auto.iter().map(|t| t.retransmits as f64).collect()),
        median(fixed.iter().map(|t| t.retransmits as f64).collect())
    );
    println!();
    println!(
        "settle on the jumbo interconnect after start: median {:.2} s, max {:.2} s",
        median(
            auto.iter()
                .filter_map(|t| t.settle)
                .map(|d| d.as_secs_f64())
                .collect()
        ),
        auto.iter()
            .filter_map(|t| t.settle)
            .max()
            .unwrap_or_default()
            .as_secs_f64()
    );
    let found: Vec<f64> = shrinks
        .iter()
        .flat_map(|s| s.found_ms)
        .map(|m| m as f64)
        .collect();
    println!(
        "shrink 8920 -> 1340 under a transfer: black hole found after median {:.0} ms (max {:.0}), \
         longest stall median {:.0} ms (max {} ms), checksums matched in {}/{}",
        median(found.clone()),
        found.iter().copied().fold(0.0, f64::max),
        median(shrinks.iter().map(|s| s.stall.as_millis() as f64).collect()),
        shrinks.iter().map(|s| s.stall.as_millis()).max().unwrap_or(0),
        shrinks.iter().filter(|s| s.ok).count(),
        shrinks.len()
    );
}
