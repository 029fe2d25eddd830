//! In-memory fakes of every adapter, for shell tests on tokio's paused time (no root, no real
//! socket): two gateways' shells joined by a fake network that carries their probe datagrams
//! (with a latency, and cuts per link and direction), fake links adapters that "start" a link
//! at once on a made-up interface, a fake kernel behind the real routes adapter that renders its
//! table as `ip route` text, a resolver that never answers and an event-log writer that is stuck.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use boringtun::x25519::{PublicKey, StaticSecret};
use isthmus_config::{Config, Link, LoadOptions};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::input::{Input, Signal};
use super::reload::Running;
use super::shell::{Adapters, Receivers, Shell};
use crate::control::Command;
use crate::failover::ProbeIn;
use crate::probe::peer::ProbeTransport;
use crate::routes::plan::{Change, KernelRoute, Target};
use crate::routes::{self, KernelApi, RouteManager, Rule};
use crate::tunnel::{LinkCmd, LinkReport};

pub const LATENCY: Duration = Duration::from_millis(2);

/// The fake network between side 0 (aws) and side 1 (oci).
#[derive(Default)]
pub struct Net {
    /// (link, direction 0: aws→oci, 1: oci→aws) that drop everything.
    cut: Mutex<Vec<(String, usize)>>,
    inboxes: Mutex<[Option<mpsc::Sender<ProbeIn>>; 2]>,
}

impl Net {
    pub fn cut(&self, link: &str) {
        let mut c = self.cut.lock().unwrap();
        c.push((link.to_owned(), 0));
        c.push((link.to_owned(), 1));
    }

    pub fn restore(&self, link: &str) {
        self.cut.lock().unwrap().retain(|(l, _)| l != link);
    }

    fn is_cut(&self, link: &str, dir: usize) -> bool {
        self.cut
            .lock()
            .unwrap()
            .iter()
            .any(|(l, d)| l == link && *d == dir)
    }
}

struct FakeTransport {
    side: usize,
    net: Arc<Net>,
    running: Vec<String>,
}

impl ProbeTransport for FakeTransport {
    fn sync(&mut self, links: &[Link], running: &dyn Fn(&str) -> bool, _port: u16) -> Vec<String> {
        self.running = links
            .iter()
            .filter(|l| running(&l.name))
            .map(|l| l.name.clone())
            .collect();
        self.running.clone()
    }

    fn send(&mut self, link: &str, bytes: &[u8]) -> bool {
        if !self.running.iter().any(|l| l == link) || self.net.is_cut(link, self.side) {
            return false;
        }
        let to = 1 - self.side;
        let Some(inbox) = self.net.inboxes.lock().unwrap()[to].clone() else {
            return false;
        };
        let datagram = ProbeIn {
            link: link.to_owned(),
            bytes: bytes.to_vec(),
            at: crate::clock::now(),
            from_peer: true,
        };
        tokio::spawn(async move {
            tokio::time::sleep(LATENCY).await;
            let at = crate::clock::now();
            let _ = inbox.send(ProbeIn { at, ..datagram }).await;
        });
        true
    }
}

/// The fake kernel: agentd's routes and rules, and every write it was asked for.
#[derive(Default)]
pub struct FakeKernel {
    routes: Mutex<Vec<KernelRoute>>,
    rules: Mutex<Vec<Rule>>,
    pub writes: Mutex<Vec<Change>>,
    /// Interface names by index, as the fake links gave them out.
    pub interfaces: Mutex<BTreeMap<u32, String>>,
}

impl FakeKernel {
    /// The table as `ip route show table all proto 73` would print it, sorted.
    pub fn ip_route(&self) -> String {
        let names = self.interfaces.lock().unwrap().clone();
        let mut lines: Vec<String> = self
            .routes
            .lock()
            .unwrap()
            .iter()
            .map(|r| {
                let what = match &r.target {
                    Target::Dev { ifindex, .. } => format!(
                        "{} dev {}",
                        r.dst,
                        names.get(ifindex).cloned().unwrap_or(format!("#{ifindex}"))
                    ),
                    Target::Unreachable => format!("unreachable {}", r.dst),
                    Target::Other(k) => format!("type{k} {}", r.dst),
                };
                let mtu = r.mtu.map(|m| format!(" mtu {m}")).unwrap_or_default();
                format!("{what} proto {} metric {}{mtu}", r.protocol, r.metric)
            })
            .collect();
        lines.sort();
        lines.join("\n")
    }

