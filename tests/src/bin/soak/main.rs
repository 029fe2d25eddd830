//! The soak (not part of the test command): both gateways of the two-cloud test bed for a long
//! time under churn, watching for what only time shows: memory, fds, threads or tasks that
//! grow, an event log that grows without bound, routes in the kernel that drift from what agentd
//! wants.
//!
//! The churn, all inside the namespaces it creates: the interconnect flaps every 2 s (1 s cut,
//! 1 s up, nftables on the AWS gateway) in bursts of [`BURST_FLAPS`] with [`CALM`] between, so
//! flap damping suppresses the link and then lets it back and the route group keeps moving; a
//! TCP listener behind each gateway, the target of the other gateway's `[[probe]]`, starts and
//! stops every [`TOGGLE_EVERY`]; each gateway's `/metrics` is scraped every second; `netctl
//! status`, `links` and `routes` run against both in a loop.
//!
//! Every [`SAMPLE_EVERY`] it samples each agentd's RSS, open fds and threads (`/proc`), its
//! tasks (`isthmus_runtime_alive_tasks`), the size of its event log on disk, and the drift
//! between `netctl --json routes` and the kernel's routes of agentd's protocol (a drift is
//! sampled again until it clears, for at most [`SETTLE`]: a switch in progress is not a drift).
//! It prints a progress line a minute and, at the end, the figures after the warm-up (the first
//! 10 % of the run, at least 30 s): least-squares slopes per hour, warm and final levels (median
//! of the first and last tenth), the event log's size over time, switches, failed calls, drift
//! and the loop lag p99. With `--check` it exits 1 if a bound ([`bounds`]) is broken.
//!
//! ```text
//! (as root) tests/soak [--minutes N] [--check]      # builds, then runs target/debug/soak
//! ```
//!
//! Ctrl-C (or SIGTERM) stops it early: the figures so far are printed, everything it started is
//! stopped by PID and its namespaces are removed (guards), and it exits 130.

mod drift;
mod stats;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use isthmus_tests::topology::{Side, TwoClouds, VPCS};
use isthmus_tests::{http_get, netctl, Agentd, TcpService};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use drift::Drift;
use stats::Series;

/// Flaps in a burst (one every 2 s: 1 s cut, 1 s up).
const BURST_FLAPS: u32 = 6;
/// The interconnect stays up this long between bursts: the damping penalty decays below reuse
/// (about 6 s with the soak's damping), then `failback_after` (3 s) and the hold-down pass.
const CALM: Duration = Duration::from_secs(14);
/// The probe targets start or stop this often.
const TOGGLE_EVERY: Duration = Duration::from_secs(3);
const SCRAPE_EVERY: Duration = Duration::from_secs(1);
/// Pause between rounds of netctl calls (status, links, routes on both gateways).
const NETCTL_PAUSE: Duration = Duration::from_millis(200);
const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// How long a drift may last before it counts: a switch's routes are written in a few
/// milliseconds, the routes adapter resyncs every 5 s.
const SETTLE: Duration = Duration::from_secs(6);
/// The event log's size cap in the soak (`[agent] event_log_max_bytes`), small so that even the
/// 5-minute run rotates it.
const EVENT_LOG_CAP: u64 = 32 << 10;
/// Where each gateway serves `/metrics` (inside its namespace).
const METRICS: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    9477,
));
/// The probe targets' port, on each app namespace's address.
const TARGET_PORT: u16 = 5432;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

struct Args {
    minutes: f64,
    check: bool,
}

fn args() -> Args {
    let mut out = Args {
        minutes: 60.0,
        check: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--minutes" => {
                out.minutes = it
                    .next()
                    .and_then(|m| m.parse().ok())
                    .filter(|m: &f64| *m > 0.0)
                    .unwrap_or_else(|| usage("--minutes needs a number above 0"));
            }
            "--check" => out.check = true,
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    out
}

fn usage(error: &str) -> ! {
    if !error.is_empty() {
        eprintln!("soak: {error}");
    }
    eprintln!("usage: soak [--minutes N (default 60)] [--check]");
    std::process::exit(if error.is_empty() { 0 } else { 2 });
}

