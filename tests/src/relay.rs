//! A userspace UDP relay that delays and drops datagrams: the test bed's stand-in for netem,
//! which these machines do not have. It can also drop every datagram above a size, silently:
//! a path that shrank with ICMP filtered ([`Relay::set_max_datagram`]). An nftables length
//! rule cannot do that here: it sees a GSO send as one packet of up to 64 KiB.
//!
//! A relay has two legs, each a UDP socket facing one end: whatever arrives on leg A's socket is
//! sent from leg B's socket to B's peer, and the other way round. Each gateway therefore talks
//! to an address of the relay and sees the relay as its peer, which matters because WireGuard
//! roams: it answers wherever the last authenticated datagram came from, so a relay that
//! forwarded from one shared socket would have one gateway's packets come back to itself.
//!
//! On a [`TwoClouds`] path ([`TwoClouds::relay`]) the two sockets live in the AWS gateway's
//! namespace, on two extra addresses of the path's /24 (`.3` facing the AWS gateway, `.4`
//! facing the OCI gateway) put on the AWS end of the path's veth:
//!
//! ```text
//!  aws agentd 192.0.2.1 ──(lo)── relay 192.0.2.3 │ relay 192.0.2.4 ══ veth ══ 192.0.2.2 oci agentd
//! ```
//!
//! No third namespace and no proxy ARP: the veth pair and the interface names stay as they
//! are, and every relayed datagram still crosses the AWS gateway's underlay interface once
//! (the leg between the relay and the OCI gateway), so the nftables cuts of
//! [`TwoClouds::cut_interconnect`] cut a relayed path the same way: the output rule drops what
//! the relay sends towards the OCI gateway (AWS → OCI), the input rule what the OCI gateway
//! sends to the relay (OCI → AWS). The leg between the AWS gateway and the relay is loopback
//! and is never cut.
//!
//! Each direction runs as two tasks on one current-thread tokio runtime on a thread of its own:
//! the receiving task decides loss at once (independently per datagram) and queues the
//! datagram with its due time, `max(now + delay, due time of the one before)`, so that order
//! within a direction holds even when the delay shrinks; the sending task sleeps until the
//! head of the queue is due (tokio's timer, millisecond resolution: no spinning). A queue holds
//! at most [`QUEUE`] datagrams; beyond that a datagram is dropped, as a router's full queue
//! would (counted as dropped). Datagrams whose send fails (a path cut by nftables) are counted
//! neither as forwarded nor as dropped. Dropping the [`Relay`] stops the runtime, joins its
//! thread and closes both sockets.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::topology::{TwoClouds, PATHS};
use crate::Netns;

/// Datagrams queued per direction before the relay drops (a router's queue; at 10 ms of delay
/// this holds about 800 Mbit/s of full-size datagrams).
pub const QUEUE: usize = 8192;

/// Largest datagram the relay forwards (the largest UDP payload).
const MAX_DATAGRAM: usize = 65_535;

/// One end of the relay: the socket address it binds, and the peer it forwards to.
#[derive(Debug, Clone, Copy)]
pub struct Leg {
    /// Where the relay listens for this end's datagrams (this end's peer endpoint).
    pub bind: SocketAddr,
    /// Where datagrams from the other leg go.
    pub peer: SocketAddr,
}

/// A running relay. [`Relay::set`] changes delay and loss at once; drop stops it.
pub struct Relay {
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    legs: [Leg; 2],
}

/// The settings and counters both directions share.
#[derive(Default)]
struct Shared {
    one_way_ns: AtomicU64,
    /// `loss_percent` as f64 bits.
    loss_bits: AtomicU64,
    forwarded: AtomicU64,
    dropped: AtomicU64,
    /// Datagrams larger than this are dropped; 0: no limit.
    max_datagram: AtomicU64,
}

impl Shared {
    fn settings(&self) -> (Duration, f64) {
        (
            Duration::from_nanos(self.one_way_ns.load(Ordering::Relaxed)),
            f64::from_bits(self.loss_bits.load(Ordering::Relaxed)),
        )
    }
}

