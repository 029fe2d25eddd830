//! Rules across entries: unique names, interfaces and listen addresses; references that
//! resolve; destinations that do not overlap within a routing table and that every link of
//! their group carries; peer endpoints that would loop into a tunnel; DNS records inside their
//! provider's zone; cloud route tables whose (table, destination) pairs belong to one group,
//! and the `[aws]` / `[oci]` sections that cloud actions need.
//!
//! These rules read the raw entries and re-read the few values they need; a value that is
//! itself invalid was reported by `validate` and is simply skipped here, so one mistake gives
//! one message. A second occurrence is reported where it is, with the line of the first.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use ipnetwork::IpNetwork;
use toml::Spanned;

use crate::model::{DnsProviderKind, Endpoint, MAIN_TABLE};
use crate::parse::{Entry, RawConfig};
use crate::prefixes::PrefixIndex;
use crate::raw::{RouteTables, Text, Texts};
use crate::source::{Sink, Span};
use crate::values::{self, closest};

pub(crate) fn check(raw: &RawConfig, default_table: u32, sink: &mut Sink) {
    unique_names(&raw.links, "link", |r| &r.name, sink);
    unique_names(&raw.probes, "probe", |r| &r.name, sink);
    unique_names(&raw.route_groups, "route_group", |r| &r.name, sink);
    unique_names(&raw.dns_providers, "dns_provider", |r| &r.name, sink);
    unique_names(&raw.dns_groups, "dns_group", |r| &r.name, sink);
    unique_names(&raw.hooks, "hook", |r| &r.name, sink);
    unique_interfaces(raw, sink);
    unique_listen(raw, sink);
    references(raw, sink);
    let destinations = destinations(raw, default_table);
    overlapping_destinations(&destinations, sink);
    carried_destinations(raw, &destinations, sink);
    routing_loops(raw, &destinations, sink);
    records_in_zones(raw, sink);
    cloud_sections(raw, sink);
    route_table_claims(raw, &destinations, sink);
}

fn name_of(text: &Text) -> Option<&str> {
    text.as_ref().map(|t| t.get_ref().as_str())
}

fn line_of(sink: &Sink, span: &Span) -> u32 {
    sink.source().line_of(span.start)
}

fn unique_names<T>(entries: &[Entry<T>], what: &str, name: impl Fn(&T) -> &Text, sink: &mut Sink) {
    let mut first: BTreeMap<&str, Span> = BTreeMap::new();
    for e in entries {
        let Some(n) = name(&e.value) else { continue };
        match first.get(n.get_ref().as_str()) {
            Some(earlier) => {
                let line = line_of(sink, earlier);
                sink.error(
                    n.span(),
                    format!("{what} {:?} is defined twice", n.get_ref()),
                    format!(
                        "the first {what} {:?} is on line {line}: rename or remove one",
                        n.get_ref()
                    ),
                );
            }
            None => {
                first.insert(n.get_ref(), n.span());
            }
        }
    }
}

fn unique_interfaces(raw: &RawConfig, sink: &mut Sink) {
    let mut first: BTreeMap<&str, (&str, Span)> = BTreeMap::new();
    for e in &raw.links {
        let Some(ifname) = &e.value.interface else {
            continue;
        };
        match first.get(ifname.get_ref().as_str()) {
            Some((owner, earlier)) => {
                let line = line_of(sink, earlier);
                sink.error(
                    ifname.span(),
                    format!(
                        "{}: interface {:?} is already used by {owner}",
                        e.label,
                        ifname.get_ref()
                    ),
                    format!("{owner} on line {line} has it: give each link its own interface"),
                );
            }
            None => {
                first.insert(ifname.get_ref(), (&e.label, ifname.span()));
            }
        }
    }
}

