//! The packet loop of one link: a dedicated thread that owns the link's `Tunn`, TUN device and
//! UDP socket, so the per-packet path has no locks, no channels and no allocation.
//!
//! It sleeps in `poll(2)` on three fds: the TUN (packets to encrypt), the UDP socket (datagrams
//! to decrypt) and an eventfd that the daemon rings after queueing a [`Command`]. Each wake-up
//! works in batches: up to [`TUN_READS_PER_WAKE`] TUN reads, each possibly a 64 KiB TSO
//! super-packet cut into wire packets whose ciphertexts are sent with one GSO `sendmsg`; and
//! `recvmmsg` batches whose decrypted packets are coalesced into super-packets for the TUN.
//!
//! boringtun's only clock is `update_timers`, called every [`TICK`]: it drives handshakes,
//! keepalives and rekeying, and stamps "session established". An expired `Tunn` (90 s without an
//! answered handshake) never retries on its own; the worker restarts its handshake every
//! [`EXPIRED_RETRY`] so that an idle backup link comes back when its path does.
//!
//! **Faults.** A TUN device deleted behind agentd's back leaves its fd readable forever with
//! `EBADFD` (poll says `POLLERR`): the worker would spin. The first such error on the TUN
//! (`EBADFD`, `EIO`, `ENODEV`, `ENXIO`, or an error or hang-up from poll) raises
//! [`FaultKind::TunGone`] and ends the worker with [`Exit::TunGone`]; the links adapter, told at
//! once through the `ended` channel, recreates the link. Underlay send errors are tracked by
//! [`Underlay`], once per episode.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use ipnetwork::IpNetwork;
use isthmus_offload::{Coalescer, VnetHdr, SLOT_LEN};

use super::counters::{Counters, DropReason};
use super::tun::TunDevice;
use super::udp::{RecvBatch, UdpSocket, GSO_MAX_BYTES, GSO_MAX_SEGMENTS};
use super::underlay::Underlay;
use crate::faults::{FaultKind, Faults};

/// boringtun's clock tick; its timers have 1 s granularity at best, 100 ms keeps handshake
/// stamps within 0.1 s of the truth.
pub const TICK: Duration = Duration::from_millis(100);
/// Restart an expired handshake this often (WireGuard's REKEY_TIMEOUT).
pub const EXPIRED_RETRY: Duration = Duration::from_secs(5);
/// Bound the work per wake-up so that neither direction starves the other: 8 TUN reads (up to
/// ~350 wire packets, ~0.5 ms of work) and 2 `recvmmsg` batches. With 64 reads the ACKs of the
/// other direction waited ~4 ms, and TCP (BBR) grew a standing queue out of the bunched ACKs
/// (RTT under load 4.5 ms against boringtun-cli's 1.1 ms), for no gain in throughput.
const TUN_READS_PER_WAKE: usize = 8;
const UDP_BATCHES_PER_WAKE: usize = 2;
/// WireGuard data message overhead: type, receiver, counter (16) and the AEAD tag (16).
const DATA_OVERHEAD: usize = 32;
const MSG_DATA: u8 = 4;
const MSG_COOKIE_REPLY: u8 = 3;

/// Keys and settings a `Tunn` is built from; changing any of them re-handshakes.
#[derive(Clone, PartialEq, Eq)]
pub struct Keys {
    pub private: [u8; 32],
    pub peer_public: [u8; 32],
    pub preshared: Option<[u8; 32]>,
    pub keepalive: Option<u16>,
}

/// The copies handed to boringtun are its own (x25519-dalek wipes them); these are wiped here.
impl Drop for Keys {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.private.zeroize();
        if let Some(p) = &mut self.preshared {
            p.zeroize();
        }
    }
}

/// Requests from the daemon to a link's worker.
pub enum Command {
    Stop,
    /// The peer's address (a resolved hostname, or a new configured endpoint).
    SetEndpoint(SocketAddr),
    SetKeys(Box<Keys>),
    SetAllowedIps(Vec<IpNetwork>),
}

