//! Just enough IPv4/IPv6/TCP parsing for offload: header lengths derived from the packet itself
//! and checked against the buffer, so that every later index is in bounds.

use crate::checksum;
use crate::OffloadError;

pub(crate) const IPPROTO_TCP: u8 = 6;

pub(crate) const IPV4_HDR_MIN: usize = 20;
pub(crate) const IPV6_HDR_LEN: usize = 40;
pub(crate) const TCP_HDR_MIN: usize = 20;

/// IPv4 header field offsets.
pub(crate) const V4_TOTAL_LEN: usize = 2;
pub(crate) const V4_ID: usize = 4;
pub(crate) const V4_FLAGS: usize = 6;
pub(crate) const V4_CSUM: usize = 10;
pub(crate) const V4_SRC: usize = 12;
/// IPv6 header field offsets.
pub(crate) const V6_PAYLOAD_LEN: usize = 4;
pub(crate) const V6_SRC: usize = 8;

/// TCP header field offsets.
pub(crate) const TCP_SEQ: usize = 4;
pub(crate) const TCP_ACK: usize = 8;
pub(crate) const TCP_FLAGS: usize = 13;
pub(crate) const TCP_WINDOW: usize = 14;
pub(crate) const TCP_CSUM: usize = 16;

pub(crate) const TCP_FIN: u8 = 0x01;
pub(crate) const TCP_PSH: u8 = 0x08;
pub(crate) const TCP_ACK_FLAG: u8 = 0x10;
pub(crate) const TCP_CWR: u8 = 0x80;

/// IPv4 "more fragments" flag and fragment offset, in the 16 bits at [`V4_FLAGS`].
pub(crate) const V4_MF_AND_OFFSET: u16 = 0x3fff;
/// IPv4 "don't fragment" flag, in the byte at [`V4_FLAGS`].
pub(crate) const V4_DF: u8 = 0x40;

/// IPv6 next-header values that are extension headers (RFC 8200 §4 and the IANA list), told
/// apart from other protocols only to give a precise error.
const IPV6_EXTENSION_HEADERS: [u8; 10] = [0, 43, 44, 50, 51, 60, 135, 139, 140, 253];

/// A TCP packet whose header lengths have been checked against its buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TcpPacket {
    pub v6: bool,
    /// IP header length; the TCP header starts here.
    pub iph: usize,
    /// TCP header length; the payload starts at `iph + tcph`.
    pub tcph: usize,
}

impl TcpPacket {
    pub fn hdr_len(&self) -> usize {
        self.iph + self.tcph
    }

    /// Source and destination addresses, back to back (8 or 32 bytes).
    pub fn addrs<'a>(&self, pkt: &'a [u8]) -> &'a [u8] {
        if self.v6 {
            &pkt[V6_SRC..V6_SRC + 32]
        } else {
            &pkt[V4_SRC..V4_SRC + 8]
        }
    }

    /// The pseudo-header sum for a TCP segment of `tcp_len` bytes of this packet's addresses.
    pub fn pseudo_header(&self, pkt: &[u8], tcp_len: usize) -> u64 {
        let addrs = self.addrs(pkt);
        let (src, dst) = addrs.split_at(addrs.len() / 2);
        checksum::pseudo_header(src, dst, IPPROTO_TCP, tcp_len)
    }
}

/// Parses `pkt` as an unfragmented IPv4 or extension-header-free IPv6 TCP packet whose IP length
/// field covers exactly the buffer.
pub(crate) fn parse_tcp(pkt: &[u8]) -> Result<TcpPacket, OffloadError> {
    let Some(&first) = pkt.first() else {
        return Err(OffloadError::Truncated);
    };
    let (v6, iph) = match first >> 4 {
        4 => {
            if pkt.len() < IPV4_HDR_MIN {
                return Err(OffloadError::Truncated);
            }
            let iph = usize::from(first & 0x0f) * 4;
            if iph < IPV4_HDR_MIN {
                return Err(OffloadError::BadIpHeader);
            }
            if iph > pkt.len() {
                return Err(OffloadError::Truncated);
            }
            if usize::from(be16(pkt, V4_TOTAL_LEN)) != pkt.len() {
                return Err(OffloadError::LengthMismatch);
            }
            if be16(pkt, V4_FLAGS) & V4_MF_AND_OFFSET != 0 {
                return Err(OffloadError::Fragmented);
            }
            if pkt[9] != IPPROTO_TCP {
                return Err(OffloadError::NotTcp);
            }
            (false, iph)
        }
        6 => {
            if pkt.len() < IPV6_HDR_LEN {
                return Err(OffloadError::Truncated);
            }
            if usize::from(be16(pkt, V6_PAYLOAD_LEN)) + IPV6_HDR_LEN != pkt.len() {
                return Err(OffloadError::LengthMismatch);
            }
            match pkt[6] {
                IPPROTO_TCP => {}
                nh if IPV6_EXTENSION_HEADERS.contains(&nh) => {
                    return Err(OffloadError::Ipv6ExtensionHeaders)
                }
                _ => return Err(OffloadError::NotTcp),
            }
            (true, IPV6_HDR_LEN)
        }
        _ => return Err(OffloadError::BadIpHeader),
    };
    let Some(&data_offset) = pkt.get(iph + 12) else {
        return Err(OffloadError::Truncated);
    };
    if pkt.len() < iph + TCP_HDR_MIN {
        return Err(OffloadError::Truncated);
    }
    let tcph = usize::from(data_offset >> 4) * 4;
    if tcph < TCP_HDR_MIN {
        return Err(OffloadError::BadTcpHeader);
    }
    if iph + tcph > pkt.len() {
        return Err(OffloadError::Truncated);
    }
    Ok(TcpPacket { v6, iph, tcph })
}

/// Reads a big-endian u16; callers have checked `at + 2 <= b.len()`.
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Reads a big-endian u32; callers have checked `at + 4 <= b.len()`.
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Recomputes the IPv4 header checksum of `hdr` (exactly the IPv4 header).
pub(crate) fn set_ipv4_checksum(hdr: &mut [u8]) {
    put16(hdr, V4_CSUM, 0);
    let c = !checksum::fold(checksum::sum(hdr, 0));
    put16(hdr, V4_CSUM, c);
}
