//! Metrics benchmark (not part of the test suite): how long a full `/metrics` scrape takes and
//! how big it is with 1000 probe targets configured, and how much agentd's memory grows with
//! them, against the same agentd with no targets. Prometheus's own `/metrics`, scraped in the
//! same run, is the peer: time per 1000 series, agentd against Prometheus.
//!
//! ```text
//! cargo build --release -p isthmus-agentd -p isthmus-netctl
//! cargo build --release -p isthmus-tests --bin metrics-bench
//! (as root) target/release/metrics-bench
//! ```
//!
//! Knobs: `TARGETS` (default 1000), `SCRAPES` (default 50), `LAG_SECONDS` (default 60),
//! `ONLY=lag` (only the loop-lag scenario, below). Each run: the example AWS gateway
//! config in a fresh namespace whose underlay addresses exist (so both links run), plus
//! `TARGETS` target checks every 5 s against the namespace's loopback, half ICMP (passing), half
//! TCP to a closed port (failing: refused), so that every per-target family has series. After
//! every target has been checked at least twice, `SCRAPES` scrapes one after the other; the
//! scrape time is from connect to the last byte, as Prometheus sees it. Goals (design.md): under
//! 20 ms and under 20 MB of RSS growth for 1000 targets.
//!
//! Then the loop lag: the same agentd with `TARGETS` targets, `/metrics` scraped and
//! `netctl status` called once per second for `LAG_SECONDS`; from the difference of
//! `isthmus_event_loop_lag_seconds` between the first and the last scrape, the p50 and p99
//! (interpolated within the bucket, with the bucket's bound) and the highest bucket reached,
//! and PASS/FAIL of the p99 against 5 ms. An agentd without the histogram is said so.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use isthmus_tests::histogram::buckets;
use isthmus_tests::{
    cpu_seconds, http_get_gzip, http_get_response, Agentd, Fixture, Netns, Prometheus,
};

const METRICS: &str = "127.0.0.1:9477";

struct Run {
    series: usize,
    bytes: usize,
    times: Vec<Duration>,
    rss_kib: u64,
    /// The same scrape with `Accept-Encoding: gzip`, as Prometheus asks: size and median time.
    gzip: Option<(usize, Duration)>,
}

impl Run {
    fn quantile(&self, q: f64) -> Duration {
        let mut t = self.times.clone();
        t.sort();
        t[((t.len() - 1) as f64 * q).round() as usize]
    }

    fn per_1000_series(&self) -> f64 {
        self.quantile(0.5).as_secs_f64() * 1e3 / self.series as f64 * 1000.0
    }

