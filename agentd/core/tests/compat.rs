//! Upgrades: a new engine against a gateway that still runs agentd 0.1.0 (its version-1 codec
//! frozen below, its link health as it was), and two new engines moving to version 2.
// The simulated clock starts at a real instant; nothing here reads the clock after that.
#![allow(clippy::disallowed_methods)]

mod common;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use common::{config, ms, secs, Net, TestAuth, KEY, LINKS};
use isthmus_core::health::LinkHealth;
use isthmus_core::wire::{self, Kind as WireKind};
use isthmus_core::{Engine, EngineConfig, Health, Received, Timings, View};

/// The probe codec as agentd 0.1.0 speaks it (agentd/src/probe/packet.rs of that release),
/// frozen. Only the HMAC is the test authenticator's: the layout and the checks are the
/// release's.
mod v0_1_0 {
    use super::{TestAuth, View};
    use isthmus_core::{Authenticator, Health};

    pub const LEN: usize = 64;
    const MAGIC: &[u8; 4] = b"ISTH";
    pub const VERSION: u8 = 1;
    const MAC_AT: usize = 48;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Kind {
        Request = 1,
        Reply = 2,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Probe {
        pub kind: Kind,
        pub seq: u32,
        pub sent_us: u64,
        pub view: View,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Reject {
        Malformed,
        Version,
        Forged,
    }

    pub fn encode(key: &TestAuth, kind: Kind, seq: u32, sent_us: u64, view: &View) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0..4].copy_from_slice(MAGIC);
        b[4] = VERSION;
        b[5] = kind as u8;
        b[6] = u8::from(view.pinned) | (u8::from(view.draining) << 1);
        b[7] = view.health.code();
        b[8..12].copy_from_slice(&seq.to_be_bytes());
        b[12..20].copy_from_slice(&sent_us.to_be_bytes());
        b[20..24].copy_from_slice(&view.rx_loss_ppm.unwrap_or(u32::MAX).to_be_bytes());
        b[24] = view.priority;
        b[28..32].copy_from_slice(&view.fingerprint.to_be_bytes());
        let tag = key.tag(&b[..MAC_AT]);
        b[MAC_AT..].copy_from_slice(&tag);
        b
    }

    pub fn decode(key: &TestAuth, b: &[u8]) -> Result<Probe, Reject> {
        if b.len() != LEN || &b[0..4] != MAGIC {
            return Err(Reject::Malformed);
        }
        if b[4] != VERSION {
            return Err(Reject::Version);
        }
        // Constant-time comparison of the truncated tag.
        let tag = key.tag(&b[..MAC_AT]);
        let mut diff = 0u8;
        for (x, y) in tag.iter().zip(&b[MAC_AT..]) {
            diff |= x ^ y;
        }
        if diff != 0 {
            return Err(Reject::Forged);
        }
        let kind = match b[5] {
            1 => Kind::Request,
            2 => Kind::Reply,
            _ => return Err(Reject::Malformed),
        };
        let word = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let mut sent = [0u8; 8];
        sent.copy_from_slice(&b[12..20]);
        let ppm = word(20);
        Ok(Probe {
            kind,
            seq: word(8),
            sent_us: u64::from_be_bytes(sent),
            view: View {
                health: Health::from_code(b[7]),
                pinned: b[6] & 1 != 0,
                draining: b[6] & 2 != 0,
                priority: b[24],
                fingerprint: word(28),
                rx_loss_ppm: (ppm != u32::MAX).then_some(ppm),
            },
        })
    }
}

/// A gateway on agentd 0.1.0, reduced to its probe behaviour: a link health per link, requests
/// on its schedule, every accepted request answered with its own arrival time in `sent_us`
/// (as that release did).
struct OldPeer {
    links: Vec<LinkHealth>,
    epoch: Instant,
    rejected: Vec<v0_1_0::Reject>,
}

