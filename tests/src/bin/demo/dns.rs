//! The demo's DNS: the database's name follows the database. BIND 9, the OCI VCN's DNS server,
//! serves zone `oci.example.`; the OCI gateway's agentd publishes `db.oci.example.` there
//! (RFC 2136 updates signed with TSIG) as the first of two answers whose check passes: the
//! primary database's listener, then the DR database's.
//!
//! ```text
//!  oci-db namespace   10.2.0.10:1521 primary listener   (the address the ping uses)
//!                     10.2.0.20:1521 DR listener
//!                     10.2.0.53:53   named -g (BIND 9)
//! ```
//!
//! The OCI gateway checks the listeners and updates named straight over its VCN, not through
//! the tunnels: a cut interconnect does not move the name, a database that stops answering
//! does. The app in AWS asks named through the tunnels, as its resolver would.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use isthmus_tests::bind::tsig_keygen;
use isthmus_tests::dns_bed::{run, Listener};
use isthmus_tests::topology::{Side, TwoClouds, VPCS};
use isthmus_tests::{Bind, Netns, ZoneRecord};

pub const ZONE: &str = "oci.example.";
pub const RECORD: &str = "db.oci.example.";
pub const GROUP: &str = "db";
/// The primary database: the OCI app namespace's own address.
pub const PRIMARY: &str = VPCS[1].2;
pub const DR: &str = "10.2.0.20";
pub const NAMED_IP: &str = "10.2.0.53";
pub const LISTENER_PORT: u16 = 1521;
/// How long the primary must pass again before the name goes back to it: short for the demo
/// (the default is 30 s, as for route groups).
pub const FAILBACK_AFTER_S: u64 = 3;
const KEY_NAME: &str = "demo-key";

fn named_addr() -> SocketAddr {
    SocketAddr::new(NAMED_IP.parse().expect("address"), 53)
}

fn listener_addr(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("address"), LISTENER_PORT)
}

/// named and the two listeners. Drop stops them (named by PID); keep it declared after the
/// [`TwoClouds`] so that it goes first.
pub struct Dns {
    pub primary: Option<Listener>,
    _dr: Listener,
    pub bind: Bind,
    _dir: tempfile::TempDir,
}

impl Dns {
    /// Give the database namespace the DR and DNS addresses (the OCI gateway routes them), start
    /// both listeners and named, and make the OCI gateway's config serve the group.
    pub fn start(clouds: &TwoClouds) -> Dns {
        let db = clouds.oci_app();
        for ip in [DR, NAMED_IP] {
            run(db
                .command("ip")
                .args(["addr", "add", &format!("{ip}/32"), "dev", "lo"]));
            run(clouds.oci.ns.command("ip").args([
                "route",
                "add",
                &format!("{ip}/32"),
                "via",
                PRIMARY,
            ]));
        }
        let primary = Listener::start(db, listener_addr(PRIMARY));
        let dr = Listener::start(db, listener_addr(DR));
        let key = tsig_keygen(KEY_NAME);
        let dir = tempfile::Builder::new()
            .prefix("isthmus-demo-named-")
            .tempdir()
            .expect("tempdir");
        crate::interrupt::dir(dir.path());
        let bind = Bind::start_in(
            db,
            named_addr(),
            dir.path(),
            ZONE,
            &[ZoneRecord::granted_name(RECORD)],
            (KEY_NAME, &key.secret_b64),
        );
        if let Some(pid) = bind.pid() {
            crate::interrupt::process(pid);
        }
        serve_group(&clouds.oci, &key.text);
        Dns {
            primary: Some(primary),
            _dr: dr,
            bind,
            _dir: dir,
        }
    }

    /// Stop the primary database's listener: its connections are refused from now on.
    pub fn stop_primary(&mut self) {
        if let Some(mut l) = self.primary.take() {
            l.stop();
        }
    }

    pub fn start_primary(&mut self, db: &Netns) {
        self.primary = Some(Listener::start(db, listener_addr(PRIMARY)));
    }
}

/// The checks, the provider and the group in `side`'s config, with fast checks and pacing.
fn serve_group(side: &Side, key_text: &str) {
    side.fx.write_key_text("tsig.key", key_text.trim_end());
    let (primary, dr) = (
        listener_addr(PRIMARY).to_string(),
        listener_addr(DR).to_string(),
    );
    side.fx.set_probes(
        &[("db-primary", "tcp", &primary), ("db-dr", "tcp", &dr)],
        "200ms",
        "150ms",
    );
    let path = side.fx.config_path();
    let mut doc: toml::Table = std::fs::read_to_string(path)
        .expect("config")
        .parse()
        .expect("config TOML");
    let table = |text: String| -> toml::Table { toml::from_str(&text).expect("demo TOML") };
    let provider = table(format!(
        "name = \"vcn-dns\"\nkind = \"rfc2136\"\nserver = \"{}\"\nzone = \"{ZONE}\"\n\
         tsig_key_file = \"tsig.key\"\nmin_interval = \"0s\"\n",
        named_addr()
    ));
    let group = table(format!(
        "name = \"{GROUP}\"\nprovider = \"vcn-dns\"\nrecord = \"{RECORD}\"\nttl = 5\n\
         failback_after = \"{FAILBACK_AFTER_S}s\"\nhold_down = \"1s\"\n\
         answers = [{{ value = \"{PRIMARY}\", checks = [\"db-primary\"] }}, \
         {{ value = \"{DR}\", checks = [\"db-dr\"] }}]\n"
    ));
    let actions = table(
        "timeout = \"1s\"\nretry_initial = \"200ms\"\nretry_max = \"2s\"\nverify_timeout = \"2s\"\n"
            .into(),
    );
    doc.insert("dns_provider".into(), vec![provider].into());
    doc.insert("dns_group".into(), vec![group].into());
    doc.insert("actions".into(), actions.into());
    side.fx
        .write_config(&toml::to_string(&doc).expect("config TOML"));
}

/// `dig +short` for the record from `ns`, at named: the values, one per record.
pub fn dig(ns: &Netns) -> Vec<String> {
    let out = ns
        .command("dig")
        .args(["+short", "+norecurse", "+time=1", "+tries=1"])
        .arg(format!("@{NAMED_IP}"))
        .args([RECORD, "A"])
        .stdin(Stdio::null())
        .output()
        .expect("running dig (bind9-dnsutils)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .map(str::to_owned)
        .collect()
}

/// The command line [`dig`] runs, as shown to the reader.
pub const DIG: &str = "dig +short db.oci.example. @10.2.0.53";

/// Ask from `ns` until named serves exactly `value`.
pub fn wait_served(ns: &Netns, value: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = dig(ns);
        if got == [value] {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "named serves {got:?} for {RECORD}, not {value}, after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
