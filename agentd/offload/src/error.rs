//! Why a packet or batch was refused. The caller drops the packet and counts it under
//! [`OffloadError::reason`], a stable metric label.

use std::fmt;

/// A malformed or unsupported input. Nothing in this crate panics on bad bytes; it returns one
/// of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffloadError {
    /// The `virtio_net_hdr` is shorter than 10 bytes, has a zero `gso_size` for a super-packet,
    /// or a `csum_start`/`csum_offset` outside the packet.
    BadVnetHeader,
    /// A `gso_type` other than NONE, TCPV4 or TCPV6 (UFO/USO are never enabled by agentd).
    UnsupportedGso(u8),
    /// `gso_type` says TCPV4 but the packet is IPv6, or the reverse.
    GsoIpMismatch,
    /// IP version or IPv4 header length (IHL) is invalid.
    BadIpHeader,
    /// The IP length field disagrees with the length of the buffer.
    LengthMismatch,
    /// The buffer ends inside the IP or TCP header.
    Truncated,
    /// A TCP super-packet that is an IPv4 fragment.
    Fragmented,
    /// A TCP super-packet whose IP protocol is not TCP.
    NotTcp,
    /// An IPv6 super-packet with extension headers (the kernel does not produce them with TSO).
    Ipv6ExtensionHeaders,
    /// The TCP data offset is below 5 words.
    BadTcpHeader,
    /// A TCP option runs past the header, has a length below 2, or an MSS option is not 4 bytes.
    BadTcpOptions,
    /// The arena and lengths given to [`crate::Coalescer::coalesce`] do not fit its slot layout
    /// (a bug in the caller, not a bad packet).
    BadBatch,
}

impl OffloadError {
    /// A stable, snake_case label for drop counters (`reason="truncated"`).
    pub fn reason(&self) -> &'static str {
        match self {
            OffloadError::BadVnetHeader => "bad_vnet_header",
            OffloadError::UnsupportedGso(_) => "unsupported_gso",
            OffloadError::GsoIpMismatch => "gso_ip_mismatch",
            OffloadError::BadIpHeader => "bad_ip_header",
            OffloadError::LengthMismatch => "length_mismatch",
            OffloadError::Truncated => "truncated",
            OffloadError::Fragmented => "fragmented",
            OffloadError::NotTcp => "not_tcp",
            OffloadError::Ipv6ExtensionHeaders => "ipv6_extension_headers",
            OffloadError::BadTcpHeader => "bad_tcp_header",
            OffloadError::BadTcpOptions => "bad_tcp_options",
            OffloadError::BadBatch => "bad_batch",
        }
    }
}

impl fmt::Display for OffloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OffloadError::BadVnetHeader => f.write_str("invalid virtio_net_hdr"),
            OffloadError::UnsupportedGso(t) => write!(f, "unsupported gso_type {t:#04x}"),
            OffloadError::GsoIpMismatch => f.write_str("gso_type does not match the IP version"),
            OffloadError::BadIpHeader => f.write_str("invalid IP version or header length"),
            OffloadError::LengthMismatch => {
                f.write_str("IP length field disagrees with the packet length")
            }
            OffloadError::Truncated => f.write_str("packet ends inside a header"),
            OffloadError::Fragmented => f.write_str("TCP super-packet is an IP fragment"),
            OffloadError::NotTcp => f.write_str("TCP super-packet does not carry TCP"),
            OffloadError::Ipv6ExtensionHeaders => {
                f.write_str("IPv6 extension headers in a TCP super-packet")
            }
            OffloadError::BadTcpHeader => f.write_str("invalid TCP data offset"),
            OffloadError::BadTcpOptions => f.write_str("malformed TCP options"),
            OffloadError::BadBatch => f.write_str("batch does not fit the coalescer's slot layout"),
        }
    }
}

impl std::error::Error for OffloadError {}
