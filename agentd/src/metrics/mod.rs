//! Prometheus metrics (the families are documented in docs/metrics.md).
//!
//! Families counted as things happen (probe RTTs, failovers, control requests) are registered
//! `prometheus` metrics, updated by the event loop or the control server, never by the packet
//! path. Target check durations and failures are counted by the event loop in [`Metrics`]'s own
//! sorted map (a thousand targets would cost the registry a sort and a clone of 10,000 series
//! per scrape). Everything else is read at scrape time from what agentd keeps anyway (the link
//! workers' atomic counters, the engine's health and figures, the route manager's counts) by
//! [`export`], so there is no second copy to keep in step. A scrape asks the event loop for a
//! [`crate::view::View`] (consistent with `netctl status` at that moment) and renders the text
//! from it off the loop.
//!
//! Every counter (and histogram) whose label sets the config determines has all its series from
//! the start, at 0: every reason of every link and group, every result of every hook and action
//! target. `increase()` over a series that appears with its first event at 1 sees nothing, so
//! an alert on the first failure would never fire. [`Metrics::follow_config`] creates them at
//! start and after each reload, and removes those of names that are gone.

mod export;
mod family;
mod runtime;
pub mod server;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use isthmus_core::engine::{Event, SwitchReason};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

pub use export::render;

/// Probe RTT buckets, 0.25 ms to 5 s: same-region interconnects sit at the low end, a
/// congested internet path across continents at the high end.
const RTT_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// Target check buckets: few, since per-target histograms multiply fast: a thousand targets × 16
/// buckets would cost megabytes per scrape.
const TARGET_BUCKETS: &[f64] = &[0.001, 0.005, 0.025, 0.1, 0.5, 2.5];

/// The label of each switch reason (`isthmus_group_failovers_total{reason}`).
pub fn switch_label(reason: &SwitchReason) -> &'static str {
    match reason {
        SwitchReason::FirstUsable => "first_usable",
        SwitchReason::ActiveDown => "active_down",
        SwitchReason::ActiveDegraded => "active_degraded",
        SwitchReason::Failback => "failback",
        SwitchReason::Manual(_) => "manual",
        SwitchReason::PeerPin => "peer_pin",
        SwitchReason::Released => "released",
        SwitchReason::NoUsableLink => "no_usable_link",
        SwitchReason::Config => "config",
        SwitchReason::ChecksFailing => "checks_failing",
        SwitchReason::Restored => "restored",
    }
}

