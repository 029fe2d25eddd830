//! Path-MTU search of one link in one direction, DPLPMTUD style (RFC 8899): padded probes of a
//! chosen size sent through the tunnel, each confirmed by a small reply naming its size, and
//! never a word from ICMP, which clouds and NATs filter.
//!
//! Sizes are inner IP packet sizes (what the TUN carries; the underlay datagram adds the
//! WireGuard, UDP and IP overhead). The search keeps the largest size confirmed, the
//! *PLPMTU*, between a floor (at least 1280, IPv6's minimum) and a ceiling:
//!
//! 1. **Jumbo first.** The ceiling is tried first: on a jumbo interconnect one round trip
//!    settles it.
//! 2. **Binary search** otherwise, between the largest size confirmed and the smallest one
//!    lost, to within [`PmtuConfig::precision`] bytes. A size counts as too large only after
//!    [`PmtuConfig::max_probes`] probes of it are lost in a row (RFC 8899's MAX_PROBES), so a
//!    random loss costs one retry, not the jumbo path.
//! 3. **Confirmation.** Once complete, a probe of the PLPMTU itself goes out every
//!    [`PmtuConfig::confirm_interval`]. When `max_probes` of them are lost in a row while the
//!    link answers its small probes, the path shrank under us (a black hole): the PLPMTU drops
//!    to the floor at once and the search starts again below the size that failed.
//! 4. **Raise.** Every [`PmtuConfig::raise_interval`] below the ceiling, the search tries
//!    upwards again (RFC 8899's PMTU_RAISE_TIMER).
//!
//! Losses count only while the shell says the link is up: a dead link is not a small path.
//! A peer that never confirms even the floor (wireguard-go, agentd 0.1.0) leaves the search
//! [`PmtuState::Unsupported`]: the shell keeps the configured MTU.
//!
//! Sans-IO like the rest of the core: [`PmtuSearch::poll_probe`] says which size to send now,
//! [`PmtuSearch::on_confirmed`] takes a reply, [`PmtuSearch::poll_timeout`] says when to call
//! again, and [`PmtuSearch::poll_change`] reports each change of the PLPMTU with its reason.

use std::time::{Duration, Instant};

/// IPv6's minimum link MTU; Linux removes a device's IPv6 addresses below it.
pub const MIN_FLOOR: u16 = 1280;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PmtuConfig {
    /// The size used until something larger is confirmed, and after a black hole.
    pub floor: u16,
    /// The largest size tried: what the TUN and the data path accept.
    pub ceiling: u16,
    /// How long a probe may take before it counts as lost.
    pub probe_timeout: Duration,
    /// Probes of the PLPMTU lost in a row (while the link answers) before they count as a
    /// black hole; RFC 8899's MAX_PROBES.
    pub max_probes: u8,
    /// Probes of a larger size lost in a row before it counts as too large while searching.
    /// Fewer than `max_probes`: a size wrongly found too large costs only jumbo until the next
    /// raise, a black hole wrongly found costs the floor.
    pub search_probes: u8,
    /// The search stops when the sizes confirmed and lost are this close.
    pub precision: u16,
    /// How often a complete search confirms the PLPMTU.
    pub confirm_interval: Duration,
    /// How long a complete search below the ceiling waits before trying upwards again.
    pub raise_interval: Duration,
}

impl PmtuConfig {
    /// The defaults for a floor and a ceiling: probes lost after 200 ms, two of a size in a row
    /// while searching and three of the PLPMTU for a black hole, 8 bytes of precision, a
    /// confirmation every 500 ms (a black hole is found within about 1.1 s), a raise every 10
    /// minutes.
    pub fn new(floor: u16, ceiling: u16) -> PmtuConfig {
        let floor = floor.max(MIN_FLOOR);
        PmtuConfig {
            floor,
            ceiling: ceiling.max(floor),
            probe_timeout: Duration::from_millis(200),
            max_probes: 3,
            search_probes: 2,
            precision: 8,
            confirm_interval: Duration::from_millis(500),
            raise_interval: Duration::from_secs(600),
        }
    }
}

