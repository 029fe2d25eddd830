//! Kernel routes as desired state.
//!
//! [`desired`] turns the config and each route group's active link into the complete set of
//! routes agentd wants; [`RouteManager::reconcile`] makes the kernel match it through
//! [`plan`] and [`kernel`], touching only routes that carry agentd's protocol number.
//!
//! **Fail closed.** Every destination of a route group gets two routes in its table:
//! - `DEST dev <tunnel> metric M mtu <group min>`: the active link's tunnel;
//! - `unreachable DEST metric 4294967040`: the last resort, owned by agentd but not bound to
//!   any interface.
//!
//! A TUN device vanishes with agentd's process and the kernel flushes its routes; the
//! unreachable route stays, so while agentd is dead, restarting, or has no usable link, traffic
//! to a remote CIDR is refused (ICMP unreachable) instead of leaking to the default route in
//! clear text. A clean stop removes the tunnel routes but keeps the unreachable ones (and the
//! policy rules); `ip route flush proto <protocol>` removes them for good.
//!
//! **MTU.** The tunnel route carries the smallest MTU of the group's links, so that a flow
//! established over a jumbo interconnect survives a failover to a 1420-byte internet tunnel:
//! TCP learns the path MTU from the route, no MSS clamping needed.

pub mod kernel;
pub mod plan;

use std::collections::{BTreeMap, BTreeSet};

use isthmus_api::{RouteConflict, RouteStatus, RoutesStatus};
use isthmus_config::Config;

use kernel::Kernel;
use plan::{Change, KernelRoute, Target};

/// Metric of the fail-closed unreachable routes: the last resort for a destination.
pub const FAIL_CLOSED_METRIC: u32 = 0xFFFF_FF00;
/// Priority of the policy rule that sends lookups to a configured table (before `main`, 32766).
pub const RULE_PRIORITY: u32 = 5273;

/// What agentd wants in the kernel, and what each route is for.
#[derive(Debug, Default, Clone)]
pub struct Desired {
    pub routes: Vec<KernelRoute>,
    /// Why each route exists: (group, link or None for fail-closed).
    pub purpose: Vec<(String, Option<String>)>,
    /// Tables other than main that need a policy rule: (IPv6?, table).
    pub rules: BTreeSet<(bool, u32)>,
}

impl Desired {
    pub fn tables(&self) -> Vec<u32> {
        let set: BTreeSet<u32> = self.routes.iter().map(|r| r.table).collect();
        set.into_iter().collect()
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
            .map(|l| u32::from(l.mtu))
            .min();
        let link = active.get(&g.name);
        let index = link.and_then(|l| ifindex(l));
        for dst in &g.destinations {
            if let (Some(link), Some(ifindex)) = (link, index) {
                out.routes.push(KernelRoute {
                    table: g.table,
                    dst: *dst,
                    metric: g.metric,
                    protocol,
                    target: Target::Dev {
                        ifindex,
                        gateway: None,
                    },
                    mtu,
                });
                out.purpose.push((g.name.clone(), Some(link.clone())));
            }
            out.routes.push(KernelRoute {
                table: g.table,
                dst: *dst,
                metric: FAIL_CLOSED_METRIC,
                protocol,
                target: Target::Unreachable,
                mtu: None,
            });
            out.purpose.push((g.name.clone(), None));
            if g.table != isthmus_config::MAIN_TABLE {
                out.rules.insert((dst.is_ipv6(), g.table));
            }
        }
    }
    out
}

/// Successful netlink writes by kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ops {
    pub add: u64,
    pub replace: u64,
    pub delete: u64,
    pub rule_add: u64,
    pub rule_delete: u64,
}

/// Reconciles the kernel with [`Desired`] and keeps the figures `netctl routes` shows.
pub struct RouteManager {
    kernel: Kernel,
    protocol: u8,
    pub runs: u64,
    pub writes: u64,
    pub errors: u64,
    /// Successful writes by kind, for metrics.
    pub ops: Ops,
    /// Reconcile runs that had something to change: (all steps succeeded, some failed).
    pub actions: (u64, u64),
    pub last_error: Option<String>,
    /// Conflicts already logged, so that each is logged once.
    logged: BTreeSet<String>,
    /// Conflicts seen for the first time, for the event log (drained by the daemon).
    pub fresh_conflicts: Vec<String>,
}

