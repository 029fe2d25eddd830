//! The scrape: the registered families plus those read from a [`View`] of the loop's state.
//! Runs off the event loop (the metrics server renders on the blocking pool).

use std::time::Instant;

use isthmus_core::{Health, ProbeDrop};
use prometheus::proto::MetricFamily;
use prometheus::TextEncoder;

use super::family::Family;
use super::{Metrics, TARGET_BUCKETS};
use crate::tunnel::counters::DropReason;
use crate::view::View as State;

/// Every health a link can have, as `isthmus_link_state{state}` lists them.
const HEALTHS: [Health; 5] = [
    Health::Up,
    Health::Degraded,
    Health::Unknown,
    Health::Down,
    Health::Suppressed,
];

/// The whole `/metrics` text.
pub fn render(state: &State) -> String {
    let metrics = &state.metrics;
    let now = state.now;
    let mut families = metrics.registry.gather();
    families.extend(agent(state));
    families.extend(links(metrics, state, now));
    families.extend(groups(metrics, state, now));
    families.extend(routes(state));
    families.extend(targets(metrics, state));
    families.extend(actions(state));
    families.extend(ha(state));
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = String::with_capacity(64 * 1024);
    if let Err(e) = TextEncoder::new().encode_utf8(&families, &mut out) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    out
}

/// The HA pair, with `[ha]`: every family present from the first scrape.
fn ha(state: &State) -> Vec<MetricFamily> {
    let Some(h) = &state.ha else {
        return Vec::new();
    };
    let pair = h.pair.as_str();
    let mut role = Family::gauge(
        "isthmus_ha_role",
        "1 for this gateway's role in its HA pair (active, unsure: the lease is running out, standby), 0 for the others.",
    );
    for r in ["active", "unsure", "standby"] {
        role.add(
            &[("pair", pair), ("role", r)],
            f64::from(u8::from(h.role == r)),
        );
    }
    let mut lease = Family::gauge(
        "isthmus_ha_lease_remaining_seconds",
        "Lease validity left as this gateway counts it (from the send time of its last acknowledged keepalive).",
    );
    lease.add(&[("pair", pair)], h.lease_left_ms as f64 / 1000.0);
    let mut store = Family::gauge(
        "isthmus_ha_store_up",
        "1 while the pair's lease store (etcd) answers, 0 while it does not: nobody takes over then.",
    );
    store.add(
        &[("pair", pair)],
        f64::from(u8::from(h.store_error.is_none())),
    );
    let mut ready = Family::gauge(
        "isthmus_ha_ready",
        "1 while this gateway may hold the role: every route group has a link and it is not drained.",
    );
    ready.add(
        &[("pair", pair)],
        f64::from(u8::from(h.ready && !h.drained)),
    );
    let mut takeovers = Family::counter(
        "isthmus_ha_takeovers_total",
        "Times this gateway became active.",
    );
    takeovers.add(&[("pair", pair)], h.takeovers as f64);
    let mut last = Family::gauge(
        "isthmus_ha_last_takeover_seconds",
        "The last takeover's duration: from the role becoming free to this gateway holding it (0 before any).",
    );
    last.add(
        &[("pair", pair)],
        h.last_takeover_ms.unwrap_or(0) as f64 / 1000.0,
    );
    [role, lease, store, ready, takeovers, last]
        .into_iter()
        .filter_map(Family::build)
        .collect()
}

fn agent(state: &State) -> Vec<MetricFamily> {
    let config = &state.config;
    let mut info = Family::gauge(
        "isthmus_build_info",
        "Always 1: agentd's version and the agent name from the config.",
    );
    info.add(
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("agent", &config.agent.name),
        ],
        1.0,
    );
    let mut reloads = Family::counter(
        "isthmus_config_reloads_total",
        "Config reloads (SIGHUP or netctl reload) by result.",
    );
    reloads
        .add(&[("result", "applied")], state.reloads_applied as f64)
        .add(&[("result", "rejected")], state.reloads_rejected as f64);
    let mut last_ok = Family::gauge(
        "isthmus_config_last_reload_successful",
        "0 after a rejected reload (the previous config keeps running), 1 otherwise.",
    );
    last_ok.add(
        &[],
        if state.last_rejected.is_some() {
            0.0
        } else {
            1.0
        },
    );
    [info.build(), reloads.build(), last_ok.build()]
        .into_iter()
        .flatten()
        .collect()
}