/// Why a worker ended.
#[derive(Debug)]
pub enum Exit {
    /// Asked to ([`Command::Stop`]), or the daemon's side of the channel is gone.
    Stopped,
    /// The TUN device failed for good (deleted behind agentd's back): recreate the link.
    TunGone(io::Error),
}

/// Errors of a TUN fd whose device is gone; anything else is one packet's trouble.
fn tun_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBADFD | libc::EIO | libc::ENODEV | libc::ENXIO)
    )
}

pub struct Worker {
    tun: TunDevice,
    udp: Underlay,
    tunn: Tunn,
    allowed: Vec<IpNetwork>,
    endpoint: Option<SocketAddr>,
    /// Largest data message the link accepts: the tunnel MTU plus WireGuard's overhead.
    max_data: usize,
    counters: Arc<Counters>,
    last_expired_retry: Instant,
    /// boringtun's "time since last handshake" at the last check, to notice new handshakes.
    last_handshake_age: Option<Duration>,
    /// The first fatal TUN error, set on the packet path and acted on once per wake-up.
    tun_failed: Option<io::Error>,
    faults: Faults,
    link: String,
}

/// A wake-up handle: an eventfd the worker polls.
pub struct Waker(OwnedFd);

impl Waker {
    pub fn new() -> io::Result<Waker> {
        // SAFETY: plain syscall; the fd is owned by the returned OwnedFd.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
        Ok(Waker(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

pub fn new_tunn(keys: &Keys) -> Tunn {
    use std::hash::BuildHasher;
    // A local session index: must differ between Tunns, need not be secret.
    let index = std::collections::hash_map::RandomState::new().hash_one(keys.peer_public) as u32;
    Tunn::new(
        StaticSecret::from(keys.private),
        PublicKey::from(keys.peer_public),
        keys.preshared,
        keys.keepalive,
        index >> 8,
        None,
    )
}

/// What a worker is made of besides its keys: the link's devices and settings.
pub struct Parts {
    pub link: String,
    pub tun: TunDevice,
    pub udp: UdpSocket,
    pub allowed: Vec<IpNetwork>,
    pub endpoint: Option<SocketAddr>,
    pub mtu: u16,
    pub counters: Arc<Counters>,
    pub faults: Faults,
}

impl Worker {
    pub fn new(parts: Parts, keys: &Keys) -> Worker {
        let Parts {
            link,
            tun,
            udp,
            allowed,
            endpoint,
            mtu,
            counters,
            faults,
        } = parts;
        counters.set_endpoint(endpoint);
        Worker {
            tun,
            udp: Underlay::new(udp, faults.clone(), &link),
            tunn: new_tunn(keys),
            allowed,
            endpoint,
            max_data: usize::from(mtu) + DATA_OVERHEAD,
            counters,
            last_expired_retry: crate::clock::now(),
            last_handshake_age: None,
            tun_failed: None,
            faults,
            link,
        }
    }

    /// Run until [`Command::Stop`], the daemon's side of the channel is gone, or the TUN
    /// device is.
    pub fn run(mut self, commands: Receiver<Command>, waker: Arc<Waker>) -> Exit {
        let mut bufs = Buffers::new();
        self.initiate(&mut bufs.scratch);
        let mut next_tick = crate::clock::now() + TICK;
        loop {
            let now = crate::clock::now();
            self.counters.beat(now);
            let wait = next_tick.saturating_duration_since(now);
            let mut fds = [
                pollfd(self.tun.as_fd().as_raw_fd()),
                pollfd(self.udp.socket().as_fd().as_raw_fd()),
                pollfd(waker.0.as_raw_fd()),
            ];
            // SAFETY: fds is a live array of 3 pollfds.
            let rc =
                unsafe { libc::poll(fds.as_mut_ptr(), 3, wait.as_millis() as libc::c_int + 1) };
            if rc < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                tracing::error!(error = %io::Error::last_os_error(), "poll failed in link worker");
                std::thread::sleep(TICK);
            }
            if fds[2].revents != 0 {
                waker.drain();
                loop {
                    match commands.try_recv() {
                        Ok(Command::Stop) | Err(TryRecvError::Disconnected) => {
                            return Exit::Stopped
                        }
                        Ok(cmd) => self.handle(cmd, &mut bufs.scratch),
                        Err(TryRecvError::Empty) => break,
                    }
                }
            }
            if fds[1].revents != 0 {
                self.decrypt_from_network(&mut bufs);
            }
            if fds[0].revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                // A read says why (EBADFD for a deleted device).
                if let Err(e) = self.tun.read(&mut bufs.tun_read) {
                    if e.kind() != io::ErrorKind::WouldBlock {
                        self.tun_failed.get_or_insert(e);
                    }
                }
                if self.tun_failed.is_none() {
                    self.tun_failed = Some(io::Error::other(format!(
                        "poll reports {:#x} on the TUN device",
                        fds[0].revents
                    )));
                }
            } else if fds[0].revents != 0 {
                self.encrypt_from_tun(&mut bufs);
            }
            if let Some(e) = self.tun_failed.take() {
                self.faults.raise(FaultKind::TunGone, &self.link, &e);
                return Exit::TunGone(e);
            }
            if crate::clock::now() >= next_tick {
                self.tick(&mut bufs.scratch);
                next_tick = crate::clock::now() + TICK;
            }
        }
    }

    fn handle(&mut self, cmd: Command, scratch: &mut [u8]) {
        match cmd {
            Command::Stop => {}
            Command::SetEndpoint(addr) => {
                if self.endpoint != Some(addr) {
                    self.endpoint = Some(addr);
                    self.counters.set_endpoint(Some(addr));
                    self.initiate(scratch);
                }
            }
            Command::SetKeys(keys) => {
                self.tunn = new_tunn(&keys);
                self.last_handshake_age = None;
                self.initiate(scratch);
            }
            Command::SetAllowedIps(allowed) => self.allowed = allowed,
        }
    }

    /// Start a handshake now rather than on the first packet, so a link is up before traffic
    /// needs it.
    fn initiate(&mut self, scratch: &mut [u8]) {
        if let TunnResult::WriteToNetwork(p) = self.tunn.format_handshake_initiation(scratch, false)
        {
            send_control(&self.udp, &self.counters, self.endpoint, p);
        }
    }

    fn tick(&mut self, scratch: &mut [u8]) {
        match self.tunn.update_timers(scratch) {
            TunnResult::WriteToNetwork(p) => {
                send_control(&self.udp, &self.counters, self.endpoint, p)
            }
            TunnResult::Err(WireGuardError::ConnectionExpired) => {
                if self.counters.expired.swap(1, Relaxed) == 0 {
                    self.counters.handshake_failures.fetch_add(1, Relaxed);
                    tracing::warn!(
                        interface = self.tun.name(),
                        "no handshake answered for 90 s; retrying every 5 s"
                    );
                }
                if self.last_expired_retry.elapsed() >= EXPIRED_RETRY {
                    self.last_expired_retry = crate::clock::now();
                    self.initiate(scratch);
                }
            }
            _ => {}
        }
        // Record the time of a new handshake: its age shrank, or it is the first.
        let (age, ..) = self.tunn.stats();
        if let Some(age) = age {
            let new = match self.last_handshake_age {
                None => true,
                Some(prev) => age < prev,
            };
            if new {
                self.counters
                    .record_handshake(crate::clock::now(), age, SystemTime::now());
                self.counters.expired.store(0, Relaxed);
            }
        }
        self.last_handshake_age = age;
    }

    /// TUN → encrypt → UDP.
    fn encrypt_from_tun(&mut self, bufs: &mut Buffers) {
        for _ in 0..TUN_READS_PER_WAKE {
            let n = match self.tun.read(&mut bufs.tun_read) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    if tun_gone(&e) {
                        self.tun_failed.get_or_insert(e);
                    } else {
                        tracing::debug!(error = %e, "TUN read failed");
                    }
                    break;
                }
            };
            if n < VnetHdr::LEN {
                self.counters.count_drop(DropReason::Malformed);
                continue;
            }
            let (hdr, packet) = bufs.tun_read[..n].split_at_mut(VnetHdr::LEN);
            let hdr = match VnetHdr::parse(hdr) {
                Ok(hdr) => hdr,
                Err(_) => {
                    self.counters.count_drop(DropReason::Offload);
                    continue;
                }
            };
            let tx = &mut bufs.tx;
            let result = isthmus_offload::split(&hdr, packet, |segment| {
                encapsulate(
                    &mut self.tunn,
                    &self.udp,
                    &self.counters,
                    &self.allowed,
                    self.endpoint,
                    tx,
                    segment,
                )
            });
            if result.is_err() {
                self.counters.count_drop(DropReason::Offload);
            }
        }
        bufs.tx.flush(&self.udp, &self.counters, self.endpoint);
    }

