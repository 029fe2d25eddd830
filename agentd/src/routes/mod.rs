//! Kernel routes as desired state.
//!
//! [`desired`] turns the config and each route group's active link into the complete set of
//! routes agentd wants; [`RouteManager::reconcile`] makes the kernel match it through
//! [`plan`] and a [`KernelApi`] ([`kernel::Kernel`] is netlink, tests use an in-memory kernel),
//! touching only routes that carry agentd's protocol number.
//!
//! **The routes adapter** ([`run`]) is the task that owns the manager. The event loop sends it
//! desired state with a generation number ([`RoutesCmd::Apply`]) and never waits; the adapter
//! applies one plan at a time, always the newest it has been sent, and answers
//! [`RoutesReport::Applied`] with that generation, so that the loop can order steps that depend on
//! each other (move routes off a link, then stop it). Kernel route events (our own writes among
//! them) are debounced here and answered with a resync against the same desired state, and a
//! full resync runs every [`RESYNC_EVERY`] in case an event was missed.
//!
//! **Fail closed.** Every destination of a route group gets two routes in its table:
//! - `DEST dev <tunnel> metric M mtu <group max>`: the active link's tunnel;
//! - `unreachable DEST metric 4294967040`: the last resort, owned by agentd but not bound to
//!   any interface.
//!
//! A TUN device vanishes with agentd's process and the kernel flushes its routes; the
//! unreachable route stays, so while agentd is dead, restarting, or has no usable link, traffic
//! to a remote CIDR is refused (ICMP unreachable) instead of leaking to the default route in
//! clear text. A clean stop removes the tunnel routes but keeps the unreachable ones (and the
//! policy rules); `ip route flush proto <protocol>` removes them for good.
//!
//! **MTU.** The tunnel route carries the largest MTU of the group's links (the configured one, or
//! the ceiling with `mtu = "auto"`), whichever link is active: the kernel hands the tunnel every
//! packet that some link of the group can carry, and never drops (with an ICMP error that
//! security groups filter) a packet of a connection opened over a larger link after a failover.
//! Each link's worker holds packets to its own path instead: it clamps the MSS of TCP SYNs,
//! cuts larger TCP packets into segments that fit and answers other packets with ICMP "too
//! big" (docs/mtu.md). The kernel passes a packet larger than the TUN device's MTU to it when
//! the route allows it.
//!
//! **A refused write** (the kernel answers `ENODEV` for a route on a TUN device that vanished
//! before the loop heard of it, or any other error) is [`FaultKind::RouteWrite`]: raised by the
//! first run with a failed step, with that step's error, and cleared by the next run in which
//! every step succeeds. Runs retry on kernel events and every [`RESYNC_EVERY`], so a refusal
//! that lasts is retried at that pace and logged once, not once per step and run.

pub mod kernel;
pub mod plan;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use isthmus_api::{RouteConflict, RouteStatus, RoutesStatus};
use isthmus_config::Config;
use tokio::sync::{mpsc, oneshot};

use crate::daemon::input::Input;
use crate::faults::{FaultKind, Faults};
use plan::{Change, KernelRoute, Target};

/// The subject of [`FaultKind::RouteWrite`]: one for all of agentd's routes, so that a device
/// that vanished under ten routes is one fault, logged once.
pub const FAULT_SUBJECT: &str = "routes";

/// Kernel route events come in bursts (our own writes among them): wait this long and
/// reconcile once.
pub const EVENT_DEBOUNCE: Duration = Duration::from_millis(20);
/// A full resync (and the host settings check) this often, whatever the events say.
pub const RESYNC_EVERY: Duration = Duration::from_secs(5);

/// One of agentd's policy rules: `from all lookup TABLE priority PRIORITY proto PROTOCOL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rule {
    pub v6: bool,
    pub table: u32,
    pub priority: u32,
    pub protocol: u8,
}

