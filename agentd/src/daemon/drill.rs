//! The loop's side of a drill: start one (choose the new path, run the pre-checks, send the dry
//! runs), give the state machine ([`crate::drill::Drill`]) what the loop sees, and carry out
//! what it asks (pin, release, stop the stream), recording each step in the event log.

use std::time::{Duration, Instant, SystemTime};

use isthmus_api::{
    DrillCheck, DrillReport, DrillRequest, DrillTarget, ErrorBody, ErrorKind, EventKind, Health,
};

use super::shell::Shell;
use crate::actions::{ActionsCmd, DryRunReport, TargetId};
use crate::drill::{Do, Drill, Look, Plan, StreamCmd, StreamLink, StreamReport, STREAM_INTERVAL};
use crate::events;

/// How often the loop looks at a running drill.
pub const TICK: Duration = Duration::from_millis(20);
/// Longest hold accepted.
const HOLD_MAX: Duration = Duration::from_secs(24 * 3600);

fn bad(message: String) -> ErrorBody {
    ErrorBody::new(ErrorKind::BadRequest, message)
}

fn check(name: impl Into<String>, ok: bool, detail: impl Into<String>) -> DrillCheck {
    DrillCheck {
        name: name.into(),
        ok,
        detail: detail.into(),
    }
}

/// The targets of the actions that follow `group`.
fn group_targets(shell: &Shell, group: &str) -> Vec<TargetId> {
    let config = &shell.running.config;
    if config.dns_group(group).is_some() {
        return vec![TargetId::Dns(group.to_owned())];
    }
    config
        .route_group(group)
        .map(|g| {
            let aws = g.aws_route_tables.iter().map(|t| TargetId::RouteTable {
                cloud: crate::actions::Cloud::Aws,
                id: t.id.clone(),
            });
            let oci = g.oci_route_tables.iter().map(|t| TargetId::RouteTable {
                cloud: crate::actions::Cloud::Oci,
                id: t.id.clone(),
            });
            aws.chain(oci).collect()
        })
        .unwrap_or_default()
}

/// A link's health and the peer's view of it.
fn health_of(shell: &Shell, link: &str) -> (Health, Option<Health>) {
    match shell.failover.link_view(link) {
        Some(v) => (
            crate::failover::api_health(v.health),
            v.peer.map(|p| crate::failover::api_health(p.health)),
        ),
        None => (Health::Unknown, None),
    }
}

/// Whether a route group's checks pass over `link` at both gateways (as far as known), and the
/// words for it.
fn link_checks(shell: &Shell, group: &str, link: &str) -> (bool, String) {
    let Some(g) = shell.running.config.route_group(group) else {
        return (false, "no such group".into());
    };
    if g.checks.is_empty() {
        return (true, "the group has no checks".into());
    }
    let checks = shell.failover.group_checks(group, &[link.to_owned()]);
    let Some(c) = checks.first() else {
        return (false, "no verdict yet".into());
    };
    verdict(c.own, c.peer)
}

/// Both gateways' verdicts: passing here, and at the peer once it has said.
fn verdict(own: isthmus_api::CheckState, peer: Option<isthmus_api::CheckState>) -> (bool, String) {
    let pass = |s: isthmus_api::CheckState| s == isthmus_api::CheckState::Pass;
    let ok = pass(own) && peer.is_none_or(pass);
    let words = match peer {
        Some(p) => format!("here {}, at the peer {}", own.as_str(), p.as_str()),
        None => format!("here {}, the peer has not said", own.as_str()),
    };
    (ok, words)
}

/// Whether a DNS group's answer `i` passes its checks at both gateways (as far as known).
fn answer_checks(shell: &Shell, group: &str, i: usize) -> (bool, String) {
    let states = shell.failover.answer_states(group);
    let own = states
        .own
        .get(i)
        .copied()
        .unwrap_or(isthmus_api::CheckState::Unknown);
    let peer = states.peer.as_ref().and_then(|p| p.get(i).copied());
    verdict(own, peer)
}

fn stream_links(shell: &Shell, names: &[String]) -> Vec<StreamLink> {
    names
        .iter()
        .filter_map(|n| {
            let l = shell.running.config.link(n)?;
            Some(StreamLink {
                name: l.name.clone(),
                interface: l.interface.clone(),
                local: l.addresses.first()?.ip(),
                peer: l.peer_address,
            })
        })
        .collect()
}

