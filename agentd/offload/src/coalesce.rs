//! Write side: coalesce a batch of decrypted packets into TUN writes (userspace GRO).
//!
//! **Arena.** The caller decrypts packet `i` of a batch into slot `i` of one arena of fixed-size
//! slots: the IP packet starts [`VnetHdr::LEN`] bytes into the slot, and those first bytes are
//! left for the header this module writes. When a later segment of the same flow is merged, its
//! payload is appended in place after the packet of the flow's first slot (the *head*), so a slot
//! of [`SLOT_LEN`] bytes can grow into a 64 KiB super-packet and the head's slot is then written
//! with one `write()`, header included. Merging copies each merged payload once; a packet written
//! alone is not copied at all. No allocation happens per packet or per batch once the
//! [`Coalescer`]'s vectors have grown to the batch size.
//!
//! **Rules** (Linux `tcp_gro_receive` and wireguard-go `tcpGRO`; a packet that breaks one is
//! written alone or starts a new super-packet):
//! - Only TCP over IPv4 without options or fragmentation, or IPv6 without extension headers, with
//!   exactly the IP length in the buffer, flags ACK or ACK+PSH, and a payload (pure ACKs are
//!   never merged).
//! - Same flow (addresses and ports), and per flow a segment is only ever appended to the flow's
//!   *latest* super-packet: any packet of the flow that does not merge closes it. So the output
//!   keeps every flow's packet order, as Linux GRO does (it holds one packet per flow); unlike
//!   wireguard-go, which may merge across a packet in between.
//! - Same IPv4 TOS, TTL, DF (and, without DF, consecutive IDs, since re-segmentation regenerates
//!   IDs that way), or same IPv6 traffic class, flow label and hop limit.
//! - Same TCP header length, options bytes, ACK number and window. The window is compared (as
//!   Linux does, unlike wireguard-go) because the super-packet carries only the head's, and a
//!   later window update would be lost.
//! - Sequence numbers follow on exactly; every merged segment has the head's payload size except
//!   a smaller last one; PSH only on the last one. Both end the super-packet.
//! - The IP packet stays within 65535 bytes and the slot.
//! - Valid IPv4 header and TCP checksums, checked before merging: the super-packet goes to the
//!   kernel as `CHECKSUM_PARTIAL`, which it trusts, so a corrupt segment must not get in. A
//!   packet written alone keeps its checksum, which the kernel verifies.
//!
//! A super-packet gets a fresh IPv4 total length and header checksum (or IPv6 payload length),
//! the folded pseudo-header sum (not inverted) in its TCP checksum field, and a header with
//! `NEEDS_CSUM`, GSO TCPV4/TCPV6, `gso_size` = the head's payload size, `hdr_len` = IP + TCP
//! header length, `csum_start` = IP header length, `csum_offset` = 16: what the kernel needs to
//! finish the checksum and, when forwarding, to segment it again.

use crate::checksum;
use crate::packet::{
    be16, be32, parse_tcp, put16, set_ipv4_checksum, TcpPacket, IPPROTO_TCP, IPV4_HDR_MIN,
    IPV6_HDR_LEN, TCP_ACK, TCP_ACK_FLAG, TCP_CSUM, TCP_FLAGS, TCP_HDR_MIN, TCP_PSH, TCP_SEQ,
    TCP_WINDOW, V4_DF, V4_FLAGS, V4_ID, V4_SRC, V4_TOTAL_LEN, V6_PAYLOAD_LEN, V6_SRC,
};
use crate::vnet::{
    VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
};
use crate::{OffloadError, VnetHdr, MAX_IP_PACKET};

/// The slot size that lets any head grow to the largest super-packet: the header room plus a
/// 65535-byte IP packet.
pub const SLOT_LEN: usize = VnetHdr::LEN + MAX_IP_PACKET;

/// What one [`Coalescer::coalesce`] call did, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets in the batch.
    pub packets: usize,
    /// Calls made to `write` (TUN writes).
    pub writes: usize,
    /// Writes that carried a GSO super-packet (two or more packets).
    pub super_packets: usize,
    /// Packets not merged because their IPv4 header or TCP checksum was wrong (they are still
    /// written alone; the kernel drops them).
    pub bad_checksums: usize,
}