/// Two sockets conflict on the same port if their addresses are equal or one is a wildcard
/// (binding would fail with EADDRINUSE). The peer probes bind `[health] probe_port` on every
/// tunnel address, so a link listening on a wildcard address must not take that port.
fn unique_listen(raw: &RawConfig, sink: &mut Sink) {
    let probe_port = raw
        .health
        .as_ref()
        .and_then(|h| h.value.probe_port.as_ref())
        .map_or(i64::from(crate::model::DEFAULT_PROBE_PORT), |p| {
            *p.get_ref()
        });
    // What is bound so far, without conflicts: on one port either a single wildcard or distinct
    // addresses. So a clash is the address itself or the port's wildcard, and for a wildcard
    // the port's first socket.
    let mut exact: BTreeMap<(u16, IpAddr), Bound> = BTreeMap::new();
    let mut wildcard: BTreeMap<u16, Bound> = BTreeMap::new();
    let mut first_on_port: BTreeMap<u16, Bound> = BTreeMap::new();
    for e in &raw.links {
        let Some(listen) = &e.value.listen else {
            continue;
        };
        let Ok(addr) = values::socket_addr(listen.get_ref()) else {
            continue;
        };
        if addr.port() == 0 {
            continue;
        }
        if addr.ip().is_unspecified() && i64::from(addr.port()) == probe_port {
            sink.error(
                listen.span(),
                format!(
                    "{}: listen {addr} takes UDP port {} on every address, and the peer probes \
                     need it on the tunnel addresses ([health] probe_port)",
                    e.label,
                    addr.port()
                ),
                "listen on the underlay address instead of a wildcard, or use another port \
                 (or set [health] probe_port to a free one)",
            );
            continue;
        }
        let port = addr.port();
        let clash = if addr.ip().is_unspecified() {
            first_on_port.get(&port)
        } else {
            exact
                .get(&(port, addr.ip()))
                .or_else(|| wildcard.get(&port))
        };
        if let Some((other, owner, earlier)) = clash {
            let line = line_of(sink, earlier);
            sink.error(
                listen.span(),
                format!("{}: listen {addr} clashes with {other} of {owner}", e.label),
                format!(
                    "{owner} on line {line} binds it: give each link its own address or UDP port"
                ),
            );
        } else {
            let bound = (addr, e.label.as_str(), listen.span());
            first_on_port.entry(port).or_insert_with(|| bound.clone());
            if addr.ip().is_unspecified() {
                wildcard.insert(port, bound);
            } else {
                exact.insert((port, addr.ip()), bound);
            }
        }
    }
}

/// A listen address taken, by which link, where.
type Bound<'r> = (SocketAddr, &'r str, Span);

/// The names defined in a list: in file order for hints, and as a set to look them up.
struct Names<'r> {
    listed: Vec<&'r str>,
    set: BTreeSet<&'r str>,
}

impl<'r> Names<'r> {
    fn add(&mut self, name: &'r str) {
        if self.set.insert(name) {
            self.listed.push(name);
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.set.contains(name)
    }

    /// `defined links: a, b, c` (at most [`NAMES_IN_HINT`], then how many more).
    fn hint(&self, what: &str) -> String {
        let shown = self.listed.len().min(NAMES_IN_HINT);
        let mut out = format!("defined {what}: {}", self.listed[..shown].join(", "));
        if self.listed.len() > shown {
            out.push_str(&format!(" and {} more", self.listed.len() - shown));
        }
        out
    }
}

/// Names a hint lists: enough to spot a typo's target, not a page of them.
const NAMES_IN_HINT: usize = 20;

fn names<T>(entries: &[Entry<T>], name: impl Fn(&T) -> &Text) -> Names<'_> {
    let mut out = Names {
        listed: Vec::new(),
        set: BTreeSet::new(),
    };
    for n in entries.iter().filter_map(|e| name_of(name(&e.value))) {
        out.add(n);
    }
    out
}

/// Reports a name that is not among `defined` (`what` is the list name, e.g. "link").
fn dangling(sink: &mut Sink, label: &str, name: &Spanned<String>, what: &str, defined: &Names) {
    let n = name.get_ref();
    if defined.contains(n) {
        return;
    }
    let message = format!("{label}: {what} {n:?} is not defined");
    if !sink.may_list_error(&name.span()) {
        // Counted, never listed: skip the search for a near name.
        sink.error(name.span(), message, String::new());
        return;
    }
    let listed = if defined.listed.is_empty() {
        format!("no [[{what}]] is defined yet")
    } else {
        defined.hint(&format!("{what}s"))
    };
    let hint = match closest(n, &defined.listed) {
        Some(near) => {
            format!("did you mean {near:?}? otherwise define a [[{what}]] named {n:?}; {listed}")
        }
        None => format!("define a [[{what}]] named {n:?}, or remove it; {listed}"),
    };
    sink.error(name.span(), message, hint);
}

