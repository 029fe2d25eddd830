//! Interoperability with a WireGuard implementation nobody here wrote: Debian's wireguard-go,
//! configured with `wg`, on the other side of agentd's interconnect link. Handshakes initiated
//! from either side, ping, and TCP transfers with checksums in both directions.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use isthmus_tests::topology::{transfer, TwoClouds, PATHS};
use isthmus_tests::{Agentd, Netns};

/// wireguard-go running in a namespace; stopped by PID and its UAPI socket removed on drop.
struct WireguardGo {
    child: Child,
    iface: String,
}

impl WireguardGo {
    fn start(ns: &Netns, iface: &str) -> WireguardGo {
        let child = ns
            .command("wireguard-go")
            .args(["-f", iface])
            .env("WG_PROCESS_FOREGROUND", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("wireguard-go is missing: apt-get install wireguard-go (CI installs it)");
        let wg = WireguardGo {
            child,
            iface: iface.to_owned(),
        };
        let sock = wg.socket();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::path::Path::new(&sock).exists() {
            assert!(
                Instant::now() < deadline,
                "wireguard-go did not create {sock}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        wg
    }

    fn socket(&self) -> String {
        format!("/var/run/wireguard/{}.sock", self.iface)
    }

    fn wg(&self, args: &[&str]) -> String {
        let out = Command::new("wg")
            .args(args)
            .output()
            .expect("wg (wireguard-tools) is missing");
        assert!(
            out.status.success(),
            "wg {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for WireguardGo {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.socket());
    }
}

/// agentd on the AWS side with only the interconnect link, whose peer endpoint is `endpoint`;
/// wireguard-go on the OCI side, with agentd's endpoint only if `wg_go_initiates`.
fn run(tag: &str, wg_go_initiates: bool) {
    let clouds = TwoClouds::new(tag);
    let path = &PATHS[0];
    let iface = clouds.interface(0);

    // OCI side: wireguard-go, configured the way operators do it.
    let wg_go = WireguardGo::start(&clouds.oci.ns, &iface);
    let key_file = clouds
        .oci
        .fx
        .write_key_text("wg-go.key", &clouds.oci.key.private);
    let mut set = vec![
        "set".to_owned(),
        iface.clone(),
        "private-key".into(),
        key_file.display().to_string(),
        "listen-port".into(),
        path.port.to_string(),
        "peer".into(),
        clouds.aws.key.public.clone(),
        "allowed-ips".into(),
        format!("{}/32", path.inner[0]),
    ];
    if wg_go_initiates {
        set.extend([
            "endpoint".into(),
            format!("{}:{}", path.underlay[0], path.port),
            "persistent-keepalive".into(),
            "1".into(),
        ]);
    }
    let set: Vec<&str> = set.iter().map(String::as_str).collect();
    wg_go.wg(&set);
    for args in [
        vec![
            "addr",
            "add",
            &format!("{}/31", path.inner[1]),
            "dev",
            &iface,
        ],
        // wireguard-go's host is a jumbo one: its TCP announces an MSS of 8960, which agentd's
        // fixed 1420-byte link must clamp (wireguard-go does not).
        vec!["link", "set", &iface, "mtu", "9000", "up"],
    ] {
        let ok = Command::new("ip")
            .args(["-n", clouds.oci.ns.name()])
            .args(&args)
            .status()
            .unwrap();
        assert!(ok.success());
    }

    // AWS side: agentd with the interconnect link only. When wireguard-go must initiate,
    // agentd's own initiations go to a port where nobody listens.
    let mut doc: toml::Table = std::fs::read_to_string(clouds.aws.fx.config_path())
        .unwrap()
        .parse()
        .unwrap();
    // One link only, and no route group (it would name the removed link).
    doc.remove("route_group");
    let links = doc["link"].as_array_mut().unwrap();
    links.retain(|l| l["name"].as_str() == Some(path.link));
    if wg_go_initiates {
        links[0].as_table_mut().unwrap().insert(
            "peer_endpoint".into(),
            format!("{}:9", path.underlay[1]).into(),
        );
    }
    clouds.aws.fx.write_config(&toml::to_string(&doc).unwrap());
    let _agentd = Agentd::start(&clouds.aws.fx, &clouds.aws.ns);

    let link = clouds
        .aws
        .wait_links_up(&[path.link], Duration::from_secs(20));
    let link = link
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == path.link)
        .unwrap()
        .clone();
    if wg_go_initiates {
        // agentd learnt wireguard-go's real address from its authenticated handshake.
        assert_eq!(
            link["endpoint"],
            format!("{}:{}", path.underlay[1], path.port),
            "{link:#}"
        );
    }
    let dump = wg_go.wg(&["show", &iface, "latest-handshakes"]);
    let stamp: u64 = dump.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(stamp > 0, "wireguard-go saw no handshake: {dump}");

    // On failure, what both ends saw: agentd's link (drops, handshakes) and wireguard-go's peer.
    let seen = || {
        format!(
            "agentd: {:#}\nwireguard-go: {}",
            clouds.aws.link(path.link),
            wg_go.wg(&["show", &iface])
        )
    };
    assert!(
        clouds.aws.ping(path.inner[1], 3),
        "ping agentd -> wireguard-go\n{}",
        seen()
    );
    assert!(
        clouds.oci.ping(path.inner[0], 3),
        "ping wireguard-go -> agentd\n{}",
        seen()
    );
    let to_oci = format!("{}:5101", path.inner[1]).parse().unwrap();
    let (sent, received) = transfer(&clouds.aws.ns, &clouds.oci.ns, to_oci, 20 << 20);
    assert_eq!(sent, received, "agentd -> wireguard-go transfer");
    let to_aws = format!("{}:5102", path.inner[0]).parse().unwrap();
    let (sent, received) = transfer(&clouds.oci.ns, &clouds.aws.ns, to_aws, 20 << 20);
    assert_eq!(sent, received, "wireguard-go -> agentd transfer");

    // The peer answers no path-MTU probe: the link keeps its configured MTU, and the SYN-ACK
    // and the SYN from wireguard-go's side were clamped to it.
    let mtu = clouds.aws.link(path.link)["path_mtu"].clone();
    assert_eq!(mtu["state"], "fixed", "{mtu:#}");
    assert_eq!(mtu["tx"], 1420, "{mtu:#}");
    assert!(mtu["mss_clamped"].as_u64() >= Some(2), "{mtu:#}");
}

#[test]
fn agentd_initiates_to_wireguard_go_and_both_directions_carry_data() {
    run("ia", false);
}

#[test]
fn wireguard_go_initiates_to_agentd_and_both_directions_carry_data() {
    run("ib", true);
}