fn links(metrics: &Metrics, state: &State, now: Instant) -> Vec<MetricFamily> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut up = Family::gauge(
        "isthmus_link_up",
        "1 when the link can carry traffic (health up or degraded).",
    );
    let mut health = Family::gauge(
        "isthmus_link_state",
        "1 for the link's current health, 0 for the others.",
    );
    let mut drained = Family::gauge(
        "isthmus_link_drained",
        "1 while the link is drained for maintenance, here or by the peer.",
    );
    let mut since = Family::gauge(
        "isthmus_link_state_seconds",
        "Seconds since the link's health last changed.",
    );
    let mut loss = Family::gauge(
        "isthmus_link_loss_ratio",
        "Round-trip loss of the peer probes over the probe window.",
    );
    let mut jitter = Family::gauge(
        "isthmus_link_jitter_seconds",
        "Mean difference between consecutive probe RTTs over the probe window.",
    );
    let mut handshake = Family::gauge(
        "isthmus_link_handshake_age_seconds",
        "Seconds since the last completed WireGuard handshake (+Inf: none yet).",
    );
    let mut attempts = Family::counter(
        "isthmus_link_handshake_attempts_total",
        "WireGuard handshake initiations sent.",
    );
    let mut tx_bytes = Family::counter(
        "isthmus_link_transmit_bytes_total",
        "Bytes of IP packets sent into the tunnel, before encryption.",
    );
    let mut rx_bytes = Family::counter(
        "isthmus_link_receive_bytes_total",
        "Bytes of IP packets received from the tunnel, after decryption.",
    );
    let mut tx_packets = Family::counter(
        "isthmus_link_transmit_packets_total",
        "Packets sent into the tunnel.",
    );
    let mut rx_packets = Family::counter(
        "isthmus_link_receive_packets_total",
        "Packets received from the tunnel.",
    );
    let mut drops = Family::counter(
        "isthmus_link_dropped_packets_total",
        "Packets and datagrams dropped by the data plane, by reason.",
    );
    let mut probe_drops = Family::counter(
        "isthmus_link_probe_dropped_total",
        "Peer-probe datagrams refused, by reason.",
    );
    let mut cost = Family::counter(
        "isthmus_link_egress_cost_total",
        "Estimated egress cost of what the link sent, in the currency of egress_price_per_gb.",
    );
    let mut path_mtu = Family::gauge(
        "isthmus_link_path_mtu_bytes",
        "Largest inner IP packet the link carries in one piece, by direction: measured with mtu = \"auto\" (the floor until confirmed), configured otherwise.",
    );
    let mut pmtu_probes = Family::counter(
        "isthmus_link_path_mtu_probes_total",
        "Path-MTU probes sent, confirmed and lost (links with mtu = \"auto\").",
    );
    let mut black_holes = Family::counter(
        "isthmus_link_path_mtu_black_holes_total",
        "Times probes of the path MTU itself were lost while the link answered: the path shrank and the link fell back to its floor.",
    );
    let mut clamped = Family::counter(
        "isthmus_link_mss_clamped_total",
        "TCP SYNs whose MSS option was lowered to fit the link's path, both directions.",
    );
    let mut resegmented = Family::counter(
        "isthmus_link_resegmented_packets_total",
        "TCP packets larger than the link's path cut into segments that fit (connections opened over a larger path).",
    );
    let mut too_big = Family::counter(
        "isthmus_link_icmp_too_big_sent_total",
        "ICMP fragmentation-needed / packet-too-big answers sent for packets larger than the link's path.",
    );
    for link in &state.config.links {
        let l = [("link", link.name.as_str())];
        let report = state.engine.get(&link.name);
        if link.path_mtu.is_some() {
            let counts = report
                .and_then(|r| r.path_mtu)
                .map(|m| m.counts)
                .unwrap_or_default();
            for (result, n) in [
                ("sent", counts.probes_sent),
                ("confirmed", counts.probes_confirmed),
                ("lost", counts.probes_lost),
            ] {
                pmtu_probes.add(&[("link", &link.name), ("result", result)], n as f64);
            }
        }
        // Every link, so that the alert and the dashboard see the first one (a fixed MTU has none).
        let holes = report
            .and_then(|r| r.path_mtu)
            .map_or(0, |m| m.counts.black_holes);
        black_holes.add(&l, holes as f64);
        let h = report.map_or(Health::Unknown, |r| r.health);
        up.add(&l, f64::from(u8::from(h.carries())));
        for s in HEALTHS {
            health.add(
                &[("link", &link.name), ("state", s.as_str())],
                f64::from(u8::from(s == h)),
            );
        }
        drained.add(&l, f64::from(u8::from(report.is_some_and(|r| r.drained))));
        since.add(&l, metrics.since(&metrics.link_since, &link.name, now));
        if let Some(r) = report {
            loss.add(&l, r.figures.loss);
            if let Some(j) = r.figures.jitter {
                jitter.add(&l, j.as_secs_f64());
            }
        }
        // Every reason of every configured link, also before the engine reports on it.
        for reason in ProbeDrop::ALL.map(ProbeDrop::as_str) {
            let n = report.and_then(|r| r.probe_drops.get(reason)).copied();
            probe_drops.add(
                &[("link", &link.name), ("reason", reason)],
                n.unwrap_or(0) as f64,
            );
        }
        if let Some(e) = metrics.egress.get(&link.name) {
            if link.egress_price_per_gb.is_some() {
                cost.add(&l, e.cost);
            }
        }
        let Some(c) = state.counters.get(&link.name) else {
            continue;
        };
        for (direction, v) in [
            ("tx", c.limits.tx_or(link.tun_mtu())),
            ("rx", c.limits.rx_or(link.tun_mtu())),
        ] {
            path_mtu.add(
                &[("link", &link.name), ("direction", direction)],
                f64::from(v),
            );
        }
        clamped.add(&l, c.mss_clamped.load(Relaxed) as f64);
        resegmented.add(&l, c.resegmented.load(Relaxed) as f64);
        too_big.add(&l, c.ptb_sent.load(Relaxed) as f64);
        let age = c
            .handshake_age(now)
            .map_or(f64::INFINITY, |a| a.as_secs_f64());
        handshake.add(&l, age);
        attempts.add(&l, c.handshake_attempts.load(Relaxed) as f64);
        tx_bytes.add(&l, c.tx_bytes.load(Relaxed) as f64);
        rx_bytes.add(&l, c.rx_bytes.load(Relaxed) as f64);
        tx_packets.add(&l, c.tx_packets.load(Relaxed) as f64);
        rx_packets.add(&l, c.rx_packets.load(Relaxed) as f64);
        for reason in DropReason::ALL {
            drops.add(
                &[("link", &link.name), ("reason", reason.as_str())],
                c.drops(reason) as f64,
            );
        }
    }
    [
        up,
        health,
        drained,
        since,
        loss,
        jitter,
        handshake,
        attempts,
        tx_bytes,
        rx_bytes,
        tx_packets,
        rx_packets,
        drops,
        probe_drops,
        cost,
        path_mtu,
        pmtu_probes,
        black_holes,
        clamped,
        resegmented,
        too_big,
    ]
    .into_iter()
    .filter_map(Family::build)
    .collect()
}

