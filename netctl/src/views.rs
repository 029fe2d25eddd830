//! Human renderings of API responses. Most important first: who is this agent, is its config
//! the one you think, then links and groups as tables.

use std::fmt::Write as _;

use isthmus_api::{
    Access, ActionState, ActionStatus, ActionsStatus, DnsGroupStatus, EventRecord, LinkStatus,
    ProbeStatus, ReloadOutcome, RouteGroupStatus, RoutesStatus, Status,
};

use crate::table::Table;

pub fn status(s: &Status) -> String {
    let mut out = String::new();
    let a = &s.agent;
    let access = match a.caller_access {
        Access::Read => "read",
        Access::Write => "read+write",
    };
    let _ = writeln!(
        out,
        "agent    {}  (agentd {}, pid {}, up {}, your access: {access})",
        a.name,
        a.version,
        a.pid,
        age(a.uptime_seconds)
    );
    match &a.metrics {
        Some(m) if m.listening => {
            let _ = writeln!(out, "metrics  http://{}/metrics", m.listen);
        }
        Some(m) => {
            let _ = writeln!(
                out,
                "!        metrics NOT LISTENING on {}: {} (retried every 5 s)",
                m.listen,
                m.error.as_deref().unwrap_or("starting")
            );
        }
        None => {}
    }
    let c = &s.config;
    let _ = writeln!(
        out,
        "config   {}  (fingerprint {}, loaded {} ago, reloads: {} applied, {} rejected)",
        c.path,
        c.fingerprint,
        age(c.loaded_seconds_ago),
        c.reloads_applied,
        c.reloads_rejected
    );
    if let Some(r) = &c.last_rejected {
        let _ = writeln!(
            out,
            "!        last reload REJECTED {} ago ({} errors; running config kept): {}",
            age(r.seconds_ago),
            r.error_count,
            r.first_error
        );
    }
    for w in &c.warnings {
        let at = w.line.map(|l| format!(":{l}")).unwrap_or_default();
        let _ = writeln!(out, "warning  {}{at}: {}", w.file, w.message);
    }
    if let Some(lag) = a.loop_lag.as_ref().filter(|l| l.bad) {
        let _ = writeln!(
            out,
            "!        event loop LAGGING: p99 {:.1} ms, max {:.1} ms (probes are late; is the host overloaded?)",
            lag.p99_ms, lag.max_ms
        );
    }
    if let Some(d) = &s.drill {
        let _ = writeln!(
            out,
            "drill    {}: {}, {} → {} ({} s in; hold {}); netctl drill --last for more, --abort to stop it",
            d.group,
            d.state,
            d.from,
            d.to.as_deref().unwrap_or("?"),
            d.seconds,
            age(d.hold_ms / 1000),
        );
    }
    if let Some(g) = &s.peer_drill {
        let _ = writeln!(out, "peer     the peer gateway is running a drill of {g}");
    }
    if let Some(h) = &s.ha {
        out.push_str(&pair(h));
    }
    if a.event_log_dropped > 0 {
        let _ = writeln!(
            out,
            "!        {} events not written to the event log file (kept in memory; check the state directory's disk)",
            a.event_log_dropped
        );
    }

    out.push('\n');
    if s.links.is_empty() {
        out.push_str("no links configured\n");
    } else {
        let mut t = Table::new(&[
            "LINK",
            "INTERFACE",
            "HEALTH",
            "TUNNEL",
            "PEER",
            "HANDSHAKE",
            "REMOTE CIDRS",
        ]);
        for l in &s.links {
            t.row(vec![
                l.name.clone(),
                l.interface.clone(),
                health(l),
                l.state.as_str().to_owned(),
                peer(l),
                handshake(l),
                l.allowed_ips.join(","),
            ]);
        }
        out.push_str(&t.render());
        for l in &s.links {
            if let Some(e) = &l.error {
                let _ = writeln!(out, "! link {} failed: {e}", l.name);
            }
        }
    }
    if !s.route_groups.is_empty() {
        out.push('\n');
        out.push_str(&groups(&s.route_groups));
    }
    if !s.dns_groups.is_empty() {
        out.push('\n');
        out.push_str(&dns_groups(&s.dns_groups));
    }
    if !s.actions.is_empty() {
        out.push('\n');
        out.push_str(&action_targets(&s.actions));
    }
    for w in &s.warnings {
        let _ = writeln!(out, "warning  {w}");
    }
    for f in &s.faults {
        let _ = writeln!(
            out,
            "fault    {} {} for {} s, recovering: {}",
            f.kind, f.subject, f.seconds, f.error
        );
    }
    out
}

