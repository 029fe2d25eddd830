//! One link's health, from its own peer probes and the peer's.
//!
//! The link probes on a schedule ([`LinkHealth::poll_probe`]); each probe is answered
//! ([`LinkHealth::handle_reply`]) or becomes lost when overdue ([`LinkHealth::handle_timeout`]).
//! From that:
//! - `down` after `down_after` consecutive losses (fast probing after the first overdue probe
//!   keeps that inside the detection budget); back `up` after `up_after` consecutive answers;
//! - `degraded` when the windowed round-trip loss, RTT p95 or jitter pass their thresholds; back
//!   to `up` with hysteresis (below half the loss threshold and 80 % of the others);
//! - `suppressed` by flap damping: every fall into `down` adds a penalty that halves every
//!   `half_life`; above `suppress_above` the link is held out until the penalty decays below
//!   `reuse_below` (or `max_suppress` passed). Whether a suppressed link may still be used as
//!   the last one is the policy's call, not this module's.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::profile::Timings;

/// A link's health class, from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Health {
    Up,
    Degraded,
    /// No probe result yet (start-up): not usable, as `down`.
    Unknown,
    Down,
    Suppressed,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Degraded => "degraded",
            Health::Unknown => "unknown",
            Health::Down => "down",
            Health::Suppressed => "suppressed",
        }
    }

    /// The wire code in probe packets (docs/protocol.md).
    pub fn code(self) -> u8 {
        match self {
            Health::Unknown => 0,
            Health::Up => 1,
            Health::Degraded => 2,
            Health::Down => 3,
            Health::Suppressed => 4,
        }
    }

    pub fn from_code(code: u8) -> Health {
        match code {
            1 => Health::Up,
            2 => Health::Degraded,
            3 => Health::Down,
            4 => Health::Suppressed,
            _ => Health::Unknown,
        }
    }

    /// Up or degraded: can carry traffic.
    pub fn carries(self) -> bool {
        matches!(self, Health::Up | Health::Degraded)
    }
}

/// Thresholds for `degraded` (from the config's `[health]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Round-trip loss ratio over the window.
    pub loss: f64,
    pub rtt_p95: Duration,
    pub jitter: Duration,
}

/// Flap damping parameters (from the config's `[health.damping]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Damping {
    pub penalty: f64,
    pub half_life: Duration,
    pub suppress_above: f64,
    pub reuse_below: f64,
    pub max_suppress: Duration,
}

/// One side's view of a link, as every probe (request or reply) carries it: ours in what we
/// send, the peer's in what we receive (docs/protocol.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    pub health: Health,
    /// The sender pinned a route group to this link.
    pub pinned: bool,
    /// The sender drains this link.
    pub draining: bool,
    /// The sender's rank of this link (255: in no group).
    pub priority: u8,
    /// The sender's link-ranking fingerprint.
    pub fingerprint: u32,
    /// The sender's loss of the other side's requests, in ppm (`None`: not known yet).
    pub rx_loss_ppm: Option<u32>,
}

/// Measured figures, for events, status and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Figures {
    pub rtt_p50: Option<Duration>,
    pub rtt_p95: Option<Duration>,
    pub jitter: Option<Duration>,
    /// Round-trip loss ratio over the window.
    pub loss: f64,
    /// Loss of the peer's probes towards us, over our window.
    pub loss_in: Option<f64>,
    /// Loss of our probes towards the peer, as the peer reports it.
    pub loss_out: Option<f64>,
    pub consecutive_lost: u32,
    pub samples: usize,
}

/// See [`LinkHealth::update_degraded`].
const DEGRADED_EVAL_EVERY: usize = 10;

