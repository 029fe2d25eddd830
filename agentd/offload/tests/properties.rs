//! Properties: split → coalesce → split is lossless, and no input makes either side panic.

mod common;

use std::collections::BTreeMap;

use common::*;
use isthmus_offload::{
    split, Coalescer, VnetHdr, SLOT_LEN, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
};
use proptest::prelude::*;

/// One TCP flow's super-packet as the sending kernel would hand it to agentd.
#[derive(Debug, Clone)]
struct FlowSpec {
    v6: bool,
    mss: u16,
    full_segments: usize,
    last_len: usize,
    seq: u32,
    ack: u32,
    id: u16,
    df: bool,
    ip_options: bool,
    tcp_options: bool,
    psh: bool,
    fin: bool,
    cwr: bool,
    salt: u8,
}

fn flow_spec() -> impl Strategy<Value = FlowSpec> {
    (
        (
            any::<bool>(),
            prop_oneof![1u16..=64, 500u16..=1460],
            0usize..=43,
        ),
        (any::<u32>(), any::<u32>(), any::<u16>(), any::<bool>()),
        (any::<bool>(), any::<bool>(), any::<bool>()),
        (any::<bool>(), any::<bool>(), any::<u8>()),
        1usize..=1460,
    )
        .prop_map(
            |(
                (v6, mss, full_segments),
                (seq, ack, id, df),
                (ip_options, tcp_options, psh),
                (fin, cwr, salt),
                last,
            )| FlowSpec {
                v6,
                mss,
                full_segments,
                last_len: 1 + (last - 1) % usize::from(mss),
                seq,
                ack,
                id,
                df,
                ip_options,
                tcp_options,
                psh,
                fin,
                cwr,
                salt,
            },
        )
}

impl FlowSpec {
    fn tcp(&self, sport: u16) -> Tcp {
        let mut t = if self.v6 { Tcp::v6() } else { Tcp::v4() };
        t.sport = sport;
        t.seq = self.seq;
        t.ack = self.ack;
        t.id = self.id;
        t.df = self.df;
        if self.ip_options && !self.v6 {
            t.ip_options = vec![1, 1, 1, 0];
        }
        if !self.tcp_options {
            t.tcp_options.clear();
        }
        t.flags = ACK
            | if self.psh { PSH } else { 0 }
            | if self.fin { FIN } else { 0 }
            | if self.cwr { CWR } else { 0 };
        let len = self.full_segments * usize::from(self.mss) + self.last_len;
        t.payload = pattern(len, self.salt);
        t
    }

    fn super_packet(&self, sport: u16) -> (VnetHdr, Vec<u8>) {
        let (mut hdr, pkt) = self.tcp(sport).build_gso(self.mss);
        if self.cwr {
            hdr.gso_type |= VIRTIO_NET_HDR_GSO_ECN;
        }
        (hdr, pkt)
    }
}

/// Coalesces `packets` and returns each write's header and packet.
fn coalesce_owned(packets: &[Vec<u8>]) -> Vec<(VnetHdr, Vec<u8>)> {
    let mut c = Coalescer::new(64, SLOT_LEN);
    let mut b = Batch::new(packets, SLOT_LEN);
    let mut out = Vec::new();
    c.coalesce(&mut b.arena, &b.lens, |w| {
        out.push((
            VnetHdr::parse(w).expect("header"),
            w[VnetHdr::LEN..].to_vec(),
        ))
    })
    .expect("batch fits the layout");
    out
}

