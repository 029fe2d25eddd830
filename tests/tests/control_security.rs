//! The control socket under hostile or unprivileged clients: who may connect, who may read and
//! who may write, and what malformed, oversized, slow and too many requests get. After each,
//! the daemon must still answer.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use isthmus_tests::{
    http_get, netctl, netctl_as, raise_open_files, Agentd, Fixture, Flood, FloodMode, Identity,
    Netns,
};

const READ_GID: u32 = 47110;
const ADMIN_GID: u32 = 47111;

fn reader() -> Identity {
    Identity::User {
        uid: 47120,
        gid: 47120,
        groups: vec![READ_GID],
    }
}
/// In both groups (the read group to connect, the admin group to write), neither primary:
/// only SO_PEERGROUPS shows them.
fn admin() -> Identity {
    Identity::User {
        uid: 47121,
        gid: 47121,
        groups: vec![READ_GID, ADMIN_GID],
    }
}
/// Another member of the read group.
fn reader2() -> Identity {
    Identity::User {
        uid: 47123,
        gid: 47123,
        groups: vec![READ_GID],
    }
}
fn outsider() -> Identity {
    Identity::User {
        uid: 47122,
        gid: 47122,
        groups: vec![47122],
    }
}

fn fixture(extra_control: &str) -> Fixture {
    Fixture::new(&format!(
        "[agent]\nname = \"sec\"\n[control]\nread_group = {READ_GID}\nadmin_group = {ADMIN_GID}\n{extra_control}\n"
    ))
}

#[test]
fn read_and_write_follow_the_groups_and_outsiders_cannot_connect() {
    let ns = Netns::new("pm");
    let fx = fixture("");
    let mut agentd = Agentd::start(&fx, &ns);
    let sock = fx.socket();

    let status = netctl_as(&reader(), &sock, &["--json", "status"]);
    assert_eq!(status.code, 0, "{status:?}");
    assert_eq!(status.json()["agent"]["caller_access"], "read");

    let denied = netctl_as(&reader(), &sock, &["reload"]);
    assert_eq!(denied.code, 4, "{denied:?}");
    assert!(denied.stderr.contains("permission denied"), "{denied:?}");
    assert!(
        denied.stderr.contains(&format!("gid {ADMIN_GID}")),
        "{denied:?}"
    );

    let reload = netctl_as(&admin(), &sock, &["reload"]);
    assert_eq!(reload.code, 0, "{reload:?}");
    let status = netctl_as(&admin(), &sock, &["--json", "status"]);
    assert_eq!(status.json()["agent"]["caller_access"], "write");

    let outsider = netctl_as(&outsider(), &sock, &["status"]);
    assert_eq!(outsider.code, 4, "{outsider:?}");
    assert!(
        outsider.stderr.contains("permission denied"),
        "{outsider:?}"
    );
    assert!(
        outsider.stderr.contains(&format!("gid {READ_GID}")),
        "{outsider:?}"
    );

    // The daemon is unaffected by any of it.
    assert!(agentd.is_running());
    let status = netctl(&sock, &["--json", "status"]).json();
    assert_eq!(status["config"]["reloads_applied"], 1);
    assert_eq!(status["config"]["reloads_rejected"], 0);
}

