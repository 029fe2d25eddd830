//! One target's reconciliation: read, compare, write conditionally, verify, report; retry with
//! back-off; at most one write per `min_interval`; re-assert periodically. The newest desired
//! state always wins: a decision that changes while an attempt backs off is taken at once.

use std::sync::Arc;
use std::time::Duration;

use isthmus_actions::{ActionResult, Failure, FailureKind, RRset, TableSeen};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{ActionEvent, ActionReport, Backends, Desired, TargetId, Want};
use crate::daemon::input::Input;
use crate::faults::{FaultKind, Faults};

/// Conflicts in a row before an attempt counts as failed (and backs off): another writer that
/// keeps changing the target must not make us spin.
const CONFLICTS_PER_ATTEMPT: u32 = 3;
/// Verification polls start this fast and double up to [`VERIFY_POLL_MAX`].
const VERIFY_POLL_FIRST: Duration = Duration::from_millis(10);
const VERIFY_POLL_MAX: Duration = Duration::from_millis(500);

/// What an attempt found and did.
struct Applied {
    changed: bool,
    from: Option<String>,
}

pub(super) async fn run(
    id: TargetId,
    mut desired: watch::Receiver<Option<Desired>>,
    backends: Arc<Backends>,
    reports: mpsc::Sender<Input>,
    faults: Faults,
) {
    let subject = id.to_string();
    let pacing = backends.pacing.clone();
    let min_interval = match &id {
        TargetId::Dns(_) => match desired.borrow().as_ref().map(|d| &d.want) {
            Some(Want::Dns { provider, .. }) => backends
                .dns_min_interval
                .get(provider)
                .copied()
                .unwrap_or(pacing.min_interval),
            _ => pacing.min_interval,
        },
        TargetId::RouteTable { .. } => pacing.min_interval,
    };
    let mut last_write: Option<Instant> = None;
    // For providers that cannot read: what we last published.
    let mut published: Option<Want> = None;
    let mut failures: u32 = 0;
    let mut reasserting = false;
    let mut last_decision: Option<Instant> = None;
    loop {
        let Some(d) = desired.borrow_and_update().clone() else {
            if desired.changed().await.is_err() {
                return;
            }
            continue;
        };
        if last_decision != Some(d.decided) {
            // A new decision: back-off and re-assertion start again.
            last_decision = Some(d.decided);
            failures = 0;
            reasserting = false;
        }
        if let Some(t) = last_write {
            let until = t + min_interval;
            if Instant::now() < until {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => {}
                    r = desired.changed() => if r.is_err() { return },
                }
                continue;
            }
        }
        let provider = describe(&id, &d.want, &backends);
        let result = attempt(&id, &d, &backends, &mut published, &reports, &provider).await;
        let wait = match result {
            Ok(a) => {
                // After failures the loop shows the target failing: a success is news then,
                // even a re-assertion that found everything in place.
                let recovered = failures > 0;
                failures = 0;
                faults.clear(FaultKind::ActionTimeout, &subject);
                if a.changed {
                    last_write = Some(Instant::now());
                }
                // A re-assertion that found everything in place is not news.
                if !reasserting || a.changed || recovered {
                    let event = ActionEvent::Done {
                        changed: a.changed,
                        from: a.from,
                        to: d.want.describe(),
                        took: Instant::now().saturating_duration_since(d.decided),
                        reasserted: reasserting,
                    };
                    report(&reports, &id, &provider, event).await;
                }
                reasserting = true;
                pacing.reassert_every
            }
            Err(f) => {
                failures += 1;
                let retry_in = backoff(&id, failures, pacing.retry_initial, pacing.retry_max);
                if f.kind == FailureKind::Unavailable {
                    // Once per episode; every attempt is still reported (and counted by
                    // result) as before.
                    faults.raise(
                        FaultKind::ActionTimeout,
                        &subject,
                        &format_args!("{provider}: {}", f.message),
                    );
                }
                let event = ActionEvent::Failed {
                    kind: f.kind,
                    message: f.message,
                    attempt: failures,
                    retry_in,
                };
                report(&reports, &id, &provider, event).await;
                retry_in
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            r = desired.changed() => if r.is_err() { return },
        }
    }
}

