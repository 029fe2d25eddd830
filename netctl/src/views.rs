//! Human renderings of API responses. Most important first: who is this agent, is its config
//! the one you think, then links and groups as tables.

use std::fmt::Write as _;

use isthmus_api::{Access, ReloadOutcome, Status};

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

    out.push('\n');
    if s.links.is_empty() {
        out.push_str("no links configured\n");
    } else {
        let mut t = Table::new(&[
            "LINK",
            "INTERFACE",
            "STATE",
            "LISTEN",
            "PEER",
            "REMOTE CIDRS",
        ]);
        for l in &s.links {
            t.row(vec![
                l.name.clone(),
                l.interface.clone(),
                l.state.as_str().to_owned(),
                l.listen.clone(),
                l.peer_endpoint.clone(),
                l.allowed_ips.join(","),
            ]);
        }
        out.push_str(&t.render());
    }
    if !s.route_groups.is_empty() {
        out.push('\n');
        let mut t = Table::new(&[
            "ROUTE GROUP",
            "ACTIVE",
            "LINKS (preferred first)",
            "DESTINATIONS",
        ]);
        for g in &s.route_groups {
            t.row(vec![
                g.name.clone(),
                g.active_link.clone().unwrap_or_else(|| "none".into()),
                g.links.join(","),
                g.destinations.join(","),
            ]);
        }
        out.push_str(&t.render());
    }
    out
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
}