    /// UDP → decrypt → TUN.
    fn decrypt_from_network(&mut self, bufs: &mut Buffers) {
        for _ in 0..UDP_BATCHES_PER_WAKE {
            let filled = match self.udp.socket().recv_batch(&mut bufs.rx) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!(error = %e, "UDP receive failed");
                    break;
                }
            };
            if filled == 0 {
                break;
            }
            for i in 0..filled {
                let (buf, segment, from, truncated) = bufs.rx.get_mut(i);
                let Some(from) = from else { continue };
                if truncated {
                    self.counters.count_drop(DropReason::TooBig);
                    continue;
                }
                for datagram in buf.chunks(segment) {
                    if bufs.to_tun.is_full() {
                        bufs.to_tun
                            .flush(&self.tun, &self.counters, &mut self.tun_failed);
                    }
                    self.decapsulate(datagram, from, &mut bufs.to_tun, &mut bufs.scratch);
                }
            }
            bufs.to_tun
                .flush(&self.tun, &self.counters, &mut self.tun_failed);
            if filled < super::udp::RECV_BATCH {
                break;
            }
        }
    }

    fn decapsulate(
        &mut self,
        datagram: &[u8],
        from: SocketAddr,
        to_tun: &mut ToTun,
        scratch: &mut [u8],
    ) {
        let slot = to_tun.next_slot();
        let (udp, counters) = (&self.udp, &self.counters);
        let received = receive(
            &mut self.tunn,
            &self.allowed,
            self.max_data,
            counters,
            datagram,
            from,
            slot,
            scratch,
            |p| {
                if udp.send_to(p, from).is_err() {
                    counters.count_drop(DropReason::IoError);
                }
            },
        );
        match received {
            Received::Nothing => {}
            Received::FromPeer => self.roam(from),
            Received::Packet(len) => {
                self.roam(from);
                self.counters.rx_packets.fetch_add(1, Relaxed);
                self.counters.rx_bytes.fetch_add(len as u64, Relaxed);
                to_tun.commit(len);
            }
        }
    }

    fn roam(&mut self, from: SocketAddr) {
        if self.endpoint != Some(from) {
            tracing::info!(interface = self.tun.name(), old = ?self.endpoint, new = %from, "peer endpoint changed");
            self.endpoint = Some(from);
            self.counters.set_endpoint(Some(from));
        }
    }
}

