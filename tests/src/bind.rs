//! A real BIND 9 primary server for one zone, owned by a test: the peer of the RFC 2136
//! provider and of the end-to-end DNS failover tests.
//!
//! [`Bind`] writes `named.conf`, the TSIG key and the zone file into a directory the test owns,
//! checks them with `named-checkconf`/`named-checkzone`, runs `named -g` in the foreground (its
//! log goes to a file in the directory, printed when a test fails) and waits until it answers.
//! It listens on 127.0.0.1 with a free high port, or on an address inside a network namespace
//! the test created: never on the system's port 53, where a distribution's own named may run.
//! [`Bind::stop`] and [`Bind::start_again`] keep the directory, so the zone's journal (the
//! updates applied so far) survives, as it does when a real server restarts. Drop kills the
//! process by PID.

use std::fmt::Write as _;
use std::fs::File;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Netns;

/// Whether BIND tests can run here. Without `named`, a developer's run skips them (with a
/// message saying what to install); in CI (`CI` set) a missing `named` is a failure.
pub fn require_named() -> bool {
    if find_program("named").is_some() && find_program("dig").is_some() {
        return true;
    }
    let msg = "BIND is not installed (named, dig): `tests/install-deps test` installs bind9 bind9-utils bind9-dnsutils";
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A TSIG key made by `tsig-keygen`.
#[derive(Debug, Clone)]
pub struct TsigKeyFile {
    /// The key name as given (no trailing dot).
    pub name: String,
    /// The file text, as `tsig-keygen` printed it (a `key "…" { … };` clause).
    pub text: String,
    /// The base64 secret from it.
    pub secret_b64: String,
}

/// Make a fresh hmac-sha256 key with `tsig-keygen -a hmac-sha256 NAME`.
pub fn tsig_keygen(name: &str) -> TsigKeyFile {
    let out =
        Command::new(find_program("tsig-keygen").expect("tsig-keygen (bind9-utils) is missing"))
            .args(["-a", "hmac-sha256", name])
            .output()
            .expect("running tsig-keygen");
    assert!(
        out.status.success(),
        "tsig-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("tsig-keygen output is text");
    let secret_b64 = text
        .split("secret")
        .nth(1)
        .and_then(|s| s.split('"').nth(1))
        .expect("a secret in tsig-keygen's output")
        .to_string();
    TsigKeyFile {
        name: name.to_string(),
        text,
        secret_b64,
    }
}

/// A record of the zone file, and whether the test key may update its name.
#[derive(Debug, Clone)]
pub struct ZoneRecord {
    /// Absolute (`gw.fo.test.`) or relative to the zone (`gw`).
    pub name: String,
    pub ttl: u32,
    /// `A`, `AAAA`, `CNAME`, …; empty for a name that is only granted (no record yet).
    pub rtype: String,
    pub value: String,
    /// Listed in `update-policy` (`grant KEY name NAME A AAAA CNAME;`).
    pub granted: bool,
}

impl ZoneRecord {
    /// A record whose name the key may update.
    pub fn granted(name: &str, ttl: u32, rtype: &str, value: &str) -> ZoneRecord {
        ZoneRecord {
            name: name.into(),
            ttl,
            rtype: rtype.into(),
            value: value.into(),
            granted: true,
        }
    }

    /// A record the key may not touch (the server answers REFUSED).
    pub fn fixed(name: &str, ttl: u32, rtype: &str, value: &str) -> ZoneRecord {
        ZoneRecord {
            granted: false,
            ..ZoneRecord::granted(name, ttl, rtype, value)
        }
    }

    /// A name without records that the key may create.
    pub fn granted_name(name: &str) -> ZoneRecord {
        ZoneRecord::granted(name, 0, "", "")
    }
}

/// Where named listens.
enum Place {
    /// 127.0.0.1 on the host, a free port chosen at start.
    Loopback,
    /// An address inside a namespace the test owns (`ip netns exec`; the PID stays named's).
    Netns { ns: String, addr: SocketAddr },
}

/// A named process serving one zone from its own directory. Killed (by PID) on drop.
pub struct Bind {
    dir: PathBuf,
    place: Place,
    addr: SocketAddr,
    zone: String,
    child: Option<Child>,
    starts: u32,
}

impl Bind {
    /// Serve `zone` (absolute, `fo.test.`) on 127.0.0.1 with a free high port, from files written
    /// into `dir` (which must be empty and stay for the life of the server), with one
    /// hmac-sha256 key `(name, base64 secret)` granted the names of `records` marked so.
    pub fn start(dir: &Path, zone: &str, records: &[ZoneRecord], key: (&str, &str)) -> Bind {
        Bind::launch(dir, Place::Loopback, zone, records, key)
    }

    /// The same inside `ns`, listening on `addr` (an address the namespace has, e.g. from
    /// [`Netns::add_addresses`], or 127.0.0.1 there).
    pub fn start_in(
        ns: &Netns,
        addr: SocketAddr,
        dir: &Path,
        zone: &str,
        records: &[ZoneRecord],
        key: (&str, &str),
    ) -> Bind {
        let place = Place::Netns {
            ns: ns.name().to_string(),
            addr,
        };
        Bind::launch(dir, place, zone, records, key)
    }

    fn launch(
        dir: &Path,
        place: Place,
        zone: &str,
        records: &[ZoneRecord],
        key: (&str, &str),
    ) -> Bind {
        assert!(zone.ends_with('.'), "the zone must be absolute: {zone:?}");
        let addr = match &place {
            Place::Loopback => free_loopback_port(),
            Place::Netns { addr, .. } => *addr,
        };
        let mut bind = Bind {
            dir: dir.to_path_buf(),
            place,
            addr,
            zone: zone.to_string(),
            child: None,
            starts: 0,
        };
        bind.write_config(records, key);
        bind.start_again();
        bind
    }

    /// Where it listens (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn zone(&self) -> &str {
        &self.zone
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn conf_path(&self) -> PathBuf {
        self.dir.join("named.conf")
    }

    fn zone_path(&self) -> PathBuf {
        self.dir.join(format!("{}db", self.zone))
    }

    /// The log of the current (or last) run.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("named-{}.log", self.starts))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn write_config(&self, records: &[ZoneRecord], (key_name, secret): (&str, &str)) {
        let d = self.dir.display();
        let zone = &self.zone;
        let key_name = key_name.trim_end_matches('.');
        let absolute = |n: &str| {
            if n.ends_with('.') {
                n.to_string()
            } else {
                format!("{n}.{zone}")
            }
        };
        let mut grants = String::new();
        let mut granted = std::collections::BTreeSet::new();
        for r in records.iter().filter(|r| r.granted) {
            if granted.insert(absolute(&r.name)) {
                writeln!(
                    grants,
                    "    grant {key_name}. name {} A AAAA CNAME;",
                    absolute(&r.name)
                )
                .unwrap();
            }
        }
        if grants.is_empty() {
            // update-policy needs one rule; this one grants nothing a test uses.
            writeln!(grants, "    grant {key_name}. name none.{zone} TXT;").unwrap();
        }
        let ip = self.addr.ip();
        let port = self.addr.port();
        let (listen, listen_v6) = if ip.is_ipv4() {
            (
                format!("listen-on port {port} {{ {ip}; }};"),
                "listen-on-v6 { none; };".to_string(),
            )
        } else {
            (
                "listen-on { none; };".to_string(),
                format!("listen-on-v6 port {port} {{ {ip}; }};"),
            )
        };
        let conf = format!(
            r#"include "{d}/tsig.key";
options {{
  directory "{d}";
  pid-file "{d}/named.pid";
  session-keyfile "{d}/session.key";
  managed-keys-directory "{d}";
  {listen}
  {listen_v6}
  recursion no;
  dnssec-validation no;
  allow-query {{ any; }};
  notify no;
}};
controls {{ }};
zone "{zone_no_dot}" {{
  type primary;
  file "{zone_file}";
  update-policy {{
{grants}  }};
}};
"#,
            zone_no_dot = zone.trim_end_matches('.'),
            zone_file = self.zone_path().display(),
        );
        std::fs::write(
            self.dir.join("tsig.key"),
            format!(
                "key \"{key_name}\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{secret}\";\n}};\n"
            ),
        )
        .expect("writing tsig.key");
        std::fs::write(self.conf_path(), conf).expect("writing named.conf");

        let mut db = format!(
            "$ORIGIN {zone}\n$TTL 60\n@ IN SOA ns.{zone} admin.{zone} 1 3600 600 86400 60\n@ IN NS ns.{zone}\nns IN A 127.0.0.1\n"
        );
        for r in records.iter().filter(|r| !r.rtype.is_empty()) {
            writeln!(
                db,
                "{} {} IN {} {}",
                absolute(&r.name),
                r.ttl,
                r.rtype,
                r.value
            )
            .unwrap();
        }
        std::fs::write(self.zone_path(), db).expect("writing the zone file");

        check(
            Command::new("named-checkconf").arg(self.conf_path()),
            "named-checkconf",
        );
        check(
            Command::new("named-checkzone")
                .arg(zone)
                .arg(self.zone_path()),
            "named-checkzone",
        );
    }

    /// Start named (again, after [`Bind::stop`]) from the same directory and journal, and wait
    /// until it answers for the zone's SOA.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "named is running already");
        for attempt in 0..3 {
            self.starts += 1;
            let log = File::create(self.log_path()).expect("creating the named log");
            let mut cmd = match &self.place {
                Place::Loopback => Command::new("named"),
                Place::Netns { ns, .. } => {
                    let mut c = Command::new("ip");
                    c.args(["netns", "exec", ns, "named"]);
                    c
                }
            };
            cmd.args(["-g", "-n", "1", "-c"])
                .arg(self.conf_path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log file"))
                .stderr(log);
            self.child = Some(cmd.spawn().expect("starting named"));
            match self.wait_serving() {
                Ok(()) => return,
                Err(why) => {
                    let text = self.log_text();
                    self.stop();
                    // A free port taken by somebody else between our check and named's bind:
                    // on the host, pick another port.
                    if attempt < 2
                        && matches!(self.place, Place::Loopback)
                        && text.contains("address in use")
                    {
                        let old = self.addr;
                        self.addr = free_loopback_port();
                        let conf = std::fs::read_to_string(self.conf_path()).expect("named.conf");
                        let conf = conf.replace(
                            &format!("port {}", old.port()),
                            &format!("port {}", self.addr.port()),
                        );
                        std::fs::write(self.conf_path(), conf).expect("named.conf");
                        continue;
                    }
                    panic!("named did not start: {why}\n--- named log ---\n{text}");
                }
            }
        }
    }

    fn wait_serving(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Err(format!("named exited ({status})"));
            }
            if !self.query("SOA", &self.zone.clone()).is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("no SOA answer within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop named (SIGTERM by PID, SIGKILL after 5 s). The directory and journal stay.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::agentd::stop(&mut child);
        }
    }

    /// `dig` this server for `name` `rtype`, from where it listens (inside its namespace).
    pub fn query(&self, rtype: &str, name: &str) -> Vec<String> {
        let cmd = match &self.place {
            Place::Loopback => Command::new("dig"),
            Place::Netns { ns, .. } => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "dig"]);
                c
            }
        };
        dig(cmd, self.addr, name, rtype)
    }

    /// The zone's SOA serial now.
    pub fn serial(&self) -> u32 {
        let soa = self.query("SOA", &self.zone.clone());
        let line = soa.first().expect("an SOA answer");
        line.split_whitespace()
            .nth(2)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no serial in {line:?}"))
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "--- named log ({}) ---\n{}",
                self.log_path().display(),
                self.log_text()
            );
        }
    }
}

/// `dig +short` for `name` `rtype` at `server` (no recursion, 1 s per try): the answer's
/// values, one per record, as dig prints them.
pub fn query(server: SocketAddr, name: &str, rtype: &str) -> Vec<String> {
    dig(Command::new("dig"), server, name, rtype)
}

fn dig(mut cmd: Command, server: SocketAddr, name: &str, rtype: &str) -> Vec<String> {
    let out = cmd
        .args(["+short", "+norecurse", "+time=1", "+tries=2", "-p"])
        .arg(server.port().to_string())
        .arg(format!("@{}", server.ip()))
        .args([name, rtype])
        .stdin(Stdio::null())
        .output()
        .expect("running dig");
    // No answer (dig exits 9) is an empty answer to the caller, who decides.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .map(str::to_string)
        .collect()
}

/// A port on 127.0.0.1 free for both UDP and TCP at this moment.
fn free_loopback_port() -> SocketAddr {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("binding a UDP port");
        let addr = udp.local_addr().expect("local address");
        if addr.port() >= 10_000 && TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
}

fn check(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