/// Probes counted lost that are remembered, so that a reply arriving after its probe expired
/// still measures the round trip: without it a path slower than the loss timeout never gives
/// an RTT sample, the timeout (which grows with the RTT p95) never grows, and every probe is
/// lost for as long as the path stays slow. 64 covers 3.2 s at the default profile's fast
/// interval, more than any RTT worth measuring.
///
/// A late reply raises the timeout ([`LinkHealth::late_rtt`]) but stays out of the window's
/// statistics: a gateway that stalls for a second returns a burst of second-long round trips,
/// which in a young window would push the jitter past its threshold (a false `degraded`, seen
/// under 5 % loss on a loaded machine). The probes sent after it, answered in time, measure
/// the path for the window.
const LATE_KEPT: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Sample {
    Lost,
    Rtt(Duration),
}

/// Requests from the peer seen recently, for replay protection and loss towards us.
#[derive(Debug, Clone, Default)]
struct RxTracker {
    highest: Option<u32>,
    /// Bit i: seq `highest - i` was seen (i < 64).
    bitmap: u64,
    /// Seqs seen within the window, oldest first.
    seen: VecDeque<u32>,
}

impl RxTracker {
    /// Accept `seq` unless it is a replay or older than the 64 last. Sequence numbers compare
    /// in serial-number arithmetic (RFC 1982), so the wrap at 2^32 is just the next number.
    fn accept(&mut self, seq: u32, window: usize) -> bool {
        match self.highest {
            None => {
                self.highest = Some(seq);
                self.bitmap = 1;
            }
            Some(h) if (seq.wrapping_sub(h) as i32) > 0 => {
                let shift = seq.wrapping_sub(h);
                self.bitmap = if shift >= 64 { 0 } else { self.bitmap << shift };
                self.bitmap |= 1;
                self.highest = Some(seq);
            }
            Some(h) => {
                let back = h.wrapping_sub(seq);
                if back >= 64 || self.bitmap & (1 << back) != 0 {
                    return false;
                }
                self.bitmap |= 1 << back;
            }
        }
        self.seen.push_back(seq);
        while self.seen.len() > window {
            self.seen.pop_front();
        }
        true
    }

    /// Loss of the peer's requests over the window, once a few have arrived.
    fn loss(&self) -> Option<f64> {
        let h = self.highest?;
        let span = self.seen.iter().map(|s| h.wrapping_sub(*s)).max()?;
        let expected = f64::from(span) + 1.0;
        if self.seen.len() < 10 {
            return None;
        }
        Some((1.0 - self.seen.len() as f64 / expected).max(0.0))
    }
}

#[derive(Debug, Clone)]
pub struct LinkHealth {
    timings: Timings,
    thresholds: Thresholds,
    damping: Damping,
    next_seq: u32,
    /// Probes sent and not yet answered or lost: (seq, sent at).
    outstanding: VecDeque<(u32, Instant)>,
    /// Probes counted lost whose reply may still come, oldest first (at most [`LATE_KEPT`]).
    expired: VecDeque<(u32, Instant)>,
    /// The longest round trip of a late reply, a floor for the loss timeout until
    /// `min_samples` replies in time have measured the path again.
    late_rtt: Option<Duration>,
    /// Replies in time since the last late one.
    in_time_since_late: usize,
    next_probe_at: Instant,
    consecutive_lost: u32,
    consecutive_ok: u32,
    window: VecDeque<Sample>,
    /// Lost samples in `window` (kept incrementally: the window is evaluated per probe).
    lost_in_window: usize,
    /// Samples since the last `degraded` evaluation.
    since_eval: usize,
    /// Own view without damping.
    state: Health,
    degraded: bool,
    penalty: f64,
    penalty_at: Instant,
    suppressed_since: Option<Instant>,
    peer: Option<View>,
    rx: RxTracker,
}

impl LinkHealth {
    pub fn new(timings: Timings, thresholds: Thresholds, damping: Damping, now: Instant) -> Self {
        LinkHealth {
            timings,
            thresholds,
            damping,
            next_seq: 1,
            outstanding: VecDeque::new(),
            expired: VecDeque::new(),
            late_rtt: None,
            in_time_since_late: 0,
            next_probe_at: now,
            consecutive_lost: 0,
            consecutive_ok: 0,
            window: VecDeque::new(),
            lost_in_window: 0,
            since_eval: 0,
            state: Health::Unknown,
            degraded: false,
            penalty: 0.0,
            penalty_at: now,
            suppressed_since: None,
            peer: None,
            rx: RxTracker::default(),
        }
    }