/// The HA pair: this gateway's role, who holds it, the lease, the other member.
pub fn pair(h: &isthmus_api::HaStatus) -> String {
    let mut out = String::new();
    let holder = match (&h.holder, h.revision) {
        (Some(m), Some(r)) => format!("held by {m} (revision {r})"),
        _ => "held by nobody".to_string(),
    };
    let role = match h.role.as_str() {
        "active" => "ACTIVE".to_string(),
        "unsure" => "UNSURE (lease running out: not writing, not announcing)".to_string(),
        other => other.to_string(),
    };
    let _ = writeln!(
        out,
        "pair     {} as {}: {role}; role {holder}; lease {:.1} s left; {}, priority {}",
        h.pair,
        h.member,
        h.lease_left_ms as f64 / 1000.0,
        if h.drained {
            "drained"
        } else if h.ready {
            "ready"
        } else {
            "NOT READY (a route group has no link)"
        },
        h.priority,
    );
    match &h.other {
        Some(o) => {
            let _ = writeln!(
                out,
                "pair     other member {}: {}, priority {}{}",
                o.name,
                if o.drained {
                    "drained"
                } else if o.ready {
                    "ready"
                } else {
                    "not ready"
                },
                o.priority,
                if o.preempt { ", preempts" } else { "" },
            );
        }
        None => {
            let _ = writeln!(
                out,
                "pair     other member: not heard (down, or not started)"
            );
        }
    }
    if let Some(e) = &h.store_error {
        let _ = writeln!(
            out,
            "!        lease store unreachable: {e} (nobody takes over; the active keeps forwarding)"
        );
    }
    out
}