fn describe(id: &TargetId, want: &Want, backends: &Backends) -> String {
    match (id, want) {
        (_, Want::Dns { provider, .. }) => backends
            .dns
            .get(provider)
            .map(|b| b.describe())
            .unwrap_or_else(|| provider.clone()),
        (TargetId::RouteTable { cloud, id }, _) => backends
            .tables
            .get(&(*cloud, id.clone()))
            .map(|b| b.describe())
            .unwrap_or_else(|| id.clone()),
        _ => String::new(),
    }
}

async fn report(reports: &mpsc::Sender<Input>, id: &TargetId, provider: &str, event: ActionEvent) {
    let _ = reports
        .send(Input::Action(ActionReport {
            target: id.clone(),
            provider: provider.to_owned(),
            event,
        }))
        .await;
}

/// Exponential from `initial`, capped at `max`, with jitter in [½, 1] so that targets that
/// failed together do not retry together. The jitter is a hash of the target and the attempt:
/// deterministic, which keeps paused-time tests exact.
fn backoff(id: &TargetId, failures: u32, initial: Duration, max: Duration) -> Duration {
    let exp = initial.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    let base = exp.min(max);
    let mut h = isthmus_core::fnv::Fnv1a32::new();
    h.write(id.to_string().as_bytes());
    h.write(&failures.to_be_bytes());
    let frac = 0.5 + f64::from(h.finish() % 1000) / 2000.0;
    base.mul_f64(frac)
}

/// Read `id` and compare with `want`, writing nothing.
pub(super) async fn dry_run(
    tag: u64,
    id: TargetId,
    want: &Want,
    backends: &Backends,
) -> super::DryRunReport {
    let p = &backends.pacing;
    let provider = describe(&id, want, backends);
    let unusable = |name: &str| {
        let why = backends
            .broken
            .get(name)
            .map_or("not built", String::as_str);
        format!("{name} is unusable: {why}")
    };
    let result = match (want, &id) {
        (
            Want::Dns {
                provider: name,
                rec,
                rrset,
            },
            _,
        ) => match backends.dns.get(name) {
            None => Err(unusable(name)),
            Some(b) if !b.readable() => Ok(format!(
                "a command provider cannot be read; the drill would publish {}",
                want.describe()
            )),
            Some(b) => bounded(p.timeout, "reading", b.read(rec))
                .await
                .map(|seen| match seen {
                    Some(s) if &s == rrset => format!("holds {} already", want.describe()),
                    Some(s) => format!(
                        "reachable; would change {} to {}",
                        s.values.join(" "),
                        want.describe()
                    ),
                    None => format!("reachable; would create it with {}", want.describe()),
                })
                .map_err(|f| f.to_string()),
        },
        (Want::Table { routes }, TargetId::RouteTable { cloud, id: table }) => {
            match backends.tables.get(&(*cloud, table.clone())) {
                None => Err(unusable(table)),
                Some(b) => {
                    let destinations: Vec<String> = routes.keys().cloned().collect();
                    bounded(p.timeout, "reading", b.read(&destinations))
                        .await
                        .map(|seen| {
                            if &seen.routes == routes {
                                format!("reachable; holds {} already", want.describe())
                            } else {
                                format!(
                                    "reachable; would change {} to {}",
                                    super::describe_routes(&seen.routes),
                                    want.describe()
                                )
                            }
                        })
                        .map_err(|f| f.to_string())
                }
            }
        }
        (Want::Table { .. }, TargetId::Dns(_)) => Err("a DNS group cannot hold routes".into()),
    };
    super::DryRunReport {
        tag,
        target: id,
        provider,
        result,
    }
}

/// Bound one provider call by the pacing timeout.
async fn bounded<T>(
    timeout: Duration,
    what: &str,
    f: impl std::future::Future<Output = ActionResult<T>>,
) -> ActionResult<T> {
    match tokio::time::timeout(timeout, f).await {
        Ok(r) => r,
        Err(_) => Err(Failure::new(
            FailureKind::Unavailable,
            format!("{what}: no answer within {timeout:?}"),
        )),
    }
}