/// A hook's group that is neither a route group nor a DNS group.
fn dangling_group(sink: &mut Sink, label: &str, name: &Spanned<String>, defined: &Names) {
    let n = name.get_ref();
    if defined.contains(n) {
        return;
    }
    let message = format!("{label}: group {n:?} is not defined");
    if !sink.may_list_error(&name.span()) {
        sink.error(name.span(), message, String::new());
        return;
    }
    let listed = if defined.listed.is_empty() {
        "no [[route_group]] or [[dns_group]] is defined yet".to_string()
    } else {
        defined.hint("groups")
    };
    let hint = match closest(n, &defined.listed) {
        Some(near) => format!("did you mean {near:?}? {listed}"),
        None => format!(
            "name a [[route_group]] or [[dns_group]], or remove it (no groups = every group); \
             {listed}"
        ),
    };
    sink.error(name.span(), message, hint);
}

fn each(list: &Texts) -> impl Iterator<Item = &Spanned<String>> {
    list.iter().flat_map(|l| l.get_ref().iter())
}

fn references(raw: &RawConfig, sink: &mut Sink) {
    let links = names(&raw.links, |r| &r.name);
    let probes = names(&raw.probes, |r| &r.name);
    let providers = names(&raw.dns_providers, |r| &r.name);
    for g in &raw.route_groups {
        for link in each(&g.value.links) {
            dangling(sink, &g.label, link, "link", &links);
        }
        for probe in each(&g.value.checks) {
            dangling(sink, &g.label, probe, "probe", &probes);
        }
    }
    let mut groups = names(&raw.route_groups, |r| &r.name);
    for g in names(&raw.dns_groups, |r| &r.name).listed {
        groups.add(g);
    }
    for h in &raw.hooks {
        for group in each(&h.value.groups) {
            dangling_group(sink, &h.label, group, &groups);
        }
    }
    for g in &raw.dns_groups {
        if let Some(provider) = &g.value.provider {
            dangling(sink, &g.label, provider, "dns_provider", &providers);
        }
        for answer in g.value.answers.iter().flat_map(|a| a.get_ref().iter()) {
            for probe in each(&answer.get_ref().checks) {
                dangling(sink, &g.label, probe, "probe", &probes);
            }
        }
    }
}

/// One valid destination of a route group.
struct Destination<'r> {
    group: usize,
    label: &'r str,
    table: u32,
    net: IpNetwork,
    span: Span,
}

fn network(text: &str) -> Option<IpNetwork> {
    values::cidr(text).ok().filter(|n| n.ip() == n.network())
}

fn destinations(raw: &RawConfig, default_table: u32) -> Vec<Destination<'_>> {
    let mut out = Vec::new();
    for (group, g) in raw.route_groups.iter().enumerate() {
        let table = match &g.value.table {
            None => default_table,
            Some(t) => match values::table(t.get_ref()) {
                Ok(t) => t,
                Err(_) => continue,
            },
        };
        for d in each(&g.value.destinations) {
            if let Some(net) = network(d.get_ref()) {
                out.push(Destination {
                    group,
                    label: &g.label,
                    table,
                    net,
                    span: d.span(),
                });
            }
        }
    }
    out
}

fn table_name(table: u32) -> String {
    if table == MAIN_TABLE {
        "main".to_string()
    } else {
        table.to_string()
    }
}

/// Each destination that overlaps an earlier one in the same table is reported with one of
/// those (the first that contains it, or else one inside it).
fn overlapping_destinations(destinations: &[Destination], sink: &mut Sink) {
    let mut earlier = PrefixIndex::new();
    for (i, d) in destinations.iter().enumerate() {
        let overlapping = earlier
            .first_container(&d.table, &d.net)
            .or_else(|| earlier.one_within(&d.table, &d.net));
        earlier.insert(d.table, &d.net, i);
        let Some(e) = overlapping.map(|j| &destinations[j]) else {
            continue;
        };
        let line = line_of(sink, &e.span);
        if e.group == d.group {
            let message = if e.net == d.net {
                format!("{}: destination {} is listed twice", d.label, d.net)
            } else {
                format!(
                    "{}: destination {} overlaps {} of the same group",
                    d.label, d.net, e.net
                )
            };
            sink.error(
                d.span.clone(),
                message,
                format!("remove one of them ({} is on line {line})", e.net),
            );
        } else {
            sink.error(
                d.span.clone(),
                format!(
                    "{}: destination {} overlaps {} of {} (both in table {})",
                    d.label,
                    d.net,
                    e.net,
                    e.label,
                    table_name(d.table)
                ),
                format!(
                    "{} is on line {line}; a destination may belong to one group per routing \
                     table: remove it, or put one of the groups in another table",
                    e.net
                ),
            );
        }
    }
}

