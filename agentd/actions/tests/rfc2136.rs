//! The RFC 2136 provider against a real BIND 9 primary (one named per test, on its own port
//! or in its own namespace): what it serves afterwards is checked with `dig`, independently of
//! the provider's own `read`.

// Test code: unwrap() is the assertion (helpers outside #[test] functions too).
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use isthmus_actions::rfc2136::{Rfc2136, Rfc2136Settings, TsigAlgorithm, TsigKey};
use isthmus_actions::{DnsBackend, FailureKind, RRset, RecordRef, RecordType};
use isthmus_tests::bind::{require_named, tsig_keygen, TsigKeyFile};
use isthmus_tests::{Bind, ZoneRecord};
use zeroize::Zeroizing;

const ZONE: &str = "fo.test.";
const GW: &str = "gw.fo.test.";

/// A named serving fo.test. with `gw` A 192.0.2.1 (TTL 60), `gw6` AAAA, `www` CNAME and `new`
/// (no records) granted to the key, and `fixed` A not granted; and the key.
struct Server {
    bind: Bind,
    key: TsigKeyFile,
    _dir: tempfile::TempDir,
}

fn server() -> Option<Server> {
    if !require_named() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = tsig_keygen("failover-key");
    let bind = Bind::start(
        dir.path(),
        ZONE,
        &[
            ZoneRecord::granted("gw", 60, "A", "192.0.2.1"),
            ZoneRecord::granted("gw6", 60, "AAAA", "2001:DB8:0:0::0001"),
            ZoneRecord::granted("www", 60, "CNAME", "GW.fo.test."),
            ZoneRecord::granted_name("new"),
            ZoneRecord::fixed("fixed", 60, "A", "192.0.2.99"),
        ],
        (&key.name, &key.secret_b64),
    );
    Some(Server {
        bind,
        key,
        _dir: dir,
    })
}

impl Server {
    fn provider(&self) -> Rfc2136 {
        let key = TsigKey::from_key_file(&self.key.text, None, None).unwrap();
        self.provider_with(Some(key), Duration::from_secs(3))
    }

    fn provider_with(&self, key: Option<TsigKey>, timeout: Duration) -> Rfc2136 {
        Rfc2136::new(Rfc2136Settings {
            server: self.bind.addr(),
            zone: ZONE.into(),
            key,
            timeout,
        })
        .unwrap()
    }

    fn dig(&self, name: &str, rtype: &str) -> Vec<String> {
        let mut v = self.bind.query(rtype, name);
        v.sort();
        v
    }
}

fn a(name: &str) -> RecordRef {
    RecordRef {
        name: name.into(),
        rtype: RecordType::A,
    }
}

fn set(ttl: u32, values: &[&str]) -> RRset {
    RRset::new(ttl, values.iter().map(|v| v.to_string()).collect())
}

#[tokio::test]
async fn a_replace_is_served_afterwards_and_bumps_the_serial() {
    let Some(s) = server() else { return };
    let p = s.provider();
    let seen = p.read(&a(GW)).await.unwrap();
    assert_eq!(seen, Some(set(60, &["192.0.2.1"])));
    let serial = s.bind.serial();

    p.replace(
        &a(GW),
        seen.as_ref(),
        &set(30, &["198.51.100.7", "198.51.100.8"]),
    )
    .await
    .unwrap();

    assert_eq!(s.dig(GW, "A"), ["198.51.100.7", "198.51.100.8"]);
    assert!(s.bind.serial() > serial, "the SOA serial went up");
    assert_eq!(
        p.read(&a(GW)).await.unwrap(),
        Some(set(30, &["198.51.100.7", "198.51.100.8"]))
    );
}

