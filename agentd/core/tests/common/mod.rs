//! A simulated network between two engines (the two gateways), with a simulated clock:
//! datagrams from `poll_transmit` travel with a fixed latency, are lost per link and direction
//! as the test says, and arrive through `handle_datagram`, the same path as in agentd. A test
//! [`Authenticator`] stands in for agentd's HMAC.
// The simulated clock starts at a real instant; nothing here reads the clock after that.
#![allow(clippy::disallowed_methods)]
#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use isthmus_core::health::{Damping, Thresholds};
use isthmus_core::policy::GroupPolicy;
use isthmus_core::wire::{self, Kind};
use isthmus_core::{
    Authenticator, Engine, EngineConfig, Event, GroupConfig, LinkConfig, Received, Timings,
};

/// A keyed SipHash, twice for 16 bytes: not a MAC to trust, but one bit changed anywhere
/// changes the tag, and another key gives other tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestAuth(pub u64);

impl Authenticator for TestAuth {
    fn tag(&self, data: &[u8]) -> [u8; 16] {
        let mut out = [0u8; 16];
        for (lane, chunk) in out.chunks_mut(8).enumerate() {
            #[allow(deprecated)]
            let mut h = std::hash::SipHasher::new_with_keys(self.0, lane as u64);
            data.hash(&mut h);
            chunk.copy_from_slice(&h.finish().to_be_bytes());
        }
        out
    }
}

/// The key both test gateways share.
pub const KEY: TestAuth = TestAuth(0x1573_4d05);

/// Give every link of `e` the shared test key.
pub fn keyed(mut e: Engine) -> Engine {
    for l in LINKS {
        e.set_key(l, Some(Box::new(KEY)));
    }
    e
}

pub const LINKS: [&str; 2] = ["ic", "inet"];

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub fn config(timings: Timings, links: &[&str], failback_after: Duration) -> EngineConfig {
    EngineConfig {
        timings,
        thresholds: Thresholds {
            loss: 0.2,
            rtt_p95: ms(150),
            jitter: ms(30),
        },
        damping: Damping {
            penalty: 1000.0,
            half_life: secs(60),
            suppress_above: 3000.0,
            reuse_below: 750.0,
            max_suppress: secs(600),
        },
        links: LINKS
            .iter()
            .map(|n| LinkConfig {
                name: (*n).to_owned(),
                pmtu: None,
            })
            .collect(),
        groups: vec![GroupConfig {
            name: "g".into(),
            policy: GroupPolicy {
                links: links.iter().map(|s| (*s).to_owned()).collect(),
                failover_on_degraded: true,
                preempt: true,
                failback_after,
                hold_down: secs(5),
                checks_confirm: Duration::ZERO,
            },
        }],
        dns_groups: vec![],
    }
}

/// Loss in one direction of one link.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cond {
    pub cut: bool,
    pub loss: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Msg {
    /// 0: to A, 1: to B.
    to: usize,
    /// The life of the receiver it was sent to: a gateway that crashed and restarted never
    /// gets what was sent to the old process (a new WireGuard session drops it).
    life: u32,
    link: usize,
    bytes: Vec<u8>,
}

/// An invariant checked after every input.
pub type Check = Box<dyn FnMut(&Net)>;

/// An active-link change: (time since t0, from, to, reason).
pub type Switch = (
    Duration,
    Option<String>,
    Option<String>,
    isthmus_core::SwitchReason,
);