/// allowed_ips of each link, by name; `None` when any of them is invalid (already reported).
fn allowed_ips(raw: &RawConfig) -> BTreeMap<&str, Option<Vec<IpNetwork>>> {
    let mut out = BTreeMap::new();
    for l in &raw.links {
        let Some(name) = name_of(&l.value.name) else {
            continue;
        };
        let nets = l.value.allowed_ips.as_ref().and_then(|list| {
            list.get_ref()
                .iter()
                .map(|s| network(s.get_ref()))
                .collect()
        });
        out.entry(name).or_insert(nets);
    }
    out
}

fn carried_destinations(raw: &RawConfig, destinations: &[Destination], sink: &mut Sink) {
    let allowed: BTreeMap<&str, Option<PrefixIndex<()>>> = allowed_ips(raw)
        .into_iter()
        .map(|(link, nets)| {
            let index = nets.map(|nets| {
                let mut index = PrefixIndex::new();
                for (i, n) in nets.iter().enumerate() {
                    index.insert((), n, i);
                }
                index
            });
            (link, index)
        })
        .collect();
    for d in destinations {
        let g = &raw.route_groups[d.group];
        let mut checked = BTreeSet::new();
        for link in each(&g.value.links) {
            let link = link.get_ref().as_str();
            if !checked.insert(link) {
                continue;
            }
            let Some(Some(nets)) = allowed.get(link) else {
                continue;
            };
            if nets.first_container(&(), &d.net).is_none() {
                sink.error(
                    d.span.clone(),
                    format!(
                        "{}: destination {} is not carried by link {link:?}",
                        d.label, d.net
                    ),
                    format!("add {} to allowed_ips of link {link}", d.net),
                );
            }
        }
    }
}

/// A peer endpoint inside a tunnel's own routes: the tunnel's packets could be routed into a
/// tunnel. A warning, because agentd binds each link's socket to its underlay address.
fn routing_loops(raw: &RawConfig, destinations: &[Destination], sink: &mut Sink) {
    let mut carried = PrefixIndex::new();
    for (i, d) in destinations.iter().enumerate() {
        carried.insert((), &d.net, i);
    }
    let hint = "routing loop risk: traffic to the peer's address could be routed into a tunnel. \
                agentd binds each link's UDP socket to its underlay listen address, which keeps \
                the tunnel's own packets on the underlay, but other traffic to the peer will not be";
    for l in &raw.links {
        let Some(endpoint) = &l.value.peer_endpoint else {
            continue;
        };
        let Some(ip) = values::endpoint(endpoint.get_ref())
            .ok()
            .as_ref()
            .and_then(Endpoint::ip)
        else {
            continue;
        };
        let own = each(&l.value.allowed_ips)
            .filter_map(|s| values::cidr(s.get_ref()).ok())
            .find(|n| n.contains(ip));
        if let Some(net) = own {
            sink.warning(
                endpoint.span(),
                format!(
                    "{}: peer_endpoint {ip} lies inside allowed_ips {net} of this link",
                    l.label
                ),
                hint,
            );
            continue;
        }
        if let Some(d) = carried
            .first_container(&(), &IpNetwork::from(ip))
            .map(|i| &destinations[i])
        {
            sink.warning(
                endpoint.span(),
                format!(
                    "{}: peer_endpoint {ip} lies inside destination {} of {}",
                    l.label, d.net, d.label
                ),
                hint,
            );
        }
    }
}

