//! The loop's side of each control command, one function each. The HTTP side (parsing, access,
//! the JSON of reads) is in `control/http.rs`; a command only ever touches the loop's state and
//! answers on its reply channel.

use std::time::Instant;

use isthmus_api::{ErrorBody, ErrorKind, EventKind, RouteGroupStatus};

use super::shell::Shell;
use crate::control::Command;
use crate::events;
use crate::routes::RoutesCmd;

pub fn handle(shell: &mut Shell, command: Command, now: Instant) {
    match command {
        Command::View { reply } => {
            let _ = reply.send(shell.view(now));
        }
        Command::Reload { reply } => {
            tracing::info!("reload requested over the control socket");
            shell.start_reload(Some(reply));
        }
        Command::Routes { reply } => routes(shell, reply),
        Command::Failover {
            group,
            to,
            reason,
            reply,
        } => {
            let _ = reply.send(failover(shell, &group, &to, &reason, now));
        }
        Command::Failback { group, reply } => {
            let _ = reply.send(failback(shell, &group, now));
        }
        Command::Drain { link, on, reply } => {
            let _ = reply.send(drain(shell, &link, on, now));
        }
        Command::Events {
            since,
            limit,
            reply,
        } => {
            let _ = reply.send(shell.events().since(since, limit));
        }
        Command::DrillStart { request, reply } => {
            tracing::info!(group = %request.group, "drill requested over the control socket");
            let _ = reply.send(super::drill::start(shell, request, now));
        }
        Command::DrillGet { reply } => {
            let _ = reply.send(super::drill::get(shell));
        }
        Command::DrainGateway { on, reply } => {
            let _ = reply.send(shell.drain_gateway(on, now));
        }
        Command::DrillAbort { reply } => {
            let _ = reply.send(super::drill::abort(shell, now));
        }
    }
}

/// `netctl routes`: the kernel is read by the routes adapter, which answers the caller itself.
fn routes(shell: &mut Shell, reply: tokio::sync::oneshot::Sender<isthmus_api::RoutesStatus>) {
    let interfaces = shell
        .links
        .iter()
        .filter_map(|(_, e)| e.ifindex.map(|i| (i, e.config.interface.clone())))
        .collect();
    let _ = shell
        .adapters
        .routes
        .send(RoutesCmd::Status { interfaces, reply });
}

/// A drill of `group` in progress owns its pin: a manual failover or failback would be undone
/// by the drill's release, or would undo the drill.
fn drilled(shell: &Shell, group: &str) -> Result<(), ErrorBody> {
    match shell.drill.as_ref().filter(|d| !d.is_over()) {
        Some(d) if d.plan.group == group => Err(ErrorBody::new(
            ErrorKind::Conflict,
            format!(
                "a drill of {group} is in progress ({}); netctl drill --abort ends it and fails back",
                d.state()
            ),
        )),
        _ => Ok(()),
    }
}

fn no_group(group: &str) -> ErrorBody {
    ErrorBody::new(ErrorKind::NotFound, format!("no route group {group:?}"))
}

fn failover(
    shell: &mut Shell,
    group: &str,
    to: &str,
    reason: &str,
    now: Instant,
) -> Result<RouteGroupStatus, ErrorBody> {
    let Some(g) = shell.running.config.route_group(group) else {
        return Err(no_group(group));
    };
    drilled(shell, group)?;
    if !g.links.iter().any(|l| l == to) {
        return Err(ErrorBody::new(
            ErrorKind::BadRequest,
            format!(
                "link {to:?} is not in route group {group:?}; its links are {}",
                g.links.join(", ")
            ),
        ));
    }
    let mut rec = events::record(EventKind::Pin, reason);
    rec.group = Some(group.to_owned());
    rec.to = Some(to.to_owned());
    shell.push_event(rec);
    shell.failover.pin(group, to, reason, now);
    shell.after_engine(now);
    shell
        .group_status(group, now)
        .ok_or_else(|| no_group(group))
}

fn failback(shell: &mut Shell, group: &str, now: Instant) -> Result<RouteGroupStatus, ErrorBody> {
    if shell.running.config.route_group(group).is_none() {
        return Err(no_group(group));
    }
    drilled(shell, group)?;
    if shell.failover.unpin(group, now) {
        let mut rec = events::record(EventKind::Unpin, "returned to automatic choice");
        rec.group = Some(group.to_owned());
        shell.push_event(rec);
    }
    shell.after_engine(now);
    shell
        .group_status(group, now)
        .ok_or_else(|| no_group(group))
}

fn drain(
    shell: &mut Shell,
    link: &str,
    on: bool,
    now: Instant,
) -> Result<Vec<RouteGroupStatus>, ErrorBody> {
    if shell.running.config.link(link).is_none() {
        return Err(ErrorBody::new(
            ErrorKind::NotFound,
            format!("no link {link:?}"),
        ));
    }
    let mut rec = events::record(
        EventKind::Drain,
        if on {
            "drained for maintenance"
        } else {
            "drain ended"
        },
    );
    rec.link = Some(link.to_owned());
    shell.push_event(rec);
    shell.failover.set_drain(link, on, now);
    shell.after_engine(now);
    let config = shell.running.config.clone();
    Ok(config
        .route_groups
        .iter()
        .filter(|g| g.links.iter().any(|l| l == link))
        .filter_map(|g| shell.group_status(&g.name, now))
        .collect())
}