/// What the churn threads count, per gateway (0 AWS, 1 OCI).
#[derive(Default)]
struct Counters {
    netctl_calls: [AtomicU64; 2],
    netctl_failed: [AtomicU64; 2],
    scrapes: [AtomicU64; 2],
    scrapes_failed: [AtomicU64; 2],
    /// Scrapes where the gateway's target check was passing.
    target_up_seen: [AtomicU64; 2],
    flaps: AtomicU64,
    bursts: AtomicU64,
    toggles: AtomicU64,
    /// Connections the probe targets accepted (behind AWS, behind OCI).
    accepted: [AtomicU64; 2],
    /// The first few failures, to print.
    failures: Mutex<Vec<String>>,
    /// The newest scrape of each gateway.
    scrape: Mutex<[String; 2]>,
    /// The highest loop lag p99 `netctl status` reported, ms.
    status_lag_p99: Mutex<[f64; 2]>,
}

impl Counters {
    fn failure(&self, what: String) {
        let mut f = self.failures.lock().unwrap();
        if f.len() < 10 {
            f.push(what);
        }
    }
}

/// One gateway's samples.
#[derive(Default)]
struct Samples {
    rss_mib: Series,
    fds: Series,
    threads: Series,
    tasks_loop: Series,
    tasks_io: Series,
    log_kib: Series,
    /// Times the current file shrank between samples.
    rotations: u32,
    log_len: u64,
    drift_max: Drift,
    /// Drifts still there after [`SETTLE`]: (seconds since start, drift).
    persistent: Vec<(f64, Drift)>,
    drift_samples: u32,
}

fn main() {
    isthmus_tests::require_root();
    let handler = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &handler) }.expect("sigaction");
    }
    let args = args();
    let run_for = Duration::from_secs_f64(args.minutes * 60.0);
    let warm_up = (run_for / 10).max(Duration::from_secs(30)).min(run_for / 2);
    println!(
        "soak: {:.1} min (warm-up {:.0} s): interconnect flapping every 2 s in bursts of {BURST_FLAPS} \
         with {} s calm, probe targets toggled every {} s, /metrics every {} s, netctl in a loop",
        args.minutes,
        warm_up.as_secs_f64(),
        CALM.as_secs(),
        TOGGLE_EVERY.as_secs(),
        SCRAPE_EVERY.as_secs(),
    );

    let clouds = TwoClouds::new("sk").with_apps();
    for side in [&clouds.aws, &clouds.oci] {
        configure(side);
    }
    let (aws, oci) = clouds.start_agents();
    let mut agents = [aws, oci];
    let protocol = netctl(&clouds.aws.fx.socket(), &["--json", "routes"]).json()["protocol"]
        .as_u64()
        .expect("netctl routes: protocol");

    let counters = Counters::default();
    let done = AtomicBool::new(false);
    let start = Instant::now();
    let deadline = start + run_for;
    let mut samples = [Samples::default(), Samples::default()];
    let mut warm_scrapes: Option<[String; 2]> = None;
    let mut died = Vec::new();

    std::thread::scope(|s| {
        let (c, d, cl) = (&counters, &done, &clouds);
        s.spawn(move || flap(cl, c, d));
        s.spawn(move || toggle(cl, c, d));
        for (i, side) in [&clouds.aws, &clouds.oci].into_iter().enumerate() {
            s.spawn(move || scrape(side, i, c, d));
        }
        s.spawn(move || netctl_loop(cl, c, d));

        let mut next_sample = start;
        let mut next_progress = start + Duration::from_secs(60);
        while Instant::now() < deadline && !STOP.load(Ordering::Relaxed) {
            sleep_until(next_sample, &done);
            next_sample += SAMPLE_EVERY;
            let t = start.elapsed().as_secs_f64();
            for (i, side) in [&clouds.aws, &clouds.oci].into_iter().enumerate() {
                if !agents[i].is_running() {
                    died.push(side.name);
                    continue;
                }
                sample(side, &agents[i], protocol, &counters, i, t, &mut samples[i]);
            }
            if !died.is_empty() {
                break;
            }
            if warm_scrapes.is_none() && start.elapsed() >= warm_up {
                warm_scrapes = Some(counters.scrape.lock().unwrap().clone());
            }
            if Instant::now() >= next_progress {
                next_progress += Duration::from_secs(60);
                progress(start, run_for, &samples, &counters);
            }
        }
        done.store(true, Ordering::Relaxed);
    });

    let interrupted = STOP.load(Ordering::Relaxed);
    let last = counters.scrape.lock().unwrap().clone();
    let report = Report::new(
        &samples,
        warm_up.as_secs_f64(),
        start.elapsed(),
        warm_scrapes.as_ref(),
        &last,
    );
    report.print(&samples, &counters);
    // Ctrl-C reaches agentd too (one process group): its exit then is no failure.
    if !died.is_empty() && !interrupted {
        for (i, agentd) in agents.iter().enumerate() {
            eprintln!(
                "--- agentd log ({}) ---\n{}",
                ["aws", "oci"][i],
                agentd.log_text()
            );
        }
    }
    drop(agents);
    drop(clouds);
    if interrupted {
        println!("soak: interrupted; everything it started is stopped and removed");
        std::process::exit(130);
    }
    if args.check {
        let mut broken = report.bounds(&samples, &counters);
        broken.extend(
            died.iter()
                .map(|n| format!("{n}: agentd exited during the soak")),
        );
        if broken.is_empty() {
            println!("soak: every bound holds");
        } else {
            for b in &broken {
                println!("soak: BOUND BROKEN: {b}");
            }
            std::process::exit(1);
        }
    }
}

