//! `[[link]]`, `[[probe]]` and `[[route_group]]`: the tunnels, the checks behind them and the
//! destinations routed over them, in the kernel and in the clouds' route tables.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ipnetwork::IpNetwork;

use super::{known, name, network};
use crate::fields::{Fields, Got};
use crate::keys::{KeyFiles, KeyKind};
use crate::model::*;
use crate::parse::Entry;
use crate::raw::{Int, RawLink, RawProbe, RawRouteGroup, RawRouteTable, RouteTables, Scalar};
use crate::source::{Sink, Span};
use crate::values::{self, Invalid};

pub(super) fn link(e: &Entry<RawLink>, keys: &KeyFiles, sink: &mut Sink) -> Option<Link> {
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
    let allowed_span = match &allowed_ips {
        Got::Is(_, span) => Some(span.clone()),
        _ => None,
    };
    let allowed_ips = f.require(allowed_ips, "allowed_ips");
    let addresses = f.non_empty_list(&r.addresses, "addresses", |f, s, span| {
        values::cidr(s)
            .map_err(|e| f.report(span, "addresses", e))
            .ok()
    });
    let addresses = f.require(addresses, "addresses");
    let peer_address = peer_address(
        &mut f,
        r,
        addresses.as_deref(),
        allowed_ips.as_deref().zip(allowed_span),
    );
    let (mtu, path_mtu) = link_mtu(&mut f, r);
    let keepalive = f
        .duration(
            &r.persistent_keepalive,
            "persistent_keepalive",
            Duration::from_secs(1),
            Some(Duration::from_secs(65535)),
        )
        .optional();
    let egress_price = match &r.egress_price_per_gb {
        None => Some(None),
        Some(v) => {
            let x = *v.get_ref();
            if x.is_finite() && x >= 0.0 {
                Some(Some(x))
            } else {
                f.error(
                    v.span(),
                    format!("egress_price_per_gb {x} must be a number of at least 0"),
                    "it is the cloud's price per GiB sent over this path, e.g. 0.02",
                );
                None
            }
        }
    };
    let private_key = private_key?;
    let preshared = preshared?;
    Some(Link {
        name: name?,
        interface: interface?,
        private_key_file: private_key.path,
        private_key: private_key.key,
        listen: listen?,
        peer_public_key: peer_public_key?,
        preshared_key: preshared.as_ref().map(|k| k.key.clone()),
        preshared_key_file: preshared.map(|k| k.path),
        peer_endpoint: peer_endpoint?,
        allowed_ips: allowed_ips?,
        addresses: addresses?,
        peer_address: peer_address?,
        mtu: mtu?,
        path_mtu: path_mtu?,
        persistent_keepalive: keepalive?,
        egress_price_per_gb: egress_price?,
    })
}

