//! Two gateways, one per cloud, each in its own namespace, joined by two underlay paths:
//!
//! ```text
//!  aws ns                                         oci ns
//!  192.0.2.1      ══ interconnect (veth) ══       192.0.2.2
//!  198.51.100.1   ══ internet (veth)     ══       198.51.100.2
//!  tunnels: interconnect 10.255.0.0/31 (aws .0, oci .1), internet 10.255.1.0/31
//! ```
//!
//! Each side gets a fresh WireGuard key pair and a config with both links and a route group for
//! the other cloud's VPC (AWS 10.1.0.0/16, OCI 10.2.0.0/16); the test decides when to start
//! agentd. [`TwoClouds::with_apps`] adds an app namespace behind each gateway:
//!
//! ```text
//!  aws-app 10.1.0.10 ── 10.1.0.1 aws-gw ══ tunnels ══ oci-gw 10.2.0.1 ── 10.2.0.10 oci-db
//! ```
//!
//! The gateways forward, and each has a default route over the internet path to the other:
//! the clear-text path that agentd's fail-closed routes must keep remote CIDRs off. Interface names are unique per test (they may end up in the shared
//! `/var/run/wireguard`).

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::{netctl, Fixture, Netns};

/// A WireGuard key pair, base64 as `wg` writes it.
#[derive(Clone)]
pub struct Keypair {
    pub private: String,
    pub public: String,
}

pub fn keypair() -> Keypair {
    let mut bytes = [0u8; 32];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("urandom");
    let secret = x25519_dalek::StaticSecret::from(bytes);
    let public = x25519_dalek::PublicKey::from(&secret);
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    Keypair {
        private: b64(&secret.to_bytes()),
        public: b64(public.as_bytes()),
    }
}