/// What the route manager needs of a kernel: netlink in agentd, memory in tests.
pub trait KernelApi: Send + Sync + 'static {
    /// Every IPv4 and IPv6 route in `tables`.
    fn routes(
        &self,
        tables: &[u32],
    ) -> impl Future<Output = anyhow::Result<Vec<KernelRoute>>> + Send;
    fn apply(&self, change: &Change) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// The policy rules carrying `protocol`.
    fn rules(&self, protocol: u8) -> impl Future<Output = anyhow::Result<Vec<Rule>>> + Send;
    fn add_rule(&self, rule: Rule) -> impl Future<Output = anyhow::Result<()>> + Send;
    fn delete_rule(&self, rule: Rule) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Metric of the fail-closed unreachable routes: the last resort for a destination.
pub const FAIL_CLOSED_METRIC: u32 = 0xFFFF_FF00;
/// Priority of the policy rule that sends lookups to a configured table (before `main`, 32766).
pub const RULE_PRIORITY: u32 = 5273;

/// One route agentd wants, and what it is for.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    pub route: KernelRoute,
    pub group: String,
    /// The link it sends traffic over; `None` for the fail-closed route.
    pub link: Option<String>,
}

/// A table other than main that needs a policy rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RuleFor {
    pub v6: bool,
    pub table: u32,
}

/// What agentd wants in the kernel.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Desired {
    pub routes: Vec<Wanted>,
    pub rules: BTreeSet<RuleFor>,
}

impl Desired {
    pub fn tables(&self) -> Vec<u32> {
        let set: BTreeSet<u32> = self.routes.iter().map(|r| r.route.table).collect();
        set.into_iter().collect()
    }

    pub fn kernel_routes(&self) -> Vec<KernelRoute> {
        self.routes.iter().map(|w| w.route.clone()).collect()
    }
}

/// The routes for `config`, with `active[group]` as each group's active link and `ifindex` to
/// find a link's tunnel interface (None: the link is not running, its routes fall back to the
/// fail-closed route).
pub fn desired(
    config: &Config,
    active: &BTreeMap<String, String>,
    ifindex: impl Fn(&str) -> Option<u32>,
) -> Desired {
    let protocol = config.routes.protocol;
    let mut out = Desired::default();
    for g in &config.route_groups {
        let mtu = g
            .links
            .iter()
            .filter_map(|name| config.link(name))
            .map(|l| u32::from(l.tun_mtu()))
            .max();
        let link = active.get(&g.name);
        let index = link.and_then(|l| ifindex(l));
        for dst in &g.destinations {
            if let (Some(link), Some(ifindex)) = (link, index) {
                out.routes.push(Wanted {
                    route: KernelRoute {
                        table: g.table,
                        dst: *dst,
                        metric: g.metric,
                        protocol,
                        target: Target::Dev {
                            ifindex,
                            gateway: None,
                        },
                        mtu,
                    },
                    group: g.name.clone(),
                    link: Some(link.clone()),
                });
            }
            out.routes.push(Wanted {
                route: KernelRoute {
                    table: g.table,
                    dst: *dst,
                    metric: FAIL_CLOSED_METRIC,
                    protocol,
                    target: Target::Unreachable,
                    mtu: None,
                },
                group: g.name.clone(),
                link: None,
            });
            if g.table != isthmus_config::MAIN_TABLE {
                out.rules.insert(RuleFor {
                    v6: dst.is_ipv6(),
                    table: g.table,
                });
            }
        }
    }
    out
}

/// Successful netlink writes by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Ops {
    pub add: u64,
    pub replace: u64,
    pub delete: u64,
    pub rule_add: u64,
    pub rule_delete: u64,
}

/// The route manager's figures, for `netctl routes` and metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RouteStats {
    pub protocol: u8,
    pub runs: u64,
    pub writes: u64,
    pub errors: u64,
    /// Successful writes by kind.
    pub ops: Ops,
    /// Reconcile runs that had something to change and all steps succeeded.
    pub actions_ok: u64,
    /// Reconcile runs in which some step failed.
    pub actions_failed: u64,
    pub last_error: Option<String>,
}

