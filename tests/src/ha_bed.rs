//! The HA test bed: a pair of AWS gateways, one OCI gateway, three etcd members and moto's EC2,
//! and a stand-in for the VPC's fabric whose routes follow moto's route table, so that the
//! app's traffic really goes where the API points.
//!
//! ```text
//!   app 10.1.0.10 ── fabric (router; etcd ×3 and moto on 10.1.0.1) ──┬── aws-gw-a 10.1.1.2 ── 192.0.2.0/24 ──┐
//!                    10.2.0.0/16 via the gateway                     └── aws-gw-b 10.1.2.2 ── 198.51.100.0/24 ┴── oci-gw ── db 10.2.0.10
//!                    moto's route table names
//! ```
//!
//! Each AWS gateway has one link (`to-oci`) and the route group `oci-vcn`, which steers moto's
//! table `rtb` to its own ENI; both are one `[ha]` pair (`aws`) on the etcd cluster in the
//! fabric namespace (a has priority 10, b 20). The OCI gateway has a link to each (`to-a`,
//! `to-b`) in its group `aws-vpc` and follows the pair's active gateway from the probes.
//! Everything is stopped by PID and the namespaces removed on drop.

use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::moto::{self, Moto};
use crate::topology::{ip, keypair, Keypair, Side};
use crate::{Agentd, Fixture, Netns};

pub const REGION: &str = "eu-central-1";
pub const FABRIC: &str = "10.1.0.1";
pub const APP: &str = "10.1.0.10";
pub const DB: &str = "10.2.0.10";
pub const OCI_VCN: &str = "10.2.0.0/16";
/// The gateways' addresses in the VPC (towards the fabric), a then b.
pub const GW_VPC: [&str; 2] = ["10.1.1.2", "10.1.2.2"];
const ETCD_PORTS: [u16; 3] = [2379, 2479, 2579];
const MOTO_PORT: u16 = 5055;
/// The AWS gateways' names, priorities, underlays (gateway, OCI) and inner addresses.
pub const NAMES: [&str; 2] = ["aws-gw-a", "aws-gw-b"];
const PRIORITY: [u8; 2] = [10, 20];
const UNDERLAY: [(&str, &str); 2] = [("192.0.2.1", "192.0.2.2"), ("198.51.100.1", "198.51.100.2")];
const INNER: [(&str, &str); 2] = [("10.255.0.0", "10.255.0.1"), ("10.255.1.0", "10.255.1.1")];
const PORT: [u16; 2] = [51820, 51821];
/// The OCI gateway's link to each AWS gateway.
pub const OCI_LINKS: [&str; 2] = ["to-a", "to-b"];

