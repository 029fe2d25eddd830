//! The rules of each section and list entry, and building the [`Config`] from what passed.
//!
//! Every key is read through [`Fields`], which reports what is wrong with the entry's label and
//! the value's place; rules that involve two keys of the same entry (timeout ≤ interval,
//! reuse_below < suppress_above) live here too. Rules across entries (unique names,
//! references, overlapping destinations) are in `relations`. The config is built only when
//! nothing was reported as an error, so a built config always satisfies every rule.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnetwork::IpNetwork;

use crate::diagnostic::Severity;
use crate::fields::{Fields, Got};
use crate::keys::{KeyFiles, KeyKind};
use crate::model::*;
use crate::parse::{Entry, RawConfig};
use crate::raw::{
    RawAgent, RawControl, RawDamping, RawDnsGroup, RawDnsProvider, RawHealth, RawLink, RawMetrics,
    RawProbe, RawRouteGroup, RawRoutes,
};
use crate::relations;
use crate::source::{Sink, Span};
use crate::values::{self, Invalid};

/// Checks everything and returns the config if there was no error.
pub(crate) fn build(
    raw: &RawConfig,
    path: &Path,
    keys: &KeyFiles,
    sink: &mut Sink,
) -> Option<Config> {
    let agent = agent(raw.agent.as_ref(), sink);
    let control = control(raw.control.as_ref(), sink);
    let metrics = metrics(raw.metrics.as_ref(), sink);
    let routes = routes(raw.routes.as_ref(), sink);
    let health = health(raw.health.as_ref(), raw.damping.as_ref(), sink);
    let default_table = routes.as_ref().map_or(MAIN_TABLE, |r| r.table);
    let links: Vec<_> = raw.links.iter().map(|e| link(e, keys, sink)).collect();
    let probes: Vec<_> = raw.probes.iter().map(|e| probe(e, sink)).collect();
    let route_groups: Vec<_> = raw
        .route_groups
        .iter()
        .map(|e| route_group(e, default_table, sink))
        .collect();
    let dns_providers: Vec<_> = raw
        .dns_providers
        .iter()
        .map(|e| dns_provider(e, keys, sink))
        .collect();
    let dns_groups: Vec<_> = raw.dns_groups.iter().map(|e| dns_group(e, sink)).collect();
    relations::check(raw, default_table, sink);
    if sink.error_count() > 0 {
        return None;
    }
    Some(Config {
        path: path.to_path_buf(),
        agent: agent?,
        control: control?,
        metrics: metrics?,
        routes: routes?,
        health: health?,
        links: links.into_iter().collect::<Option<_>>()?,
        probes: probes.into_iter().collect::<Option<_>>()?,
        route_groups: route_groups.into_iter().collect::<Option<_>>()?,
        dns_providers: dns_providers.into_iter().collect::<Option<_>>()?,
        dns_groups: dns_groups.into_iter().collect::<Option<_>>()?,
    })
}

fn name(f: &mut Fields, field: &crate::raw::Text, max: usize) -> Option<String> {
    let got = f.parsed(field, "name", |s| {
        values::object_name(s, max).map(|()| s.to_string())
    });
    f.require(got, "name")
}

fn absolute_path(text: &str) -> Result<PathBuf, Invalid> {
    let path = Path::new(text);
    if text.is_empty() || !path.is_absolute() {
        return Err(Invalid::new(
            format!("{text:?} is not an absolute path"),
            "write a path starting with '/'",
        ));
    }
    Ok(path.to_path_buf())
}

fn agent(entry: Option<&Entry<RawAgent>>, sink: &mut Sink) -> Option<Agent> {
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
    Some(Agent {
        name: name?,
        log_level: log_level?,
        state_dir: state_dir?,
        uapi_dir: uapi_dir?,
    })
}

