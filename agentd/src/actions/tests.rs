//! The actions adapter on paused time, with in-memory providers: what it writes, when, and
//! what it reports.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use isthmus_actions::{
    ActionResult, BoxFut, DnsBackend, Failure, FailureKind, RRset, RecordRef, RecordType,
    RouteTableBackend, TableRoutes, TableSeen,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::*;
use crate::daemon::input::Input;

/// A DNS server in memory: one record set, a log of writes, and knobs for failures.
#[derive(Default)]
struct FakeDns {
    state: Mutex<FakeDnsState>,
}

#[derive(Default)]
struct FakeDnsState {
    served: Option<RRset>,
    writes: Vec<(Instant, RRset)>,
    reads: u32,
    /// Fail this many writes with this kind.
    failing: Option<(FailureKind, u32)>,
    /// Another writer changes the record right after our next read this many times.
    race: u32,
    /// Writes are accepted but served only after this many reads.
    lag_reads: u32,
    pending: Option<RRset>,
    /// Calls hang forever.
    hang: bool,
}

impl FakeDns {
    fn serving(values: &[&str]) -> Arc<FakeDns> {
        let d = FakeDns::default();
        d.state.lock().unwrap().served = Some(rr(values));
        Arc::new(d)
    }
}

fn rr(values: &[&str]) -> RRset {
    RRset::new(30, values.iter().map(|v| v.to_string()).collect())
}

impl DnsBackend for FakeDns {
    fn read<'a>(&'a self, _rec: &'a RecordRef) -> BoxFut<'a, ActionResult<Option<RRset>>> {
        Box::pin(async move {
            if self.state.lock().unwrap().hang {
                std::future::pending::<()>().await;
            }
            let mut s = self.state.lock().unwrap();
            s.reads += 1;
            if s.pending.is_some() {
                if s.lag_reads == 0 {
                    s.served = s.pending.take();
                } else {
                    s.lag_reads -= 1;
                }
            }
            let out = s.served.clone();
            if s.race > 0 {
                s.race -= 1;
                s.served = Some(rr(&["203.0.113.99"]));
            }
            Ok(out)
        })
    }

    fn replace<'a>(
        &'a self,
        _rec: &'a RecordRef,
        seen: Option<&'a RRset>,
        new: &'a RRset,
    ) -> BoxFut<'a, ActionResult<()>> {
        Box::pin(async move {
            let mut s = self.state.lock().unwrap();
            if let Some((kind, n)) = s.failing {
                if n > 0 {
                    s.failing = Some((kind, n - 1));
                    return Err(Failure::new(kind, "injected"));
                }
            }
            if s.served.as_ref() != seen {
                return Err(Failure::new(FailureKind::Conflict, "prerequisite failed"));
            }
            s.writes.push((Instant::now(), new.clone()));
            if s.lag_reads > 0 {
                s.pending = Some(new.clone());
            } else {
                s.served = Some(new.clone());
            }
            Ok(())
        })
    }

    fn describe(&self) -> String {
        "fake dns".into()
    }
}

#[derive(Default)]
struct FakeTable {
    routes: Mutex<TableRoutes>,
    applies: Mutex<u32>,
}

impl RouteTableBackend for FakeTable {
    fn read<'a>(&'a self, destinations: &'a [String]) -> BoxFut<'a, ActionResult<TableSeen>> {
        Box::pin(async move {
            let all = self.routes.lock().unwrap();
            let routes = destinations
                .iter()
                .map(|d| (d.clone(), all.get(d).cloned().flatten()))
                .collect();
            Ok(TableSeen {
                routes,
                version: None,
            })
        })
    }

    fn apply<'a>(
        &'a self,
        _seen: &'a TableSeen,
        desired: &'a TableRoutes,
    ) -> BoxFut<'a, ActionResult<()>> {
        Box::pin(async move {
            *self.applies.lock().unwrap() += 1;
            let mut all = self.routes.lock().unwrap();
            for (d, t) in desired {
                all.insert(d.clone(), t.clone());
            }
            Ok(())
        })
    }

    fn describe(&self) -> String {
        "fake table".into()
    }
}