/// The soak's settings on one gateway: damping quick enough for bursts of flaps, a small event
/// log cap, a TCP check of the other side's app namespace from this side's VPC address.
fn configure(side: &Side) {
    let path = side.fx.config_path();
    let mut doc: toml::Table = std::fs::read_to_string(path).unwrap().parse().unwrap();
    let health: toml::Table =
        toml::from_str("[damping]\nhalf_life = \"3s\"\nsuppress_above = 2000\nreuse_below = 750\n")
            .unwrap();
    doc.insert("health".into(), health.into());
    doc["agent"]
        .as_table_mut()
        .unwrap()
        .insert("event_log_max_bytes".into(), (EVENT_LOG_CAP as i64).into());
    let (_, own_gw, _) = VPCS[side.index];
    let (_, _, other_app) = VPCS[1 - side.index];
    let probe: toml::Table = toml::from_str(&format!(
        "name = \"db\"\nkind = \"tcp\"\ntarget = \"{other_app}:{TARGET_PORT}\"\n\
         interval = \"1s\"\ntimeout = \"500ms\"\nsource = \"{own_gw}\"\n"
    ))
    .unwrap();
    doc.insert("probe".into(), toml::Value::Array(vec![probe.into()]));
    side.fx.write_config(&toml::to_string(&doc).unwrap());
}

/// Sleep until `t`, waking early when the soak ends.
fn sleep_until(t: Instant, done: &AtomicBool) {
    while Instant::now() < t && !done.load(Ordering::Relaxed) && !STOP.load(Ordering::Relaxed) {
        std::thread::sleep(
            t.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100)),
        );
    }
}

fn ending(done: &AtomicBool) -> bool {
    done.load(Ordering::Relaxed) || STOP.load(Ordering::Relaxed)
}

/// Bursts of flaps of the interconnect; it is left restored.
fn flap(clouds: &TwoClouds, c: &Counters, done: &AtomicBool) {
    let mut t = Instant::now();
    while !ending(done) {
        for _ in 0..BURST_FLAPS {
            if ending(done) {
                return;
            }
            clouds.cut_path(0, true);
            t += Duration::from_secs(1);
            sleep_until(t, done);
            clouds.restore_path(0);
            c.flaps.fetch_add(1, Ordering::Relaxed);
            t += Duration::from_secs(1);
            sleep_until(t, done);
        }
        c.bursts.fetch_add(1, Ordering::Relaxed);
        t += CALM;
        sleep_until(t, done);
    }
}