fn groups(metrics: &Metrics, state: &State, now: Instant) -> Vec<MetricFamily> {
    let mut active = Family::gauge(
        "isthmus_group_active_link",
        "1 for the link carrying the route group's routes, 0 for its other links.",
    );
    let mut up = Family::gauge(
        "isthmus_group_up",
        "1 when the route group has an active link.",
    );
    let mut backup = Family::gauge(
        "isthmus_group_on_backup",
        "1 when the active link is not the group's first (preferred) link.",
    );
    let mut pinned = Family::gauge(
        "isthmus_group_pinned",
        "1 while the group is pinned by netctl failover, here or on the peer.",
    );
    let mut since = Family::gauge(
        "isthmus_group_state_seconds",
        "Seconds since the group's active link last changed.",
    );
    let mut drill = Family::gauge(
        "isthmus_group_drill_in_progress",
        "1 while a failover drill moves the group (route or DNS group), run here or on the peer.",
    );
    let drilled = |name: &str| {
        state.drill.as_ref().is_some_and(|d| d.group == name)
            || state.peer_drill.as_deref() == Some(name)
    };
    for name in state
        .groups
        .iter()
        .map(|g| g.name.as_str())
        .chain(state.dns_groups.iter().map(|g| g.name.as_str()))
    {
        drill.add(&[("group", name)], f64::from(u8::from(drilled(name))));
    }
    for g in &state.groups {
        let current = g.active_link.clone();
        let gl = [("group", g.name.as_str())];
        for link in &g.links {
            let is = current.as_deref() == Some(link.as_str());
            active.add(
                &[("group", &g.name), ("link", link)],
                f64::from(u8::from(is)),
            );
        }
        up.add(&gl, f64::from(u8::from(current.is_some())));
        let on_backup = current
            .as_deref()
            .is_some_and(|c| g.links.first().map(String::as_str) != Some(c));
        backup.add(&gl, f64::from(u8::from(on_backup)));
        let peer_pin = state.peer_pinned.get(&g.name).copied().unwrap_or(false);
        let is_pinned = g.pinned.is_some() || peer_pin;
        pinned.add(&gl, f64::from(u8::from(is_pinned)));
        since.add(&gl, metrics.since(&metrics.group_since, &g.name, now));
    }
    [active, up, backup, pinned, since, drill]
        .into_iter()
        .filter_map(Family::build)
        .collect()
}