/// Reconciles the kernel with [`Desired`] and keeps the figures `netctl routes` shows.
pub struct RouteManager<K> {
    kernel: K,
    protocol: u8,
    pub stats: RouteStats,
    /// Conflicts already logged, so that each is logged once.
    logged: BTreeSet<String>,
    /// Conflicts seen for the first time, for the event log.
    pub fresh_conflicts: Vec<String>,
    /// Tables that held agentd's routes at the last reconcile (to clean them when unused).
    tables: Vec<u32>,
    faults: Faults,
    /// The first failed step's error in the current run.
    run_error: Option<String>,
}

impl<K: KernelApi> RouteManager<K> {
    pub fn new(kernel: K, protocol: u8) -> RouteManager<K> {
        RouteManager {
            kernel,
            protocol,
            stats: RouteStats {
                protocol,
                ..RouteStats::default()
            },
            logged: BTreeSet::new(),
            fresh_conflicts: Vec::new(),
            tables: Vec::new(),
            faults: Faults::detached(),
            run_error: None,
        }
    }

    /// Raise and clear [`FaultKind::RouteWrite`] in `faults` (the daemon's, counted in
    /// `/metrics`) instead of a private table.
    pub fn with_faults(mut self, faults: Faults) -> RouteManager<K> {
        self.faults = faults;
        self
    }

    pub fn set_protocol(&mut self, protocol: u8) {
        self.protocol = protocol;
        self.stats.protocol = protocol;
    }

    /// Make the kernel match `desired`. Errors are logged and counted; the next run retries.
    pub async fn reconcile(&mut self, desired: &Desired) {
        let extra = std::mem::replace(&mut self.tables, desired.tables());
        let (writes, errors) = (self.stats.writes, self.stats.errors);
        self.run(desired, &extra).await;
        if self.stats.errors > errors {
            self.stats.actions_failed += 1;
        } else if self.stats.writes > writes {
            self.stats.actions_ok += 1;
        }
        match self.run_error.take() {
            Some(e) => {
                self.faults.raise(FaultKind::RouteWrite, FAULT_SUBJECT, &e);
            }
            None => {
                self.faults.clear(FaultKind::RouteWrite, FAULT_SUBJECT);
            }
        }
    }

    async fn run(&mut self, desired: &Desired, extra_tables: &[u32]) {
        self.stats.runs += 1;
        let mut tables = desired.tables();
        tables.extend_from_slice(extra_tables);
        tables.push(isthmus_config::MAIN_TABLE);
        tables.sort_unstable();
        tables.dedup();
        let current = match self.kernel.routes(&tables).await {
            Ok(c) => c,
            Err(e) => return self.fail(e),
        };
        let plan = plan::plan(&desired.kernel_routes(), &current, self.protocol);
        for c in &plan.conflicts {
            let key = format!("{} / {}", c.desired.dst, c.foreign);
            if self.logged.insert(key) {
                self.fresh_conflicts.push(format!(
                    "{} table {}: a route agentd does not own ({}){}; left alone",
                    c.desired.dst,
                    c.desired.table,
                    c.foreign,
                    if c.blocking {
                        " blocks agentd's route"
                    } else {
                        " competes with agentd's route"
                    }
                ));
                tracing::warn!(
                    destination = %c.desired.dst,
                    table = c.desired.table,
                    foreign = %c.foreign,
                    blocking = c.blocking,
                    "a route agentd does not own competes for a remote CIDR; leaving it alone"
                );
            }
        }
        for change in &plan.changes {
            tracing::debug!(?change, "route change");
            match self.kernel.apply(change).await {
                Ok(()) => {
                    self.stats.writes += 1;
                    match change {
                        Change::Add(_) => self.stats.ops.add += 1,
                        Change::Replace(_) => self.stats.ops.replace += 1,
                        Change::Delete(_) => self.stats.ops.delete += 1,
                    }
                }
                Err(e) => self.fail(e),
            }
        }
        self.reconcile_rules(desired).await;
    }