/// `peer_address` as given, or derived from the first of `addresses`; either way inside one of
/// `addresses` (the kernel routes the probes through this link's interface), covered by
/// `allowed_ips` (WireGuard drops what comes from elsewhere) and not one of this end's own
/// addresses. `addresses` and `allowed_ips` are `None` when bad or missing (already reported):
/// the checks that need them are skipped. After the first failed check, the others are not
/// made: one mistake, one message.
fn peer_address(
    f: &mut Fields,
    r: &RawLink,
    addresses: Option<&[IpNetwork]>,
    allowed_ips: Option<(&[IpNetwork], Span)>,
) -> Option<IpAddr> {
    let first = addresses.and_then(<[IpNetwork]>::first);
    let (peer, given_at) = match f.parsed(&r.peer_address, "peer_address", values::ip) {
        Got::Bad => return None,
        Got::Is(peer, span) => (peer, Some(span)),
        Got::Absent => {
            // Without valid addresses, their error (or the missing key) is the message.
            let own = first?;
            let at = r
                .addresses
                .as_ref()
                .and_then(|list| list.get_ref().first())
                .map_or_else(|| f.span(), |item| item.span());
            match point_to_point_peer(own) {
                Ok(peer) => (peer, None),
                Err(why) => {
                    f.error(
                        at,
                        format!("cannot derive peer_address from addresses {own}: {why}"),
                        "set peer_address = \"...\" (the peer's tunnel address)",
                    );
                    return None;
                }
            }
        }
    };
    if let (Some(at), Some(addresses)) = (&given_at, addresses) {
        if let Some(own) = addresses.iter().find(|a| a.ip() == peer) {
            let hint = match first.map(|a| (a, point_to_point_peer(a))) {
                Some((first, Ok(other))) if other != peer => format!(
                    "set it to the peer gateway's tunnel address: the other end of {first} is \
                     {other}, which is also the default if peer_address is left out"
                ),
                _ => "set it to the peer gateway's tunnel address (one of the peer's own \
                      addresses on this link)"
                    .to_string(),
            };
            f.error(
                at.clone(),
                format!("peer_address {peer} is this gateway's own address (addresses {own})"),
                hint,
            );
            return None;
        }
        if !addresses.iter().any(|a| a.contains(peer)) {
            let listed: Vec<String> = addresses.iter().map(ToString::to_string).collect();
            let networks: Vec<String> = addresses
                .iter()
                .map(|a| values::network_of(a).to_string())
                .collect();
            f.error(
                at.clone(),
                format!(
                    "peer_address {peer} is outside this link's addresses ({})",
                    listed.join(", ")
                ),
                format!(
                    "the peer's tunnel address must lie inside {}, so that the kernel routes \
                     the peer probes through this link's interface: use the peer's address \
                     there, or widen the prefix of addresses",
                    networks.join(" or ")
                ),
            );
            return None;
        }
    }
    if let Some((allowed, allowed_at)) = allowed_ips {
        if !allowed.iter().any(|n| n.contains(peer)) {
            let (at, what) = match (&given_at, first) {
                (Some(at), _) => (at.clone(), format!("peer_address {peer}")),
                (None, Some(own)) => (
                    allowed_at,
                    format!("peer_address {peer} (derived from addresses {own})"),
                ),
                (None, None) => (allowed_at, format!("peer_address {peer}")),
            };
            let host = if peer.is_ipv4() { 32 } else { 128 };
            f.error(
                at,
                format!("{what} is not covered by allowed_ips"),
                format!("add \"{peer}/{host}\" to allowed_ips: peer probes come from it"),
            );
            return None;
        }
    }
    Some(peer)
}

/// The one other usable address of a point-to-point network, from this end's `own` address:
/// the other address of an IPv4 /31 or IPv6 /127 (RFC 3021, RFC 6164), the other host address
/// of an IPv4 /30 (.1 and .2; not network or broadcast), or the other of `::1` and `::2` of an
/// IPv6 /126. `Err` says why there is none.
fn point_to_point_peer(own: &IpNetwork) -> Result<IpAddr, String> {
    let (ip, network, prefix, bits) = match own {
        IpNetwork::V4(n) => (
            u128::from(u32::from(n.ip())),
            u128::from(u32::from(n.network())),
            n.prefix(),
            32,
        ),
        IpNetwork::V6(n) => (u128::from(n.ip()), u128::from(n.network()), n.prefix(), 128),
    };
    let peer = if prefix == bits - 1 {
        ip ^ 1
    } else if prefix == bits - 2 {
        match ip - network {
            1 => network + 2,
            2 => network + 1,
            _ => {
                let (a, b) = (address(own, network + 1), address(own, network + 2));
                return Err(format!(
                    "{} is not one of the two host addresses of its /{prefix} ({a} and {b})",
                    own.ip()
                ));
            }
        }
    } else {
        let pair = if bits == 32 {
            "/31 or /30"
        } else {
            "/127 or /126"
        };
        let problem = if prefix == bits {
            format!("a /{prefix} holds no address but this end's own")
        } else {
            format!("a /{prefix} has many addresses the peer could have")
        };
        return Err(format!(
            "{problem}; only a {pair} network has exactly one other usable address"
        ));
    };
    Ok(address(own, peer))
}