/// DNS groups, service checks of route groups, and action targets.
fn actions(state: &State) -> Vec<MetricFamily> {
    use isthmus_api::{ActionState, CheckState};
    let mut chosen = Family::gauge(
        "isthmus_dns_group_answer",
        "1 for the answer the DNS group publishes, 0 for its other answers.",
    );
    let mut passing = Family::gauge(
        "isthmus_dns_answer_checks_passing",
        "1 when this gateway's checks of the answer pass, 0 when they fail (absent: unknown).",
    );
    let mut none_pass = Family::gauge(
        "isthmus_dns_group_no_answer_passes",
        "1 while no answer of the DNS group passes its checks (the chosen one is kept).",
    );
    for g in &state.dns_groups {
        let gl = [("group", g.name.as_str())];
        for a in &g.answers {
            let is = g.chosen.as_deref() == Some(a.value.as_str());
            let al = [("group", g.name.as_str()), ("answer", a.value.as_str())];
            chosen.add(&al, f64::from(u8::from(is)));
            if a.own != CheckState::Unknown {
                passing.add(&al, f64::from(u8::from(a.own == CheckState::Pass)));
            }
        }
        none_pass.add(&gl, f64::from(u8::from(g.no_answer_passes)));
    }
    let mut everywhere = Family::gauge(
        "isthmus_group_checks_failing_everywhere",
        "1 while the route group's service checks fail over every link (the fault is behind the tunnels; routes kept).",
    );
    let mut link_checks = Family::gauge(
        "isthmus_group_link_checks_passing",
        "1 when the route group's service checks pass over the link (at both gateways), 0 when they fail.",
    );
    // Groups with `checks` in the config, also before their first check finished (then not
    // failing anywhere: 0).
    let checked: std::collections::BTreeSet<&str> = state
        .config
        .route_groups
        .iter()
        .filter(|g| !g.checks.is_empty())
        .map(|g| g.name.as_str())
        .collect();
    for g in &state.groups {
        if !checked.contains(g.name.as_str()) {
            continue;
        }
        everywhere.add(
            &[("group", g.name.as_str())],
            f64::from(u8::from(g.checks_failing_everywhere)),
        );
        for c in &g.checks {
            let fail = c.own == CheckState::Fail || c.peer == Some(CheckState::Fail);
            if c.own != CheckState::Unknown || fail {
                link_checks.add(
                    &[("group", g.name.as_str()), ("link", c.link.as_str())],
                    f64::from(u8::from(!fail)),
                );
            }
        }
    }
    let mut in_sync = Family::gauge(
        "isthmus_action_in_sync",
        "1 when the target (DNS record, route table) was verified to hold the desired state.",
    );
    let mut failures = Family::gauge(
        "isthmus_action_consecutive_failures",
        "Failed attempts at the target since its last success.",
    );
    let mut last_ok = Family::gauge(
        "isthmus_action_last_success_timestamp_seconds",
        "Unix time the target was last verified to hold the desired state.",
    );
    let wall = state
        .wall
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let mut reported = std::collections::BTreeSet::new();
    for a in &state.actions {
        let l = [("kind", a.kind.as_str()), ("target", a.target.as_str())];
        in_sync.add(&l, f64::from(u8::from(a.state == ActionState::InSync)));
        failures.add(&l, f64::from(a.failures));
        if let Some(ago) = a.last_success_seconds_ago {
            last_ok.add(&l, (wall - ago as f64).floor());
        }
        reported.insert((a.kind.as_str(), a.target.as_str()));
    }
    // Targets nothing was decided for yet have failed nothing. Whether they are in sync has no
    // answer before there is a decision to hold: that series waits for it.
    for t in super::action_targets(&state.config) {
        if !reported.contains(&(t.kind(), t.name())) {
            failures.add(&[("kind", t.kind()), ("target", t.name())], 0.0);
        }
    }
    [
        chosen,
        passing,
        none_pass,
        everywhere,
        link_checks,
        in_sync,
        failures,
        last_ok,
    ]
    .into_iter()
    .filter_map(Family::build)
    .collect()
}

