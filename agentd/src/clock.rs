//! The shell's only clock. Everything in agentd that needs "now" asks here, and here asks
//! tokio, whose clock a `#[tokio::test(start_paused = true)]` test controls: the event loop, the
//! adapters and their timestamps then all move with paused time. Outside a runtime (the link
//! worker threads) tokio's clock is the monotonic system clock. clippy's `disallowed-methods`
//! keeps `std::time::Instant::now` out of the rest of the code.

use std::time::Instant;

/// Now, on tokio's clock.
#[allow(clippy::disallowed_methods)]
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The wall clock as it moves with [`now`]: the system time at the first call, plus the time
/// [`now`] has advanced since. It never steps back with NTP, and paused-time tests move it.
pub fn wall() -> std::time::SystemTime {
    use std::sync::OnceLock;
    static ANCHOR: OnceLock<(Instant, std::time::SystemTime)> = OnceLock::new();
    let (at, wall) = *ANCHOR.get_or_init(|| (now(), std::time::SystemTime::now()));
    wall + now().saturating_duration_since(at)
}