/// What a datagram from the network turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Received {
    /// Dropped (and counted), or a cookie reply: nothing more to do.
    Nothing,
    /// Authenticated as the peer's, without a packet for the TUN (a handshake message or a
    /// keepalive): the peer's address may be followed.
    FromPeer,
    /// A packet from an allowed source, decrypted into the first `len` bytes of the slot.
    Packet(usize),
}

/// One datagram from `from`, decrypted into `slot` (sans-IO: answers to a handshake go to
/// `send`, in order; drops are counted in `counters`). The caller follows the peer's address and
/// keeps the packet as the result says.
#[allow(clippy::too_many_arguments)]
pub(crate) fn receive(
    tunn: &mut Tunn,
    allowed: &[IpNetwork],
    max_data: usize,
    counters: &Counters,
    datagram: &[u8],
    from: SocketAddr,
    slot: &mut [u8],
    scratch: &mut [u8],
    mut send: impl FnMut(&[u8]),
) -> Received {
    let kind = datagram.first().copied().unwrap_or(0);
    // Larger than the peer may send over this MTU: refuse before spending a decryption.
    if kind == MSG_DATA && datagram.len() > max_data {
        counters.count_drop(DropReason::TooBig);
        return Received::Nothing;
    }
    match tunn.decapsulate(Some(from.ip()), datagram, slot) {
        TunnResult::WriteToNetwork(p) => {
            // A handshake response (or the keepalive that completes our own handshake)
            // proves the datagram came from our peer: follow its address. A cookie reply
            // does not: boringtun sends it under load for any initiation with a valid MAC1,
            // which anyone who knows our public key can forge.
            let from_peer = p.first() != Some(&MSG_COOKIE_REPLY);
            send(p);
            // Packets queued while the handshake ran go out now.
            while let TunnResult::WriteToNetwork(p) = tunn.decapsulate(None, &[], scratch) {
                send(p);
            }
            if from_peer {
                Received::FromPeer
            } else {
                Received::Nothing
            }
        }
        TunnResult::WriteToTunnelV4(p, src) => accept(allowed, counters, IpAddr::V4(src), p.len()),
        TunnResult::WriteToTunnelV6(p, src) => accept(allowed, counters, IpAddr::V6(src), p.len()),
        TunnResult::Done => {
            // A keepalive (or a cookie): authenticated too.
            if kind == MSG_DATA {
                Received::FromPeer
            } else {
                Received::Nothing
            }
        }
        TunnResult::Err(e) => {
            if (1..=3).contains(&kind) {
                counters.handshake_failures.fetch_add(1, Relaxed);
            }
            counters.count_drop(drop_reason(&e));
            tracing::trace!(error = ?e, %from, "datagram dropped");
            Received::Nothing
        }
    }
}

