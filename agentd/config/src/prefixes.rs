//! Networks of a list that contain, or lie inside, a given network, found without comparing it
//! against every entry. A network has at most one container per prefix length (its own address
//! masked to that length), so "which entries contain it" is at most 33 (IPv4) or 129 (IPv6) map
//! look-ups; the entries inside it are a range of start addresses. The cross-entry rules check
//! each destination this way, so that tens of thousands of destinations cost a moment, not
//! the square of their number.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

/// A network as (IPv6?, start address, prefix length), with IPv4 in the low 32 bits.
type Key = (bool, u128, u8);

/// Entries under a scope `S` (a routing table, or `()`), each a network and the index of the
/// first entry that had it.
pub(crate) struct PrefixIndex<S> {
    by_net: BTreeMap<(S, Key), usize>,
}

impl<S: Ord + Clone> PrefixIndex<S> {
    pub(crate) fn new() -> Self {
        PrefixIndex {
            by_net: BTreeMap::new(),
        }
    }

    /// Adds `net` as entry `index`; an equal network added before keeps its (earlier) index.
    pub(crate) fn insert(&mut self, scope: S, net: &IpNetwork, index: usize) {
        self.by_net.entry((scope, key(net))).or_insert(index);
    }

    /// The first entry (lowest index) whose network contains `net` or equals it.
    pub(crate) fn first_container(&self, scope: &S, net: &IpNetwork) -> Option<usize> {
        let (v6, start, prefix) = key(net);
        (0..=prefix)
            .filter_map(|p| {
                let k = (v6, mask(start, p, v6), p);
                self.by_net.get(&(scope.clone(), k)).copied()
            })
            .min()
    }

    /// An entry whose network lies inside `net` (or equals it): the one at the lowest address,
    /// or `None` if there is none.
    pub(crate) fn one_within(&self, scope: &S, net: &IpNetwork) -> Option<usize> {
        let (v6, start, prefix) = key(net);
        let end = start | (host_bits(prefix, v6));
        self.by_net
            .range((scope.clone(), (v6, start, prefix))..=(scope.clone(), (v6, end, max_len(v6))))
            .map(|(_, &index)| index)
            .next()
    }
}

fn max_len(v6: bool) -> u8 {
    if v6 {
        128
    } else {
        32
    }
}

/// The bits below a prefix of `prefix` bits.
fn host_bits(prefix: u8, v6: bool) -> u128 {
    let bits = u32::from(max_len(v6) - prefix.min(max_len(v6)));
    if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    }
}

fn mask(address: u128, prefix: u8, v6: bool) -> u128 {
    address & !host_bits(prefix, v6)
}

fn key(net: &IpNetwork) -> Key {
    let (v6, address) = match net.network() {
        IpAddr::V4(a) => (false, u128::from(u32::from(a))),
        IpAddr::V6(a) => (true, u128::from(a)),
    };
    (v6, mask(address, net.prefix(), v6), net.prefix())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().expect("network")
    }

    #[test]
    fn finds_the_first_container_and_an_entry_inside() {
        let mut index = PrefixIndex::new();
        for (i, n) in [
            "10.0.0.0/8",
            "10.2.0.0/16",
            "10.2.0.0/16",
            "fd00::/8",
            "0.0.0.0/0",
        ]
        .into_iter()
        .enumerate()
        {
            index.insert(1u32, &net(n), i);
        }
        index.insert(2u32, &net("192.0.2.0/24"), 5);
        assert_eq!(index.first_container(&1, &net("10.2.3.0/24")), Some(0));
        assert_eq!(index.first_container(&1, &net("10.2.0.0/16")), Some(0));
        assert_eq!(index.first_container(&1, &net("192.0.2.0/24")), Some(4));
        assert_eq!(index.first_container(&1, &net("fd00:1::/32")), Some(3));
        assert_eq!(index.first_container(&1, &net("fe80::/10")), None);
        // Scopes are apart.
        assert_eq!(index.first_container(&2, &net("10.2.3.0/24")), None);
        assert_eq!(index.first_container(&2, &net("192.0.2.1/32")), Some(5));
        // Inside: the equal one counts; a wider one does not; families are apart.
        assert_eq!(index.one_within(&1, &net("10.2.0.0/16")), Some(1));
        assert_eq!(index.one_within(&1, &net("10.2.0.0/17")), None);
        assert_eq!(index.one_within(&2, &net("0.0.0.0/0")), Some(5));
        assert_eq!(index.one_within(&1, &net("fd00::/7")), Some(3));
        assert_eq!(index.one_within(&1, &net("::/0")), Some(3));
    }
}