#[tokio::test]
async fn reads_are_canonical_and_absent_sets_are_none() {
    let Some(s) = server() else { return };
    let p = s.provider();
    let aaaa = RecordRef {
        name: "gw6.fo.test.".into(),
        rtype: RecordType::Aaaa,
    };
    assert_eq!(
        p.read(&aaaa).await.unwrap(),
        Some(set(60, &["2001:db8::1"]))
    );
    let cname = RecordRef {
        name: "www.fo.test.".into(),
        rtype: RecordType::Cname,
    };
    assert_eq!(
        p.read(&cname).await.unwrap(),
        Some(set(60, &["gw.fo.test."]))
    );
    // NXDOMAIN, and NODATA (the name exists with another type; a CNAME is not an A).
    assert_eq!(p.read(&a("nothing.fo.test.")).await.unwrap(), None);
    assert_eq!(p.read(&a("gw6.fo.test.")).await.unwrap(), None);
    assert_eq!(p.read(&a("www.fo.test.")).await.unwrap(), None);
}

#[tokio::test]
async fn an_absent_set_is_created_and_cname_and_aaaa_are_replaced() {
    let Some(s) = server() else { return };
    let p = s.provider();
    p.replace(&a("new.fo.test."), None, &set(20, &["192.0.2.50"]))
        .await
        .unwrap();
    assert_eq!(s.dig("new.fo.test.", "A"), ["192.0.2.50"]);

    let cname = RecordRef {
        name: "www.fo.test.".into(),
        rtype: RecordType::Cname,
    };
    let seen = p.read(&cname).await.unwrap();
    p.replace(&cname, seen.as_ref(), &set(20, &["gw6.fo.test."]))
        .await
        .unwrap();
    assert_eq!(s.dig("www.fo.test.", "CNAME"), ["gw6.fo.test."]);

    let aaaa = RecordRef {
        name: "gw6.fo.test.".into(),
        rtype: RecordType::Aaaa,
    };
    let seen = p.read(&aaaa).await.unwrap();
    p.replace(&aaaa, seen.as_ref(), &set(20, &["2001:db8::2"]))
        .await
        .unwrap();
    assert_eq!(s.dig("gw6.fo.test.", "AAAA"), ["2001:db8::2"]);
}

