//! ICMP echo checks: one echo request, passed by its own reply.
//!
//! The echo goes out over an unprivileged datagram socket (`SOCK_DGRAM`/`IPPROTO_ICMP`) when
//! `net.ipv4.ping_group_range` allows it, and over a raw socket (`CAP_NET_RAW`) otherwise. The
//! socket is connected to the peer, so that it receives only from the peer and a hard ICMP error
//! comes back as a socket error (`unreachable`). Each request carries a magic and a nonce in its
//! payload, and only a reply with the same identifier (raw sockets; the kernel matches it on
//! datagram ones), sequence and payload passes: a stray or late reply is ignored.

use std::io::{self, Read as _};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use isthmus_offload::internet_checksum;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tracing::trace;

use super::{io_reason, Origin, Reason};

/// Which socket an echo goes out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IcmpSocket {
    /// `SOCK_DGRAM`/`IPPROTO_ICMP`: no privilege, allowed for the groups in
    /// `net.ipv4.ping_group_range`; the kernel picks the identifier and only hands us our replies.
    Datagram,
    /// `SOCK_RAW`: needs `CAP_NET_RAW`; sees every echo reply from the peer, so we match ours.
    Raw,
}

/// Marks our echo payloads; the nonce after it makes each request's payload unique.
const ECHO_MAGIC: &[u8; 8] = b"isthmus\0";
const ECHO_LEN: usize = 8 + 16;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

static ECHO_NONCE: AtomicU64 = AtomicU64::new(1);

/// Sends one echo request to `peer` and waits (unbounded: the caller's timeout bounds it) for its
/// reply. `kinds`: the sockets to try, in order. Returns the socket kind that was used.
pub(super) async fn ping(
    peer: IpAddr,
    from: Origin<'_>,
    kinds: &[IcmpSocket],
) -> Result<IcmpSocket, Reason> {
    let (socket, kind) = open_icmp(peer, from, kinds)?;
    // SAFETY: the `Socket` owns its fd, which stays open and the same until the `AsyncFd` (which
    // owns the `Socket`) is dropped.
    let socket = unsafe { AsyncFd::register(socket) }.map_err(|e| {
        trace!(error = %e, "cannot register the icmp socket");
        Reason::Io
    })?;
    let v6 = peer.is_ipv6();
    let nonce = ECHO_NONCE.fetch_add(1, Ordering::Relaxed);
    // Datagram sockets overwrite the identifier with their own; raw ones send ours.
    let ident = std::process::id() as u16;
    let seq = nonce as u16;
    let request = echo_request(v6, ident, seq, nonce);
    socket
        .async_io(Interest::WRITABLE, |s| s.send(&request))
        .await
        .map_err(|e| {
            trace!(%peer, error = %e, "icmp echo send failed");
            io_reason(&e)
        })?;
    let want_ident = (kind == IcmpSocket::Raw).then_some(ident);
    let mut buf = [0u8; 2048];
    loop {
        let n = socket
            .async_io(Interest::READABLE, |mut s| s.read(&mut buf))
            .await
            .map_err(|e| {
                trace!(%peer, error = %e, "icmp echo failed");
                io_reason(&e)
            })?;
        let packet = buf.get(..n).unwrap_or_default();
        // Raw IPv4 sockets deliver the IP header too; ICMPv6 and datagram sockets do not.
        let icmp = if kind == IcmpSocket::Raw && !v6 {
            strip_ipv4_header(packet)
        } else {
            Some(packet)
        };
        if icmp.is_some_and(|icmp| is_our_reply(icmp, v6, want_ident, seq, nonce)) {
            return Ok(kind);
        }
    }
}

/// An echo socket kept open for a stream of requests (the dense probe stream of a drill):
/// opened and bound like a check's, each request carrying the stream's own nonce.
pub(crate) struct EchoSocket {
    fd: AsyncFd<Socket>,
    kind: IcmpSocket,
    v6: bool,
    ident: u16,
}