/// Where the search is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PmtuState {
    /// Looking for the largest size; the PLPMTU is what is confirmed so far.
    Searching,
    /// Found; confirming it periodically.
    Complete,
    /// The peer never confirmed a probe: path MTU discovery is off for this link.
    Unsupported,
}

/// Why the PLPMTU changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PmtuReason {
    /// A larger size was confirmed.
    Confirmed,
    /// Probes of the PLPMTU itself were lost while the link answered: fall back to the floor.
    BlackHole,
    /// The configuration changed (a new floor or ceiling).
    Config,
}

impl PmtuReason {
    pub fn as_str(self) -> &'static str {
        match self {
            PmtuReason::Confirmed => "confirmed",
            PmtuReason::BlackHole => "black_hole",
            PmtuReason::Config => "config",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PmtuChange {
    pub from: u16,
    pub to: u16,
    pub reason: PmtuReason,
    pub at: Instant,
}

/// Counters for status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PmtuCounts {
    pub probes_sent: u64,
    pub probes_confirmed: u64,
    pub probes_lost: u64,
    pub black_holes: u64,
}

/// Probes sent at once while searching: each round of one timeout narrows the interval left
/// by this plus one, so 1280..9000 takes about five rounds.
const ROUND: usize = 4;

#[derive(Debug, Clone)]
pub struct PmtuSearch {
    config: PmtuConfig,
    state: PmtuState,
    /// The largest size confirmed so far (grows during a search).
    plpmtu: u16,
    /// The size last announced ([`Self::mtu`]): the PLPMTU once a search completes, the floor
    /// at once after a black hole.
    announced: u16,
    /// When the current round started, and when a small probe of the link's was last
    /// answered: a round's losses count only if the link answered meanwhile.
    round_started: Option<Instant>,
    alive_at: Option<Instant>,
    /// The smallest size found too large: the exclusive upper bound of the search.
    too_large: u32,
    /// The sizes of the current round, the probes of it sent so far, and when it times out.
    round: Vec<u16>,
    in_flight: Vec<u16>,
    round_deadline: Option<Instant>,
    /// While searching: each size's losses in a row. Confirming: the PLPMTU's, at index 0.
    losses: Vec<(u16, u8)>,
    /// When the next round may go (confirmation and back-off pacing).
    next_probe: Instant,
    /// When a complete search below the ceiling tries upwards.
    raise_at: Option<Instant>,
    link_up: bool,
    /// Whether the peer ever confirmed a probe.
    ever_confirmed: bool,
    /// Retries of the floor since the search said unsupported (their interval doubles).
    unsupported_tries: u32,
    changes: Vec<PmtuChange>,
    counts: PmtuCounts,
}

impl PmtuSearch {
    pub fn new(config: PmtuConfig, now: Instant) -> PmtuSearch {
        PmtuSearch {
            state: PmtuState::Searching,
            plpmtu: config.floor,
            announced: config.floor,
            round_started: None,
            alive_at: None,
            too_large: u32::from(config.ceiling) + 1,
            round: Vec::new(),
            in_flight: Vec::new(),
            round_deadline: None,
            losses: Vec::new(),
            next_probe: now,
            raise_at: None,
            link_up: false,
            ever_confirmed: false,
            unsupported_tries: 0,
            changes: Vec::new(),
            counts: PmtuCounts::default(),
            config,
        }
    }

    /// The path MTU to use: the largest size confirmed by the last complete search (the
    /// floor until one completes, and after a black hole).
    pub fn mtu(&self) -> u16 {
        self.announced
    }

    /// A small probe of the link's was answered: the link is alive, so padded probes lost
    /// meanwhile were lost for their size.
    pub fn on_link_alive(&mut self, now: Instant) {
        self.alive_at = Some(now);
    }

    pub fn state(&self) -> PmtuState {
        self.state
    }

    pub fn counts(&self) -> PmtuCounts {
        self.counts
    }

    pub fn config(&self) -> PmtuConfig {
        self.config
    }

