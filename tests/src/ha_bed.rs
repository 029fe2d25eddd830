//! The HA test bed: a pair of gateways in each cloud, three etcd members, moto's EC2 and the
//! OCI stub, and a stand-in for each cloud's fabric whose routes follow the cloud's route table,
//! so that the app's traffic really goes where the API points.
//!
//! ```text
//!                    ┌── aws-gw-a 10.1.1.2 ──┬──┬── oci-gw-a 10.2.1.2 ──┐
//!   app 10.1.0.10 ── fabric                  ╳     (underlay, 4 paths)     OCI fabric ── db 10.2.0.10
//!                    └── aws-gw-b 10.1.2.2 ──┴──┴── oci-gw-b 10.2.2.2 ──┘
//!   AWS fabric: etcd ×3 and moto on 10.1.0.1;   OCI fabric: the OCI stub on 10.2.0.1:8080;
//!   10.2.0.0/16 via the gateway moto's table     10.1.0.0/16 via the gateway the stub's table
//!   names                                        names
//! ```
//!
//! Every gateway has a link to each gateway of the other cloud (`to-oci-a`, `to-oci-b` on the
//! AWS side, `to-aws-a`, `to-aws-b` on the OCI side) in its one route group (`oci-vcn`,
//! `aws-vpc`), which steers its cloud's route table to the gateway itself: moto's `rtb` to its
//! ENI, the stub's VCN table to its private IP (`if-match` on every write). Each cloud's pair
//! is one `[ha]` pair (`aws`, `oci`; gateway a has priority 10, b 20). Both pairs use the etcd
//! cluster in the AWS fabric namespace (one cluster to save CPU; their keys live under their
//! own pair's prefix, and nothing in agentd knows the two stores are one): the AWS gateways
//! over the VPC, the OCI gateways over a test-only path (a veth from each to the AWS fabric,
//! 10.9.j.0/24, never through the tunnels). The gateways of the other cloud follow a pair's
//! active from the probes. Everything is stopped by PID and the namespaces removed on drop.

use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::moto::{self, Moto};
use crate::oci_stub::{api_key, OciStub};
use crate::topology::{ip, keypair, Keypair, Side};
use crate::{Agentd, Fixture, Netns};

pub const REGION: &str = "eu-central-1";
pub const FABRIC: &str = "10.1.0.1";
pub const APP: &str = "10.1.0.10";
pub const DB: &str = "10.2.0.10";
pub const AWS_VPC: &str = "10.1.0.0/16";
pub const OCI_VCN: &str = "10.2.0.0/16";
const ETCD_PORTS: [u16; 3] = [2379, 2479, 2579];
const MOTO_PORT: u16 = 5055;
/// The OCI stub, in the OCI fabric namespace (the VCN's API endpoint).
const STUB: &str = "10.2.0.1:8080";
const TENANCY: &str = "ocid1.tenancy.oc1..aaaaaaaaisthmushatenancy";
const USER: &str = "ocid1.user.oc1..aaaaaaaaisthmushauser";
pub const OCI_TABLE: &str = "ocid1.routetable.oc1.iad.aaaaaaaaisthmushatable";
/// The OCI gateways' private IPs, a then b: where the VCN table's rule points.
pub const PRIVATE_IPS: [&str; 2] = [
    "ocid1.privateip.oc1.iad.aaaaaaaaisthmushagwa",
    "ocid1.privateip.oc1.iad.aaaaaaaaisthmushagwb",
];
const PRIORITY: [u8; 2] = [10, 20];
/// Generous: 2 shared cores, four agentd, three etcd, moto.
pub const LONG: Duration = Duration::from_secs(60);

/// One of the two clouds, each with its pair of gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    Aws,
    Oci,
}

pub use Cloud::{Aws, Oci};

impl Cloud {
    /// 0 for AWS, 1 for OCI: the index of the cloud in `[cloud][i]` arrays.
    pub fn n(self) -> usize {
        match self {
            Aws => 0,
            Oci => 1,
        }
    }

    pub fn other(self) -> Cloud {
        match self {
            Aws => Oci,
            Oci => Aws,
        }
    }

