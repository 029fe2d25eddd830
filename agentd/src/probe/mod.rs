//! Probes of what lies behind the tunnels: target checks (icmp, tcp, http, https) run on a schedule.

pub mod target;