/// Start and stop the probe targets (a listener in each app namespace) in turn.
fn toggle(clouds: &TwoClouds, c: &Counters, done: &AtomicBool) {
    let apps = [clouds.aws_app(), clouds.oci_app()];
    let mut running: Option<[TcpService; 2]> = None;
    let mut t = Instant::now();
    while !ending(done) {
        running = match running.take() {
            Some(services) => {
                for (i, s) in services.iter().enumerate() {
                    c.accepted[i].fetch_add(s.accepted(), Ordering::Relaxed);
                }
                None
            }
            None => Some([0, 1].map(|i| {
                let addr: SocketAddr = format!("{}:{TARGET_PORT}", VPCS[i].2).parse().unwrap();
                TcpService::start(apps[i], addr)
            })),
        };
        c.toggles.fetch_add(1, Ordering::Relaxed);
        t += TOGGLE_EVERY;
        sleep_until(t, done);
    }
    if let Some(services) = running {
        for (i, s) in services.iter().enumerate() {
            c.accepted[i].fetch_add(s.accepted(), Ordering::Relaxed);
        }
    }
}

/// Scrape one gateway's `/metrics` every second; keep the newest.
fn scrape(side: &Side, i: usize, c: &Counters, done: &AtomicBool) {
    let mut t = Instant::now();
    while !ending(done) {
        c.scrapes[i].fetch_add(1, Ordering::Relaxed);
        match http_get(&side.ns, METRICS, "/metrics", Duration::from_secs(5)) {
            Ok((200, body)) => {
                if stats::sum(&body, "isthmus_target_up", "") == Some(1.0) {
                    c.target_up_seen[i].fetch_add(1, Ordering::Relaxed);
                }
                c.scrape.lock().unwrap()[i] = body;
            }
            other if !ending(done) => {
                c.scrapes_failed[i].fetch_add(1, Ordering::Relaxed);
                c.failure(format!("{}: scrape: {:?}", side.name, other.map(|r| r.0)));
            }
            _ => {}
        }
        t += SCRAPE_EVERY;
        sleep_until(t, done);
    }
}

/// `netctl status`, `links` and `routes` against both gateways, round after round.
fn netctl_loop(clouds: &TwoClouds, c: &Counters, done: &AtomicBool) {
    let commands: [&[&str]; 3] = [&["--json", "status"], &["links"], &["routes"]];
    while !ending(done) {
        for (i, side) in [&clouds.aws, &clouds.oci].into_iter().enumerate() {
            for args in commands {
                let out = netctl(&side.fx.socket(), args);
                c.netctl_calls[i].fetch_add(1, Ordering::Relaxed);
                if out.code != 0 {
                    if !ending(done) {
                        c.netctl_failed[i].fetch_add(1, Ordering::Relaxed);
                        c.failure(format!(
                            "{}: netctl {}: exit {}: {}",
                            side.name,
                            args.join(" "),
                            out.code,
                            out.stderr.trim()
                        ));
                    }
                } else if args[1..] == ["status"] {
                    let p99 = out.json()["agent"]["loop_lag"]["p99_ms"].as_f64();
                    let mut lag = c.status_lag_p99.lock().unwrap();
                    lag[i] = lag[i].max(p99.unwrap_or(0.0));
                }
            }
        }
        std::thread::sleep(NETCTL_PAUSE);
    }
}