fn routes(state: &State) -> Vec<MetricFamily> {
    let r = &state.routes;
    let mut actions = Family::counter(
        "isthmus_actions_total",
        "Actions taken to follow a decision, by result (route: a reconcile with changes; dns, \
         aws_route_table, oci_route_table: a change made or a failed attempt; hook: a run).",
    );
    for ((kind, result), n) in &state.metrics.action_totals {
        actions.add(&[("action", kind), ("result", result)], *n as f64);
    }
    actions
        .add(
            &[("action", "route"), ("result", "success")],
            r.actions_ok as f64,
        )
        .add(
            &[("action", "route"), ("result", "failure")],
            r.actions_failed as f64,
        );
    let mut runs = Family::counter("isthmus_route_reconciles_total", "Route reconcile runs.");
    runs.add(&[], r.runs as f64);
    let mut changes = Family::counter(
        "isthmus_route_changes_total",
        "Successful netlink route and rule writes, by operation.",
    );
    for (op, n) in [
        ("add", r.ops.add),
        ("replace", r.ops.replace),
        ("delete", r.ops.delete),
        ("rule_add", r.ops.rule_add),
        ("rule_delete", r.ops.rule_delete),
    ] {
        changes.add(&[("op", op)], n as f64);
    }
    let mut errors = Family::counter(
        "isthmus_route_errors_total",
        "Route reconcile steps that failed (retried on the next run).",
    );
    errors.add(&[], r.errors as f64);
    [actions, runs, changes, errors]
        .into_iter()
        .filter_map(Family::build)
        .collect()
}

fn targets(metrics: &Metrics, state: &State) -> Vec<MetricFamily> {
    let mut up = Family::gauge(
        "isthmus_target_up",
        "1 if the target's last check passed, 0 if it failed.",
    );
    for (key, t) in &state.targets {
        let link = key.link.as_deref().unwrap_or("");
        up.add(
            &[("target", &key.probe), ("link", link)],
            f64::from(u8::from(t.last.ok)),
        );
    }
    let mut duration = Family::histogram(
        "isthmus_target_probe_duration_seconds",
        "Duration of target checks, passed or failed.",
    );
    let mut failures = Family::counter(
        "isthmus_target_probe_failures_total",
        "Failed target checks by reason.",
    );
    for ((target, link), stats) in &metrics.targets {
        let labels = [("target", target.as_str()), ("link", link.as_str())];
        duration.add_histogram(
            &labels,
            TARGET_BUCKETS,
            &stats.cumulative(),
            stats.count,
            stats.sum,
        );
        for (reason, n) in &stats.failures {
            failures.add(
                &[("target", target), ("link", link), ("reason", reason)],
                *n as f64,
            );
        }
    }
    [up, duration, failures]
        .into_iter()
        .filter_map(Family::build)
        .collect()
}
