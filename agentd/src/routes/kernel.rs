//! The netlink side of routing: dump routes and rules, apply changes, watch for changes.
//!
//! Conversions between the kernel's messages and [`KernelRoute`] live here and nowhere else.
//! Kernel behaviours handled here: the route protocol is compared as a number; the
//! table comes from RTA_TABLE when present (the header holds at most 255); a dump returns every
//! table, so the filtering is ours; link-down flushes of IPv4 routes produce no RTM_DELROUTE, so
//! link events trigger a resync as route events do.

use std::net::IpAddr;

use anyhow::{anyhow, Context as _};
use futures_util::{StreamExt, TryStreamExt};
use ipnetwork::IpNetwork;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteMetric, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, MulticastGroup, RouteMessageBuilder};
use tokio::sync::mpsc;

use super::plan::{Change, KernelRoute, Target};
use super::{KernelApi, Rule};

/// Route types as numbers (RTN_*), for [`Target::Other`].
fn type_number(kind: RouteType) -> u8 {
    u8::from(kind)
}

pub fn from_message(msg: &RouteMessage) -> Option<KernelRoute> {
    let h = &msg.header;
    let mut table = u32::from(h.table);
    let mut dst: Option<IpAddr> = None;
    let mut metric = 0;
    let mut oif = None;
    let mut gateway = None;
    let mut mtu = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(a) => dst = address(a),
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Gateway(a) => gateway = address(a),
            RouteAttribute::Metrics(metrics) => {
                for m in metrics {
                    if let RouteMetric::Mtu(v) = m {
                        mtu = Some(*v);
                    }
                }
            }
            _ => {}
        }
    }
    let dst = match (dst, h.address_family) {
        (Some(ip), _) => ip,
        (None, AddressFamily::Inet) => IpAddr::from([0u8; 4]),
        (None, AddressFamily::Inet6) => IpAddr::from([0u16; 8]),
        _ => return None,
    };
    let dst = IpNetwork::new(dst, h.destination_prefix_length).ok()?;
    let target = match (h.kind, oif) {
        (RouteType::Unicast, Some(ifindex)) => Target::Dev { ifindex, gateway },
        (RouteType::Unreachable, _) => Target::Unreachable,
        (kind, _) => Target::Other(type_number(kind)),
    };
    Some(KernelRoute {
        table,
        dst,
        metric,
        protocol: u8::from(h.protocol),
        target,
        mtu,
    })
}

fn address(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn to_message(r: &KernelRoute) -> anyhow::Result<RouteMessage> {
    let mut b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(r.dst.ip(), r.dst.prefix())
        .map_err(|e| anyhow!("{e}"))?
        .table_id(r.table)
        .priority(r.metric)
        .protocol(RouteProtocol::from(r.protocol));
    match &r.target {
        Target::Dev { ifindex, gateway } => {
            b = b.output_interface(*ifindex);
            match gateway {
                Some(gw) => b = b.gateway(*gw).map_err(|e| anyhow!("{e}"))?,
                None => b = b.scope(RouteScope::Link),
            }
        }
        Target::Unreachable => b = b.kind(RouteType::Unreachable),
        Target::Other(kind) => b = b.kind(RouteType::from(*kind)),
    }
    let mut msg = b.build();
    if let Some(mtu) = r.mtu {
        msg.attributes
            .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
    }
    Ok(msg)
}

#[derive(Clone)]
pub struct Kernel {
    handle: Handle,
}

impl Kernel {
    pub fn connect() -> anyhow::Result<Kernel> {
        let (connection, handle, _) =
            rtnetlink::new_connection().context("opening a netlink socket for routes")?;
        tokio::spawn(connection);
        Ok(Kernel { handle })
    }
}

impl KernelApi for Kernel {
    async fn routes(&self, tables: &[u32]) -> anyhow::Result<Vec<KernelRoute>> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut req = RouteMessage::default();
            req.header.address_family = family;
            let mut dump = self.handle.route().get(req).execute();
            while let Some(msg) = dump.try_next().await.context("dumping routes")? {
                if let Some(r) = from_message(&msg) {
                    if tables.contains(&r.table) {
                        out.push(r);
                    }
                }
            }
        }
        Ok(out)
    }

    async fn apply(&self, change: &Change) -> anyhow::Result<()> {
        match change {
            Change::Add(r) => self
                .handle
                .route()
                .add(to_message(r)?)
                .execute()
                .await
                .with_context(|| format!("adding route {r}")),
            Change::Replace(r) => self
                .handle
                .route()
                .add(to_message(r)?)
                .replace()
                .execute()
                .await
                .with_context(|| format!("replacing route {r}")),
            Change::Delete(r) => self
                .handle
                .route()
                .del(to_message(r)?)
                .execute()
                .await
                .with_context(|| format!("deleting route {r}")),
        }
    }

    async fn rules(&self, protocol: u8) -> anyhow::Result<Vec<Rule>> {
        let mut out = Vec::new();
        for v6 in [false, true] {
            let version = if v6 {
                rtnetlink::IpVersion::V6
            } else {
                rtnetlink::IpVersion::V4
            };
            let mut dump = self.handle.rule().get(version).execute();
            while let Some(msg) = dump.try_next().await.context("dumping rules")? {
                let mut ours = false;
                let mut table = u32::from(msg.header.table);
                let mut priority = 0;
                for attr in &msg.attributes {
                    match attr {
                        RuleAttribute::Protocol(p) => ours = u8::from(*p) == protocol,
                        RuleAttribute::Table(t) => table = *t,
                        RuleAttribute::Priority(p) => priority = *p,
                        _ => {}
                    }
                }
                if ours {
                    out.push(Rule {
                        v6,
                        table,
                        priority,
                        protocol,
                    });
                }
            }
        }
        Ok(out)
    }

    async fn add_rule(&self, rule: Rule) -> anyhow::Result<()> {
        let Rule {
            v6,
            table,
            priority,
            protocol,
        } = rule;
        let base = self
            .handle
            .rule()
            .add()
            .table_id(table)
            .priority(priority)
            .action(RuleAction::ToTable);
        let proto = RuleAttribute::Protocol(RouteProtocol::from(protocol));
        let result = if v6 {
            let mut r = base.v6();
            r.message_mut().attributes.push(proto);
            r.execute().await
        } else {
            let mut r = base.v4();
            r.message_mut().attributes.push(proto);
            r.execute().await
        };
        result.with_context(|| format!("adding rule lookup {table}"))
    }

    async fn delete_rule(&self, rule: Rule) -> anyhow::Result<()> {
        self.handle
            .rule()
            .del(rule_message(rule))
            .execute()
            .await
            .with_context(|| format!("deleting rule lookup {}", rule.table))
    }
}

