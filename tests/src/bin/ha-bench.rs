//! HA takeover benchmark (not part of the test suite), on the bed of `isthmus_tests::ha_bed`:
//! a pair of gateways in each cloud on a three-member etcd (50 ms heartbeat, 500 ms election,
//! as on a VPC), moto's route table and the OCI stub's, a fabric in each cloud that follows
//! its table. The AWS pair's lease: `LEASE_MS`
//! (default 1000, the shortest etcd grants with that election timeout), margin and write
//! deadline a quarter of it each.
//!
//! Each trial kills the active AWS gateway (`kill -9` and its links down, as a power loss)
//! while the app pings the database every 10 ms and a paced TCP transfer runs across: the
//! longest gap in the replies, the time to the route table naming the new active, and whether
//! the TCP connection survived with matching checksums. The killed gateway then comes back (as
//! standby) and the next trial kills the other. Anchors: keepalived ≈ 3.5 s plus the cloud API
//! call, Tailscale subnet routers ≈ 15 s, headscale ≈ 70 s (docs/ha.md).
//!
//! ```text
//! cargo build --release -p isthmus-agentd -p isthmus-netctl
//! cargo build --release -p isthmus-tests --bin ha-bench --bin xfer
//! (as root) TRIALS=10 [LEASE_MS=2000] target/release/ha-bench
//! ```
//!
//! It needs the test Python venv (tests/pyenv install) for moto.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use isthmus_tests::ha_bed::{Aws, HaBed, DB, LONG};
use isthmus_tests::topology::now_ms;
use isthmus_tests::transfer::Xfer;
use isthmus_tests::{moto, Agentd, Pinger};

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let trials = knob("TRIALS", 10) as usize;
    let pyenv = moto::pyenv("ha-bench").expect("the test venv (tests/pyenv install)");
    let bed = HaBed::new("hz", &pyenv);
    // The lease's timings (LEASE_MS: the TTL in whole seconds; the margin and the write
    // deadline a quarter of it each, the request timeout just under a third).
    let ttl = knob("LEASE_MS", 1000);
    for i in 0..2 {
        let fx = &bed.gw(Aws, i).fx;
        fx.set("ha", "lease_ttl", format!("{}s", ttl / 1000).into());
        fx.set("ha", "margin", format!("{}ms", ttl / 4).into());
        fx.set("ha", "write_deadline", format!("{}ms", ttl / 4).into());
        fx.set("ha", "request_timeout", format!("{}ms", ttl / 4).into());
    }
    println!(
        "lease {} ms, margin and write deadline {} ms; etcd heartbeat 50 ms, election 500 ms",
        ttl,
        ttl / 4
    );
    let [[a, b], _oci] = bed.start_pairs();
    let mut gws: [Option<Agentd>; 2] = [Some(a), Some(b)];

    let mut gaps = Vec::new();
    let mut tables = Vec::new();
    let mut survived = 0;
    let mut active = 0;
    for trial in 0..trials {
        let standby = 1 - active;
        // Wait until the standby is ready to take over (its link up and published).
        let deadline = Instant::now() + LONG;
        while bed.pair(Aws, active)["other"]["ready"] != true {
            assert!(Instant::now() < deadline, "{} not ready", Aws.name(standby));
            std::thread::sleep(Duration::from_millis(100));
        }
        let ping = Pinger::start(&bed.app, DB, 2500);
        let to: SocketAddr = format!("{DB}:{}", 5200 + trial).parse().unwrap();
        let xfer = Xfer::start(&bed.app, &bed.db, to, 20 << 20, Some(1 << 20));
        std::thread::sleep(Duration::from_secs(3));
        let killed = now_ms();
        let t0 = Instant::now();
        if let Some(mut g) = gws[active].take() {
            g.signal(nix::sys::signal::Signal::SIGKILL);
            let _ = g.wait_exit(Duration::from_secs(5));
        }
        bed.power_off(Aws, active);
        bed.wait_table(Aws, standby, LONG);
        let table = t0.elapsed();
        bed.wait_followed(Aws, standby, &[0, 1], LONG);
        std::thread::sleep(Duration::from_secs(2));
        let report = ping.stop();
        let gap = report.longest_gap_after(killed);
        let x = xfer.finish();
        let ok = x.sent == x.received;
        survived += usize::from(ok);
        println!(
            "trial {:2}: killed {}, ping gap {:5} ms, table at {:5} ms, TCP {}",
            trial + 1,
            Aws.name(active),
            gap.as_millis(),
            table.as_millis(),
            if ok {
                "survived, checksums match"
            } else {
                "BROKEN"
            }
        );
        gaps.push(gap.as_secs_f64());
        tables.push(table.as_secs_f64());
        // The killed gateway comes back as standby.
        bed.power_on(Aws, active);
        gws[active] = Some(bed.start(Aws, active));
        bed.wait_role(Aws, active, "standby", LONG);
        active = standby;
    }
    gaps.sort_by(f64::total_cmp);
    tables.sort_by(f64::total_cmp);
    println!(
        "\n{trials} takeovers: ping gap p50 {:.2} s, p95 {:.2} s, max {:.2} s; route table p95 {:.2} s; TCP survived {survived}/{trials}",
        percentile(&gaps, 0.5),
        percentile(&gaps, 0.95),
        gaps[gaps.len() - 1],
        percentile(&tables, 0.95),
    );
    println!(
        "anchors: keepalived ≈ 3.5 s + the API call, Tailscale subnet routers ≈ 15 s, headscale ≈ 70 s"
    );
}