fn control(entry: Option<&Entry<RawControl>>, sink: &mut Sink) -> Option<Control> {
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

fn metrics(entry: Option<&Entry<RawMetrics>>, sink: &mut Sink) -> Option<Metrics> {
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

fn routes(entry: Option<&Entry<RawRoutes>>, sink: &mut Sink) -> Option<Routes> {
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

fn health(
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
                    "it is a ratio: 0.05 means a link with more than 5% loss is degraded",
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
    Some(Health {
        profile: profile?,
        loss_degraded: loss_degraded?,
        rtt_degraded: rtt_degraded?,
        jitter_degraded: jitter_degraded?,
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

/// The value and its place (the default's place is the entry header), or `None` if bad.
fn known<V: Clone>(got: &Got<V>, default: V, header: &Span) -> Option<(V, Span)> {
    match got {
        Got::Is(v, span) => Some((v.clone(), span.clone())),
        Got::Absent => Some((default, header.clone())),
        Got::Bad => None,
    }
}

/// A CIDR that must be a network address (routes and allowed IPs).
fn network(f: &mut Fields, key: &str, text: &str, span: Span) -> Option<IpNetwork> {
    match values::cidr(text) {
        Ok(net) if net.ip() == net.network() => Some(net),
        Ok(net) => {
            let fixed = values::network_of(&net);
            f.report(
                span,
                key,
                Invalid::new(
                    format!("{text} has host bits set"),
                    format!("did you mean {fixed}?"),
                ),
            );
            None
        }
        Err(e) => {
            f.report(span, key, e);
            None
        }
    }
}

fn link(e: &Entry<RawLink>, keys: &KeyFiles, sink: &mut Sink) -> Option<Link> {
    let r = &e.value;
    let mut f = Fields::of(e, sink);
    let name = name(&mut f, &r.name, 32);
    let interface = f.parsed(&r.interface, "interface", |s| {
        values::ifname(s).map(|()| s.to_string())
    });
    let interface = f.require(interface, "interface");
    let private_key = f.parsed(&r.private_key_file, "private_key_file", |s| {
        keys.load(s, KeyKind::Private)
    });
    let private_key = f.require(private_key, "private_key_file");
    let listen = match f.parsed(&r.listen, "listen", values::socket_addr) {
        Got::Is(addr, span) if addr.port() == 0 => {
            f.error(
                span,
                "listen port 0 would pick a random port the peer cannot know",
                "give the UDP port the peer sends to, e.g. \"192.0.2.1:51820\"",
            );
            Got::Bad
        }
        other => other,
    };
    let peer_public_key = f.parsed(&r.peer_public_key, "peer_public_key", values::public_key);
    let peer_public_key = f.require(peer_public_key, "peer_public_key");
    let preshared = f
        .parsed(&r.preshared_key_file, "preshared_key_file", |s| {
            keys.load(s, KeyKind::Preshared)
        })
        .optional();
    let peer_endpoint = f.parsed(&r.peer_endpoint, "peer_endpoint", values::endpoint);
    if let (Got::Is(listen, _), Got::Is(Endpoint::Addr(peer), span)) = (&listen, &peer_endpoint) {
        if !families_can_talk(listen, peer) {
            f.error(
                span.clone(),
                format!("peer_endpoint {peer} cannot be reached from listen {listen}: different address families"),
                "use the same IP version for listen and peer_endpoint",
            );
        }
    }
    let listen = f.require(listen, "listen");
    let peer_endpoint = f.require(peer_endpoint, "peer_endpoint");
    let allowed_ips = f.non_empty_list(&r.allowed_ips, "allowed_ips", |f, s, span| {
        network(f, "allowed_ips", s, span)
    });
    let allowed_ips = f.require(allowed_ips, "allowed_ips");
    let addresses = f.non_empty_list(&r.addresses, "addresses", |f, s, span| {
        values::cidr(s)
            .map_err(|e| f.report(span, "addresses", e))
            .ok()
    });
    let addresses = f.require(addresses, "addresses");
    let mtu = f
        .int(&r.mtu, "mtu", 1280..=9000)
        .map(|n| n as u16)
        .or(DEFAULT_MTU);
    let keepalive = f
        .duration(
            &r.persistent_keepalive,
            "persistent_keepalive",
            Duration::from_secs(1),
            Some(Duration::from_secs(65535)),
        )
        .optional();
    let private_key = private_key?;
    let preshared = preshared?;
    Some(Link {
        name: name?,
        interface: interface?,
        private_key_file: private_key.path,
        private_key: private_key.secret?,
        listen: listen?,
        peer_public_key: peer_public_key?,
        preshared_key: match &preshared {
            Some(k) => Some(k.secret.clone()?),
            None => None,
        },
        preshared_key_file: preshared.map(|k| k.path),
        peer_endpoint: peer_endpoint?,
        allowed_ips: allowed_ips?,
        addresses: addresses?,
        mtu: mtu?,
        persistent_keepalive: keepalive?,
    })
}

/// A socket bound to `local` can send to `peer`: same family, or an unspecified IPv6 socket
/// (dual-stack).
fn families_can_talk(local: &SocketAddr, peer: &SocketAddr) -> bool {
    local.is_ipv4() == peer.is_ipv4() || (local.is_ipv6() && local.ip().is_unspecified())
}

fn probe(e: &Entry<RawProbe>, sink: &mut Sink) -> Option<Probe> {
    let r = &e.value;
    let mut f = Fields::of(e, sink);
    let name = name(&mut f, &r.name, 63);
    let kind = f.parsed(&r.kind, "kind", |s| values::keyword(s, "probe kind"));
    let kind = f.require(kind, "kind");
    let target = match kind {
        Some(kind) => f.parsed(&r.target, "target", |s| probe_target(kind, s)),
        None => f.text(&r.target).map(str::to_string),
    };
    let target = f.require(target, "target");
    let interval = f.duration(&r.interval, "interval", Duration::from_millis(50), None);
    let timeout = f.duration(&r.timeout, "timeout", Duration::from_millis(1), None);
    let header = f.span();
    if let (Some((i, _)), Some((t, t_span))) = (
        known(&interval, DEFAULT_PROBE_INTERVAL, &header),
        known(&timeout, DEFAULT_PROBE_TIMEOUT, &header),
    ) {
        if t > i {
            f.error(
                t_span,
                format!(
                    "timeout ({}) is longer than interval ({})",
                    crate::duration::format(t),
                    crate::duration::format(i)
                ),
                "a probe must time out before the next one starts: make timeout at most interval",
            );
        }
    }
    let expect_status = match kind {
        Some(ProbeKind::Http | ProbeKind::Https) => f
            .int(&r.expect_status, "expect_status", 100..=599)
            .map(|n| Some(n as u16))
            .or(Some(DEFAULT_EXPECT_STATUS)),
        Some(other) => {
            f.forbid(
                &r.expect_status,
                "expect_status",
                &format!("applies only to http and https probes, not {other}"),
                "remove it, or change kind to \"http\" or \"https\"",
            );
            Some(None)
        }
        None => Some(None),
    };
    let source = f.parsed(&r.source, "source", values::ip).optional();
    let (interval, timeout) = (
        interval.or(DEFAULT_PROBE_INTERVAL)?,
        timeout.or(DEFAULT_PROBE_TIMEOUT)?,
    );
    if timeout > interval {
        return None;
    }
    Some(Probe {
        name: name?,
        kind: kind?,
        target: target?,
        interval,
        timeout,
        expect_status: expect_status?,
        source: source?,
    })
}

fn probe_target(kind: ProbeKind, text: &str) -> Result<String, Invalid> {
    match kind {
        ProbeKind::Icmp => {
            if text.parse::<IpAddr>().is_ok() {
                return Ok(text.to_string());
            }
            let numeric = text.bytes().all(|b| b.is_ascii_digit() || b == b'.');
            if numeric || values::dns_name(text).is_err() {
                return Err(Invalid::new(
                    format!("{text:?} is not an IP address or host name"),
                    "an icmp probe targets a host: write e.g. \"10.2.1.10\" or \"db.example.internal\"",
                ));
            }
        }
        ProbeKind::Tcp => {
            values::endpoint(text).map_err(|e| {
                Invalid::new(
                    e.message,
                    "a tcp probe connects to HOST:PORT, e.g. \"10.2.1.10:1522\"",
                )
            })?;
        }
        ProbeKind::Http | ProbeKind::Https => values::url(text, kind.as_str())?,
    }
    Ok(text.to_string())
}

fn route_group(
    e: &Entry<RawRouteGroup>,
    default_table: u32,
    sink: &mut Sink,
) -> Option<RouteGroup> {
    let r = &e.value;
    let mut f = Fields::of(e, sink);
    let name = name(&mut f, &r.name, 63);
    let destinations = f.non_empty_list(&r.destinations, "destinations", |f, s, span| {
        network(f, "destinations", s, span)
    });
    let destinations = f.require(destinations, "destinations");
    let links = names_once(&mut f, &r.links, "links", "link", true);
    let links = f.require(links, "links");
    let checks = names_once(&mut f, &r.checks, "checks", "probe", false).or(Vec::new());
    let table = f.scalar(&r.table, "table", values::table).or(default_table);
    let metric = f
        .int(&r.metric, "metric", 0..=i64::from(u32::MAX))
        .map(|n| n as u32)
        .or(DEFAULT_ROUTE_METRIC);
    let failover_on = f
        .parsed(&r.failover_on, "failover_on", |s| {
            values::keyword(s, "failover_on value")
        })
        .or(FailoverOn::Degraded);
    let preempt = r.preempt.as_ref().map_or(true, |b| *b.get_ref());
    let failback_after = f
        .duration(&r.failback_after, "failback_after", Duration::ZERO, None)
        .or(DEFAULT_FAILBACK_AFTER);
    let hold_down = f
        .duration(&r.hold_down, "hold_down", Duration::ZERO, None)
        .or(DEFAULT_HOLD_DOWN);
    Some(RouteGroup {
        name: name?,
        destinations: destinations?,
        links: links?,
        checks: checks?,
        table: table?,
        metric: metric?,
        failover_on: failover_on?,
        preempt,
        failback_after: failback_after?,
        hold_down: hold_down?,
    })
}

/// A list of names of other objects, each listed once (whether they exist is `relations`'
/// business).
fn names_once(
    f: &mut Fields,
    field: &crate::raw::Texts,
    key: &str,
    what: &str,
    non_empty: bool,
) -> Got<Vec<String>> {
    let mut seen: Vec<String> = Vec::new();
    let mut parse = |f: &mut Fields, s: &str, span: Span| {
        if seen.iter().any(|x| x == s) {
            f.report(
                span,
                key,
                Invalid::new(
                    format!("{what} {s:?} is listed twice"),
                    format!("list each {what} once"),
                ),
            );
            return None;
        }
        seen.push(s.to_string());
        Some(s.to_string())
    };
    if non_empty {
        f.non_empty_list(field, key, &mut parse)
    } else {
        f.list(field, &mut parse)
    }
}

fn dns_provider(
    e: &Entry<RawDnsProvider>,
    keys: &KeyFiles,
    sink: &mut Sink,
) -> Option<DnsProvider> {
    let r = &e.value;
    let mut f = Fields::of(e, sink);
    let name = name(&mut f, &r.name, 63);
    let kind = f.parsed(&r.kind, "kind", |s| values::keyword(s, "DNS provider kind"));
    let kind = f.require(kind, "kind");
    let mut provider = DnsProvider {
        name: String::new(),
        kind: kind.unwrap_or(DnsProviderKind::Rfc2136),
        server: None,
        zone: None,
        tsig_key_file: None,
        tsig_algorithm: TsigAlgorithm::HmacSha256,
        hosted_zone_id: None,
        endpoint: None,
        region: None,
    };
    let mut ok = true;
    match kind {
        Some(DnsProviderKind::Rfc2136) => {
            let only = "applies only to route53 providers";
            let hint = "remove it: this provider is rfc2136";
            f.forbid(&r.hosted_zone_id, "hosted_zone_id", only, hint);
            f.forbid(&r.endpoint, "endpoint", only, hint);
            f.forbid(&r.region, "region", only, hint);
            let server = match f.parsed(&r.server, "server", values::socket_addr) {
                Got::Is(addr, span) if addr.port() == 0 => {
                    f.error(
                        span,
                        "server port 0",
                        "DNS servers listen on port 53: write e.g. \"10.1.0.53:53\"",
                    );
                    Got::Bad
                }
                other => other,
            };
            provider.server = f.require(server, "server");
            let zone = f.parsed(&r.zone, "zone", |s| {
                values::dns_name(s).map(|()| s.to_string())
            });
            provider.zone = f.require(zone, "zone");
            let tsig = f
                .parsed(&r.tsig_key_file, "tsig_key_file", |s| {
                    keys.load(s, KeyKind::Tsig)
                })
                .optional();
            let algorithm = f
                .parsed(&r.tsig_algorithm, "tsig_algorithm", |s| {
                    values::keyword(s, "TSIG algorithm")
                })
                .or(TsigAlgorithm::HmacSha256);
            ok &= provider.server.is_some() && provider.zone.is_some();
            match (tsig, algorithm) {
                (Some(tsig), Some(algorithm)) => {
                    provider.tsig_key_file = tsig.map(|k| k.path);
                    provider.tsig_algorithm = algorithm;
                }
                _ => ok = false,
            }
        }
        Some(DnsProviderKind::Route53) => {
            let only = "applies only to rfc2136 providers";
            let hint = "remove it: this provider is route53";
            f.forbid(&r.server, "server", only, hint);
            f.forbid(
                &r.zone,
                "zone",
                only,
                "remove it: route53 finds the zone by hosted_zone_id",
            );
            f.forbid(&r.tsig_key_file, "tsig_key_file", only, hint);
            f.forbid(&r.tsig_algorithm, "tsig_algorithm", only, hint);
            ok &= r.server.is_none()
                && r.zone.is_none()
                && r.tsig_key_file.is_none()
                && r.tsig_algorithm.is_none();
            let zone_id = f.parsed(&r.hosted_zone_id, "hosted_zone_id", |s| {
                if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    Ok(s.to_string())
                } else {
                    Err(Invalid::new(
                        format!("{s:?} is not a hosted zone id"),
                        "copy the id from the Route 53 console or `aws route53 list-hosted-zones`, e.g. \"Z0123456789ABC\"",
                    ))
                }
            });
            provider.hosted_zone_id = f.require(zone_id, "hosted_zone_id");
            let endpoint = f
                .parsed(&r.endpoint, "endpoint", |s| {
                    let scheme = if s.starts_with("http://") {
                        "http"
                    } else {
                        "https"
                    };
                    values::url(s, scheme).map(|()| s.to_string())
                })
                .optional();
            let region = f
                .parsed(&r.region, "region", |s| {
                    let valid = !s.is_empty()
                        && s.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                    if valid {
                        Ok(s.to_string())
                    } else {
                        Err(Invalid::new(
                            format!("{s:?} is not an AWS region"),
                            "write a region such as \"us-east-1\"",
                        ))
                    }
                })
                .optional();
            ok &= provider.hosted_zone_id.is_some();
            match (endpoint, region) {
                (Some(endpoint), Some(region)) => {
                    provider.endpoint = endpoint;
                    provider.region = region;
                }
                _ => ok = false,
            }
        }
        None => ok = false,
    }
    provider.name = name?;
    ok.then_some(provider)
}

fn dns_group(e: &Entry<RawDnsGroup>, sink: &mut Sink) -> Option<DnsGroup> {
    let r = &e.value;
    let mut f = Fields::of(e, sink);
    let name = name(&mut f, &r.name, 63);
    let provider = f.text(&r.provider).map(str::to_string);
    let provider = f.require(provider, "provider");
    let record = f.parsed(&r.record, "record", |s| {
        values::dns_name(s).map(|()| s.to_string())
    });
    let record = f.require(record, "record");
    let record_type = f.parsed(&r.record_type, "type", |s| {
        values::keyword(s, "record type")
    });
    let record_type = record_type.or(RecordType::A);
    let ttl = f
        .int(&r.ttl, "ttl", 1..=86400)
        .map(|n| n as u32)
        .or(DEFAULT_DNS_TTL);
    let answers = match &r.answers {
        None => {
            f.missing("answers");
            None
        }
        Some(list) if list.get_ref().is_empty() => {
            f.error(
                list.span(),
                "answers is empty",
                "list at least one, e.g. answers = [{ value = \"10.2.1.10\" }]",
            );
            None
        }
        Some(list) => {
            let mut answers = Some(Vec::new());
            for (index, answer) in list.get_ref().iter().enumerate() {
                let a = dns_answer(&mut f, index, answer.get_ref(), answer.span(), record_type);
                match (a, &mut answers) {
                    (Some(a), Some(all)) => all.push(a),
                    _ => answers = None,
                }
            }
            answers
        }
    };
    Some(DnsGroup {
        name: name?,
        provider: provider?,
        record: record?,
        record_type: record_type?,
        ttl: ttl?,
        answers: answers?,
    })
}

fn dns_answer(
    f: &mut Fields,
    index: usize,
    answer: &crate::raw::RawAnswer,
    span: Span,
    record_type: Option<RecordType>,
) -> Option<DnsAnswer> {
    let key = format!("answers #{}", index + 1);
    let value = match (&answer.value, record_type) {
        (None, _) => {
            f.error(
                span,
                format!("{key} has no `value`"),
                "add: value = \"10.2.1.10\"",
            );
            None
        }
        (Some(v), Some(t)) => match answer_value(t, v.get_ref()) {
            Ok(()) => Some(v.get_ref().clone()),
            Err(e) => {
                f.report(v.span(), &key, e);
                None
            }
        },
        (Some(v), None) => Some(v.get_ref().clone()),
    };
    let checks = names_once(f, &answer.checks, &format!("{key} checks"), "probe", false);
    Some(DnsAnswer {
        value: value?,
        checks: checks.or(Vec::new())?,
    })
}

fn answer_value(record_type: RecordType, text: &str) -> Result<(), Invalid> {
    let ip = text.parse::<IpAddr>().ok();
    match (record_type, ip) {
        (RecordType::A, Some(IpAddr::V4(_))) | (RecordType::Aaaa, Some(IpAddr::V6(_))) => Ok(()),
        (RecordType::A, Some(IpAddr::V6(_))) => Err(Invalid::new(
            format!("{text:?} is an IPv6 address but the record type is A"),
            "set type = \"AAAA\" for IPv6 answers",
        )),
        (RecordType::Aaaa, Some(IpAddr::V4(_))) => Err(Invalid::new(
            format!("{text:?} is an IPv4 address but the record type is AAAA"),
            "set type = \"A\" for IPv4 answers",
        )),
        (RecordType::A, None) => Err(Invalid::new(
            format!("{text:?} is not an IPv4 address (record type A)"),
            "write an IPv4 address such as \"10.2.1.10\", or set type = \"CNAME\" for a name",
        )),
        (RecordType::Aaaa, None) => Err(Invalid::new(
            format!("{text:?} is not an IPv6 address (record type AAAA)"),
            "write an IPv6 address such as \"fd00::10\", or set type = \"CNAME\" for a name",
        )),
        (RecordType::Cname, Some(_)) => Err(Invalid::new(
            format!("{text:?} is an address but the record type is CNAME"),
            "a CNAME points at a name: use type = \"A\" or \"AAAA\" for addresses",
        )),
        (RecordType::Cname, None) => values::dns_name(text),
    }
}