/// Coalesces batches of decrypted IP packets into GRO super-packets for TUN writes. Owns only
/// bookkeeping, reused across batches; the packets live in the caller's arena.
#[derive(Debug)]
pub struct Coalescer {
    slot_len: usize,
    /// Per packet of the current batch: how it is written.
    roles: Vec<Role>,
    /// Super-packets (or candidates for one) of the current batch, in order of their heads.
    items: Vec<Item>,
    /// TCP flows seen in the current batch. A batch has few flows and the scan compares a small
    /// key, so a linear search beats hashing here and needs no hasher state.
    flows: Vec<Flow>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Written alone with [`VnetHdr::NONE`].
    Alone,
    /// The first packet of `items[n]`; written with whatever was merged into it.
    Head(usize),
    /// Appended to an earlier head; not written by itself.
    Merged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlowKey {
    v6: bool,
    /// Source then destination address; IPv4 uses the first 8 bytes.
    addrs: [u8; 32],
    ports: [u8; 4],
}

#[derive(Debug)]
struct Flow {
    key: FlowKey,
    /// The item that the flow's next in-order segment may be appended to, if any.
    open: Option<usize>,
}

#[derive(Debug)]
struct Item {
    /// Index of the head packet (and slot) in the batch.
    head: usize,
    tcp: TcpPacket,
    /// Payload size of the head: every merged segment but the last must have it.
    gso_size: usize,
    /// IP length of the super-packet so far.
    len: usize,
    /// Sequence number the next segment must carry.
    next_seq: u32,
    /// Packets in the item, head included.
    segs: usize,
    /// The head's checksums are verified lazily, on the first merge, as a packet written alone
    /// does not need it.
    head_verified: bool,
}

/// A TCP packet of the batch, as far as coalescing cares.
#[derive(Debug)]
struct Segment {
    tcp: TcpPacket,
    key: FlowKey,
    seq: u32,
    payload: usize,
    psh: bool,
    /// Passes the per-packet rules (shape and flags); merging also needs a matching head.
    mergeable: bool,
}

enum Merge {
    Appended { closes: bool },
    Unavailable,
    HeadBadChecksum,
    BadChecksum,
}

impl Coalescer {
    /// A coalescer for batches of up to `max_packets` (more only costs a one-time reallocation)
    /// in arenas of `slot_len`-byte slots. Use [`SLOT_LEN`] unless memory is tight: a head can
    /// only grow to `slot_len - VnetHdr::LEN` bytes.
    pub fn new(max_packets: usize, slot_len: usize) -> Self {
        Coalescer {
            slot_len,
            roles: Vec::with_capacity(max_packets),
            items: Vec::with_capacity(max_packets),
            flows: Vec::with_capacity(max_packets),
        }
    }

    /// The slot size this coalescer expects.
    pub fn slot_len(&self) -> usize {
        self.slot_len
    }

    /// Coalesces one batch and calls `write` once per TUN write, in order.
    ///
    /// Packet `i` of the batch is the `lens[i]` bytes at `arena[i * slot_len + VnetHdr::LEN..]`;
    /// the arena must hold `lens.len()` slots and each packet must fit its slot. Each `write`
    /// gets a header and an IP packet back to back, ready for the TUN file descriptor. Writes
    /// come in the order of their first packet, so each flow's order is kept. The arena's
    /// contents (headers and heads) are modified.
    ///
    /// Packets that are not TCP, or are malformed, are written alone for the kernel to judge.
    /// The only error is [`OffloadError::BadBatch`], for an arena or lengths that break the
    /// layout, and then nothing is written.
    pub fn coalesce(
        &mut self,
        arena: &mut [u8],
        lens: &[usize],
        mut write: impl FnMut(&[u8]),
    ) -> Result<Stats, OffloadError> {
        let slot = self.slot_len;
        let room = slot
            .checked_sub(VnetHdr::LEN)
            .ok_or(OffloadError::BadBatch)?;
        let fits = lens
            .len()
            .checked_mul(slot)
            .is_some_and(|n| n <= arena.len());
        if !fits || lens.iter().any(|&len| len > room) {
            return Err(OffloadError::BadBatch);
        }
        let cap = room.min(MAX_IP_PACKET);

        self.roles.clear();
        self.items.clear();
        self.flows.clear();
        let mut stats = Stats {
            packets: lens.len(),
            ..Stats::default()
        };

        for (i, &len) in lens.iter().enumerate() {
            self.roles.push(Role::Alone);
            let at = i * slot + VnetHdr::LEN;
            let pkt = &arena[at..at + len];
            let Some(seg) = classify(pkt) else {
                self.close_flows_of_unparsed(pkt);
                continue;
            };
            let f = match self.flows.iter().position(|f| f.key == seg.key) {
                Some(f) => f,
                None => {
                    self.flows.push(Flow {
                        key: seg.key,
                        open: None,
                    });
                    self.flows.len() - 1
                }
            };
            if !seg.mergeable {
                self.flows[f].open = None;
                continue;
            }
            if let Some(it) = self.flows[f].open {
                match self.try_merge(arena, cap, it, i, &seg) {
                    Merge::Appended { closes } => {
                        self.roles[i] = Role::Merged;
                        if closes {
                            self.flows[f].open = None;
                        }
                        continue;
                    }
                    Merge::Unavailable => {}
                    Merge::HeadBadChecksum => {
                        stats.bad_checksums += 1;
                        let head = self.items[it].head;
                        self.roles[head] = Role::Alone;
                    }
                    Merge::BadChecksum => {
                        stats.bad_checksums += 1;
                        self.flows[f].open = None;
                        continue;
                    }
                }
            }
            // Start a new item with this packet as its head; the flow's previous one is done.
            self.items.push(Item {
                head: i,
                tcp: seg.tcp,
                gso_size: seg.payload,
                len,
                next_seq: seg.seq.wrapping_add(seg.payload as u32),
                segs: 1,
                head_verified: false,
            });
            let it = self.items.len() - 1;
            self.roles[i] = Role::Head(it);
            // Nothing may follow a PSH segment.
            self.flows[f].open = if seg.psh { None } else { Some(it) };
        }

        for (i, &len) in lens.iter().enumerate() {
            let at = i * slot;
            let written = match self.roles[i] {
                Role::Merged => continue,
                Role::Alone => {
                    arena[at..at + VnetHdr::LEN].copy_from_slice(&VnetHdr::NONE.to_bytes());
                    len
                }
                Role::Head(it) => {
                    let item = &self.items[it];
                    let slot = &mut arena[at..at + VnetHdr::LEN + item.len];
                    if item.segs > 1 {
                        finish_super_packet(item, slot);
                        stats.super_packets += 1;
                    } else {
                        slot[..VnetHdr::LEN].copy_from_slice(&VnetHdr::NONE.to_bytes());
                    }
                    item.len
                }
            };
            write(&arena[at..at + VnetHdr::LEN + written]);
            stats.writes += 1;
        }
        Ok(stats)
    }