    /// Whether the peer ever confirmed a probe (the PLPMTU is measured, not assumed).
    pub fn confirmed(&self) -> bool {
        self.ever_confirmed
    }

    /// Whether the link answers its small probes. Losses of padded probes count only while it
    /// does; a link coming up probes at once.
    pub fn set_link_up(&mut self, up: bool, now: Instant) {
        if up && !self.link_up {
            self.next_probe = now;
            self.in_flight.clear();
            self.round_deadline = None;
            self.losses.clear();
        }
        self.link_up = up;
    }

    /// A new floor or ceiling (a reload): the PLPMTU is kept if it still fits, and the search
    /// starts again from it.
    pub fn reconfigure(&mut self, config: PmtuConfig, now: Instant) {
        self.config = config;
        self.plpmtu = self.plpmtu.clamp(config.floor, config.ceiling);
        let kept = self.announced.clamp(config.floor, config.ceiling);
        self.announce(kept, PmtuReason::Config, now);
        self.search_up(now);
    }

    /// The size of the next probe to send now, if one is due: call until `None`, then again
    /// at [`Self::poll_timeout`].
    pub fn poll_probe(&mut self, now: Instant) -> Option<u16> {
        self.expire(now);
        if !self.link_up || now < self.next_probe {
            return None;
        }
        if self.state == PmtuState::Complete
            && self.round_deadline.is_none()
            && self.raise_at.is_some_and(|at| now >= at)
        {
            self.search_up(now);
        }
        if self.round_deadline.is_none() {
            self.start_round(now);
        }
        // The round's sizes not yet handed out are those after the last one sent.
        let size = *self.round.get(self.in_flight.len())?;
        self.in_flight.push(size);
        self.counts.probes_sent += 1;
        Some(size)
    }

    /// The peer confirmed a probe of `size` bytes. Replies to sizes not in flight (late, or
    /// duplicated) still prove the size crosses the path.
    pub fn on_confirmed(&mut self, size: u16, now: Instant) {
        if size > self.config.ceiling || size < self.config.floor {
            return;
        }
        self.counts.probes_confirmed += 1;
        self.ever_confirmed = true;
        self.losses.retain(|&(s, _)| s > size);
        self.plpmtu = self.plpmtu.max(size);
        match self.state {
            PmtuState::Unsupported => {
                // A peer upgraded in place: search from the top again.
                self.search_up(now);
            }
            PmtuState::Searching => {
                // The round is over once nothing in it can raise the PLPMTU any more.
                if self.in_flight.iter().all(|&s| s <= self.plpmtu) {
                    self.end_round(now);
                    self.next_probe = now;
                    self.after_round(now);
                }
            }
            PmtuState::Complete => {
                if self.in_flight.contains(&size) {
                    self.end_round(now);
                    self.next_probe = now + self.config.confirm_interval;
                }
            }
        }
    }