    async fn reconcile_rules(&mut self, desired: &Desired) {
        let present = match self.kernel.rules(self.protocol).await {
            Ok(r) => r,
            Err(e) => return self.fail(e),
        };
        for rule in present.iter().copied() {
            let wanted = RuleFor {
                v6: rule.v6,
                table: rule.table,
            };
            if rule.priority != RULE_PRIORITY || !desired.rules.contains(&wanted) {
                match self.kernel.delete_rule(rule).await {
                    Ok(()) => {
                        self.stats.writes += 1;
                        self.stats.ops.rule_delete += 1;
                    }
                    Err(e) => self.fail(e),
                }
            }
        }
        for want in &desired.rules {
            let exists = present
                .iter()
                .any(|p| p.v6 == want.v6 && p.table == want.table && p.priority == RULE_PRIORITY);
            if !exists {
                let rule = Rule {
                    v6: want.v6,
                    table: want.table,
                    priority: RULE_PRIORITY,
                    protocol: self.protocol,
                };
                match self.kernel.add_rule(rule).await {
                    Ok(()) => {
                        self.stats.writes += 1;
                        self.stats.ops.rule_add += 1;
                    }
                    Err(e) => self.fail(e),
                }
            }
        }
    }

    /// A step failed: counted, and kept for the run's fault (logged there, once per episode).
    fn fail(&mut self, e: anyhow::Error) {
        let msg = format!("{e:#}");
        tracing::debug!(error = %msg, "route reconcile step failed; retrying on the next run");
        self.stats.errors += 1;
        self.stats.last_error = Some(msg.clone());
        self.run_error.get_or_insert(msg);
    }

    /// On a clean stop: remove the tunnel routes, keep the fail-closed ones and the rules.
    pub async fn release(&mut self, desired: &Desired) {
        let keep: Vec<KernelRoute> = desired
            .kernel_routes()
            .into_iter()
            .filter(|r| r.target == Target::Unreachable)
            .collect();
        let current = match self.kernel.routes(&desired.tables()).await {
            Ok(c) => c,
            Err(e) => {
                self.fail(e);
                if let Some(e) = self.run_error.take() {
                    tracing::warn!(error = %e, "cannot read the routes to release them");
                }
                return;
            }
        };
        for change in plan::plan(&keep, &current, self.protocol).changes {
            if let Change::Delete(_) = change {
                let _ = self.kernel.apply(&change).await;
            }
        }
    }