impl OldPeer {
    fn new(c: &EngineConfig, now: Instant) -> OldPeer {
        OldPeer {
            links: LINKS
                .iter()
                .map(|_| LinkHealth::new(c.timings, c.thresholds, c.damping, now))
                .collect(),
            epoch: now,
            rejected: Vec::new(),
        }
    }

    fn view(&self, link: usize) -> View {
        let l = &self.links[link];
        View {
            health: l.own(),
            pinned: false,
            draining: false,
            priority: link as u8,
            fingerprint: 0,
            rx_loss_ppm: l.rx_loss_ppm(),
        }
    }

    fn micros(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_micros() as u64
    }

    /// Datagrams to send now: (link, bytes).
    fn poll(&mut self, now: Instant) -> Vec<(usize, Vec<u8>)> {
        let mut out = Vec::new();
        for li in 0..LINKS.len() {
            self.links[li].handle_timeout(now);
            while let Some(seq) = self.links[li].poll_probe(now) {
                let b = v0_1_0::encode(
                    &KEY,
                    v0_1_0::Kind::Request,
                    seq,
                    self.micros(now),
                    &self.view(li),
                );
                out.push((li, b.to_vec()));
            }
        }
        out
    }

    fn receive(&mut self, link: usize, bytes: &[u8], at: Instant) -> Option<Vec<u8>> {
        let p = match v0_1_0::decode(&KEY, bytes) {
            Ok(p) => p,
            Err(e) => {
                self.rejected.push(e);
                return None;
            }
        };
        match p.kind {
            v0_1_0::Kind::Request => {
                if !self.links[link].handle_request(p.seq, p.view, at) {
                    return None;
                }
                let b = v0_1_0::encode(
                    &KEY,
                    v0_1_0::Kind::Reply,
                    p.seq,
                    self.micros(at),
                    &self.view(link),
                );
                Some(b.to_vec())
            }
            v0_1_0::Kind::Reply => {
                if self.links[link].handle_reply(p.seq, at).is_some() {
                    self.links[link].handle_peer_view(p.view, at);
                }
                None
            }
        }
    }

    fn next(&self) -> Instant {
        self.links
            .iter()
            .map(LinkHealth::poll_timeout)
            .min()
            .unwrap_or(self.epoch)
    }
}

/// A datagram in flight: (arrival, order, to side, link, bytes).
type InFlight = Reverse<(Instant, u64, usize, usize, Vec<u8>)>;

/// A new engine (side 0) and an old peer (side 1) on a simulated clock, 2 ms apart.
struct Mixed {
    t0: Instant,
    now: Instant,
    new: Engine,
    old: OldPeer,
    queue: BinaryHeap<InFlight>,
    n: u64,
    cut: [bool; 2],
    /// Versions of what the new engine sent.
    versions: Vec<u8>,
}

impl Mixed {
    fn new(new: Engine, c: &EngineConfig, t0: Instant) -> Mixed {
        Mixed {
            t0,
            now: t0,
            new,
            old: OldPeer::new(c, t0),
            queue: BinaryHeap::new(),
            n: 0,
            cut: [false; 2],
            versions: Vec::new(),
        }
    }

    fn send(&mut self, to: usize, link: usize, bytes: Vec<u8>) {
        if !self.cut[link] {
            self.n += 1;
            let at = self.now + ms(2);
            self.queue.push(Reverse((at, self.n, to, link, bytes)));
        }
    }

    fn outputs(&mut self) {
        while let Some(t) = self.new.poll_transmit(self.now) {
            self.versions.push(t.bytes[4]);
            let li = LINKS.iter().position(|l| *l == t.link).unwrap_or(0);
            self.send(1, li, t.bytes);
        }
        for (li, b) in self.old.poll(self.now) {
            self.send(0, li, b);
        }
        while self.new.poll_event().is_some() {}
    }