/// `POST /v1/drill`.
pub fn start(shell: &mut Shell, req: DrillRequest, now: Instant) -> Result<DrillReport, ErrorBody> {
    if let Some(d) = shell.drill.as_ref().filter(|d| !d.is_over()) {
        return Err(ErrorBody::new(
            ErrorKind::Conflict,
            format!(
                "a drill of {} is in progress ({}); netctl drill --abort stops it",
                d.plan.group,
                d.state()
            ),
        ));
    }
    if req.hold_ms == 0 || Duration::from_millis(req.hold_ms) > HOLD_MAX {
        return Err(bad(format!(
            "hold must be between 1 ms and 24 h, not {} ms",
            req.hold_ms
        )));
    }
    if req.rto_target_ms == 0 {
        return Err(bad("the RTO target must be above 0".into()));
    }
    let config = shell.running.config.clone();
    let group = req.group.clone();
    let mut checks = Vec::new();
    let wall = SystemTime::now();
    let drill_id = wall
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let (target, from, to, names, from_link, to_link, to_index) = if let Some(g) =
        config.route_group(&group)
    {
        let from = shell.failover.active(&group);
        checks.push(check(
            format!("{group} has an active link"),
            from.is_some(),
            from.as_deref()
                .map_or("none: the group fails closed".into(), |l| format!("on {l}")),
        ));
        let pinned = shell.failover.pin_of(&group);
        checks.push(check(
            format!("{group} is not pinned"),
            pinned.is_none(),
            pinned.map_or("automatic choice".into(), |p| {
                format!(
                    "pinned to {} ({}); netctl failback {group} first",
                    p.link, p.reason
                )
            }),
        ));
        let from = from.unwrap_or_default();
        // The next healthy link in the group's order, else the next one (to say why not).
        let others: Vec<&String> = g.links.iter().filter(|l| **l != from).collect();
        let to = others
            .iter()
            .find(|l| health_of(shell, l).0 == Health::Up)
            .or(others.first())
            .map(|l| (*l).clone());
        if let Some(to) = &to {
            let (h, peer) = health_of(shell, to);
            let figures = shell
                .failover
                .link_view(to)
                .map(|v| crate::failover::api_figures(&v.figures));
            let detail = match figures.and_then(|f| f.rtt_p50_ms.map(|r| (r, f.loss))) {
                Some((rtt, loss)) => format!("{h}, rtt {rtt:.1} ms, loss {:.1} %", loss * 100.0),
                None => h.to_string(),
            };
            checks.push(check(
                format!("backup link {to} is up"),
                h == Health::Up,
                detail,
            ));
            checks.push(check(
                format!("the peer sees {to} up"),
                peer == Some(Health::Up),
                peer.map_or("the peer has not said".into(), |p| p.to_string()),
            ));
            let drained = shell.failover.link_view(to).is_some_and(|v| v.drained);
            checks.push(check(
                format!("{to} is not drained"),
                !drained,
                if drained { "drained" } else { "not drained" },
            ));
            let (ok, words) = link_checks(shell, &group, to);
            checks.push(check(
                format!("checks of {group} pass over {to}"),
                ok,
                words,
            ));
        } else {
            checks.push(check(
                "a second link to switch to",
                false,
                format!("{group} has only {}", g.links.join(", ")),
            ));
        }
        let names = g.links.clone();
        let from_link = names.iter().position(|l| *l == from);
        let to_link = to.as_ref().and_then(|t| names.iter().position(|l| l == t));
        (
            DrillTarget::RouteGroup,
            from,
            to,
            names,
            from_link,
            to_link,
            None,
        )
    } else if let Some(g) = config.dns_group(&group) {
        let chosen = shell.failover.answer(&group);
        checks.push(check(
            format!("{group} publishes an answer"),
            chosen.is_some(),
            chosen
                .and_then(|i| g.answers.get(i))
                .map_or("none decided yet".into(), |a| {
                    format!("publishes {}", a.value)
                }),
        ));
        let pinned = shell.failover.answer_pin_of(&group);
        checks.push(check(
            format!("{group} is not pinned"),
            pinned.is_none(),
            pinned.map_or("automatic choice".into(), |(i, why)| {
                format!("pinned to answer {} ({why})", i + 1)
            }),
        ));
        let from_i = chosen.unwrap_or(0);
        let others: Vec<usize> = (0..g.answers.len()).filter(|i| *i != from_i).collect();
        let to_i = others
            .iter()
            .copied()
            .find(|i| answer_checks(shell, &group, *i).0)
            .or(others.first().copied());
        match to_i {
            Some(i) => {
                let (ok, words) = answer_checks(shell, &group, i);
                checks.push(check(
                    format!("checks of answer {} pass", g.answers[i].value),
                    ok,
                    words,
                ));
            }
            None => checks.push(check(
                "a second answer to switch to",
                false,
                format!("{group} has one answer"),
            )),
        }
        let names: Vec<String> = config.links.iter().map(|l| l.name.clone()).collect();
        (
            DrillTarget::DnsGroup,
            g.answers
                .get(from_i)
                .map(|a| a.value.clone())
                .unwrap_or_default(),
            to_i.map(|i| g.answers[i].value.clone()),
            names,
            None,
            None,
            to_i,
        )
    } else {
        return Err(ErrorBody::new(
            ErrorKind::NotFound,
            format!("no route group or DNS group {group:?}"),
        ));
    };
    if let Some(peer) = shell.failover.peer_drill() {
        checks.push(check(
            "no drill on the peer",
            false,
            format!("the peer gateway is drilling {peer}"),
        ));
    }
    // Dry runs: every target of the group, with what it would hold after the switch.
    let wants = {
        let mut active = shell.active_links();
        let mut decided = shell.decided_groups.clone();
        if target == DrillTarget::RouteGroup {
            if let Some(to) = &to {
                active.insert(group.clone(), to.clone());
                decided.insert(group.clone());
            }
        }
        super::actions::desired(
            &config,
            |g| {
                if g == group {
                    to_index.or(shell.failover.answer(g))
                } else {
                    shell.failover.answer(g)
                }
            },
            &active,
            &decided,
        )
    };
    let mut pending = 0;
    for id in group_targets(shell, &group) {
        match wants.get(&id) {
            Some(want) => {
                pending += 1;
                let _ = shell.adapters.actions.send(ActionsCmd::DryRun {
                    tag: drill_id,
                    id: id.clone(),
                    want: want.clone(),
                });
            }
            None => checks.push(check(
                format!("dry run: {id}"),
                false,
                "nothing decided for it yet",
            )),
        }
    }
    let links = stream_links(shell, &names);
    let plan = Plan {
        id: drill_id,
        gateway: config.agent.name.clone(),
        group: group.clone(),
        target,
        from: from.clone(),
        to: to.clone(),
        hold: Duration::from_millis(req.hold_ms),
        rto_target: Duration::from_millis(req.rto_target_ms),
        reason: req.reason.unwrap_or_else(|| "drill".into()),
        links: links
            .iter()
            .map(|l| (l.name.clone(), format!("{} via {}", l.peer, l.interface)))
            .collect(),
        from_link,
        to_link,
        interval: STREAM_INTERVAL,
    };
    let _ = shell.adapters.drill.send(StreamCmd::Start {
        drill: drill_id,
        links,
        interval: STREAM_INTERVAL,
    });
    shell.failover.set_drill(Some(group.clone()));
    let drill = Drill::new(plan, checks, pending, now, wall);
    shell.drill_tick = now + TICK;
    let started = drill.first_step();
    shell.drill = Some(drill);
    record(shell, started);
    // The pre-checks without dry runs are decided at once.
    tick(shell, now);
    get(shell)
}