fn records_in_zones(raw: &RawConfig, sink: &mut Sink) {
    let mut zones: BTreeMap<&str, &str> = BTreeMap::new();
    for p in &raw.dns_providers {
        let kind = p.value.kind.as_ref().map(|k| k.get_ref().as_str());
        let (Some(name), Some(zone)) = (name_of(&p.value.name), name_of(&p.value.zone)) else {
            continue;
        };
        let named_zone = kind == Some(DnsProviderKind::Rfc2136.as_str())
            || (kind == Some(DnsProviderKind::Oci.as_str()) && !zone.starts_with("ocid1."));
        if named_zone && values::dns_name(zone).is_ok() {
            zones.entry(name).or_insert(zone);
        }
    }
    for g in &raw.dns_groups {
        let (Some(provider), Some(record)) = (name_of(&g.value.provider), &g.value.record) else {
            continue;
        };
        let Some(zone) = zones.get(provider) else {
            continue;
        };
        let name = record.get_ref();
        if values::dns_name(name).is_ok() && !values::dns_name_in_zone(name, zone) {
            sink.error(
                record.span(),
                format!(
                    "{}: record {name:?} is outside zone {zone:?} of dns_provider {provider:?}",
                    g.label
                ),
                format!("use a name that ends in {zone}, or a provider for that zone"),
            );
        }
    }
}

fn listed(tables: &RouteTables) -> Option<Span> {
    tables
        .as_ref()
        .filter(|t| !t.get_ref().is_empty())
        .map(|t| t.span())
}

/// Cloud actions need their cloud's section: `aws_route_tables` `[aws]` (the EC2 region and
/// credentials), `oci_route_tables` and oci providers `[oci]` (the signing identity). route53
/// providers work without `[aws]` (default credentials, us-east-1).
fn cloud_sections(raw: &RawConfig, sink: &mut Sink) {
    if raw.aws.is_none() {
        for g in &raw.route_groups {
            if let Some(span) = listed(&g.value.aws_route_tables) {
                sink.error(
                    span,
                    format!("{}: aws_route_tables needs an [aws] section", g.label),
                    "add [aws] with region = \"us-east-1\" (this gateway's EC2 region); \
                     credentials come from the instance role or the shared credentials file",
                );
            }
        }
    }
    if raw.oci.is_none() {
        let hint = "add [oci] with region, tenancy, user, fingerprint and key_file (the API \
                    signing key of the OCI user agentd acts as)";
        for g in &raw.route_groups {
            if let Some(span) = listed(&g.value.oci_route_tables) {
                sink.error(
                    span,
                    format!("{}: oci_route_tables needs an [oci] section", g.label),
                    hint,
                );
            }
        }
        for p in &raw.dns_providers {
            let Some(kind) = &p.value.kind else { continue };
            if kind.get_ref() == DnsProviderKind::Oci.as_str() {
                sink.error(
                    kind.span(),
                    format!("{}: an oci provider needs an [oci] section", p.label),
                    hint,
                );
            }
        }
    }
}

/// The ids of a route table list (invalid ones were reported by `validate`).
fn each_table(tables: &RouteTables) -> impl Iterator<Item = &Spanned<String>> {
    tables
        .iter()
        .flat_map(|t| t.get_ref().iter())
        .filter_map(|t| t.get_ref().id.as_ref())
}

/// A cloud route table holds one route per destination: two groups (or one group twice) must
/// not both steer the same destination in the same table.
fn route_table_claims(raw: &RawConfig, destinations: &[Destination], sink: &mut Sink) {
    let mut claimed: BTreeMap<(&str, IpNetwork), (&str, Span)> = BTreeMap::new();
    let mut by_group: Vec<Vec<IpNetwork>> = vec![Vec::new(); raw.route_groups.len()];
    for d in destinations {
        by_group[d.group].push(d.net);
    }
    for (g, nets) in raw.route_groups.iter().zip(&by_group) {
        let aws = each_table(&g.value.aws_route_tables)
            .filter(|id| values::aws_id(id.get_ref(), &["rtb"], "").is_ok());
        let oci = each_table(&g.value.oci_route_tables)
            .filter(|id| values::ocid(id.get_ref(), &["routetable"]).is_ok());
        for id in aws.chain(oci) {
            for net in nets {
                match claimed.get(&(id.get_ref().as_str(), *net)) {
                    Some((owner, earlier)) => {
                        let line = line_of(sink, earlier);
                        let by = if *owner == g.label {
                            "this group".to_string()
                        } else {
                            (*owner).to_string()
                        };
                        sink.error(
                            id.span(),
                            format!(
                                "{}: route table {:?} is already steered for {net} by {by} \
                                 (line {line})",
                                g.label,
                                id.get_ref()
                            ),
                            "a route table holds one route per destination: list the table in \
                             one group only for these destinations, or remove the repeated entry",
                        );
                        break;
                    }
                    None => {
                        claimed.insert((id.get_ref().as_str(), *net), (&g.label, id.span()));
                    }
                }
            }
        }
    }
}