    /// What the kernel does when a process holding TUN devices dies: their routes go.
    pub fn lose_interfaces(&self) {
        let gone: Vec<u32> = self.interfaces.lock().unwrap().keys().copied().collect();
        self.routes.lock().unwrap().retain(
            |r| !matches!(r.target, Target::Dev { ifindex, .. } if gone.contains(&ifindex)),
        );
    }
}

/// The fake kernel behind an `Arc`, as the routes adapter's [`KernelApi`].
#[derive(Clone)]
pub struct KernelHandle(pub Arc<FakeKernel>);

impl KernelApi for KernelHandle {
    async fn routes(&self, tables: &[u32]) -> anyhow::Result<Vec<KernelRoute>> {
        Ok(self
            .0
            .routes
            .lock()
            .unwrap()
            .iter()
            .filter(|r| tables.contains(&r.table))
            .cloned()
            .collect())
    }

    async fn apply(&self, change: &Change) -> anyhow::Result<()> {
        let mut routes = self.0.routes.lock().unwrap();
        match change {
            Change::Add(r) => {
                if routes.iter().any(|x| x.identity() == r.identity()) {
                    anyhow::bail!("adding route {r}: File exists");
                }
                routes.push(r.clone());
            }
            Change::Replace(r) => {
                routes.retain(|x| x.identity() != r.identity());
                routes.push(r.clone());
            }
            Change::Delete(r) => routes.retain(|x| x != r),
        }
        self.0.writes.lock().unwrap().push(change.clone());
        Ok(())
    }

    async fn rules(&self, protocol: u8) -> anyhow::Result<Vec<Rule>> {
        Ok(self
            .0
            .rules
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.protocol == protocol)
            .copied()
            .collect())
    }

    async fn add_rule(&self, rule: Rule) -> anyhow::Result<()> {
        self.0.rules.lock().unwrap().push(rule);
        Ok(())
    }

    async fn delete_rule(&self, rule: Rule) -> anyhow::Result<()> {
        self.0.rules.lock().unwrap().retain(|r| *r != rule);
        Ok(())
    }
}

/// The fake links adapter: every link starts at once on a made-up interface.
async fn fake_links(
    mut commands: mpsc::UnboundedReceiver<LinkCmd>,
    inputs: mpsc::Sender<Input>,
    kernel: Arc<FakeKernel>,
    first_ifindex: u32,
    endpoints: Arc<Mutex<Vec<(String, std::net::SocketAddr)>>>,
) {
    let mut running: BTreeMap<String, u32> = BTreeMap::new();
    let mut next = first_ifindex;
    while let Some(cmd) = commands.recv().await {
        let report = |r| inputs.send(Input::Link(r));
        match cmd {
            LinkCmd::Apply(links) => {
                let mut changes = Vec::new();
                let gone: Vec<String> = running
                    .keys()
                    .filter(|n| !links.iter().any(|(l, _)| &l.name == *n))
                    .cloned()
                    .collect();
                for name in gone {
                    running.remove(&name);
                    changes.push(format!("link {name}: stopped"));
                    let _ = report(LinkReport::Stopped {
                        link: name,
                        error: None,
                    })
                    .await;
                }
                for (l, _) in links {
                    if running.contains_key(&l.name) {
                        continue;
                    }
                    next += 1;
                    running.insert(l.name.clone(), next);
                    kernel
                        .interfaces
                        .lock()
                        .unwrap()
                        .insert(next, l.interface.clone());
                    changes.push(format!("link {}: added", l.name));
                    let _ = report(LinkReport::Started {
                        link: l.name.clone(),
                        ifindex: next,
                    })
                    .await;
                }
                let _ = report(LinkReport::Applied { changes }).await;
            }
            LinkCmd::SetEndpoint { link, addr } => endpoints.lock().unwrap().push((link, addr)),
            LinkCmd::Maintain => {}
            LinkCmd::StopAll => {
                running.clear();
                let _ = report(LinkReport::AllStopped).await;
            }
        }
    }
}