impl Relay {
    /// Start a pass-through relay between `a` and `b`, its sockets bound inside `ns`.
    /// Panics (with the address) if a socket cannot be bound.
    pub fn start(ns: &Netns, a: Leg, b: Leg) -> Relay {
        let (sa, sb) = ns.run_in(move || (bind(a.bind), bind(b.bind)));
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = oneshot::channel();
        let counters = shared.clone();
        let thread = std::thread::Builder::new()
            .name("relay".into())
            .spawn(move || run(sa, sb, a.peer, b.peer, counters, stopped))
            .expect("starting the relay thread");
        Relay {
            shared,
            stop: Some(stop),
            thread: Some(thread),
            legs: [a, b],
        }
    }

    /// Each direction: delay every datagram by `one_way` (so RTT grows by twice that), and drop
    /// `loss_percent` % of them at random (independently per datagram). Takes effect at once
    /// for datagrams that arrive from now on; (ZERO, 0.0) = pass-through. Panics on a loss
    /// outside 0..=100 or a delay above a minute (a mistake, not a scenario).
    pub fn set(&self, one_way: Duration, loss_percent: f64) {
        assert!(
            (0.0..=100.0).contains(&loss_percent),
            "relay: loss_percent must be within 0..=100, not {loss_percent}"
        );
        assert!(
            one_way <= Duration::from_secs(60),
            "relay: a one-way delay of {one_way:?} is not a network (at most 60 s)"
        );
        self.shared
            .one_way_ns
            .store(one_way.as_nanos() as u64, Ordering::Relaxed);
        self.shared
            .loss_bits
            .store(loss_percent.to_bits(), Ordering::Relaxed);
    }

    /// Each direction: drop every datagram of more than `bytes` UDP payload from now on, as a
    /// path whose MTU shrank and whose ICMP is filtered does (`None`: no limit). Counted as
    /// dropped.
    pub fn set_max_datagram(&self, bytes: Option<usize>) {
        self.shared
            .max_datagram
            .store(bytes.map_or(0, |b| b.max(1) as u64), Ordering::Relaxed);
    }

    /// Datagrams forwarded and dropped so far, both directions together.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.shared.forwarded.load(Ordering::Relaxed),
            self.shared.dropped.load(Ordering::Relaxed),
        )
    }

    /// The two legs, as started.
    pub fn legs(&self) -> [Leg; 2] {
        self.legs
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn bind(addr: SocketAddr) -> UdpSocket {
    let socket = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("relay: binding {addr}: {e}"));
    socket
        .set_nonblocking(true)
        .expect("relay: non-blocking socket");
    socket
}

/// The relay thread: both directions until `stopped` fires (or the `Relay` is gone).
fn run(
    a: UdpSocket,
    b: UdpSocket,
    a_peer: SocketAddr,
    b_peer: SocketAddr,
    shared: Arc<Shared>,
    stopped: oneshot::Receiver<()>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("relay: tokio runtime");
    rt.block_on(async move {
        let a = Arc::new(tokio::net::UdpSocket::from_std(a).expect("relay: socket A"));
        let b = Arc::new(tokio::net::UdpSocket::from_std(b).expect("relay: socket B"));
        tokio::select! {
            _ = stopped => {}
            _ = direction(a.clone(), b.clone(), b_peer, shared.clone()) => {}
            _ = direction(b, a, a_peer, shared) => {}
        }
    });
}