/// The message that names one of our rules for a delete: family, table, priority, protocol.
fn rule_message(rule: Rule) -> RuleMessage {
    let mut msg = RuleMessage::default();
    msg.header.family = if rule.v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    msg.header.table = u8::try_from(rule.table).unwrap_or(252);
    msg.header.action = RuleAction::ToTable;
    msg.attributes.push(RuleAttribute::Table(rule.table));
    msg.attributes.push(RuleAttribute::Priority(rule.priority));
    msg.attributes
        .push(RuleAttribute::Protocol(RouteProtocol::from(rule.protocol)));
    msg
}

/// Watch the kernel's route, rule and link events; send a tick on `changed` for each batch.
/// If the watch connection dies (a decode error can end it silently) it is reopened, and a
/// tick forces a full resync, which also covers dropped (overrun) notifications.
pub fn watch(changed: mpsc::Sender<()>) {
    tokio::spawn(async move {
        loop {
            let groups = [
                MulticastGroup::Ipv4Route,
                MulticastGroup::Ipv6Route,
                MulticastGroup::Link,
                MulticastGroup::Ipv4Rule,
                MulticastGroup::Ipv6Rule,
            ];
            match rtnetlink::new_multicast_connection(&groups) {
                Ok((connection, _handle, mut messages)) => {
                    let conn = tokio::spawn(connection);
                    while messages.next().await.is_some() {
                        // Full channel: a resync is pending anyway.
                        let _ = changed.try_send(());
                    }
                    conn.abort();
                    tracing::warn!("netlink route watch ended; reopening");
                }
                Err(e) => tracing::warn!(error = %e, "cannot watch netlink route events; retrying"),
            }
            let _ = changed.try_send(());
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            if changed.is_closed() {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_survive_the_round_trip_through_a_netlink_message() {
        for r in [
            KernelRoute {
                table: 1000,
                dst: "10.2.0.0/16".parse().unwrap(),
                metric: 100,
                protocol: 73,
                target: Target::Dev {
                    ifindex: 7,
                    gateway: None,
                },
                mtu: Some(1420),
            },
            KernelRoute {
                table: 254,
                dst: "2001:db8::/32".parse().unwrap(),
                metric: u32::MAX - 255,
                protocol: 73,
                target: Target::Unreachable,
                mtu: None,
            },
        ] {
            let msg = to_message(&r).unwrap();
            assert_eq!(from_message(&msg), Some(r));
        }
    }
}
