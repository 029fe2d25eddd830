//! The underlay UDP socket of a link, with batched I/O.
//!
//! Receive: `recvmmsg` fills up to [`RECV_BATCH`] buffers per syscall, and with `UDP_GRO` the
//! kernel coalesces consecutive datagrams of one flow into one buffer (the segment size comes in
//! a control message), so one syscall can bring in hundreds of WireGuard packets.
//! Send: `UDP_SEGMENT` (GSO) sends a run of equal-sized datagrams to one peer in one `sendmsg`.
//! If the kernel refuses GSO for a route (EIO), the link falls back to one `sendto` per
//! datagram for good.
//!
//! The socket is bound to the link's underlay address and, when the address's interface is
//! known, to that interface (SO_BINDTODEVICE), so that the tunnel's own packets can never be
//! routed into a tunnel, even when the peer's underlay address lies inside a remote CIDR.

use std::cell::Cell;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use socket2::{Domain, Protocol, Socket, Type};

const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;

/// Buffers per `recvmmsg`.
pub const RECV_BATCH: usize = 16;
/// Each receive buffer holds a GRO train of up to 64 KiB.
pub const RECV_BUF: usize = 65536;
/// Socket buffers: a 64 KiB train arrives in microseconds; small default buffers overflow and
/// turn into TCP retransmits inside the tunnel (seen with wireguard-go here).
const SOCKET_BUFFER: usize = 8 << 20;
/// The kernel caps a GSO send at 64 segments and one IP packet's worth of payload.
pub const GSO_MAX_SEGMENTS: usize = 64;
pub const GSO_MAX_BYTES: usize = 65535 - 8 - 40;

pub struct UdpSocket {
    socket: Socket,
    /// Cleared for good when the kernel refuses GSO.
    gso: Cell<bool>,
}

impl UdpSocket {
    /// Bind to `local`, and to `device` if given.
    pub fn bind(local: SocketAddr, device: Option<&str>) -> io::Result<UdpSocket> {
        let socket = Socket::new(
            Domain::for_address(local),
            Type::DGRAM.nonblocking().cloexec(),
            Some(Protocol::UDP),
        )?;
        if local.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        if let Some(dev) = device {
            socket.bind_device(Some(dev.as_bytes()))?;
        }
        set_buffer(&socket, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF);
        set_buffer(&socket, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF);
        // GRO is an optimisation; without it every datagram is its own buffer.
        let _ = setsockopt_int(&socket, SOL_UDP, UDP_GRO, 1);
        socket.bind(&local.into())?;
        Ok(UdpSocket {
            socket,
            gso: Cell::new(true),
        })
    }

    /// Datagrams with DF set, refused (`EMSGSIZE`) rather than fragmented when larger than the
    /// device, and not held to a path MTU learnt from ICMP ([`Pmtud::Probe`]).
    pub fn probe_path_mtu(&self) -> io::Result<()> {
        let v6 = self
            .socket
            .local_addr()?
            .as_socket()
            .is_some_and(|a| a.is_ipv6());
        set_pmtud(&self.socket, v6, Pmtud::Probe)
    }

    #[cfg(test)]
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("socket has no IP address"))
    }

    /// Send one datagram. `WouldBlock` if the socket buffer is full.
    pub fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<()> {
        self.socket.send_to(buf, &to.into()).map(|_| ())
    }

    /// Send `buf` as datagrams of `segment` bytes each (the last may be shorter) to `to`.
    pub fn send_segments(&self, buf: &[u8], segment: usize, to: SocketAddr) -> io::Result<()> {
        if buf.len() <= segment || !self.gso.get() {
            for chunk in buf.chunks(segment.max(1)) {
                self.send_to(chunk, to)?;
            }
            return Ok(());
        }
        match send_gso(&self.socket, buf, segment, to) {
            Err(e)
                if e.raw_os_error() == Some(libc::EIO)
                    || e.raw_os_error() == Some(libc::EINVAL) =>
            {
                tracing::warn!(error = %e, "UDP GSO refused by the kernel: sending datagrams one by one");
                self.gso.set(false);
                self.send_segments(buf, segment, to)
            }
            other => other,
        }
    }

    /// Receive up to [`RECV_BATCH`] buffers without blocking; returns how many were filled.
    pub fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.prepare();
        // SAFETY: batch.prepare() pointed every mmsghdr at buffers owned by `batch`, which
        // outlives the call.
        let n = unsafe {
            libc::recvmmsg(
                self.socket.as_raw_fd(),
                batch.hdrs.as_mut_ptr(),
                RECV_BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        batch.filled = n as usize;
        Ok(batch.filled)
    }
}