/// One gateway's shell with fake adapters, running as a task of the test's runtime.
pub struct Gateway {
    pub commands: mpsc::Sender<Command>,
    pub inputs: mpsc::Sender<Input>,
    pub kernel: Arc<FakeKernel>,
    /// Lookups the resolver was asked for (it never answers).
    pub lookups: Arc<Mutex<Vec<crate::resolve::Lookup>>>,
    pub endpoints: Arc<Mutex<Vec<(String, std::net::SocketAddr)>>>,
    pub ready: watch::Receiver<bool>,
    task: JoinHandle<()>,
    /// The adapters' tasks: a crash stops them too, as `kill -9` stops every thread.
    adapters: Vec<JoinHandle<()>>,
    _stuck_writer: mpsc::Receiver<isthmus_api::EventRecord>,
}

impl Gateway {
    pub async fn start(
        side: usize,
        config: Arc<Config>,
        net: Arc<Net>,
        kernel: Arc<FakeKernel>,
    ) -> Gateway {
        let (inputs_tx, inputs) = mpsc::channel(1024);
        let (probe_tx, probes) = mpsc::channel(1024);
        let (command_tx, commands) = mpsc::channel(64);
        net.inboxes.lock().unwrap()[side] = Some(probe_tx);
        let (links_tx, links_rx) = mpsc::unbounded_channel();
        let (routes_tx, routes_rx) = mpsc::unbounded_channel();
        let (resolver_tx, mut resolver_rx) = mpsc::unbounded_channel();
        let (targets_tx, _targets_rx) = mpsc::unbounded_channel();
        let (actions_tx, actions_rx) = mpsc::unbounded_channel();
        let mut adapters_tasks = vec![tokio::spawn(crate::actions::run(
            actions_rx,
            inputs_tx.clone(),
            crate::faults::Faults::detached(),
        ))];
        let endpoints = Arc::new(Mutex::new(Vec::new()));
        adapters_tasks.push(tokio::spawn(fake_links(
            links_rx,
            inputs_tx.clone(),
            kernel.clone(),
            100 * (side as u32 + 1),
            endpoints.clone(),
        )));
        let (_events_tx, kernel_events) = mpsc::channel(1);
        adapters_tasks.push(tokio::spawn(routes::run(
            RouteManager::new(KernelHandle(kernel.clone()), config.routes.protocol),
            routes_rx,
            kernel_events,
            Box::new(|_| Vec::new()),
            inputs_tx.clone(),
        )));
        let lookups = Arc::new(Mutex::new(Vec::new()));
        let held = lookups.clone();
        adapters_tasks.push(tokio::spawn(async move {
            // A resolver that never answers: it takes the question and keeps it.
            while let Some(l) = resolver_rx.recv().await {
                held.lock().unwrap().push(l);
            }
        }));
        let (ready_tx, ready) = watch::channel(false);
        let (_listen, metrics_listener) = watch::channel(isthmus_api::MetricsListener {
            listen: "127.0.0.1:0".into(),
            listening: false,
            error: None,
        });
        let running = Running {
            config: config.clone(),
            warnings: Vec::new(),
            fingerprint: "test".into(),
            loaded_at: crate::clock::now(),
        };
        let reload_config = config.clone();
        let adapters = Adapters {
            links: links_tx,
            routes: routes_tx,
            actions: actions_tx,
            backends: Box::new(crate::actions::backends::build),
            resolver: resolver_tx,
            targets: targets_tx,
            // No probe stream in the test bed: drills are tested end to end.
            drill: tokio::sync::mpsc::unbounded_channel().0,
            // No lease store: the test bed's gateways are alone (HA is tested end to end).
            ha: tokio::sync::mpsc::unbounded_channel().0,
            transport: Box::new(FakeTransport {
                side,
                net,
                running: Vec::new(),
            }),
            loader: Arc::new(move || {
                Ok(Running {
                    config: reload_config.clone(),
                    warnings: Vec::new(),
                    fingerprint: "test".into(),
                    loaded_at: crate::clock::now(),
                })
            }),
            on_config: Box::new(|_, _| {}),
            metrics_listener,
            on_ready: Box::new(move || {
                let _ = ready_tx.send(true);
            }),
            watchdog: None,
            state: crate::state::spawn(
                &config.agent.state_dir,
                crate::clock::wall(),
                crate::faults::Faults::detached(),
            )
            .saver,
        };
        // An event log writer that never takes anything: a disk that blocks forever.
        let (writer, stuck) = mpsc::channel(crate::events::WRITER_QUEUE);
        let now = crate::clock::now();
        let mut shell = Shell::new(
            running,
            crate::metrics::Metrics::new(),
            Vec::new(),
            writer,
            adapters,
            inputs_tx.clone(),
            now,
        );
        // A restart finds what the gateway's previous life kept (read here, not on the writer
        // thread: paused time would not wait for it).
        shell.restore(crate::state::load(
            &config.agent.state_dir,
            crate::clock::wall(),
        ));
        shell.continue_probe_numbers(crate::state::load_seq_floor(&config.agent.state_dir));
        let task = tokio::spawn(shell.run(Receivers {
            probes,
            inputs,
            commands,
        }));
        Gateway {
            commands: command_tx,
            inputs: inputs_tx,
            kernel,
            lookups,
            endpoints,
            ready,
            task,
            adapters: adapters_tasks,
            _stuck_writer: stuck,
        }
    }