async fn attempt(
    id: &TargetId,
    d: &Desired,
    backends: &Backends,
    published: &mut Option<Want>,
    reports: &mpsc::Sender<Input>,
    provider: &str,
) -> ActionResult<Applied> {
    let p = &backends.pacing;
    match (&d.want, id) {
        (
            Want::Dns {
                provider: name,
                rec,
                rrset,
            },
            _,
        ) => {
            let Some(backend) = backends.dns.get(name) else {
                let why = backends
                    .broken
                    .get(name)
                    .map_or("not built", String::as_str);
                return Err(Failure::new(
                    FailureKind::Rejected,
                    format!("DNS provider {name} is unusable: {why}"),
                ));
            };
            if !backend.readable() {
                if published.as_ref() == Some(&d.want) {
                    return Ok(Applied {
                        changed: false,
                        from: None,
                    });
                }
                bounded(p.timeout, "publishing", backend.replace(rec, None, rrset)).await?;
                *published = Some(d.want.clone());
                return Ok(Applied {
                    changed: true,
                    from: None,
                });
            }
            for _ in 0..CONFLICTS_PER_ATTEMPT {
                let seen = bounded(p.timeout, "reading", backend.read(rec)).await?;
                if seen.as_ref() == Some(rrset) {
                    return Ok(Applied {
                        changed: false,
                        from: seen.map(|s| s.values.join(" ")),
                    });
                }
                match bounded(
                    p.timeout,
                    "updating",
                    backend.replace(rec, seen.as_ref(), rrset),
                )
                .await
                {
                    Ok(()) => {
                        verify(p.verify_timeout, p.timeout, || async {
                            let now = backend.read(rec).await?;
                            Ok(now.as_ref() == Some(rrset))
                        })
                        .await?;
                        return Ok(Applied {
                            changed: true,
                            from: seen.map(|s: RRset| s.values.join(" ")),
                        });
                    }
                    Err(f) if f.kind == FailureKind::Conflict => {
                        let found = seen.map_or("(none)".into(), |s| s.values.join(" "));
                        report(reports, id, provider, ActionEvent::Conflict { found }).await;
                    }
                    Err(f) => return Err(f),
                }
            }
        }
        (Want::Table { routes }, TargetId::RouteTable { cloud, id: table }) => {
            let Some(backend) = backends.tables.get(&(*cloud, table.clone())) else {
                let why = backends
                    .broken
                    .get(table)
                    .map_or("not built", String::as_str);
                return Err(Failure::new(
                    FailureKind::Rejected,
                    format!("route table {table} is unusable: {why}"),
                ));
            };
            let destinations: Vec<String> = routes.keys().cloned().collect();
            for _ in 0..CONFLICTS_PER_ATTEMPT {
                let seen: TableSeen =
                    bounded(p.timeout, "reading", backend.read(&destinations)).await?;
                if &seen.routes == routes {
                    return Ok(Applied {
                        changed: false,
                        from: Some(super::describe_routes(&seen.routes)),
                    });
                }
                match bounded(p.timeout, "updating", backend.apply(&seen, routes)).await {
                    Ok(()) => {
                        verify(p.verify_timeout, p.timeout, || async {
                            let now = backend.read(&destinations).await?;
                            Ok(&now.routes == routes)
                        })
                        .await?;
                        return Ok(Applied {
                            changed: true,
                            from: Some(super::describe_routes(&seen.routes)),
                        });
                    }
                    Err(f) if f.kind == FailureKind::Conflict => {
                        let found = super::describe_routes(&seen.routes);
                        report(reports, id, provider, ActionEvent::Conflict { found }).await;
                    }
                    Err(f) => return Err(f),
                }
            }
        }
        (Want::Table { .. }, TargetId::Dns(_)) => {
            return Err(Failure::new(
                FailureKind::Rejected,
                "a DNS group cannot hold routes",
            ));
        }
    }
    Err(Failure::new(
        FailureKind::Conflict,
        format!("changed by another writer {CONFLICTS_PER_ATTEMPT} times in a row"),
    ))
}

/// Poll `check` until it sees the change, starting fast (BIND serves an update within a
/// millisecond or two) and slowing down, for at most `within`.
async fn verify<F, Fut>(within: Duration, timeout: Duration, mut check: F) -> ActionResult<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ActionResult<bool>>,
{
    let until = Instant::now() + within;
    let mut poll = VERIFY_POLL_FIRST;
    let mut last_error = None;
    loop {
        match bounded(timeout, "verifying", check()).await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() + poll > until {
            let why = last_error.map_or(String::new(), |e| format!(" (last read: {e})"));
            return Err(Failure::new(
                FailureKind::NotVerified,
                format!("the change was accepted but not served within {within:?}{why}"),
            ));
        }
        tokio::time::sleep(poll).await;
        poll = (poll * 2).min(VERIFY_POLL_MAX);
    }
}