/// Delete and add in one message: a reader polling as fast as it can during 50 replaces never
/// finds the name without its A set (two messages would leave a NODATA window each time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_never_sees_the_set_missing_during_50_replaces() {
    let Some(s) = server() else { return };
    let p = Arc::new(s.provider());
    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = tokio::spawn({
        let (p, done, reads) = (p.clone(), done.clone(), reads.clone());
        async move {
            let mut missing = Vec::new();
            while !done.load(Ordering::Relaxed) {
                match p.read(&a(GW)).await {
                    Ok(Some(set)) if set.values.len() == 1 => {}
                    other => missing.push(format!("{other:?}")),
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
            missing
        }
    });
    let mut seen = p.read(&a(GW)).await.unwrap();
    for i in 0..50u32 {
        let new = set(60, &[&format!("198.51.100.{}", i + 1)]);
        p.replace(&a(GW), seen.as_ref(), &new).await.unwrap();
        seen = Some(new);
    }
    done.store(true, Ordering::Relaxed);
    let missing = reader.await.unwrap();
    assert!(missing.is_empty(), "the reader saw {missing:?}");
    assert!(
        reads.load(Ordering::Relaxed) >= 50,
        "the reader ran alongside"
    );
    assert_eq!(s.dig(GW, "A"), ["198.51.100.50"]);
}

#[tokio::test]
async fn a_stale_seen_is_a_conflict_and_changes_nothing() {
    let Some(s) = server() else { return };
    let p = s.provider();
    let serial = s.bind.serial();
    let stale = set(60, &["192.0.2.77"]);
    let e = p
        .replace(&a(GW), Some(&stale), &set(60, &["198.51.100.7"]))
        .await
        .unwrap_err();
    assert_eq!(e.kind, FailureKind::Conflict, "{e}");
    assert!(e.message.contains("NXRRSET"), "{e}");
    assert_eq!(s.dig(GW, "A"), ["192.0.2.1"]);
    assert_eq!(s.bind.serial(), serial);

    // A subset of the served set is stale too: the prerequisite compares whole sets.
    p.replace(
        &a(GW),
        Some(&set(60, &["192.0.2.1"])),
        &set(60, &["192.0.2.1", "192.0.2.2"]),
    )
    .await
    .unwrap();
    let e = p
        .replace(
            &a(GW),
            Some(&set(60, &["192.0.2.1"])),
            &set(60, &["198.51.100.7"]),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, FailureKind::Conflict, "{e}");
    assert_eq!(s.dig(GW, "A"), ["192.0.2.1", "192.0.2.2"]);
}

#[tokio::test]
async fn seen_none_on_an_existing_set_is_a_conflict() {
    let Some(s) = server() else { return };
    let p = s.provider();
    let e = p
        .replace(&a(GW), None, &set(60, &["198.51.100.7"]))
        .await
        .unwrap_err();
    assert_eq!(e.kind, FailureKind::Conflict, "{e}");
    assert!(e.message.contains("YXRRSET"), "{e}");
    assert_eq!(s.dig(GW, "A"), ["192.0.2.1"]);
}

#[tokio::test]
async fn a_wrong_secret_is_an_auth_failure_about_the_signature() {
    let Some(s) = server() else { return };
    let wrong = TsigKey {
        name: "failover-key.".into(),
        algorithm: TsigAlgorithm::HmacSha256,
        secret: Zeroizing::new(vec![0x5a; 32]),
    };
    let p = s.provider_with(Some(wrong), Duration::from_secs(3));
    let e = p
        .replace(
            &a(GW),
            Some(&set(60, &["192.0.2.1"])),
            &set(60, &["198.51.100.7"]),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, FailureKind::Auth, "{e}");
    assert!(e.message.contains("signature"), "{e}");
    assert!(!e.message.contains(&s.key.secret_b64), "{e}");
    assert_eq!(s.dig(GW, "A"), ["192.0.2.1"]);
}

#[tokio::test]
async fn a_wrong_key_name_is_an_auth_failure_about_the_key_name() {
    let Some(s) = server() else { return };
    let mut key = TsigKey::from_key_file(&s.key.text, None, None).unwrap();
    key.name = "other-key.".into();
    let p = s.provider_with(Some(key), Duration::from_secs(3));
    let e = p
        .replace(
            &a(GW),
            Some(&set(60, &["192.0.2.1"])),
            &set(60, &["198.51.100.7"]),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, FailureKind::Auth, "{e}");
    assert!(e.message.contains("key name other-key."), "{e}");
    assert_eq!(s.dig(GW, "A"), ["192.0.2.1"]);
}

#[tokio::test]
async fn a_name_outside_the_update_policy_is_rejected() {
    let Some(s) = server() else { return };
    let p = s.provider();
    let fixed = a("fixed.fo.test.");
    let seen = p.read(&fixed).await.unwrap();
    let e = p
        .replace(&fixed, seen.as_ref(), &set(60, &["198.51.100.7"]))
        .await
        .unwrap_err();
    assert_eq!(e.kind, FailureKind::Rejected, "{e}");
    assert!(e.message.contains("refused"), "{e}");
    assert!(e.message.contains("update-policy"), "{e}");
    assert_eq!(s.dig("fixed.fo.test.", "A"), ["192.0.2.99"]);
}

#[tokio::test]
async fn a_stopped_server_is_unavailable_within_the_timeout_and_usable_once_started_again() {
    let Some(mut s) = server() else { return };
    let timeout = Duration::from_secs(1);
    let key = TsigKey::from_key_file(&s.key.text, None, None).unwrap();
    let p = s.provider_with(Some(key), timeout);
    let seen = p.read(&a(GW)).await.unwrap();
    s.bind.stop();

    let started = tokio::time::Instant::now();
    let e = p
        .replace(&a(GW), seen.as_ref(), &set(60, &["198.51.100.7"]))
        .await
        .unwrap_err();
    assert_eq!(e.kind, FailureKind::Unavailable, "{e}");
    let e = p.read(&a(GW)).await.unwrap_err();
    assert_eq!(e.kind, FailureKind::Unavailable, "{e}");
    // Two operations, each bounded by the timeout (with slack for a loaded machine).
    assert!(started.elapsed() < 2 * timeout + Duration::from_secs(2));

    s.bind.start_again();
    p.replace(&a(GW), seen.as_ref(), &set(60, &["198.51.100.7"]))
        .await
        .unwrap();
    assert_eq!(s.dig(GW, "A"), ["198.51.100.7"]);
}

#[tokio::test]
async fn an_update_too_large_for_udp_goes_over_tcp() {
    let Some(s) = server() else { return };
    let p = s.provider();
    let values: Vec<String> = (1..=60).map(|i| format!("198.51.100.{i}")).collect();
    let big = RRset::new(60, values.clone());
    let message = p
        .update_message(&a(GW), Some(&set(60, &["192.0.2.1"])), &big)
        .unwrap();
    assert!(message.to_vec().unwrap().len() > 512, "too large for UDP");
    p.replace(&a(GW), Some(&set(60, &["192.0.2.1"])), &big)
        .await
        .unwrap();
    // 60 A records also make the answer larger than 512 bytes: dig and read use EDNS or TCP.
    assert_eq!(p.read(&a(GW)).await.unwrap(), Some(big.clone()));
    let mut served = s.dig(GW, "A");
    served.sort();
    let mut want = values;
    want.sort();
    assert_eq!(served, want);
}

/// The harness also runs named inside a namespace the test made, on an address of its own.
#[test]
fn bind_serves_and_takes_updates_inside_a_network_namespace() {
    if !require_named() {
        return;
    }
    let ns = isthmus_tests::Netns::new("dns");
    ns.add_addresses(&["10.53.0.1/24"]);
    let dir = tempfile::tempdir().unwrap();
    let key = tsig_keygen("failover-key");
    let addr = "10.53.0.1:53".parse().unwrap();
    let bind = Bind::start_in(
        &ns,
        addr,
        dir.path(),
        ZONE,
        &[ZoneRecord::granted("gw", 60, "A", "192.0.2.1")],
        (&key.name, &key.secret_b64),
    );
    assert_eq!(bind.query("A", GW), ["192.0.2.1"]);
    let text = key.text.clone();
    ns.run_in(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let p = Rfc2136::new(Rfc2136Settings {
                server: addr,
                zone: ZONE.into(),
                key: Some(TsigKey::from_key_file(&text, None, None).unwrap()),
                timeout: Duration::from_secs(3),
            })
            .unwrap();
            let seen = p.read(&a(GW)).await.unwrap();
            p.replace(&a(GW), seen.as_ref(), &set(60, &["10.53.0.9"]))
                .await
                .unwrap();
        })
    });
    assert_eq!(bind.query("A", GW), ["10.53.0.9"]);
}

/// BIND checks the time with the request's fudge (300 s): a clock 250 s off still works, one
/// 400 s off is BADTIME, reported as such.
#[tokio::test]
async fn clock_skew_within_the_fudge_works_and_beyond_it_is_an_auth_failure_about_time() {
    let Some(s) = server() else { return };
    let p = s.provider().with_clock_offset(-250);
    let seen = p.read(&a(GW)).await.unwrap();
    p.replace(&a(GW), seen.as_ref(), &set(60, &["198.51.100.7"]))
        .await
        .unwrap();

    let p = s.provider().with_clock_offset(400);
    let e = p
        .replace(
            &a(GW),
            Some(&set(60, &["198.51.100.7"])),
            &set(60, &["198.51.100.8"]),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, FailureKind::Auth, "{e}");
    assert!(e.message.contains("bad time"), "{e}");
    assert!(e.message.contains("-400s off"), "{e}");
    assert_eq!(s.dig(GW, "A"), ["198.51.100.7"]);
}