    /// Desired versus actual, read from the kernel now (nothing is written).
    pub async fn status(
        &self,
        desired: &Desired,
        interfaces: &BTreeMap<u32, String>,
        host_warnings: Vec<String>,
    ) -> RoutesStatus {
        let interface_of = |i: u32| interfaces.get(&i).cloned();
        let mut tables = desired.tables();
        tables.push(isthmus_config::MAIN_TABLE);
        tables.dedup();
        let (current, read_error) = match self.kernel.routes(&tables).await {
            Ok(c) => (c, None),
            Err(e) => (Vec::new(), Some(format!("{e:#}"))),
        };
        let describe = |r: &KernelRoute| match &r.target {
            Target::Dev { ifindex, gateway } => {
                let dev = interface_of(*ifindex).unwrap_or_else(|| format!("#{ifindex}"));
                let via = gateway.map(|g| format!(" via {g}")).unwrap_or_default();
                let mtu = r.mtu.map(|m| format!(" mtu {m}")).unwrap_or_default();
                format!("dev {dev}{via}{mtu}")
            }
            Target::Unreachable => "unreachable".to_owned(),
            Target::Other(kind) => format!("route type {kind}"),
        };
        let plan = plan::plan(&desired.kernel_routes(), &current, self.protocol);
        let routes = desired
            .routes
            .iter()
            .map(|w| {
                let d = &w.route;
                let actual = current
                    .iter()
                    .find(|c| c.protocol == self.protocol && c.identity() == d.identity());
                RouteStatus {
                    group: w.group.clone(),
                    link: w.link.clone(),
                    destination: d.dst.to_string(),
                    table: d.table,
                    metric: d.metric,
                    desired: describe(d),
                    actual: actual.map(&describe),
                    in_sync: actual.is_some_and(|a| a.target == d.target && a.mtu == d.mtu),
                }
            })
            .collect();
        RoutesStatus {
            protocol: self.protocol,
            reconciles: self.stats.runs,
            writes: self.stats.writes,
            errors: self.stats.errors,
            last_error: read_error.or_else(|| self.stats.last_error.clone()),
            routes,
            stray: plan
                .changes
                .iter()
                .filter_map(|c| match c {
                    Change::Delete(r) => Some(r.to_string()),
                    _ => None,
                })
                .collect(),
            conflicts: plan
                .conflicts
                .iter()
                .map(|c| RouteConflict {
                    destination: c.desired.dst.to_string(),
                    table: c.desired.table,
                    foreign: format!(
                        "{} (proto {}, metric {})",
                        describe(&c.foreign),
                        c.foreign.protocol,
                        c.foreign.metric
                    ),
                    blocking: c.blocking,
                })
                .collect(),
            host_warnings,
        }
    }
}

/// What the event loop asks of the routes adapter.
#[derive(Debug)]
pub enum RoutesCmd {
    /// Make the kernel match `desired` from now on; answered with [`RoutesReport::Applied`].
    Apply {
        generation: u64,
        desired: Desired,
        protocol: u8,
        /// The tunnel interfaces, and whether IPv6 is routed, for the host settings check.
        host: HostCheck,
    },
    /// Desired against actual, for `netctl routes`; answered directly to the caller.
    Status {
        interfaces: BTreeMap<u32, String>,
        reply: oneshot::Sender<RoutesStatus>,
    },
    /// Shutting down: remove the tunnel routes, keep the fail-closed ones and the rules;
    /// answered with [`RoutesReport::Released`].
    Release,
}

/// Inputs of the host settings check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostCheck {
    pub interfaces: Vec<String>,
    pub v6: bool,
}

/// What the routes adapter tells the event loop.
#[derive(Debug, Clone, PartialEq)]
pub enum RoutesReport {
    /// The kernel was reconciled with the desired state of `generation` (or a later one's
    /// resync). `conflicts` are foreign routes seen for the first time.
    Applied {
        generation: u64,
        stats: RouteStats,
        conflicts: Vec<String>,
        host_warnings: Vec<String>,
    },
    Released,
}

/// The host settings check the adapter runs with each full resync (`/proc/sys` in agentd).
pub type HostChecker = Box<dyn Fn(&HostCheck) -> Vec<String> + Send>;

