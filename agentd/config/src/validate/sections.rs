//! `[agent]`, `[control]`, `[metrics]`, `[routes]`, `[health]` and `[health.damping]`: single
//! tables where every key has a default, so an absent section is a section of defaults.

use std::path::PathBuf;
use std::time::Duration;

use super::{absolute_path, known, name};
use crate::diagnostic::Severity;
use crate::fields::{Fields, Got};
use crate::model::*;
use crate::parse::Entry;
use crate::raw::{RawAgent, RawControl, RawDamping, RawHealth, RawMetrics, RawRoutes};
use crate::source::Sink;
use crate::values::{self, Invalid};

pub(super) fn agent(entry: Option<&Entry<RawAgent>>, sink: &mut Sink) -> Option<Agent> {
    let Some(e) = entry else {
        sink.push(
            Severity::Error,
            None,
            "missing section [agent]".to_string(),
            Some("add a section [agent] with at least name = \"<this gateway's name>\"".into()),
        );
        return None;
    };
    let r = &e.value;
    let mut f = Fields::of(e, sink);
    let name = name(&mut f, &r.name, 63);
    let log_level = f
        .parsed(&r.log_level, "log_level", |s| {
            values::keyword(s, "log level")
        })
        .or(LogLevel::Info);
    let state_dir = f
        .parsed(&r.state_dir, "state_dir", absolute_path)
        .or(PathBuf::from(DEFAULT_STATE_DIR));
    let uapi_dir = f
        .parsed(&r.uapi_dir, "uapi_dir", absolute_path)
        .or(PathBuf::from(DEFAULT_UAPI_DIR));
    let event_log_max_bytes = f
        .int(
            &r.event_log_max_bytes,
            "event_log_max_bytes",
            EVENT_LOG_MAX_BYTES_RANGE,
        )
        .map(|n| n as u64)
        .or(DEFAULT_EVENT_LOG_MAX_BYTES);
    Some(Agent {
        name: name?,
        log_level: log_level?,
        state_dir: state_dir?,
        uapi_dir: uapi_dir?,
        event_log_max_bytes: event_log_max_bytes?,
    })
}

pub(super) fn control(entry: Option<&Entry<RawControl>>, sink: &mut Sink) -> Option<Control> {
    let defaults = Control::default();
    let Some(e) = entry else {
        for (group, role) in [
            (&defaults.read_group, Role::Read),
            (&defaults.admin_group, Role::Admin),
        ] {
            if let Some(warning) = missing_group(group, role) {
                sink.push(Severity::Warning, None, warning.message, Some(warning.hint));
            }
        }
        return Some(defaults);
    };
    let r = &e.value;
    let mut f = Fields::of(e, sink);
    let socket = f
        .parsed(&r.socket, "socket", absolute_path)
        .or(defaults.socket);
    let mut socket_mode = f.scalar(&r.socket_mode, "socket_mode", values::octal_mode);
    if let Got::Is(mode, span) = &socket_mode {
        if mode & 0o007 != 0 {
            f.error(
                span.clone(),
                format!("socket_mode {mode:04o} gives others access to the control socket"),
                "the socket must not be world-accessible: use \"0660\" (owner and group) or \"0600\"",
            );
            socket_mode = Got::Bad;
        }
    }
    let read_group = group(&mut f, &r.read_group, Role::Read, defaults.read_group);
    let admin_group = group(&mut f, &r.admin_group, Role::Admin, defaults.admin_group);
    let max_clients = f
        .int(&r.max_clients, "max_clients", 1..=1024)
        .map(|n| n as usize)
        .or(defaults.max_clients);
    let max_clients_per_user = f
        .int(&r.max_clients_per_user, "max_clients_per_user", 1..=1024)
        .map(|n| n as usize)
        .or(defaults.max_clients_per_user);
    let reserved_clients = match (
        f.int(&r.reserved_clients, "reserved_clients", 0..=1023),
        max_clients,
    ) {
        (Got::Is(n, span), Some(max)) if n as usize >= max => {
            f.error(
                span,
                format!("reserved_clients {n} leaves no slot of max_clients {max} for the read group"),
                format!(
                    "use a value below {max}, or raise max_clients (the default keeps a quarter: {})",
                    default_reserved_clients(max)
                ),
            );
            None
        }
        (got, max) => got.map(|n| n as usize).or(default_reserved_clients(
            max.unwrap_or(defaults.max_clients),
        )),
    };
    let head_timeout = f
        .duration(
            &r.head_timeout,
            "head_timeout",
            Duration::from_millis(100),
            Some(Duration::from_secs(60)),
        )
        .or(defaults.head_timeout);
    let request_timeout = f
        .duration(
            &r.request_timeout,
            "request_timeout",
            Duration::from_millis(100),
            Some(Duration::from_secs(60)),
        )
        .or(defaults.request_timeout);
    Some(Control {
        socket: socket?,
        socket_mode: socket_mode.or(defaults.socket_mode)?,
        read_group: read_group?,
        admin_group: admin_group?,
        max_clients: max_clients?,
        max_clients_per_user: max_clients_per_user?,
        reserved_clients: reserved_clients?,
        head_timeout: head_timeout?,
        request_timeout: request_timeout?,
    })
}

