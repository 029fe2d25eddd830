//! What reaches the event loop from the adapters, besides peer-probe datagrams (their own
//! channel, served first) and control commands.

use isthmus_api::{ErrorBody, ReloadOutcome};
use isthmus_config::Report;
use tokio::sync::oneshot;

use super::reload::Running;
use crate::actions::{ActionReport, DryRunReport, HookReport};
use crate::drill::StreamReport;
use crate::probe::target::ProbeResult;
use crate::resolve::Resolved;
use crate::routes::RoutesReport;
use crate::tunnel::LinkReport;

/// A signal, forwarded by a task in the wiring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: release the routes, stop the links, exit.
    Stop,
    /// SIGHUP: reload the config.
    Reload,
}

pub enum Input {
    Signal(Signal),
    Link(LinkReport),
    Routes(RoutesReport),
    Resolved(Resolved),
    Target(ProbeResult),
    /// A target of the actions adapter (a DNS record, a cloud route table) changed or failed.
    Action(ActionReport),
    /// A hook run ended.
    Hook(HookReport),
    /// A dry run of an action target ended (a drill's pre-check).
    DryRun(DryRunReport),
    /// The drill's probe stream measured.
    Drill(StreamReport),
    /// The HA pair's lease store answered (or failed to).
    Ha(crate::ha::HaReport),
    /// The config file was read and checked off the loop (a reload).
    ConfigLoaded {
        result: Result<Running, Report>,
        reply: Option<oneshot::Sender<Result<ReloadOutcome, ErrorBody>>>,
    },
}