impl EchoSocket {
    /// A datagram socket where allowed, else a raw one; bound to `source` and `device`,
    /// connected to `peer`.
    pub(crate) fn open(
        peer: IpAddr,
        source: Option<IpAddr>,
        device: Option<&str>,
    ) -> io::Result<EchoSocket> {
        let from = Origin { source, device };
        let (socket, kind) = open_icmp(peer, from, &[IcmpSocket::Datagram, IcmpSocket::Raw])
            .map_err(|_| io::Error::other("cannot open an icmp socket"))?;
        // SAFETY: as in `ping`: the `AsyncFd` owns the `Socket` and its fd.
        let fd = unsafe { AsyncFd::register(socket) }?;
        Ok(EchoSocket {
            fd,
            kind,
            v6: peer.is_ipv6(),
            ident: std::process::id() as u16,
        })
    }

    /// Send request `seq` with `nonce` in its payload.
    pub(crate) async fn send(&self, seq: u16, nonce: u64) -> io::Result<()> {
        let request = echo_request(self.v6, self.ident, seq, nonce);
        self.fd
            .async_io(Interest::WRITABLE, |s| s.send(&request))
            .await
            .map(|_| ())
    }

    /// The next reply to one of our requests: its nonce (other datagrams are skipped).
    pub(crate) async fn recv(&self) -> io::Result<u64> {
        let mut buf = [0u8; 2048];
        let want_ident = (self.kind == IcmpSocket::Raw).then_some(self.ident);
        loop {
            let n = self
                .fd
                .async_io(Interest::READABLE, |mut s| s.read(&mut buf))
                .await?;
            let packet = buf.get(..n).unwrap_or_default();
            let icmp = if self.kind == IcmpSocket::Raw && !self.v6 {
                strip_ipv4_header(packet)
            } else {
                Some(packet)
            };
            let Some(icmp) = icmp else { continue };
            let nonce = icmp
                .get(16..24)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes);
            let Some(nonce) = nonce else { continue };
            let seq = icmp.get(6..8).map(|b| u16::from_be_bytes([b[0], b[1]]));
            if seq.is_some_and(|seq| is_our_reply(icmp, self.v6, want_ident, seq, nonce)) {
                return Ok(nonce);
            }
        }
    }
}

fn open_icmp(
    peer: IpAddr,
    from: Origin<'_>,
    kinds: &[IcmpSocket],
) -> Result<(Socket, IcmpSocket), Reason> {
    let (domain, protocol) = if peer.is_ipv4() {
        (Domain::IPV4, Protocol::ICMPV4)
    } else {
        (Domain::IPV6, Protocol::ICMPV6)
    };
    for &kind in kinds {
        let ty = match kind {
            IcmpSocket::Datagram => Type::DGRAM,
            IcmpSocket::Raw => Type::RAW,
        };
        match Socket::new(domain, ty, Some(protocol)) {
            Ok(socket) => {
                prepare_icmp(&socket, peer, from).map_err(|e| {
                    trace!(%peer, error = %e, "icmp socket set-up failed");
                    io_reason(&e)
                })?;
                return Ok((socket, kind));
            }
            Err(e) => trace!(?kind, error = %e, "cannot open an icmp socket"),
        }
    }
    Err(Reason::Io)
}