impl AsFd for UdpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

fn set_buffer(socket: &Socket, force: libc::c_int, normal: libc::c_int) {
    // The FORCE variants pass the sysctl cap (CAP_NET_ADMIN, which agentd has).
    if setsockopt_int(
        socket,
        libc::SOL_SOCKET,
        force,
        SOCKET_BUFFER as libc::c_int,
    )
    .is_err()
    {
        let _ = setsockopt_int(
            socket,
            libc::SOL_SOCKET,
            normal,
            SOCKET_BUFFER as libc::c_int,
        );
    }
}

/// How the kernel treats DF and the path MTU for a socket's datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pmtud {
    /// DF set and the route's learnt MTU ignored: a datagram larger than the device is
    /// refused (`EMSGSIZE`), never fragmented. For path-MTU probes, whose loss is the answer.
    Probe,
}

/// Sets the path-MTU discovery mode of `socket` (`IP_MTU_DISCOVER` or `IPV6_MTU_DISCOVER`).
pub(crate) fn set_pmtud(socket: &Socket, v6: bool, mode: Pmtud) -> io::Result<()> {
    let (level, name, value) = match (v6, mode) {
        (false, Pmtud::Probe) => (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_PROBE,
        ),
        (true, Pmtud::Probe) => (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_PROBE,
        ),
    };
    setsockopt_int(socket, level, name, value)
}

fn setsockopt_int(
    socket: &Socket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn send_gso(socket: &Socket, buf: &[u8], segment: usize, to: SocketAddr) -> io::Result<()> {
    let (mut addr, addr_len) = to_sockaddr(to);
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // Room for one cmsg carrying a u16.
    let mut control = [0u64; 4];
    // SAFETY: msghdr is plain data; every pointer set below refers to a local that outlives
    // the sendmsg call, and the cmsg fits in `control` (CMSG_SPACE(2) <= 32 bytes).
    unsafe {
        let mut msg: libc::msghdr = zeroed();
        msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = addr_len;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(size_of::<u16>() as u32) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = SOL_UDP;
        (*cmsg).cmsg_type = UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment as u16);
        if libc::sendmsg(socket.as_raw_fd(), &msg, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn to_sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data, large and aligned enough for both families.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let sin: &libc::sockaddr_in =
                unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let sin6: &libc::sockaddr_in6 =
                unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            // A v4-mapped source on a dual-stack socket is an IPv4 peer.
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddr::new(IpAddr::V4(v4), u16::from_be(sin6.sin6_port)),
                None => SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )),
            })
        }
        _ => None,
    }
}

/// Buffers and headers for one `recvmmsg`, allocated once per link.
pub struct RecvBatch {
    bufs: Vec<u8>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
    controls: Vec<[u64; 8]>,
    hdrs: Vec<libc::mmsghdr>,
    filled: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            bufs: vec![0; RECV_BATCH * RECV_BUF],
            // SAFETY: iovec, sockaddr_storage and mmsghdr are plain data; zero is valid and
            // prepare() sets every pointer before use.
            iovs: (0..RECV_BATCH).map(|_| unsafe { zeroed() }).collect(),
            addrs: (0..RECV_BATCH).map(|_| unsafe { zeroed() }).collect(),
            controls: vec![[0; 8]; RECV_BATCH],
            hdrs: (0..RECV_BATCH).map(|_| unsafe { zeroed() }).collect(),
            filled: 0,
        }
    }
}