    /// Appends packet `i` to item `it` if every rule allows it.
    fn try_merge(
        &mut self,
        arena: &mut [u8],
        cap: usize,
        it: usize,
        i: usize,
        seg: &Segment,
    ) -> Merge {
        let slot = self.slot_len;
        let item = &mut self.items[it];
        if seg.tcp.v6 != item.tcp.v6
            || seg.tcp.iph != item.tcp.iph
            || seg.tcp.tcph != item.tcp.tcph
            || seg.seq != item.next_seq
            || seg.payload > item.gso_size
            || item.len + seg.payload > cap
        {
            return Merge::Unavailable;
        }
        let head_at = item.head * slot + VnetHdr::LEN;
        let at = i * slot + VnetHdr::LEN;
        let hdr_len = seg.tcp.hdr_len();
        let pkt_len = hdr_len + seg.payload;
        {
            let head = &arena[head_at..head_at + item.len];
            let pkt = &arena[at..at + pkt_len];
            if !same_headers(item, head, pkt) {
                return Merge::Unavailable;
            }
            if !item.head_verified {
                if !checksums_valid(&item.tcp, head) {
                    return Merge::HeadBadChecksum;
                }
                item.head_verified = true;
            }
            if !checksums_valid(&seg.tcp, pkt) {
                return Merge::BadChecksum;
            }
        }

        // The head's slot lies wholly before packet i's slot (heads come first in the batch),
        // and `cap` keeps the grown head inside its own slot.
        let (before, from) = arena.split_at_mut(i * slot);
        let dst = head_at + item.len;
        before[dst..dst + seg.payload]
            .copy_from_slice(&from[VnetHdr::LEN + hdr_len..VnetHdr::LEN + pkt_len]);
        if seg.psh {
            before[head_at + item.tcp.iph + TCP_FLAGS] |= TCP_PSH;
        }
        item.len += seg.payload;
        item.next_seq = item.next_seq.wrapping_add(seg.payload as u32);
        item.segs += 1;
        Merge::Appended {
            closes: seg.psh || seg.payload < item.gso_size,
        }
    }