    /// Number this link's probes from `seq` on (see [`crate::Engine::start_seqs_at`]).
    pub fn start_seq_at(&mut self, seq: u32) {
        self.next_seq = seq.max(1);
    }

    /// The number the next probe gets.
    pub fn next_seq(&self) -> u32 {
        self.next_seq
    }

    pub fn set_parameters(&mut self, timings: Timings, thresholds: Thresholds, damping: Damping) {
        self.timings = timings;
        self.thresholds = thresholds;
        self.damping = damping;
    }

    /// This side's view: the probe state, or `suppressed` while damped.
    pub fn own(&self) -> Health {
        if self.suppressed_since.is_some() && self.state != Health::Unknown {
            Health::Suppressed
        } else if self.state == Health::Up && self.degraded {
            Health::Degraded
        } else {
            self.state
        }
    }

    /// The view before damping: whether the path itself carries traffic.
    pub fn undamped(&self) -> Health {
        if self.state == Health::Up && self.degraded {
            Health::Degraded
        } else {
            self.state
        }
    }

    pub fn peer(&self) -> Option<View> {
        self.peer
    }

    /// The worse of both ends' views (the agreement rule), before damping. The peer's
    /// suppression is its damping, not the path's state; its `unknown` is no verdict at all
    /// (it just started and has had no answer yet: see [`LinkHealth::handle_request`]), so a
    /// restarted peer does not pull a working link from under this side while it learns.
    pub fn effective_undamped(&self) -> Health {
        let own = self.undamped();
        match self.peer {
            Some(p) if !matches!(p.health, Health::Suppressed | Health::Unknown) => {
                own.max(p.health)
            }
            _ => own,
        }
    }

    /// Whether this side or the peer damps the link.
    pub fn damped(&self) -> bool {
        self.suppressed_since.is_some() || self.peer.is_some_and(|p| p.health == Health::Suppressed)
    }

    fn timeout(&self) -> Duration {
        self.timings
            .timeout_for(self.rtt_quantile(0.95).max(self.late_rtt))
    }

    /// A probe to send now, if one is due: its sequence number.
    pub fn poll_probe(&mut self, now: Instant) -> Option<u32> {
        if now < self.next_probe_at {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1).max(1);
        self.outstanding.push_back((seq, now));
        let overdue = self
            .outstanding
            .front()
            .is_some_and(|(_, sent)| now.saturating_duration_since(*sent) >= self.timeout());
        // Fast while something is missing, and while the link is not up (so that a recovered
        // path is confirmed quickly).
        let step = if self.consecutive_lost > 0 || overdue || self.state != Health::Up {
            self.timings.fast_interval
        } else {
            self.timings.interval
        };
        self.next_probe_at = now + step;
        Some(seq)
    }

    /// Send the next probe now rather than when it is scheduled.
    pub fn probe_now(&mut self, now: Instant) {
        self.next_probe_at = self.next_probe_at.min(now);
    }

    /// When probe `seq`, outstanding or recently counted lost, was sent (`None`: neither), so
    /// that a reply's echoed send time can be checked before it is accepted.
    pub fn sent_at(&self, seq: u32) -> Option<Instant> {
        self.outstanding
            .iter()
            .chain(self.expired.iter())
            .find(|(s, _)| *s == seq)
            .map(|(_, at)| *at)
    }