    /// When to call [`Self::poll_probe`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.link_up {
            return None;
        }
        Some(self.round_deadline.unwrap_or(self.next_probe))
    }

    /// The next change of the PLPMTU, oldest first.
    pub fn poll_change(&mut self) -> Option<PmtuChange> {
        if self.changes.is_empty() {
            None
        } else {
            Some(self.changes.remove(0))
        }
    }

    /// The sizes of the round to send: while searching, up to [`ROUND`] sizes spread over the
    /// interval left (and the sizes lost once, tried again); confirming, the PLPMTU.
    fn round_sizes(&self) -> Vec<u16> {
        match self.state {
            PmtuState::Complete => vec![self.plpmtu],
            PmtuState::Unsupported => vec![self.config.floor],
            PmtuState::Searching if !self.ever_confirmed => {
                // The ceiling (a jumbo path settles in one round trip) and the floor (does the
                // peer answer padded probes at all?).
                let mut v = vec![self.config.ceiling, self.config.floor];
                v.dedup();
                v
            }
            PmtuState::Searching => {
                let lo = u32::from(self.plpmtu);
                let hi = self.too_large;
                let mut v: Vec<u16> = self
                    .losses
                    .iter()
                    .map(|&(s, _)| s)
                    .filter(|&s| u32::from(s) > lo && u32::from(s) < hi)
                    .collect();
                if hi == u32::from(self.config.ceiling) + 1 && !v.contains(&self.config.ceiling) {
                    v.push(self.config.ceiling);
                }
                let parts = (ROUND + 1) as u32;
                for i in 1..parts {
                    let c = lo + (hi - lo) * i / parts;
                    if c > lo && c < hi && v.len() < ROUND + 2 {
                        v.push(c as u16);
                    }
                }
                v.sort_unstable();
                v.dedup();
                v
            }
        }
    }

    fn start_round(&mut self, now: Instant) {
        self.round = self.round_sizes();
        self.round_started = Some(now);
        self.in_flight.clear();
        self.round_deadline = Some(now + self.config.probe_timeout);
    }

    fn end_round(&mut self, _now: Instant) {
        self.in_flight.clear();
        self.round_deadline = None;
    }

    /// A round timed out: count what it lost.
    fn expire(&mut self, now: Instant) {
        if self.round_deadline.is_none_or(|d| now < d) {
            return;
        }
        let sent = std::mem::take(&mut self.in_flight);
        self.round_deadline = None;
        self.next_probe = now;
        // A dead link is not a small path: losses count only if the link's small probes were
        // answered while the round was out.
        let alive = self
            .alive_at
            .zip(self.round_started)
            .is_some_and(|(alive, started)| alive >= started);
        if !self.link_up || !alive {
            return;
        }
        for size in sent {
            if self.ever_confirmed && size <= self.plpmtu && self.state == PmtuState::Searching {
                continue; // confirmed meanwhile, or below what is
            }
            self.counts.probes_lost += 1;
            match self.losses.iter_mut().find(|(s, _)| *s == size) {
                Some((_, n)) => *n += 1,
                None => self.losses.push((size, 1)),
            }
        }
        match self.state {
            PmtuState::Searching => {
                let limit = self.config.search_probes;
                let floor_lost = self
                    .losses
                    .iter()
                    .any(|&(s, n)| s == self.config.floor && n >= limit);
                if !self.ever_confirmed && floor_lost {
                    self.state = PmtuState::Unsupported;
                    self.losses.clear();
                    self.unsupported_tries = 0;
                    self.next_probe = now + self.unsupported_retry();
                    return;
                }
                for &(s, n) in &self.losses {
                    if n >= limit && u32::from(s) < self.too_large && s > self.plpmtu {
                        self.too_large = u32::from(s);
                    }
                }
                let too_large = self.too_large;
                self.losses.retain(|&(s, _)| u32::from(s) < too_large);
                self.after_round(now);
            }
            PmtuState::Complete => {
                let lost = self
                    .losses
                    .iter()
                    .find(|(s, _)| *s == self.plpmtu)
                    .map_or(0, |&(_, n)| n);
                if lost >= self.config.max_probes {
                    // The PLPMTU itself no longer crosses while the link answers: a black hole.
                    self.counts.black_holes += 1;
                    let from = self.plpmtu;
                    self.plpmtu = self.config.floor;
                    self.announce(self.config.floor, PmtuReason::BlackHole, now);
                    self.losses.clear();
                    self.state = PmtuState::Searching;
                    self.too_large = u32::from(from);
                    self.after_round(now);
                }
                // Otherwise the retry goes at once (next_probe = now).
            }
            PmtuState::Unsupported => {
                self.losses.clear();
                self.unsupported_tries = self.unsupported_tries.saturating_add(1);
                self.next_probe = now + self.unsupported_retry();
            }
        }
    }

    /// After a round while searching: done when the interval is within the precision.
    fn after_round(&mut self, now: Instant) {
        if self.state != PmtuState::Searching || !self.ever_confirmed {
            return;
        }
        let lo = u32::from(self.plpmtu);
        let hi = self.too_large;
        if hi <= lo + 1 || hi - lo <= u32::from(self.config.precision) {
            self.complete(now);
        }
    }

    /// The floor is tried again after 1 s, then twice as long each time up to a minute (or
    /// the raise interval): a peer only ever probed because it says it answers (the shell
    /// sends nothing to one that does not) may have lost the first rounds to its own start,
    /// and a floor probe is cheap.
    fn unsupported_retry(&self) -> Duration {
        let cap = self.config.raise_interval.min(Duration::from_secs(60));
        Duration::from_secs(1u64 << self.unsupported_tries.min(6)).min(cap)
    }

    fn complete(&mut self, now: Instant) {
        self.announce(self.plpmtu, PmtuReason::Confirmed, now);
        self.state = PmtuState::Complete;
        self.losses.clear();
        self.end_round(now);
        self.next_probe = now + self.config.confirm_interval;
        self.raise_at =
            (self.plpmtu < self.config.ceiling).then_some(now + self.config.raise_interval);
    }

    /// Try upwards from the PLPMTU: the ceiling among the first sizes.
    fn search_up(&mut self, now: Instant) {
        self.raise_at = None;
        self.too_large = u32::from(self.config.ceiling) + 1;
        self.losses.clear();
        self.end_round(now);
        self.next_probe = now;
        if self.plpmtu >= self.config.ceiling {
            self.complete(now);
        } else {
            self.state = PmtuState::Searching;
        }
    }

    fn announce(&mut self, to: u16, reason: PmtuReason, at: Instant) {
        if to == self.announced {
            return;
        }
        self.changes.push(PmtuChange {
            from: self.announced,
            to,
            reason,
            at,
        });
        self.announced = to;
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a real instant as the simulated clock's origin
mod tests {
    use super::*;

    /// A simulated path: probes up to `mtu` cross (and are confirmed after `rtt`), larger ones
    /// vanish; the probes numbered in `lose` (from 1) are lost whatever their size.
    struct Path {
        mtu: u16,
        rtt: Duration,
        lose: Vec<u64>,
        sent: u64,
        in_flight: Vec<(Instant, u16)>,
        t0: Instant,
        /// The link's small probes are answered.
        alive: bool,
    }

    impl Path {
        fn new(mtu: u16) -> Path {
            Path {
                mtu,
                rtt: Duration::from_millis(2),
                lose: Vec::new(),
                sent: 0,
                in_flight: Vec::new(),
                t0: Instant::now(),
                alive: true,
            }
        }
    }

    /// Runs the search on `path` for `dur` in 1 ms steps from `*now`; returns the probe sizes.
    fn run(s: &mut PmtuSearch, path: &mut Path, now: &mut Instant, dur: Duration) -> Vec<u16> {
        let end = *now + dur;
        let mut sizes = Vec::new();
        while *now < end {
            let t = *now;
            let due: Vec<u16> = path
                .in_flight
                .iter()
                .filter(|(at, _)| *at <= t)
                .map(|(_, s)| *s)
                .collect();
            path.in_flight.retain(|(at, _)| *at > t);
            for size in due {
                s.on_confirmed(size, t);
            }
            // The link's small probes cross while the path is up at all.
            if path.alive
                && t.saturating_duration_since(path.t0)
                    .as_millis()
                    .is_multiple_of(100)
            {
                s.on_link_alive(t);
            }
            while let Some(size) = s.poll_probe(t) {
                sizes.push(size);
                path.sent += 1;
                let lost = path.lose.contains(&path.sent);
                if size <= path.mtu && !lost {
                    path.in_flight.push((t + path.rtt, size));
                }
            }
            *now += Duration::from_millis(1);
        }
        sizes
    }

    fn changes(s: &mut PmtuSearch) -> Vec<(u16, u16, PmtuReason)> {
        std::iter::from_fn(|| s.poll_change())
            .map(|c| (c.from, c.to, c.reason))
            .collect()
    }

    fn search(floor: u16, ceiling: u16, now: Instant) -> PmtuSearch {
        let mut s = PmtuSearch::new(PmtuConfig::new(floor, ceiling), now);
        s.set_link_up(true, now);
        s
    }

    #[test]
    fn a_jumbo_path_is_confirmed_by_its_first_probe() {
        let mut now = Instant::now();
        let mut s = search(1280, 8920, now);
        let mut path = Path::new(8920);
        let sizes = run(&mut s, &mut path, &mut now, Duration::from_millis(20));
        // The ceiling and the floor go out together; the ceiling's reply settles it.
        assert_eq!(sizes, vec![8920, 1280]);
        assert_eq!(s.mtu(), 8920);
        assert_eq!(s.state(), PmtuState::Complete);
        assert_eq!(changes(&mut s), vec![(1280, 8920, PmtuReason::Confirmed)]);
    }

    #[test]
    fn a_1500_byte_underlay_is_found_within_precision_in_a_few_seconds() {
        for mtu in [1440, 1420, 1380, 1300, 8440, 4000] {
            let start = Instant::now();
            let mut now = start;
            let mut s = search(1280, 8920, now);
            let mut path = Path::new(mtu);
            run(&mut s, &mut path, &mut now, Duration::from_secs(10));
            assert_eq!(s.state(), PmtuState::Complete, "mtu {mtu}");
            assert!(
                s.mtu() <= mtu && mtu - s.mtu() < 8,
                "mtu {mtu}: {}",
                s.mtu()
            );
            // Never announced a size larger than the path.
            assert!(changes(&mut s).iter().all(|c| c.1 <= mtu));
            let mut s2 = search(1280, 8920, start);
            let mut now2 = start;
            let mut path2 = Path::new(mtu);
            let mut took = Duration::ZERO;
            for _ in 0..100 {
                run(&mut s2, &mut path2, &mut now2, Duration::from_millis(100));
                took += Duration::from_millis(100);
                if s2.state() == PmtuState::Complete {
                    break;
                }
            }
            // Five rounds or so, a lost size costing two timeouts: well within 5 s.
            assert!(took <= Duration::from_secs(3), "mtu {mtu} took {took:?}");
        }
    }

    #[test]
    fn random_loss_costs_a_retry_not_the_jumbo_path() {
        let mut now = Instant::now();
        let mut s = search(1280, 8920, now);
        let mut path = Path::new(8920);
        path.lose = vec![1]; // the first probe of the ceiling
        run(&mut s, &mut path, &mut now, Duration::from_secs(3));
        assert_eq!(s.mtu(), 8920);
        assert_eq!(s.counts().probes_lost, 1);
        // Once complete, one lost confirmation is retried, not a black hole.
        let sent = path.sent;
        path.lose = vec![sent + 1, sent + 2];
        run(&mut s, &mut path, &mut now, Duration::from_secs(3));
        assert_eq!(s.mtu(), 8920);
        assert_eq!(s.counts().black_holes, 0);
    }

    #[test]
    fn a_shrinking_path_is_a_black_hole_found_within_two_seconds_then_searched_again() {
        let mut now = Instant::now();
        let mut s = search(1280, 8920, now);
        let mut path = Path::new(8920);
        run(&mut s, &mut path, &mut now, Duration::from_secs(2));
        assert_eq!(s.mtu(), 8920);
        changes(&mut s);
        path.mtu = 1400;
        let shrunk = now;
        let mut fell_at = None;
        for _ in 0..400 {
            run(&mut s, &mut path, &mut now, Duration::from_millis(10));
            if fell_at.is_none() && s.mtu() < 8920 {
                fell_at = Some(now);
            }
        }
        let fell = fell_at.expect("the black hole was noticed") - shrunk;
        assert!(
            fell <= Duration::from_millis(1500),
            "noticed after {fell:?}"
        );
        let c = changes(&mut s);
        assert_eq!(c[0], (8920, 1280, PmtuReason::BlackHole));
        assert_eq!(s.counts().black_holes, 1);
        assert!(s.mtu() <= 1400 && s.mtu() > 1390, "{}", s.mtu());
        assert_eq!(s.state(), PmtuState::Complete);
    }

    #[test]
    fn random_loss_never_makes_it_overestimate_and_it_ends_close() {
        // 5 % of probes lost at random (a fixed LCG, many seeds): the PLPMTU never exceeds the
        // path, and ends within a few percent of it in most runs.
        let mut close = 0;
        for seed in 1..=200u64 {
            let mut x = seed;
            let mut lose = Vec::new();
            for n in 1..2000u64 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                if (x >> 33) % 100 < 5 {
                    lose.push(n);
                }
            }
            let mut now = Instant::now();
            let mut s = search(1280, 8920, now);
            let mut path = Path::new(1440);
            path.lose = lose;
            run(&mut s, &mut path, &mut now, Duration::from_secs(10));
            assert!(s.mtu() <= 1440, "seed {seed}: {}", s.mtu());
            assert!(std::iter::from_fn(|| s.poll_change()).all(|c| c.to <= 1440));
            if s.mtu() >= 1400 {
                close += 1;
            }
        }
        assert!(
            close >= 190,
            "only {close} of 200 runs ended within 40 bytes"
        );
    }

    #[test]
    fn a_dead_link_is_not_a_small_path() {
        let mut now = Instant::now();
        let mut s = search(1280, 8920, now);
        let mut path = Path::new(8920);
        run(&mut s, &mut path, &mut now, Duration::from_secs(1));
        assert_eq!(s.mtu(), 8920);
        // Everything is lost, but the link is known down: nothing counts.
        path.mtu = 0;
        path.alive = false;
        s.set_link_up(false, now);
        run(&mut s, &mut path, &mut now, Duration::from_secs(5));
        assert_eq!(s.mtu(), 8920);
        assert_eq!(s.counts().black_holes, 0);
        assert_eq!(s.poll_timeout(), None);
        path.mtu = 8920;
        path.alive = true;
        s.set_link_up(true, now);
        run(&mut s, &mut path, &mut now, Duration::from_secs(1));
        assert_eq!(s.mtu(), 8920);
        assert_eq!(s.state(), PmtuState::Complete);
    }

    #[test]
    fn a_cut_not_yet_seen_by_the_links_health_is_not_a_black_hole() {
        let mut now = Instant::now();
        let mut s = search(1280, 8920, now);
        let mut path = Path::new(8920);
        run(&mut s, &mut path, &mut now, Duration::from_secs(1));
        // Everything is lost and no small probe is answered; the shell still says up (its
        // health takes a moment to notice).
        path.mtu = 0;
        path.alive = false;
        run(&mut s, &mut path, &mut now, Duration::from_secs(5));
        assert_eq!(s.mtu(), 8920);
        assert_eq!(s.counts().black_holes, 0);
        path.mtu = 8920;
        path.alive = true;
        run(&mut s, &mut path, &mut now, Duration::from_secs(2));
        assert_eq!(s.mtu(), 8920);
        assert_eq!(s.state(), PmtuState::Complete);
    }

    #[test]
    fn a_search_announces_once_when_it_completes() {
        let mut now = Instant::now();
        let mut s = search(1280, 8920, now);
        let mut path = Path::new(1420);
        run(&mut s, &mut path, &mut now, Duration::from_secs(5));
        let c = changes(&mut s);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!((c[0].0, c[0].2), (1280, PmtuReason::Confirmed));
        assert!(c[0].1 > 1412 && c[0].1 <= 1420);
    }

    #[test]
    fn the_search_raises_again_after_the_raise_interval() {
        let mut now = Instant::now();
        let mut cfg = PmtuConfig::new(1280, 8920);
        cfg.raise_interval = Duration::from_secs(5);
        let mut s = PmtuSearch::new(cfg, now);
        s.set_link_up(true, now);
        let mut path = Path::new(1420);
        run(&mut s, &mut path, &mut now, Duration::from_secs(4));
        assert!(s.mtu() <= 1420 && s.mtu() > 1410);
        path.mtu = 8920; // the circuit was upgraded
        run(&mut s, &mut path, &mut now, Duration::from_secs(3));
        assert_eq!(s.mtu(), 8920);
    }

    #[test]
    fn a_peer_that_never_confirms_leaves_the_floor_and_says_unsupported() {
        let mut now = Instant::now();
        let mut s = search(1280, 8920, now);
        let mut path = Path::new(0); // the link answers, but no padded probe is confirmed
        let sizes = run(&mut s, &mut path, &mut now, Duration::from_secs(10));
        assert_eq!(s.state(), PmtuState::Unsupported);
        assert_eq!(s.mtu(), 1280);
        assert!(changes(&mut s).is_empty());
        // It gave up after the search reached the floor, and then probes the floor again
        // after 1 s, 2 s, 4 s… up to once a minute.
        let before = sizes.len();
        let sizes = run(&mut s, &mut path, &mut now, Duration::from_secs(30));
        assert!(
            sizes.len() <= 3 && sizes.iter().all(|&x| x == 1280),
            "{sizes:?} after giving up ({before} before)"
        );
        let sizes = run(&mut s, &mut path, &mut now, Duration::from_secs(120));
        assert!(sizes.len() <= 3, "{sizes:?} in two minutes at the slowest");
        // A peer upgraded in place is found again.
        path.mtu = 8920;
        run(&mut s, &mut path, &mut now, Duration::from_secs(70));
        assert_eq!(s.mtu(), 8920);
    }

    #[test]
    fn the_floor_is_never_below_1280_and_sizes_stay_within_the_bounds() {
        let cfg = PmtuConfig::new(576, 1000);
        assert_eq!(cfg.floor, 1280);
        assert_eq!(cfg.ceiling, 1280);
        let mut now = Instant::now();
        let mut s = search(1280, 8920, now);
        let mut path = Path::new(3000);
        let sizes = run(&mut s, &mut path, &mut now, Duration::from_secs(5));
        assert!(sizes.iter().all(|&z| (1280..=8920).contains(&z)));
        // Confirmations outside the bounds are ignored.
        s.on_confirmed(9500, now);
        s.on_confirmed(600, now);
        assert!(s.mtu() <= 3000);
    }

    #[test]
    fn a_reload_keeps_what_still_fits() {
        let mut now = Instant::now();
        let mut s = search(1280, 8920, now);
        let mut path = Path::new(8920);
        run(&mut s, &mut path, &mut now, Duration::from_secs(1));
        changes(&mut s);
        s.reconfigure(PmtuConfig::new(1280, 1420), now);
        assert_eq!(s.mtu(), 1420);
        assert_eq!(changes(&mut s)[0].2, PmtuReason::Config);
        assert_eq!(s.state(), PmtuState::Complete);
    }

    /// The first rounds lost (the peer still starting), then every probe answered: the
    /// search, which gave up, finds the path within seconds, not a minute later.
    #[test]
    fn a_peer_that_answers_only_after_the_first_rounds_is_found_within_seconds() {
        let t0 = Instant::now();
        let mut s = PmtuSearch::new(PmtuConfig::new(1280, 8920), t0);
        s.set_link_up(true, t0);
        let mut now = t0;
        let answers_from = t0 + Duration::from_secs(1);
        let mut pending: Vec<(Instant, u16)> = Vec::new();
        while now < t0 + Duration::from_secs(10) && s.state() != PmtuState::Complete {
            s.on_link_alive(now);
            while let Some(size) = s.poll_probe(now) {
                if now >= answers_from && size <= 1500 {
                    pending.push((now + Duration::from_millis(5), size));
                }
            }
            let (due, later): (Vec<_>, Vec<_>) = pending.into_iter().partition(|(t, _)| *t <= now);
            pending = later;
            for (_, size) in due {
                s.on_confirmed(size, now);
            }
            now += Duration::from_millis(5);
        }
        assert_eq!(s.state(), PmtuState::Complete, "{:?}", s.counts());
        assert!(s.mtu() > 1400 && s.mtu() <= 1500, "{}", s.mtu());
        assert!(
            now < t0 + Duration::from_secs(5),
            "found after {:?}",
            now - t0
        );
    }
}