/// An event-log record of the running drill (`what` empty: nothing).
fn record(shell: &mut Shell, what: String) {
    if what.is_empty() {
        return;
    }
    let Some(d) = shell.drill.as_ref() else {
        return;
    };
    let mut rec = events::record(EventKind::Drill, what);
    rec.group = Some(d.plan.group.clone());
    rec.from = Some(d.plan.from.clone());
    rec.to = d.plan.to.clone();
    shell.push_event(rec);
}

pub fn get(shell: &Shell) -> Result<DrillReport, ErrorBody> {
    shell
        .drill
        .as_ref()
        .map(Drill::report)
        .ok_or_else(|| ErrorBody::new(ErrorKind::NotFound, "no drill has run since agentd started"))
}

pub fn abort(shell: &mut Shell, now: Instant) -> Result<DrillReport, ErrorBody> {
    let Some(d) = shell.drill.as_mut().filter(|d| !d.is_over()) else {
        return Err(ErrorBody::new(
            ErrorKind::NotFound,
            "no drill is in progress",
        ));
    };
    let dos = d.abort("stopped by the operator (netctl drill --abort)", now);
    apply(shell, dos, now);
    get(shell)
}

/// What the loop sees of the drilled group.
fn look(shell: &Shell, d: &Drill) -> Look {
    let config = &shell.running.config;
    let group = &d.plan.group;
    let to = d.plan.to.clone().unwrap_or_default();
    let targets = group_targets(shell, group);
    let actions_in_sync = shell.action_book.all_in_sync(&targets);
    let routes_applied = shell.routes_applied();
    match d.plan.target {
        DrillTarget::RouteGroup => {
            if config.route_group(group).is_none() {
                return Look {
                    gone: Some(format!("route group {group} is no longer in the config")),
                    ..Look::default()
                };
            }
            let active = shell.failover.active(group);
            let (to_health, _) = health_of(shell, &to);
            let (to_checks_pass, to_words) = link_checks(shell, group, &to);
            let (from_checks_pass, _) = link_checks(shell, group, &d.plan.from);
            let broken = match to_health {
                Health::Up | Health::Degraded => None,
                h => Some(format!("backup link {to} is {h}")),
            }
            .or_else(|| {
                // Checks that stop passing during the hold break the new path; a verdict not
                // there yet right after the switch does not.
                (!to_checks_pass && to_words.contains("fail"))
                    .then(|| format!("checks of {group} fail over {to} ({to_words})"))
            });
            Look {
                on_to: active.as_deref() == Some(to.as_str()),
                on_from: active.as_deref() == Some(d.plan.from.as_str()),
                routes_applied,
                actions_in_sync,
                to_checks_pass,
                from_checks_pass,
                to_broken: broken,
                gone: None,
            }
        }
        DrillTarget::DnsGroup => {
            let Some(g) = config.dns_group(group) else {
                return Look {
                    gone: Some(format!("DNS group {group} is no longer in the config")),
                    ..Look::default()
                };
            };
            let index = |v: &str| g.answers.iter().position(|a| a.value == v);
            let (to_i, from_i) = (index(&to), index(&d.plan.from));
            let chosen = shell.failover.answer(group);
            let (to_checks_pass, to_words) =
                to_i.map_or((false, String::new()), |i| answer_checks(shell, group, i));
            let from_checks_pass = from_i.is_some_and(|i| answer_checks(shell, group, i).0);
            Look {
                on_to: chosen.is_some() && chosen == to_i,
                on_from: chosen.is_some() && chosen == from_i,
                routes_applied: true,
                actions_in_sync,
                to_checks_pass,
                from_checks_pass,
                to_broken: (!to_checks_pass && to_words.contains("fail"))
                    .then(|| format!("checks of answer {to} fail ({to_words})")),
                gone: None,
            }
        }
    }
}

