//! The HA adapter: the pair's lease store (etcd) for the loop. The loop's [`isthmus_core::ha::Ha`]
//! decides what to ask ([`HaAction`]); this task asks it, each request within the store's
//! deadline, and reports what the store said ([`HaReport`]), including every change its watch
//! sees. It never decides anything and never waits on the loop.
//!
//! A session: connect, grant a lease, clear what a previous life of this gateway held (a
//! restarted gateway never resumes its role), publish this member's latest state, read the
//! pair's keys and watch them from there. A store that cannot be reached is reported and tried
//! again with back-off; while it is away the loop's lease runs out on its own clock.

use std::time::{Duration, Instant};

use isthmus_core::ha::{HaAction, Holder, MemberState};
use isthmus_ha::{Change, EtcdStore, StoreConfig, StoreError};
use tokio::sync::mpsc;

use crate::daemon::input::Input;

/// What the loop sends.
#[derive(Debug)]
pub enum HaCmd {
    /// The store to use (`None`: no `[ha]`, stop any session).
    Configure(Option<StoreConfig>),
    Do(HaAction),
}

/// What the store said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HaReport {
    /// The store answered (or failed to: the error).
    Reachable(Result<(), String>),
    /// A new lease, valid for its TTL from `sent`.
    Granted {
        sent: Instant,
    },
    KeepAliveAcked {
        sent: Instant,
    },
    LeaseLost,
    Holder(Option<Holder>),
    Member(String, Option<MemberState>),
    Campaign(Result<i64, Holder>),
    /// A holder key of this gateway's previous life was deleted.
    ClearedStale,
}

const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

pub async fn run(mut rx: mpsc::UnboundedReceiver<HaCmd>, inputs: mpsc::Sender<Input>) {
    let mut config: Option<StoreConfig> = None;
    loop {
        let Some(cfg) = config.take() else {
            match rx.recv().await {
                Some(HaCmd::Configure(c)) => config = c,
                Some(HaCmd::Do(_)) => {}
                None => return,
            }
            continue;
        };
        match session(&cfg, &mut rx, &inputs).await {
            Next::Configure(c) => config = c,
            Next::Closed => return,
        }
    }
}

enum Next {
    Configure(Option<StoreConfig>),
    Closed,
}

