//! Read side: turn what one TUN `read()` returned into wire-ready IP packets (userspace TSO).
//!
//! A TCP super-packet is cut *in place*: segment `i` is the byte range that starts `i * mss`
//! bytes into the buffer, i.e. its payload stays where it is and its headers are written just in
//! front of it, over payload bytes of segment `i - 1` that were already emitted. So no payload
//! byte is copied and no scratch buffer is needed; the price is that the caller's buffer is
//! consumed (each segment must be used, e.g. encrypted, inside `emit`, before the next one
//! overwrites its tail).
//!
//! Header fields follow Linux's software GSO (`tcp_gso_segment`, `inet_gso_segment`) and
//! wireguard-go's `tcpTSO`: IPv4 ID +1 per segment from the original, fresh IPv4 total length
//! and header checksum or IPv6 payload length, sequence number advanced by the payload before,
//! FIN and PSH on the last segment only, CWR on the first only, and a full TCP checksum.

use crate::checksum;
use crate::packet::{
    be16, be32, parse_tcp, put16, put32, set_ipv4_checksum, IPV6_HDR_LEN, TCP_CSUM, TCP_CWR,
    TCP_FIN, TCP_FLAGS, TCP_PSH, TCP_SEQ, V4_ID, V4_TOTAL_LEN, V6_PAYLOAD_LEN,
};
use crate::vnet::{
    VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
};
use crate::{OffloadError, VnetHdr};

/// Largest IP + TCP header (IHL 15 and data offset 15 words): the size of the on-stack copy of
/// the header template.
const MAX_HEADERS: usize = 60 + 60;

/// Turns one TUN read into wire packets and calls `emit` with each, in order; returns how many.
///
/// `hdr` is the [`VnetHdr`] the read started with and `packet` the IP packet after it (exactly
/// the bytes read, without the header). Each emitted slice is a complete IPv4/IPv6 packet with
/// valid IP and transport checksums:
///
/// - `gso_type` NONE: the packet itself, its checksum completed first if `NEEDS_CSUM` is set.
/// - TCPV4/TCPV6 (with or without the ECN bit): segments of at most `gso_size` payload bytes.
///   `hdr_len`, `csum_start` and `csum_offset` are ignored: header lengths come from the packet
///   (the kernel may report its linear header area as `hdr_len`).
///
/// `packet` is used as the working buffer: on return its contents are unspecified, and an emitted
/// segment is only valid during its `emit` call. On error nothing has been emitted.
pub fn split(
    hdr: &VnetHdr,
    packet: &mut [u8],
    mut emit: impl FnMut(&mut [u8]),
) -> Result<usize, OffloadError> {
    match hdr.gso_type & !VIRTIO_NET_HDR_GSO_ECN {
        VIRTIO_NET_HDR_GSO_NONE => {
            // An empty packet handed to `Tunn::encapsulate` would go out as a keepalive.
            if packet.is_empty() {
                return Err(OffloadError::Truncated);
            }
            if hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
                complete_checksum(hdr, packet)?;
            }
            emit(packet);
            Ok(1)
        }
        VIRTIO_NET_HDR_GSO_TCPV4 => segment_tcp(hdr, false, packet, emit),
        VIRTIO_NET_HDR_GSO_TCPV6 => segment_tcp(hdr, true, packet, emit),
        _ => Err(OffloadError::UnsupportedGso(hdr.gso_type)),
    }
}

/// Completes a partial (`CHECKSUM_PARTIAL`) transport checksum like `skb_checksum_help`: the
/// field already holds the folded pseudo-header sum, so summing from `csum_start` to the end with
/// the field in place and inverting gives the final value.
fn complete_checksum(hdr: &VnetHdr, packet: &mut [u8]) -> Result<(), OffloadError> {
    let start = usize::from(hdr.csum_start);
    let at = start + usize::from(hdr.csum_offset);
    if at + 2 > packet.len() {
        return Err(OffloadError::BadVnetHeader);
    }
    let c = checksum::finish(checksum::sum(&packet[start..], 0));
    put16(packet, at, c);
    Ok(())
}

fn segment_tcp(
    hdr: &VnetHdr,
    v6: bool,
    packet: &mut [u8],
    mut emit: impl FnMut(&mut [u8]),
) -> Result<usize, OffloadError> {
    let mss = usize::from(hdr.gso_size);
    if mss == 0 {
        return Err(OffloadError::BadVnetHeader);
    }
    let tcp = parse_tcp(packet)?;
    if tcp.v6 != v6 {
        return Err(OffloadError::GsoIpMismatch);
    }
    let (iph, hdr_len) = (tcp.iph, tcp.hdr_len());
    let payload = packet.len() - hdr_len;

    // The headers of segment 0 are rewritten in place, and later segments' headers land on
    // payload already emitted, so every segment starts from a copy of the original headers.
    let mut template = [0u8; MAX_HEADERS];
    let template = &mut template[..hdr_len];
    template.copy_from_slice(&packet[..hdr_len]);
    let seq0 = be32(template, iph + TCP_SEQ);
    let id0 = be16(template, V4_ID);
    let flags0 = template[iph + TCP_FLAGS];

    // A super-packet without payload (not produced by the kernel, but valid) is one segment.
    let count = payload.div_ceil(mss).max(1);
    for i in 0..count {
        let start = i * mss;
        let chunk = mss.min(payload - start);
        let len = hdr_len + chunk;
        let seg = &mut packet[start..start + len];
        seg[..hdr_len].copy_from_slice(template);

        // Lengths fit in u16: `len` is at most the original packet's IP length (IPv4) or
        // 40 + its 16-bit payload length (IPv6).
        if v6 {
            put16(seg, V6_PAYLOAD_LEN, (len - IPV6_HDR_LEN) as u16);
        } else {
            put16(seg, V4_TOTAL_LEN, len as u16);
            // At most 65535 segments, so `i` fits; the ID wraps like the kernel's.
            put16(seg, V4_ID, id0.wrapping_add(i as u16));
            set_ipv4_checksum(&mut seg[..iph]);
        }

        put32(seg, iph + TCP_SEQ, seq0.wrapping_add(start as u32));
        let mut flags = flags0;
        if i + 1 < count {
            flags &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            // CWR acknowledges one congestion signal; repeating it would signal it again.
            flags &= !TCP_CWR;
        }
        seg[iph + TCP_FLAGS] = flags;

        put16(seg, iph + TCP_CSUM, 0);
        let c = checksum::finish(checksum::sum(
            &seg[iph..],
            tcp.pseudo_header(seg, len - iph),
        ));
        put16(seg, iph + TCP_CSUM, c);
        emit(seg);
    }
    Ok(count)
}
