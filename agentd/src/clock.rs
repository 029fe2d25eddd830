//! The shell's only clock. Everything in agentd that needs "now" asks here, and here asks
//! tokio, whose clock a `#[tokio::test(start_paused = true)]` test controls: the event loop, the
//! adapters and their timestamps then all move with paused time. Outside a runtime (the link
//! worker threads) tokio's clock is the monotonic system clock. clippy's `disallowed-methods`
//! keeps `std::time::Instant::now` out of the rest of the code.
//!
//! The wall clock can step (an operator's `date -s`, NTP correcting a clock that was far off,
//! a VM resumed). Nothing agentd decides depends on it: timers, probes and health run on the
//! monotonic clock. Where the wall clock is written down (events, the state file, drill
//! reports) a step shows as a jump in the times. [`WallWatch`] notices a step by comparing how
//! far the wall clock and the monotonic clock moved between two looks; the loop then re-anchors
//! [`wall`] on the new wall clock ([`rebase_wall`]).

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Now, on tokio's clock.
#[allow(clippy::disallowed_methods)]
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The system's monotonic clock, whatever tokio's clock does: a step of the wall clock is
/// measured against the real monotonic clock, so that paused time (which moves tokio's clock
/// and not the system's wall clock) is never taken for one.
#[allow(clippy::disallowed_methods)]
pub fn monotonic() -> Instant {
    Instant::now()
}

static ANCHOR: Mutex<Option<(Instant, SystemTime)>> = Mutex::new(None);

/// The wall clock as it moves with [`now`]: the system time at the first call (or at the last
/// [`rebase_wall`]), plus the time [`now`] has advanced since. It never steps back with NTP,
/// and paused-time tests move it.
pub fn wall() -> SystemTime {
    let mut anchor = ANCHOR.lock().unwrap_or_else(|e| e.into_inner());
    let (at, wall) = *anchor.get_or_insert_with(|| (now(), SystemTime::now()));
    wall + now().saturating_duration_since(at)
}

/// Take the system's wall clock again as the anchor of [`wall`]: after a step, so that what is
/// stamped from now on (the state file among it) agrees with the clock a restart will read.
pub fn rebase_wall() {
    let mut anchor = ANCHOR.lock().unwrap_or_else(|e| e.into_inner());
    *anchor = Some((now(), SystemTime::now()));
}

/// A step smaller than this is not one: NTP slews at most 0.5 ms a second, 2.5 ms between two
/// maintenance ticks, and a loop turn that reads one clock and then the other is late by far
/// less. A step an operator or NTP makes on a clock that is off is seconds to hours.
pub const STEP_AT_LEAST: Duration = Duration::from_secs(2);

/// Which way the wall clock moved, and by how much more (or less) than the monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Back(Duration),
    Forward(Duration),
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Back(d) => write!(f, "the wall clock stepped back {:.1} s", d.as_secs_f64()),
            Step::Forward(d) => {
                write!(f, "the wall clock stepped forward {:.1} s", d.as_secs_f64())
            }
        }
    }
}

/// The wall clock and the monotonic clock at the last look; pure (the caller reads the
/// clocks).
#[derive(Debug, Clone, Copy)]
pub struct WallWatch {
    wall: SystemTime,
    mono: Instant,
}

impl WallWatch {
    pub fn new(wall: SystemTime, mono: Instant) -> WallWatch {
        WallWatch { wall, mono }
    }

    /// Look again: the step since the last look, if the wall clock moved at least
    /// [`STEP_AT_LEAST`] more or less than the monotonic clock did.
    pub fn look(&mut self, wall: SystemTime, mono: Instant) -> Option<Step> {
        let expected = self.wall + mono.saturating_duration_since(self.mono);
        *self = WallWatch { wall, mono };
        match wall.duration_since(expected) {
            Ok(ahead) if ahead >= STEP_AT_LEAST => Some(Step::Forward(ahead)),
            Ok(_) => None,
            Err(e) if e.duration() >= STEP_AT_LEAST => Some(Step::Back(e.duration())),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_is_the_difference_between_the_wall_and_the_monotonic_clock() {
        let (w0, m0) = (
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            monotonic(),
        );
        let mut watch = WallWatch::new(w0, m0);
        let s = Duration::from_secs;
        // Five seconds on both, and a slew of a few milliseconds: no step.
        assert_eq!(watch.look(w0 + s(5), m0 + s(5)), None);
        assert_eq!(
            watch.look(w0 + s(10) + Duration::from_millis(3), m0 + s(10)),
            None
        );
        // An hour back while five seconds passed (measured from the last look, slew and all).
        assert_eq!(
            watch.look(w0 + s(15) - s(3600), m0 + s(15)),
            Some(Step::Back(s(3600) + Duration::from_millis(3)))
        );
        // The next look compares with the new clock: nothing more to say.
        assert_eq!(watch.look(w0 + s(20) - s(3600), m0 + s(20)), None);
        assert_eq!(
            watch.look(w0 + s(25), m0 + s(25)),
            Some(Step::Forward(s(3600)))
        );
        assert_eq!(
            Step::Back(Duration::from_millis(3_600_200)).to_string(),
            "the wall clock stepped back 3600.2 s"
        );
    }
}