/// One underlay path and the tunnel over it.
pub struct Path {
    pub link: &'static str,
    pub port: u16,
    pub underlay: [&'static str; 2],
    pub inner: [&'static str; 2],
}

pub const PATHS: [Path; 2] = [
    Path {
        link: "interconnect",
        port: 51820,
        underlay: ["192.0.2.1", "192.0.2.2"],
        inner: ["10.255.0.0", "10.255.0.1"],
    },
    Path {
        link: "internet",
        port: 51821,
        underlay: ["198.51.100.1", "198.51.100.2"],
        inner: ["10.255.1.0", "10.255.1.1"],
    },
];

pub struct Side {
    pub ns: Netns,
    pub fx: Fixture,
    pub key: Keypair,
    /// Index into `underlay`/`inner` of [`PATHS`].
    pub index: usize,
    pub name: &'static str,
}

pub struct TwoClouds {
    pub aws: Side,
    pub oci: Side,
    pub prefix: String,
    /// App namespaces behind the gateways (aws-app, oci-db), if created.
    pub apps: Option<(Netns, Netns)>,
}

/// The VPC/VCN of each side and its gateway and app addresses.
pub const VPCS: [(&str, &str, &str); 2] = [
    ("10.1.0.0/16", "10.1.0.1", "10.1.0.10"),
    ("10.2.0.0/16", "10.2.0.1", "10.2.0.10"),
];

impl TwoClouds {
    pub fn new(tag: &str) -> TwoClouds {
        crate::require_root();
        let prefix = crate::unique(tag);
        let aws_ns = Netns::new(&format!("{tag}a"));
        let oci_ns = Netns::new(&format!("{tag}o"));
        for (i, path) in PATHS.iter().enumerate() {
            let (a, o) = (format!("{prefix}a{i}"), format!("{prefix}o{i}"));
            ip(&["link", "add", &a, "type", "veth", "peer", "name", &o]);
            ip(&["link", "set", &a, "netns", aws_ns.name()]);
            ip(&["link", "set", &o, "netns", oci_ns.name()]);
            for (ns, dev, addr) in [
                (&aws_ns, &a, path.underlay[0]),
                (&oci_ns, &o, path.underlay[1]),
            ] {
                ip(&[
                    "-n",
                    ns.name(),
                    "addr",
                    "add",
                    &format!("{addr}/24"),
                    "dev",
                    dev,
                ]);
                ip(&["-n", ns.name(), "link", "set", dev, "up"]);
            }
        }
        let (aws_key, oci_key) = (keypair(), keypair());
        let make = |ns: Netns, key: Keypair, peer: &Keypair, index: usize, name: &'static str| {
            let fx = Fixture::new(&config(&prefix, name, index, &peer.public));
            fx.write_key_text("private.key", &key.private);
            Side {
                ns,
                fx,
                key,
                index,
                name,
            }
        };
        let aws = make(aws_ns, aws_key.clone(), &oci_key, 0, "aws");
        let oci = make(oci_ns, oci_key, &aws_key, 1, "oci");
        TwoClouds {
            aws,
            oci,
            prefix,
            apps: None,
        }
    }

    /// Add an app namespace behind each gateway; turn on forwarding on the gateways and give
    /// each a default route over the internet underlay.
    pub fn with_apps(mut self) -> TwoClouds {
        let mut apps = Vec::new();
        for (i, side) in [&self.aws, &self.oci].into_iter().enumerate() {
            let app = Netns::new(&format!("{}p", &side.name[..1]));
            let (gw_dev, app_dev) = (
                format!("{}g{i}", self.prefix),
                format!("{}p{i}", self.prefix),
            );
            let (_, gw_addr, app_addr) = VPCS[i];
            ip(&[
                "link", "add", &gw_dev, "type", "veth", "peer", "name", &app_dev,
            ]);
            ip(&["link", "set", &gw_dev, "netns", side.ns.name()]);
            ip(&["link", "set", &app_dev, "netns", app.name()]);
            ip(&[
                "-n",
                side.ns.name(),
                "addr",
                "add",
                &format!("{gw_addr}/24"),
                "dev",
                &gw_dev,
            ]);
            ip(&["-n", side.ns.name(), "link", "set", &gw_dev, "up"]);
            ip(&[
                "-n",
                app.name(),
                "addr",
                "add",
                &format!("{app_addr}/24"),
                "dev",
                &app_dev,
            ]);
            ip(&["-n", app.name(), "link", "set", &app_dev, "up"]);
            ip(&["-n", app.name(), "route", "add", "default", "via", gw_addr]);
            let other = PATHS[1].underlay[1 - i];
            ip(&[
                "-n",
                side.ns.name(),
                "route",
                "add",
                "default",
                "via",
                other,
            ]);
            side.ns.forward_ipv4();
            apps.push(app);
        }
        let oci_app = apps.pop().expect("two apps");
        let aws_app = apps.pop().expect("two apps");
        self.apps = Some((aws_app, oci_app));
        self
    }

    /// The app namespace behind the AWS gateway.
    pub fn aws_app(&self) -> &Netns {
        &self.apps.as_ref().expect("with_apps() first").0
    }

    /// The app (database) namespace behind the OCI gateway.
    pub fn oci_app(&self) -> &Netns {
        &self.apps.as_ref().expect("with_apps() first").1
    }

    /// Start agentd on both gateways and wait until both links are up and both gateways
    /// route the remote VPC over the interconnect. The guards stop agentd on drop.
    pub fn start_agents(&self) -> (crate::Agentd, crate::Agentd) {
        let up = Duration::from_secs(20);
        let aws = crate::Agentd::start(&self.aws.fx, &self.aws.ns);
        let oci = crate::Agentd::start(&self.oci.fx, &self.oci.ns);
        for side in [&self.aws, &self.oci] {
            side.wait_links_up(&["interconnect", "internet"], up);
            side.wait_active("remote", "interconnect", up);
        }
        (aws, oci)
    }

    /// Drop UDP on the AWS gateway's interconnect underlay with nftables: outgoing, and
    /// incoming too if `both` (the rest of the traffic, and the internet path, are untouched).
    pub fn cut_interconnect(&self, both: bool) {
        self.cut_path(0, both);
    }

    /// Undo [`TwoClouds::cut_interconnect`].
    pub fn restore_interconnect(&self) {
        self.restore_path(0);
    }

    /// Drop UDP on the AWS gateway's underlay interface of path `link` (index into [`PATHS`])
    /// with nftables: outgoing, and incoming too if `both`. A relayed path ([`TwoClouds::relay`])
    /// is cut the same way. Other traffic on the interface (forwarded clear text among it)
    /// passes.
    pub fn cut_path(&self, link: usize, both: bool) {
        let dev = &self.underlay_interfaces(0)[link];
        let table = cut_table(link);
        let mut rules = format!(
            "table inet {table} {{\n  chain out {{\n    type filter hook output priority -10;\n    \
             oifname \"{dev}\" meta l4proto udp drop\n  }}\n"
        );
        if both {
            rules += &format!(
                "  chain in {{\n    type filter hook input priority -10;\n    \
                 iifname \"{dev}\" meta l4proto udp drop\n  }}\n"
            );
        }
        rules += "}\n";
        self.aws.nft(&rules);
    }

    /// Undo [`TwoClouds::cut_path`].
    pub fn restore_path(&self, link: usize) {
        let table = cut_table(link);
        let ok = self
            .aws
            .ns
            .command("nft")
            .args(["delete", "table", "inet", &table])
            .status()
            .expect("nft");
        assert!(ok.success(), "nft delete table inet {table}");
    }

    /// Count, from now on, clear-text packets to the OCI VPC that leave the AWS gateway through
    /// either underlay interface: what fail-closed routes must keep at zero.
    pub fn count_leaks(&self) -> LeakCounter<'_> {
        let [u0, u1] = self.underlay_interfaces(0);
        self.aws.nft(&format!(
            "table inet leak {{\n  chain out {{\n    type filter hook postrouting priority 0;\n    \
             oifname {{ \"{u0}\", \"{u1}\" }} ip daddr {} counter\n  }}\n}}\n",
            VPCS[1].0
        ));
        LeakCounter { side: &self.aws }
    }

