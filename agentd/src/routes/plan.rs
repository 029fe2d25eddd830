//! The route diff: desired routes and the kernel's current routes in, changes out. Pure: no
//! netlink, no clock, so every case is a unit test.
//!
//! A route's kernel identity is (table, destination, metric): that is what a netlink replace
//! matches, whatever the protocol. agentd owns exactly the routes that carry its protocol
//! number. So, for each desired route:
//! - an owned route with the same identity and the same target: nothing to do;
//! - an owned route with the same identity and another target: replace it (one atomic message,
//!   so no packet ever sees the destination without a route);
//! - a foreign route with the same identity: a conflict; agentd writes nothing (a replace would
//!   clobber it) and reports it;
//! - none: add it.
//!
//! Owned routes that no desired route wants are deleted (and duplicates of one identity beyond
//! the first). Foreign routes to a desired destination with another metric are reported as
//! conflicts too (they compete for the same traffic) but left alone.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

/// Where a route sends traffic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// Out of an interface (a tunnel's TUN), optionally via a gateway.
    Dev {
        ifindex: u32,
        gateway: Option<IpAddr>,
    },
    /// Drop and answer ICMP unreachable: agentd's fail-closed route.
    Unreachable,
    /// Anything else the kernel holds (blackhole, prohibit, multipath, ...), by route type.
    Other(u8),
}

/// One route as the kernel identifies and describes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelRoute {
    pub table: u32,
    pub dst: IpNetwork,
    pub metric: u32,
    pub protocol: u8,
    pub target: Target,
    /// Path MTU set on the route (RTAX_MTU).
    pub mtu: Option<u32>,
}

impl KernelRoute {
    /// What a netlink replace matches on.
    pub fn identity(&self) -> (u32, IpNetwork, u32) {
        (self.table, self.dst, self.metric)
    }

    fn same_effect(&self, other: &KernelRoute) -> bool {
        self.target == other.target && self.mtu == other.mtu
    }
}

impl fmt::Display for KernelRoute {
    /// Like `ip route`: `10.2.0.0/16 dev #7 metric 100 table 254 proto 73 mtu 1420`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Target::Unreachable => write!(f, "unreachable {}", self.dst)?,
            Target::Dev { ifindex, gateway } => {
                write!(f, "{}", self.dst)?;
                if let Some(gw) = gateway {
                    write!(f, " via {gw}")?;
                }
                write!(f, " dev #{ifindex}")?;
            }
            Target::Other(kind) => write!(f, "type-{kind} {}", self.dst)?,
        }
        write!(
            f,
            " metric {} table {} proto {}",
            self.metric, self.table, self.protocol
        )?;
        if let Some(mtu) = self.mtu {
            write!(f, " mtu {mtu}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Add(KernelRoute),
    /// Replace the owned route of the same identity (atomic).
    Replace(KernelRoute),
    Delete(KernelRoute),
}

/// A foreign route in the way of, or competing with, a desired one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub desired: KernelRoute,
    pub foreign: KernelRoute,
    /// Same identity: the desired route could not be installed.
    pub blocking: bool,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub conflicts: Vec<Conflict>,
}