pub fn groups(list: &[RouteGroupStatus]) -> String {
    let mut t = Table::new(&[
        "ROUTE GROUP",
        "ACTIVE",
        "LINKS (preferred first)",
        "DESTINATIONS",
        "PINNED",
    ]);
    for g in list {
        t.row(vec![
            g.name.clone(),
            g.active_link.clone().unwrap_or_else(|| "none".into()),
            g.links.join(","),
            g.destinations.join(","),
            g.pinned
                .as_ref()
                .map(|p| format!("by operator {} ago: {}", age(p.seconds_ago), p.reason))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    let mut out = t.render();
    for g in list {
        if g.checks_failing_everywhere {
            let _ = writeln!(
                out,
                "!  group {}: service checks FAIL OVER EVERY LINK: the fault is behind the tunnels; routes kept",
                g.name
            );
        }
        for c in g.checks.iter().filter(|c| {
            c.own == isthmus_api::CheckState::Fail || c.peer == Some(isthmus_api::CheckState::Fail)
        }) {
            let _ = writeln!(
                out,
                "!  group {}: checks fail over {} (here: {}, peer: {}): the link counts as degraded",
                g.name,
                c.link,
                c.own.as_str(),
                c.peer.map_or("-", |p| p.as_str())
            );
        }
    }
    out
}

/// What `netctl failover GROUP --to LINK` will change, for the operator to confirm.
pub fn failover_plan(s: &Status, actions: Option<&ActionsStatus>, group: &str, to: &str) -> String {
    let mut out = String::new();
    let Some(g) = s.route_groups.iter().find(|g| g.name == group) else {
        // agentd answers with the precise error.
        let _ = writeln!(
            out,
            "route group {group}: not found on agent {}",
            s.agent.name
        );
        return out;
    };
    let from = g.active_link.as_deref().unwrap_or("none (failed closed)");
    let _ = writeln!(out, "agent {}: fail over route group {group}", s.agent.name);
    let _ = writeln!(
        out,
        "  routes     {} : {from} -> {to}",
        g.destinations.join(", ")
    );
    match s.links.iter().find(|l| l.name == to) {
        Some(l) => {
            let _ = writeln!(
                out,
                "  link {to}: health {}, tunnel {}",
                health(l),
                l.state.as_str()
            );
            if l.health != isthmus_api::Health::Up {
                let _ = writeln!(
                    out,
                    "  !  {to} is not healthy: traffic may not flow over it"
                );
            }
        }
        None => {
            let _ = writeln!(out, "  !  {to} is not a link of this agent");
        }
    }
    let _ = writeln!(
        out,
        "  pin        wins over health until `netctl failback {group}`; the peer gateway follows (the pin travels in the probes)"
    );
    if let Some(a) = actions {
        for t in a.actions.iter().filter(|t| t.kind != "dns") {
            let _ = writeln!(
                out,
                "  {} {}: stays on this gateway ({}): a switch between links does not change it",
                t.kind, t.target, t.desired
            );
        }
    }
    if g.checks
        .iter()
        .any(|c| c.link == to && c.own == isthmus_api::CheckState::Fail)
    {
        let _ = writeln!(out, "  !  the group's service checks FAIL over {to}");
    }
    out
}

/// DNS groups and action targets (`netctl actions`), most urgent first: what fails.
pub fn actions(a: &ActionsStatus) -> String {
    let mut out = String::new();
    if a.dns_groups.is_empty() && a.actions.is_empty() {
        return "no DNS groups or cloud route tables configured\n".into();
    }
    if !a.dns_groups.is_empty() {
        out.push_str(&dns_groups(&a.dns_groups));
    }
    if !a.actions.is_empty() {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&action_targets(&a.actions));
    }
    out
}

pub fn dns_groups(list: &[DnsGroupStatus]) -> String {
    let mut t = Table::new(&[
        "DNS GROUP",
        "RECORD",
        "CHOSEN",
        "ANSWERS (preferred first: here/peer)",
        "PROVIDER",
    ]);
    for g in list {
        let answers: Vec<String> = g
            .answers
            .iter()
            .map(|a| {
                let peer = a.peer.map_or(String::new(), |p| format!("/{}", p.as_str()));
                format!("{}={}{peer}", a.value, a.own.as_str())
            })
            .collect();
        t.row(vec![
            g.name.clone(),
            format!("{} {} ttl {}", g.record, g.record_type, g.ttl),
            g.chosen.clone().unwrap_or_else(|| "none yet".into()),
            answers.join(" "),
            g.provider.clone(),
        ]);
    }
    let mut out = t.render();
    for g in list.iter().filter(|g| g.no_answer_passes) {
        let _ = writeln!(
            out,
            "!  dns group {}: NO ANSWER PASSES its checks: keeping {}",
            g.name,
            g.chosen.as_deref().unwrap_or("the record as it is")
        );
    }
    out
}

pub fn action_targets(list: &[ActionStatus]) -> String {
    let mut t = Table::new(&[
        "ACTION",
        "TARGET",
        "STATE",
        "DESIRED",
        "LAST OK",
        "LAST CHANGE",
        "PROVIDER",
    ]);
    for a in list {
        t.row(vec![
            a.kind.clone(),
            a.target.clone(),
            match a.state {
                ActionState::InSync => "in sync".into(),
                ActionState::Pending => "PENDING".into(),
                ActionState::Failing => format!("FAILING ({})", a.failures),
            },
            a.desired.clone(),
            a.last_success_seconds_ago
                .map_or("never".into(), |s| format!("{} ago", age(s))),
            a.last_change_ms
                .map_or("-".into(), |m| format!("{m:.0} ms")),
            a.provider.clone(),
        ]);
    }
    let mut out = t.render();
    for a in list {
        if let Some(e) = a
            .last_error
            .as_ref()
            .filter(|_| a.state == ActionState::Failing)
        {
            let retry = e
                .retry_in_seconds
                .map_or(String::new(), |r| format!("; next attempt in {r:.1} s"));
            let _ = writeln!(
                out,
                "!  {} {}: {} {} ago: {}{retry}",
                a.kind,
                a.target,
                e.kind,
                age(e.seconds_ago),
                e.message
            );
        }
    }
    out
}

/// The answer to failover/failback: the group as it is now.
pub fn group(g: &RouteGroupStatus) -> String {
    groups(std::slice::from_ref(g))
}

pub fn routes(r: &RoutesStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "routes of proto {p} (`ip route show proto {p}`): {} reconciles, {} netlink writes, {} errors",
        r.reconciles,
        r.writes,
        r.errors,
        p = r.protocol
    );
    if let Some(e) = &r.last_error {
        let _ = writeln!(out, "!  last error: {e}");
    }
    if r.routes.is_empty() {
        out.push_str("no route groups configured\n");
    } else {
        let mut t = Table::new(&[
            "GROUP",
            "DESTINATION",
            "TABLE",
            "METRIC",
            "DESIRED",
            "ACTUAL",
            "SYNC",
        ]);
        for x in &r.routes {
            let desired = match &x.link {
                Some(link) => format!("{} ({link})", x.desired),
                None => format!("{} (fail-closed)", x.desired),
            };
            t.row(vec![
                x.group.clone(),
                x.destination.clone(),
                table_name(x.table),
                x.metric.to_string(),
                desired,
                x.actual.clone().unwrap_or_else(|| "MISSING".into()),
                if x.in_sync {
                    "ok".into()
                } else {
                    "DRIFT".into()
                },
            ]);
        }
        out.push_str(&t.render());
    }
    for s in &r.stray {
        let _ = writeln!(
            out,
            "stray    {s} (agentd's, unwanted: removed by the next reconcile)"
        );
    }
    for c in &r.conflicts {
        let _ = writeln!(
            out,
            "CONFLICT {} table {}: {}{}",
            c.destination,
            table_name(c.table),
            c.foreign,
            if c.blocking {
                " blocks agentd's route (same metric); agentd leaves it alone"
            } else {
                " competes with agentd's route; left alone"
            }
        );
    }
    for w in &r.host_warnings {
        let _ = writeln!(out, "warning  {w}");
    }
    out
}

fn table_name(t: u32) -> String {
    if t == 254 {
        "main".into()
    } else {
        t.to_string()
    }
}

pub fn links(links: &[LinkStatus]) -> String {
    if links.is_empty() {
        return "no links configured\n".into();
    }
    let mut t = Table::new(&[
        "LINK",
        "HEALTH",
        "RTT p50/p95",
        "LOSS rt (in/out)",
        "JITTER",
        "TUNNEL",
        "PEER",
        "HANDSHAKE",
        "TX",
        "RX",
        "HS TRIES/FAILS",
        "PATH MTU tx/rx",
        "DROPS",
    ]);
    for l in links {
        let drops: Vec<String> = l
            .drops
            .iter()
            .chain(l.probe_drops.iter())
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        let f = l.figures.as_ref();
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
        let pct = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:.1}%", v * 100.0));
        t.row(vec![
            l.name.clone(),
            health(l),
            f.map_or("-".into(), |f| {
                format!("{}/{} ms", ms(f.rtt_p50_ms), ms(f.rtt_p95_ms))
            }),
            f.map_or("-".into(), |f| {
                format!(
                    "{} ({}/{})",
                    pct(Some(f.loss)),
                    pct(f.loss_in),
                    pct(f.loss_out)
                )
            }),
            f.map_or("-".into(), |f| format!("{} ms", ms(f.jitter_ms))),
            l.state.as_str().to_owned(),
            peer(l),
            handshake(l),
            format!("{} ({} pkts)", bytes(l.tx_bytes), l.tx_packets),
            format!("{} ({} pkts)", bytes(l.rx_bytes), l.rx_packets),
            format!("{}/{}", l.handshake_attempts, l.handshake_failures),
            path_mtu(&l.path_mtu),
            if drops.is_empty() {
                "-".into()
            } else {
                drops.join(",")
            },
        ]);
    }
    let mut out = t.render();
    for l in links {
        if let Some(e) = &l.error {
            let _ = writeln!(out, "! link {} failed: {e}", l.name);
        }
    }
    for l in links {
        if let Some(line) = path_mtu_detail(&l.name, &l.path_mtu) {
            out += &line;
        }
    }
    for l in links {
        if let Some(ha) = &l.peer_ha {
            let note = if ha.starts_with("active") {
                "routed to"
            } else {
                "used only as a last resort while its pair has a better member"
            };
            let _ = writeln!(out, "  {}: the peer is {ha} of its HA pair: {note}", l.name);
        }
    }
    out
}

