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
use isthmus_offload::{
    clamp_mss, Checksum, Clamp, Coalescer, IcmpRate, VnetHdr, SLOT_LEN,
    VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE,
};

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
/// ICMP "too big" answers per link: 10 a second, bursts of 20 (a router's pace; Linux's
/// `icmp_ratelimit` is 1 per second per destination with a burst of 50).
const ICMP_PER_SECOND: u32 = 10;
const ICMP_BURST: u32 = 20;
const IPPROTO_UDP: u8 = 17;

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
    /// Largest data message the link accepts: the tunnel MTU, rounded up to the 16 bytes that
    /// WireGuard pads to (a peer whose MTU is larger pads a full-size packet beyond ours:
    /// wireguard-go at 9000 sends a 1420-byte packet as 1424), plus WireGuard's overhead.
    max_data: usize,
    /// The TUN device's MTU: what packets are held to until the event loop tells the path MTU.
    mtu: u16,
    /// The peer's inner address: UDP to it (path-MTU probes padded to the size under test) is
    /// never held to the path MTU; the underlay decides whether it crosses.
    peer_inner: Option<IpAddr>,
    icmp_rate: IcmpRate,
    counters: Arc<Counters>,
    last_expired_retry: Instant,
    /// boringtun's "time since last handshake" at the last check, to notice new handshakes.
    last_handshake_age: Option<Duration>,
    /// The first fatal TUN error, set on the packet path and acted on once per wake-up.
    tun_failed: Option<io::Error>,
    faults: Faults,
    link: String,
    /// Since when boringtun holds packets we sent without a session ([`flush_queued`]).
    queued_since: Option<Instant>,
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
    /// The peer's address inside the tunnel (probes go to it).
    pub peer_inner: Option<IpAddr>,
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
            peer_inner,
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
            max_data: usize::from(mtu).next_multiple_of(16) + DATA_OVERHEAD,
            mtu,
            peer_inner,
            icmp_rate: IcmpRate::new(ICMP_PER_SECOND, ICMP_BURST),
            counters,
            last_expired_retry: crate::clock::now(),
            queued_since: None,
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
            let mut hdr = match VnetHdr::parse(hdr) {
                Ok(hdr) => hdr,
                Err(_) => {
                    self.counters.count_drop(DropReason::Offload);
                    continue;
                }
            };
            let (tx_mtu, rx_mtu) = (
                self.counters.limits.tx_or(self.mtu),
                self.counters.limits.rx_or(self.mtu),
            );
            // A SYN towards the peer announces what this side's host receives: what the
            // peer's direction carries. A partial checksum is completed by the split below.
            if hdr.gso_type == VIRTIO_NET_HDR_GSO_NONE {
                let csum = if hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
                    Checksum::Partial
                } else {
                    Checksum::Complete
                };
                self.clamp(packet, rx_mtu, csum);
            }
            if isthmus_offload::fit_tcp(&mut hdr, packet, tx_mtu) {
                self.counters.resegmented.fetch_add(1, Relaxed);
            }
            let (tx, fragments, answer) = (&mut bufs.tx, &mut bufs.fragments, &mut bufs.icmp);
            let mut queued = false;
            let result = isthmus_offload::split(&hdr, packet, |segment| {
                let mut send = |packet: &mut [u8]| {
                    queued |= encapsulate(
                        &mut self.tunn,
                        &self.udp,
                        &self.counters,
                        &self.allowed,
                        self.endpoint,
                        tx,
                        packet,
                    );
                };
                if segment.len() <= usize::from(tx_mtu) || to_peer_udp(segment, self.peer_inner) {
                    send(segment);
                } else if isthmus_offload::fragment_v4(segment, tx_mtu, fragments, &mut send)
                    .is_some()
                {
                    self.counters.resegmented.fetch_add(1, Relaxed);
                } else {
                    answer_too_big(
                        &self.tun,
                        &self.counters,
                        &mut self.icmp_rate,
                        answer,
                        segment,
                        tx_mtu,
                    );
                }
            });
            if result.is_err() {
                self.counters.count_drop(DropReason::Offload);
            }
            if queued && self.queued_since.is_none() {
                self.queued_since = Some(crate::clock::now());
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
        if datagram.first() == Some(&MSG_DATA) && received != Received::Nothing {
            let udp = &self.udp;
            let stale = flush_queued(
                &mut self.tunn,
                &mut self.queued_since,
                crate::clock::now(),
                scratch,
                |p| {
                    if udp.send_to(p, from).is_err() {
                        counters.count_drop(DropReason::IoError);
                    }
                },
            );
            if stale > 0 {
                tracing::debug!(link = %self.link, dropped = stale, "stale packets queued without a session dropped");
            }
        }
        match received {
            Received::Nothing => {}
            Received::FromPeer => self.roam(from),
            Received::Packet(len) => {
                self.roam(from);
                // A SYN from the peer announces what its host receives: what this direction
                // carries.
                let tx_mtu = self.counters.limits.tx_or(self.mtu);
                self.clamp(&mut to_tun.next_slot()[..len], tx_mtu, Checksum::Complete);
                self.counters.rx_packets.fetch_add(1, Relaxed);
                self.counters.rx_bytes.fetch_add(len as u64, Relaxed);
                to_tun.commit(len);
            }
        }
    }

    /// Lowers the MSS option of a TCP SYN to what a path of `mtu` carries.
    fn clamp(&self, packet: &mut [u8], mtu: u16, csum: Checksum) {
        if let Clamp::Clamped { .. } = clamp_mss(packet, mtu, csum) {
            self.counters.mss_clamped.fetch_add(1, Relaxed);
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
    let received = match tunn.decapsulate(Some(from.ip()), datagram, slot) {
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
    };
    received
}

/// How long boringtun may hold what we sent without a session and still send it once one is
/// current: a packet older than that (queued through an outage: boringtun keeps the first 256)
/// is stale, and a peer would count stale probes as replays.
pub(crate) const QUEUE_FRESH: Duration = Duration::from_secs(1);

/// After a data message made a session current: what boringtun queued while there was none.
/// As responder, our session becomes current only with the initiator's first data message
/// (usually its keepalive), and boringtun flushes its queue only on an empty decapsulate, which
/// nothing else triggers: what we sent in that window would wait for the next handshake. It
/// goes to `send` if the queue began at most [`QUEUE_FRESH`] before `now` (`queued_since`),
/// else it is dropped (counted in `dropped`).
pub(crate) fn flush_queued(
    tunn: &mut Tunn,
    queued_since: &mut Option<Instant>,
    now: Instant,
    scratch: &mut [u8],
    mut send: impl FnMut(&[u8]),
) -> usize {
    let Some(since) = queued_since.take() else {
        return 0;
    };
    let fresh = now.saturating_duration_since(since) <= QUEUE_FRESH;
    let mut dropped = 0;
    while let TunnResult::WriteToNetwork(p) = tunn.decapsulate(None, &[], scratch) {
        if fresh {
            send(p);
        } else {
            dropped += 1;
        }
    }
    dropped
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
) -> bool {
    let Some(dst) = Tunn::dst_address(packet) else {
        counters.count_drop(DropReason::Malformed);
        return false;
    };
    if !allowed.iter().any(|net| net.contains(dst)) {
        counters.count_drop(if link_local(dst) {
            DropReason::LinkLocal
        } else {
            DropReason::NoRoute
        });
        return false;
    }
    if endpoint.is_none() {
        counters.count_drop(DropReason::NoEndpoint);
        return false;
    }
    let need = packet.len() + DATA_OVERHEAD;
    if need > GSO_MAX_BYTES {
        counters.count_drop(DropReason::TooBig);
        return false;
    }
    tx.make_room(need, udp, counters, endpoint);
    let off = tx.len;
    match tunn.encapsulate(packet, &mut tx.buf[off..]) {
        TunnResult::WriteToNetwork(p) if p.first() == Some(&MSG_DATA) => {
            let n = p.len();
            counters.tx_packets.fetch_add(1, Relaxed);
            counters.tx_bytes.fetch_add(packet.len() as u64, Relaxed);
            tx.push(n, udp, counters, endpoint);
            false
        }
        TunnResult::WriteToNetwork(p) => {
            // No session yet: boringtun queued the packet and asks for a handshake.
            send_control(udp, counters, endpoint, p);
            true
        }
        TunnResult::Err(e) => {
            counters.count_drop(drop_reason(&e));
            false
        }
        // Queued while a handshake is in progress.
        _ => true,
    }
}

/// Whether `packet` is UDP to the peer's inner address (a path-MTU probe).
fn to_peer_udp(packet: &[u8], peer: Option<IpAddr>) -> bool {
    let proto = match packet.first().map(|b| b >> 4) {
        Some(4) => packet.get(9),
        Some(6) => packet.get(6),
        _ => None,
    };
    proto == Some(&IPPROTO_UDP) && peer.is_some() && Tunn::dst_address(packet) == peer
}

/// A packet larger than the path that may not be cut: dropped, and answered with ICMP
/// "fragmentation needed" / "packet too big" naming the path MTU, written to the TUN (paced by
/// `rate`). The answer comes from the packet's destination, an address the kernel routes into
/// this tunnel: one from the gateway's own address would arrive on the TUN as a martian.
fn answer_too_big(
    tun: &TunDevice,
    counters: &Counters,
    rate: &mut IcmpRate,
    buf: &mut [u8],
    packet: &[u8],
    mtu: u16,
) {
    counters.count_drop(DropReason::TooBig);
    let Some(from) = Tunn::dst_address(packet) else {
        return;
    };
    let (hdr, out) = buf.split_at_mut(VnetHdr::LEN);
    let Ok(n) = isthmus_offload::packet_too_big(packet, mtu, from, out) else {
        return;
    };
    if !rate.allow(crate::clock::now()) {
        return;
    }
    hdr.copy_from_slice(&VnetHdr::NONE.to_bytes());
    match tun.write(&buf[..VnetHdr::LEN + n]) {
        Ok(_) => {
            counters.ptb_sent.fetch_add(1, Relaxed);
        }
        Err(e) => tracing::trace!(error = %e, "writing an ICMP too-big answer to the TUN failed"),
    }
}

/// A send error's drop reason: a datagram larger than the gateway's own interface (an auto
/// link's socket never fragments) is a packet too big, not an I/O fault.
fn send_drop_reason(e: &io::Error) -> DropReason {
    if e.raw_os_error() == Some(libc::EMSGSIZE) {
        DropReason::TooBig
    } else {
        DropReason::IoError
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
        counters.count_drop(send_drop_reason(&e));
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
                    counters.count_drop(send_drop_reason(&e));
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
    /// IPv4 fragments of a packet larger than the path, one at a time.
    fragments: Vec<u8>,
    /// An ICMP answer behind its vnet header (IPv6's is at most 1280 bytes).
    icmp: Vec<u8>,
}

impl Buffers {
    fn new() -> Buffers {
        Buffers {
            tun_read: vec![0; VnetHdr::LEN + 65535],
            tx: TxBatch::new(),
            rx: RecvBatch::default(),
            to_tun: ToTun::new(),
            scratch: vec![0; 65535 + 256],
            fragments: vec![0; 65535],
            icmp: vec![0; VnetHdr::LEN + 1280],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(proto: u8, dst: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0u8; 1500];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&1500u16.to_be_bytes());
        p[9] = proto;
        p[12..16].copy_from_slice(&[10, 255, 0, 0]);
        p[16..20].copy_from_slice(&dst);
        p
    }

    #[test]
    fn only_udp_to_the_peers_inner_address_passes_unfitted() {
        let peer = Some(IpAddr::from([10, 255, 0, 1]));
        assert!(to_peer_udp(&v4(IPPROTO_UDP, [10, 255, 0, 1]), peer));
        assert!(
            !to_peer_udp(&v4(6, [10, 255, 0, 1]), peer),
            "TCP is re-segmented"
        );
        assert!(!to_peer_udp(&v4(IPPROTO_UDP, [10, 2, 0, 10]), peer));
        assert!(!to_peer_udp(&v4(IPPROTO_UDP, [10, 255, 0, 1]), None));
        assert!(!to_peer_udp(&[], peer));
        let mut v6 = vec![0u8; 1500];
        v6[0] = 0x60;
        v6[6] = IPPROTO_UDP;
        v6[24..40].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        let peer6 = Some("fd00::1".parse().unwrap());
        assert!(to_peer_udp(&v6, peer6));
    }

    /// A packet the responder sends between its handshake response and the initiator's first
    /// data message is queued by boringtun; the keepalive that confirms the session sends it,
    /// unless the queue is stale (it began more than [`QUEUE_FRESH`] ago: dropped instead).
    #[test]
    fn what_the_responder_sent_before_the_session_was_confirmed_goes_out_with_the_keepalive() {
        for stale in [false, true] {
            responder_queue(stale);
        }
    }

    fn responder_queue(stale: bool) {
        let key = |k: [u8; 32]| PublicKey::from(&StaticSecret::from(k)).to_bytes();
        let keys = |private: [u8; 32], peer: [u8; 32]| Keys {
            private,
            peer_public: key(peer),
            preshared: None,
            keepalive: None,
        };
        let (a, b) = ([0x11; 32], [0x22; 32]);
        let mut initiator = new_tunn(&keys(a, b));
        let mut responder = new_tunn(&keys(b, a));
        let (mut x, mut y, mut scratch) = (vec![0u8; 2048], vec![0u8; 2048], vec![0u8; 2048]);
        let allowed: Vec<IpNetwork> = vec!["10.255.0.0/24".parse().unwrap()];
        let counters = Counters::default();
        let from: SocketAddr = "192.0.2.2:51820".parse().unwrap();

        let TunnResult::WriteToNetwork(init) = initiator.format_handshake_initiation(&mut x, false)
        else {
            panic!("a handshake initiation");
        };
        let init = init.to_vec();
        let mut sent = Vec::new();
        let got = receive(
            &mut responder,
            &allowed,
            1452,
            &counters,
            &init,
            from,
            &mut y,
            &mut scratch,
            |p| sent.push(p.to_vec()),
        );
        assert_eq!(got, Received::FromPeer);
        assert_eq!(sent.len(), 1, "the handshake response");
        // The responder's echo request, before the session is confirmed: queued.
        let mut ping = v4(1, [10, 255, 0, 1]);
        ping[2..4].copy_from_slice(&84u16.to_be_bytes());
        ping.truncate(84);
        ping[12..16].copy_from_slice(&[10, 255, 0, 0]);
        assert!(matches!(
            responder.encapsulate(&ping, &mut y),
            TunnResult::WriteToNetwork(p) if p[0] != MSG_DATA
        ));
        let TunnResult::WriteToNetwork(keepalive) = initiator.decapsulate(None, &sent[0], &mut x)
        else {
            panic!("the initiator's keepalive");
        };
        let keepalive = keepalive.to_vec();
        sent.clear();
        let got = receive(
            &mut responder,
            &allowed,
            1452,
            &counters,
            &keepalive,
            from,
            &mut y,
            &mut scratch,
            |p| sent.push(p.to_vec()),
        );
        assert_eq!(got, Received::FromPeer);
        assert!(
            sent.is_empty(),
            "receive itself sends nothing for a keepalive"
        );
        let now = crate::clock::now();
        let mut since = Some(if stale {
            now - QUEUE_FRESH - Duration::from_millis(1)
        } else {
            now
        });
        let dropped = flush_queued(&mut responder, &mut since, now, &mut scratch, |p| {
            sent.push(p.to_vec())
        });
        assert_eq!(since, None);
        if stale {
            assert_eq!((dropped, sent.len()), (1, 0), "a stale queue is dropped");
            return;
        }
        assert_eq!(dropped, 0);
        let data: Vec<_> = sent.iter().filter(|p| p[0] == MSG_DATA).collect();
        assert_eq!(data.len(), 1, "the queued echo request went out: {sent:?}");
        match initiator.decapsulate(None, data[0], &mut x) {
            TunnResult::WriteToTunnelV4(p, _) => assert_eq!(p, &ping[..]),
            _ => panic!("the initiator decrypts the echo request"),
        }
    }

    #[test]
    fn a_datagram_larger_than_the_interface_is_too_big_not_an_io_error() {
        let e = io::Error::from_raw_os_error(libc::EMSGSIZE);
        assert_eq!(send_drop_reason(&e), DropReason::TooBig);
        let e = io::Error::from_raw_os_error(libc::EPERM);
        assert_eq!(send_drop_reason(&e), DropReason::IoError);
    }
}
