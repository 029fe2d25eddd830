//! The `virtio_net_hdr` that prefixes every read and write on a TUN device opened with
//! `IFF_VNET_HDR` (`include/uapi/linux/virtio_net.h`).
//!
//! Its 16-bit fields are in the device's "vnet endianness": for TUN that is the host's own order
//! unless `TUNSETVNETBE` is used, i.e. little-endian on the x86-64 and arm64 hosts agentd runs
//! on. This module always uses little-endian so that the bytes are right on those hosts whatever
//! the build machine is.

use crate::OffloadError;

/// `flags`: the transport checksum is partial; complete it from `csum_start` to the end, storing
/// it at `csum_start + csum_offset` (the field already holds the pseudo-header sum).
pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// `flags`: the kernel already validated the checksum. Informational; nothing here depends on it.
pub const VIRTIO_NET_HDR_F_DATA_VALID: u8 = 2;

/// `gso_type`: a single packet.
pub const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
/// `gso_type`: an IPv4 TCP super-packet.
pub const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
/// `gso_type`: UDP fragmentation offload (UFO); never enabled by agentd, so unsupported.
pub const VIRTIO_NET_HDR_GSO_UDP: u8 = 3;
/// `gso_type`: an IPv6 TCP super-packet.
pub const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
/// `gso_type`: UDP segmentation offload (USO); not enabled by agentd, so unsupported.
pub const VIRTIO_NET_HDR_GSO_UDP_L4: u8 = 5;
/// `gso_type` bit: the TCP super-packet has CWR set (on its first segment only).
pub const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

/// A decoded `virtio_net_hdr` (without the `num_buffers` field of the mergeable-buffers variant,
/// which TUN does not use unless asked to with a larger `TUNSETVNETHDRSZ`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    /// `VIRTIO_NET_HDR_F_*` bits.
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*`, possibly with the [`VIRTIO_NET_HDR_GSO_ECN`] bit.
    pub gso_type: u8,
    /// Length of the headers of a super-packet (IP + TCP here, no link layer on TUN). Only a hint:
    /// the kernel may report its linear header area instead, so [`crate::split`] derives the
    /// lengths from the packet.
    pub hdr_len: u16,
    /// Payload bytes per segment (the MSS) for a super-packet.
    pub gso_size: u16,
    /// Where checksumming starts (the transport header) when `NEEDS_CSUM` is set.
    pub csum_start: u16,
    /// Offset of the checksum field from `csum_start` (16 for TCP, 6 for UDP).
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Size on the wire.
    pub const LEN: usize = 10;

    /// An all-zero header: a single packet whose checksum is complete.
    pub const NONE: VnetHdr = VnetHdr {
        flags: 0,
        gso_type: VIRTIO_NET_HDR_GSO_NONE,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
    };

    /// Decodes the first [`VnetHdr::LEN`] bytes of `b`. Field values are checked by their users
    /// ([`crate::split`]), since what is valid depends on the packet that follows.
    pub fn parse(b: &[u8]) -> Result<Self, OffloadError> {
        let Some(b) = b.get(..Self::LEN) else {
            return Err(OffloadError::BadVnetHeader);
        };
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Ok(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    /// Encodes the header; copy it in front of the packet.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_through_little_endian_bytes() {
        let h = VnetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV6,
            hdr_len: 0x0102,
            gso_size: 1440,
            csum_start: 40,
            csum_offset: 16,
        };
        let b = h.to_bytes();
        assert_eq!(b, [1, 4, 0x02, 0x01, 0xa0, 0x05, 40, 0, 16, 0]);
        assert_eq!(VnetHdr::parse(&b), Ok(h));
        assert_eq!(VnetHdr::NONE.to_bytes(), [0; 10]);
    }

    #[test]
    fn short_header_is_rejected() {
        assert_eq!(VnetHdr::parse(&[0; 9]), Err(OffloadError::BadVnetHeader));
    }
}