/// Binds the source and connects to the peer: connected, the socket only receives from the peer,
/// and hard ICMP errors (unreachable) come back as socket errors.
fn prepare_icmp(socket: &Socket, peer: IpAddr, from: Origin<'_>) -> io::Result<()> {
    socket.set_nonblocking(true)?;
    if let Some(device) = from.device {
        socket.bind_device(Some(device.as_bytes()))?;
    }
    if let Some(ip) = from.source {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    socket.connect(&SocketAddr::new(peer, 0).into())
}

fn echo_request(v6: bool, ident: u16, seq: u16, nonce: u64) -> [u8; ECHO_LEN] {
    let mut packet = [0u8; ECHO_LEN];
    packet[0] = if v6 {
        ICMPV6_ECHO_REQUEST
    } else {
        ICMP_ECHO_REQUEST
    };
    packet[4..6].copy_from_slice(&ident.to_be_bytes());
    packet[6..8].copy_from_slice(&seq.to_be_bytes());
    packet[8..].copy_from_slice(&echo_payload(nonce));
    // The kernel fills in the ICMPv6 checksum (it covers a pseudo-header we do not know) and that
    // of datagram sockets; raw ICMPv4 needs ours.
    if !v6 {
        let sum = internet_checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    packet
}

fn echo_payload(nonce: u64) -> [u8; 16] {
    let mut payload = [0u8; 16];
    payload[..8].copy_from_slice(ECHO_MAGIC);
    payload[8..].copy_from_slice(&nonce.to_be_bytes());
    payload
}

/// `ident`: `None` when the kernel matched the identifier already (datagram sockets).
fn is_our_reply(icmp: &[u8], v6: bool, ident: Option<u16>, seq: u16, nonce: u64) -> bool {
    let reply = if v6 {
        ICMPV6_ECHO_REPLY
    } else {
        ICMP_ECHO_REPLY
    };
    match icmp {
        [ty, 0, _, _, i0, i1, s0, s1, payload @ ..] => {
            *ty == reply
                && ident.is_none_or(|id| id.to_be_bytes() == [*i0, *i1])
                && seq.to_be_bytes() == [*s0, *s1]
                && payload.starts_with(&echo_payload(nonce))
        }
        _ => false,
    }
}

fn strip_ipv4_header(packet: &[u8]) -> Option<&[u8]> {
    let ihl = usize::from(packet.first()? & 0x0f) * 4;
    if ihl < 20 {
        return None;
    }
    packet.get(ihl..)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::*;
    use super::*;

    /// The sockets that echoes to 127.0.0.1 and ::1 went out on, in a namespace whose
    /// `ping_group_range` is `range`; `None` when not root (`test` is then reported skipped).
    fn sockets_used(
        test: &str,
        range: &str,
    ) -> Option<(Result<IcmpSocket, Reason>, Result<IcmpSocket, Reason>)> {
        let kinds = [IcmpSocket::Datagram, IcmpSocket::Raw];
        in_own_netns(test, &[("ipv4/ping_group_range", range)], || async {
            (
                ping("127.0.0.1".parse().unwrap(), Origin::default(), &kinds).await,
                ping("::1".parse().unwrap(), Origin::default(), &kinds).await,
            )
        })
    }

    #[test]
    fn icmp_uses_a_datagram_socket_where_ping_group_range_allows_it() {
        let test = "icmp_uses_a_datagram_socket_where_ping_group_range_allows_it";
        if let Some(used) = sockets_used(test, "0 2147483647") {
            assert_eq!(used, (Ok(IcmpSocket::Datagram), Ok(IcmpSocket::Datagram)));
        }
    }

    #[test]
    fn icmp_falls_back_to_a_raw_socket_where_datagram_ones_are_not_allowed() {
        let test = "icmp_falls_back_to_a_raw_socket_where_datagram_ones_are_not_allowed";
        if let Some(used) = sockets_used(test, "1 0") {
            assert_eq!(used, (Ok(IcmpSocket::Raw), Ok(IcmpSocket::Raw)));
        }
    }

    #[test]
    fn echo_requests_carry_a_valid_checksum_and_match_only_their_reply() {
        let request = echo_request(false, 0x1234, 7, 99);
        assert_eq!(internet_checksum(&request), 0);
        let mut reply = request;
        reply[0] = ICMP_ECHO_REPLY;
        assert!(is_our_reply(&reply, false, Some(0x1234), 7, 99));
        assert!(is_our_reply(&reply, false, None, 7, 99));
        assert!(!is_our_reply(&reply, false, Some(0x1235), 7, 99));
        assert!(!is_our_reply(&reply, false, None, 8, 99));
        assert!(!is_our_reply(&reply, false, None, 7, 100));
        assert!(!is_our_reply(&request, false, None, 7, 99));
        assert!(!is_our_reply(&reply[..10], false, None, 7, 99));
        assert_eq!(strip_ipv4_header(&[0x45; 19]), None);
        assert_eq!(strip_ipv4_header(&[0x44; 30]), None);
    }
}
