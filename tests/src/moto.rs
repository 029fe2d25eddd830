//! moto's AWS emulator (`moto_server`, from the test Python venv) on a free loopback port,
//! for the AWS providers' tests, and the venv's Python for botocore cross-checks.
//!
//! For agentd end to end, [`Moto::start_in`] runs moto inside a test's network namespace, on
//! an address of that namespace (its loopback will do: agentd runs there too), because a
//! gateway namespace cannot reach the host's loopback and the host's addresses are not the
//! tests' to change. Everything that talks to such a moto (readiness, reset, boto3) then runs
//! inside the namespace as well.
//!
//! The venv lives at `$ISTHMUS_PYENV`, else [`DEFAULT_PYENV`] (made by `tests/pyenv install`).
//! Without it, [`pyenv`] says so and the test skips, unless `CI` is set: there a missing venv
//! is a failure, not a silent pass. [`Moto`] owns the server process and its log; [`Drop`]
//! stops it by PID (never by name) and prints the log if the test failed.
//!
//! moto does not check signatures and picks the service from the credential scope of the
//! `Authorization` header, so requests must be signed (any key will do).
//!
//! One moto quirk is patched at start-up ([`LAUNCHER`]): moto 5.2.5 refuses a
//! ChangeResourceRecordSets batch that DELETEs a record set and CREATEs it again whenever that
//! same CREATE appeared earlier in the zone's history ("already exists"; its check lists the
//! zone from the name on and ignores the batch's own DELETE). Route 53 applies the batch as a
//! whole and accepts it; it is how agentd changes a record conditionally, so without the patch
//! a record could never return to an earlier value (a failback).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where `tests/pyenv install` puts the venv.
pub const DEFAULT_PYENV: &str = "/var/tmp/isthmus-pyenv";

/// `moto_server`'s own start (moto.server.main) with the patch described above: inside one
/// batch, a CREATE of a set that the batch also DELETEs does not count as repeating history.
const LAUNCHER: &str = r#"
import sys, threading
import moto.route53.models as r53
_batch = threading.local()
def _key(change):
    rr = change["ResourceRecordSet"]
    return (rr["Name"].strip("."), rr["Type"])
_contains = r53.ChangeList.__contains__
def contains(self, item):
    if _key(item) in getattr(_batch, "deleted", ()):
        return False
    return _contains(self, item)
r53.ChangeList.__contains__ = contains
_change = r53.Route53Backend.change_resource_record_sets
def change(self, zoneid, change_list):
    _batch.deleted = {_key(c) for c in change_list if c["Action"] == "DELETE"}
    try:
        return _change(self, zoneid, change_list)
    finally:
        _batch.deleted = ()
r53.Route53Backend.change_resource_record_sets = change
from moto.server import main
sys.exit(main(sys.argv[1:]))
"#;