    /// A reply to our probe `seq` arrived: its round-trip time, or `None` for a reply that
    /// matches no outstanding or recently lost probe (duplicated, very late or forged).
    ///
    /// A reply to a probe already counted lost leaves it lost (the run of losses and the loss
    /// ratio stand) and raises the loss timeout to its round trip, so that the timeout follows
    /// a path that became slower than it (see [`LATE_KEPT`]).
    pub fn handle_reply(&mut self, seq: u32, now: Instant) -> Option<Duration> {
        let Some(pos) = self.outstanding.iter().position(|(s, _)| *s == seq) else {
            let late = self.expired.iter().position(|(s, _)| *s == seq)?;
            let (_, sent) = self.expired.remove(late)?;
            let rtt = now.saturating_duration_since(sent);
            self.late_rtt = self.late_rtt.max(Some(rtt));
            self.in_time_since_late = 0;
            return Some(rtt);
        };
        if self.late_rtt.is_some() {
            self.in_time_since_late += 1;
            if self.in_time_since_late >= self.timings.min_samples {
                self.late_rtt = None;
            }
        }
        let (_, sent) = self.outstanding.remove(pos).unwrap_or((seq, now));
        // Probes sent before this one and still outstanding were overtaken: lost.
        for _ in 0..pos {
            if let Some(p) = self.outstanding.pop_front() {
                self.expire(p);
            }
            self.lost();
        }
        let rtt = now.saturating_duration_since(sent);
        self.push(Sample::Rtt(rtt));
        self.consecutive_lost = 0;
        self.consecutive_ok += 1;
        let up_after = if self.state == Health::Unknown {
            1
        } else {
            self.timings.up_after
        };
        if self.state != Health::Up && self.consecutive_ok >= up_after {
            if self.state == Health::Down {
                self.forget_losses();
            }
            self.state = Health::Up;
            // Back to the normal rhythm.
            self.next_probe_at = self.next_probe_at.min(now + self.timings.interval);
        }
        self.update_degraded();
        Some(rtt)
    }

    /// A request from the peer with its view of this link, at `now`. Returns false for a
    /// replay.
    pub fn handle_request(&mut self, seq: u32, view: View, now: Instant) -> bool {
        if !self.rx.accept(seq, self.timings.window) {
            return false;
        }
        if self.take_peer_view(view, now) {
            // The restarted peer numbers from its clock: this is the first of its new life.
            self.rx.accept(seq, self.timings.window);
        }
        true
    }

    /// The peer's view from a reply (replies carry it too), at `now`.
    pub fn handle_peer_view(&mut self, view: View, now: Instant) {
        self.take_peer_view(view, now);
    }

    /// Keep the peer's view. A peer that starts saying `unknown` has just (re)started, or just
    /// added the link: it has no verdict yet, and ours was formed while it was not there to
    /// answer. So its absence is forgotten: a `down` becomes `unknown` again (the first answer
    /// brings it up, as at start-up, instead of [`Timings::up_after`] of them), the run of
    /// losses and the window's losses are cleared, and a probe goes out at once. Without this
    /// the peer of a gateway that crashed and restarted kept the link down for `up_after`
    /// probes after it came back, and sent the restarted gateway a view that was only about
    /// the crash. The record of the peer's requests starts over too: its numbers jumped (they
    /// follow its clock), which would read as the loss of every number in between. Once per
    /// restart: only the change to `unknown` counts. Returns whether it was one.
    fn take_peer_view(&mut self, view: View, now: Instant) -> bool {
        let restarted =
            view.health == Health::Unknown && self.peer.is_none_or(|p| p.health != Health::Unknown);
        if restarted {
            if self.state == Health::Down {
                self.state = Health::Unknown;
                self.next_probe_at = self.next_probe_at.min(now);
            }
            self.forget_losses();
            self.rx = RxTracker::default();
        }
        self.peer = Some(view);
        restarted
    }

    /// An outage is over (or was only the peer's absence): its losses say nothing about the
    /// path's quality now (its round trips do: a slow path keeps the timeout it needs).
    fn forget_losses(&mut self) {
        self.window.retain(|s| *s != Sample::Lost);
        self.lost_in_window = 0;
        self.consecutive_lost = 0;
        self.degraded = false;
    }

