//! Probes: peer probes through each link's tunnel ([`peer`]; their key in [`key`], their wire
//! format and protocol in the core) feed the failover engine; target checks of services behind
//! the tunnels ([`target`]) run on a schedule.

pub mod job;
pub mod key;
pub mod peer;
pub mod target;