    /// The `[ha]` pair's name.
    pub fn pair(self) -> &'static str {
        ["aws", "oci"][self.n()]
    }

    /// The name of gateway `i` (0 = a, 1 = b).
    pub fn name(self, i: usize) -> &'static str {
        [["aws-gw-a", "aws-gw-b"], ["oci-gw-a", "oci-gw-b"]][self.n()][i]
    }

    /// The route group on this cloud's gateways (towards the other cloud).
    pub fn group(self) -> &'static str {
        ["oci-vcn", "aws-vpc"][self.n()]
    }

    /// The name of the link that the other cloud's gateways have to gateway `i` of this one.
    pub fn link_to(self, i: usize) -> &'static str {
        [["to-aws-a", "to-aws-b"], ["to-oci-a", "to-oci-b"]][self.n()][i]
    }

    /// Gateway `i`'s address in its VPC/VCN (towards its fabric).
    fn vpc_addr(self, i: usize) -> String {
        format!("10.{}.{}.2", self.n() + 1, i + 1)
    }

    /// The fabric's address on its veth to gateway `i`.
    fn fabric_addr(self, i: usize) -> String {
        format!("10.{}.{}.1", self.n() + 1, i + 1)
    }

    /// Where gateway `i` reaches etcd.
    fn etcd_host(self, i: usize) -> String {
        match self {
            Aws => FABRIC.to_string(),
            Oci => format!("10.9.{i}.1"),
        }
    }
}

/// The path between AWS gateway `i` and OCI gateway `j`: its index, underlay addresses (AWS,
/// OCI; each a /30 of 192.0.2.0/24), inner addresses and WireGuard port.
struct Path {
    k: usize,
}

impl Path {
    fn new(i: usize, j: usize) -> Path {
        Path { k: 2 * i + j }
    }

    fn underlay(&self, c: Cloud) -> String {
        format!("192.0.2.{}", 4 * self.k + 1 + c.n())
    }

    fn inner(&self, c: Cloud) -> String {
        format!("10.255.{}.{}", self.k, c.n())
    }

    fn port(&self) -> u16 {
        51820 + self.k as u16
    }
}

/// One etcd member in the AWS fabric namespace (clients on any address there, peers on its
/// loopback).
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

/// What a cloud's route table routed the other cloud to, each with when its fabric first saw
/// it (the ENI or private IP, `None` for no route).
pub type TableHistory = Arc<Mutex<Vec<(Instant, Option<String>)>>>;

/// Fields drop in order after [`Drop::drop`] stopped the followers and etcd: the stub before
/// its runtime, the namespaces last.
pub struct HaBed {
    pub prefix: String,
    /// The gateways, `[cloud][i]`: the AWS pair, then the OCI pair.
    gw: [[Side; 2]; 2],
    pub etcd: Vec<EtcdMember>,
    pub moto: Moto,
    pub rtb: String,
    pub enis: [String; 2],
    pub stub: Arc<OciStub>,
    _runtime: tokio::runtime::Runtime,
    /// Per cloud, the targets its route table held, as its fabric saw them.
    history: [TableHistory; 2],
    stop: Arc<AtomicBool>,
    followers: Vec<std::thread::JoinHandle<()>>,
    /// The AWS fabric, then the OCI fabric.
    fabric: [Netns; 2],
    pub app: Netns,
    pub db: Netns,
}