pub struct Net {
    pub t0: Instant,
    pub now: Instant,
    pub sides: [Engine; 2],
    queue: BinaryHeap<Reverse<(Instant, u64, Msg)>>,
    n: u64,
    /// [link][direction]: direction 0 is A→B, 1 is B→A.
    pub cond: [[Cond; 2]; 2],
    pub latency: Duration,
    /// Latency added on each link (both directions), for links of different lengths.
    pub extra_latency: [Duration; 2],
    /// [link][direction]: the largest inner packet that crosses (a probe datagram plus 28
    /// bytes of IPv4 and UDP headers); larger ones vanish, as on a path that drops them.
    pub mtu: [[Option<usize>; 2]; 2],
    rng: u64,
    /// Every event of each side, with the side's time.
    pub events: [Vec<Event>; 2],
    /// Requests sent: [side][link] → (send time, seq).
    pub sent: [[Vec<(Instant, u32)>; 2]; 2],
    /// Seqs whose reply arrived: [side][link].
    pub answered: [[std::collections::BTreeSet<u32>; 2]; 2],
    /// Called after every processed input, with the net (for invariants).
    pub check: Option<Check>,
    /// Rewrites what a side sends on a link (side, link, packet), re-sealed with the key: for
    /// a peer that says something else on each link (e.g. two remote gateways of a pair).
    #[allow(clippy::type_complexity)]
    pub rewrite: Option<Box<dyn FnMut(usize, &str, &mut wire::Packet)>>,
    /// Every datagram sent: (time since t0, side, version, kind).
    pub traffic: Vec<(Duration, usize, u8, Kind)>,
    /// Each side's config, to start it again after a crash.
    configs: [EngineConfig; 2],
    /// A side that crashed and was not restarted: no timers, no input, no output.
    pub dead: [bool; 2],
    /// Each side's process: bumped by a crash.
    life: [u32; 2],
    /// When each side's current process started.
    pub started: [Instant; 2],
}

impl Net {
    pub fn new(a: EngineConfig, b: EngineConfig, seed: u64) -> Net {
        let t0 = Instant::now();
        Net {
            t0,
            now: t0,
            sides: [
                keyed(Engine::new(a.clone(), t0)),
                keyed(Engine::new(b.clone(), t0)),
            ],
            configs: [a, b],
            dead: [false; 2],
            life: [0; 2],
            started: [t0; 2],
            queue: BinaryHeap::new(),
            n: 0,
            cond: [[Cond::default(); 2]; 2],
            latency: ms(2),
            extra_latency: [Duration::ZERO; 2],
            mtu: [[None; 2]; 2],
            rng: seed | 1,
            events: [Vec::new(), Vec::new()],
            sent: Default::default(),
            answered: Default::default(),
            check: None,
            rewrite: None,
            traffic: Vec::new(),
        }
    }

    pub fn symmetric(timings: Timings, failback_after: Duration, seed: u64) -> Net {
        let c = config(timings, &LINKS, failback_after);
        Net::new(c.clone(), c, seed)
    }