struct Bed {
    cmds: mpsc::UnboundedSender<ActionsCmd>,
    reports: mpsc::Receiver<Input>,
}

fn pacing() -> Pacing {
    Pacing {
        min_interval: Duration::from_secs(1),
        timeout: Duration::from_secs(2),
        retry_initial: Duration::from_millis(500),
        retry_max: Duration::from_secs(8),
        reassert_every: Duration::from_secs(60),
        verify_timeout: Duration::from_secs(5),
    }
}

fn bed(dns: &[(&str, Arc<FakeDns>)], tables: &[(&str, Arc<FakeTable>)]) -> Bed {
    let (cmds, rx) = mpsc::unbounded_channel();
    let (tx, reports) = mpsc::channel(64);
    tokio::spawn(run(rx, tx, crate::faults::Faults::detached()));
    let mut b = Backends {
        pacing: pacing(),
        ..Backends::default()
    };
    for (name, d) in dns {
        b.dns
            .insert(name.to_string(), d.clone() as Arc<dyn DnsBackend>);
    }
    for (id, t) in tables {
        b.tables.insert(
            (Cloud::Aws, id.to_string()),
            t.clone() as Arc<dyn RouteTableBackend>,
        );
    }
    cmds.send(ActionsCmd::Configure(Arc::new(b))).unwrap();
    Bed { cmds, reports }
}

fn want_dns(provider: &str, value: &str) -> Want {
    Want::Dns {
        provider: provider.into(),
        rec: RecordRef {
            name: "db.example.internal.".into(),
            rtype: RecordType::A,
        },
        rrset: rr(&[value]),
    }
}

impl Bed {
    fn apply(&self, wants: Vec<(TargetId, Want)>) {
        let decided = Instant::now();
        let map = wants
            .into_iter()
            .map(|(id, want)| (id, Desired { want, decided }))
            .collect::<BTreeMap<_, _>>();
        self.cmds.send(ActionsCmd::Apply(map)).unwrap();
    }

    async fn next(&mut self) -> ActionReport {
        loop {
            match tokio::time::timeout(Duration::from_secs(600), self.reports.recv()).await {
                Ok(Some(Input::Action(r))) => return r,
                Ok(Some(_)) => continue,
                _ => panic!("no report within 10 minutes"),
            }
        }
    }

    /// Reports until one matches.
    async fn until(&mut self, f: impl Fn(&ActionReport) -> bool) -> ActionReport {
        loop {
            let r = self.next().await;
            if f(&r) {
                return r;
            }
        }
    }
}

fn dns(group: &str) -> TargetId {
    TargetId::Dns(group.into())
}

