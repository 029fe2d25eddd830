//! The etcd store against a real etcd (Debian's `etcd-server`) on loopback: campaigns decided
//! by the store, the role gone with its holder's lease, resignation that never deletes
//! another's, member states and their watch, and an unreachable store reported within the
//! deadline.
// A test harness: real time for deadlines and the etcd process.
#![allow(clippy::disallowed_methods)]

use std::net::TcpListener;
use std::time::{Duration, Instant};

use isthmus_ha::testing::Etcd;
use isthmus_ha::{Change, EtcdStore, MemberState, StoreConfig, StoreError};

fn config(etcd: &Etcd, member: &str) -> StoreConfig {
    StoreConfig {
        endpoints: vec![etcd.client_url().to_owned()],
        prefix: "/isthmus/test/".into(),
        member: member.into(),
        lease_ttl: Duration::from_secs(2),
        request_timeout: Duration::from_millis(500),
    }
}

/// A store with a lease, retrying while etcd starts.
async fn store(etcd: &Etcd, member: &str) -> EtcdStore {
    let start = Instant::now();
    loop {
        let attempt = async {
            let mut s = EtcdStore::connect(config(etcd, member)).await?;
            s.grant().await?;
            Ok::<_, StoreError>(s)
        };
        match attempt.await {
            Ok(s) => return s,
            Err(e) if start.elapsed() < Duration::from_secs(20) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("etcd did not come up: {e}"),
        }
    }
}