/// Serves one store configuration until it changes or the loop goes.
async fn session(
    cfg: &StoreConfig,
    rx: &mut mpsc::UnboundedReceiver<HaCmd>,
    inputs: &mpsc::Sender<Input>,
) -> Next {
    let report = |r: HaReport| {
        let inputs = inputs.clone();
        async move {
            let _ = inputs.send(Input::Ha(r)).await;
        }
    };
    // The member state the loop wants published: again after every new lease.
    let mut wanted: Option<MemberState> = None;
    let mut retry = RETRY_FIRST;
    let mut store: Option<EtcdStore> = None;
    // Each turn: a new lease.
    loop {
        let granted = async {
            if store.is_none() {
                store = Some(EtcdStore::connect(cfg.clone()).await?);
            }
            let s = store.as_mut().expect("connected");
            let sent = s.grant().await?;
            let stale = s.clear_stale_hold().await?;
            Ok::<_, StoreError>((sent, stale))
        }
        .await;
        let (sent, stale) = match granted {
            Ok(x) => x,
            Err(e) => {
                report(HaReport::Reachable(Err(e.to_string()))).await;
                if let Some(next) = back_off(&mut retry, rx, &mut wanted).await {
                    return next;
                }
                continue;
            }
        };
        retry = RETRY_FIRST;
        report(HaReport::Reachable(Ok(()))).await;
        report(HaReport::Granted { sent }).await;
        if stale {
            report(HaReport::ClearedStale).await;
        }
        let s = store.as_mut().expect("connected");
        // Each turn: a read and a watch from it (after the watch broke).
        let mut fresh = true;
        'watch: loop {
            let watched = async {
                // After a failure, new connections: the old one may be half dead.
                if !std::mem::replace(&mut fresh, false) {
                    s.reconnect().await?;
                }
                if let Some(state) = &wanted {
                    s.publish(state).await?;
                }
                let snap = s.read().await?;
                let watch = s.watch(snap.revision + 1).await?;
                Ok::<_, StoreError>((snap, watch))
            }
            .await;
            let (snap, mut watch) = match watched {
                Ok(x) => x,
                Err(StoreError::LeaseLost) => {
                    report(HaReport::LeaseLost).await;
                    break 'watch;
                }
                Err(e) => {
                    report(HaReport::Reachable(Err(e.to_string()))).await;
                    if let Some(next) = back_off(&mut retry, rx, &mut wanted).await {
                        return next;
                    }
                    continue 'watch;
                }
            };
            retry = RETRY_FIRST;
            report(HaReport::Reachable(Ok(()))).await;
            report(HaReport::Holder(snap.holder)).await;
            for (name, state) in snap.members {
                report(HaReport::Member(name, Some(state))).await;
            }
            // After a failed request the loop asks nothing until the store answers again:
            // renew the lease from here until it does.
            let mut recheck: Option<tokio::time::Instant> = None;
            loop {
                let at = recheck.unwrap_or_else(|| tokio::time::Instant::now() + RETRY_MAX * 3600);
                let result = tokio::select! {
                    cmd = rx.recv() => {
                        let action = match cmd {
                            None => return Next::Closed,
                            Some(HaCmd::Configure(c)) => return Next::Configure(c),
                            Some(HaCmd::Do(a)) => a,
                        };
                        serve(s, &action, &mut wanted).await
                    }
                    _ = tokio::time::sleep_until(at), if recheck.is_some() => {
                        // New connections first: the old one may be half dead.
                        match s.reconnect().await {
                            Ok(()) => serve(s, &HaAction::KeepAlive, &mut wanted).await,
                            Err(e) => Err(e),
                        }
                    }
                    changes = watch.next() => match changes {
                        Ok(changes) => {
                            for c in changes {
                                report(match c {
                                    Change::Holder(h) => HaReport::Holder(h),
                                    Change::Member(n, st) => HaReport::Member(n, st),
                                })
                                .await;
                            }
                            continue;
                        }
                        Err(e) => {
                            report(HaReport::Reachable(Err(e.to_string()))).await;
                            if let Some(next) = back_off(&mut retry, rx, &mut wanted).await {
                                return next;
                            }
                            continue 'watch;
                        }
                    },
                };
                match result {
                    Ok(r) => {
                        if let Some(r) = r {
                            report(r).await;
                        }
                        if recheck.take().is_some() {
                            // Reconnected: read and watch again on the new connections.
                            retry = RETRY_FIRST;
                            fresh = true;
                            continue 'watch;
                        }
                    }
                    Err(StoreError::LeaseLost) => {
                        report(HaReport::LeaseLost).await;
                        break 'watch;
                    }
                    Err(e) => {
                        report(HaReport::Reachable(Err(e.to_string()))).await;
                        recheck = Some(tokio::time::Instant::now() + retry);
                        retry = (retry * 2).min(RETRY_MAX);
                    }
                }
            }
        }
    }
}

/// Waits out the back-off (doubling it), keeping up with the loop: `Some` when the session
/// must end.
async fn back_off(
    retry: &mut Duration,
    rx: &mut mpsc::UnboundedReceiver<HaCmd>,
    wanted: &mut Option<MemberState>,
) -> Option<Next> {
    let until = tokio::time::Instant::now() + *retry;
    *retry = (*retry * 2).min(RETRY_MAX);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => return None,
            cmd = rx.recv() => match cmd {
                None => return Some(Next::Closed),
                Some(HaCmd::Configure(c)) => return Some(Next::Configure(c)),
                Some(HaCmd::Do(HaAction::Publish(s))) => *wanted = Some(s),
                Some(HaCmd::Do(_)) => {}
            },
        }
    }
}

/// One request; the report it makes, if any.
async fn serve(
    s: &mut EtcdStore,
    action: &HaAction,
    wanted: &mut Option<MemberState>,
) -> Result<Option<HaReport>, StoreError> {
    Ok(match action {
        HaAction::Campaign => Some(HaReport::Campaign(s.campaign().await?)),
        HaAction::Resign => {
            s.resign().await?;
            None
        }
        HaAction::KeepAlive => Some(HaReport::KeepAliveAcked {
            sent: s.keep_alive().await?,
        }),
        HaAction::Publish(state) => {
            *wanted = Some(*state);
            s.publish(state).await?;
            None
        }
    })
}

#[cfg(test)]
mod tests {
    //! The adapter and the sans-IO election together, against a real etcd.
    #![allow(clippy::disallowed_methods)]

    use std::time::Duration;

    use isthmus_core::ha::{Ha, HaConfig, Role};
    use isthmus_ha::testing::Etcd;
    use tokio::sync::watch;

    use super::*;

    const TTL: Duration = Duration::from_secs(2);

