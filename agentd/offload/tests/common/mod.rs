//! Test-only packet builder and an independent checksum verifier: written from the RFCs, sharing
//! no code with the crate, so that a checksum bug in the crate cannot hide itself.

#![allow(dead_code)] // Each test file uses a different part.

use isthmus_offload::{
    VnetHdr, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
};

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;
pub const ECE: u8 = 0x40;
pub const CWR: u8 = 0x80;

/// RFC 1071 the slow way: 16-bit big-endian words, end-around carry after every addition.
pub fn ones_sum(data: &[u8], mut acc: u32) -> u32 {
    for pair in data.chunks(2) {
        let word = (u32::from(pair[0]) << 8) | u32::from(pair.get(1).copied().unwrap_or(0));
        acc += word;
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

fn pseudo(pkt: &[u8], proto: u8, len: usize) -> u32 {
    let addrs = if pkt[0] >> 4 == 4 {
        &pkt[12..20]
    } else {
        &pkt[8..40]
    };
    let mut acc = ones_sum(addrs, 0);
    acc = ones_sum(&[0, proto], acc);
    ones_sum(&(len as u32).to_be_bytes(), acc)
}

pub fn ip_header_len(pkt: &[u8]) -> usize {
    if pkt[0] >> 4 == 4 {
        usize::from(pkt[0] & 0x0f) * 4
    } else {
        40
    }
}

fn proto(pkt: &[u8]) -> u8 {
    if pkt[0] >> 4 == 4 {
        pkt[9]
    } else {
        pkt[6]
    }
}

/// The IPv4 header checksum verifies (true for IPv6, which has none).
pub fn ipv4_header_ok(pkt: &[u8]) -> bool {
    pkt[0] >> 4 == 6 || ones_sum(&pkt[..ip_header_len(pkt)], 0) == 0xffff
}

/// The TCP or UDP checksum verifies against the pseudo-header.
pub fn transport_ok(pkt: &[u8]) -> bool {
    let iph = ip_header_len(pkt);
    let acc = pseudo(pkt, proto(pkt), pkt.len() - iph);
    ones_sum(&pkt[iph..], acc) == 0xffff
}

/// The checksum value a complete packet must carry, computed from scratch.
pub fn expected_transport_checksum(pkt: &[u8], csum_at: usize) -> u16 {
    let iph = ip_header_len(pkt);
    let mut copy = pkt.to_vec();
    copy[csum_at..csum_at + 2].fill(0);
    let acc = pseudo(&copy, proto(&copy), copy.len() - iph);
    let c = !(ones_sum(&copy[iph..], acc) as u16);
    if c == 0 {
        0xffff
    } else {
        c
    }
}

/// The folded, non-inverted pseudo-header sum a `CHECKSUM_PARTIAL` packet carries.
pub fn partial_checksum(pkt: &[u8]) -> u16 {
    let iph = ip_header_len(pkt);
    pseudo(pkt, proto(pkt), pkt.len() - iph) as u16
}

pub fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

pub fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub fn tcp_header_len(pkt: &[u8]) -> usize {
    usize::from(pkt[ip_header_len(pkt) + 12] >> 4) * 4
}

pub fn seq(pkt: &[u8]) -> u32 {
    be32(pkt, ip_header_len(pkt) + 4)
}

pub fn tcp_flags(pkt: &[u8]) -> u8 {
    pkt[ip_header_len(pkt) + 13]
}

pub fn ipv4_id(pkt: &[u8]) -> u16 {
    be16(pkt, 4)
}

pub fn tcp_payload(pkt: &[u8]) -> &[u8] {
    &pkt[ip_header_len(pkt) + tcp_header_len(pkt)..]
}

/// The length the IP header claims for the whole packet.
pub fn ip_len(pkt: &[u8]) -> usize {
    if pkt[0] >> 4 == 4 {
        usize::from(be16(pkt, 2))
    } else {
        40 + usize::from(be16(pkt, 4))
    }
}

/// A TCP packet to build, with valid checksums unless told otherwise.
#[derive(Debug, Clone)]
pub struct Tcp {
    pub v6: bool,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// IPv4 TOS or IPv6 traffic class.
    pub tos: u8,
    pub flow_label: u32,
    pub id: u16,
    pub df: bool,
    pub ip_options: Vec<u8>,
    pub tcp_options: Vec<u8>,
    pub payload: Vec<u8>,
}

impl Tcp {
    pub fn v4() -> Self {
        let mut src = [0; 16];
        let mut dst = [0; 16];
        src[..4].copy_from_slice(&[10, 0, 0, 1]);
        dst[..4].copy_from_slice(&[10, 0, 0, 2]);
        Tcp {
            v6: false,
            src,
            dst,
            sport: 40000,
            dport: 5201,
            seq: 1000,
            ack: 7777,
            flags: ACK,
            window: 512,
            ttl: 64,
            tos: 0,
            flow_label: 0,
            id: 100,
            df: true,
            ip_options: Vec::new(),
            // Timestamps, as Linux sends them: NOP NOP TS.
            tcp_options: vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2],
            payload: Vec::new(),
        }
    }

    pub fn v6() -> Self {
        let mut t = Tcp::v4();
        t.v6 = true;
        t.src = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        t.dst = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        t.flow_label = 0x12345;
        t
    }

    pub fn payload(mut self, p: Vec<u8>) -> Self {
        self.payload = p;
        self
    }

    pub fn seq(mut self, s: u32) -> Self {
        self.seq = s;
        self
    }

    pub fn flags(mut self, f: u8) -> Self {
        self.flags = f;
        self
    }

    pub fn id(mut self, id: u16) -> Self {
        self.id = id;
        self
    }

    pub fn sport(mut self, p: u16) -> Self {
        self.sport = p;
        self
    }

    /// The packet with a complete, valid TCP checksum.
    pub fn build(&self) -> Vec<u8> {
        let mut p = self.build_raw();
        let iph = ip_header_len(&p);
        let c = expected_transport_checksum(&p, iph + 16);
        p[iph + 16..iph + 18].copy_from_slice(&c.to_be_bytes());
        p
    }

    /// The packet as the kernel hands out a super-packet: the TCP checksum field holds the
    /// partial (pseudo-header) sum, with the matching header.
    pub fn build_gso(&self, mss: u16) -> (VnetHdr, Vec<u8>) {
        let mut p = self.build_raw();
        let iph = ip_header_len(&p);
        let partial = partial_checksum(&p);
        p[iph + 16..iph + 18].copy_from_slice(&partial.to_be_bytes());
        let tcph = tcp_header_len(&p);
        let hdr = VnetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: if self.v6 {
                VIRTIO_NET_HDR_GSO_TCPV6
            } else {
                VIRTIO_NET_HDR_GSO_TCPV4
            },
            hdr_len: (iph + tcph) as u16,
            gso_size: mss,
            csum_start: iph as u16,
            csum_offset: 16,
        };
        (hdr, p)
    }

    /// The packet with a zero TCP checksum.
    pub fn build_raw(&self) -> Vec<u8> {
        let tcph = 20 + self.tcp_options.len();
        assert!(tcph.is_multiple_of(4) && self.ip_options.len().is_multiple_of(4));
        let mut tcp = Vec::with_capacity(tcph + self.payload.len());
        tcp.extend_from_slice(&self.sport.to_be_bytes());
        tcp.extend_from_slice(&self.dport.to_be_bytes());
        tcp.extend_from_slice(&self.seq.to_be_bytes());
        tcp.extend_from_slice(&self.ack.to_be_bytes());
        tcp.push(((tcph / 4) as u8) << 4);
        tcp.push(self.flags);
        tcp.extend_from_slice(&self.window.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
        tcp.extend_from_slice(&self.tcp_options);
        tcp.extend_from_slice(&self.payload);

        let mut p = Vec::new();
        if self.v6 {
            let vtf = (6u32 << 28) | (u32::from(self.tos) << 20) | (self.flow_label & 0xfffff);
            p.extend_from_slice(&vtf.to_be_bytes());
            p.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
            p.push(6);
            p.push(self.ttl);
            p.extend_from_slice(&self.src);
            p.extend_from_slice(&self.dst);
        } else {
            let iph = 20 + self.ip_options.len();
            p.push(0x40 | (iph / 4) as u8);
            p.push(self.tos);
            p.extend_from_slice(&((iph + tcp.len()) as u16).to_be_bytes());
            p.extend_from_slice(&self.id.to_be_bytes());
            p.extend_from_slice(&(if self.df { 0x4000u16 } else { 0 }).to_be_bytes());
            p.push(self.ttl);
            p.push(6);
            p.extend_from_slice(&[0, 0]);
            p.extend_from_slice(&self.src[..4]);
            p.extend_from_slice(&self.dst[..4]);
            p.extend_from_slice(&self.ip_options);
            let c = !(ones_sum(&p, 0) as u16);
            p[10..12].copy_from_slice(&c.to_be_bytes());
        }
        p.extend_from_slice(&tcp);
        p
    }
}

/// A UDP packet whose checksum field holds the partial (pseudo-header) sum, as the kernel leaves
/// it with `NEEDS_CSUM`.
pub fn udp_partial(v6: bool, payload: &[u8]) -> Vec<u8> {
    let t = if v6 { Tcp::v6() } else { Tcp::v4() };
    let udp_len = 8 + payload.len();
    let mut p = Vec::new();
    if v6 {
        p.extend_from_slice(&(6u32 << 28).to_be_bytes());
        p.extend_from_slice(&(udp_len as u16).to_be_bytes());
        p.push(17);
        p.push(64);
        p.extend_from_slice(&t.src);
        p.extend_from_slice(&t.dst);
    } else {
        p.extend_from_slice(&[0x45, 0]);
        p.extend_from_slice(&((20 + udp_len) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 1, 0x40, 0, 64, 17, 0, 0]);
        p.extend_from_slice(&t.src[..4]);
        p.extend_from_slice(&t.dst[..4]);
        let c = !(ones_sum(&p, 0) as u16);
        p[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let iph = p.len();
    p.extend_from_slice(&5353u16.to_be_bytes());
    p.extend_from_slice(&53u16.to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    let partial = partial_checksum(&p);
    p[iph + 6..iph + 8].copy_from_slice(&partial.to_be_bytes());
    p
}

/// A batch laid out in a coalescer arena: one slot per packet, packet after the header room.
pub struct Batch {
    pub arena: Vec<u8>,
    pub lens: Vec<usize>,
    pub slot: usize,
}

impl Batch {
    pub fn new(packets: &[Vec<u8>], slot: usize) -> Self {
        let mut arena = vec![0u8; packets.len() * slot];
        let mut lens = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            let at = i * slot + VnetHdr::LEN;
            arena[at..at + p.len()].copy_from_slice(p);
            lens.push(p.len());
        }
        Batch { arena, lens, slot }
    }
}

/// Runs a coalescer over `packets` and returns each write as (header, IP packet).
pub fn coalesce_all(packets: &[Vec<u8>]) -> Vec<(VnetHdr, Vec<u8>)> {
    let mut c = isthmus_offload::Coalescer::new(64, isthmus_offload::SLOT_LEN);
    let mut b = Batch::new(packets, isthmus_offload::SLOT_LEN);
    let mut out = Vec::new();
    let stats = c
        .coalesce(&mut b.arena, &b.lens, |w| {
            let hdr = VnetHdr::parse(w).expect("every write starts with a header");
            out.push((hdr, w[VnetHdr::LEN..].to_vec()));
        })
        .expect("batch fits the layout");
    assert_eq!(stats.writes, out.len());
    assert_eq!(stats.packets, packets.len());
    out
}

/// Splits one (header, packet) into owned segments.
pub fn split_all(hdr: &VnetHdr, packet: &[u8]) -> Vec<Vec<u8>> {
    let mut buf = packet.to_vec();
    let mut segs = Vec::new();
    let n =
        isthmus_offload::split(hdr, &mut buf, |s| segs.push(s.to_vec())).expect("split succeeds");
    assert_eq!(n, segs.len());
    segs
}

/// Deterministic filler so that payload bytes differ by position.
pub fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}