/// One sample of one gateway.
fn sample(
    side: &Side,
    agentd: &Agentd,
    protocol: u64,
    c: &Counters,
    i: usize,
    t: f64,
    s: &mut Samples,
) {
    let proc = Path::new("/proc").join(agentd.pid().to_string());
    let status = std::fs::read_to_string(proc.join("status")).unwrap_or_default();
    let field = |name: &str| -> Option<f64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    if let Some(kib) = field("VmRSS:") {
        s.rss_mib.push(t, kib / 1024.0);
    }
    if let Some(n) = field("Threads:") {
        s.threads.push(t, n);
    }
    if let Ok(fds) = std::fs::read_dir(proc.join("fd")) {
        s.fds.push(t, fds.count() as f64);
    }
    let scrape = c.scrape.lock().unwrap()[i].clone();
    for (series, runtime) in [(&mut s.tasks_loop, "loop"), (&mut s.tasks_io, "io")] {
        let filter = format!("runtime=\"{runtime}\"");
        if let Some(n) = stats::sum(&scrape, "isthmus_runtime_alive_tasks", &filter) {
            series.push(t, n);
        }
    }
    let state = side.fx.dir().join("state");
    let len = |name: &str| std::fs::metadata(state.join(name)).map_or(0, |m| m.len());
    let current = len("events.jsonl");
    if current < s.log_len {
        s.rotations += 1;
    }
    s.log_len = current;
    s.log_kib
        .push(t, (current + len("events.jsonl.1")) as f64 / 1024.0);

    let settle_until = Instant::now() + SETTLE;
    let mut first = true;
    loop {
        match route_drift(side, protocol) {
            Ok(d) => {
                if first {
                    s.drift_samples += 1;
                    s.drift_max = s.drift_max.max(d);
                    first = false;
                }
                if d.is_zero() {
                    break;
                }
                if Instant::now() >= settle_until {
                    s.persistent.push((t, d));
                    c.failure(format!("{}: drift after {SETTLE:?}: {d}", side.name));
                    break;
                }
            }
            Err(e) => {
                c.failure(format!("{}: drift: {e}", side.name));
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn route_drift(side: &Side, protocol: u64) -> Result<Drift, String> {
    let routes = netctl(&side.fx.socket(), &["--json", "routes"]);
    if routes.code != 0 {
        return Err(format!("netctl routes: {}", routes.stderr.trim()));
    }
    let kernel = side
        .ns
        .command("ip")
        .args(["-j", "route", "show", "table", "all", "proto"])
        .arg(protocol.to_string())
        .output()
        .map_err(|e| format!("ip route: {e}"))?;
    let text = String::from_utf8_lossy(&kernel.stdout);
    // `ip -j` prints nothing at all (not `[]`) when no route matches.
    let kernel: serde_json::Value = if text.trim().is_empty() {
        serde_json::Value::Array(Vec::new())
    } else {
        serde_json::from_str(&text).map_err(|e| format!("ip -j route: {e}: {text}"))?
    };
    drift::drift(&routes.json(), &kernel)
}

fn progress(start: Instant, run_for: Duration, samples: &[Samples; 2], c: &Counters) {
    let mut line = format!(
        "[{:>4.1}/{:.1} min] flaps {}",
        start.elapsed().as_secs_f64() / 60.0,
        run_for.as_secs_f64() / 60.0,
        c.flaps.load(Ordering::Relaxed)
    );
    for (i, s) in samples.iter().enumerate() {
        let v = |x: &Series| x.last().unwrap_or(f64::NAN);
        line += &format!(
            " | {} rss {:.1} MiB fds {} thr {} tasks {}/{} log {:.0} KiB drift {} netctl failed {}",
            ["aws", "oci"][i],
            v(&s.rss_mib),
            v(&s.fds),
            v(&s.threads),
            v(&s.tasks_loop),
            v(&s.tasks_io),
            v(&s.log_kib),
            s.persistent.len(),
            c.netctl_failed[i].load(Ordering::Relaxed),
        );
    }
    println!("{line}");
}

/// The figures after the warm-up, per gateway.
struct Report {
    warm_up: f64,
    elapsed: Duration,
    /// Per gateway: (name, warm, final, slope per hour) of each quantity.
    levels: [Vec<(&'static str, Level)>; 2],
    switches: [f64; 2],
    target_failures: [f64; 2],
    /// Loop lag p99 after the warm-up, from the histogram (s).
    lag_p99: [Option<f64>; 2],
}

#[derive(Debug, Clone, Copy)]
struct Level {
    warm: f64,
    end: f64,
    slope: f64,
    max: f64,
}

/// The fraction of the measured samples whose median is the warm (first) and final (last) level.
const LEVEL_FRACTION: f64 = 0.1;

impl Report {
    fn new(
        samples: &[Samples; 2],
        warm_up: f64,
        elapsed: Duration,
        warm: Option<&[String; 2]>,
        last: &[String; 2],
    ) -> Report {
        let levels = [0, 1].map(|i| {
            let s = &samples[i];
            [
                ("RSS (MiB)", &s.rss_mib),
                ("open fds", &s.fds),
                ("threads", &s.threads),
                ("tasks, loop runtime", &s.tasks_loop),
                ("tasks, io runtime", &s.tasks_io),
            ]
            .into_iter()
            .filter_map(|(name, series)| {
                let m = series.after(warm_up);
                Some((
                    name,
                    Level {
                        warm: m.head_median(LEVEL_FRACTION)?,
                        end: m.tail_median(LEVEL_FRACTION)?,
                        slope: m.slope_per_hour()?,
                        max: m.max()?,
                    },
                ))
            })
            .collect()
        });
        let lag_buckets = |text: &str| stats::buckets(text, "isthmus_event_loop_lag_seconds");
        Report {
            warm_up,
            elapsed,
            levels,
            switches: [0, 1]
                .map(|i| stats::sum(&last[i], "isthmus_group_failovers_total", "").unwrap_or(0.0)),
            target_failures: [0, 1].map(|i| {
                stats::sum(&last[i], "isthmus_target_probe_failures_total", "").unwrap_or(0.0)
            }),
            lag_p99: [0, 1].map(|i| {
                let from = warm.map(|w| lag_buckets(&w[i])).unwrap_or_default();
                stats::p99_between(&from, &lag_buckets(&last[i]))
            }),
        }
    }

    fn print(&self, samples: &[Samples; 2], c: &Counters) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        println!(
            "\nsoak figures: {:.1} min, after a warm-up of {:.0} s; {} flaps in {} bursts, {} target toggles",
            self.elapsed.as_secs_f64() / 60.0,
            self.warm_up,
            load(&c.flaps),
            load(&c.bursts),
            load(&c.toggles)
        );
        println!("| | aws | oci |\n|---|---|---|");
        let names: Vec<&str> = self.levels[0].iter().map(|(n, _)| *n).collect();
        for name in names {
            let cell = |i: usize| {
                self.levels[i]
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or("-".into(), |(_, l)| {
                        format!(
                            "{:.1} → {:.1} (max {:.1}), {:+.2}/h",
                            l.warm, l.end, l.max, l.slope
                        )
                    })
            };
            println!(
                "| {name}: warm → final, slope | {} | {} |",
                cell(0),
                cell(1)
            );
        }
        let row = |name: &str, f: &dyn Fn(usize) -> String| {
            println!("| {name} | {} | {} |", f(0), f(1));
        };
        row(
            &format!(
                "event log on disk, max KiB (cap {} KiB per file)",
                EVENT_LOG_CAP >> 10
            ),
            &|i| {
                format!(
                    "{:.0} ({} rotations)",
                    samples[i].log_kib.max().unwrap_or(0.0),
                    samples[i].rotations
                )
            },
        );
        row("switches (isthmus_group_failovers_total)", &|i| {
            format!("{:.0}", self.switches[i])
        });
        row("netctl calls / failed", &|i| {
            format!(
                "{} / {}",
                load(&c.netctl_calls[i]),
                load(&c.netctl_failed[i])
            )
        });
        row("scrapes / failed", &|i| {
            format!("{} / {}", load(&c.scrapes[i]), load(&c.scrapes_failed[i]))
        });
        row("drift samples: max missing/extra/duplicate at once", &|i| {
            let d = samples[i].drift_max;
            format!(
                "{}: {}/{}/{}",
                samples[i].drift_samples, d.missing, d.extra, d.duplicate
            )
        });
        row(
            &format!("drift still there after {} s", SETTLE.as_secs()),
            &|i| samples[i].persistent.len().to_string(),
        );
        row(
            "loop lag p99 (histogram after warm-up; max of netctl status)",
            &|i| {
                let status = c.status_lag_p99.lock().unwrap()[i];
                format!(
                    "≤ {}; {status:.1} ms",
                    self.lag_p99[i].map_or("-".into(), |p| format!("{} ms", p * 1000.0))
                )
            },
        );
        row(
            "target checks failed / scrapes with the target up / connections",
            &|i| {
                format!(
                    "{:.0} / {} / {}",
                    self.target_failures[i],
                    load(&c.target_up_seen[i]),
                    load(&c.accepted[1 - i])
                )
            },
        );
        for (i, s) in samples.iter().enumerate() {
            let per_minute: Vec<String> = (1..)
                .map(|m| m as f64 * 60.0)
                .take_while(|t| *t <= self.elapsed.as_secs_f64() + 1.0)
                .filter_map(|t| {
                    s.log_kib
                        .points
                        .iter()
                        .rev()
                        .find(|p| p.0 <= t)
                        .map(|p| format!("{:.0}", p.1))
                })
                .collect();
            println!(
                "event log KiB at each minute, {}: {}",
                ["aws", "oci"][i],
                per_minute.join(" ")
            );
        }
        let failures = c.failures.lock().unwrap();
        for f in failures.iter() {
            println!("failure: {f}");
        }
    }

    /// The bounds of `--check`: loose enough for a noisy 2-core machine, tight enough for a
    /// leak of a few bytes per flap, request or scrape.
    fn bounds(&self, samples: &[Samples; 2], c: &Counters) -> Vec<String> {
        let mut broken = Vec::new();
        let measured_h = (self.elapsed.as_secs_f64() - self.warm_up) / 3600.0;
        // 5 MiB/h, or 2 MiB over the measured time if that is more (a 5-minute run cannot
        // tell 5 MiB/h from noise).
        let rss_slope = (2.0 / measured_h.max(1e-3)).max(5.0);
        for i in 0..2 {
            let name = ["aws", "oci"][i];
            let mut bound = |ok: bool, what: String| {
                if !ok {
                    broken.push(format!("{name}: {what}"));
                }
            };
            for (q, l) in &self.levels[i] {
                let (growth, slope) = match *q {
                    "RSS (MiB)" => (8.0, Some(rss_slope)),
                    "open fds" => (4.0, None),
                    "threads" => (4.0, None),
                    _ => (8.0, None),
                };
                bound(
                    l.end <= l.warm + growth,
                    format!(
                        "{q} grew from {:.1} to {:.1} (bound +{growth})",
                        l.warm, l.end
                    ),
                );
                if let Some(max) = slope {
                    bound(
                        l.slope <= max,
                        format!("{q} slope {:+.2}/h (bound {max:.1}/h)", l.slope),
                    );
                }
            }
            let s = &samples[i];
            let cap_kib = (2 * EVENT_LOG_CAP) as f64 / 1024.0;
            bound(
                s.log_kib.max().unwrap_or(0.0) <= cap_kib,
                format!(
                    "event log {:.0} KiB on disk (bound {cap_kib:.0} KiB)",
                    s.log_kib.max().unwrap_or(0.0)
                ),
            );
            bound(
                s.persistent.is_empty(),
                format!(
                    "{} drifts outlasted {} s: {:?}",
                    s.persistent.len(),
                    SETTLE.as_secs(),
                    s.persistent.first()
                ),
            );
            bound(s.drift_samples > 0, "no drift sample".into());
            let failed = c.netctl_failed[i].load(Ordering::Relaxed);
            bound(failed == 0, format!("{failed} netctl calls failed"));
            let failed = c.scrapes_failed[i].load(Ordering::Relaxed);
            bound(failed == 0, format!("{failed} scrapes failed"));
            // Each burst suppresses the interconnect and each calm brings the group back.
            let bursts = c.bursts.load(Ordering::Relaxed) as f64;
            bound(
                self.switches[i] >= bursts,
                format!("{:.0} switches for {bursts:.0} bursts", self.switches[i]),
            );
            bound(
                self.target_failures[i] > 0.0 && c.target_up_seen[i].load(Ordering::Relaxed) > 0,
                "the target check did not both fail and pass".into(),
            );
            let lag = self.lag_p99[i].unwrap_or(f64::INFINITY);
            bound(
                lag <= 0.025,
                format!("loop lag p99 {:.1} ms (bound 25 ms)", lag * 1000.0),
            );
        }
        broken
    }
}
