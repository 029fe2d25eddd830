//! agentd's modules, as a library: the binary (`main.rs`) starts [`daemon::run`]; the fuzz
//! targets (`tests/fuzz`) call the pure entry points in [`fuzzing`]. Nothing else is public:
//! agentd is not an API.

mod accept;
mod actions;
mod clock;
mod control;
pub mod daemon;
mod drill;
mod events;
mod failover;
mod faults;
#[doc(hidden)]
pub mod fuzzing;
mod ha;
mod host;
pub mod logging;
mod metrics;
mod netlink;
mod notify;
mod probe;
mod resolve;
mod routes;
mod sockfile;
mod state;
mod status;
mod tunnel;
mod view;