/// Send raw bytes, half-close, read the whole answer (or until `timeout`).
fn raw_exchange(sock: &Path, request: &[u8], timeout: Duration) -> String {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn status_line(resp: &str) -> &str {
    resp.lines().next().unwrap_or("")
}

fn assert_still_serving(sock: &Path) {
    let out = netctl(sock, &["status"]);
    assert_eq!(out.code, 0, "agentd stopped answering: {out:?}");
}

#[test]
fn malformed_oversized_and_unknown_requests_get_typed_4xx() {
    let ns = Netns::new("ab");
    let fx = fixture("");
    let mut agentd = Agentd::start(&fx, &ns);
    let sock = fx.socket();
    let t = Duration::from_secs(10);

    let garbage = raw_exchange(&sock, b"\x00\x01\x02 not http at all\r\n\r\n", t);
    assert!(
        status_line(&garbage).starts_with("HTTP/1.1 400"),
        "{garbage:?}"
    );
    assert_still_serving(&sock);

    let big_header = format!(
        "GET /v1/status HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let resp = raw_exchange(&sock, big_header.as_bytes(), t);
    assert!(status_line(&resp).starts_with("HTTP/1.1 431"), "{resp:?}");
    assert_still_serving(&sock);

    let mut big_body =
        b"POST /v1/reload HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\n".to_vec();
    big_body.extend(std::iter::repeat_n(b'x', 70 * 1024));
    let resp = raw_exchange(&sock, &big_body, t);
    assert!(status_line(&resp).starts_with("HTTP/1.1 413"), "{resp:?}");
    assert!(resp.contains(r#""kind":"payload_too_large""#), "{resp:?}");
    assert_still_serving(&sock);

    let resp = raw_exchange(&sock, b"GET /v1/nope HTTP/1.1\r\nhost: x\r\n\r\n", t);
    assert!(status_line(&resp).starts_with("HTTP/1.1 404"), "{resp:?}");
    assert!(resp.contains(r#""kind":"not_found""#), "{resp:?}");

    let resp = raw_exchange(&sock, b"DELETE /v1/status HTTP/1.1\r\nhost: x\r\n\r\n", t);
    assert!(status_line(&resp).starts_with("HTTP/1.1 405"), "{resp:?}");
    assert!(resp.contains(r#""kind":"method_not_allowed""#), "{resp:?}");

    let resp = raw_exchange(
        &sock,
        b"POST /v1/groups/db/failover HTTP/1.1\r\nhost: x\r\ncontent-length: 9\r\n\r\n{\"to\": 1}",
        t,
    );
    assert!(status_line(&resp).starts_with("HTTP/1.1 400"), "{resp:?}");
    assert!(resp.contains(r#""kind":"bad_request""#), "{resp:?}");
    let unknown = netctl(&sock, &["failover", "nope", "--to", "x", "--yes"]);
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(unknown.stderr.contains("no route group"), "{unknown:?}");

    let resp = raw_exchange(&sock, b"GET /v9/status HTTP/1.1\r\nhost: x\r\n\r\n", t);
    assert!(
        resp.contains(r#""kind":"unsupported_api_version""#),
        "{resp:?}"
    );

    assert!(agentd.is_running());
    assert_still_serving(&sock);
}

/// Send `request` and read the answer while keeping the connection open for writing, as a
/// client still "about to send" its body does; the answer and how long it took.
fn answer_while_sending(sock: &Path, request: &[u8], timeout: Duration) -> (String, Duration) {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    let started = Instant::now();
    // agentd may answer and close before all of it is written: that is the point.
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    (
        String::from_utf8_lossy(&out).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn a_body_declared_or_sent_beyond_the_limit_is_refused_at_once() {
    let ns = Netns::new("bl");
    // A long request timeout: before the declared length was checked, these waited for it.
    let fx = fixture("request_timeout = \"30s\"");
    let mut agentd = Agentd::start(&fx, &ns);
    let sock = fx.socket();
    let quick = Duration::from_secs(3);

    // 100 MB announced, not a byte sent.
    for head in [
        "POST /v1/reload HTTP/1.1\r\nhost: x\r\ncontent-length: 104857600\r\n\r\n",
        "GET /v1/status HTTP/1.1\r\nhost: x\r\ncontent-length: 65537\r\n\r\n",
    ] {
        let (resp, took) = answer_while_sending(&sock, head.as_bytes(), Duration::from_secs(10));
        assert!(
            status_line(&resp).starts_with("HTTP/1.1 413"),
            "{head:?}: {resp:?}"
        );
        assert!(resp.contains(r#""kind":"payload_too_large""#), "{resp:?}");
        assert!(
            resp.contains("is larger than the limit of 65536 bytes"),
            "{resp:?}"
        );
        assert!(took < quick, "{head:?}: answered after {took:?}");
    }

    // Chunked, so nothing declared: 72 KiB in 8 KiB chunks and no end, cut off at the limit.
    let mut chunked =
        b"POST /v1/reload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..9 {
        chunked.extend_from_slice(b"2000\r\n");
        chunked.extend(std::iter::repeat_n(b'x', 0x2000));
        chunked.extend_from_slice(b"\r\n");
    }
    let (resp, took) = answer_while_sending(&sock, &chunked, Duration::from_secs(10));
    assert!(status_line(&resp).starts_with("HTTP/1.1 413"), "{resp:?}");
    assert!(
        resp.contains("request body larger than 65536 bytes"),
        "{resp:?}"
    );
    assert!(took < quick, "chunked: answered after {took:?}");

    // At the limit, a declared body is still read (and judged on what it says).
    let mut at_limit =
        b"POST /v1/groups/db/failover HTTP/1.1\r\nhost: x\r\ncontent-length: 65536\r\n\r\n"
            .to_vec();
    at_limit.extend(std::iter::repeat_n(b' ', 65536));
    let resp = raw_exchange(&sock, &at_limit, Duration::from_secs(10));
    assert!(status_line(&resp).starts_with("HTTP/1.1 400"), "{resp:?}");
    assert!(resp.contains(r#""kind":"bad_request""#), "{resp:?}");

    assert!(agentd.is_running());
    assert_still_serving(&sock);
}

#[test]
fn slow_clients_are_cut_off_and_too_many_clients_are_refused() {
    let ns = Netns::new("sl");
    // 3 s: long enough that the idle clients below still hold their slots while netctl starts
    // on a loaded machine, short enough to wait for. Two slots for the read group, one kept
    // for root and the admin group.
    let fx = fixture(
        "max_clients = 3\nreserved_clients = 1\nhead_timeout = \"3s\"\nrequest_timeout = \"3s\"",
    );
    let mut agentd = Agentd::start(&fx, &ns);
    let sock = fx.socket();

    // Headers that never finish: the connection is closed after the head timeout.
    let start = Instant::now();
    let resp = raw_exchange(
        &sock,
        b"GET /v1/status HTTP/1.1\r\n",
        Duration::from_secs(30),
    );
    let waited = start.elapsed();
    assert!(
        waited < Duration::from_secs(10),
        "slow headers held for {waited:?}"
    );
    assert!(!resp.contains("200 OK"), "{resp:?}");
    assert_eq!(refused(&ns, "head_timeout"), 1);

    // A body that never finishes: 408 with a typed error.
    let resp = raw_exchange(
        &sock,
        b"POST /v1/reload HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nab",
        Duration::from_secs(30),
    );
    assert!(status_line(&resp).starts_with("HTTP/1.1 408"), "{resp:?}");
    assert!(resp.contains(r#""kind":"request_timeout""#), "{resp:?}");

    // Two idle clients of a reader fill the slots open to the read group (connections are
    // accepted in order); another member is told so at once, naming the limit.
    let idle = Flood::start(&reader(), &sock, 2, FloodMode::Idle);
    let busy = netctl_as(&reader2(), &sock, &["--json", "status"]);
    assert_eq!(busy.code, 3, "{busy:?}");
    assert!(busy.stderr.contains("too many control clients"), "{busy:?}");
    let err = busy.json();
    assert_eq!(err["kind"], "too_many_clients", "{busy:?}");
    let message = err["message"].as_str().unwrap();
    assert!(
        message.contains("all 2 connections open to the read group")
            && message.contains("reserved_clients = 1"),
        "{message}"
    );
    assert_eq!(refused(&ns, "full"), 1);
    // Root takes the reserved slot.
    assert_still_serving(&sock);

    // Once the idle ones are gone, the slots are free again.
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = netctl_as(&reader2(), &sock, &["status"]);
        if out.code == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "slots never freed: {out:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(agentd.is_running());
}

/// The per-user share with the defaults: the 33rd connection of a user is refused with a typed
/// error naming the limit while other users still get in; and a process of that user holding
/// all of its share, stalled, gives way to another process of the same user.
#[test]
fn a_users_33rd_connection_is_refused_with_a_typed_error_while_others_get_in() {
    raise_open_files(4096);
    let ns = Netns::new("pu");
    // A long head deadline: the held connections must stay while the test looks.
    let fx = fixture("head_timeout = \"30s\"");
    let mut agentd = Agentd::start(&fx, &ns);
    let sock = fx.socket();

    // 32 connections of the reader, each from a process of its own: no process holds more
    // than another, so none gives way.
    let holders: Vec<Flood> = (0..32)
        .map(|_| Flood::start(&reader(), &sock, 1, FloodMode::Idle))
        .collect();
    let out = netctl_as(&reader(), &sock, &["--json", "status"]);
    assert_eq!(out.code, 3, "{out:?}");
    let err = out.json();
    assert_eq!(err["kind"], "too_many_clients", "{out:?}");
    let message = err["message"].as_str().unwrap();
    assert!(
        message.contains("uid 47120")
            && message.contains("32 connections")
            && message.contains("max_clients_per_user"),
        "{message}"
    );
    assert_eq!(refused(&ns, "per_user"), 1);
    for who in [reader2(), admin(), Identity::Root] {
        let out = netctl_as(&who, &sock, &["status"]);
        assert_eq!(out.code, 0, "{who:?}: {out:?}");
    }

    drop(holders);
    let deadline = Instant::now() + Duration::from_secs(10);
    while netctl_as(&reader(), &sock, &["status"]).code != 0 {
        assert!(
            Instant::now() < deadline,
            "the reader's slots were never freed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // One process holding the whole share, stalled: the reader's netctl takes the place of
    // one of its connections (which agentd closes; the flood opens it again and is refused).
    let hog = Flood::start(&reader(), &sock, 40, FloodMode::Idle);
    let out = netctl_as(&reader(), &sock, &["--json", "status"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["agent"]["caller_access"], "read");
    assert_eq!(refused(&ns, "evicted"), 1);
    // The hog's 8 beyond the share were refused (they were accepted before netctl's), after
    // the one refusal above.
    let per_user = refused(&ns, "per_user");
    assert!(per_user > 8, "{per_user}");
    drop(hog);
    assert!(agentd.is_running());
}

/// `isthmus_control_refused_total{reason}` from agentd's `/metrics` (default listen address).
fn refused(ns: &Netns, reason: &str) -> u64 {
    let (status, text) = http_get(
        ns,
        "127.0.0.1:9477".parse().unwrap(),
        "/metrics",
        Duration::from_secs(5),
    )
    .expect("scraping agentd");
    assert_eq!(status, 200, "{text}");
    let series = format!("isthmus_control_refused_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .unwrap_or_else(|| panic!("no {series}in /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// The acceptance example of per-caller limits, with the default `[control]` settings: a root
/// process trickling 300 request heads and a member of the read group holding 1,000 idle
/// connections (both reopening what agentd closes) do not keep root's `netctl status` out.
#[test]
fn root_is_answered_while_root_trickles_300_heads_and_a_reader_holds_1000_idle_connections() {
    raise_open_files(4096);
    let ns = Netns::new("fl");
    let fx = fixture("");
    let mut agentd = Agentd::start(&fx, &ns);
    let sock = fx.socket();

    let slow = Flood::start(&Identity::Root, &sock, 300, FloodMode::Slow);
    let idle = Flood::start(&reader(), &sock, 1000, FloodMode::Idle);
    for round in 0..6 {
        let start = Instant::now();
        let out = netctl(&sock, &["--json", "status"]);
        let took = start.elapsed();
        eprintln!("round {round}: root's netctl status took {took:?}");
        assert_eq!(out.code, 0, "round {round}: {out:?}");
        assert_eq!(out.json()["agent"]["caller_access"], "write", "{out:?}");
        assert!(
            took < Duration::from_secs(2),
            "round {round}: root's status took {took:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // An admin is not locked out either, nor another member of the read group.
    let out = netctl_as(&admin(), &sock, &["status"]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = netctl_as(&reader2(), &sock, &["status"]);
    assert_eq!(out.code, 0, "{out:?}");

    // The floods were real: agentd refused what was over the reader's share and cut off the
    // heads that did not arrive in time, again and again.
    assert!(refused(&ns, "per_user") > 1000, "no per-user refusals");
    assert!(refused(&ns, "head_timeout") > 32, "no head timeouts");
    let slow = slow.stop();
    let idle = idle.stop();
    assert!(slow.closed >= 300, "{slow:?}");
    assert!(idle.closed >= 1000 - 32, "{idle:?}");
    assert!(idle.refused_503 > 0, "{idle:?}");

    // Afterwards everyone gets in again.
    for who in [reader(), Identity::Root] {
        let out = netctl_as(&who, &sock, &["--json", "status"]);
        assert_eq!(out.code, 0, "{who:?}: {out:?}");
    }
    assert!(agentd.is_running());
}