    pub async fn view(&self) -> Arc<crate::view::View> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.commands
            .send(Command::View { reply })
            .await
            .expect("loop runs");
        rx.await.expect("loop answers")
    }

    pub async fn events(&self) -> Vec<isthmus_api::EventRecord> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.commands
            .send(Command::Events {
                since: 0,
                limit: 1000,
                reply,
            })
            .await
            .expect("loop runs");
        rx.await.expect("loop answers")
    }

    /// A crash: the task is gone, no routes released, the kernel drops the TUNs' routes.
    pub fn crash(self) -> Arc<FakeKernel> {
        // Every task at once (the test runtime has one thread: none of them runs now, and an
        // aborted one is never polled again), so that no adapter writes after the crash.
        self.task.abort();
        for t in &self.adapters {
            t.abort();
        }
        self.kernel.lose_interfaces();
        self.kernel
    }

    /// A clean stop, waited for.
    pub async fn stop(self) -> Arc<FakeKernel> {
        let _ = self.inputs.send(Input::Signal(Signal::Stop)).await;
        let _ = self.task.await;
        self.kernel
    }
}

fn key_file(dir: &Path, name: &str, private: [u8; 32]) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(
        &path,
        base64::engine::general_purpose::STANDARD.encode(private),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.display().to_string()
}

fn public(private: [u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(PublicKey::from(&StaticSecret::from(private)).to_bytes())
}

/// The configs of the two gateways: links `ic` (primary) and `inet` (backup, whose peer
/// endpoint on side 0 is `inet_endpoint`), one route group `db` to the other side's VPC.
pub fn configs(dir: &Path, inet_endpoint: &str) -> [Arc<Config>; 2] {
    let keys = [[1u8; 32], [2u8; 32]];
    let vpc = ["10.1.0.0/16", "10.2.0.0/16"];
    let under = [["192.0.2.1", "198.51.100.1"], ["192.0.2.2", "203.0.113.1"]];
    [0usize, 1].map(|side| {
        let other = 1 - side;
        let key = key_file(dir, &format!("side{side}.key"), keys[side]);
        let peer = public(keys[other]);
        let inet_peer = if side == 0 {
            inet_endpoint.to_owned()
        } else {
            format!("{}:51821", under[0][1])
        };
        let text = format!(
            r#"
[agent]
name = "gw{side}"
state_dir = "{dir}/state{side}"
uapi_dir = "{dir}/uapi{side}"
[control]
socket = "{dir}/ctl{side}.sock"
[health]
rtt_degraded = "50ms"
[[link]]
name = "ic"
interface = "fk{side}-ic"
private_key_file = "{key}"
listen = "{ic_local}:51820"
peer_public_key = "{peer}"
peer_endpoint = "{ic_peer}:51820"
allowed_ips = ["{remote}", "10.255.0.{other}/32"]
addresses = ["10.255.0.{side}/31"]
[[link]]
name = "inet"
interface = "fk{side}-inet"
private_key_file = "{key}"
listen = "{inet_local}:51821"
peer_public_key = "{peer}"
peer_endpoint = "{inet_peer}"
allowed_ips = ["{remote}", "10.255.1.{other}/32"]
addresses = ["10.255.1.{side}/31"]
[[route_group]]
name = "db"
destinations = ["{remote}"]
links = ["ic", "inet"]
failback_after = "3s"
"#,
            dir = dir.display(),
            ic_local = under[side][0],
            ic_peer = under[other][0],
            inet_local = under[side][1],
            remote = vpc[other],
        );
        let path = dir.join(format!("gw{side}.toml"));
        let loaded = isthmus_config::parse_str(&text, &path, &LoadOptions::default())
            .unwrap_or_else(|r| panic!("test config: {r}"));
        Arc::new(loaded.config)
    })
}