/// `bits` as an address of `net`'s family (`bits` fits: it was computed within `net`).
fn address(net: &IpNetwork, bits: u128) -> IpAddr {
    match net {
        IpNetwork::V4(_) => IpAddr::V4(Ipv4Addr::from(bits as u32)),
        IpNetwork::V6(_) => IpAddr::V6(Ipv6Addr::from(bits)),
    }
}

/// A socket bound to `local` can send to `peer`: same family, or an unspecified IPv6 socket
/// (dual-stack).
fn families_can_talk(local: &SocketAddr, peer: &SocketAddr) -> bool {
    local.is_ipv4() == peer.is_ipv4() || (local.is_ipv6() && local.ip().is_unspecified())
}

pub(super) fn probe(e: &Entry<RawProbe>, sink: &mut Sink) -> Option<Probe> {
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

pub(super) fn route_group(
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
    let preempt = r.preempt.as_ref().is_none_or(|b| *b.get_ref());
    let failback_after = f
        .duration(&r.failback_after, "failback_after", Duration::ZERO, None)
        .or(DEFAULT_FAILBACK_AFTER);
    let hold_down = f
        .duration(&r.hold_down, "hold_down", Duration::ZERO, None)
        .or(DEFAULT_HOLD_DOWN);
    let aws_route_tables = route_tables(&mut f, &r.aws_route_tables, Cloud::Aws);
    let oci_route_tables = route_tables(&mut f, &r.oci_route_tables, Cloud::Oci);
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
        aws_route_tables: aws_route_tables?,
        oci_route_tables: oci_route_tables?,
    })
}

/// Which cloud a route table list is for: decides how ids, targets and fallbacks are written.
#[derive(Clone, Copy)]
enum Cloud {
    Aws,
    Oci,
}

/// What `fallback` may name on OCI: the network entities a route rule can point at.
const OCI_FALLBACKS: &[&str] = &[
    "drg",
    "internetgateway",
    "natgateway",
    "privateip",
    "servicegateway",
    "localpeeringgateway",
];

impl Cloud {
    fn key(self) -> &'static str {
        match self {
            Cloud::Aws => "aws_route_tables",
            Cloud::Oci => "oci_route_tables",
        }
    }

    fn example(self, field: &str) -> &'static str {
        match (self, field) {
            (Cloud::Aws, "id") => r#"id = "rtb-0a1b2c3d""#,
            (Cloud::Aws, "target") => r#"target = "eni-0123456789abcdef0""#,
            (Cloud::Oci, "id") => r#"id = "ocid1.routetable.oc1.iad.aaaa…""#,
            (Cloud::Oci, "target") => r#"target = "ocid1.privateip.oc1.iad.aaaa…""#,
            _ => r#"fallback = "none""#,
        }
    }

    fn parse(self, field: &str, text: &str) -> Result<String, Invalid> {
        match (self, field) {
            (Cloud::Aws, "id") => values::aws_id(text, &["rtb"], "a route table id"),
            (Cloud::Aws, "target") => values::aws_id(
                text,
                &["eni", "i"],
                "the target (this gateway's network interface or instance)",
            ),
            (Cloud::Aws, _) => values::aws_id(
                text,
                &["vgw", "tgw", "igw", "eni", "i"],
                "the fallback (or \"none\" to remove the routes)",
            ),
            (Cloud::Oci, "id") => values::ocid(text, &["routetable"]),
            (Cloud::Oci, "target") => values::ocid(text, &["privateip"]),
            (Cloud::Oci, _) => values::ocid(text, OCI_FALLBACKS),
        }
    }
}

