//! The DNS failover bed shared by `tests/tests/dns.rs` and the `dns-bench` binary: two clouds
//! with a database namespace behind the OCI gateway that holds a primary and a DR listener, a
//! real BIND 9 serving zone `fo.test.` inside the AWS gateway's namespace, and the config that
//! makes a gateway serve DNS group `orders-db` (one answer per listener, each checked by a TCP
//! probe of it) through that named.
//!
//! ```text
//!  aws gw 192.0.2.1 ══ tunnels ══ oci gw ── oci-db: 10.2.1.10:1522 (primary listener)
//!   named -g on 192.0.2.1:5353              10.2.2.10:1522 (DR listener)
//! ```
//!
//! The listeners' addresses sit on the database namespace's loopback, routed by the OCI
//! gateway; named listens on the AWS gateway's interconnect underlay address, so that both
//! gateways reach it (the OCI gateway over the interconnect veth).

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::bind::{tsig_keygen, TsigKeyFile};
use crate::topology::{Side, TwoClouds, VPCS};
use crate::{netctl, Bind, Netns, ZoneRecord};

pub const ZONE: &str = "fo.test.";
pub const RECORD: &str = "orders-db.fo.test.";
pub const GROUP: &str = "orders-db";
pub const PRIMARY: &str = "10.2.1.10";
pub const DR: &str = "10.2.2.10";
pub const LISTENER_PORT: u16 = 1522;
/// named inside the AWS gateway's namespace, on its interconnect underlay address.
pub const NAMED: &str = "192.0.2.1:5353";
pub const KEY_NAME: &str = "failover-key";

/// A TCP listener in a namespace that accepts and closes connections until stopped (then
/// connections are refused).
pub struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    pub fn start(ns: &Netns, addr: SocketAddr) -> Listener {
        // A socket stays in the namespace it was made in: bind there, accept from anywhere.
        let listener = ns.run_in(move || {
            let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("listening on {addr}: {e}"));
            l.set_nonblocking(true).expect("non-blocking listener");
            l
        });
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => drop(conn),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Listener {
            stop,
            thread: Some(thread),
        }
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn listener_addr(ip: &str) -> SocketAddr {
    format!("{ip}:{LISTENER_PORT}").parse().unwrap()
}

/// The test bed. Fields drop in order: listeners and named before the namespaces.
pub struct DnsBed {
    pub primary: Listener,
    pub dr: Listener,
    pub bind: Bind,
    pub key: TsigKeyFile,
    _named_dir: tempfile::TempDir,
    pub clouds: TwoClouds,
}

impl DnsBed {
    /// Two clouds, both listeners up, named serving the zone (the group's name granted to the
    /// key, with a record if `initial` is given).
    pub fn new(tag: &str, initial: Option<&str>) -> DnsBed {
        let clouds = TwoClouds::new(tag).with_apps();
        let db = clouds.oci_app();
        for ip in [PRIMARY, DR] {
            run(db
                .command("ip")
                .args(["addr", "add", &format!("{ip}/32"), "dev", "lo"]));
            run(clouds.oci.ns.command("ip").args([
                "route",
                "add",
                &format!("{ip}/32"),
                "via",
                VPCS[1].2,
            ]));
        }
        let primary = Listener::start(db, listener_addr(PRIMARY));
        let dr = Listener::start(db, listener_addr(DR));
        let key = tsig_keygen(KEY_NAME);
        let named_dir = tempfile::Builder::new()
            .prefix("isthmus-named-")
            .tempdir()
            .expect("tempdir");
        let record = match initial {
            Some(v) => ZoneRecord::granted(RECORD, 30, "A", v),
            None => ZoneRecord::granted_name(RECORD),
        };
        let bind = Bind::start_in(
            &clouds.aws.ns,
            NAMED.parse().unwrap(),
            named_dir.path(),
            ZONE,
            &[record],
            (KEY_NAME, &key.secret_b64),
        );
        DnsBed {
            primary,
            dr,
            bind,
            key,
            _named_dir: named_dir,
            clouds,
        }
    }

    pub fn answer(&self) -> Vec<String> {
        self.bind.query("A", RECORD)
    }