#[derive(Clone, Copy)]
enum Role {
    Read,
    Admin,
}

impl Role {
    fn key(self) -> &'static str {
        match self {
            Role::Read => "read_group",
            Role::Admin => "admin_group",
        }
    }
}

/// `read_group` or `admin_group`, warning if its name does not resolve here.
fn group(
    f: &mut Fields,
    field: &crate::raw::Value,
    role: Role,
    default: GroupRef,
) -> Option<GroupRef> {
    let got = f.scalar(field, role.key(), values::group);
    let span = match &got {
        Got::Is(_, span) => span.clone(),
        _ => f.span(),
    };
    let group = got.or(default)?;
    if let Some(w) = missing_group(&group, role) {
        f.sink.warning(span, w.message, w.hint);
    }
    Some(group)
}

/// A warning if `group` is a name that does not resolve here. Numeric gids are not looked up:
/// they are deliberate.
fn missing_group(group: &GroupRef, role: Role) -> Option<Invalid> {
    let GroupRef::Name(name) = group else {
        return None;
    };
    if nix::unistd::Group::from_name(name).ok().flatten().is_some() {
        return None;
    }
    let key = role.key();
    let consequence = match role {
        Role::Read => "only root (and admin_group members) will be able to use netctl",
        Role::Admin => "only root will be able to reload, fail over or fail back with netctl",
    };
    Some(Invalid::new(
        format!("[control]: {key}: group {name:?} does not exist on this host: {consequence}"),
        format!("create it (groupadd --system {name}) and add the operators, or set {key} to an existing group"),
    ))
}

pub(super) fn metrics(entry: Option<&Entry<RawMetrics>>, sink: &mut Sink) -> Option<Metrics> {
    let Some(e) = entry else {
        return Some(Metrics::default());
    };
    let mut f = Fields::of(e, sink);
    let listen = match f.parsed(&e.value.listen, "listen", values::socket_addr) {
        Got::Is(addr, span) if addr.port() == 0 => {
            f.error(
                span,
                "listen port 0 would pick a random port",
                "give a fixed port for Prometheus to scrape, e.g. \"127.0.0.1:9477\"",
            );
            Got::Bad
        }
        Got::Is(addr, span) => {
            if !addr.ip().is_loopback() {
                f.warning(
                    span.clone(),
                    format!("metrics listen on {addr}: exposed beyond localhost"),
                    format!(
                        "firewall port {} so that only your Prometheus servers reach it, \
                         or listen on 127.0.0.1",
                        addr.port()
                    ),
                );
            }
            Got::Is(addr, span)
        }
        other => other,
    };
    Some(Metrics {
        listen: listen.or(DEFAULT_METRICS_LISTEN)?,
    })
}

pub(super) fn routes(entry: Option<&Entry<RawRoutes>>, sink: &mut Sink) -> Option<Routes> {
    let Some(e) = entry else {
        return Some(Routes::default());
    };
    let mut f = Fields::of(e, sink);
    let protocol = match f.int(&e.value.protocol, "protocol", 0..=255) {
        Got::Is(n, span) if n <= 4 => {
            f.error(
                span,
                format!("protocol {n} is reserved by the kernel (0 unspec, 1 redirect, 2 kernel, 3 boot, 4 static)"),
                "use a number from 5 to 255 that no other routing software on this host uses (default 73)",
            );
            Got::Bad
        }
        other => other.map(|n| n as u8),
    };
    let table = f.scalar(&e.value.table, "table", values::table);
    Some(Routes {
        protocol: protocol.or(DEFAULT_ROUTE_PROTOCOL)?,
        table: table.or(MAIN_TABLE)?,
    })
}