    fn run_until(&mut self, until: Duration) {
        let end = self.t0 + until;
        loop {
            let timers = [self.new.poll_timeout(), Some(self.old.next())];
            let delivery = self.queue.peek().map(|Reverse((t, ..))| *t);
            let next = timers
                .into_iter()
                .chain([delivery])
                .flatten()
                .min()
                .unwrap_or(end);
            if next > end {
                self.now = end;
                self.new.handle_timeout(end);
                self.outputs();
                return;
            }
            self.now = next.max(self.now);
            if delivery == Some(next) {
                if let Some(Reverse((_, _, to, link, bytes))) = self.queue.pop() {
                    if to == 0 {
                        self.new.handle_datagram(LINKS[link], &bytes, self.now);
                    } else if let Some(reply) = self.old.receive(link, &bytes, self.now) {
                        self.send(0, link, reply);
                    }
                }
            } else {
                self.new.handle_timeout(self.now);
            }
            self.outputs();
        }
    }
}

fn keyed(c: &EngineConfig, t0: Instant) -> Engine {
    common::keyed(Engine::new(c.clone(), t0))
}

#[test]
fn a_new_engine_and_an_agentd_0_1_0_peer_agree_on_health_in_version_1_and_fail_over() {
    let c = config(Timings::DEFAULT, &LINKS, secs(30));
    let t0 = Instant::now();
    let mut m = Mixed::new(keyed(&c, t0), &c, t0);
    m.run_until(secs(5));
    for (li, link) in LINKS.iter().enumerate() {
        assert_eq!(m.new.health(link), Some(Health::Up), "{link}");
        assert_eq!(m.old.links[li].own(), Health::Up, "{link} on the old peer");
        let r = m.new.link_report(link).expect("a link");
        assert_eq!(r.peer_version, 1);
        assert_eq!(r.peer.map(|p| p.health), Some(Health::Up));
        assert!(r.figures.rtt_p50.is_some_and(|rtt| rtt == ms(4)), "{r:?}");
    }
    assert_eq!(m.new.active("g"), Some("ic"));
    assert!(
        m.versions.iter().all(|v| *v == wire::V1),
        "only version 1 on the wire"
    );
    assert!(m.old.rejected.is_empty(), "{:?}", m.old.rejected);

    // The preferred link fails: the new engine leaves it in time, the old peer sees it down.
    m.cut[0] = true;
    m.run_until(secs(6) + ms(500));
    assert_eq!(m.new.active("g"), Some("inet"));
    assert_eq!(m.old.links[0].own(), Health::Down);
    m.cut[0] = false;
    m.run_until(secs(45));
    assert_eq!(m.new.active("g"), Some("ic"), "failback");
    assert_eq!(m.new.health("ic"), Some(Health::Up));
    assert_eq!(m.old.links[0].own(), Health::Up);
    assert!(m.old.rejected.is_empty(), "{:?}", m.old.rejected);
    let drops = m.new.probe_drops("ic");
    assert!(drops.values().all(|n| *n == 0), "{drops:?}");
}

#[test]
fn a_peer_rolled_back_to_agentd_0_1_0_is_spoken_to_in_version_1_again() {
    // First a new peer: version 2 is agreed.
    let mut net = Net::symmetric(Timings::DEFAULT, secs(30), 1);
    net.run_until(secs(1));
    assert_eq!(
        net.sides[0].link_report("ic").map(|r| r.peer_version),
        Some(2)
    );
    // Then a request of the old release arrives (newer than anything seen).
    let c = config(Timings::DEFAULT, &LINKS, secs(30));
    let old = OldPeer::new(&c, net.now);
    let request = v0_1_0::encode(&KEY, v0_1_0::Kind::Request, 1 << 20, 0, &old.view(0));
    let now = net.now + ms(1);
    let e = &mut net.sides[0];
    assert_eq!(e.handle_datagram("ic", &request, now), Received::Request);
    assert_eq!(e.link_report("ic").map(|r| r.peer_version), Some(1));
    let reply = e.poll_transmit(now).expect("a reply");
    assert!(v0_1_0::decode(&KEY, &reply.bytes).is_ok());
    // Every later request on that link is in version 1; the other link stays in version 2.
    for step in 1..=5 {
        let t = now + ms(100 * step);
        e.handle_timeout(t);
        while let Some(x) = e.poll_transmit(t) {
            let expected = if x.link == "ic" { wire::V1 } else { wire::V2 };
            assert_eq!(x.bytes[4], expected, "{}", x.link);
        }
    }
}