/// A decrypted packet from `src` is kept only if it holds at least its IP header and `src` is
/// one of the peer's allowed IPs. boringtun cuts a packet to the length its header states, so
/// a peer that states less than the header (an IPv4 total length of 0) would hand the TUN a
/// stub that the kernel refuses, counted as received and as an I/O error (found by fuzzing).
fn accept(allowed: &[IpNetwork], counters: &Counters, src: IpAddr, len: usize) -> Received {
    let header = if src.is_ipv4() { 20 } else { 40 };
    if len < header {
        counters.count_drop(DropReason::Malformed);
        return Received::Nothing;
    }
    if !allowed.iter().any(|net| net.contains(src)) {
        counters.count_drop(DropReason::NotAllowed);
        return Received::Nothing;
    }
    Received::Packet(len)
}

/// Encrypt one wire-sized packet into the GSO batch (or send a handshake it triggered).
fn encapsulate(
    tunn: &mut Tunn,
    udp: &Underlay,
    counters: &Counters,
    allowed: &[IpNetwork],
    endpoint: Option<SocketAddr>,
    tx: &mut TxBatch,
    packet: &mut [u8],
) {
    let Some(dst) = Tunn::dst_address(packet) else {
        counters.count_drop(DropReason::Malformed);
        return;
    };
    if !allowed.iter().any(|net| net.contains(dst)) {
        counters.count_drop(if link_local(dst) {
            DropReason::LinkLocal
        } else {
            DropReason::NoRoute
        });
        return;
    }
    if endpoint.is_none() {
        counters.count_drop(DropReason::NoEndpoint);
        return;
    }
    let need = packet.len() + DATA_OVERHEAD;
    if need > GSO_MAX_BYTES {
        counters.count_drop(DropReason::TooBig);
        return;
    }
    tx.make_room(need, udp, counters, endpoint);
    let off = tx.len;
    match tunn.encapsulate(packet, &mut tx.buf[off..]) {
        TunnResult::WriteToNetwork(p) if p.first() == Some(&MSG_DATA) => {
            let n = p.len();
            counters.tx_packets.fetch_add(1, Relaxed);
            counters.tx_bytes.fetch_add(packet.len() as u64, Relaxed);
            tx.push(n, udp, counters, endpoint);
        }
        TunnResult::WriteToNetwork(p) => {
            // No session yet: boringtun queued the packet and asks for a handshake.
            send_control(udp, counters, endpoint, p);
        }
        TunnResult::Err(e) => counters.count_drop(drop_reason(&e)),
        _ => {}
    }
}

