//! Per-link counters, written by the link's worker thread and read by status, `wg show` and
//! metrics. Plain relaxed atomics: the packet path never takes a lock to count.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Why a packet was dropped. The order is the order of `Counters::drops`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// A MAC or AEAD tag did not verify: forged, corrupted, or from a peer with other keys.
    BadMac,
    /// A WireGuard message for a key or session index that is not ours.
    UnknownPeer,
    /// A data message for a session we no longer (or not yet) have.
    NoSession,
    /// A replayed or too-old counter or handshake timestamp.
    Replay,
    /// Not a WireGuard message, or not a valid IP packet inside.
    Malformed,
    /// A datagram larger than the receive buffer, or a packet larger than the link carries.
    TooBig,
    /// A packet from the TUN for a destination outside the link's allowed IPs.
    NoRoute,
    /// Multicast or link-local chatter from the TUN (IPv6 router solicitations, MLD): never
    /// meant for the peer.
    LinkLocal,
    /// A decrypted packet whose source lies outside the link's allowed IPs.
    NotAllowed,
    /// No peer endpoint is known yet (hostname unresolved, peer never seen).
    NoEndpoint,
    /// A TUN super-packet that could not be segmented.
    Offload,
    /// The kernel refused to send or write it.
    IoError,
    /// Handshake rate limiting under load (a cookie was sent instead).
    UnderLoad,
}

impl DropReason {
    pub const ALL: [DropReason; 13] = [
        DropReason::BadMac,
        DropReason::UnknownPeer,
        DropReason::NoSession,
        DropReason::Replay,
        DropReason::Malformed,
        DropReason::TooBig,
        DropReason::NoRoute,
        DropReason::LinkLocal,
        DropReason::NotAllowed,
        DropReason::NoEndpoint,
        DropReason::Offload,
        DropReason::IoError,
        DropReason::UnderLoad,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::BadMac => "bad_mac",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::NoSession => "no_session",
            DropReason::Replay => "replay",
            DropReason::Malformed => "malformed",
            DropReason::TooBig => "too_big",
            DropReason::NoRoute => "no_route",
            DropReason::LinkLocal => "link_local",
            DropReason::NotAllowed => "not_allowed",
            DropReason::NoEndpoint => "no_endpoint",
            DropReason::Offload => "offload",
            DropReason::IoError => "io_error",
            DropReason::UnderLoad => "under_load",
        }
    }
}

#[derive(Default)]
pub struct Counters {
    pub tx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub rx_packets: AtomicU64,
    pub handshake_attempts: AtomicU64,
    pub handshake_failures: AtomicU64,
    /// Wall-clock time of the last completed handshake, in ns since the Unix epoch; 0 = never.
    /// For `wg show` only: ages come from `last_handshake_ms`, which a step of the wall clock
    /// does not move.
    pub last_handshake_unix_ns: AtomicU64,
    /// The last completed handshake on the monotonic clock, in ms since [`epoch`] plus 1;
    /// 0 = never.
    last_handshake_ms: AtomicU64,
    /// 1 while boringtun has given up (no handshake answered for 90 s).
    pub expired: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
    /// When the worker last went round its loop, in ms since [`epoch`]: `/healthz` tells a
    /// stuck data plane from a quiet one (the loop turns at least every tick).
    heartbeat_ms: AtomicU64,
    /// The peer's current underlay address (roaming updates it; rare).
    pub endpoint: Mutex<Option<SocketAddr>>,
    /// The path MTU the worker holds this link's packets to, set by the event loop (see
    /// [`PathLimits`]).
    pub limits: PathLimits,
    /// TCP SYNs whose MSS option was lowered, in either direction.
    pub mss_clamped: AtomicU64,
    /// Packets from the TUN larger than the path towards the peer, cut to fit it: TCP
    /// re-segmented (a connection opened over a larger path, after a failover or a shrink),
    /// IPv4 without DF fragmented.
    pub resegmented: AtomicU64,
    /// ICMP "fragmentation needed" / "packet too big" messages written back to the TUN for
    /// packets that did not fit the path.
    pub ptb_sent: AtomicU64,
}

/// The largest inner packets (IP header included) a link carries in each direction, as the
/// event loop last told the worker: the measured path MTU with `mtu = "auto"`, the configured
/// MTU otherwise. 0 means not told yet: the worker uses the link's TUN MTU.
///
/// - `tx` (towards the peer): TCP SYNs *from* the peer are clamped to it (they announce what
///   this side may send), and packets from the TUN are held to it.
/// - `rx` (from the peer): TCP SYNs *to* the peer are clamped to it.
#[derive(Default)]
pub struct PathLimits {
    tx: AtomicU16,
    rx: AtomicU16,
}

impl PathLimits {
    pub fn set(&self, tx: u16, rx: u16) {
        self.tx.store(tx, Relaxed);
        self.rx.store(rx, Relaxed);
    }

    /// `tx`, or `default` if not told yet.
    pub fn tx_or(&self, default: u16) -> u16 {
        match self.tx.load(Relaxed) {
            0 => default,
            v => v,
        }
    }

    /// `rx`, or `default` if not told yet.
    pub fn rx_or(&self, default: u16) -> u16 {
        match self.rx.load(Relaxed) {
            0 => default,
            v => v,
        }
    }
}

/// A process-wide monotonic origin for heartbeats.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(crate::clock::now)
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters")
            .field("tx_packets", &self.tx_packets.load(Relaxed))
            .field("rx_packets", &self.rx_packets.load(Relaxed))
            .finish_non_exhaustive()
    }
}

impl Counters {
    /// The worker is alive at `now`.
    pub fn beat(&self, now: Instant) {
        let ms = now.saturating_duration_since(epoch()).as_millis() as u64;
        self.heartbeat_ms.store(ms, Relaxed);
    }

    /// Time since the last [`Counters::beat`] (since the process started if none).
    pub fn since_beat(&self, now: Instant) -> Duration {
        let at = epoch() + Duration::from_millis(self.heartbeat_ms.load(Relaxed));
        now.saturating_duration_since(at)
    }

    pub fn count_drop(&self, reason: DropReason) {
        self.drops[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize].load(Relaxed)
    }

    /// A handshake completed `age` before `now` (monotonic), at `wall` on the wall clock.
    pub fn record_handshake(&self, now: Instant, age: Duration, wall: SystemTime) {
        let at = now.checked_sub(age).unwrap_or(now);
        let ms = at.saturating_duration_since(epoch()).as_millis() as u64;
        self.last_handshake_ms.store(ms + 1, Relaxed);
        if let Some(at) = wall.checked_sub(age) {
            let ns = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
            self.last_handshake_unix_ns.store(ns, Relaxed);
        }
    }

    /// How long ago the last handshake completed, on the monotonic clock (a wall clock stepped
    /// back would put it in the future, one stepped forward make it look expired).
    pub fn handshake_age(&self, now: Instant) -> Option<Duration> {
        match self.last_handshake_ms.load(Relaxed) {
            0 => None,
            ms => Some(now.saturating_duration_since(epoch() + Duration::from_millis(ms - 1))),
        }
    }

    pub fn last_handshake(&self) -> Option<SystemTime> {
        match self.last_handshake_unix_ns.load(Relaxed) {
            0 => None,
            ns => Some(UNIX_EPOCH + Duration::from_nanos(ns)),
        }
    }

    pub fn endpoint(&self) -> Option<SocketAddr> {
        *self.endpoint.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_endpoint(&self, addr: Option<SocketAddr>) {
        *self.endpoint.lock().unwrap_or_else(|e| e.into_inner()) = addr;
    }
}