impl RecvBatch {
    fn prepare(&mut self) {
        for i in 0..RECV_BATCH {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i * RECV_BUF..].as_mut_ptr().cast(),
                iov_len: RECV_BUF,
            };
            let hdr = &mut self.hdrs[i];
            hdr.msg_len = 0;
            hdr.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_hdr.msg_iov = &mut self.iovs[i];
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_control = self.controls[i].as_mut_ptr().cast();
            hdr.msg_hdr.msg_controllen = size_of::<[u64; 8]>();
            hdr.msg_hdr.msg_flags = 0;
        }
        self.filled = 0;
    }

    /// Buffer `i`: its bytes, the GRO segment size (every `segment` bytes is one datagram;
    /// equal to the length without GRO), the sender, and whether it was truncated.
    pub fn get_mut(&mut self, i: usize) -> (&mut [u8], usize, Option<SocketAddr>, bool) {
        let hdr = &self.hdrs[i];
        let len = (hdr.msg_len as usize).min(RECV_BUF);
        let truncated = hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        let mut segment = len;
        // SAFETY: the kernel filled msg_control with msg_controllen bytes of cmsgs.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&hdr.msg_hdr);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == SOL_UDP && (*cmsg).cmsg_type == UDP_GRO {
                    let seg = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                    if seg > 0 {
                        segment = seg as usize;
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&hdr.msg_hdr, cmsg);
            }
        }
        let from = from_sockaddr(&self.addrs[i]);
        (
            &mut self.bufs[i * RECV_BUF..i * RECV_BUF + len],
            segment.max(1),
            from,
            truncated,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0".parse().unwrap(), None).unwrap();
        let b = UdpSocket::bind("127.0.0.1:0".parse().unwrap(), None).unwrap();
        (a, b)
    }

    fn recv_all(sock: &UdpSocket, batch: &mut RecvBatch, want: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let deadline = crate::clock::now() + std::time::Duration::from_secs(5);
        while got.len() < want {
            assert!(
                crate::clock::now() < deadline,
                "received {} of {want}",
                got.len()
            );
            match sock.recv_batch(batch) {
                Ok(n) => {
                    for i in 0..n {
                        let (buf, seg, from, truncated) = batch.get_mut(i);
                        assert!(!truncated);
                        assert!(from.is_some());
                        got.extend(buf.chunks(seg).map(<[u8]>::to_vec));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        got
    }

    #[test]
    fn gso_send_arrives_as_separate_datagrams_in_order() {
        let (a, b) = pair();
        let to = b.local_addr().unwrap();
        // 10 datagrams of 1200 bytes and a short last one, each filled with its index.
        let mut buf = Vec::new();
        for i in 0..10u8 {
            buf.extend(std::iter::repeat_n(i, 1200));
        }
        buf.extend(std::iter::repeat_n(10u8, 300));
        a.send_segments(&buf, 1200, to).unwrap();
        let mut batch = RecvBatch::default();
        let got = recv_all(&b, &mut batch, 11);
        assert_eq!(got.len(), 11);
        for (i, d) in got.iter().enumerate() {
            assert!(d.iter().all(|&x| x == i as u8), "datagram {i} mixed up");
            assert_eq!(d.len(), if i == 10 { 300 } else { 1200 });
        }
    }

    #[test]
    fn sockaddr_conversion_round_trips() {
        for s in ["192.0.2.1:51820", "[2001:db8::1]:443"] {
            let addr: SocketAddr = s.parse().unwrap();
            let (storage, _) = to_sockaddr(addr);
            assert_eq!(from_sockaddr(&storage), Some(addr));
        }
    }
}