/// One etcd member in the fabric namespace (client URL on the VPC, peers on its loopback).
pub struct EtcdMember {
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl EtcdMember {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kill it (SIGKILL, by PID): gone for the rest of the test.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for EtcdMember {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What moto's table routed the OCI VCN to, each with when the fabric first saw it.
pub type TableHistory = Arc<Mutex<Vec<(Instant, Option<String>)>>>;

pub struct HaBed {
    pub prefix: String,
    pub aws: [Side; 2],
    pub oci: Side,
    pub etcd: Vec<EtcdMember>,
    pub moto: Moto,
    pub rtb: String,
    pub enis: [String; 2],
    /// The targets moto's table held for the OCI VCN, each with when the fabric saw it first.
    pub table_history: TableHistory,
    stop: Arc<AtomicBool>,
    follower: Option<std::thread::JoinHandle<()>>,
    pub fabric: Netns,
    pub app: Netns,
    pub db: Netns,
}

impl Drop for HaBed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.follower.take() {
            let _ = t.join();
        }
        for m in &mut self.etcd {
            m.kill();
        }
    }
}

fn veth(prefix: &str, tag: &str, a: (&Netns, &str), b: (&Netns, &str)) {
    let (da, db) = (format!("{prefix}{tag}x"), format!("{prefix}{tag}y"));
    ip(&["link", "add", &da, "type", "veth", "peer", "name", &db]);
    for ((ns, addr), dev) in [(a, &da), (b, &db)] {
        ip(&["link", "set", dev, "netns", ns.name()]);
        ip(&["-n", ns.name(), "addr", "add", addr, "dev", dev]);
        ip(&["-n", ns.name(), "link", "set", dev, "up"]);
    }
}

fn forwarding(ns: &Netns) {
    let ok = ns
        .command("sysctl")
        .args(["-qw", "net.ipv4.ip_forward=1"])
        .status()
        .expect("sysctl");
    assert!(ok.success());
}

fn etcd_endpoints() -> String {
    ETCD_PORTS
        .iter()
        .map(|p| format!("\"http://{FABRIC}:{p}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The config of AWS gateway `i`.
fn aws_config(prefix: &str, i: usize, oci_public: &str, rtb: &str, eni: &str) -> String {
    let (name, (under, oci_under), (inner, oci_inner)) = (NAMES[i], UNDERLAY[i], INNER[i]);
    format!(
        "[agent]\nname = \"{name}\"\n[control]\nread_group = 0\nadmin_group = 0\n\
         [aws]\nregion = \"{REGION}\"\nec2_endpoint = \"http://{FABRIC}:{MOTO_PORT}\"\n\
         imds_endpoint = \"http://127.0.0.1:1\"\n\
         [ha]\npair = \"aws\"\netcd = [{}]\npriority = {}\nlease_ttl = \"2s\"\n\
         margin = \"500ms\"\nwrite_deadline = \"500ms\"\nrequest_timeout = \"300ms\"\n\
         [[route_group]]\nname = \"oci-vcn\"\ndestinations = [\"{OCI_VCN}\"]\nlinks = [\"to-oci\"]\n\
         aws_route_tables = [{{ id = \"{rtb}\", target = \"{eni}\", fallback = \"none\" }}]\n\
         [[link]]\nname = \"to-oci\"\ninterface = \"{prefix}t0\"\nprivate_key_file = \"private.key\"\n\
         listen = \"{under}:{port}\"\npeer_public_key = \"{oci_public}\"\npeer_endpoint = \"{oci_under}:{port}\"\n\
         allowed_ips = [\"{oci_inner}/32\", \"{OCI_VCN}\"]\naddresses = [\"{inner}/31\"]\n",
        etcd_endpoints(),
        PRIORITY[i],
        port = PORT[i],
    )
}

fn oci_config(prefix: &str, aws_public: [&str; 2]) -> String {
    let mut text = String::from(
        "[agent]\nname = \"oci-gw\"\n[control]\nread_group = 0\nadmin_group = 0\n\
         [[route_group]]\nname = \"aws-vpc\"\ndestinations = [\"10.1.0.0/16\"]\n\
         links = [\"to-a\", \"to-b\"]\nfailback_after = \"3s\"\nhold_down = \"1s\"\n",
    );
    for i in 0..2 {
        let ((under, oci_under), (inner, oci_inner)) = (UNDERLAY[i], INNER[i]);
        text += &format!(
            "[[link]]\nname = \"{}\"\ninterface = \"{prefix}t{i}\"\nprivate_key_file = \"private.key\"\n\
             listen = \"{oci_under}:{port}\"\npeer_public_key = \"{}\"\npeer_endpoint = \"{under}:{port}\"\n\
             allowed_ips = [\"{inner}/32\", \"10.1.0.0/16\"]\naddresses = [\"{oci_inner}/31\"]\n",
            OCI_LINKS[i],
            aws_public[i],
            port = PORT[i],
        );
    }
    text
}

impl HaBed {
    /// The namespaces, etcd, moto with the VPC and its table, the configs; no agentd yet.
    pub fn new(tag: &str, pyenv: &std::path::Path) -> HaBed {
        crate::require_root();
        let prefix = crate::unique(tag);
        let fabric = Netns::new(&format!("{tag}f"));
        let app = Netns::new(&format!("{tag}p"));
        let db = Netns::new(&format!("{tag}d"));
        let gw_ns = [
            Netns::new(&format!("{tag}a")),
            Netns::new(&format!("{tag}b")),
        ];
        let oci_ns = Netns::new(&format!("{tag}o"));

        veth(
            &prefix,
            "p",
            (&fabric, "10.1.0.1/24"),
            (&app, "10.1.0.10/24"),
        );
        ip(&["-n", app.name(), "route", "add", "default", "via", FABRIC]);
        for i in 0..2 {
            let fab = format!("10.1.{}.1/24", i + 1);
            let gw = format!("{}/24", GW_VPC[i]);
            veth(&prefix, &format!("v{i}"), (&fabric, &fab), (&gw_ns[i], &gw));
            let via = format!("10.1.{}.1", i + 1);
            ip(&[
                "-n",
                gw_ns[i].name(),
                "route",
                "add",
                "10.1.0.0/16",
                "via",
                &via,
            ]);
            let (under, oci_under) = UNDERLAY[i];
            veth(
                &prefix,
                &format!("u{i}"),
                (&gw_ns[i], &format!("{under}/24")),
                (&oci_ns, &format!("{oci_under}/24")),
            );
            forwarding(&gw_ns[i]);
        }
        veth(
            &prefix,
            "d",
            (&oci_ns, "10.2.0.1/24"),
            (&db, "10.2.0.10/24"),
        );
        ip(&[
            "-n",
            db.name(),
            "route",
            "add",
            "default",
            "via",
            "10.2.0.1",
        ]);
        forwarding(&oci_ns);
        forwarding(&fabric);

        let etcd = start_etcd(&fabric);
        let moto = Moto::start_in(pyenv, &fabric, SocketAddr::from(([10, 1, 0, 1], MOTO_PORT)));
        let ids = moto.boto3(&format!(
            r#"
ec2 = client("ec2", "{REGION}")
vpc = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.1.0.0/24")["Subnet"]["SubnetId"]
a = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]["NetworkInterfaceId"]
b = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]["NetworkInterfaceId"]
rtb = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
print(json.dumps({{"a": a, "b": b, "rtb": rtb}}))
"#
        ));
        let id = |k: &str| ids[k].as_str().expect("an id").to_string();
        let (rtb, enis) = (id("rtb"), [id("a"), id("b")]);

        let keys: [Keypair; 2] = [keypair(), keypair()];
        let oci_key = keypair();
        let [ns_a, ns_b] = gw_ns;
        let side = |ns: Netns, key: Keypair, text: String, index: usize, name: &'static str| {
            let fx = Fixture::new(&text);
            fx.write_key_text("private.key", &key.private);
            Side {
                ns,
                fx,
                key,
                index,
                name,
            }
        };
        let a_text = aws_config(&prefix, 0, &oci_key.public, &rtb, &enis[0]);
        let b_text = aws_config(&prefix, 1, &oci_key.public, &rtb, &enis[1]);
        let oci_text = oci_config(&prefix, [&keys[0].public, &keys[1].public]);
        let [ka, kb] = keys;
        let aws = [
            side(ns_a, ka, a_text, 0, "aws-gw-a"),
            side(ns_b, kb, b_text, 0, "aws-gw-b"),
        ];
        let oci = side(oci_ns, oci_key, oci_text, 1, "oci-gw");

        let mut bed = HaBed {
            prefix,
            aws,
            oci,
            etcd,
            moto,
            rtb,
            enis,
            table_history: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
            follower: None,
            fabric,
            app,
            db,
        };
        bed.follow_table();
        bed
    }

    /// The fabric's route to the OCI VCN follows moto's table every 50 ms: via the gateway
    /// whose ENI it names, or none.
    fn follow_table(&mut self) {
        let (stop, history) = (self.stop.clone(), self.table_history.clone());
        let (addr, netns) = (self.moto.addr(), self.fabric.name().to_owned());
        let form = format!(
            "Action=DescribeRouteTables&Version=2016-11-15&RouteTableId.1={}",
            self.rtb
        );
        let enis = self.enis.clone();
        self.follower = Some(std::thread::spawn(move || {
            let mut last: Option<Option<String>> = None;
            while !stop.load(Ordering::Relaxed) {
                let answer = moto::call_at(Some(&netns), addr, "ec2", REGION, "POST", "/", &form);
                if let Ok((200, xml)) = answer {
                    let target = moto::route_target(&xml, OCI_VCN);
                    if last.as_ref() != Some(&target) {
                        let via = target
                            .as_ref()
                            .and_then(|t| enis.iter().position(|e| e == t))
                            .map(|i| GW_VPC[i]);
                        // Replaced in one step: no moment without a route.
                        match via {
                            Some(via) => {
                                ip(&["-n", &netns, "route", "replace", OCI_VCN, "via", via])
                            }
                            None => {
                                let _ = std::process::Command::new("ip")
                                    .args(["-n", &netns, "route", "del", OCI_VCN])
                                    .stderr(Stdio::null())
                                    .status();
                            }
                        }
                        history
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((Instant::now(), target.clone()));
                        last = Some(target);
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }));
    }

    /// The ENI moto's table routes the OCI VCN to now, as the fabric last saw it.
    pub fn table_target(&self) -> Option<String> {
        self.table_history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last()
            .and_then(|(_, t)| t.clone())
    }

    pub fn start(&self, i: usize) -> Agentd {
        let env = [
            ("AWS_ACCESS_KEY_ID", "AKIDISTHMUSHA".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "isthmusHaSecret/x1".to_string()),
        ];
        Agentd::spawn(&self.aws[i].fx, &self.aws[i].ns, &env).wait_ready()
    }

    pub fn start_oci(&self) -> Agentd {
        Agentd::start(&self.oci.fx, &self.oci.ns)
    }

    /// `netctl --json status`'s `ha` of AWS gateway `i` (null while it cannot answer).
    pub fn pair(&self, i: usize) -> serde_json::Value {
        let out = crate::netctl(&self.aws[i].fx.socket(), &["--json", "status"]);
        if out.code != 0 {
            return serde_json::Value::Null;
        }
        out.json()["ha"].clone()
    }

    /// Wait until gateway `i` reports `role`.
    pub fn wait_role(&self, i: usize, role: &str, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let p = self.pair(i);
            if p["role"] == role {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "{} is not {role} after {timeout:?}: {p:#}",
                NAMES[i]
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until moto's table routes the OCI VCN to gateway `i`'s ENI.
    pub fn wait_table(&self, i: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.table_target().as_deref() != Some(self.enis[i].as_str()) {
            assert!(
                Instant::now() < deadline,
                "the table does not route to {} after {timeout:?}: {:?}",
                NAMES[i],
                self.table_history.lock().unwrap_or_else(|e| e.into_inner())
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Drop all UDP on AWS gateway `i`'s underlay (its tunnel dies; it stays alive).
    pub fn cut_underlay(&self, i: usize) {
        self.aws[i].nft(&format!(
            "table inet cut {{\n  chain out {{\n    type filter hook output priority -10;\n    \
             ip daddr {oci} meta l4proto udp drop\n  }}\n  chain in {{\n    \
             type filter hook input priority -10;\n    ip saddr {oci} meta l4proto udp drop\n  }}\n}}\n",
            oci = UNDERLAY[i].1
        ));
    }

    /// Cut AWS gateway `i` off from etcd (TCP to the members dropped both ways), not from the
    /// data path or moto.
    pub fn cut_etcd(&self, i: usize) {
        let ports = ETCD_PORTS.map(|p| p.to_string()).join(", ");
        self.aws[i].nft(&format!(
            "table inet etcdcut {{\n  chain out {{\n    type filter hook output priority -10;\n    \
             ip daddr {FABRIC} tcp dport {{ {ports} }} drop\n  }}\n  chain in {{\n    \
             type filter hook input priority -10;\n    ip saddr {FABRIC} tcp sport {{ {ports} }} drop\n  }}\n}}\n"
        ));
    }

    pub fn uncut_etcd(&self, i: usize) {
        let _ = self.aws[i]
            .ns
            .command("nft")
            .args(["delete", "table", "inet", "etcdcut"])
            .status();
    }

    /// Stop every etcd member (SIGSTOP: connections are accepted by the kernel and never
    /// answered, the worst case) or let them go on (SIGCONT).
    pub fn pause_etcd(&self, paused: bool) {
        let sig = if paused {
            nix::sys::signal::Signal::SIGSTOP
        } else {
            nix::sys::signal::Signal::SIGCONT
        };
        for m in &self.etcd {
            if let Some(pid) = m.pid() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
            }
        }
    }

    /// A power loss of AWS gateway `i` after its agentd was killed: its links to the fabric and
    /// the underlay go down.
    pub fn power_off(&self, i: usize) {
        for dev in [
            format!("{}v{i}y", self.prefix),
            format!("{}u{i}x", self.prefix),
        ] {
            ip(&["-n", self.aws[i].ns.name(), "link", "set", &dev, "down"]);
        }
    }

    /// Power back on after [`HaBed::power_off`]: links up, the route into the VPC again (the
    /// kernel removed it with the link).
    pub fn power_on(&self, i: usize) {
        let ns = self.aws[i].ns.name();
        for dev in [
            format!("{}v{i}y", self.prefix),
            format!("{}u{i}x", self.prefix),
        ] {
            ip(&["-n", ns, "link", "set", &dev, "up"]);
        }
        let via = format!("10.1.{}.1", i + 1);
        ip(&["-n", ns, "route", "replace", "10.1.0.0/16", "via", &via]);
    }

    /// Which link the OCI gateway's group uses.
    pub fn oci_active(&self) -> Option<String> {
        self.oci.active("aws-vpc")
    }
}

/// Three members in `ns`, clients on the VPC address, peers on its loopback, with the tight
/// timings of a VPC (50 ms heartbeat, 500 ms election: leases from 1 s).
fn start_etcd(ns: &Netns) -> Vec<EtcdMember> {
    let peer = |i: usize| format!("http://127.0.0.1:{}", ETCD_PORTS[i] + 1);
    let cluster = (0..3)
        .map(|i| format!("m{i}={}", peer(i)))
        .collect::<Vec<_>>()
        .join(",");
    let members: Vec<EtcdMember> = (0..3)
        .map(|i| {
            let dir = tempfile::Builder::new()
                .prefix("isthmus-etcd-")
                .tempdir()
                .expect("tempdir");
            let client = format!("http://{FABRIC}:{}", ETCD_PORTS[i]);
            let child = ns
                .command("etcd")
                .args(["--name", &format!("m{i}"), "--data-dir"])
                .arg(dir.path())
                .args(["--listen-client-urls", &client])
                .args(["--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer(i)])
                .args(["--initial-advertise-peer-urls", &peer(i)])
                .args(["--initial-cluster", &cluster])
                .args(["--initial-cluster-state", "new"])
                .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("etcd runs (tests/install-deps installs etcd-server)");
            EtcdMember {
                child: Some(child),
                _dir: dir,
            }
        })
        .collect();
    // Ready when every member accepts connections (the adapter retries until it has a leader).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = ETCD_PORTS
            .iter()
            .all(|p| moto::connect(Some(ns.name()), SocketAddr::from(([10, 1, 0, 1], *p))).is_ok());
        if ok {
            return members;
        }
        assert!(Instant::now() < deadline, "etcd did not come up in 30 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}