/// How long moto_server may take to answer after start (about 1.5 s on 2 cores).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The Python venv with moto, botocore and boto3; `None` (after saying why) when it is missing
/// and `CI` is unset. Panics in CI.
pub fn pyenv(test: &str) -> Option<PathBuf> {
    let dir =
        PathBuf::from(std::env::var_os("ISTHMUS_PYENV").unwrap_or_else(|| DEFAULT_PYENV.into()));
    if dir.join("bin/moto_server").exists() && dir.join("bin/python").exists() {
        return Some(dir);
    }
    let msg = format!(
        "{test}: the Python venv with moto is missing ({} has no bin/moto_server): \
         run `tests/pyenv install` or set ISTHMUS_PYENV",
        dir.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("SKIPPED {msg}");
    None
}

/// Run `script` with the venv's Python, `stdin` on its standard input, and return its
/// standard output; panics with its standard error if it fails.
pub fn python(pyenv: &Path, script: &str, stdin: &str, env: &[(&str, &str)]) -> String {
    python_in(None, pyenv, script, stdin, env)
}

/// [`python`] inside network namespace `netns` (by name), if given.
pub fn python_in(
    netns: Option<&str>,
    pyenv: &Path,
    script: &str,
    stdin: &str,
    env: &[(&str, &str)],
) -> String {
    let mut child = in_netns(netns, pyenv.join("bin/python"))
        .arg("-c")
        .arg(script)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the venv's python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("writing to python");
    let out = child.wait_with_output().expect("python output");
    assert!(
        out.status.success(),
        "python failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("python's output is UTF-8")
}

/// A running `moto_server -H <addr> -p <port>`.
pub struct Moto {
    child: Option<Child>,
    addr: SocketAddr,
    /// The namespace it runs in (by name), if not the test's own.
    netns: Option<String>,
    pyenv: PathBuf,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl Moto {
    /// Start moto_server from `pyenv` on a free port and wait until it answers.
    pub fn start(pyenv: &Path) -> Moto {
        Moto::launch(
            pyenv,
            None,
            SocketAddr::from((Ipv4Addr::LOCALHOST, free_port())),
        )
    }

    /// Start moto_server from `pyenv` inside `ns` on `addr` (an address of that namespace,
    /// e.g. `127.0.0.1:5055` on its own loopback) and wait until it answers. `ip netns exec`
    /// execs moto_server, so the PID is moto's and [`Drop`] stops it.
    pub fn start_in(pyenv: &Path, ns: &crate::Netns, addr: SocketAddr) -> Moto {
        Moto::launch(pyenv, Some(ns.name().to_string()), addr)
    }

    fn launch(pyenv: &Path, netns: Option<String>, addr: SocketAddr) -> Moto {
        let dir = tempfile::Builder::new()
            .prefix("isthmus-moto-")
            .tempdir()
            .expect("tempdir");
        let log = dir.path().join("moto.log");
        let out = std::fs::File::create(&log).expect("moto log");
        let err = out.try_clone().expect("moto log");
        let child = in_netns(netns.as_deref(), pyenv.join("bin/python"))
            .args(["-c", LAUNCHER])
            .args(["-H", &addr.ip().to_string(), "-p", &addr.port().to_string()])
            .current_dir(dir.path())
            // moto must not find real credentials or config of the user running the tests.
            .env("HOME", dir.path())
            .env_remove("AWS_PROFILE")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("starting moto_server");
        let moto = Moto {
            child: Some(child),
            addr,
            netns,
            pyenv: pyenv.to_path_buf(),
            _dir: dir,
            log,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if moto.request("POST", "/moto-api/reset").is_ok() {
                return moto;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer on {} within {START_TIMEOUT:?}:\n{}",
                moto.addr,
                moto.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://<addr>`: the endpoint for every service and for the metadata service (reachable
    /// from inside its namespace only, for [`Moto::start_in`]).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Forget every resource (`POST /moto-api/reset`).
    pub fn reset(&self) {
        let status = self.request("POST", "/moto-api/reset").expect("moto reset");
        assert_eq!(status, 200, "moto reset");
    }

    /// Run a boto3 `script` against this server and return the JSON it prints. The script
    /// finds `client(service, region="us-east-1")` defined, with fake keys and this endpoint.
    pub fn boto3(&self, script: &str) -> serde_json::Value {
        let prelude = "import boto3, json, os\n\
            def client(service, region='us-east-1'):\n    \
                return boto3.client(service, region_name=region, endpoint_url=os.environ['MOTO_ENDPOINT'],\n        \
                    aws_access_key_id='testing', aws_secret_access_key='testing')\n";
        let endpoint = self.endpoint();
        let out = python_in(
            self.netns.as_deref(),
            &self.pyenv,
            &format!("{prelude}{script}"),
            "",
            &[("MOTO_ENDPOINT", &endpoint), ("HOME", "/nonexistent")],
        );
        serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("boto3 script printed no JSON ({e}): {out}"))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One API request without botocore, for polling fast (a boto3 run costs about a second
    /// of Python start-up): signed only as far as moto looks, a credential scope naming
    /// `service` and `region` (moto does not check signatures). The status and the body.
    pub fn call(
        &self,
        service: &str,
        region: &str,
        method: &str,
        path: &str,
        form: &str,
    ) -> std::io::Result<(u16, String)> {
        call_at(
            self.netns.as_deref(),
            self.addr,
            service,
            region,
            method,
            path,
            form,
        )
    }

    /// The namespace it runs in, if not the test's own.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// One request; the status.
    fn request(&self, method: &str, path: &str) -> std::io::Result<u16> {
        let mut s = connect(self.netns.as_deref(), self.addr)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.addr
        )?;
        let mut head = Vec::new();
        s.read_to_end(&mut head)?;
        let text = String::from_utf8_lossy(&head);
        text.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("not HTTP: {text:.80}")))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::agentd::stop(&mut child);
        }
        if std::thread::panicking() {
            eprintln!(
                "--- moto_server log ({}) ---\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// `program` as a command, inside network namespace `netns` (by name) if given: `ip netns
/// exec` execs it, so the child's PID is the program's.
fn in_netns(netns: Option<&str>, program: PathBuf) -> Command {
    match netns {
        None => Command::new(program),
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns]).arg(program);
            cmd
        }
    }
}

/// [`Moto::call`] on a moto at `addr` in `netns`, for threads that do not own the [`Moto`].
pub fn call_at(
    netns: Option<&str>,
    addr: SocketAddr,
    service: &str,
    region: &str,
    method: &str,
    path: &str,
    form: &str,
) -> std::io::Result<(u16, String)> {
    let mut s = connect(netns, addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded; charset=utf-8\r\n\
         X-Amz-Date: 20260101T000000Z\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/{region}/{service}/aws4_request, \
         SignedHeaders=host;x-amz-date, Signature=00\r\n\
         Content-Length: {}\r\n\r\n{form}",
        form.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {text:.80}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {head:.80}")))?;
    Ok((status, body.to_string()))
}

/// A TCP connection to `addr`, from inside network namespace `netns` if given (the socket is
/// made on a thread that joined it; it stays in that namespace when used from here).
pub fn connect(netns: Option<&str>, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let Some(ns) = netns else {
        return TcpStream::connect_timeout(&addr, Duration::from_secs(2));
    };
    let path = Path::new("/run/netns").join(ns);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path)?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(std::io::Error::from)?;
        TcpStream::connect_timeout(&addr, Duration::from_secs(2))
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// A port nothing listens on now (the kernel's pick; another process could take it before
/// moto binds it, which start-up then reports).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A VPC in moto for route table tests: the AWS side's VPC 10.1.0.0/16 with a subnet, the
/// gateway's ENI, another ENI (the target of a foreign route), a VPN gateway attached (the
/// fallback), a table `rtb` with the foreign route 10.9.0.0/16 → `other`, and a table `bare`
/// with only the local route.
pub struct Vpc {
    pub eni: String,
    pub other: String,
    pub vgw: String,
    pub rtb: String,
    pub bare: String,
}

impl Vpc {
    pub fn create(moto: &Moto, region: &str) -> Vpc {
        let ids = moto.boto3(&format!(
            r#"
ec2 = client("ec2", "{region}")
vpc = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.1.0.0/24")["Subnet"]["SubnetId"]
eni = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]["NetworkInterfaceId"]
other = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]["NetworkInterfaceId"]
vgw = ec2.create_vpn_gateway(Type="ipsec.1")["VpnGateway"]["VpnGatewayId"]
ec2.attach_vpn_gateway(VpcId=vpc, VpnGatewayId=vgw)
rtb = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
ec2.create_route(RouteTableId=rtb, DestinationCidrBlock="10.9.0.0/16", NetworkInterfaceId=other)
bare = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
print(json.dumps({{"eni": eni, "other": other, "vgw": vgw, "rtb": rtb, "bare": bare}}))
"#
        ));
        let id = |k: &str| ids[k].as_str().expect("an id").to_string();
        Vpc {
            eni: id("eni"),
            other: id("other"),
            vgw: id("vgw"),
            rtb: id("rtb"),
            bare: id("bare"),
        }
    }
}

/// Give the fixture's config an `[aws]` section with these settings (TOML lines) and its first
/// route group `aws_route_tables` `(id, target, fallback)`.
pub fn steer_route_tables(fx: &crate::Fixture, aws: &str, tables: &[(&str, &str, &str)]) {
    let text = std::fs::read_to_string(fx.config_path()).expect("reading the config");
    let mut doc: toml::Table = text.parse().expect("the config is TOML");
    let aws: toml::Table = toml::from_str(aws).expect("[aws] settings are TOML");
    doc.insert("aws".into(), aws.into());
    let list = tables
        .iter()
        .map(|(id, target, fallback)| {
            let mut t = toml::Table::new();
            t.insert("id".into(), (*id).into());
            t.insert("target".into(), (*target).into());
            t.insert("fallback".into(), (*fallback).into());
            toml::Value::Table(t)
        })
        .collect();
    doc["route_group"]
        .as_array_mut()
        .and_then(|groups| groups.first_mut())
        .and_then(|g| g.as_table_mut())
        .expect("a [[route_group]]")
        .insert("aws_route_tables".into(), toml::Value::Array(list));
    fx.write_config(&toml::to_string(&doc).expect("serializing the config"));
}

/// The target of `dest` in a DescribeRouteTables answer (EC2 Query XML): its ENI, gateway or
/// instance id; `None` without such a route. For polling with [`Moto::call`].
pub fn route_target(xml: &str, dest: &str) -> Option<String> {
    let at = xml.find(&format!(
        "<destinationCidrBlock>{dest}</destinationCidrBlock>"
    ))?;
    let rest = &xml[at..];
    let item = &rest[..rest.find("</item>").unwrap_or(rest.len())];
    ["networkInterfaceId", "gatewayId", "instanceId"]
        .iter()
        .find_map(|tag| {
            let open = format!("<{tag}>");
            let start = item.find(&open)? + open.len();
            let len = item[start..].find('<')?;
            Some(item[start..start + len].to_string()).filter(|v| !v.is_empty())
        })
}