fn source_port(pkt: &[u8]) -> u16 {
    be16(pkt, ip_header_len(pkt))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any interleaving of segments of up to three flows: coalescing keeps each flow's payload
    /// in order, and splitting the writes again gives the very segments the first split made.
    #[test]
    fn split_coalesce_split_round_trips(
        specs in prop::collection::vec(flow_spec(), 1..=3),
        picks in prop::collection::vec(any::<prop::sample::Index>(), 200),
    ) {
        let mut firsts: Vec<Vec<Vec<u8>>> = Vec::new();
        for (f, spec) in specs.iter().enumerate() {
            let (hdr, pkt) = spec.super_packet(1000 + f as u16);
            let segs = split_all(&hdr, &pkt);
            for s in &segs {
                prop_assert!(ipv4_header_ok(s) && transport_ok(s));
                prop_assert!(tcp_payload(s).len() <= usize::from(spec.mss));
            }
            let joined: Vec<u8> = segs.iter().flat_map(|s| tcp_payload(s).to_vec()).collect();
            prop_assert_eq!(&joined, &spec.tcp(0).payload);
            firsts.push(segs);
        }

        // Interleave, keeping each flow's order.
        let mut next = vec![0usize; firsts.len()];
        let mut batch = Vec::new();
        let mut picks = picks.iter();
        while batch.len() < firsts.iter().map(Vec::len).sum::<usize>() {
            let open: Vec<usize> = (0..firsts.len()).filter(|&f| next[f] < firsts[f].len()).collect();
            let f = match picks.next() {
                Some(ix) => open[ix.index(open.len())],
                None => open[0],
            };
            batch.push(firsts[f][next[f]].clone());
            next[f] += 1;
        }

        let writes = coalesce_owned(&batch);
        prop_assert!(writes.len() <= batch.len());
        let mut payloads: BTreeMap<u16, Vec<u8>> = BTreeMap::new();
        let mut resplit: BTreeMap<u16, Vec<Vec<u8>>> = BTreeMap::new();
        for (hdr, pkt) in &writes {
            prop_assert!(pkt.len() <= 65535);
            let port = source_port(pkt);
            payloads.entry(port).or_default().extend_from_slice(tcp_payload(pkt));
            if hdr.gso_type != 0 {
                prop_assert_eq!(hdr.flags, VIRTIO_NET_HDR_F_NEEDS_CSUM);
                prop_assert_eq!(be16(pkt, ip_header_len(pkt) + 16), partial_checksum(pkt));
            }
            resplit.entry(port).or_default().extend(split_all(hdr, pkt));
        }
        for (f, spec) in specs.iter().enumerate() {
            let port = 1000 + f as u16;
            prop_assert_eq!(&payloads[&port], &spec.tcp(0).payload);
            prop_assert_eq!(&resplit[&port], &firsts[f]);
        }
        // Coalescing happened wherever it could: a lone flow without IP options fits one
        // super-packet again, plus its CWR segment (first) and FIN segment (last) alone.
        if specs.len() == 1 && !specs[0].ip_options {
            prop_assert!(writes.len() <= 3, "{} writes", writes.len());
        }
    }

    /// Random bytes and random headers never panic split, and whatever it emits for a TCP
    /// super-packet is a well-formed packet with valid checksums.
    #[test]
    fn split_never_panics_on_random_input(
        flags in any::<u8>(),
        gso_type in prop_oneof![Just(0u8), Just(1), Just(4), Just(0x81), Just(0x84), any::<u8>()],
        gso_size in any::<u16>(),
        csum_start in any::<u16>(),
        csum_offset in any::<u16>(),
        bytes in prop::collection::vec(any::<u8>(), 0..3000),
    ) {
        let hdr = VnetHdr { flags, gso_type, hdr_len: 0, gso_size, csum_start, csum_offset };
        let mut buf = bytes.clone();
        let _ = split(&hdr, &mut buf, |s| assert!(s.len() <= bytes.len()));
    }

    /// Valid super-packets with a few bytes changed and maybe truncated: split either refuses
    /// them or emits segments whose checksums verify and whose lengths add up.
    #[test]
    fn split_of_mutated_super_packets_is_safe_and_self_consistent(
        spec in flow_spec(),
        mutations in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        truncate in prop::option::of(any::<prop::sample::Index>()),
        hdr_len in any::<u16>(),
    ) {
        let (mut hdr, mut pkt) = spec.super_packet(7);
        hdr.hdr_len = hdr_len;
        for (ix, v) in &mutations {
            let i = ix.index(pkt.len());
            pkt[i] = *v;
        }
        if let Some(ix) = truncate {
            pkt.truncate(ix.index(pkt.len()));
        }
        let orig_len = pkt.len();
        let mut emitted = Vec::new();
        if let Ok(n) = split(&hdr, &mut pkt, |s| emitted.push(s.to_vec())) {
            prop_assert_eq!(n, emitted.len());
            let mut payload = 0;
            for s in &emitted {
                prop_assert!(ipv4_header_ok(s), "IPv4 header checksum");
                prop_assert!(transport_ok(s), "TCP checksum");
                prop_assert_eq!(ip_len(s), s.len());
                prop_assert!(tcp_payload(s).len() <= usize::from(hdr.gso_size));
                payload += tcp_payload(s).len();
            }
            let headers = ip_header_len(&emitted[0]) + tcp_header_len(&emitted[0]);
            prop_assert_eq!(payload + headers, orig_len);
        }
    }

    /// Batches of valid, mutated, truncated and random packets never panic the coalescer, and
    /// its writes account for every packet: splitting each super-packet again yields exactly as
    /// many segments as went in, all with valid checksums.
    #[test]
    fn coalesce_never_panics_and_accounts_for_every_packet(
        spec in flow_spec(),
        slot_extra in prop_oneof![Just(SLOT_LEN - VnetHdr::LEN), 100usize..6000],
        edits in prop::collection::vec(
            (any::<prop::sample::Index>(), 0u8..6, any::<prop::sample::Index>(), any::<u8>()),
            0..8,
        ),
        junk in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 0..4),
    ) {
        let (hdr, pkt) = spec.super_packet(9);
        let mut batch = split_all(&hdr, &pkt);
        batch.extend(junk);
        for (which, kind, at, v) in &edits {
            let i = which.index(batch.len());
            let p = &mut batch[i];
            match kind {
                0 if !p.is_empty() => {
                    let j = at.index(p.len());
                    p[j] = *v;
                }
                1 => {
                    let keep = at.index(p.len() + 1);
                    p.truncate(keep);
                }
                2 => {
                    let dup = p.clone();
                    batch.push(dup);
                }
                3 => {
                    let other = at.index(batch.len());
                    batch.swap(i, other);
                }
                _ => {}
            }
        }
        let room = slot_extra.min(SLOT_LEN - VnetHdr::LEN);
        batch.retain(|p| p.len() <= room);
        let slot = room + VnetHdr::LEN;

        let mut c = Coalescer::new(8, slot);
        let mut b = Batch::new(&batch, slot);
        let mut segments = 0;
        let mut writes = 0;
        let stats = c.coalesce(&mut b.arena, &b.lens, |w| {
            writes += 1;
            let hdr = VnetHdr::parse(w).unwrap();
            let pkt = &w[VnetHdr::LEN..];
            if hdr.gso_type == 0 {
                assert_eq!(hdr, VnetHdr::NONE);
                assert!(batch.iter().any(|p| p[..] == *pkt), "alone packets are unchanged");
                segments += 1;
            } else {
                assert!(hdr.gso_type == VIRTIO_NET_HDR_GSO_TCPV4
                    || hdr.gso_type == VIRTIO_NET_HDR_GSO_TCPV6);
                assert!(pkt.len() <= room.min(65535));
                for s in split_all(&hdr, pkt) {
                    assert!(ipv4_header_ok(&s) && transport_ok(&s));
                    segments += 1;
                }
            }
        }).unwrap();
        prop_assert_eq!(stats.writes, writes);
        prop_assert_eq!(stats.packets, batch.len());
        prop_assert_eq!(segments, batch.len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    /// Cheap, many cases: small random packets through both sides.
    #[test]
    fn small_random_packets_never_panic_either_side(
        packets in prop::collection::vec(
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..120),
                // Plausible starts make the parsers go deeper.
                prop::collection::vec(any::<u8>(), 40..120).prop_map(|mut v| { v[0] = 0x45; v }),
                prop::collection::vec(any::<u8>(), 60..120).prop_map(|mut v| { v[0] = 0x60; v[6] = 6; v }),
            ],
            0..12,
        ),
        gso_type in prop_oneof![Just(1u8), Just(4)],
        gso_size in any::<u16>(),
    ) {
        for p in &packets {
            let mut buf = p.clone();
            let hdr = VnetHdr { gso_type, gso_size, ..VnetHdr::NONE };
            let _ = split(&hdr, &mut buf, |_| {});
        }
        let mut c = Coalescer::new(4, 200);
        let mut b = Batch::new(&packets, 200);
        let mut writes = 0;
        let stats = c.coalesce(&mut b.arena, &b.lens, |_| writes += 1).unwrap();
        prop_assert_eq!(stats.writes, writes);
        prop_assert!(writes <= packets.len());
    }
}