/// Datagrams from `from` to `to` via `out`, delayed and dropped as `shared` says.
async fn direction(
    from: Arc<tokio::net::UdpSocket>,
    out: Arc<tokio::net::UdpSocket>,
    to: SocketAddr,
    shared: Arc<Shared>,
) {
    let (queue, mut due) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE);
    let receive = async {
        let mut rng = fastrand::Rng::new();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut last_due = Instant::now();
        loop {
            // A receive error on an unconnected UDP socket is transient (e.g. an ICMP error
            // reported to it): nothing to forward.
            let Ok((n, _)) = from.recv_from(&mut buf).await else {
                continue;
            };
            let (one_way, loss) = shared.settings();
            let max = shared.max_datagram.load(Ordering::Relaxed);
            if max != 0 && n as u64 > max {
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if loss > 0.0 && rng.f64() * 100.0 < loss {
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let at = (Instant::now() + one_way).max(last_due);
            last_due = at;
            if queue.try_send((at, buf[..n].to_vec())).is_err() {
                shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    let send = async {
        while let Some((at, datagram)) = due.recv().await {
            if at > Instant::now() {
                tokio::time::sleep_until(at).await;
            }
            if out.send_to(&datagram, to).await.is_ok() {
                shared.forwarded.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    tokio::join!(receive, send);
}

/// The relay's two addresses on underlay path `link`: `.3` (faces the AWS gateway) and `.4`
/// (faces the OCI gateway) of the path's /24.
pub fn relay_addresses(link: usize) -> [String; 2] {
    let aws = PATHS[link].underlay[0];
    let net = aws.rsplit_once('.').expect("an IPv4 underlay address").0;
    [format!("{net}.3"), format!("{net}.4")]
}

impl TwoClouds {
    /// Put a relay on underlay path `link` (index into PATHS: 0 interconnect, 1 internet): both
    /// gateways' `peer_endpoint` for that link point at the relay, which forwards each way.
    /// Call before start_agents().
    pub fn relay(&mut self, link: usize) -> Relay {
        assert!(
            link < PATHS.len(),
            "relay: no underlay path {link} (0 interconnect, 1 internet)"
        );
        let path = &PATHS[link];
        let [to_aws, to_oci] = relay_addresses(link);
        let dev = &self.underlay_interfaces(0)[link];
        for addr in [&to_aws, &to_oci] {
            let out = self
                .aws
                .ns
                .command("ip")
                .args(["addr", "add", &format!("{addr}/32"), "dev", dev])
                .output()
                .expect("ip addr add");
            assert!(
                out.status.success(),
                "relay: adding {addr} to {dev} (is path {link} relayed already?): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let socket = |ip: &str| -> SocketAddr {
            format!("{ip}:{}", path.port)
                .parse()
                .expect("an IP:port socket address")
        };
        let relay = Relay::start(
            &self.aws.ns,
            Leg {
                bind: socket(&to_aws),
                peer: socket(path.underlay[0]),
            },
            Leg {
                bind: socket(&to_oci),
                peer: socket(path.underlay[1]),
            },
        );
        for (side, endpoint) in [(&self.aws, socket(&to_aws)), (&self.oci, socket(&to_oci))] {
            set_peer_endpoint(side.fx.config_path(), path.link, endpoint);
        }
        relay
    }
}

/// Point link `link`'s `peer_endpoint` in the config at `config` to `endpoint`.
fn set_peer_endpoint(config: &std::path::Path, link: &str, endpoint: SocketAddr) {
    let text = std::fs::read_to_string(config).expect("reading the config");
    let mut doc: toml::Table = text.parse().expect("the config is TOML");
    let entry = doc
        .get_mut("link")
        .and_then(|l| l.as_array_mut())
        .and_then(|links| {
            links
                .iter_mut()
                .find(|l| l.get("name").and_then(|n| n.as_str()) == Some(link))
        })
        .and_then(|l| l.as_table_mut())
        .unwrap_or_else(|| panic!("relay: no [[link]] {link} in {}", config.display()));
    entry.insert("peer_endpoint".into(), endpoint.to_string().into());
    std::fs::write(
        config,
        toml::to_string(&doc).expect("serializing the config"),
    )
    .expect("writing the config");
}

#[cfg(test)]
mod tests {
    //! The relay on loopback inside a namespace of the test's own: A ⇄ relay ⇄ B.

    use super::*;
    use std::time::Instant as StdInstant;

    const A: &str = "127.0.0.1:41000";
    const B: &str = "127.0.0.1:41001";
    const TO_A: &str = "127.0.0.1:42000";
    const TO_B: &str = "127.0.0.1:42001";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A namespace, a relay in it, and the two ends' sockets (blocking, 2 s read timeout).
    fn bed() -> (Netns, Relay, UdpSocket, UdpSocket) {
        let ns = Netns::new("rl");
        let relay = Relay::start(
            &ns,
            Leg {
                bind: addr(TO_A),
                peer: addr(A),
            },
            Leg {
                bind: addr(TO_B),
                peer: addr(B),
            },
        );
        let (a, b) = ns.run_in(|| {
            let a = UdpSocket::bind(A).unwrap();
            let b = UdpSocket::bind(B).unwrap();
            for s in [&a, &b] {
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            }
            (a, b)
        });
        (ns, relay, a, b)
    }

    /// Send `n` numbered datagrams from `from` to `via`, one every `gap`, while `to` reads them
    /// on another thread: the numbers in arrival order and each one's delay.
    fn exchange(
        from: &UdpSocket,
        via: &str,
        to: &UdpSocket,
        n: u32,
        gap: Duration,
    ) -> Vec<(u32, Duration)> {
        exchange_with(from, via, to, n, gap, |_| {})
    }

    /// [`exchange`], calling `before(seq)` before each datagram is sent.
    fn exchange_with(
        from: &UdpSocket,
        via: &str,
        to: &UdpSocket,
        n: u32,
        gap: Duration,
        before: impl Fn(u32),
    ) -> Vec<(u32, Duration)> {
        let to = to.try_clone().unwrap();
        let origin = StdInstant::now();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            while let Ok((len, _)) = to.recv_from(&mut buf) {
                assert_eq!(len, 12);
                let seq = u32::from_be_bytes(buf[..4].try_into().unwrap());
                let sent = u64::from_be_bytes(buf[4..12].try_into().unwrap());
                let now = origin.elapsed().as_nanos() as u64;
                got.push((seq, Duration::from_nanos(now - sent)));
                if seq == n - 1 {
                    break;
                }
            }
            got
        });
        for seq in 0..n {
            before(seq);
            let mut msg = [0u8; 12];
            msg[..4].copy_from_slice(&seq.to_be_bytes());
            let sent = origin.elapsed().as_nanos() as u64;
            msg[4..].copy_from_slice(&sent.to_be_bytes());
            from.send_to(&msg, via).unwrap();
            std::thread::sleep(gap);
        }
        // The reader stops at the last number or after 2 s without a datagram.
        reader.join().unwrap()
    }

    /// The counts once the relay has counted its last send (a datagram may arrive before the
    /// relay has counted it as forwarded).
    fn settled_counts(relay: &Relay) -> (u64, u64) {
        std::thread::sleep(Duration::from_millis(50));
        relay.counts()
    }

    fn median(mut d: Vec<Duration>) -> Duration {
        d.sort();
        d[d.len() / 2]
    }

    #[test]
    fn delays_each_direction_by_the_one_way_delay_and_keeps_order() {
        let (_ns, relay, a, b) = bed();
        // Pass-through first: quick both ways.
        let quick = exchange(&a, TO_A, &b, 20, Duration::from_millis(2));
        assert_eq!(quick.len(), 20);
        let base = median(quick.iter().map(|x| x.1).collect());
        assert!(
            base < Duration::from_millis(20),
            "pass-through took {base:?}"
        );

        let one_way = Duration::from_millis(80);
        relay.set(one_way, 0.0);
        for (from, via, to, dir) in [(&a, TO_A, &b, "A→B"), (&b, TO_B, &a, "B→A")] {
            let got = exchange(from, via, to, 50, Duration::from_millis(3));
            let seqs: Vec<u32> = got.iter().map(|x| x.0).collect();
            assert_eq!(
                seqs,
                (0..50).collect::<Vec<_>>(),
                "{dir}: lost or reordered"
            );
            let delays: Vec<Duration> = got.iter().map(|x| x.1).collect();
            let (min, med) = (*delays.iter().min().unwrap(), median(delays.clone()));
            println!("{dir}: one-way {one_way:?} set, measured min {min:?} median {med:?}");
            assert!(min >= one_way, "{dir}: a datagram came early ({min:?})");
            assert!(
                med < one_way + Duration::from_millis(40),
                "{dir}: median delay {med:?} for {one_way:?}"
            );
        }
        assert_eq!(settled_counts(&relay), (120, 0));

        // A shorter delay applies to what arrives next, but never lets it overtake what is
        // queued: five datagrams at 200 ms, then five at none, arrive in order.
        let long = Duration::from_millis(200);
        relay.set(long, 0.0);
        let got = exchange_with(&a, TO_A, &b, 10, Duration::from_millis(1), |seq| {
            if seq == 5 {
                relay.set(Duration::ZERO, 0.0);
            }
        });
        let seqs: Vec<u32> = got.iter().map(|x| x.0).collect();
        assert_eq!(seqs, (0..10).collect::<Vec<_>>(), "overtaken");
        assert!(
            got.iter().all(|x| x.1 >= long - Duration::from_millis(10)),
            "{got:?}"
        );
        // Once the queue is empty, pass-through again.
        let after = exchange(&a, TO_A, &b, 5, Duration::from_millis(1));
        assert!(
            after.iter().all(|x| x.1 < Duration::from_millis(20)),
            "{after:?}"
        );
    }

    #[test]
    fn fifty_percent_loss_drops_about_half_independently() {
        let (_ns, relay, a, b) = bed();
        relay.set(Duration::ZERO, 50.0);
        let n = 2000;
        let got = exchange(&a, TO_A, &b, n, Duration::from_micros(200));
        let (forwarded, dropped) = settled_counts(&relay);
        assert_eq!(
            forwarded + dropped,
            u64::from(n),
            "every datagram is counted once"
        );
        assert_eq!(got.len() as u64, forwarded, "what is forwarded arrives");
        let ratio = dropped as f64 / f64::from(n);
        // Binomial: σ = √(n·p·(1-p)) ≈ 22 datagrams (1.1 %); the bound is ~4.5 σ.
        println!(
            "50 % loss: {dropped} of {n} dropped ({:.1} %)",
            ratio * 100.0
        );
        assert!((0.45..=0.55).contains(&ratio), "dropped {ratio}");
        // Independent per datagram: runs of drops are short (2000 at p = 0.5 make a run of
        // more than 25 astronomically unlikely, which a bursty drop would not respect).
        let mut seqs: Vec<u32> = got.iter().map(|x| x.0).collect();
        seqs.insert(0, 0);
        let longest_run = seqs.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        assert!(longest_run < 25, "a run of {longest_run} lost in a row");

        relay.set(Duration::ZERO, 0.0);
        let all = exchange(&b, TO_B, &a, 100, Duration::from_micros(500));
        assert_eq!(all.len(), 100, "(ZERO, 0.0) passes everything");
    }

    #[test]
    fn dropping_the_relay_stops_it_and_frees_its_sockets() {
        let (ns, relay, a, b) = bed();
        assert_eq!(exchange(&a, TO_A, &b, 3, Duration::ZERO).len(), 3);
        drop(relay);
        ns.run_in(|| {
            // Both addresses can be bound again: the sockets are closed.
            UdpSocket::bind(TO_A).unwrap();
            UdpSocket::bind(TO_B).unwrap();
        });
        a.send_to(b"x", TO_A).unwrap();
        let mut buf = [0u8; 8];
        b.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert!(b.recv_from(&mut buf).is_err(), "forwarded after drop");
    }

    #[test]
    #[should_panic(expected = "loss_percent must be within 0..=100")]
    fn a_loss_above_100_percent_is_refused() {
        let (_ns, relay, _a, _b) = bed();
        relay.set(Duration::ZERO, 140.0);
    }
}