    /// The underlay interfaces of a side (for counting clear-text leaks).
    pub fn underlay_interfaces(&self, side: usize) -> [String; 2] {
        let s = if side == 0 { "a" } else { "o" };
        [
            format!("{}{s}0", self.prefix),
            format!("{}{s}1", self.prefix),
        ]
    }

    /// The TUN interface name of `link` (same on both sides: they live in different namespaces).
    pub fn interface(&self, link: usize) -> String {
        format!("{}t{link}", self.prefix)
    }
}

/// The nftables table of [`TwoClouds::cut_path`] for path `link` (`cut` for the interconnect,
/// as it always was).
fn cut_table(link: usize) -> String {
    if link == 0 {
        "cut".to_owned()
    } else {
        format!("cut{link}")
    }
}

/// The config of one side: both links, groups open to root only.
pub fn config(prefix: &str, name: &str, index: usize, peer_public: &str) -> String {
    let other = 1 - index;
    let remote = VPCS[other].0;
    let mut text = format!(
        "[agent]\nname = \"{name}-gw\"\n[control]\nread_group = 0\nadmin_group = 0\n\
         [[route_group]]\nname = \"remote\"\ndestinations = [\"{remote}\"]\n\
         links = [\"interconnect\", \"internet\"]\nfailback_after = \"3s\"\nhold_down = \"1s\"\n"
    );
    for (i, p) in PATHS.iter().enumerate() {
        text += &format!(
            "[[link]]\nname = \"{}\"\ninterface = \"{prefix}t{i}\"\nprivate_key_file = \"private.key\"\n\
             listen = \"{}:{}\"\npeer_public_key = \"{peer_public}\"\npeer_endpoint = \"{}:{}\"\n\
             allowed_ips = [\"{}/32\", \"{remote}\"]\naddresses = [\"{}/31\"]\n",
            p.link, p.underlay[index], p.port, p.underlay[other], p.port, p.inner[other], p.inner[index],
        );
    }
    text
}