#[test]
fn two_new_engines_move_to_version_2_within_the_first_exchanges() {
    let mut net = Net::symmetric(Timings::DEFAULT, secs(30), 1);
    net.run_until(secs(5));
    for side in 0..2 {
        for link in LINKS {
            let r = net.sides[side].link_report(link).expect("a link");
            assert_eq!(r.peer_version, 2, "side {side} on {link}");
        }
        let requests: Vec<(Duration, u8)> = net
            .traffic
            .iter()
            .filter(|(_, s, _, k)| *s == side && *k == WireKind::Request)
            .map(|(at, _, v, _)| (*at, *v))
            .collect();
        // The first request on each link goes out in version 1 (nothing is known of the peer
        // yet); by the second round every request is in version 2.
        assert_eq!(requests[0].1, wire::V1);
        let v1 = requests.iter().filter(|(_, v)| *v == wire::V1).count();
        assert!(v1 <= LINKS.len(), "side {side}: {v1} version-1 requests");
        assert!(requests[LINKS.len()..].iter().all(|(_, v)| *v == wire::V2));
        let replies_v1 = net
            .traffic
            .iter()
            .filter(|(_, s, v, k)| *s == side && *k == WireKind::Reply && *v == wire::V1)
            .count();
        assert!(
            replies_v1 <= LINKS.len(),
            "version-1 requests got version-1 replies"
        );
    }
    assert_eq!(net.active(0), Some("ic"));
    assert_eq!(net.active(1), Some("ic"));
}

#[test]
fn a_v1_request_is_answered_in_version_1_with_the_capability_bit() {
    let c = config(Timings::DEFAULT, &LINKS, secs(30));
    let t0 = Instant::now();
    let mut e = keyed(&c, t0);
    let old = OldPeer::new(&c, t0);
    let request = v0_1_0::encode(&KEY, v0_1_0::Kind::Request, 5, 777, &old.view(0));
    assert_eq!(
        e.handle_datagram("ic", &request, t0 + ms(1)),
        Received::Request
    );
    let reply = e.poll_transmit(t0 + ms(1)).expect("a reply");
    assert_eq!(reply.bytes.len(), v0_1_0::LEN);
    let p = v0_1_0::decode(&KEY, &reply.bytes).expect("the old release reads it");
    assert_eq!((p.kind, p.seq, p.sent_us), (v0_1_0::Kind::Reply, 5, 777));
    assert_eq!(reply.bytes[25] & wire::CAP_V2, wire::CAP_V2);
    assert_eq!(e.link_report("ic").map(|r| r.peer_version), Some(1));
    // A key that is not the peer's is still a forgery through the old layout.
    let forged = v0_1_0::encode(&TestAuth(2), v0_1_0::Kind::Request, 6, 0, &old.view(0));
    assert!(matches!(
        e.handle_datagram("ic", &forged, t0 + ms(2)),
        Received::Dropped(isthmus_core::ProbeDrop::Forged)
    ));
}

