//! The decision core of agentd: it turns peer-probe results into link health and link health
//! into each route group's active link. It never reads a clock, never sleeps and does no I/O:
//! the shell feeds it timestamped inputs (`handle_*`, with `now`) and carries out what it asks
//! for (`poll_probe`, `poll_event`, `poll_timeout`, `active`). That is what makes the failover
//! logic testable with a simulated clock through millions of probes.
//!
//! - [`profile`]: probe timings and why they meet the detection budget and the false-failover
//!   rate;
//! - [`health`]: one link's probe schedule, loss/RTT/jitter windows, health state and damping;
//! - [`policy`]: one route group's choice of active link;
//! - [`engine`]: both together, with pins, drains and the peer's views;
//! - [`fnv`]: the stable hash that fingerprints and spreads (agentd uses it too).

pub mod engine;
pub mod fnv;
pub mod health;
pub mod policy;
pub mod profile;

pub use engine::{Engine, EngineConfig, Event, GroupConfig, LinkConfig, SwitchReason};
pub use health::{Figures, Health, PeerView};
pub use profile::Timings;