    /// Expire overdue probes and decay the damping penalty.
    pub fn handle_timeout(&mut self, now: Instant) {
        let timeout = self.timeout();
        while let Some((_, sent)) = self.outstanding.front() {
            if now.saturating_duration_since(*sent) < timeout {
                break;
            }
            if let Some(p) = self.outstanding.pop_front() {
                self.expire(p);
            }
            self.lost();
            // A miss: probe again at once (BFD's poll sequence), then at the fast interval.
            self.next_probe_at = self.next_probe_at.min(now);
            if self.consecutive_lost >= self.timings.down_after && self.state != Health::Down {
                if self.state.carries() {
                    self.flap(now);
                }
                self.state = Health::Down;
            }
        }
        self.decay(now);
    }

    /// Remember a probe counted lost, for its late reply.
    fn expire(&mut self, probe: (u32, Instant)) {
        self.expired.push_back(probe);
        while self.expired.len() > LATE_KEPT {
            self.expired.pop_front();
        }
    }

    fn lost(&mut self) {
        self.push(Sample::Lost);
        self.consecutive_lost += 1;
        self.consecutive_ok = 0;
        self.update_degraded();
    }

    fn push(&mut self, s: Sample) {
        if s == Sample::Lost {
            self.lost_in_window += 1;
        }
        self.window.push_back(s);
        while self.window.len() > self.timings.window {
            if self.window.pop_front() == Some(Sample::Lost) {
                self.lost_in_window -= 1;
            }
        }
    }

    fn flap(&mut self, now: Instant) {
        self.decay(now);
        self.penalty += self.damping.penalty;
        if self.penalty > self.damping.suppress_above && self.suppressed_since.is_none() {
            self.suppressed_since = Some(now);
        }
    }