    fn print(&self, what: &str) {
        println!(
            "{what:<22} {:>6} series {:>9} bytes   scrape median {:>7.2} ms  p95 {:>7.2} ms  max {:>7.2} ms{}",
            self.series,
            self.bytes,
            ms(self.quantile(0.5)),
            ms(self.quantile(0.95)),
            ms(self.quantile(1.0)),
            if self.rss_kib > 0 {
                format!("   RSS {:>6.1} MiB", self.rss_kib as f64 / 1024.0)
            } else {
                String::new()
            }
        );
        if let Some((size, median)) = self.gzip {
            println!(
                "{:<22} {:>6}        {size:>9} bytes   gzip, median {:>7.2} ms",
                "",
                "",
                ms(median)
            );
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn scrape(ns: &Netns, addr: SocketAddr, times: usize) -> Run {
    let mut run = Run {
        series: 0,
        bytes: 0,
        times: Vec::new(),
        rss_kib: 0,
        gzip: None,
    };
    // Warm up: connections, allocator, page cache.
    for _ in 0..3 {
        http_get_response(ns, addr, "/metrics", Duration::from_secs(10)).expect("scrape");
    }
    for _ in 0..times {
        let r = http_get_response(ns, addr, "/metrics", Duration::from_secs(10)).expect("scrape");
        assert_eq!(r.status, 200);
        run.bytes = r.body.len();
        run.series = r
            .body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count();
        run.times.push(r.elapsed);
    }
    let mut gz = Vec::new();
    let mut size = 0;
    for _ in 0..times {
        let r = http_get_gzip(ns, addr, "/metrics", Duration::from_secs(10)).expect("scrape");
        assert_eq!(r.status, 200);
        if r.header("content-encoding") != Some("gzip") {
            return run;
        }
        size = r.body_bytes;
        gz.push(r.elapsed);
    }
    gz.sort();
    run.gzip = gz.get(gz.len() / 2).map(|t| (size, *t));
    run
}

fn rss_kib(pid: nix::unistd::Pid) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// agentd with the example AWS config and `targets` target checks, in a fresh namespace.
fn agentd_with_targets(targets: usize) -> (Netns, Fixture, Agentd) {
    let ns = Netns::new("mb");
    ns.add_addresses(&["192.0.2.1/24", "198.51.100.1/24"]);
    let fx = Fixture::example("aws-gateway.toml");
    let mut doc: toml::Table = std::fs::read_to_string(fx.config_path())
        .unwrap()
        .parse()
        .unwrap();
    let probes: Vec<toml::Value> = (0..targets)
        .map(|i| {
            let mut t = toml::Table::new();
            t.insert("name".into(), format!("target-{i:04}").into());
            if i % 2 == 0 {
                t.insert("kind".into(), "icmp".into());
                t.insert("target".into(), "127.0.0.1".into());
            } else {
                t.insert("kind".into(), "tcp".into());
                t.insert("target".into(), "127.0.0.1:9".into());
            }
            t.insert("interval".into(), "5s".into());
            t.insert("timeout".into(), "1s".into());
            toml::Value::Table(t)
        })
        .collect();
    doc.insert("probe".into(), toml::Value::Array(probes));
    // The example's route group and DNS answers check its own probes, which are replaced.
    if let Some(groups) = doc.get_mut("route_group").and_then(|g| g.as_array_mut()) {
        for g in groups {
            g.as_table_mut().unwrap().remove("checks");
        }
    }
    doc.remove("dns_group");
    doc.remove("dns_provider");
    fx.write_config(&toml::to_string(&doc).unwrap());
    let agentd = Agentd::start(&fx, &ns);
    (ns, fx, agentd)
}

fn agentd_run(targets: usize, scrapes: usize) -> Run {
    let (ns, _fx, agentd) = agentd_with_targets(targets);
    // Every target checked at least twice; idle CPU measured over the same time.
    let cpu = cpu_seconds(agentd.pid());
    let idle = Duration::from_secs(if targets > 0 { 12 } else { 10 });
    std::thread::sleep(idle);
    let busy = (cpu_seconds(agentd.pid()) - cpu) / idle.as_secs_f64();
    println!(
        "agentd with {targets} targets, 2 links, default probes: {:.2}% of one core between scrapes",
        busy * 100.0
    );
    let mut run = scrape(&ns, METRICS.parse().unwrap(), scrapes);
    run.rss_kib = rss_kib(agentd.pid());
    if targets > 0 {
        let body = http_get_response(
            &ns,
            METRICS.parse().unwrap(),
            "/metrics",
            Duration::from_secs(10),
        )
        .unwrap()
        .body;
        let checked = body
            .lines()
            .filter(|l| l.starts_with("isthmus_target_up{"))
            .count();
        assert_eq!(checked, targets, "not every target has been checked yet");
    }
    run
}

fn main() {
    isthmus_tests::require_root();
    let targets = env_usize("TARGETS", 1000);
    let scrapes = env_usize("SCRAPES", 50);
    let only = std::env::var("ONLY").unwrap_or_default();
    if only == "lag" {
        loop_lag(targets, env_usize("LAG_SECONDS", 60));
        return;
    }
    println!("metrics benchmark: {targets} probe targets, {scrapes} scrapes per run\n");
    let base = agentd_run(0, scrapes);
    base.print("agentd, no targets");
    let full = agentd_run(targets, scrapes);
    full.print(&format!("agentd, {targets} targets"));

    let peer = if std::path::Path::new("/usr/bin/prometheus").exists() {
        let ns = Netns::new("mp");
        let prom = Prometheus::start(&ns, &[], &[]);
        let run = scrape(&ns, prom.addr(), scrapes);
        run.print("prometheus /metrics");
        Some(run)
    } else {
        println!("prometheus is not installed: no peer (apt-get install prometheus)");
        None
    };

    let growth_mib = (full.rss_kib as f64 - base.rss_kib as f64) / 1024.0;
    let median = ms(full.quantile(0.5));
    println!();
    println!(
        "{targets} targets: scrape median {median:.2} ms (goal < 20 ms: {}), {} KiB, RSS growth {growth_mib:.1} MiB (goal < 20 MiB: {})",
        if median < 20.0 { "met" } else { "MISSED" },
        full.bytes / 1024,
        if growth_mib < 20.0 { "met" } else { "MISSED" },
    );
    if let Some(peer) = peer {
        println!(
            "time per 1000 series: agentd {:.2} ms, prometheus {:.2} ms: ratio {:.2} (below 1: agentd is faster)",
            full.per_1000_series(),
            peer.per_1000_series(),
            full.per_1000_series() / peer.per_1000_series()
        );
    }
    if only.is_empty() {
        println!();
        loop_lag(targets, env_usize("LAG_SECONDS", 60));
    }
}

/// The event loop lag histogram agentd exports (how late the loop serves a due timer).
const LAG: &str = "isthmus_event_loop_lag_seconds";
/// The goal for the loop lag p99 with 1000 targets under scrapes and status calls.
const LAG_GOAL: Duration = Duration::from_millis(5);

/// Loop lag: agentd with `targets` targets, scraped once per second for `seconds` while
/// `netctl status` is also called each second; the lag quantiles over that window come from the
/// difference of the histogram between the first and the last scrape.
fn loop_lag(targets: usize, seconds: usize) {
    println!(
        "loop lag: agentd with {targets} targets, /metrics and netctl status once per second for {seconds} s"
    );
    let (ns, fx, _agentd) = agentd_with_targets(targets);
    let addr: SocketAddr = METRICS.parse().unwrap();
    // Every target checked at least twice before the window opens.
    std::thread::sleep(Duration::from_secs(12));
    let get = || {
        http_get_response(&ns, addr, "/metrics", Duration::from_secs(10))
            .expect("scrape")
            .body
    };
    let first = get();
    let Some(before) = buckets(&first, LAG, &[]) else {
        println!(
            "{LAG}: ABSENT from /metrics (this agentd does not export it): no loop lag figures"
        );
        return;
    };
    let started = Instant::now();
    let mut status_failures = 0;
    let mut slowest_status = Duration::ZERO;
    let mut slowest_scrape = Duration::ZERO;
    let mut last = first;
    for i in 1..=seconds {
        let t = Instant::now();
        let status = isthmus_tests::netctl(&fx.socket(), &["--json", "status"]);
        slowest_status = slowest_status.max(t.elapsed());
        if status.code != 0 {
            status_failures += 1;
        }
        let t = Instant::now();
        last = get();
        slowest_scrape = slowest_scrape.max(t.elapsed());
        let next = started + Duration::from_secs(i as u64);
        if let Some(rest) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(rest);
        }
    }
    let elapsed = started.elapsed();
    let Some(after) = buckets(&last, LAG, &[]) else {
        println!("{LAG}: vanished from /metrics during the run");
        return;
    };
    let delta = after.since(Some(&before));
    let ms = |s: f64| s * 1e3;
    let bound = |b: f64| {
        if b.is_infinite() {
            "+Inf".to_owned()
        } else {
            format!("{} ms", ms(b))
        }
    };
    println!(
        "  {} timers served in {elapsed:.1?}; slowest netctl status {:.2} ms ({status_failures} failed), slowest scrape {:.2} ms",
        delta.count(),
        ms(slowest_status.as_secs_f64()),
        ms(slowest_scrape.as_secs_f64())
    );
    let (Some(p50), Some(p99)) = (delta.quantile(0.5), delta.quantile(0.99)) else {
        println!("  {LAG}: no observations in the window: no figures (FAIL)");
        return;
    };
    println!(
        "  loop lag p50 {:.3} ms (bucket ≤ {}), p99 {:.3} ms (bucket ≤ {}), max in bucket ≤ {}",
        ms(p50.value),
        bound(p50.bucket),
        ms(p99.value),
        bound(p99.bucket),
        delta.max_bucket().map_or("-".into(), bound)
    );
    println!(
        "loop lag p99 {:.3} ms (goal < {} ms): {}",
        ms(p99.value),
        LAG_GOAL.as_millis(),
        if p99.value < LAG_GOAL.as_secs_f64() {
            "PASS"
        } else {
            "FAIL"
        }
    );
}