/// Carry out what the drill asks.
fn apply(shell: &mut Shell, dos: Vec<Do>, now: Instant) {
    for what in dos {
        let Some(d) = shell.drill.as_ref() else {
            return;
        };
        let (group, target, to) = (d.plan.group.clone(), d.plan.target, d.plan.to.clone());
        let reason = format!("drill: {}", d.plan.reason);
        match what {
            Do::Record(text) => record(shell, text),
            Do::Switch => {
                let to = to.unwrap_or_default();
                match target {
                    DrillTarget::RouteGroup => {
                        shell.failover.pin(&group, &to, &reason, now);
                    }
                    DrillTarget::DnsGroup => {
                        let i = shell
                            .running
                            .config
                            .dns_group(&group)
                            .and_then(|g| g.answers.iter().position(|a| a.value == to));
                        if let Some(i) = i {
                            shell.failover.pin_answer(&group, i, &reason, now);
                        }
                    }
                }
                shell.after_engine(now);
            }
            Do::Release => {
                match target {
                    DrillTarget::RouteGroup => {
                        shell.failover.unpin(&group, now);
                    }
                    DrillTarget::DnsGroup => {
                        shell.failover.unpin_answer(&group, now);
                    }
                }
                shell.after_engine(now);
            }
            Do::Finish => {
                let _ = shell.adapters.drill.send(StreamCmd::Stop);
                shell.failover.set_drill(None);
                shell.after_engine(now);
            }
        }
    }
}

/// Every loop turn's timers, while a drill runs.
pub fn tick(shell: &mut Shell, now: Instant) {
    let Some(d) = shell.drill.as_ref().filter(|d| !d.is_over()) else {
        return;
    };
    let look = look(shell, d);
    let dos = match shell.drill.as_mut() {
        Some(d) => d.tick(&look, now),
        None => return,
    };
    apply(shell, dos, now);
}

pub fn on_stream(shell: &mut Shell, r: StreamReport) {
    let Some(d) = shell.drill.as_mut().filter(|d| d.plan.id == r.drill) else {
        return;
    };
    d.on_samples(&r.samples);
    for (link, error) in &r.errors {
        d.stream_error(*link, error);
    }
}

pub fn on_dry_run(shell: &mut Shell, r: DryRunReport) {
    let Some(d) = shell
        .drill
        .as_mut()
        .filter(|d| d.plan.id == r.tag && d.state() == isthmus_api::DrillState::Prechecks)
    else {
        return;
    };
    let (ok, detail) = match r.result {
        Ok(what) => (true, format!("{}: {what}", r.provider)),
        Err(why) => (false, format!("{}: {why}", r.provider)),
    };
    d.add_check(check(format!("dry run: {}", r.target), ok, detail));
}