/// Run `ip ARGS` (in the host's view of namespaces) and insist that it works.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Side {
    /// Wait until every link in `links` reports `up` in `netctl --json links`.
    pub fn wait_links_up(&self, links: &[&str], timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let out = netctl(&self.fx.socket(), &["--json", "links"]);
            if out.code == 0 {
                let json = out.json();
                let up = links.iter().all(|l| {
                    json.as_array()
                        .unwrap()
                        .iter()
                        .any(|x| x["name"] == *l && x["state"] == "up")
                });
                if up {
                    return json;
                }
                assert!(
                    Instant::now() < deadline,
                    "{}: links {links:?} not up: {json:#}",
                    self.name
                );
            } else {
                assert!(
                    Instant::now() < deadline,
                    "{}: netctl links: {out:?}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait until `link`'s health (per `netctl --json links`) is `health`.
    pub fn wait_health(&self, link: &str, health: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let out = netctl(&self.fx.socket(), &["--json", "links"]);
            let now = (out.code == 0)
                .then(|| {
                    out.json()
                        .as_array()?
                        .iter()
                        .find(|l| l["name"] == link)
                        .and_then(|l| l["health"].as_str().map(str::to_owned))
                })
                .flatten();
            if now.as_deref() == Some(health) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: link {link} not {health} (it is {now:?})",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The link carrying route group `group` (per `netctl --json status`); `None` also while
    /// agentd does not answer.
    pub fn active(&self, group: &str) -> Option<String> {
        let out = netctl(&self.fx.socket(), &["--json", "status"]);
        if out.code != 0 {
            return None;
        }
        out.json()["route_groups"]
            .as_array()?
            .iter()
            .find(|g| g["name"] == group)?["active_link"]
            .as_str()
            .map(str::to_owned)
    }

    /// Wait until route group `group` is active on `link` (per `netctl --json status`).
    pub fn wait_active(&self, group: &str, link: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let active = self.active(group);
            if active.as_deref() == Some(link) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: group {group} not active on {link} (it is on {active:?})",
                self.name,
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Load an nftables ruleset into this side's namespace.
    pub fn nft(&self, ruleset: &str) {
        use std::io::Write;
        let mut child = self
            .ns
            .command("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("nft (nftables) is missing: apt-get install nftables");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(ruleset.as_bytes())
            .expect("writing the ruleset");
        assert!(
            child.wait().expect("nft").success(),
            "nft rejected:\n{ruleset}"
        );
    }

    /// `netctl --json events` (up to 1000).
    pub fn events(&self) -> Vec<serde_json::Value> {
        netctl(&self.fx.socket(), &["--json", "events", "--limit", "1000"])
            .stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The link's entry in `netctl --json links`.
    pub fn link(&self, name: &str) -> serde_json::Value {
        let json = netctl(&self.fx.socket(), &["--json", "links"]).json();
        json.as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no link {name} in {json}"))
    }

    /// The kernel's routes to the other cloud's VPC, as `ip route show` prints them.
    pub fn remote_routes(&self) -> String {
        let out = self
            .ns
            .command("ip")
            .args(["route", "show", VPCS[1 - self.index].0])
            .output()
            .expect("ip route");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ping -c count` from this side; true if every reply came back.
    pub fn ping(&self, addr: &str, count: u32) -> bool {
        let out = self
            .ns
            .command("ping")
            .args(["-c", &count.to_string(), "-i", "0.2", "-W", "2", "-q", addr])
            .output()
            .expect("ping");
        out.status.success()
    }
}

/// The nftables counter of [`TwoClouds::count_leaks`].
pub struct LeakCounter<'a> {
    side: &'a Side,
}

impl LeakCounter<'_> {
    /// Clear-text packets to the remote VPC that left through the underlay so far.
    pub fn packets(&self) -> u64 {
        let out = self
            .side
            .ns
            .command("nft")
            .args(["list", "table", "inet", "leak"])
            .output()
            .expect("nft");
        let text = String::from_utf8_lossy(&out.stdout);
        text.split("packets ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no leak counter in:\n{text}"))
    }

    /// Send clear text that must be counted: a ping from the AWS gateway bound to its internet
    /// underlay interface, to the OCI gateway's VPC address. A bound socket whose route lookup
    /// fails is sent on-link by the kernel, past agentd's routes, and the OCI gateway answers
    /// ARP for its own address. Proves that [`LeakCounter::packets`] can see a leak.
    pub fn leak_on_purpose(&self, clouds: &TwoClouds) {
        let dev = &clouds.underlay_interfaces(0)[1];
        let _ = self
            .side
            .ns
            .command("ping")
            .args(["-c", "2", "-i", "0.2", "-W", "1", "-I", dev, VPCS[1].1])
            .output()
            .expect("ping");
    }
}

/// Milliseconds since the Unix epoch, to compare with event times (`unix_ms`).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// When the first `active_link_changed` event at or after `since_ms` moved a group to `to`.
pub fn switch_at(events: &[serde_json::Value], since_ms: u64, to: &str) -> Option<u64> {
    events
        .iter()
        .filter(|e| e["kind"] == "active_link_changed" && e["to"] == to)
        .filter_map(|e| e["unix_ms"].as_u64())
        .find(|t| *t >= since_ms)
}

/// Send `bytes` from `from` to `to_addr` (inside `to`) over TCP and return both ends' reports
/// (`<bytes> <hash>`), which must be equal.
pub fn transfer(from: &Netns, to: &Netns, to_addr: SocketAddr, bytes: u64) -> (String, String) {
    let r = crate::transfer::Xfer::start(from, to, to_addr, bytes, None).finish();
    (r.sent, r.received)
}