    /// Wait until named serves exactly `value` for the record.
    pub fn wait_served(&self, value: &str, within: Duration) -> Instant {
        let deadline = Instant::now() + within;
        loop {
            let got = self.answer();
            if got == [value] {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "named serves {got:?} for {RECORD}, not {value} (after {within:?})"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub fn run(cmd: &mut std::process::Command) {
    let out = cmd.output().expect("running a command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Make `side` serve the DNS group: the two checks, the provider (named, signing with
/// `key_text` as its key file) and the group, with fast action pacing.
pub fn serve_group(side: &Side, key_text: &str, failback_after: Duration) {
    side.fx.write_key_text("tsig.key", key_text.trim_end());
    let (primary, dr) = (
        listener_addr(PRIMARY).to_string(),
        listener_addr(DR).to_string(),
    );
    side.fx.set_probes(
        &[("primary-db", "tcp", &primary), ("dr-db", "tcp", &dr)],
        "200ms",
        "150ms",
    );
    let path = side.fx.config_path();
    let mut doc: toml::Table = std::fs::read_to_string(path).unwrap().parse().unwrap();
    let provider: toml::Table = toml::from_str(&format!(
        "name = \"corp-dns\"\nkind = \"rfc2136\"\nserver = \"{NAMED}\"\nzone = \"{ZONE}\"\n\
         tsig_key_file = \"tsig.key\"\nmin_interval = \"0s\"\n"
    ))
    .unwrap();
    let group: toml::Table = toml::from_str(&format!(
        "name = \"{GROUP}\"\nprovider = \"corp-dns\"\nrecord = \"{RECORD}\"\nttl = 5\n\
         failback_after = \"{}ms\"\nhold_down = \"1s\"\n\
         answers = [{{ value = \"{PRIMARY}\", checks = [\"primary-db\"] }}, \
         {{ value = \"{DR}\", checks = [\"dr-db\"] }}]\n",
        failback_after.as_millis()
    ))
    .unwrap();
    let actions: toml::Table = toml::from_str(
        "timeout = \"1s\"\nretry_initial = \"200ms\"\nretry_max = \"2s\"\nverify_timeout = \"2s\"\n",
    )
    .unwrap();
    doc.insert("dns_provider".into(), vec![provider].into());
    doc.insert("dns_group".into(), vec![group].into());
    doc.insert("actions".into(), actions.into());
    side.fx.write_config(&toml::to_string(&doc).unwrap());
}

/// How the group's record shows in events (`group` of `action_*`).
pub const TARGET: &str = "dns group orders-db";
/// `netctl --json actions` of a side.
pub fn actions(side: &Side) -> serde_json::Value {
    let out = netctl(&side.fx.socket(), &["--json", "actions"]);
    assert_eq!(out.code, 0, "netctl actions: {out:?}");
    out.json()
}

/// The action entry of the group's record.
pub fn record_action(side: &Side) -> serde_json::Value {
    let json = actions(side);
    json["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["target"] == GROUP && a["kind"] == "dns")
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

/// Wait until `side` reports the record in sync holding `value`.
pub fn wait_in_sync(side: &Side, value: &str, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let a = record_action(side);
        if a["state"] == "in_sync" && a["observed"] == value {
            return a;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {GROUP} not in sync on {value}: {:#}",
            side.name,
            actions(side)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Events of `kind` for the group (or its record) at or after `since_ms`.
pub fn events_of(side: &Side, kind: &str, since_ms: u64) -> Vec<serde_json::Value> {
    side.events()
        .into_iter()
        .filter(|e| e["kind"] == kind)
        .filter(|e| e["group"] == GROUP || e["group"] == TARGET)
        .filter(|e| e["unix_ms"].as_u64().unwrap_or(0) >= since_ms)
        .collect()
}

/// Wait for the first event of `kind` at or after `since_ms` that `pred` accepts.
pub fn wait_event(
    side: &Side,
    kind: &str,
    since_ms: u64,
    within: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        if let Some(e) = events_of(side, kind, since_ms).into_iter().find(&pred) {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "{}: no matching {kind} event since {since_ms} within {within:?}: {:#?}",
            side.name,
            side.events()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An event's time, Unix milliseconds.
pub fn ms(e: &serde_json::Value) -> u64 {
    e["unix_ms"].as_u64().expect("unix_ms")
}