/// Action buckets, 5 ms to 2 min: an RFC 2136 update served by BIND takes milliseconds, a
/// Route 53 change seconds to a minute (until INSYNC), a throttled cloud API longer.
const ACTION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Loop lag buckets, 0.1 ms to 1 s: a healthy loop sits in the first (tokio's timers have a
/// millisecond's grain); 50 ms is a probe interval, where links start to look lossy.
const LAG_BUCKETS: &[f64] = &[
    0.000_1, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    rtt: HistogramVec,
    /// `isthmus_event_loop_lag_seconds`.
    pub loop_lag: prometheus::Histogram,
    /// Per (target, link or ""): kept here rather than in a registered vec, so that a scrape
    /// of a thousand targets walks one sorted map instead of cloning and sorting 10,000 series.
    targets: BTreeMap<(String, String), TargetStats>,
    failovers: IntCounterVec,
    /// Shared with the control server, which counts its requests.
    pub control_requests: IntCounterVec,
    /// `isthmus_control_refused_total{reason}`, counted by the control server.
    pub control_refused: IntCounterVec,
    /// `isthmus_faults_total{kind}` and `isthmus_faults_active{kind}`, raised and cleared by
    /// the adapters that meet the faults ([`crate::faults`]).
    #[allow(dead_code)] // until the adapters take it
    pub faults: crate::faults::Faults,
    /// `isthmus_action_duration_seconds{kind,target}`: decision → verified change.
    action_duration: HistogramVec,
    /// `isthmus_action_results_total{kind,target,result}`.
    action_results: IntCounterVec,
    /// `isthmus_hook_runs_total{hook,result}`.
    hook_runs: IntCounterVec,
    /// `isthmus_actions_total{action,result}` beyond the kernel routes: per action kind,
    /// changes made (`success`) and failed attempts (`failure`). Every kind starts at 0.
    pub(crate) action_totals: BTreeMap<(&'static str, &'static str), u64>,
    /// When each link's health and each group's active link last changed.
    link_since: BTreeMap<String, Instant>,
    group_since: BTreeMap<String, Instant>,
    started: Instant,
    /// Egress cost so far per link, and the counters it was computed up to.
    egress: BTreeMap<String, Egress>,
    /// The link and group names of the config last followed: a reload removes the series of
    /// those that are gone (RTTs and failovers are only ever counted for configured names).
    seen: Seen,
}

#[derive(Default, Clone)]
struct Seen {
    links: BTreeSet<String>,
    groups: BTreeSet<String>,
    hooks: BTreeSet<String>,
    /// (kind, target) of every action target.
    targets: BTreeSet<(&'static str, String)>,
}

/// One target's check durations (a histogram over [`TARGET_BUCKETS`]) and failures by reason.
#[derive(Debug, Default, Clone)]
struct TargetStats {
    /// Checks that took at most each bound (not cumulative; the scrape sums them).
    buckets: [u64; TARGET_BUCKETS.len()],
    count: u64,
    sum: f64,
    failures: BTreeMap<&'static str, u64>,
}

impl TargetStats {
    fn observe(&mut self, seconds: f64, failure: Option<&'static str>) {
        if let Some(i) = TARGET_BUCKETS.iter().position(|&b| seconds <= b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
        if let Some(reason) = failure {
            *self.failures.entry(reason).or_default() += 1;
        }
    }

    /// The cumulative bucket counts, as Prometheus histograms carry them.
    fn cumulative(&self) -> [u64; TARGET_BUCKETS.len()] {
        let mut out = self.buckets;
        for i in 1..out.len() {
            out[i] += out[i - 1];
        }
        out
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Egress {
    bytes: u64,
    packets: u64,
    cost: f64,
}

impl Egress {
    /// The link's counters are now `bytes` and `packets`: price what was sent since the last
    /// call, underlay overhead included (nothing without a price).
    fn advance(&mut self, bytes: u64, packets: u64, overhead: u64, price: Option<f64>) {
        // A re-created link starts its counters from zero again.
        if bytes < self.bytes || packets < self.packets {
            (self.bytes, self.packets) = (0, 0);
        }
        if let Some(price) = price {
            let underlay = (bytes - self.bytes) + (packets - self.packets) * overhead;
            self.cost += underlay as f64 / GIB * price;
        }
        (self.bytes, self.packets) = (bytes, packets);
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let rtt = HistogramVec::new(
            HistogramOpts::new(
                "isthmus_link_rtt_seconds",
                "Round-trip time of answered peer probes.",
            )
            .buckets(RTT_BUCKETS.to_vec()),
            &["link"],
        )
        .expect("valid histogram");
        let failovers = IntCounterVec::new(
            Opts::new(
                "isthmus_group_failovers_total",
                "Changes of a route group's active link, by reason.",
            ),
            &["group", "reason"],
        )
        .expect("valid counter");
        let loop_lag = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "isthmus_event_loop_lag_seconds",
                "How late the event loop served a due timer (probes are sent from it).",
            )
            .buckets(LAG_BUCKETS.to_vec()),
        )
        .expect("valid histogram");
        let control_requests = IntCounterVec::new(
            Opts::new(
                "isthmus_control_requests_total",
                "Control socket requests by endpoint pattern and HTTP status.",
            ),
            &["endpoint", "status"],
        )
        .expect("valid counter");
        let control_refused = crate::control::refused_family();
        let (faults_total, faults_active) = crate::faults::families();
        let action_duration = HistogramVec::new(
            HistogramOpts::new(
                "isthmus_action_duration_seconds",
                "From a decision to its change verified at the target (DNS record served, route table changed).",
            )
            .buckets(ACTION_BUCKETS.to_vec()),
            &["kind", "target"],
        )
        .expect("valid histogram");
        let action_results = IntCounterVec::new(
            Opts::new(
                "isthmus_action_results_total",
                "Attempts at action targets by result: changed, in_place, or the failure kind.",
            ),
            &["kind", "target", "result"],
        )
        .expect("valid counter");
        let hook_runs = IntCounterVec::new(
            Opts::new(
                "isthmus_hook_runs_total",
                "Hook runs (after their retries) by result: ok, failed, timeout, dropped.",
            ),
            &["hook", "result"],
        )
        .expect("valid counter");
        for c in [
            Box::new(rtt.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(action_duration.clone()),
            Box::new(action_results.clone()),
            Box::new(hook_runs.clone()),
            Box::new(failovers.clone()),
            Box::new(loop_lag.clone()),
            Box::new(control_requests.clone()),
            Box::new(control_refused.clone()),
            Box::new(faults_total.clone()),
            Box::new(faults_active.clone()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        Metrics {
            registry,
            rtt,
            loop_lag,
            targets: BTreeMap::new(),
            failovers,
            control_requests,
            control_refused,
            faults: crate::faults::Faults::new(&faults_total, &faults_active),
            action_duration,
            action_results,
            hook_runs,
            action_totals: ACTION_KINDS
                .iter()
                .flat_map(|k| [((*k, "success"), 0), ((*k, "failure"), 0)])
                .collect(),
            link_since: BTreeMap::new(),
            group_since: BTreeMap::new(),
            started: crate::clock::now(),
            egress: BTreeMap::new(),
            seen: Seen::default(),
        }
    }

    /// Export the tasks alive on the two runtimes (`isthmus_runtime_alive_tasks`), once they
    /// run.
    pub fn watch_runtimes(&self, event_loop: tokio::runtime::Handle, io: tokio::runtime::Handle) {
        let runtimes = runtime::Runtimes::new(event_loop, io);
        if let Err(e) = self.registry.register(Box::new(runtimes)) {
            tracing::warn!(error = %e, "cannot export the runtimes' task counts");
        }
    }

    /// An answered peer probe.
    pub fn observe_rtt(&mut self, link: &str, rtt: Duration) {
        self.rtt
            .with_label_values(&[link])
            .observe(rtt.as_secs_f64());
    }

    /// A finished target check; `link` is empty for a check along the routes.
    pub fn observe_target(
        &mut self,
        target: &str,
        link: &str,
        ok: bool,
        reason: &'static str,
        took: Duration,
    ) {
        let stats = match self.targets.get_mut(&(target.to_owned(), link.to_owned())) {
            Some(s) => s,
            None => self
                .targets
                .entry((target.to_owned(), link.to_owned()))
                .or_default(),
        };
        stats.observe(took.as_secs_f64(), (!ok).then_some(reason));
    }

    /// A report of the actions adapter.
    pub fn observe_action(&mut self, r: &crate::actions::ActionReport) {
        use crate::actions::ActionEvent;
        let (kind, target) = (r.target.kind(), r.target.name());
        let result = match &r.event {
            ActionEvent::Done {
                changed: true,
                took,
                reasserted,
                ..
            } => {
                if !reasserted {
                    self.action_duration
                        .with_label_values(&[kind, target])
                        .observe(took.as_secs_f64());
                }
                "changed"
            }
            ActionEvent::Done { .. } => "in_place",
            ActionEvent::Conflict { .. } => "conflict",
            ActionEvent::Failed { kind, .. } => kind.as_str(),
        };
        let total = match result {
            "changed" => Some("success"),
            "in_place" | "conflict" => None,
            _ => Some("failure"),
        };
        if let Some(t) = total {
            *self.action_totals.entry((kind, t)).or_default() += 1;
        }
        self.action_results
            .with_label_values(&[kind, target, result])
            .inc();
    }

    /// A finished hook run.
    pub fn observe_hook(&mut self, r: &crate::actions::HookReport) {
        let result = match &r.result {
            Ok(run) if run.success() => "ok",
            Ok(run) if run.timed_out => "timeout",
            Ok(_) => "failed",
            Err(_) if r.attempts == 0 => "dropped",
            Err(_) => "failed",
        };
        self.hook_runs.with_label_values(&[&r.hook, result]).inc();
        let total = if result == "ok" { "success" } else { "failure" };
        *self.action_totals.entry(("hook", total)).or_default() += 1;
    }

    /// An engine event: remember when states changed, count failovers.
    pub fn on_event(&mut self, event: &Event, now: Instant) {
        match event {
            Event::HealthChanged { link, .. } => {
                self.link_since.insert(link.clone(), now);
            }
            Event::ActiveLinkChanged { group, reason, .. } => {
                self.group_since.insert(group.clone(), now);
                self.failovers
                    .with_label_values(&[group, switch_label(reason)])
                    .inc();
            }
            Event::AnswerChanged { .. }
            | Event::RankingMismatch { .. }
            | Event::ChecksFailingEverywhere { .. }
            | Event::ChecksRecovered { .. }
            | Event::NoAnswerPasses { .. }
            | Event::PeerDrill { .. }
            | Event::PathMtuChanged { .. } => {}
        }
    }

    /// At start and after a reload: drop the series of links, targets, groups, hooks and action
    /// targets that are gone, and start every series the config determines at 0 (failovers of
    /// each group by reason, RTTs of each link, checks of each probe target, runs of each hook
    /// by result, attempts at each action target by result), so that `increase()` sees the
    /// first event of each too.
    pub fn follow_config(&mut self, config: &isthmus_config::Config) {
        let links: BTreeSet<String> = config.links.iter().map(|l| l.name.clone()).collect();
        let targets: BTreeSet<(String, String)> = crate::probe::job::jobs(config)
            .iter()
            .map(|j| {
                let k = j.key();
                (k.probe, k.link.unwrap_or_default())
            })
            .collect();
        let groups: BTreeSet<String> = config.route_groups.iter().map(|g| g.name.clone()).collect();
        let hooks: BTreeSet<String> = config.hooks.iter().map(|h| h.name.clone()).collect();
        let actions: BTreeSet<(&'static str, String)> = action_targets(config)
            .into_iter()
            .map(|t| (t.kind(), t.name().to_owned()))
            .collect();
        for gone in self.seen.links.difference(&links) {
            let _ = self.rtt.remove_label_values(&[gone]);
        }
        for gone in self.seen.groups.difference(&groups) {
            for reason in REASONS {
                let _ = self.failovers.remove_label_values(&[gone.as_str(), reason]);
            }
        }
        for gone in self.seen.hooks.difference(&hooks) {
            for result in HOOK_RESULTS {
                let _ = self.hook_runs.remove_label_values(&[gone.as_str(), result]);
            }
        }
        for (kind, target) in self.seen.targets.difference(&actions) {
            let _ = self
                .action_duration
                .remove_label_values(&[kind, target.as_str()]);
            for result in ACTION_RESULTS {
                let _ = self
                    .action_results
                    .remove_label_values(&[kind, target.as_str(), result]);
            }
        }
        self.targets.retain(|t, _| targets.contains(t));
        for t in targets {
            self.targets.entry(t).or_default();
        }
        for link in &links {
            self.rtt.with_label_values(&[link.as_str()]);
        }
        for group in &groups {
            for reason in REASONS {
                self.failovers.with_label_values(&[group.as_str(), reason]);
            }
        }
        for hook in &hooks {
            for result in HOOK_RESULTS {
                self.hook_runs.with_label_values(&[hook.as_str(), result]);
            }
        }
        for (kind, target) in &actions {
            self.action_duration
                .with_label_values(&[kind, target.as_str()]);
            for result in ACTION_RESULTS {
                self.action_results
                    .with_label_values(&[kind, target.as_str(), result]);
            }
        }
        self.link_since.retain(|l, _| links.contains(l));
        self.group_since.retain(|g, _| groups.contains(g));
        self.egress.retain(|l, _| links.contains(l));
        self.seen = Seen {
            links,
            groups,
            hooks,
            targets: actions,
        };
    }

    /// Add the cost of what each priced link sent since the last call. Called on every scrape
    /// and every maintenance tick, so that a price change on reload prices at most a few
    /// seconds of traffic at the new price.
    pub fn accumulate_egress(
        &mut self,
        config: &isthmus_config::Config,
        sent: impl Fn(&str) -> Option<(u64, u64)>,
    ) {
        for link in &config.links {
            let Some((bytes, packets)) = sent(&link.name) else {
                continue;
            };
            let overhead = if link.listen.is_ipv4() {
                UNDERLAY_OVERHEAD_V4
            } else {
                UNDERLAY_OVERHEAD_V6
            };
            self.egress.entry(link.name.clone()).or_default().advance(
                bytes,
                packets,
                overhead,
                link.egress_price_per_gb,
            );
        }
    }

    fn since(&self, map: &BTreeMap<String, Instant>, key: &str, now: Instant) -> f64 {
        now.saturating_duration_since(map.get(key).copied().unwrap_or(self.started))
            .as_secs_f64()
    }
}

/// Every action target the config names: each DNS group's record and each cloud route table
/// listed by a route group (once, however many groups list it).
pub fn action_targets(config: &isthmus_config::Config) -> BTreeSet<crate::actions::TargetId> {
    use crate::actions::{Cloud, TargetId};
    let dns = config
        .dns_groups
        .iter()
        .map(|g| TargetId::Dns(g.name.clone()));
    let tables = config.route_groups.iter().flat_map(|g| {
        let aws = g.aws_route_tables.iter().map(|t| (Cloud::Aws, t));
        let oci = g.oci_route_tables.iter().map(|t| (Cloud::Oci, t));
        aws.chain(oci).map(|(cloud, t)| TargetId::RouteTable {
            cloud,
            id: t.id.clone(),
        })
    });
    dns.chain(tables).collect()
}

/// Every `result` of `isthmus_hook_runs_total` (see [`Metrics::observe_hook`]).
const HOOK_RESULTS: &[&str] = &["ok", "failed", "timeout", "dropped"];

/// Every `result` of `isthmus_action_results_total`: `changed`, `in_place`, and each failure
/// kind (`conflict` is both an event and a failure kind: one label).
const ACTION_RESULTS: &[&str] = &[
    "changed",
    "in_place",
    "conflict",
    "auth",
    "throttled",
    "unavailable",
    "rejected",
    "not_verified",
];

/// The `action` labels of `isthmus_actions_total` besides `route`.
const ACTION_KINDS: &[&str] = &["dns", "aws_route_table", "oci_route_table", "hook"];

/// Every label of [`switch_label`].
const REASONS: &[&str] = &[
    "first_usable",
    "active_down",
    "active_degraded",
    "failback",
    "manual",
    "peer_pin",
    "released",
    "no_usable_link",
    "config",
    "checks_failing",
    "restored",
];

/// Bytes per packet on the underlay beyond the tunnelled packet: WireGuard's data header and
/// tag (32), UDP (8) and IP (20 or 40).
const UNDERLAY_OVERHEAD_V4: u64 = 32 + 8 + 20;
const UNDERLAY_OVERHEAD_V6: u64 = 32 + 8 + 40;
/// Clouds bill egress per GiB.
const GIB: f64 = (1u64 << 30) as f64;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A config with link "ic", probe "db" (checked over "ic" by group "vcn"), route group
    /// "vcn" with a route table, DNS group "orders" and hook `hook`.
    fn config(hook: &str) -> isthmus_config::Config {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.key");
        std::fs::write(&key, "sTW6GPMPj3UsueeSgjVcAqH7BCh92Kd0K7aReWmVlEA=\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let text = format!(
            r#"
[agent]
name = "gw"
[control]
read_group = 0
admin_group = 0
[[link]]
name = "ic"
interface = "isth-ic"
private_key_file = "k.key"
listen = "192.0.2.1:51820"
peer_public_key = "sTW6GPMPj3UsueeSgjVcAqH7BCh92Kd0K7aReWmVlEA="
peer_endpoint = "192.0.2.2:51820"
allowed_ips = ["10.2.0.0/16", "10.255.0.1/32"]
addresses = ["10.255.0.0/31"]
[[probe]]
name = "db"
kind = "tcp"
target = "10.2.1.10:1522"
[aws]
region = "us-east-1"
[[route_group]]
name = "vcn"
destinations = ["10.2.0.0/16"]
links = ["ic"]
checks = ["db"]
aws_route_tables = [{{ id = "rtb-0a1b2c3d", target = "eni-0aaa1111", fallback = "none" }}]
[[dns_provider]]
name = "r53"
kind = "route53"
hosted_zone_id = "Z0123456789ABCDEFGHIJ"
[[dns_group]]
name = "orders"
provider = "r53"
record = "orders.example.internal."
ttl = 30
answers = [{{ value = "10.2.1.10", checks = ["db"] }}]
[[hook]]
name = "{hook}"
command = ["/bin/true"]
"#
        );
        isthmus_config::parse_str(
            &text,
            &dir.path().join("agentd.toml"),
            &isthmus_config::LoadOptions::default(),
        )
        .unwrap_or_else(|r| panic!("{r}"))
        .config
    }

    /// The registered families as `name{label="value",...} value` lines, labels sorted.
    fn series(m: &Metrics) -> Vec<String> {
        let families = m.registry.gather();
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("isthmus_"))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn every_series_the_config_determines_starts_at_zero_and_goes_with_its_name() {
        let mut m = Metrics::new();
        m.follow_config(&config("page"));
        let lines = series(&m);
        let has = |line: &str| lines.iter().any(|l| l == line);
        for result in HOOK_RESULTS {
            assert!(
                has(&format!(
                    "isthmus_hook_runs_total{{hook=\"page\",result=\"{result}\"}} 0"
                )),
                "{lines:#?}"
            );
        }
        for (kind, target) in [("dns", "orders"), ("aws_route_table", "rtb-0a1b2c3d")] {
            for result in ACTION_RESULTS {
                assert!(has(&format!(
                    "isthmus_action_results_total{{kind=\"{kind}\",result=\"{result}\",target=\"{target}\"}} 0"
                )));
            }
            assert!(has(&format!(
                "isthmus_action_duration_seconds_count{{kind=\"{kind}\",target=\"{target}\"}} 0"
            )));
        }
        assert!(has("isthmus_link_rtt_seconds_count{link=\"ic\"} 0"));
        assert!(has(
            "isthmus_group_failovers_total{group=\"vcn\",reason=\"active_down\"} 0"
        ));
        // The check of "db" over "ic", as route group "vcn" runs it.
        assert_eq!(
            m.targets.keys().collect::<Vec<_>>(),
            [&("db".to_owned(), "ic".to_owned())]
        );

        // Counted, then reloaded with the hook renamed: the old name's series go, counts of
        // names that stay are kept, the new name starts at 0.
        m.hook_runs.with_label_values(&["page", "failed"]).inc();
        m.action_results
            .with_label_values(&["dns", "orders", "auth"])
            .inc();
        m.follow_config(&config("notify"));
        let lines = series(&m);
        assert!(
            !lines.iter().any(|l| l.contains("hook=\"page\"")),
            "{lines:#?}"
        );
        assert!(lines
            .iter()
            .any(|l| l == "isthmus_hook_runs_total{hook=\"notify\",result=\"failed\"} 0"));
        assert!(lines.iter().any(|l| l
            == "isthmus_action_results_total{kind=\"dns\",result=\"auth\",target=\"orders\"} 1"));
    }

    #[test]
    fn every_failure_kind_is_a_listed_action_result() {
        use isthmus_actions::FailureKind as K;
        // A new kind fails to compile here until it is listed.
        let label = |k: K| match k {
            K::Conflict
            | K::Auth
            | K::Throttled
            | K::Unavailable
            | K::Rejected
            | K::NotVerified => k.as_str(),
        };
        for k in [
            K::Conflict,
            K::Auth,
            K::Throttled,
            K::Unavailable,
            K::Rejected,
            K::NotVerified,
        ] {
            assert!(ACTION_RESULTS.contains(&label(k)), "{k:?}");
        }
    }

    #[test]
    fn egress_cost_prices_underlay_bytes_per_gib_and_survives_counter_resets() {
        let mut e = Egress::default();
        // 1 GiB of packets minus their overhead, in 1 Mi packets: exactly 1 GiB on the wire.
        let packets = 1 << 20;
        let bytes = (1u64 << 30) - packets * UNDERLAY_OVERHEAD_V4;
        e.advance(bytes, packets, UNDERLAY_OVERHEAD_V4, Some(0.09));
        assert!((e.cost - 0.09).abs() < 1e-12, "{e:?}");
        // Nothing new: nothing added.
        e.advance(bytes, packets, UNDERLAY_OVERHEAD_V4, Some(0.09));
        assert!((e.cost - 0.09).abs() < 1e-12, "{e:?}");
        // The link was re-created: its counters restart, the cost keeps growing.
        e.advance(bytes, packets, UNDERLAY_OVERHEAD_V4, Some(0.09));
        e.advance(bytes / 2, packets / 2, UNDERLAY_OVERHEAD_V4, Some(0.09));
        assert!((e.cost - 0.135).abs() < 1e-12, "{e:?}");
        // No price (removed by a reload): counted, not priced; a later price starts from here.
        e.advance(bytes, packets, UNDERLAY_OVERHEAD_V4, None);
        assert!((e.cost - 0.135).abs() < 1e-12, "{e:?}");
        assert_eq!(e.bytes, bytes);
    }

    #[test]
    fn target_stats_bucket_each_check_and_count_failures_by_reason() {
        let mut t = TargetStats::default();
        t.observe(0.0005, None); // <= 1 ms
        t.observe(0.02, Some("refused")); // <= 25 ms
        t.observe(0.02, None);
        t.observe(9.0, Some("timeout")); // beyond every bound: only +Inf (the count)
        assert_eq!(t.cumulative(), [1, 1, 3, 3, 3, 3]);
        assert_eq!(t.count, 4);
        assert!((t.sum - 9.0405).abs() < 1e-9);
        assert_eq!(t.failures.get("refused"), Some(&1));
        assert_eq!(t.failures.get("timeout"), Some(&1));
    }

    #[test]
    fn every_switch_reason_has_a_listed_label() {
        let all = [
            SwitchReason::FirstUsable,
            SwitchReason::ActiveDown,
            SwitchReason::ActiveDegraded,
            SwitchReason::Failback,
            SwitchReason::Manual("x".into()),
            SwitchReason::PeerPin,
            SwitchReason::Released,
            SwitchReason::NoUsableLink,
            SwitchReason::Config,
            SwitchReason::ChecksFailing,
            SwitchReason::Restored,
        ];
        let labels: Vec<&str> = all.iter().map(switch_label).collect();
        assert_eq!(labels, REASONS);
    }
}
