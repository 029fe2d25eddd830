//! Metrics benchmark (not part of the test suite): how long a full `/metrics` scrape takes and
//! how big it is with 1000 probe targets configured, and how much agentd's memory grows with
//! them, against the same agentd with no targets. Prometheus's own `/metrics`, scraped in the
//! same run, is the peer: time per 1000 series, agentd against Prometheus.
//!
//! ```text
//! cargo build --release -p isthmus-agentd -p isthmus-netctl
//! cargo build --release -p isthmus-tests --bin metrics-bench
//! sudo target/release/metrics-bench
//! ```
//!
//! Knobs: `TARGETS` (default 1000), `SCRAPES` (default 50). Each run: the example AWS gateway
//! config in a fresh namespace whose underlay addresses exist (so both links run), plus
//! `TARGETS` target checks every 5 s against the namespace's loopback, half ICMP (passing), half
//! TCP to a closed port (failing: refused), so that every per-target family has series. After
//! every target has been checked at least twice, `SCRAPES` scrapes one after the other; the
//! scrape time is from connect to the last byte, as Prometheus sees it. Goals (design.md): under
//! 20 ms and under 20 MB of RSS growth for 1000 targets.

use std::net::SocketAddr;
use std::time::Duration;

use isthmus_tests::{http_get_gzip, http_get_response, Agentd, Fixture, Netns, Prometheus};

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

/// CPU seconds (user + system) the process has used so far.
fn cpu_seconds(pid: nix::unistd::Pid) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn agentd_run(targets: usize, scrapes: usize) -> Run {
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
}