#[test]
fn an_agentd_0_1_0_peer_gets_nothing_new_from_an_engine_with_a_drill_and_an_answer_pin() {
    let mut c = config(Timings::DEFAULT, &LINKS, secs(30));
    c.dns_groups = vec![isthmus_core::DnsGroupConfig {
        name: "app".into(),
        id: isthmus_core::dns_group_id("app.example.com", "A", &["192.0.2.10", "198.51.100.10"]),
        answers: 2,
        preempt: true,
        failback_after: secs(30),
        hold_down: secs(5),
        start_wait: Duration::ZERO,
    }];
    let t0 = Instant::now();
    let mut new = keyed(&c, t0);
    new.set_drill(Some("g".into()));
    assert!(new.pin_answer("app", 1, "CHG-1", t0));
    let mut m = Mixed::new(new, &c, t0);
    m.run_until(secs(5));
    assert!(!m.versions.is_empty());
    assert!(
        m.versions.iter().all(|v| *v == wire::V1),
        "only version 1 on the wire"
    );
    assert!(m.old.rejected.is_empty(), "{:?}", m.old.rejected);
    for link in LINKS {
        assert_eq!(m.new.health(link), Some(Health::Up), "{link}");
    }
    // The pin holds here; the old peer says nothing of a drill.
    assert_eq!(m.new.answer("app"), Some(1));
    assert_eq!(m.new.peer_drill(), None);
}

#[test]
fn a_peer_rolled_back_to_agentd_0_1_0_holds_no_pin_and_runs_no_drill_any_more() {
    let mut c = config(Timings::DEFAULT, &LINKS, secs(30));
    c.dns_groups = vec![isthmus_core::DnsGroupConfig {
        name: "app".into(),
        id: 7,
        answers: 2,
        preempt: true,
        failback_after: secs(30),
        hold_down: secs(5),
        start_wait: Duration::ZERO,
    }];
    let mut net = Net::new(c.clone(), c.clone(), 2);
    let now = net.now;
    net.sides[1].set_drill(Some("g".into()));
    assert!(net.sides[1].pin_answer("app", 1, "CHG-1", now));
    net.run_until(secs(1));
    assert_eq!(net.sides[0].peer_answer_pin("app"), Some(1));
    assert_eq!(net.sides[0].peer_drill(), Some("g"));
    // The old release's requests arrive on both links (newer than anything seen).
    let old = OldPeer::new(&c, net.now);
    let now = net.now + ms(1);
    for (li, link) in LINKS.iter().enumerate() {
        let request = v0_1_0::encode(&KEY, v0_1_0::Kind::Request, 1 << 20, 0, &old.view(li));
        assert_eq!(
            net.sides[0].handle_datagram(link, &request, now),
            Received::Request
        );
    }
    assert_eq!(net.sides[0].peer_answer_pin("app"), None);
    assert_eq!(net.sides[0].peer_drill(), None);
    let ended = std::iter::from_fn(|| net.sides[0].poll_event())
        .any(|e| matches!(e, isthmus_core::Event::PeerDrill { group: None, .. }));
    assert!(ended, "the end of the peer's drill is an event");
}

#[test]
fn an_agentd_0_1_0_peer_gets_no_path_mtu_probe_and_the_configured_mtu_stays() {
    // The old peer never says it answers path-MTU probes, so none is sent to it, however long
    // the search waits: the link keeps the floor (the shell keeps the configured MTU).
    let mut c = config(Timings::DEFAULT, &LINKS, secs(30));
    for l in &mut c.links {
        l.pmtu = Some(isthmus_core::engine::LinkPmtu {
            search: isthmus_core::pmtu::PmtuConfig::new(1280, 8920),
            overhead: 28,
        });
    }
    let t0 = Instant::now();
    let mut m = Mixed::new(keyed(&c, t0), &c, t0);
    m.run_until(secs(10));
    assert!(m.old.rejected.is_empty(), "{:?}", m.old.rejected);
    assert!(m.versions.iter().all(|v| *v == wire::V1));
    for link in LINKS {
        let r = m.new.path_mtu(link).expect("a search");
        assert!(!r.peer_answers && !r.tx_confirmed, "{r:?}");
        assert_eq!(r.state, isthmus_core::pmtu::PmtuState::Unsupported, "{r:?}");
        assert_eq!(r.counts.probes_sent, 0);
        assert_eq!(r.tx, 1280);
        assert_eq!(m.new.health(link), Some(Health::Up));
    }
}