/// Compare `desired` (all carrying `protocol`) with `current` (whatever the kernel holds in the
/// tables concerned).
pub fn plan(desired: &[KernelRoute], current: &[KernelRoute], protocol: u8) -> Plan {
    let mut out = Plan::default();
    let mut owned: BTreeMap<(u32, IpNetwork, u32), Vec<&KernelRoute>> = BTreeMap::new();
    let mut foreign: BTreeMap<(u32, IpNetwork), Vec<&KernelRoute>> = BTreeMap::new();
    for r in current {
        if r.protocol == protocol {
            owned.entry(r.identity()).or_default().push(r);
        } else {
            foreign.entry((r.table, r.dst)).or_default().push(r);
        }
    }
    let mut wanted = std::collections::BTreeSet::new();
    for d in desired {
        wanted.insert(d.identity());
        let competitors = foreign
            .get(&(d.table, d.dst))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let blocker = competitors.iter().find(|f| f.metric == d.metric);
        for f in competitors {
            out.conflicts.push(Conflict {
                desired: d.clone(),
                foreign: (*f).clone(),
                blocking: f.metric == d.metric,
            });
        }
        if blocker.is_some() {
            continue;
        }
        match owned.get(&d.identity()).and_then(|v| v.first()) {
            Some(cur) if cur.same_effect(d) => {}
            Some(_) => out.changes.push(Change::Replace(d.clone())),
            None => out.changes.push(Change::Add(d.clone())),
        }
    }
    for (identity, routes) in &owned {
        // Owned routes nobody wants, and duplicates of one identity beyond the first (the
        // kernel allows them for IPv6).
        let keep = usize::from(wanted.contains(identity));
        for r in routes.iter().skip(keep) {
            out.changes.push(Change::Delete((*r).clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: u8 = 73;
    const MAIN: u32 = 254;

    fn dev(dst: &str, ifindex: u32, metric: u32) -> KernelRoute {
        KernelRoute {
            table: MAIN,
            dst: dst.parse().unwrap(),
            metric,
            protocol: US,
            target: Target::Dev {
                ifindex,
                gateway: None,
            },
            mtu: Some(1420),
        }
    }

    fn unreachable(dst: &str, metric: u32) -> KernelRoute {
        KernelRoute {
            target: Target::Unreachable,
            mtu: None,
            ..dev(dst, 0, metric)
        }
    }

    fn foreign(mut r: KernelRoute, protocol: u8) -> KernelRoute {
        r.protocol = protocol;
        r
    }

    #[test]
    fn an_empty_kernel_gets_every_desired_route_added() {
        let want = [
            dev("10.2.0.0/16", 7, 100),
            unreachable("10.2.0.0/16", u32::MAX),
        ];
        let p = plan(&want, &[], US);
        assert_eq!(
            p.changes,
            vec![Change::Add(want[0].clone()), Change::Add(want[1].clone())]
        );
        assert!(p.conflicts.is_empty());
    }

    #[test]
    fn matching_routes_need_no_write() {
        let want = [
            dev("10.2.0.0/16", 7, 100),
            unreachable("10.2.0.0/16", u32::MAX),
        ];
        assert_eq!(plan(&want, &want, US), Plan::default());
    }

    #[test]
    fn a_route_on_another_link_is_replaced_not_deleted_and_added() {
        let want = [dev("10.2.0.0/16", 8, 100)];
        let p = plan(&want, &[dev("10.2.0.0/16", 7, 100)], US);
        assert_eq!(p.changes, vec![Change::Replace(want[0].clone())]);
    }

    #[test]
    fn a_changed_mtu_is_a_replace() {
        let mut want = dev("10.2.0.0/16", 7, 100);
        want.mtu = Some(1380);
        let p = plan(
            std::slice::from_ref(&want),
            &[dev("10.2.0.0/16", 7, 100)],
            US,
        );
        assert_eq!(p.changes, vec![Change::Replace(want)]);
    }

    #[test]
    fn owned_routes_nobody_wants_are_deleted_and_foreign_ones_never() {
        let stale = dev("10.3.0.0/16", 7, 100);
        let admin = foreign(dev("10.9.0.0/16", 7, 100), 4);
        let p = plan(&[], &[stale.clone(), admin], US);
        assert_eq!(p.changes, vec![Change::Delete(stale)]);
    }

    #[test]
    fn a_foreign_route_with_the_same_identity_blocks_and_is_reported_not_clobbered() {
        let want = dev("10.2.0.0/16", 7, 100);
        let admin = foreign(dev("10.2.0.0/16", 3, 100), 4);
        let p = plan(
            std::slice::from_ref(&want),
            std::slice::from_ref(&admin),
            US,
        );
        assert!(p.changes.is_empty(), "{:?}", p.changes);
        assert_eq!(
            p.conflicts,
            vec![Conflict {
                desired: want,
                foreign: admin,
                blocking: true
            }]
        );
    }

    #[test]
    fn a_foreign_route_with_another_metric_is_reported_but_ours_is_still_added() {
        let want = dev("10.2.0.0/16", 7, 100);
        let admin = foreign(dev("10.2.0.0/16", 3, 50), 3);
        let p = plan(
            std::slice::from_ref(&want),
            std::slice::from_ref(&admin),
            US,
        );
        assert_eq!(p.changes, vec![Change::Add(want.clone())]);
        assert_eq!(p.conflicts.len(), 1);
        assert!(!p.conflicts[0].blocking);
    }

    #[test]
    fn the_same_destination_in_another_table_or_metric_is_another_route() {
        let mut other_table = dev("10.2.0.0/16", 7, 100);
        other_table.table = 100;
        let want = [dev("10.2.0.0/16", 7, 100)];
        let p = plan(
            &want,
            &[other_table.clone(), dev("10.2.0.0/16", 7, 200)],
            US,
        );
        assert!(p.changes.contains(&Change::Add(want[0].clone())));
        assert!(p.changes.contains(&Change::Delete(other_table)));
        assert!(p
            .changes
            .contains(&Change::Delete(dev("10.2.0.0/16", 7, 200))));
        assert_eq!(p.changes.len(), 3);
    }

    #[test]
    fn duplicates_of_one_identity_are_reduced_to_one() {
        let want = [dev("2001:db8::/32", 7, 100)];
        let dup = dev("2001:db8::/32", 9, 100);
        let p = plan(&want, &[want[0].clone(), dup.clone()], US);
        assert_eq!(p.changes, vec![Change::Delete(dup)]);
    }

    #[test]
    fn routes_print_like_ip_route() {
        assert_eq!(
            dev("10.2.0.0/16", 7, 100).to_string(),
            "10.2.0.0/16 dev #7 metric 100 table 254 proto 73 mtu 1420"
        );
        assert_eq!(
            unreachable("10.2.0.0/16", 5).to_string(),
            "unreachable 10.2.0.0/16 metric 5 table 254 proto 73"
        );
    }
}