/// Multicast and link-local destinations: the kernel's own chatter on a new interface.
fn link_local(dst: IpAddr) -> bool {
    match dst {
        IpAddr::V4(a) => a.is_multicast() || a.is_link_local() || a.is_broadcast(),
        IpAddr::V6(a) => a.is_multicast() || a.is_unicast_link_local(),
    }
}

fn send_control(udp: &Underlay, counters: &Counters, endpoint: Option<SocketAddr>, p: &[u8]) {
    let Some(to) = endpoint else {
        counters.count_drop(DropReason::NoEndpoint);
        return;
    };
    if p.first() == Some(&1) {
        counters.handshake_attempts.fetch_add(1, Relaxed);
    }
    if let Err(e) = udp.send_to(p, to) {
        tracing::debug!(error = %e, %to, "sending a handshake or keepalive failed");
        counters.count_drop(DropReason::IoError);
    }
}

fn drop_reason(e: &WireGuardError) -> DropReason {
    match e {
        WireGuardError::InvalidMac | WireGuardError::InvalidAeadTag => DropReason::BadMac,
        WireGuardError::WrongKey | WireGuardError::WrongIndex => DropReason::UnknownPeer,
        WireGuardError::NoCurrentSession => DropReason::NoSession,
        WireGuardError::DuplicateCounter
        | WireGuardError::InvalidCounter
        | WireGuardError::WrongTai64nTimestamp => DropReason::Replay,
        WireGuardError::DestinationBufferTooSmall => DropReason::TooBig,
        WireGuardError::UnderLoad => DropReason::UnderLoad,
        _ => DropReason::Malformed,
    }
}

fn pollfd(fd: libc::c_int) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Ciphertexts waiting to leave as one GSO send: equal-sized datagrams, the last may be shorter.
struct TxBatch {
    buf: Vec<u8>,
    len: usize,
    segment: usize,
    count: usize,
    /// A shorter datagram closed the run.
    closed: bool,
}

impl TxBatch {
    fn new() -> TxBatch {
        TxBatch {
            // Room for a full GSO send plus boringtun's minimum output buffer (148 bytes).
            buf: vec![0; GSO_MAX_BYTES + 256],
            len: 0,
            segment: 0,
            count: 0,
            closed: false,
        }
    }

    fn make_room(
        &mut self,
        need: usize,
        udp: &Underlay,
        counters: &Counters,
        to: Option<SocketAddr>,
    ) {
        if self.closed || self.count >= GSO_MAX_SEGMENTS || self.len + need > GSO_MAX_BYTES {
            self.flush(udp, counters, to);
        }
    }

