//! Userspace segmentation offload for a TUN device opened with `IFF_VNET_HDR` and
//! `TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)`, the way wireguard-go does it since 2023.
//!
//! WireGuard (`boringtun::noise::Tunn`) encrypts one IP packet at a time, and a TUN device moves
//! one packet per syscall. With offloads on, the kernel instead hands agentd TCP *super-packets*
//! of up to 64 KiB and accepts them back, so one `read()`/`write()` carries ~45 wire packets.
//! Every TUN read and write then starts with a 10-byte `virtio_net_hdr` ([`VnetHdr`]).
//!
//! - **Read side, TUN → WireGuard: [`split`]** (userspace TSO). A read returns either a TCP
//!   super-packet (`gso_type` TCPV4/TCPV6, `gso_size` = MSS), cut here into wire-sized packets
//!   with their own IP/TCP headers and full checksums, or a single packet whose transport
//!   checksum the kernel left partial (`NEEDS_CSUM`), completed here.
//! - **Write side, WireGuard → TUN: [`Coalescer`]** (userspace GRO). A batch of decrypted packets
//!   is scanned once; consecutive in-order TCP segments of one flow are appended into the first
//!   one's buffer and written as one super-packet with a GSO header, under the rules of Linux
//!   GRO (`tcp_gro_receive`) and wireguard-go's `tcpGRO`. Everything else is written alone
//!   behind a zeroed header.
//!
//! The crate is sans-IO and allocation-free per packet: callers own every buffer, [`split`]
//! builds the segments in place inside the buffer it was given, and the [`Coalescer`] keeps its
//! bookkeeping vectors across batches. Malformed input is an [`OffloadError`] with a stable
//! [`OffloadError::reason`] for drop counters, never a panic.
//!
//! ```
//! use isthmus_offload::{split, Coalescer, VnetHdr, SLOT_LEN};
//!
//! // Read side: `buf[..n]` is what one read() from the TUN fd returned, header first.
//! let mut buf = vec![0u8; VnetHdr::LEN + 65535];
//! let n = VnetHdr::LEN + 20; // here: a bare IPv4 header behind a zero vnet header
//! buf[VnetHdr::LEN] = 0x45;
//! let hdr = VnetHdr::parse(&buf[..n])?;
//! let segments = split(&hdr, &mut buf[VnetHdr::LEN..n], |segment| {
//!     // tunn.encapsulate(segment, &mut out) and queue the datagram: the next segment
//!     // overwrites this one.
//!     assert_eq!(segment.len(), 20);
//! })?;
//! assert_eq!(segments, 1);
//!
//! // Write side: packet i of a batch is decrypted into slot i, after the header room
//! // (boringtun's `decapsulate` puts the packet at the start of `dst`).
//! let batch = 64;
//! let mut coalescer = Coalescer::new(batch, SLOT_LEN);
//! let mut arena = vec![0u8; batch * SLOT_LEN]; // allocated once, reused for every batch
//! let mut lens = Vec::with_capacity(batch);
//! for i in 0..3 {
//!     let dst = &mut arena[i * SLOT_LEN + VnetHdr::LEN..(i + 1) * SLOT_LEN];
//!     dst[0] = 0x45; // here: tunn.decapsulate(Some(src), datagram, dst), a 20-byte packet
//!     lens.push(20);
//! }
//! let stats = coalescer.coalesce(&mut arena, &lens, |write| {
//!     // tun.write(write): the vnet header and the packet in one syscall
//!     assert_eq!(write.len(), VnetHdr::LEN + 20);
//! })?;
//! assert_eq!(stats.writes, 3);
//! # Ok::<(), isthmus_offload::OffloadError>(())
//! ```

mod checksum;
mod coalesce;
mod error;
mod fit;
mod icmp;
mod mss;
mod packet;
mod split;
mod vnet;

pub use checksum::internet_checksum;
pub use coalesce::{Coalescer, Stats, SLOT_LEN};
pub use error::OffloadError;
pub use fit::{fit_tcp, fragment_v4};
pub use icmp::{packet_too_big, IcmpRate, NoAnswer};
pub use mss::{clamp_mss, mss_for_mtu, Checksum, Clamp, MIN_CLAMPED_MSS};
pub use split::split;
pub use vnet::{
    VnetHdr, VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_GSO_UDP, VIRTIO_NET_HDR_GSO_UDP_L4,
};

/// The largest IP packet either side handles: the IPv4 total-length field is 16 bits, and
/// TUN's default GSO limit (no BIG TCP) keeps IPv6 super-packets within it too.
pub const MAX_IP_PACKET: usize = 65535;