    /// One gateway of the pair: the adapter and a loop that feeds the election, publishing its
    /// role; ended (as a crash: the lease is left to expire) when dropped.
    struct Member {
        role: watch::Receiver<Role>,
        tasks: Vec<tokio::task::JoinHandle<()>>,
    }

    impl Drop for Member {
        fn drop(&mut self) {
            for t in &self.tasks {
                t.abort();
            }
        }
    }

    fn member(etcd: &Etcd, name: &str, priority: u8) -> Member {
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (in_tx, mut in_rx) = mpsc::channel(64);
        let adapter = tokio::spawn(run(cmd_rx, in_tx));
        let _ = cmd_tx.send(HaCmd::Configure(Some(StoreConfig {
            endpoints: vec![etcd.client_url().to_owned()],
            prefix: "/isthmus/ha/test/".into(),
            member: name.into(),
            lease_ttl: TTL,
            request_timeout: Duration::from_millis(300),
        })));
        let config = HaConfig {
            priority,
            preempt: false,
            preempt_delay: Duration::from_secs(30),
            lease_ttl: TTL,
            margin: Duration::from_millis(500),
            write_deadline: Duration::from_millis(500),
            yield_for: TTL,
        };
        let (role_tx, role) = watch::channel(Role::Standby);
        let name = name.to_owned();
        let lp = tokio::spawn(async move {
            let mut ha = Ha::new(&name, config, Instant::now());
            ha.set_ready(true);
            loop {
                let now = Instant::now();
                while let Some(a) = ha.poll_action(now) {
                    let _ = cmd_tx.send(HaCmd::Do(a));
                }
                role_tx.send_replace(ha.role(now));
                let wake = ha
                    .poll_timeout(now)
                    .unwrap_or(now + Duration::from_millis(100))
                    .max(now + Duration::from_millis(1));
                let report = tokio::select! {
                    r = in_rx.recv() => r,
                    _ = tokio::time::sleep_until(wake.into()) => continue,
                };
                let Some(Input::Ha(r)) = report else { return };
                let now = Instant::now();
                match r {
                    HaReport::Reachable(r) => ha.on_store_reachable(r.is_ok()),
                    HaReport::Granted { sent } => ha.on_lease_granted(sent),
                    HaReport::KeepAliveAcked { sent } => ha.on_keepalive_acked(sent),
                    HaReport::LeaseLost => ha.on_lease_lost(),
                    HaReport::Holder(h) => ha.on_holder(h, now),
                    HaReport::Member(n, s) => ha.on_member(&n, s, now),
                    HaReport::Campaign(r) => ha.on_campaign(r, now),
                    HaReport::ClearedStale => {}
                }
            }
        });
        Member {
            role,
            tasks: vec![adapter, lp],
        }
    }

    async fn wait_role(m: &Member, want: fn(&Role) -> bool, within: Duration) -> Role {
        let mut rx = m.role.clone();
        let r = tokio::time::timeout(within, rx.wait_for(want))
            .await
            .unwrap_or_else(|_| panic!("role is {:?} after {within:?}", *m.role.borrow()))
            .expect("the member runs");
        *r
    }

    fn active(r: &Role) -> bool {
        matches!(r, Role::Active { .. })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_better_member_takes_the_role_and_the_other_takes_over_when_it_dies() {
        let etcd = Etcd::start();
        let a = member(&etcd, "aws-gw-a", 10);
        let b = member(&etcd, "aws-gw-b", 20);
        let Role::Active { revision: first } = wait_role(&a, active, Duration::from_secs(20)).await
        else {
            unreachable!()
        };
        // b, ready too, yields to the better priority and stays standby while a lives.
        tokio::time::sleep(2 * TTL).await;
        assert_eq!(*b.role.borrow(), Role::Standby);
        assert!(active(&a.role.borrow()), "a keeps its lease alive");

        // a crashes: its lease is left to expire; b takes over once it has.
        let died = Instant::now();
        drop(a);
        let Role::Active { revision: second } = wait_role(&b, active, 4 * TTL).await else {
            unreachable!()
        };
        let took = died.elapsed();
        assert!(
            second > first,
            "the fencing revision grows: {second} after {first}"
        );
        assert!(
            took >= TTL / 2,
            "b cannot take over before a's lease expired: {took:?}"
        );

        // a comes back: standby (it never resumes its role), and b keeps it (no preempt).
        let a = member(&etcd, "aws-gw-a", 10);
        tokio::time::sleep(2 * TTL).await;
        assert_eq!(*a.role.borrow(), Role::Standby);
        assert_eq!(*b.role.borrow(), Role::Active { revision: second });
    }
}
