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