/// `aws_route_tables` or `oci_route_tables`: each entry needs `id`, `target` and `fallback`
/// (`"none"` written out: removing routes when the group fails closed is a decision, not a
/// default). Whether a (table, destination) pair is claimed twice is `relations`' business.
fn route_tables(f: &mut Fields, field: &RouteTables, cloud: Cloud) -> Option<Vec<CloudRouteTable>> {
    let Some(list) = field else {
        return Some(Vec::new());
    };
    let mut out = Some(Vec::new());
    for (index, entry) in list.get_ref().iter().enumerate() {
        let table = route_table(f, cloud, index, entry.get_ref(), entry.span());
        match (table, &mut out) {
            (Some(t), Some(all)) => all.push(t),
            _ => out = None,
        }
    }
    out
}

fn route_table(
    f: &mut Fields,
    cloud: Cloud,
    index: usize,
    raw: &RawRouteTable,
    span: Span,
) -> Option<CloudRouteTable> {
    let label = format!("{} #{}", cloud.key(), index + 1);
    let mut missing = Vec::new();
    let mut get = |f: &mut Fields, value: &crate::raw::Text, field: &'static str| match value {
        None => {
            missing.push(field);
            None
        }
        Some(v) if field == "fallback" && v.get_ref() == "none" => Some(None),
        Some(v) => match cloud.parse(field, v.get_ref()) {
            Ok(text) => Some(Some(text)),
            Err(e) => {
                f.report(v.span(), &format!("{label} {field}"), e);
                None
            }
        },
    };
    let id = get(f, &raw.id, "id");
    let target = get(f, &raw.target, "target");
    let fallback = get(f, &raw.fallback, "fallback");
    if !missing.is_empty() {
        let keys: Vec<String> = missing.iter().map(|k| format!("`{k}`")).collect();
        let examples: Vec<&str> = missing.iter().map(|k| cloud.example(k)).collect();
        let fallback_note = if missing.contains(&"fallback") {
            " (fallback: where the routes point when no link is usable, or \"none\" to remove them)"
        } else {
            ""
        };
        f.error(
            span,
            format!("{label} has no {}", keys.join(", ")),
            format!("add: {}{fallback_note}", examples.join(", ")),
        );
        return None;
    }
    Some(CloudRouteTable {
        id: id??,
        target: target??,
        fallback: fallback?,
    })
}

