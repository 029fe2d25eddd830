//! Probes: peer probes through each link's tunnel ([`peer`], wire format in [`packet`]) feed
//! the failover engine; target checks of services behind the tunnels ([`target`]) run on a
//! schedule.

pub mod job;
pub mod packet;
pub mod peer;
pub mod target;