pub(super) fn health(
    entry: Option<&Entry<RawHealth>>,
    damping_entry: Option<&Entry<RawDamping>>,
    sink: &mut Sink,
) -> Option<Health> {
    let damping = damping(damping_entry, sink);
    let defaults = Health::default();
    let Some(e) = entry else {
        return Some(Health {
            damping: damping?,
            ..defaults
        });
    };
    let r = &e.value;
    let mut f = Fields::of(e, sink);
    let profile = f
        .parsed(&r.profile, "profile", |s| {
            values::keyword(s, "health profile")
        })
        .or(defaults.profile);
    let loss_degraded = match &r.loss_degraded {
        None => Some(defaults.loss_degraded),
        Some(v) => {
            let x = *v.get_ref();
            if x > 0.0 && x < 1.0 {
                Some(x)
            } else {
                f.error(
                    v.span(),
                    format!("loss_degraded {x} must be greater than 0 and less than 1"),
                    "it is the round-trip loss ratio of the peer probes: 0.2 means a link \
                     losing more than 20% of its probes (request or reply) is degraded",
                );
                None
            }
        }
    };
    let positive = Duration::from_millis(1);
    let rtt_degraded = f
        .duration(&r.rtt_degraded, "rtt_degraded", positive, None)
        .or(defaults.rtt_degraded);
    let jitter_degraded = f
        .duration(&r.jitter_degraded, "jitter_degraded", positive, None)
        .or(defaults.jitter_degraded);
    let probe_port = f
        .int(&r.probe_port, "probe_port", 1..=i64::from(u16::MAX))
        .map(|n| n as u16)
        .or(defaults.probe_port);
    Some(Health {
        profile: profile?,
        loss_degraded: loss_degraded?,
        rtt_degraded: rtt_degraded?,
        jitter_degraded: jitter_degraded?,
        probe_port: probe_port?,
        damping: damping?,
    })
}

fn damping(entry: Option<&Entry<RawDamping>>, sink: &mut Sink) -> Option<Damping> {
    let defaults = Damping::default();
    let Some(e) = entry else {
        return Some(defaults);
    };
    let r = &e.value;
    let mut f = Fields::of(e, sink);
    let count = 1..=i64::from(u32::MAX);
    let penalty = f.int(&r.penalty, "penalty", count.clone());
    let half_life = f.duration(&r.half_life, "half_life", Duration::from_secs(1), None);
    let suppress_above = f.int(&r.suppress_above, "suppress_above", count.clone());
    let reuse_below = f.int(&r.reuse_below, "reuse_below", count);
    let max_suppress = f.duration(&r.max_suppress, "max_suppress", Duration::ZERO, None);

    let header = f.span();
    let (suppress, reuse) = (
        known(&suppress_above, i64::from(defaults.suppress_above), &header),
        known(&reuse_below, i64::from(defaults.reuse_below), &header),
    );
    let mut ok = true;
    if let (Some((s, s_span)), Some((r, r_span))) = (suppress, reuse) {
        if r >= s {
            let span = if reuse_below.is_present() {
                r_span
            } else {
                s_span
            };
            f.error(
                span,
                format!("reuse_below ({r}) must be less than suppress_above ({s})"),
                "a suppressed link is reused once its penalty decays below reuse_below, \
                 so it must be lower than the threshold that suppresses it",
            );
            ok = false;
        }
    }
    let (half, max) = (
        known(&half_life, defaults.half_life, &header),
        known(&max_suppress, defaults.max_suppress, &header),
    );
    if let (Some((h, h_span)), Some((m, m_span))) = (half, max) {
        if m < h {
            let span = if max_suppress.is_present() {
                m_span
            } else {
                h_span
            };
            f.error(
                span,
                format!(
                    "max_suppress ({}) is shorter than half_life ({})",
                    crate::duration::format(m),
                    crate::duration::format(h)
                ),
                "max_suppress must be at least half_life, or no penalty ever decays while suppressed",
            );
            ok = false;
        }
    }
    if !ok {
        return None;
    }
    Some(Damping {
        penalty: penalty.map(|n| n as u32).or(defaults.penalty)?,
        half_life: half_life.or(defaults.half_life)?,
        suppress_above: suppress_above
            .map(|n| n as u32)
            .or(defaults.suppress_above)?,
        reuse_below: reuse_below.map(|n| n as u32).or(defaults.reuse_below)?,
        max_suppress: max_suppress.or(defaults.max_suppress)?,
    })
}
