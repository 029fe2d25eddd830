//! The decision core of agentd: it turns peer-probe results into link health and link health
//! into each route group's active link. It never reads a clock, never sleeps and does no I/O:
//! the shell feeds it timestamped inputs (`handle_*`, with `now`) and carries out what it asks
//! for (`poll_transmit`, `poll_event`, `poll_timeout`, `active`). It owns the whole peer probe
//! protocol, wire format included; the shell moves datagrams and holds the keys. That is what
//! makes the failover logic testable with a simulated clock through millions of probes, and
//! the protocol testable against older versions of itself.
//!
//! - [`profile`]: probe timings and why they meet the detection budget and the false-failover
//!   rate;
//! - [`health`]: one link's probe schedule, loss/RTT/jitter windows, health state and damping;
//! - [`policy`]: one route group's choice of active link;
//! - [`wire`]: the probe packets of every protocol version, authenticated by the shell's key;
//! - [`engine`]: all of it together, with pins (of route groups and of DNS answers), drains,
//!   drill notices, the peer's views and versions;
//! - [`checks`]: service-check verdicts, what the gateways tell each other of them, and how
//!   both gateways' verdicts combine;
//! - [`ha`]: the HA role of one gateway of a cloud's pair, elected on a lease in a consistent
//!   store, fenced for cloud writes;
//! - [`pmtu`]: one link's path-MTU search (DPLPMTUD: padded probes confirmed by the peer);
//! - [`fnv`]: the stable hash that fingerprints and spreads (agentd uses it too);
//! - `notice`: what the peer says of itself on every link (a drill, its answer pins), and
//!   which of it holds now.

pub mod checks;
pub mod engine;
pub mod fnv;
pub mod ha;
pub mod health;
mod notice;
pub mod pmtu;
pub mod policy;
pub mod profile;
pub mod wire;

pub use checks::{dns_group_id, CheckState, PeerChecks};
pub use engine::{
    AnswerReport, DnsGroupConfig, Engine, EngineConfig, Event, GroupConfig, LinkConfig, LinkReport,
    Received, SwitchReason, Transmit,
};
pub use health::{Figures, Health, View};
pub use profile::Timings;
pub use wire::{AnnouncedRole, AnswerPin, Authenticator, HaAnnounce, ProbeDrop};