/// The sizes a link holds packets to: `1420 fixed`, or the measured `tx/rx` with the search's
/// state when it is not complete (`?` for a direction not reported yet).
fn path_mtu(m: &isthmus_api::PathMtuStatus) -> String {
    if m.state == "fixed" || m.state.is_empty() {
        return format!("{} fixed", m.tx);
    }
    let rx = m.rx.map_or("?".to_owned(), |v| v.to_string());
    let tx = if m.tx_confirmed {
        m.tx.to_string()
    } else {
        format!("{}?", m.tx)
    };
    match m.state.as_str() {
        "complete" => format!("{tx}/{rx}"),
        other => format!("{tx}/{rx} {other}"),
    }
}

/// A line under the table for a link that searches its path MTU or has rewritten packets.
fn path_mtu_detail(name: &str, m: &isthmus_api::PathMtuStatus) -> Option<String> {
    let rewrote = m.mss_clamped + m.resegmented + m.too_big_sent > 0;
    let data = format!(
        "mss clamped {}, resegmented {}, too-big sent {}",
        m.mss_clamped, m.resegmented, m.too_big_sent
    );
    match (m.floor, m.ceiling) {
        (Some(floor), Some(ceiling)) => {
            let why = match m.state.as_str() {
                "unsupported" => " (the peer does not answer path-MTU probes: the floor is used)",
                "searching" => " (searching)",
                _ => "",
            };
            Some(format!(
                "mtu {name}: auto {floor}..{ceiling}, tx {}{}, rx {}{why}; probes {} sent, {} confirmed, {} lost; black holes {}; {data}\n",
                m.tx,
                if m.tx_confirmed { " confirmed" } else { " assumed" },
                m.rx.map_or("not reported".to_owned(), |v| v.to_string()),
                m.probes_sent,
                m.probes_confirmed,
                m.probes_lost,
                m.black_holes,
            ))
        }
        _ if rewrote => Some(format!("mtu {name}: fixed {}; {data}\n", m.tx)),
        _ => None,
    }
}