    /// A packet that claims to carry TCP but could not be parsed (an IPv4 fragment, IPv6
    /// extension headers, a length mismatch) may belong to any flow between its two addresses,
    /// so those flows stop growing: merging across it would reorder it within its flow.
    fn close_flows_of_unparsed(&mut self, pkt: &[u8]) {
        let (v6, addrs) = match pkt.first().map(|b| b >> 4) {
            Some(4) if pkt.len() >= IPV4_HDR_MIN && pkt[9] == IPPROTO_TCP => {
                (false, &pkt[V4_SRC..V4_SRC + 8])
            }
            // Any next header but a known non-TCP one might hide TCP behind extension headers.
            Some(6) if pkt.len() >= IPV6_HDR_LEN && !matches!(pkt[6], 1 | 17 | 58) => {
                (true, &pkt[V6_SRC..V6_SRC + 32])
            }
            _ => return,
        };
        for f in &mut self.flows {
            if f.key.v6 == v6 && &f.key.addrs[..addrs.len()] == addrs {
                f.open = None;
            }
        }
    }
}

/// Parses a TCP packet of the batch; `None` if it is not a well-formed TCP packet.
fn classify(pkt: &[u8]) -> Option<Segment> {
    let tcp = parse_tcp(pkt).ok()?;
    let mut key = FlowKey {
        v6: tcp.v6,
        addrs: [0; 32],
        ports: [0; 4],
    };
    let addrs = tcp.addrs(pkt);
    key.addrs[..addrs.len()].copy_from_slice(addrs);
    key.ports.copy_from_slice(&pkt[tcp.iph..tcp.iph + 4]);
    let flags = pkt[tcp.iph + TCP_FLAGS];
    let payload = pkt.len() - tcp.hdr_len();
    let mergeable = payload > 0
        && (flags == TCP_ACK_FLAG || flags == TCP_ACK_FLAG | TCP_PSH)
        && (tcp.v6 || tcp.iph == IPV4_HDR_MIN);
    Some(Segment {
        tcp,
        key,
        seq: be32(pkt, tcp.iph + TCP_SEQ),
        payload,
        psh: flags & TCP_PSH != 0,
        mergeable,
    })
}

/// The header fields that must match between the head and a segment appended to it (the flow
/// key, header lengths and flags were checked already).
fn same_headers(item: &Item, head: &[u8], pkt: &[u8]) -> bool {
    let ip_same = if item.tcp.v6 {
        // Version, traffic class, flow label; hop limit.
        head[..4] == pkt[..4] && head[7] == pkt[7]
    } else {
        // TOS; reserved, DF and MF bits; TTL.
        let df = head[V4_FLAGS] & V4_DF != 0;
        head[1] == pkt[1]
            && head[V4_FLAGS] & 0xe0 == pkt[V4_FLAGS] & 0xe0
            && head[8] == pkt[8]
            && (df || be16(pkt, V4_ID) == be16(head, V4_ID).wrapping_add(item.segs as u16))
    };
    let (ht, pt) = (
        &head[item.tcp.iph..item.tcp.hdr_len()],
        &pkt[item.tcp.iph..item.tcp.hdr_len()],
    );
    // ACK number and the data-offset/reserved byte; window; options.
    ip_same
        && ht[TCP_ACK..TCP_FLAGS] == pt[TCP_ACK..TCP_FLAGS]
        && ht[TCP_WINDOW..TCP_WINDOW + 2] == pt[TCP_WINDOW..TCP_WINDOW + 2]
        && ht[TCP_HDR_MIN..] == pt[TCP_HDR_MIN..]
}

/// Whether the IPv4 header checksum (if any) and the TCP checksum of `pkt` verify.
fn checksums_valid(tcp: &TcpPacket, pkt: &[u8]) -> bool {
    let ip_ok = tcp.v6 || checksum::fold(checksum::sum(&pkt[..tcp.iph], 0)) == 0xffff;
    ip_ok && {
        let pseudo = tcp.pseudo_header(pkt, pkt.len() - tcp.iph);
        checksum::fold(checksum::sum(&pkt[tcp.iph..], pseudo)) == 0xffff
    }
}

/// Fixes the lengths and checksums of a grown head and writes its GSO header; `slot` is the
/// header room followed by exactly the super-packet.
fn finish_super_packet(item: &Item, slot: &mut [u8]) {
    let (hdr, pkt) = slot.split_at_mut(VnetHdr::LEN);
    let iph = item.tcp.iph;
    // `len` <= MAX_IP_PACKET, and header lengths are at most 120 bytes, so the casts hold.
    let gso_type = if item.tcp.v6 {
        put16(pkt, V6_PAYLOAD_LEN, (item.len - IPV6_HDR_LEN) as u16);
        VIRTIO_NET_HDR_GSO_TCPV6
    } else {
        put16(pkt, V4_TOTAL_LEN, item.len as u16);
        set_ipv4_checksum(&mut pkt[..iph]);
        VIRTIO_NET_HDR_GSO_TCPV4
    };
    // CHECKSUM_PARTIAL convention: the field holds the folded pseudo-header sum, not inverted;
    // the kernel adds the rest from csum_start.
    let pseudo = item.tcp.pseudo_header(pkt, item.len - iph);
    put16(pkt, iph + TCP_CSUM, checksum::fold(pseudo));
    let vnet = VnetHdr {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type,
        hdr_len: item.tcp.hdr_len() as u16,
        gso_size: item.gso_size as u16,
        csum_start: iph as u16,
        csum_offset: TCP_CSUM as u16,
    };
    hdr.copy_from_slice(&vnet.to_bytes());
}