#[tokio::test(start_paused = true)]
async fn a_new_answer_is_written_once_verified_and_reported_with_its_duration() {
    let server = FakeDns::serving(&["10.2.1.10"]);
    let mut b = bed(&[("corp", server.clone())], &[]);
    b.apply(vec![(dns("db"), want_dns("corp", "10.2.2.10"))]);
    let r = b.next().await;
    match r.event {
        ActionEvent::Done {
            changed: true,
            from,
            to,
            reasserted: false,
            ..
        } => {
            assert_eq!(from.as_deref(), Some("10.2.1.10"));
            assert_eq!(to, "10.2.2.10");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.provider, "fake dns");
    let s = server.state.lock().unwrap();
    assert_eq!(s.writes.len(), 1);
    assert_eq!(s.served, Some(rr(&["10.2.2.10"])));
}

#[tokio::test(start_paused = true)]
async fn an_answer_already_in_place_is_not_written() {
    let server = FakeDns::serving(&["10.2.1.10"]);
    let mut b = bed(&[("corp", server.clone())], &[]);
    b.apply(vec![(dns("db"), want_dns("corp", "10.2.1.10"))]);
    match b.next().await.event {
        ActionEvent::Done { changed: false, .. } => {}
        other => panic!("{other:?}"),
    }
    assert!(server.state.lock().unwrap().writes.is_empty());
}

#[tokio::test(start_paused = true)]
async fn another_writer_between_read_and_write_means_read_again_never_overwrite_blindly() {
    let server = FakeDns::serving(&["10.2.1.10"]);
    server.state.lock().unwrap().race = 1;
    let mut b = bed(&[("corp", server.clone())], &[]);
    b.apply(vec![(dns("db"), want_dns("corp", "10.2.2.10"))]);
    match b.next().await.event {
        ActionEvent::Conflict { found } => assert_eq!(found, "10.2.1.10"),
        other => panic!("{other:?}"),
    }
    match b.next().await.event {
        // The second write was conditional on what the second read saw: the other writer's.
        ActionEvent::Done {
            changed: true,
            from,
            ..
        } => assert_eq!(from.as_deref(), Some("203.0.113.99")),
        other => panic!("{other:?}"),
    }
    assert_eq!(server.state.lock().unwrap().writes.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn failures_are_retried_with_growing_back_off_then_succeed() {
    let server = FakeDns::serving(&["10.2.1.10"]);
    server.state.lock().unwrap().failing = Some((FailureKind::Unavailable, 3));
    let mut b = bed(&[("corp", server.clone())], &[]);
    let start = Instant::now();
    b.apply(vec![(dns("db"), want_dns("corp", "10.2.2.10"))]);
    let mut waits = Vec::new();
    for attempt in 1..=3 {
        match b.next().await.event {
            ActionEvent::Failed {
                kind: FailureKind::Unavailable,
                attempt: a,
                retry_in,
                ..
            } => {
                assert_eq!(a, attempt);
                waits.push(retry_in);
            }
            other => panic!("{other:?}"),
        }
    }
    // 500 ms doubling, each with jitter in [½, 1].
    for (i, w) in waits.iter().enumerate() {
        let base = Duration::from_millis(500 << i);
        assert!(*w >= base / 2 && *w <= base, "attempt {}: {w:?}", i + 1);
    }
    assert!(matches!(
        b.next().await.event,
        ActionEvent::Done { changed: true, .. }
    ));
    let took = Instant::now() - start;
    let sum: Duration = waits.iter().sum();
    assert!(took >= sum, "{took:?} < {sum:?}");
}

#[tokio::test(start_paused = true)]
async fn writes_to_one_target_are_at_most_one_per_min_interval_and_the_newest_decision_wins() {
    let server = FakeDns::serving(&["10.2.1.10"]);
    let mut b = bed(&[("corp", server.clone())], &[]);
    b.apply(vec![(dns("db"), want_dns("corp", "10.2.2.10"))]);
    b.until(|r| matches!(r.event, ActionEvent::Done { .. }))
        .await;
    // Two decisions within the interval: only the last is written, after the interval.
    b.apply(vec![(dns("db"), want_dns("corp", "10.2.3.10"))]);
    b.apply(vec![(dns("db"), want_dns("corp", "10.2.1.10"))]);
    let r = b
        .until(|r| matches!(r.event, ActionEvent::Done { .. }))
        .await;
    match r.event {
        ActionEvent::Done { to, .. } => assert_eq!(to, "10.2.1.10"),
        _ => unreachable!(),
    }
    let s = server.state.lock().unwrap();
    assert_eq!(s.writes.len(), 2, "{:?}", s.writes);
    let gap = s.writes[1].0 - s.writes[0].0;
    assert!(gap >= Duration::from_secs(1), "{gap:?}");
}

#[tokio::test(start_paused = true)]
async fn a_change_not_served_in_time_is_not_verified_and_retried() {
    let server = FakeDns::serving(&["10.2.1.10"]);
    server.state.lock().unwrap().lag_reads = 1000;
    let mut b = bed(&[("corp", server.clone())], &[]);
    b.apply(vec![(dns("db"), want_dns("corp", "10.2.2.10"))]);
    match b.next().await.event {
        ActionEvent::Failed {
            kind: FailureKind::NotVerified,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_hanging_provider_holds_only_its_own_target() {
    let stuck = FakeDns::serving(&["10.2.1.10"]);
    stuck.state.lock().unwrap().hang = true;
    let fine = FakeDns::serving(&["10.2.1.10"]);
    let mut b = bed(&[("stuck", stuck), ("fine", fine.clone())], &[]);
    b.apply(vec![
        (dns("a"), want_dns("stuck", "10.2.2.10")),
        (dns("b"), want_dns("fine", "10.2.2.10")),
    ]);
    let r = b.next().await;
    assert_eq!(r.target, dns("b"));
    assert!(matches!(r.event, ActionEvent::Done { changed: true, .. }));
    // The stuck one times out (the pacing timeout) and says so; it is retried, not waited for.
    let r = b.next().await;
    assert_eq!(r.target, dns("a"));
    match r.event {
        ActionEvent::Failed {
            kind: FailureKind::Unavailable,
            message,
            ..
        } => assert!(message.contains("no answer within"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_target_changed_behind_our_back_is_put_back_at_the_next_reassertion() {
    let server = FakeDns::serving(&["10.2.1.10"]);
    let mut b = bed(&[("corp", server.clone())], &[]);
    b.apply(vec![(dns("db"), want_dns("corp", "10.2.2.10"))]);
    b.until(|r| matches!(r.event, ActionEvent::Done { .. }))
        .await;
    server.state.lock().unwrap().served = Some(rr(&["198.51.100.7"]));
    match b.next().await.event {
        ActionEvent::Done {
            changed: true,
            reasserted: true,
            from,
            ..
        } => assert_eq!(from.as_deref(), Some("198.51.100.7")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_route_table_gets_only_the_routes_that_differ_and_forgotten_targets_stop() {
    let table = Arc::new(FakeTable::default());
    table
        .routes
        .lock()
        .unwrap()
        .insert("10.9.0.0/16".into(), Some("pcx-foreign".into()));
    let mut b = bed(&[], &[("rtb-1", table.clone())]);
    let id = TargetId::RouteTable {
        cloud: Cloud::Aws,
        id: "rtb-1".into(),
    };
    let routes: TableRoutes = [("10.2.0.0/16".to_string(), Some("eni-1".to_string()))].into();
    b.apply(vec![(id.clone(), Want::Table { routes })]);
    assert!(matches!(
        b.next().await.event,
        ActionEvent::Done { changed: true, .. }
    ));
    let all = table.routes.lock().unwrap().clone();
    assert_eq!(all.get("10.2.0.0/16"), Some(&Some("eni-1".to_string())));
    assert_eq!(
        all.get("10.9.0.0/16"),
        Some(&Some("pcx-foreign".to_string()))
    );
    // Forgotten: no more work on it, even at the re-assertion time.
    b.apply(vec![]);
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert_eq!(*table.applies.lock().unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_reassertion_that_failed_and_then_finds_everything_in_place_says_so() {
    // Otherwise the loop would show the target failing until its next change.
    let server = FakeDns::serving(&["10.2.1.10"]);
    let mut b = bed(&[("corp", server.clone())], &[]);
    b.apply(vec![(dns("db"), want_dns("corp", "10.2.1.10"))]);
    assert!(matches!(
        b.next().await.event,
        ActionEvent::Done { changed: false, .. }
    ));
    server.state.lock().unwrap().hang = true;
    assert!(matches!(
        b.next().await.event,
        ActionEvent::Failed {
            kind: FailureKind::Unavailable,
            ..
        }
    ));
    server.state.lock().unwrap().hang = false;
    match b.next().await.event {
        ActionEvent::Done {
            changed: false,
            reasserted: true,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
}