    fn random(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    fn link_index(name: &str) -> usize {
        LINKS.iter().position(|l| *l == name).expect("known link")
    }

    fn send(&mut self, from: usize, link: usize, mut bytes: Vec<u8>) {
        if let Some(rewrite) = self.rewrite.as_mut() {
            if let Ok(mut p) = wire::decode(&KEY, &bytes) {
                rewrite(from, LINKS[link], &mut p);
                bytes = wire::encode(&KEY, &p);
            }
        }
        let dir = from; // 0: A→B, 1: B→A
        let c = self.cond[link][dir];
        if c.cut || (c.loss > 0.0 && self.random() < c.loss) {
            return;
        }
        if self.mtu[link][dir].is_some_and(|mtu| bytes.len() + 28 > mtu) {
            return;
        }
        self.n += 1;
        let msg = Msg {
            to: 1 - from,
            life: self.life[1 - from],
            link,
            bytes,
        };
        self.queue.push(Reverse((
            self.now + self.latency + self.extra_latency[link],
            self.n,
            msg,
        )));
    }

    fn drain_outputs(&mut self) {
        for side in 0..2 {
            if self.dead[side] {
                continue;
            }
            while let Some(e) = self.sides[side].poll_event() {
                self.events[side].push(e);
            }
            while let Some(t) = self.sides[side].poll_transmit(self.now) {
                let li = Self::link_index(&t.link);
                // The harness reads its own traffic to know which probes were lost.
                if let Ok(p) = wire::decode(&KEY, &t.bytes) {
                    let at = self.now.saturating_duration_since(self.t0);
                    self.traffic.push((at, side, p.version, p.kind));
                    if p.kind == Kind::Request {
                        self.sent[side][li].push((self.now, p.seq));
                    }
                }
                self.send(side, li, t.bytes);
            }
            while let Some(e) = self.sides[side].poll_event() {
                self.events[side].push(e);
            }
        }
        if let Some(mut check) = self.check.take() {
            check(self);
            self.check = Some(check);
        }
    }

    /// Run the simulation until `until` (relative to t0).
    pub fn run_until(&mut self, until: Duration) {
        let end = self.t0 + until;
        loop {
            let timer = self
                .live()
                .filter_map(|side| self.sides[side].poll_timeout())
                .min();
            let delivery = self.queue.peek().map(|Reverse((t, _, _))| *t);
            let next = [timer, delivery].into_iter().flatten().min().unwrap_or(end);
            if next > end {
                self.now = end;
                for side in self.live().collect::<Vec<_>>() {
                    self.sides[side].handle_timeout(end);
                }
                self.drain_outputs();
                return;
            }
            self.now = next.max(self.now);
            if delivery == Some(next) {
                let Some(Reverse((_, _, msg))) = self.queue.pop() else {
                    continue;
                };
                self.deliver(msg);
            } else {
                let now = self.now;
                for side in self.live().collect::<Vec<_>>() {
                    self.sides[side].handle_timeout(now);
                }
            }
            self.drain_outputs();
        }
    }

    pub fn run_for(&mut self, d: Duration) {
        let at = self.now.saturating_duration_since(self.t0) + d;
        self.run_until(at);
    }

    fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..2).filter(|&side| !self.dead[side])
    }

    /// `kill -9` of a side: it stops at once; what was sent to it is lost.
    pub fn crash(&mut self, side: usize) {
        self.dead[side] = true;
        self.life[side] += 1;
    }

    /// Start a crashed side again, as agentd does: a new engine numbering its probes from the
    /// clock (hundredths of a second since t0, above anything the old one sent), given
    /// `restored` as the active links the old one persisted.
    pub fn restart(
        &mut self,
        side: usize,
        restored: &std::collections::BTreeMap<String, String>,
    ) -> Vec<(String, String)> {
        assert!(self.dead[side], "crash() the side first");
        let now = self.now;
        let mut e = Engine::new(self.configs[side].clone(), now);
        let centis = now.saturating_duration_since(self.t0).as_millis() / 10;
        e.start_seqs_at(1_000_000 + centis as u32);
        let ignored = e.restore(restored);
        self.sides[side] = keyed(e);
        self.dead[side] = false;
        self.started[side] = now;
        self.drain_outputs();
        ignored
    }

    fn deliver(&mut self, m: Msg) {
        if self.dead[m.to] || m.life != self.life[m.to] {
            return;
        }
        let now = self.now;
        let got = self.sides[m.to].handle_datagram(LINKS[m.link], &m.bytes, now);
        if let Received::Reply { .. } = got {
            if let Ok(p) = wire::decode(&KEY, &m.bytes) {
                self.answered[m.to][m.link].insert(p.seq);
            }
        }
        // Replies go out with the next outputs, like requests.
    }

    pub fn set(&mut self, link: &str, dir: usize, c: Cond) {
        self.cond[Self::link_index(link)][dir] = c;
    }

    pub fn cut(&mut self, link: &str, both: bool) {
        self.set(
            link,
            0,
            Cond {
                cut: true,
                loss: 0.0,
            },
        );
        if both {
            self.set(
                link,
                1,
                Cond {
                    cut: true,
                    loss: 0.0,
                },
            );
        }
    }

    pub fn restore(&mut self, link: &str) {
        self.set(link, 0, Cond::default());
        self.set(link, 1, Cond::default());
    }

    pub fn active(&self, side: usize) -> Option<&str> {
        self.sides[side].active("g")
    }

    /// Active-link changes of a side: (time since t0, from, to, reason).
    pub fn switches(&self, side: usize) -> Vec<Switch> {
        self.events[side]
            .iter()
            .filter_map(|e| match e {
                Event::ActiveLinkChanged {
                    from,
                    to,
                    reason,
                    at,
                    ..
                } => Some((
                    at.saturating_duration_since(self.t0),
                    from.clone(),
                    to.clone(),
                    reason.clone(),
                )),
                _ => None,
            })
            .collect()
    }

    /// When a side sent the first request on `link` at or after `t` (relative to t0) that
    /// was never answered: the first lost probe.
    pub fn first_lost_after(&self, side: usize, link: &str, t: Duration) -> Option<Duration> {
        let li = Self::link_index(link);
        self.sent[side][li]
            .iter()
            .filter(|(_, seq)| !self.answered[side][li].contains(seq))
            .map(|(at, _)| at.saturating_duration_since(self.t0))
            .find(|s| *s >= t)
    }
}