/// Agreed health, with the two views when they differ and a drain mark.
fn health(l: &LinkStatus) -> String {
    let mut h = l.health.to_string();
    if let Some(peer) = &l.peer_health {
        if *peer != l.own_health {
            h = format!("{h} (here {}, peer {peer})", l.own_health);
        }
    }
    if l.drained {
        h += " DRAINED";
    }
    h
}

pub fn probes(list: &[ProbeStatus]) -> String {
    if list.is_empty() {
        return "no probes configured\n".into();
    }
    let mut t = Table::new(&[
        "PROBE",
        "VIA",
        "KIND",
        "TARGET",
        "STATE",
        "LAST",
        "TOOK",
        "WHEN",
        "OK/FAILED",
    ]);
    for p in list {
        t.row(vec![
            p.name.clone(),
            // Bound to a link's tunnel, or along the routes (the active link).
            p.link.clone().unwrap_or_else(|| "routes".into()),
            p.kind.clone(),
            p.target.clone(),
            p.state.to_uppercase(),
            p.last_reason.clone().unwrap_or_else(|| "-".into()),
            p.last_duration_ms
                .map_or("-".into(), |d| format!("{d:.1} ms")),
            p.last_run_seconds_ago
                .map_or("-".into(), |s| format!("{} ago", age(s))),
            format!("{}/{}", p.successes, p.failures),
        ]);
    }
    t.render()
}

/// One event on one line.
pub fn event(e: &EventRecord) -> String {
    let subject = match (&e.group, &e.link) {
        (Some(g), _) => format!("group {g}"),
        (None, Some(l)) => format!("link {l}"),
        _ => String::new(),
    };
    let change = match (&e.from, &e.to) {
        (Some(f), Some(t)) => format!(": {f} -> {t}"),
        (None, Some(t)) => format!(": -> {t}"),
        (Some(f), None) => format!(": {f} -> none"),
        (None, None) => String::new(),
    };
    let figures = e.figures.as_ref().map_or(String::new(), |f| {
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1} ms"));
        format!(
            " [loss {:.1}%, rtt p95 {}, jitter {}, {} lost in a row]",
            f.loss * 100.0,
            ms(f.rtt_p95_ms),
            ms(f.jitter_ms),
            f.consecutive_lost
        )
    });
    format!(
        "{}  {:<19}  {subject}{change}  ({}){figures}",
        e.time, e.kind, e.reason
    )
}