/// A list of names of other objects, each listed once (whether they exist is `relations`'
/// business).
pub(super) fn names_once(
    f: &mut Fields,
    field: &crate::raw::Texts,
    key: &str,
    what: &str,
    non_empty: bool,
) -> Got<Vec<String>> {
    let mut seen: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let mut parse = |f: &mut Fields, s: &str, span: Span| {
        if seen.contains(s) {
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
        seen.insert(s.to_string());
        Some(s.to_string())
    };
    if non_empty {
        f.non_empty_list(field, key, &mut parse)
    } else {
        f.list(field, &mut parse)
    }
}

/// `mtu`: an integer, or `"auto"` with the search's bounds `mtu_min` and `mtu_max`.
fn link_mtu(f: &mut Fields, r: &RawLink) -> (Option<u16>, Option<Option<PathMtuBounds>>) {
    let auto = match &r.mtu {
        None => false,
        Some(v) => match v.get_ref() {
            Scalar::Text(t) if t == "auto" => true,
            Scalar::Text(t) => {
                f.error(
                    v.span(),
                    format!("mtu \"{t}\" is neither a number nor \"auto\""),
                    "use a number from 1280 to 9000 (e.g. mtu = 1420), or mtu = \"auto\" to measure the path",
                );
                return (None, None);
            }
            Scalar::Int(_) => false,
        },
    };
    let bound = |f: &mut Fields, field: &Int, key: &str, default: u16| {
        f.int(field, key, 1280..=9000).map(|n| n as u16).or(default)
    };
    if !auto {
        for (field, key) in [(&r.mtu_min, "mtu_min"), (&r.mtu_max, "mtu_max")] {
            if let Some(v) = field {
                f.error(
                    v.span(),
                    format!("{key} applies only with mtu = \"auto\""),
                    "set mtu = \"auto\" to measure the path between mtu_min and mtu_max, or remove it",
                );
                return (None, None);
            }
        }
        let mtu = match &r.mtu {
            Some(v) => match v.get_ref() {
                Scalar::Int(n) => {
                    let field = Some(toml::Spanned::new(v.span(), *n));
                    f.int(&field, "mtu", 1280..=9000)
                        .map(|n| n as u16)
                        .or(DEFAULT_MTU)
                }
                Scalar::Text(_) => None,
            },
            None => Some(DEFAULT_MTU),
        };
        return (mtu, Some(None));
    }
    let (Some(min), Some(max)) = (
        bound(f, &r.mtu_min, "mtu_min", DEFAULT_MTU_MIN),
        bound(f, &r.mtu_max, "mtu_max", DEFAULT_MTU_MAX),
    ) else {
        return (None, None);
    };
    if min > max {
        let span = r.mtu_max.as_ref().or(r.mtu_min.as_ref()).map(|v| v.span());
        if let Some(span) = span {
            f.error(
                span,
                format!("mtu_min {min} is above mtu_max {max}"),
                "the search runs from mtu_min up to mtu_max: make mtu_min the smaller",
            );
        }
        return (None, None);
    }
    (Some(min), Some(Some(PathMtuBounds { min, max })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer_of(own: &str) -> Result<String, String> {
        let net = values::cidr(own).expect("a CIDR");
        point_to_point_peer(&net).map(|ip| ip.to_string())
    }

    #[test]
    fn point_to_point_networks_have_one_peer_address() {
        assert_eq!(peer_of("10.255.0.0/31").as_deref(), Ok("10.255.0.1"));
        assert_eq!(peer_of("10.255.0.1/31").as_deref(), Ok("10.255.0.0"));
        assert_eq!(peer_of("10.255.0.1/30").as_deref(), Ok("10.255.0.2"));
        assert_eq!(peer_of("10.255.0.6/30").as_deref(), Ok("10.255.0.5"));
        assert_eq!(peer_of("fd00::a/127").as_deref(), Ok("fd00::b"));
        assert_eq!(peer_of("fd00::b/127").as_deref(), Ok("fd00::a"));
        assert_eq!(peer_of("fd00::1/126").as_deref(), Ok("fd00::2"));
        assert_eq!(peer_of("fd00::6/126").as_deref(), Ok("fd00::5"));
        assert_eq!(peer_of("0.0.0.0/31").as_deref(), Ok("0.0.0.1"));
        assert_eq!(
            peer_of("255.255.255.255/31").as_deref(),
            Ok("255.255.255.254")
        );
        assert_eq!(
            peer_of("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/127").as_deref(),
            Ok("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe")
        );
    }

    #[test]
    fn other_networks_have_no_single_peer_address() {
        for own in [
            "10.255.0.0/30",
            "10.255.0.3/30",
            "fd00::/126",
            "fd00::3/126",
        ] {
            let why = peer_of(own).unwrap_err();
            assert!(
                why.contains("not one of the two host addresses"),
                "{own}: {why}"
            );
        }
        for own in [
            "10.255.0.1/24",
            "10.255.0.1/29",
            "fd00::1/64",
            "fd00::1/125",
        ] {
            let why = peer_of(own).unwrap_err();
            assert!(why.contains("many addresses"), "{own}: {why}");
        }
        for own in ["10.255.0.1/32", "fd00::1/128"] {
            let why = peer_of(own).unwrap_err();
            assert!(
                why.contains("no address but this end's own"),
                "{own}: {why}"
            );
        }
    }
}