impl RouteManager {
    pub fn new(kernel: Kernel, protocol: u8) -> RouteManager {
        RouteManager {
            kernel,
            protocol,
            runs: 0,
            writes: 0,
            errors: 0,
            ops: Ops::default(),
            actions: (0, 0),
            last_error: None,
            logged: BTreeSet::new(),
            fresh_conflicts: Vec::new(),
        }
    }

    pub fn set_protocol(&mut self, protocol: u8) {
        self.protocol = protocol;
    }

    /// Make the kernel match `desired`. Errors are logged and counted; the next run retries.
    pub async fn reconcile(&mut self, desired: &Desired, extra_tables: &[u32]) {
        let (writes, errors) = (self.writes, self.errors);
        self.run(desired, extra_tables).await;
        if self.errors > errors {
            self.actions.1 += 1;
        } else if self.writes > writes {
            self.actions.0 += 1;
        }
    }

    async fn run(&mut self, desired: &Desired, extra_tables: &[u32]) {
        self.runs += 1;
        let mut tables = desired.tables();
        tables.extend_from_slice(extra_tables);
        tables.push(isthmus_config::MAIN_TABLE);
        tables.sort_unstable();
        tables.dedup();
        let current = match self.kernel.routes(&tables).await {
            Ok(c) => c,
            Err(e) => return self.fail(e),
        };
        let plan = plan::plan(&desired.routes, &current, self.protocol);
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
                    self.writes += 1;
                    match change {
                        Change::Add(_) => self.ops.add += 1,
                        Change::Replace(_) => self.ops.replace += 1,
                        Change::Delete(_) => self.ops.delete += 1,
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
        for (v6, table, priority, msg) in present.iter().cloned() {
            if priority != RULE_PRIORITY || !desired.rules.contains(&(v6, table)) {
                match self.kernel.delete_rule(msg).await {
                    Ok(()) => {
                        self.writes += 1;
                        self.ops.rule_delete += 1;
                    }
                    Err(e) => self.fail(e),
                }
            }
        }
        for (v6, table) in &desired.rules {
            let exists = present
                .iter()
                .any(|(pv6, pt, pp, _)| pv6 == v6 && pt == table && *pp == RULE_PRIORITY);
            if !exists {
                match self
                    .kernel
                    .add_rule(*v6, *table, RULE_PRIORITY, self.protocol)
                    .await
                {
                    Ok(()) => {
                        self.writes += 1;
                        self.ops.rule_add += 1;
                    }
                    Err(e) => self.fail(e),
                }
            }
        }
    }

    fn fail(&mut self, e: anyhow::Error) {
        let msg = format!("{e:#}");
        tracing::warn!(error = %msg, "route reconcile step failed; retrying on the next run");
        self.errors += 1;
        self.last_error = Some(msg);
    }

    /// On a clean stop: remove the tunnel routes, keep the fail-closed ones and the rules.
    pub async fn release(&mut self, desired: &Desired) {
        let keep: Vec<KernelRoute> = desired
            .routes
            .iter()
            .filter(|r| r.target == Target::Unreachable)
            .cloned()
            .collect();
        let current = match self.kernel.routes(&desired.tables()).await {
            Ok(c) => c,
            Err(e) => return self.fail(e),
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
        interface_of: impl Fn(u32) -> Option<String>,
        host_warnings: Vec<String>,
    ) -> RoutesStatus {
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
        let plan = plan::plan(&desired.routes, &current, self.protocol);
        let routes = desired
            .routes
            .iter()
            .zip(&desired.purpose)
            .map(|(d, (group, link))| {
                let actual = current
                    .iter()
                    .find(|c| c.protocol == self.protocol && c.identity() == d.identity());
                RouteStatus {
                    group: group.clone(),
                    link: link.clone(),
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
            reconciles: self.runs,
            writes: self.writes,
            errors: self.errors,
            last_error: read_error.or_else(|| self.last_error.clone()),
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