impl Drop for HaBed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.followers.drain(..) {
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

fn etcd_endpoints(host: &str) -> String {
    ETCD_PORTS
        .iter()
        .map(|p| format!("\"http://{host}:{p}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `[ha]` section of gateway `i` of cloud `c`.
fn ha_section(c: Cloud, i: usize) -> String {
    format!(
        "[ha]\npair = \"{}\"\netcd = [{}]\npriority = {}\nlease_ttl = \"2s\"\n\
         margin = \"500ms\"\nwrite_deadline = \"500ms\"\nrequest_timeout = \"300ms\"\n",
        c.pair(),
        etcd_endpoints(&c.etcd_host(i)),
        PRIORITY[i],
    )
}

/// The links of gateway `i` of cloud `c`, one to each gateway of the other cloud.
fn links(prefix: &str, c: Cloud, i: usize, remote_keys: [&str; 2], remote_net: &str) -> String {
    let mut text = String::new();
    for (j, key) in remote_keys.iter().enumerate() {
        let path = match c {
            Aws => Path::new(i, j),
            Oci => Path::new(j, i),
        };
        let o = c.other();
        text += &format!(
            "[[link]]\nname = \"{name}\"\ninterface = \"{prefix}t{j}\"\nprivate_key_file = \"private.key\"\n\
             listen = \"{under}:{port}\"\npeer_public_key = \"{key}\"\npeer_endpoint = \"{peer}:{port}\"\n\
             allowed_ips = [\"{peer_inner}/32\", \"{remote_net}\"]\naddresses = [\"{inner}/31\"]\n",
            name = o.link_to(j),
            under = path.underlay(c),
            port = path.port(),
            peer = path.underlay(o),
            peer_inner = path.inner(o),
            inner = path.inner(c),
        );
    }
    text
}

fn group(c: Cloud, table: &str) -> String {
    let (dest, o) = ([OCI_VCN, AWS_VPC][c.n()], c.other());
    format!(
        "[[route_group]]\nname = \"{}\"\ndestinations = [\"{dest}\"]\n\
         links = [\"{}\", \"{}\"]\nfailback_after = \"3s\"\nhold_down = \"1s\"\n{table}\n",
        c.group(),
        o.link_to(0),
        o.link_to(1),
    )
}

fn aws_config(prefix: &str, i: usize, oci_keys: [&str; 2], rtb: &str, eni: &str) -> String {
    format!(
        "[agent]\nname = \"{}\"\n[control]\nread_group = 0\nadmin_group = 0\n\
         [aws]\nregion = \"{REGION}\"\nec2_endpoint = \"http://{FABRIC}:{MOTO_PORT}\"\n\
         imds_endpoint = \"http://127.0.0.1:1\"\n{}{}{}",
        Aws.name(i),
        ha_section(Aws, i),
        group(
            Aws,
            &format!("aws_route_tables = [{{ id = \"{rtb}\", target = \"{eni}\", fallback = \"none\" }}]")
        ),
        links(prefix, Aws, i, oci_keys, OCI_VCN),
    )
}

fn oci_config(prefix: &str, j: usize, aws_keys: [&str; 2], fingerprint: &str) -> String {
    format!(
        "[agent]\nname = \"{}\"\n[control]\nread_group = 0\nadmin_group = 0\n\
         [oci]\nregion = \"us-ashburn-1\"\ntenancy = \"{TENANCY}\"\nuser = \"{USER}\"\n\
         fingerprint = \"{fingerprint}\"\nkey_file = \"oci_api_key.pem\"\n\
         dns_endpoint = \"http://{STUB}\"\niaas_endpoint = \"http://{STUB}\"\n{}{}{}",
        Oci.name(j),
        ha_section(Oci, j),
        group(
            Oci,
            &format!(
                "oci_route_tables = [{{ id = \"{OCI_TABLE}\", target = \"{}\", fallback = \"none\" }}]",
                PRIVATE_IPS[j]
            )
        ),
        links(prefix, Oci, j, aws_keys, AWS_VPC),
    )
}

impl HaBed {
    /// The namespaces, etcd, moto with the VPC and its table, the OCI stub with the VCN's
    /// table, the configs; no agentd yet.
    pub fn new(tag: &str, pyenv: &std::path::Path) -> HaBed {
        crate::require_root();
        let prefix = crate::unique(tag);
        let fabric = [
            Netns::new(&format!("{tag}f")),
            Netns::new(&format!("{tag}g")),
        ];
        let app = Netns::new(&format!("{tag}p"));
        let db = Netns::new(&format!("{tag}d"));
        let gw_ns = [
            [
                Netns::new(&format!("{tag}a")),
                Netns::new(&format!("{tag}b")),
            ],
            [
                Netns::new(&format!("{tag}o")),
                Netns::new(&format!("{tag}q")),
            ],
        ];

        // Each cloud: its host on .0.10 behind the fabric, the gateways on .1.2 and .2.2.
        for (c, host) in [(Aws, &app), (Oci, &db)] {
            let (f, net) = (&fabric[c.n()], c.n() + 1);
            veth(
                &prefix,
                &format!("h{}", c.n()),
                (f, &format!("10.{net}.0.1/24")),
                (host, &format!("10.{net}.0.10/24")),
            );
            let via = format!("10.{net}.0.1");
            ip(&["-n", host.name(), "route", "add", "default", "via", &via]);
            for (i, gw) in gw_ns[c.n()].iter().enumerate() {
                veth(
                    &prefix,
                    &format!("v{}{i}", c.n()),
                    (f, &format!("{}/24", c.fabric_addr(i))),
                    (gw, &format!("{}/24", c.vpc_addr(i))),
                );
                let own = format!("10.{net}.0.0/16");
                ip(&[
                    "-n",
                    gw.name(),
                    "route",
                    "add",
                    &own,
                    "via",
                    &c.fabric_addr(i),
                ]);
            }
        }
        // The underlay: a path from each AWS gateway to each OCI gateway.
        for i in 0..2 {
            for j in 0..2 {
                let path = Path::new(i, j);
                veth(
                    &prefix,
                    &format!("u{i}{j}"),
                    (&gw_ns[0][i], &format!("{}/30", path.underlay(Aws))),
                    (&gw_ns[1][j], &format!("{}/30", path.underlay(Oci))),
                );
            }
        }
        // The OCI gateways' test-only path to etcd.
        for (j, gw) in gw_ns[1].iter().enumerate() {
            veth(
                &prefix,
                &format!("e{j}"),
                (&fabric[0], &format!("10.9.{j}.1/24")),
                (gw, &format!("10.9.{j}.2/24")),
            );
        }
        for ns in gw_ns.iter().flatten().chain(&fabric) {
            ns.forward_ipv4();
        }

        let etcd = start_etcd(&fabric[0]);
        let moto = Moto::start_in(
            pyenv,
            &fabric[0],
            SocketAddr::from(([10, 1, 0, 1], MOTO_PORT)),
        );
        let ids = moto.boto3(&format!(
            r#"
ec2 = client("ec2", "{REGION}")
vpc = ec2.create_vpc(CidrBlock="{AWS_VPC}")["Vpc"]["VpcId"]
subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.1.0.0/24")["Subnet"]["SubnetId"]
a = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]["NetworkInterfaceId"]
b = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]["NetworkInterfaceId"]
rtb = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
print(json.dumps({{"a": a, "b": b, "rtb": rtb}}))
"#
        ));
        let id = |k: &str| ids[k].as_str().expect("an id").to_string();
        let (rtb, enis) = (id("rtb"), [id("a"), id("b")]);

        let key = api_key();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the OCI stub");
        let stub = {
            let _in = runtime.enter();
            let key_id = format!("{TENANCY}/{USER}/{}", key.fingerprint);
            OciStub::start_in(
                &fabric[1],
                STUB.parse().unwrap(),
                key.public_der.clone(),
                &key_id,
            )
        };
        // Somebody else's rule stays in the table throughout.
        stub.set_rules(
            OCI_TABLE,
            vec![
                json!({"destination": "0.0.0.0/0", "destinationType": "CIDR_BLOCK",
                        "networkEntityId": "ocid1.internetgateway.oc1.iad.aaaaaaaaigw"}),
            ],
        );

        let keys: [[Keypair; 2]; 2] = [[keypair(), keypair()], [keypair(), keypair()]];
        let public = |c: Cloud| {
            [
                keys[c.n()][0].public.as_str(),
                keys[c.n()][1].public.as_str(),
            ]
        };
        let texts = [
            [0, 1].map(|i| aws_config(&prefix, i, public(Oci), &rtb, &enis[i])),
            [0, 1].map(|j| oci_config(&prefix, j, public(Aws), &key.fingerprint)),
        ];
        let [[ka, kb], [ko, kq]] = keys;
        let [[na, nb], [no, nq]] = gw_ns;
        let [[ta, tb], [to, tq]] = texts;
        let make = |ns: Netns, wg: Keypair, text: String, c: Cloud, i: usize| {
            let fx = Fixture::new(&text);
            fx.write_key_text("private.key", &wg.private);
            if c == Oci {
                fx.write_key_text("oci_api_key.pem", key.pem.trim_end());
            }
            Side {
                ns,
                fx,
                key: wg,
                index: c.n(),
                name: c.name(i),
            }
        };
        let gw = [
            [make(na, ka, ta, Aws, 0), make(nb, kb, tb, Aws, 1)],
            [make(no, ko, to, Oci, 0), make(nq, kq, tq, Oci, 1)],
        ];

        let mut bed = HaBed {
            prefix,
            gw,
            etcd,
            moto,
            rtb,
            enis,
            stub: Arc::new(stub),
            _runtime: runtime,
            history: [
                Arc::new(Mutex::new(Vec::new())),
                Arc::new(Mutex::new(Vec::new())),
            ],
            stop: Arc::new(AtomicBool::new(false)),
            followers: Vec::new(),
            fabric,
            app,
            db,
        };
        bed.follow_tables();
        bed
    }

    /// Each fabric's route to the other cloud follows its route table every 50 ms: via the
    /// gateway the table names, or none. Replaced in one step: no moment without a route.
    fn follow_tables(&mut self) {
        // moto's table, read over HTTP from the AWS fabric.
        let (addr, netns) = (self.moto.addr(), self.fabric[0].name().to_owned());
        let form = format!(
            "Action=DescribeRouteTables&Version=2016-11-15&RouteTableId.1={}",
            self.rtb
        );
        let read_aws =
            move || match moto::call_at(Some(&netns), addr, "ec2", REGION, "POST", "/", &form) {
                Ok((200, xml)) => Some(moto::route_target(&xml, OCI_VCN)),
                _ => None,
            };
        // The stub's table, read from its state.
        let stub = self.stub.clone();
        let read_oci = move || {
            Some(
                stub.rules(OCI_TABLE)
                    .iter()
                    .find(|r| r["destination"] == AWS_VPC)
                    .and_then(|r| r["networkEntityId"].as_str().map(str::to_owned)),
            )
        };
        let targets = [self.enis.clone(), PRIVATE_IPS.map(str::to_owned)];
        let readers: [Box<dyn Fn() -> Option<Option<String>> + Send>; 2] =
            [Box::new(read_aws), Box::new(read_oci)];
        for (c, read) in [Aws, Oci].into_iter().zip(readers) {
            let (stop, history) = (self.stop.clone(), self.history[c.n()].clone());
            let netns = self.fabric[c.n()].name().to_owned();
            let targets = targets[c.n()].clone();
            let dest = [OCI_VCN, AWS_VPC][c.n()];
            self.followers.push(std::thread::spawn(move || {
                let mut last: Option<Option<String>> = None;
                while !stop.load(Ordering::Relaxed) {
                    if let Some(target) = read() {
                        if last.as_ref() != Some(&target) {
                            let via = target
                                .as_ref()
                                .and_then(|t| targets.iter().position(|e| e == t))
                                .map(|i| c.vpc_addr(i));
                            match via {
                                Some(via) => {
                                    ip(&["-n", &netns, "route", "replace", dest, "via", &via])
                                }
                                None => {
                                    let _ = std::process::Command::new("ip")
                                        .args(["-n", &netns, "route", "del", dest])
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
    }

    /// Start both pairs: gateway a of each cloud first, so that it takes the free role (no
    /// preempt), then b as standby, ready, seeing a as holder; each table routing to its a and
    /// the other cloud's gateways following it. `[cloud][i]`.
    pub fn start_pairs(&self) -> [[Agentd; 2]; 2] {
        let oa = self.start(Oci, 0);
        let aa = self.start(Aws, 0);
        for c in [Aws, Oci] {
            let p = self.wait_role(c, 0, "active", LONG);
            assert_eq!(p["holder"], c.name(0), "{p:#}");
        }
        let ob = self.start(Oci, 1);
        let ab = self.start(Aws, 1);
        for c in [Aws, Oci] {
            let deadline = Instant::now() + LONG;
            loop {
                let p = self.pair(c, 1);
                if p["role"] == "standby" && p["holder"] == c.name(0) && p["other"]["ready"] == true
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} does not see {} as holder: {p:#}",
                    c.name(1),
                    c.name(0)
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        for c in [Aws, Oci] {
            self.wait_table(c, 0, LONG);
            self.wait_followed(c, 0, &[0, 1], LONG);
        }
        [[aa, ab], [oa, ob]]
    }

    /// Gateway `i` of cloud `c`.
    pub fn gw(&self, c: Cloud, i: usize) -> &Side {
        &self.gw[c.n()][i]
    }

    /// The fabric namespace of cloud `c`.
    pub fn fabric(&self, c: Cloud) -> &Netns {
        &self.fabric[c.n()]
    }

    /// The targets cloud `c`'s table held for the other cloud, in order, from the first
    /// route on (the fabric may have looked before the first write).
    pub fn table_targets(&self, c: Cloud) -> Vec<Option<String>> {
        self.history[c.n()]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(_, t)| t.clone())
            .skip_while(Option::is_none)
            .collect()
    }

    /// What cloud `c`'s table routes the other cloud to now, as its fabric last saw it.
    pub fn table_target(&self, c: Cloud) -> Option<String> {
        self.history[c.n()]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last()
            .and_then(|(_, t)| t.clone())
    }

    /// The target in cloud `c`'s table that means gateway `i`.
    pub fn target_of(&self, c: Cloud, i: usize) -> String {
        match c {
            Aws => self.enis[i].clone(),
            Oci => PRIVATE_IPS[i].to_string(),
        }
    }

    /// Start gateway `i` of cloud `c` and wait until it is ready (its role is another matter).
    pub fn start(&self, c: Cloud, i: usize) -> Agentd {
        let env = match c {
            Aws => vec![
                ("AWS_ACCESS_KEY_ID", "AKIDISTHMUSHA".to_string()),
                ("AWS_SECRET_ACCESS_KEY", "isthmusHaSecret/x1".to_string()),
            ],
            Oci => Vec::new(),
        };
        let side = self.gw(c, i);
        Agentd::spawn(&side.fx, &side.ns, &env).wait_ready()
    }

    /// `netctl --json status`'s `ha` of gateway `i` of `c` (null while it cannot answer).
    pub fn pair(&self, c: Cloud, i: usize) -> serde_json::Value {
        let out = crate::netctl(&self.gw(c, i).fx.socket(), &["--json", "status"]);
        if out.code != 0 {
            return serde_json::Value::Null;
        }
        out.json()["ha"].clone()
    }

    /// Wait until gateway `i` of `c` reports `role`.
    pub fn wait_role(
        &self,
        c: Cloud,
        i: usize,
        role: &str,
        timeout: Duration,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let p = self.pair(c, i);
            if p["role"] == role {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "{} is not {role} after {timeout:?}: {p:#}",
                c.name(i)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until cloud `c`'s table routes the other cloud to gateway `i`.
    pub fn wait_table(&self, c: Cloud, i: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let want = self.target_of(c, i);
        while self.table_target(c).as_deref() != Some(want.as_str()) {
            if Instant::now() >= deadline {
                let actions: Vec<String> = (0..2)
                    .map(|k| {
                        let out = crate::netctl(&self.gw(c, k).fx.socket(), &["--json", "actions"]);
                        format!("{}: {}\n{:#}", c.name(k), out.stdout, self.pair(c, k))
                    })
                    .collect();
                panic!(
                    "{}'s table does not route to {} after {timeout:?}: {:?}\n{}",
                    c.pair(),
                    c.name(i),
                    self.history[c.n()]
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()),
                    actions.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until the other cloud's gateways `of` route to gateway `i` of `c` (their group on
    /// their link to it).
    pub fn wait_followed(&self, c: Cloud, i: usize, of: &[usize], timeout: Duration) {
        let o = c.other();
        for &k in of {
            self.gw(o, k).wait_active(o.group(), c.link_to(i), timeout);
        }
    }

    /// The link gateway `k` of `c` carries its group on (`None` while it cannot answer).
    pub fn active_link(&self, c: Cloud, k: usize) -> Option<String> {
        self.gw(c, k).active(c.group())
    }

    /// Drop all tunnel UDP on gateway `i` of `c`'s underlay: both its links die; it stays
    /// alive and in touch with etcd and its cloud's API.
    pub fn cut_underlay(&self, c: Cloud, i: usize) {
        self.gw(c, i).nft(
            "table inet cut {\n  chain out {\n    type filter hook output priority -10;\n    \
             ip daddr 192.0.2.0/24 meta l4proto udp drop\n  }\n  chain in {\n    \
             type filter hook input priority -10;\n    ip saddr 192.0.2.0/24 meta l4proto udp drop\n  }\n}\n",
        );
    }

    /// Cut gateway `i` of `c` off from etcd (TCP to the members dropped both ways), not from
    /// the data path or its cloud's API.
    pub fn cut_etcd(&self, c: Cloud, i: usize) {
        let ports = ETCD_PORTS.map(|p| p.to_string()).join(", ");
        let host = c.etcd_host(i);
        self.gw(c, i).nft(&format!(
            "table inet etcdcut {{\n  chain out {{\n    type filter hook output priority -10;\n    \
             ip daddr {host} tcp dport {{ {ports} }} drop\n  }}\n  chain in {{\n    \
             type filter hook input priority -10;\n    ip saddr {host} tcp sport {{ {ports} }} drop\n  }}\n}}\n"
        ));
    }

    pub fn uncut_etcd(&self, c: Cloud, i: usize) {
        let _ = self
            .gw(c, i)
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

    /// Gateway `i` of `c`'s interfaces to its fabric and its two underlay paths.
    fn interfaces(&self, c: Cloud, i: usize) -> Vec<String> {
        let p = &self.prefix;
        let mut devs = vec![format!("{p}v{}{i}y", c.n())];
        for k in 0..2 {
            devs.push(match c {
                Aws => format!("{p}u{i}{k}x"),
                Oci => format!("{p}u{k}{i}y"),
            });
        }
        devs
    }

    /// A power loss of gateway `i` of `c` after its agentd was killed: its links to the fabric
    /// and the underlay go down.
    pub fn power_off(&self, c: Cloud, i: usize) {
        for dev in self.interfaces(c, i) {
            ip(&["-n", self.gw(c, i).ns.name(), "link", "set", &dev, "down"]);
        }
    }

    /// Power back on after [`HaBed::power_off`]: links up, the route into its own network
    /// again (the kernel removed it with the link).
    pub fn power_on(&self, c: Cloud, i: usize) {
        let ns = self.gw(c, i).ns.name();
        for dev in self.interfaces(c, i) {
            ip(&["-n", ns, "link", "set", &dev, "up"]);
        }
        let own = format!("10.{}.0.0/16", c.n() + 1);
        ip(&["-n", ns, "route", "replace", &own, "via", &c.fabric_addr(i)]);
    }

    /// Count the app's and the database's packets that each AWS gateway forwards (see
    /// [`HaBed::forwarded`]).
    pub fn count_forwarded(&self) {
        for side in &self.gw[0] {
            side.nft(&format!(
                "table inet hacount {{\n  chain forwarded {{\n    type filter hook forward priority 0;\n    \
                 ip saddr {APP} ip daddr {DB} counter\n    ip saddr {DB} ip daddr {APP} counter\n  }}\n}}\n"
            ));
        }
    }

    /// Packets AWS gateway `i` forwarded so far: app → database, database → app.
    pub fn forwarded(&self, i: usize) -> (u64, u64) {
        let out = self.gw[0][i]
            .ns
            .command("nft")
            .args(["list", "table", "inet", "hacount"])
            .output()
            .expect("nft");
        let text = String::from_utf8_lossy(&out.stdout);
        let counts: Vec<u64> = text
            .split("packets ")
            .skip(1)
            .filter_map(|s| s.split_whitespace().next()?.parse().ok())
            .collect();
        match counts[..] {
            [to_db, to_app] => (to_db, to_app),
            _ => panic!("no forwarding counters in:\n{text}"),
        }
    }
}

/// Three members in `ns`, clients on every address there (the VPC's, and the OCI gateways'
/// test-only path), peers on its loopback, with the tight timings of a VPC (50 ms heartbeat,
/// 500 ms election: leases from 1 s).
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
            let listen = format!("http://0.0.0.0:{}", ETCD_PORTS[i]);
            let advertise = format!("http://{FABRIC}:{}", ETCD_PORTS[i]);
            let child = ns
                .command("etcd")
                .args(["--name", &format!("m{i}"), "--data-dir"])
                .arg(dir.path())
                .args(["--listen-client-urls", &listen])
                .args(["--advertise-client-urls", &advertise])
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