/// The endpoint in use, or the configured one in brackets if none is known yet.
fn peer(l: &LinkStatus) -> String {
    match &l.endpoint {
        Some(e) => e.clone(),
        None => format!("({})", l.peer_endpoint),
    }
}

fn handshake(l: &LinkStatus) -> String {
    match l.last_handshake_seconds_ago {
        Some(s) => format!("{} ago", age(s)),
        None => "never".into(),
    }
}

/// Bytes in binary units: `512 B`, `1.5 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

pub fn reload(r: &ReloadOutcome) -> String {
    let mut out = String::new();
    if r.changed {
        let _ = writeln!(out, "reloaded: config {} is running", r.fingerprint);
    } else {
        let _ = writeln!(out, "reloaded: no changes (config {})", r.fingerprint);
    }
    for c in &r.changes {
        let _ = writeln!(out, "  {c}");
    }
    for c in &r.needs_restart {
        let _ = writeln!(out, "  {c} (takes effect after a restart of agentd)");
    }
    for w in &r.warnings {
        let _ = writeln!(out, "{w}");
    }
    out
}

/// Seconds as a short age: `42s`, `3m12s`, `5h03m`, `2d04h`.
pub fn age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_short_and_exact_enough() {
        assert_eq!(age(0), "0s");
        assert_eq!(age(192), "3m12s");
        assert_eq!(age(5 * 3600 + 180), "5h03m");
        assert_eq!(age(2 * 86400 + 4 * 3600 + 59), "2d04h");
    }

    #[test]
    fn byte_counts_use_binary_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(50 << 20), "50.0 MiB");
    }
}

#[cfg(test)]
mod failover_plan_tests {
    use super::*;

    fn status() -> Status {
        serde_json::from_value(serde_json::json!({
            "agent": {"name": "aws-gw", "version": "0.1.0", "api_version": "v1", "pid": 1,
                      "uptime_seconds": 5, "caller_access": "write"},
            "config": {"path": "/etc/isthmus/agentd.toml", "fingerprint": "f", "loaded_seconds_ago": 1,
                       "reloads_applied": 0, "reloads_rejected": 0},
            "links": [],
            "route_groups": [{"name": "oci-vcn", "destinations": ["10.2.0.0/16"],
                              "links": ["interconnect", "internet"], "active_link": "interconnect"}]
        }))
        .unwrap()
    }

    #[test]
    fn the_plan_names_the_routes_that_move_and_warns_about_an_unknown_link() {
        let plan = failover_plan(&status(), None, "oci-vcn", "internet");
        assert!(
            plan.contains("10.2.0.0/16 : interconnect -> internet"),
            "{plan}"
        );
        assert!(plan.contains("the peer gateway follows"), "{plan}");
        assert!(
            plan.contains("internet is not a link of this agent"),
            "{plan}"
        );
        let plan = failover_plan(&status(), None, "nope", "internet");
        assert!(plan.contains("route group nope: not found"), "{plan}");
    }
}

#[cfg(test)]
mod fault_tests {
    use super::*;

    #[test]
    fn active_faults_get_a_line_each_and_none_without_them() {
        let mut s: Status = serde_json::from_value(serde_json::json!({
            "agent": {"name": "aws-gw", "version": "0.1.0", "api_version": "v1", "pid": 1,
                      "uptime_seconds": 5, "caller_access": "read"},
            "config": {"path": "/etc/isthmus/agentd.toml", "fingerprint": "f", "loaded_seconds_ago": 1,
                       "reloads_applied": 0, "reloads_rejected": 0},
            "links": [], "route_groups": []
        }))
        .unwrap();
        assert!(!status(&s).contains("fault"), "{}", status(&s));
        s.faults.push(isthmus_api::FaultStatus {
            kind: "tun_gone".to_owned(),
            subject: "interconnect".to_owned(),
            error: "File descriptor in bad state (os error 77)".to_owned(),
            seconds: 3,
        });
        let text = status(&s);
        assert!(
            text.contains("fault    tun_gone interconnect for 3 s, recovering: File descriptor"),
            "{text}"
        );
    }
}