    /// Account for `n` bytes just written at `len`.
    fn push(&mut self, n: usize, udp: &Underlay, counters: &Counters, to: Option<SocketAddr>) {
        if self.count > 0 && n > self.segment {
            // Longer than the run: send the run, then start a new one with this datagram.
            let start = self.len;
            self.flush(udp, counters, to);
            self.buf.copy_within(start..start + n, 0);
        }
        if self.count == 0 {
            self.segment = n;
        }
        self.len += n;
        self.count += 1;
        if n < self.segment {
            self.closed = true;
        }
    }

    fn flush(&mut self, udp: &Underlay, counters: &Counters, to: Option<SocketAddr>) {
        if self.count > 0 {
            if let Some(to) = to {
                if let Err(e) = udp.send_segments(&self.buf[..self.len], self.segment, to) {
                    tracing::debug!(error = %e, "sending datagrams failed");
                    counters.count_drop(DropReason::IoError);
                }
            }
        }
        self.reset();
    }

    fn reset(&mut self) {
        self.len = 0;
        self.count = 0;
        self.segment = 0;
        self.closed = false;
    }
}

/// Decrypted packets waiting to be written to the TUN, coalesced into super-packets.
///
/// Each packet gets a slot big enough to grow into a 64 KiB super-packet (the coalescer appends
/// following segments to the first of a flow in place). The arena is allocated zeroed, so the
/// kernel maps pages only as packets touch them: RSS grows with the traffic, not the arena.
pub(crate) struct ToTun {
    arena: Vec<u8>,
    lens: Vec<usize>,
    coalescer: Coalescer,
}

/// Packets per TUN flush: enough for a 64 KiB GRO train several times over.
const TO_TUN_SLOTS: usize = 128;

impl ToTun {
    pub(crate) fn new() -> ToTun {
        ToTun {
            arena: vec![0; TO_TUN_SLOTS * SLOT_LEN],
            lens: Vec::with_capacity(TO_TUN_SLOTS),
            coalescer: Coalescer::new(TO_TUN_SLOTS, SLOT_LEN),
        }
    }

    pub(crate) fn is_full(&self) -> bool {
        self.lens.len() == TO_TUN_SLOTS
    }

    /// Where the next packet is decrypted to (after the header room).
    pub(crate) fn next_slot(&mut self) -> &mut [u8] {
        let start = self.lens.len() * SLOT_LEN + VnetHdr::LEN;
        &mut self.arena[start..start + SLOT_LEN - VnetHdr::LEN]
    }

    /// Keep the packet just decrypted into the next slot.
    pub(crate) fn commit(&mut self, len: usize) {
        self.lens.push(len);
    }

    /// Write the packets out; the first error that says the device is gone goes to `failed`.
    fn flush(&mut self, tun: &TunDevice, counters: &Counters, failed: &mut Option<io::Error>) {
        self.flush_to(counters, |write| {
            if let Err(e) = tun.write(write) {
                tracing::trace!(error = %e, "TUN write failed");
                counters.count_drop(DropReason::IoError);
                if failed.is_none() && tun_gone(&e) {
                    *failed = Some(e);
                }
            }
        });
    }

    /// Coalesce the packets kept so far and hand each TUN write (header and packet) to `write`.
    pub(crate) fn flush_to(&mut self, counters: &Counters, write: impl FnMut(&[u8])) {
        if self.lens.is_empty() {
            return;
        }
        let result = self.coalescer.coalesce(&mut self.arena, &self.lens, write);
        if result.is_err() {
            counters.count_drop(DropReason::Offload);
        }
        self.lens.clear();
    }
}

/// Buffers a worker reuses for its whole life.
struct Buffers {
    tun_read: Vec<u8>,
    tx: TxBatch,
    rx: RecvBatch,
    to_tun: ToTun,
    scratch: Vec<u8>,
}

impl Buffers {
    fn new() -> Buffers {
        Buffers {
            tun_read: vec![0; VnetHdr::LEN + 65535],
            tx: TxBatch::new(),
            rx: RecvBatch::default(),
            to_tun: ToTun::new(),
            scratch: vec![0; 65535 + 256],
        }
    }
}