fn state(priority: u8, ready: bool) -> MemberState {
    MemberState {
        priority,
        preempt: true,
        ready,
        drained: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_campaign_wins_and_the_other_learns_who_holds_the_role() {
    let etcd = Etcd::start();
    let mut a = store(&etcd, "aws-gw-a").await;
    let mut b = store(&etcd, "aws-gw-b").await;
    let won = a.campaign().await.expect("an answer");
    let revision = won.expect("a wins a free role");
    let lost = b.campaign().await.expect("an answer");
    let holder = lost.expect_err("b loses to a");
    assert_eq!(holder.member, "aws-gw-a");
    assert_eq!(holder.revision, revision);
    // a campaigning again does not take it twice.
    assert!(a.campaign().await.expect("an answer").is_err());
    let snap = b.read().await.expect("a read");
    assert_eq!(snap.holder.map(|h| h.member), Some("aws-gw-a".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_role_goes_with_its_holders_lease_and_revisions_only_grow() {
    let etcd = Etcd::start();
    let mut a = store(&etcd, "aws-gw-a").await;
    let mut b = store(&etcd, "aws-gw-b").await;
    let first = a.campaign().await.expect("answer").expect("won");
    // b keeps its lease alive; a stops (killed).
    let until = Instant::now() + Duration::from_secs(6);
    let mut taken = None;
    while Instant::now() < until {
        b.keep_alive().await.expect("b's lease lives");
        if let Ok(rev) = b.campaign().await.expect("answer") {
            taken = Some((rev, Instant::now()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (second, _) = taken.expect("b took the role after a's lease expired");
    assert!(second > first, "{second} after {first}");
    // a's writes on its expired lease say so (not "unreachable": the store answered).
    match a.publish(&state(1, true)).await {
        Err(StoreError::LeaseLost) => {}
        other => panic!("a's publish should find its lease lost: {other:?}"),
    }
    b.resign().await.expect("b resigns");
    match a.campaign().await {
        Err(StoreError::LeaseLost) => {}
        other => panic!("a's campaign should find its lease lost: {other:?}"),
    }
    // a's keepalive now finds its lease gone.
    match a.keep_alive().await {
        Err(StoreError::LeaseLost) => {}
        other => panic!("a's lease should be lost: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_member_clears_what_its_previous_life_held_and_nothing_else() {
    let etcd = Etcd::start();
    let mut old = store(&etcd, "aws-gw-a").await;
    old.campaign().await.expect("answer").expect("won");
    // The same gateway after a crash: a new store, a new lease, the old one still alive.
    let mut new = store(&etcd, "aws-gw-a").await;
    let mut b = store(&etcd, "aws-gw-b").await;
    assert!(
        !b.clear_stale_hold().await.expect("answer"),
        "not b's to clear"
    );
    assert!(new.clear_stale_hold().await.expect("answer"));
    assert_eq!(b.read().await.expect("read").holder, None);
    // Its own current hold is never stale.
    new.campaign().await.expect("answer").expect("won");
    assert!(!new.clear_stale_hold().await.expect("answer"));
    assert_eq!(
        b.read().await.expect("read").holder.map(|h| h.member),
        Some("aws-gw-a".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resigning_frees_only_ones_own_role() {
    let etcd = Etcd::start();
    let mut a = store(&etcd, "aws-gw-a").await;
    let mut b = store(&etcd, "aws-gw-b").await;
    a.campaign().await.expect("answer").expect("won");
    b.resign().await.expect("an answer");
    assert_eq!(
        b.read().await.expect("read").holder.map(|h| h.member),
        Some("aws-gw-a".to_owned()),
        "b's resignation must not delete a's role"
    );
    a.resign().await.expect("an answer");
    assert_eq!(b.read().await.expect("read").holder, None);
    assert!(b.campaign().await.expect("answer").is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_states_are_watched_and_go_with_their_lease() {
    let etcd = Etcd::start();
    let mut a = store(&etcd, "aws-gw-a").await;
    let mut b = store(&etcd, "aws-gw-b").await;
    let snap = b.read().await.expect("read");
    let mut watch = b.watch(snap.revision + 1).await.expect("a watch");
    a.publish(&state(0, true)).await.expect("published");
    a.campaign().await.expect("answer").expect("won");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(8);
    // a stops renewing: its member state and its role are deleted when the lease expires.
    while Instant::now() < deadline && seen.len() < 4 {
        b.keep_alive().await.expect("b lives");
        if let Ok(Ok(changes)) =
            tokio::time::timeout(Duration::from_millis(300), watch.next()).await
        {
            seen.extend(changes);
        }
    }
    assert!(
        seen.contains(&Change::Member("aws-gw-a".into(), Some(state(0, true)))),
        "{seen:?}"
    );
    assert!(seen
        .iter()
        .any(|c| matches!(c, Change::Holder(Some(h)) if h.member == "aws-gw-a")));
    assert!(
        seen.contains(&Change::Member("aws-gw-a".into(), None)),
        "{seen:?}"
    );
    assert!(seen.contains(&Change::Holder(None)), "{seen:?}");
    // Our own member key is never reported to us.
    b.publish(&state(1, true)).await.expect("published");
    let snap = b.read().await.expect("read");
    assert!(snap.members.iter().all(|(n, _)| n != "aws-gw-b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_is_gone_is_unreachable_within_the_deadline() {
    let etcd = Etcd::start();
    let mut a = store(&etcd, "aws-gw-a").await;
    drop(etcd);
    let start = Instant::now();
    match a.campaign().await {
        Err(StoreError::Unreachable(_)) => {}
        other => panic!("expected unreachable: {other:?}"),
    }
    match a.keep_alive().await {
        Err(StoreError::Unreachable(_)) => {}
        other => panic!("expected unreachable: {other:?}"),
    }
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_accepts_and_never_answers_is_unreachable_within_the_deadline() {
    // A listener that takes connections and reads nothing, answers nothing.
    let listener = TcpListener::bind("127.0.0.1:0").expect("a listener");
    let url = format!("http://{}", listener.local_addr().expect("an address"));
    let _holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().take(8) {
            held.push(conn);
        }
        std::thread::sleep(Duration::from_secs(10));
    });
    let cfg = StoreConfig {
        endpoints: vec![url],
        prefix: "/isthmus/test/".into(),
        member: "aws-gw-a".into(),
        lease_ttl: Duration::from_secs(2),
        request_timeout: Duration::from_millis(500),
    };
    let start = Instant::now();
    let result = async {
        let mut s = EtcdStore::connect(cfg).await?;
        s.grant().await
    }
    .await;
    assert!(
        matches!(result, Err(StoreError::Unreachable(_))),
        "{result:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}