/// The routes adapter: owns the manager, applies the newest desired state, answers with its
/// generation; reconciles again after kernel route events (`kernel_events`, debounced) and every
/// [`RESYNC_EVERY`].
pub async fn run<K: KernelApi>(
    mut manager: RouteManager<K>,
    mut commands: mpsc::UnboundedReceiver<RoutesCmd>,
    mut kernel_events: mpsc::Receiver<()>,
    host_check: HostChecker,
    inputs: mpsc::Sender<Input>,
) {
    let mut current: Option<(u64, Desired, HostCheck)> = None;
    let mut host_warnings = Vec::new();
    let mut resync = tokio::time::interval(RESYNC_EVERY);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut events_open = true;
    loop {
        let mut check_host = false;
        let first = tokio::select! {
            cmd = commands.recv() => match cmd {
                Some(cmd) => Some(cmd),
                None => return,
            },
            ev = kernel_events.recv(), if events_open => {
                if ev.is_none() {
                    events_open = false;
                    continue;
                }
                tokio::time::sleep(EVENT_DEBOUNCE).await;
                while kernel_events.try_recv().is_ok() {}
                None
            }
            _ = resync.tick() => {
                check_host = true;
                None
            }
        };
        // Take everything queued: the newest desired state wins, questions are answered.
        let mut pending: Vec<RoutesCmd> = first.into_iter().collect();
        while let Ok(cmd) = commands.try_recv() {
            pending.push(cmd);
        }
        let mut release = false;
        for cmd in pending {
            match cmd {
                RoutesCmd::Apply {
                    generation,
                    desired,
                    protocol,
                    host,
                } => {
                    manager.set_protocol(protocol);
                    if current.as_ref().is_none_or(|(_, _, h)| *h != host) {
                        check_host = true;
                    }
                    current = Some((generation, desired, host));
                }
                RoutesCmd::Status { interfaces, reply } => {
                    let desired = current.as_ref().map(|c| c.1.clone()).unwrap_or_default();
                    let _ = reply.send(
                        manager
                            .status(&desired, &interfaces, host_warnings.clone())
                            .await,
                    );
                }
                RoutesCmd::Release => release = true,
            }
        }
        let Some((generation, desired, host)) = &current else {
            if release {
                let _ = inputs.send(Input::Routes(RoutesReport::Released)).await;
            }
            continue;
        };
        if release {
            manager.release(desired).await;
            let _ = inputs.send(Input::Routes(RoutesReport::Released)).await;
            continue;
        }
        if check_host {
            let warnings = host_check(host);
            for w in &warnings {
                if !host_warnings.contains(w) {
                    tracing::warn!(warning = %w, "host setting breaks forwarding");
                }
            }
            host_warnings = warnings;
        }
        manager.reconcile(desired).await;
        let report = RoutesReport::Applied {
            generation: *generation,
            stats: manager.stats.clone(),
            conflicts: std::mem::take(&mut manager.fresh_conflicts),
            host_warnings: host_warnings.clone(),
        };
        if inputs.send(Input::Routes(report)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A kernel with one interface that can vanish: a route on a device it does not have is
    /// refused with ENODEV, as netlink refuses it.
    #[derive(Clone, Default)]
    struct Kernel {
        routes: Arc<Mutex<Vec<KernelRoute>>>,
        devices: Arc<Mutex<Vec<u32>>>,
        attempts: Arc<Mutex<u64>>,
    }

    impl KernelApi for Kernel {
        async fn routes(&self, tables: &[u32]) -> anyhow::Result<Vec<KernelRoute>> {
            let routes = self.routes.lock().unwrap();
            Ok(routes
                .iter()
                .filter(|r| tables.contains(&r.table))
                .cloned()
                .collect())
        }

        async fn apply(&self, change: &Change) -> anyhow::Result<()> {
            *self.attempts.lock().unwrap() += 1;
            let mut routes = self.routes.lock().unwrap();
            match change {
                Change::Add(r) | Change::Replace(r) => {
                    if let Target::Dev { ifindex, .. } = r.target {
                        if !self.devices.lock().unwrap().contains(&ifindex) {
                            anyhow::bail!("adding route {r}: No such device (os error 19)");
                        }
                    }
                    routes.retain(|x| x.identity() != r.identity());
                    routes.push(r.clone());
                }
                Change::Delete(r) => routes.retain(|x| x != r),
            }
            Ok(())
        }

        async fn rules(&self, _protocol: u8) -> anyhow::Result<Vec<Rule>> {
            Ok(Vec::new())
        }

        async fn add_rule(&self, _rule: Rule) -> anyhow::Result<()> {
            Ok(())
        }

        async fn delete_rule(&self, _rule: Rule) -> anyhow::Result<()> {
            Ok(())
        }
    }

    fn wanted(ifindex: u32) -> Desired {
        let dst = "10.2.0.0/16".parse().unwrap();
        let route = |metric, target| Wanted {
            route: KernelRoute {
                table: isthmus_config::MAIN_TABLE,
                dst,
                metric,
                protocol: 73,
                target,
                mtu: None,
            },
            group: "remote".to_owned(),
            link: None,
        };
        Desired {
            routes: vec![
                route(
                    100,
                    Target::Dev {
                        ifindex,
                        gateway: None,
                    },
                ),
                route(FAIL_CLOSED_METRIC, Target::Unreachable),
            ],
            rules: BTreeSet::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_route_on_a_vanished_device_is_one_fault_retried_until_the_new_device_comes() {
        let kernel = Kernel::default();
        kernel.devices.lock().unwrap().push(7);
        let faults = Faults::detached();
        let mut manager = RouteManager::new(kernel.clone(), 73).with_faults(faults.clone());
        manager.reconcile(&wanted(7)).await;
        assert_eq!(kernel.routes.lock().unwrap().len(), 2);

        // The device vanishes (its route with it) before the loop hears of it: every run
        // retries the write and is refused, one fault for all of them.
        kernel.devices.lock().unwrap().clear();
        kernel
            .routes
            .lock()
            .unwrap()
            .retain(|r| r.target == Target::Unreachable);
        for _ in 0..5 {
            manager.reconcile(&wanted(7)).await;
        }
        assert_eq!(faults.count(FaultKind::RouteWrite), 1);
        assert!(faults.is_active(FaultKind::RouteWrite, FAULT_SUBJECT));
        assert_eq!(manager.stats.errors, 5);
        assert!(
            faults.snapshot()[0].detail.contains("No such device"),
            "{:?}",
            faults.snapshot()
        );
        // The fail-closed route stayed: nothing leaks meanwhile.
        assert_eq!(
            *kernel.routes.lock().unwrap(),
            vec![wanted(7).routes[1].route.clone()]
        );

        // The link is back on a new device: the plan names it, the write goes, the fault
        // clears, and each route is there once.
        kernel.devices.lock().unwrap().push(8);
        manager.reconcile(&wanted(8)).await;
        assert!(!faults.is_active(FaultKind::RouteWrite, FAULT_SUBJECT));
        let mut routes = kernel.routes.lock().unwrap().clone();
        routes.sort_by_key(|r| r.metric);
        assert_eq!(routes, wanted(8).kernel_routes());
        assert_eq!(faults.count(FaultKind::RouteWrite), 1);
    }

    /// The tunnel route carries the largest MTU of the group's links whichever is active, so a
    /// failover to the smaller link never makes the kernel drop packets of open connections.
    #[test]
    fn the_tunnel_route_carries_the_largest_mtu_of_the_group_whichever_link_is_active() {
        let dir = tempfile::tempdir().unwrap();
        let [config, _] = crate::daemon::testbed::configs(dir.path(), "203.0.113.1:51821");
        let mut config = (*config).clone();
        let mtus = |config: &Config, active: &str| {
            let active = BTreeMap::from([("db".to_owned(), active.to_owned())]);
            desired(config, &active, |_| Some(7))
                .routes
                .iter()
                .filter(|w| w.link.is_some())
                .map(|w| w.route.mtu)
                .collect::<Vec<_>>()
        };
        // Both fixed at 1420.
        assert_eq!(mtus(&config, "ic"), [Some(1420)]);
        // A fixed jumbo interconnect and a 1420-byte internet link.
        config.links[0].mtu = 8920;
        assert_eq!(mtus(&config, "ic"), [Some(8920)]);
        assert_eq!(mtus(&config, "inet"), [Some(8920)]);
        // Auto: the ceiling, not the floor the search starts from.
        config.links[0].mtu = 1280;
        config.links[0].path_mtu = Some(isthmus_config::PathMtuBounds {
            min: 1280,
            max: 8420,
        });
        assert_eq!(mtus(&config, "inet"), [Some(8420)]);
    }
}