    fn decay(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.penalty_at).as_secs_f64();
        let half = self.damping.half_life.as_secs_f64().max(1e-3);
        self.penalty *= 0.5f64.powf(dt / half);
        self.penalty_at = now;
        if let Some(since) = self.suppressed_since {
            if self.penalty < self.damping.reuse_below
                || now.saturating_duration_since(since) >= self.damping.max_suppress
            {
                self.suppressed_since = None;
            }
        }
    }

    pub fn penalty(&self) -> f64 {
        self.penalty
    }

    /// When the link next needs attention: a probe to send or one to expire.
    pub fn poll_timeout(&self) -> Instant {
        let expiry = self
            .outstanding
            .front()
            .map(|(_, sent)| *sent + self.timeout());
        match expiry {
            Some(e) => e.min(self.next_probe_at),
            None => self.next_probe_at,
        }
    }

    fn rtts(&self) -> Vec<Duration> {
        self.window
            .iter()
            .filter_map(|s| match s {
                Sample::Rtt(d) => Some(*d),
                Sample::Lost => None,
            })
            .collect()
    }

    fn rtt_quantile(&self, q: f64) -> Option<Duration> {
        let mut rtts = self.rtts();
        if rtts.is_empty() {
            return None;
        }
        rtts.sort_unstable();
        let i = ((rtts.len() as f64 - 1.0) * q).round() as usize;
        rtts.get(i).copied()
    }

    fn jitter(&self) -> Option<Duration> {
        let rtts = self.rtts();
        if rtts.len() < 2 {
            return None;
        }
        let total: f64 = rtts
            .windows(2)
            .map(|w| (w[1].as_secs_f64() - w[0].as_secs_f64()).abs())
            .sum();
        Some(Duration::from_secs_f64(total / (rtts.len() - 1) as f64))
    }

    fn loss(&self) -> f64 {
        if self.window.is_empty() {
            return 0.0;
        }
        self.lost_in_window as f64 / self.window.len() as f64
    }

    /// `degraded` is a slow signal (a window of hundreds of probes): evaluating it every
    /// [`DEGRADED_EVAL_EVERY`] samples changes nothing that matters and keeps the per-probe
    /// cost constant (RTT percentiles sort the window).
    fn update_degraded(&mut self) {
        self.since_eval += 1;
        if self.since_eval < DEGRADED_EVAL_EVERY {
            return;
        }
        self.since_eval = 0;
        if self.window.len() < self.timings.min_samples {
            self.degraded = false;
            return;
        }
        let (loss, p95, jitter) = (self.loss(), self.rtt_quantile(0.95), self.jitter());
        let t = self.thresholds;
        let over = loss > t.loss
            || p95.is_some_and(|r| r > t.rtt_p95)
            || jitter.is_some_and(|j| j > t.jitter);
        let clear = loss < t.loss / 2.0
            && p95.is_none_or(|r| r.as_secs_f64() < t.rtt_p95.as_secs_f64() * 0.8)
            && jitter.is_none_or(|j| j.as_secs_f64() < t.jitter.as_secs_f64() * 0.8);
        if over {
            self.degraded = true;
        } else if clear {
            self.degraded = false;
        }
    }

    pub fn figures(&self) -> Figures {
        Figures {
            rtt_p50: self.rtt_quantile(0.5),
            rtt_p95: self.rtt_quantile(0.95),
            jitter: self.jitter(),
            loss: self.loss(),
            loss_in: self.rx.loss(),
            loss_out: self
                .peer
                .and_then(|p| p.rx_loss_ppm)
                .map(|ppm| f64::from(ppm) / 1e6),
            consecutive_lost: self.consecutive_lost,
            samples: self.window.len(),
        }
    }

    /// Our loss of the peer's requests, for the `rx_loss_ppm` field.
    pub fn rx_loss_ppm(&self) -> Option<u32> {
        self.rx.loss().map(|l| (l * 1e6).round() as u32)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a real instant as the simulated clock's origin
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn link(now: Instant) -> LinkHealth {
        LinkHealth::new(
            Timings::DEFAULT,
            Thresholds {
                loss: 0.2,
                rtt_p95: ms(150),
                jitter: ms(30),
            },
            Damping {
                penalty: 1000.0,
                half_life: Duration::from_secs(60),
                suppress_above: 3000.0,
                reuse_below: 750.0,
                max_suppress: Duration::from_secs(600),
            },
            now,
        )
    }

    #[test]
    fn the_first_answer_brings_a_new_link_up() {
        let t0 = Instant::now();
        let mut l = link(t0);
        assert_eq!(l.own(), Health::Unknown);
        let seq = l.poll_probe(t0).unwrap();
        assert!(l.handle_reply(seq, t0 + ms(2)).is_some());
        assert_eq!(l.own(), Health::Up);
    }

    #[test]
    fn a_reply_to_no_outstanding_probe_is_rejected() {
        let t0 = Instant::now();
        let mut l = link(t0);
        assert!(l.handle_reply(42, t0).is_none());
        let seq = l.poll_probe(t0).unwrap();
        assert_eq!(l.handle_reply(seq, t0 + ms(1)), Some(ms(1)));
        assert!(
            l.handle_reply(seq, t0 + ms(2)).is_none(),
            "a duplicate reply"
        );
    }

    #[test]
    fn a_late_reply_stays_lost_but_measures_the_round_trip_once() {
        let t0 = Instant::now();
        let mut l = link(t0);
        let seq = l.poll_probe(t0).unwrap();
        l.handle_timeout(t0 + ms(150));
        assert_eq!(l.figures().consecutive_lost, 1);
        assert_eq!(
            l.sent_at(seq),
            Some(t0),
            "a lost probe's reply is still recognised"
        );
        assert_eq!(l.handle_reply(seq, t0 + ms(200)), Some(ms(200)));
        let f = l.figures();
        assert_eq!(f.consecutive_lost, 1, "the probe stays lost");
        assert_eq!(
            f.rtt_p95, None,
            "a late round trip stays out of the statistics"
        );
        assert_eq!(l.own(), Health::Unknown, "a late reply is no answer");
        assert!(l.handle_reply(seq, t0 + ms(201)).is_none(), "a duplicate");
        assert!(l.sent_at(seq).is_none());
        // It raised the loss timeout (2 × 200 + 20 ms): a 300 ms round trip is now in time.
        let t1 = t0 + ms(250);
        let next = l.poll_probe(t1).unwrap();
        l.handle_timeout(t1 + ms(300));
        assert_eq!(l.handle_reply(next, t1 + ms(300)), Some(ms(300)));
        assert_eq!(l.figures().consecutive_lost, 0);
        assert_eq!(l.own(), Health::Up);
    }

    #[test]
    fn the_timeout_a_late_reply_raised_falls_back_once_replies_in_time_measure_the_path() {
        let t0 = Instant::now();
        let mut l = link(t0);
        let seq = l.poll_probe(t0).unwrap();
        l.handle_timeout(t0 + ms(150));
        l.handle_reply(seq, t0 + ms(1000)); // a one-off stall
        let mut t = t0 + ms(1000);
        for _ in 0..Timings::DEFAULT.min_samples {
            let s = l.poll_probe(t).unwrap();
            l.handle_reply(s, t + ms(1));
            t += ms(100);
        }
        // Back to the profile's 150 ms: a probe unanswered for 200 ms is lost.
        let s = l.poll_probe(t).unwrap();
        l.handle_timeout(t + ms(200));
        assert_eq!(l.figures().consecutive_lost, 1);
        assert!(
            l.handle_reply(s, t + ms(201)).is_some(),
            "late, still measured"
        );
    }

    #[test]
    fn a_path_slower_than_the_loss_timeout_is_measured_and_comes_up() {
        // Every reply takes 200 ms, beyond the default 150 ms loss timeout: the first probes
        // are lost, their late replies raise the timeout (2 × p95 + 20 ms), the rest answer.
        let t0 = Instant::now();
        let mut l = link(t0);
        let rtt = ms(200);
        let mut in_flight: Vec<(u32, Instant)> = Vec::new();
        let mut t = t0;
        while t < t0 + Duration::from_secs(10) {
            in_flight.retain(|&(seq, sent)| {
                if t >= sent + rtt {
                    l.handle_reply(seq, sent + rtt);
                    false
                } else {
                    true
                }
            });
            l.handle_timeout(t);
            if let Some(seq) = l.poll_probe(t) {
                in_flight.push((seq, t));
            }
            t += ms(1);
        }
        let f = l.figures();
        assert_eq!(l.own(), Health::Degraded, "{f:?}");
        assert_eq!(f.consecutive_lost, 0, "{f:?}");
        assert!(f.rtt_p95 >= Some(ms(200)), "{f:?}");
        assert!(f.loss < 0.05, "{f:?}");
    }

    #[test]
    fn requests_are_accepted_once_and_not_when_too_old() {
        let view = View {
            health: Health::Up,
            pinned: false,
            draining: false,
            priority: 0,
            fingerprint: 0,
            rx_loss_ppm: None,
        };
        let t0 = Instant::now();
        let mut l = link(t0);
        assert!(l.handle_request(100, view, t0));
        assert!(!l.handle_request(100, view, t0), "replay");
        assert!(l.handle_request(99, view, t0), "reordered, not yet seen");
        assert!(l.handle_request(200, view, t0));
        assert!(!l.handle_request(120, view, t0), "older than the 64 last");
    }

    #[test]
    fn a_peer_that_says_unknown_again_has_restarted_and_one_answer_brings_the_link_back() {
        let t0 = Instant::now();
        let mut l = link(t0);
        let view = |health| View {
            health,
            pinned: false,
            draining: false,
            priority: 0,
            fingerprint: 0,
            rx_loss_ppm: None,
        };
        let s = l.poll_probe(t0).unwrap();
        l.handle_reply(s, t0 + ms(1));
        l.handle_peer_view(view(Health::Up), t0 + ms(1));
        assert!(l.handle_request(5000, view(Health::Up), t0 + ms(2)));
        // The peer dies: unanswered probes until `down`.
        let mut t = t0 + ms(100);
        while l.own() != Health::Down {
            l.handle_timeout(t);
            l.poll_probe(t);
            t += ms(10);
        }
        assert_eq!(l.effective_undamped(), Health::Down);
        // Its new life: numbered from its clock, above the old numbers, and `unknown`.
        assert!(l.handle_request(9000, view(Health::Unknown), t));
        assert_eq!(l.own(), Health::Unknown, "the crash's losses are forgotten");
        assert_eq!(l.figures().consecutive_lost, 0);
        assert_eq!(
            l.figures().loss_in,
            None,
            "the old numbers are forgotten too"
        );
        assert_eq!(l.poll_timeout(), t, "a probe goes out at once");
        let s = l.poll_probe(t).unwrap();
        l.handle_reply(s, t + ms(4));
        assert_eq!(l.own(), Health::Up, "one answer, as at start-up");
        assert_eq!(
            l.effective_undamped(),
            Health::Up,
            "its `unknown` is no verdict"
        );
        assert!(
            l.penalty() > 900.0,
            "the crash still counts as a flap for damping"
        );
        assert!(
            !l.handle_request(9000, view(Health::Unknown), t + ms(5)),
            "replay"
        );
        // Only the change to `unknown` counts: a later `unknown` does not wipe a new outage.
        let mut t = t + ms(100);
        while l.own() != Health::Down {
            l.handle_timeout(t);
            l.poll_probe(t);
            t += ms(10);
        }
        assert!(l.handle_request(9001, view(Health::Unknown), t));
        assert_eq!(l.own(), Health::Down);
        assert!(l.figures().consecutive_lost >= 10);
    }

    #[test]
    fn a_restarted_peer_heard_in_a_reply_is_accepted_even_if_its_clock_went_back() {
        let t0 = Instant::now();
        let mut l = link(t0);
        let view = |health| View {
            health,
            pinned: false,
            draining: false,
            priority: 0,
            fingerprint: 0,
            rx_loss_ppm: None,
        };
        assert!(l.handle_request(5000, view(Health::Up), t0));
        // Restarted with its clock set back: its requests number below the last one seen.
        assert!(!l.handle_request(4000, view(Health::Unknown), t0 + ms(1)));
        // Its reply to our probe (authenticated, matched to our request) says `unknown`: the
        // record of its numbers starts over, and its requests are taken from then on.
        let s = l.poll_probe(t0 + ms(1)).unwrap();
        l.handle_reply(s, t0 + ms(3)).unwrap();
        l.handle_peer_view(view(Health::Unknown), t0 + ms(3));
        assert!(l.handle_request(4001, view(Health::Unknown), t0 + ms(4)));
        assert!(
            !l.handle_request(4001, view(Health::Unknown), t0 + ms(4)),
            "replay"
        );
    }

    #[test]
    fn probing_speeds_up_after_a_miss() {
        let t0 = Instant::now();
        let mut l = link(t0);
        let s = l.poll_probe(t0).unwrap();
        l.handle_reply(s, t0 + ms(1));
        // Unanswered from here on.
        let mut t = t0 + ms(100);
        let mut sent = vec![];
        while t < t0 + ms(1000) {
            l.handle_timeout(t);
            if l.poll_probe(t).is_some() {
                sent.push(t - t0);
            }
            t += ms(5);
        }
        // 100 and 200 at the normal rhythm; the first is overdue at 250: one at once, then
        // every 50 ms.
        assert_eq!(sent[..5], [ms(100), ms(200), ms(250), ms(300), ms(350)]);
        assert_eq!(l.own(), Health::Down);
    }
}
