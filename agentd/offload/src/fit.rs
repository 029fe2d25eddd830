//! Fitting packets to a path MTU smaller than the packets a tunnel is handed: the route of a
//! tunnel carries the largest MTU of its group's links, and a connection opened over a jumbo
//! path keeps its segment size after a failover to a 1500-byte one.
//!
//! - TCP is **re-segmented** ([`fit_tcp`]): a super-packet's segment size is lowered, and a
//!   single packet larger than the path becomes a super-packet of segments that fit, which
//!   [`crate::split`] then cuts as it cuts any TSO read. TCP never notices anything but smaller
//!   segments.
//! - IPv4 without DF is **fragmented** ([`fragment_v4`]) as a router would (RFC 791): the sender
//!   allowed it, and the peer's kernel reassembles it.
//! - Anything else is answered with ICMP ([`crate::packet_too_big`]) and dropped.

use crate::packet::{be16, parse_tcp, put16, set_ipv4_checksum, IPV4_HDR_MIN, V4_DF, V4_FLAGS};
use crate::packet::{V4_MF_AND_OFFSET, V4_TOTAL_LEN};
use crate::vnet::{VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6};
use crate::VnetHdr;

/// IPv4 "more fragments" flag, in the 16 bits at [`V4_FLAGS`].
const V4_MF: u16 = 0x2000;

/// Sets `hdr` so that [`crate::split`] cuts `packet` (what one TUN read returned after the
/// header) into TCP segments of at most `mtu` bytes: a super-packet whose segments would be
/// larger gets a smaller `gso_size`, and a single TCP packet larger than `mtu` becomes a
/// super-packet. Returns whether it changed anything; a packet that is not well-formed TCP is
/// left as it is (the caller holds its segments to `mtu` one by one).
pub fn fit_tcp(hdr: &mut VnetHdr, packet: &[u8], mtu: u16) -> bool {
    let mtu = usize::from(mtu);
    let gso = hdr.gso_type & !crate::VIRTIO_NET_HDR_GSO_ECN;
    let super_packet = matches!(gso, VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_TCPV6);
    if !super_packet && (gso != VIRTIO_NET_HDR_GSO_NONE || packet.len() <= mtu) {
        return false;
    }
    let Ok(tcp) = parse_tcp(packet) else {
        return false;
    };
    let headers = tcp.hdr_len();
    // A path too small for the headers and one byte (below any floor agentd allows) is left to
    // the per-segment check.
    if mtu <= headers {
        return false;
    }
    let fits = mtu - headers;
    if super_packet {
        if usize::from(hdr.gso_size) <= fits {
            return false;
        }
    } else {
        hdr.gso_type = if tcp.v6 {
            VIRTIO_NET_HDR_GSO_TCPV6
        } else {
            VIRTIO_NET_HDR_GSO_TCPV4
        };
    }
    // `fits` < mtu <= 65535.
    hdr.gso_size = fits as u16;
    true
}

