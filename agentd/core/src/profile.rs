//! Probe timings. A profile is stated as outcomes (a detection budget and a false-failover rate)
//! and these numbers are how they are met; `docs/failover.md` has the same arithmetic.
//!
//! **Down** means `down_after` consecutive lost probes. After the first probe is overdue the
//! link is probed every `fast_interval` (BFD's poll sequence, HAProxy's `fastinter`), so the
//! run of lost probes needed for a confident `down` fits in the budget:
//!
//! default: interval 100 ms, timeout 150 ms, fast 50 ms, down after 10 lost.
//!   The first lost probe is sent at t; by t+150 ms, when it is overdue, the normal probe at
//!   t+100 has gone out; a probe leaves at once and then one every 50 ms, so the 10th lost
//!   probe leaves at t+500 ms and is overdue at t+650 ms: **decision 0.65 s after the first
//!   lost probe** (budget 1 s; BIRD's BFD at 300 ms × 3 takes ~0.8 s here).
//! fast: interval 50 ms, timeout 75 ms, fast 25 ms, down after 10: t+250+75 = **0.325 s**
//!   (budget 0.5 s).
//!
//! **False failovers.** With 5 % loss each way a probe's round trip fails with
//! p = 1 − 0.95² = 0.0975, independently. A run of 10 losses starts at a given probe with
//! probability ≈ p¹⁰ = 1.3·10⁻¹⁰; at 10 probes/s (3.2·10⁸ per year) that is **one false
//! `down` per ~25 years** (default), and one per ~12 years at 20/s (fast). Sustained heavy
//! loss (30 %) never makes 10 in a row likely, so it is caught by the windowed loss ratio
//! instead (`degraded`, threshold 20 % round trip over the last 300 probes, 30 s by default),
//! which 5 %+5 % (9.75 % round trip) stays below by ~9 standard deviations.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// Probe interval while replies come back.
    pub interval: Duration,
    /// Probe interval while a probe is overdue.
    pub fast_interval: Duration,
    /// A probe without reply after this long is lost (raised on slow links, see
    /// [`Timings::timeout_for`]).
    pub timeout: Duration,
    /// Consecutive lost probes that make a link `down`.
    pub down_after: u32,
    /// Consecutive answered probes that bring a `down` link back `up`.
    pub up_after: u32,
    /// Probes in the loss/RTT/jitter window.
    pub window: usize,
    /// Answers needed in the window before it may declare `degraded`.
    pub min_samples: usize,
}

impl Timings {
    /// Detection within 1 s of the first lost probe; ~1 false failover per 25 years at 5 % loss
    /// each way.
    pub const DEFAULT: Timings = Timings {
        interval: Duration::from_millis(100),
        fast_interval: Duration::from_millis(50),
        timeout: Duration::from_millis(150),
        down_after: 10,
        up_after: 5,
        window: 300,
        min_samples: 50,
    };

    /// Detection within 0.5 s; twice the probe rate, ~1 false failover per 12 years.
    pub const FAST: Timings = Timings {
        interval: Duration::from_millis(50),
        fast_interval: Duration::from_millis(25),
        timeout: Duration::from_millis(75),
        down_after: 10,
        up_after: 5,
        window: 300,
        min_samples: 50,
    };

    /// The loss timeout for a link whose 95th-percentile RTT is `rtt_p95`: never below the
    /// profile's, and twice the RTT plus 20 ms on slow paths, so that a long RTT is not taken
    /// for loss (detection then takes longer on such a link).
    pub fn timeout_for(&self, rtt_p95: Option<Duration>) -> Duration {
        match rtt_p95 {
            Some(rtt) => self.timeout.max(rtt * 2 + Duration::from_millis(20)),
            None => self.timeout,
        }
    }

    /// Worst-case time from sending the first lost probe to declaring `down`, for the
    /// arithmetic above (checked by a test against the simulated engine).
    pub fn detection_bound(&self) -> Duration {
        // Normal probes until the first is overdue (at `timeout`), then one at once and one
        // every fast interval.
        let mut sent = Vec::new();
        let mut t = Duration::ZERO;
        while t < self.timeout {
            sent.push(t);
            t += self.interval;
        }
        let mut t = self.timeout;
        while (sent.len() as u32) < self.down_after {
            sent.push(t);
            t += self.fast_interval;
        }
        sent[self.down_after as usize - 1] + self.timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_detection_times_hold() {
        assert_eq!(
            Timings::DEFAULT.detection_bound(),
            Duration::from_millis(650)
        );
        assert_eq!(Timings::FAST.detection_bound(), Duration::from_millis(325));
    }

    #[test]
    fn slow_links_get_a_longer_timeout_never_a_shorter_one() {
        let t = Timings::DEFAULT;
        assert_eq!(t.timeout_for(None), t.timeout);
        assert_eq!(t.timeout_for(Some(Duration::from_millis(5))), t.timeout);
        assert_eq!(
            t.timeout_for(Some(Duration::from_millis(150))),
            Duration::from_millis(320)
        );
        assert_eq!(t.timeout_for(Some(Duration::from_millis(60))), t.timeout);
    }
}