/// Cuts `pkt` (one IPv4 packet, exactly its length, DF clear) into fragments of at most `mtu`
/// bytes, each built in `out` and handed to `emit` in order; returns how many. `None`, with
/// nothing emitted, if `pkt` is not an IPv4 packet that may be fragmented (DF set, IPv6, a
/// header or length that does not hold) or `mtu` leaves no room for 8 bytes of data.
///
/// A fragment of a fragment keeps the original offset and "more fragments" bit. The first
/// fragment carries the whole header; later ones carry only the options whose "copied" flag
/// is set (RFC 791 §3.1), padded to a whole word.
pub fn fragment_v4(
    pkt: &[u8],
    mtu: u16,
    out: &mut [u8],
    mut emit: impl FnMut(&mut [u8]),
) -> Option<usize> {
    let mtu = usize::from(mtu).min(out.len());
    if pkt.len() < IPV4_HDR_MIN || pkt[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    if ihl < IPV4_HDR_MIN || ihl > pkt.len() || usize::from(be16(pkt, V4_TOTAL_LEN)) != pkt.len() {
        return None;
    }
    if pkt[V4_FLAGS] & V4_DF != 0 {
        return None;
    }
    // The header of later fragments: the base header and the copied options.
    let mut later = [0u8; 60];
    later[..IPV4_HDR_MIN].copy_from_slice(&pkt[..IPV4_HDR_MIN]);
    let mut later_len = IPV4_HDR_MIN;
    let options = &pkt[IPV4_HDR_MIN..ihl];
    let mut i = 0;
    while i < options.len() {
        let kind = options[i];
        let len = match kind {
            0 => break,
            1 => 1,
            _ => match options.get(i + 1) {
                Some(&l) if l >= 2 && i + usize::from(l) <= options.len() => usize::from(l),
                _ => return None,
            },
        };
        if kind & 0x80 != 0 {
            later[later_len..later_len + len].copy_from_slice(&options[i..i + len]);
            later_len += len;
        }
        i += len;
    }
    // Pad with end-of-options (zeros, already there) to a whole word.
    later_len = later_len.div_ceil(4) * 4;
    later[0] = 0x40 | (later_len / 4) as u8;

    if mtu < ihl.max(later_len) + 8 {
        return None;
    }
    let field = be16(pkt, V4_FLAGS);
    let offset0 = usize::from(field & 0x1fff) * 8;
    let more0 = field & V4_MF != 0;
    let data = &pkt[ihl..];
    let mut at = 0;
    let mut count = 0;
    loop {
        let header: &[u8] = if count == 0 {
            &pkt[..ihl]
        } else {
            &later[..later_len]
        };
        let room = (mtu - header.len()) / 8 * 8;
        let take = room.min(data.len() - at);
        let last = at + take == data.len();
        let len = header.len() + take;
        let frag = &mut out[..len];
        frag[..header.len()].copy_from_slice(header);
        frag[header.len()..].copy_from_slice(&data[at..at + take]);
        // Offsets fit: the original's offset plus data within one 64 KiB packet, in 8-byte
        // units, and a fragment at a larger offset cannot be reassembled anyway.
        let units = ((offset0 + at) / 8) as u16 & 0x1fff;
        let more = if last { more0 } else { true };
        let flags = (field & !V4_MF_AND_OFFSET) | units | if more { V4_MF } else { 0 };
        put16(frag, V4_FLAGS, flags);
        put16(frag, V4_TOTAL_LEN, len as u16);
        set_ipv4_checksum(&mut frag[..header.len()]);
        emit(frag);
        count += 1;
        at += take;
        if last {
            return Some(count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::internet_checksum;
    use crate::packet::{IPPROTO_TCP, V4_ID};
    use crate::vnet::VIRTIO_NET_HDR_F_NEEDS_CSUM;

    fn v4(len: usize, proto: u8, df: bool, options: &[u8]) -> Vec<u8> {
        let ihl = 20 + options.len();
        let mut p: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        p[0] = 0x40 | (ihl / 4) as u8;
        p[1] = 0;
        put16(&mut p, V4_TOTAL_LEN, len as u16);
        put16(&mut p, V4_ID, 0x1234);
        put16(&mut p, V4_FLAGS, if df { 0x4000 } else { 0 });
        p[8] = 64;
        p[9] = proto;
        p[12..16].copy_from_slice(&[10, 1, 0, 10]);
        p[16..20].copy_from_slice(&[10, 2, 0, 10]);
        p[20..ihl].copy_from_slice(options);
        if proto == IPPROTO_TCP {
            p[ihl + 12] = 5 << 4;
        }
        set_ipv4_checksum(&mut p[..ihl]);
        p
    }

    /// Reassembles fragments the way a receiver does: by offset, until one without MF.
    fn reassemble(frags: &[Vec<u8>]) -> Vec<u8> {
        let mut data = Vec::new();
        for f in frags {
            let ihl = usize::from(f[0] & 0x0f) * 4;
            let off = usize::from(be16(f, V4_FLAGS) & 0x1fff) * 8;
            if data.len() < off + f.len() - ihl {
                data.resize(off + f.len() - ihl, 0);
            }
            data[off..off + f.len() - ihl].copy_from_slice(&f[ihl..]);
        }
        data
    }

    #[test]
    fn a_single_tcp_packet_over_the_path_becomes_a_super_packet_of_segments_that_fit() {
        let p = v4(8960, IPPROTO_TCP, true, &[]);
        let mut hdr = VnetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            ..VnetHdr::NONE
        };
        assert!(fit_tcp(&mut hdr, &p, 1440));
        assert_eq!(hdr.gso_type, VIRTIO_NET_HDR_GSO_TCPV4);
        assert_eq!(hdr.gso_size, 1400);
        let mut buf = p.clone();
        let mut lens = Vec::new();
        crate::split(&hdr, &mut buf, |s| lens.push(s.len())).unwrap();
        assert!(lens.iter().all(|&l| l <= 1440), "{lens:?}");
        assert_eq!(lens.iter().map(|l| l - 40).sum::<usize>(), 8960 - 40);
        // A packet that fits, and one that is not TCP, are left alone.
        let mut hdr = VnetHdr::NONE;
        assert!(!fit_tcp(&mut hdr, &p[..0], 1440));
        assert!(!fit_tcp(&mut hdr, &v4(1400, IPPROTO_TCP, true, &[]), 1440));
        assert!(!fit_tcp(&mut hdr, &v4(8960, 17, true, &[]), 1440));
        assert_eq!(hdr, VnetHdr::NONE);
    }

    #[test]
    fn a_super_packet_of_jumbo_segments_gets_a_smaller_segment_size_and_a_fitting_one_none() {
        let p = v4(60_000, IPPROTO_TCP, true, &[]);
        let mut hdr = VnetHdr {
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
            gso_size: 8920,
            ..VnetHdr::NONE
        };
        assert!(fit_tcp(&mut hdr, &p, 1440));
        assert_eq!(hdr.gso_size, 1400);
        assert!(!fit_tcp(&mut hdr, &p, 1440));
        assert!(!fit_tcp(&mut hdr, &p, 8960));
        assert_eq!(hdr.gso_size, 1400);
    }

    #[test]
    fn fragments_fit_the_path_and_reassemble_to_the_packet() {
        let p = v4(8000, 17, false, &[]);
        let mut out = vec![0u8; 1440];
        let mut frags = Vec::new();
        let n = fragment_v4(&p, 1440, &mut out, |f| frags.push(f.to_vec())).unwrap();
        assert_eq!(n, frags.len());
        assert_eq!(n, 6);
        for (i, f) in frags.iter().enumerate() {
            assert!(f.len() <= 1440);
            assert_eq!(usize::from(be16(f, V4_TOTAL_LEN)), f.len());
            assert_eq!(
                internet_checksum(&f[..20]),
                0,
                "header checksum of fragment {i}"
            );
            assert_eq!(be16(f, V4_ID), 0x1234);
            let mf = be16(f, V4_FLAGS) & V4_MF != 0;
            assert_eq!(mf, i + 1 < n, "MF on all but the last");
            if i + 1 < n {
                assert_eq!(
                    (f.len() - 20) % 8,
                    0,
                    "data of a non-last fragment is whole units"
                );
            }
        }
        assert_eq!(reassemble(&frags), p[20..]);
    }

    #[test]
    fn a_fragment_is_cut_again_at_its_offset_and_keeps_more_fragments() {
        let mut p = v4(3000, 17, false, &[]);
        put16(&mut p, V4_FLAGS, V4_MF | 100); // offset 800, more to come
        set_ipv4_checksum(&mut p[..20]);
        let mut out = vec![0u8; 1500];
        let mut frags = Vec::new();
        fragment_v4(&p, 1300, &mut out, |f| frags.push(f.to_vec())).unwrap();
        assert_eq!(be16(&frags[0], V4_FLAGS) & 0x1fff, 100);
        assert!(frags.iter().all(|f| be16(f, V4_FLAGS) & V4_MF != 0));
        let data = reassemble(&frags);
        assert_eq!(&data[800..], &p[20..]);
    }

    #[test]
    fn only_copied_options_go_into_later_fragments() {
        // Record route (7, not copied) then a copied option (0x86, length 6) then EOL padding.
        let options = [7, 7, 4, 0, 0, 0, 0, 0x86, 6, 1, 2, 3, 4, 0, 0, 0];
        let p = v4(4000, 17, false, &options);
        let mut out = vec![0u8; 1500];
        let mut frags = Vec::new();
        fragment_v4(&p, 1500, &mut out, |f| frags.push(f.to_vec())).unwrap();
        assert_eq!(
            &frags[0][..36],
            &{
                let mut h = p[..36].to_vec();
                h[6..8].copy_from_slice(&frags[0][6..8]);
                h[2..4].copy_from_slice(&frags[0][2..4]);
                h[10..12].copy_from_slice(&frags[0][10..12]);
                h
            }[..]
        );
        let later = &frags[1];
        assert_eq!(later[0], 0x47, "a 28-byte header");
        assert_eq!(&later[20..28], &[0x86, 6, 1, 2, 3, 4, 0, 0]);
        assert_eq!(internet_checksum(&later[..28]), 0);
    }

    #[test]
    fn packets_that_may_not_be_fragmented_are_refused_untouched() {
        let mut out = vec![0u8; 1500];
        let mut emitted = 0;
        let mut emit = |_: &mut [u8]| emitted += 1;
        assert_eq!(
            fragment_v4(&v4(3000, 17, true, &[]), 1440, &mut out, &mut emit),
            None
        );
        let mut v6 = v4(3000, 17, false, &[]);
        v6[0] = 0x60;
        assert_eq!(fragment_v4(&v6, 1440, &mut out, &mut emit), None);
        let short = v4(3000, 17, false, &[]);
        assert_eq!(fragment_v4(&short[..2000], 1440, &mut out, &mut emit), None);
        assert_eq!(fragment_v4(&short, 24, &mut out, &mut emit), None);
        let bad_option = v4(3000, 17, false, &[0x86, 9, 0, 0]);
        assert_eq!(fragment_v4(&bad_option, 1440, &mut out, &mut emit), None);
        assert_eq!(emitted, 0);
    }
}
