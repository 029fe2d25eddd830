//! The README's first command: two gateways, one per cloud, each in its own network namespace
//! and joined by two underlay paths (an interconnect and an internet path), run agentd; the
//! demo shows the encrypted links coming up, traffic crossing each, what `netctl` and `wg show`
//! tell an operator, a broken config refused while the tunnels run on, and a clean stop.
//! Everything it creates is removed, also on failure.

use std::process::Command;
use std::time::{Duration, Instant};

use isthmus_tests::topology::{transfer, TwoClouds, PATHS};
use isthmus_tests::{netctl, Agentd};
use nix::sys::signal::Signal;

fn say(text: &str) {
    println!("\n\x1b[1m== {text}\x1b[0m");
}

fn show(cmd: &str, out: &isthmus_tests::Output) {
    println!("$ {cmd}");
    print!("{}", out.stdout);
    eprint!("{}", out.stderr);
}

fn main() {
    isthmus_tests::require_root();
    let started = Instant::now();
    say("Two clouds: an AWS gateway and an OCI gateway, each in a network namespace");
    let clouds = TwoClouds::new("demo");
    // `wg show` looks for agentd's sockets where it looks for wireguard-go's.
    clouds
        .aws
        .fx
        .set("agent", "uapi_dir", "/var/run/wireguard".into());
    for (i, p) in PATHS.iter().enumerate() {
        println!(
            "  {:<13} underlay {} <-> {}   tunnel {} <-> {}   ({})",
            p.link,
            p.underlay[0],
            p.underlay[1],
            p.inner[0],
            p.inner[1],
            clouds.interface(i)
        );
    }

    say("Start agentd on both gateways (systemd would: Type=notify, READY=1 after start-up)");
    let mut aws = Agentd::start(&clouds.aws.fx, &clouds.aws.ns);
    let mut oci = Agentd::start(&clouds.oci.fx, &clouds.oci.ns);
    let t = Instant::now();
    clouds
        .aws
        .wait_links_up(&["interconnect", "internet"], Duration::from_secs(20));
    clouds
        .oci
        .wait_links_up(&["interconnect", "internet"], Duration::from_secs(20));
    println!("both links handshook on both gateways in {:?}", t.elapsed());
    show(
        "netctl status   # on the AWS gateway",
        &netctl(&clouds.aws.fx.socket(), &["status"]),
    );

    say("Traffic through each encrypted link");
    for p in &PATHS {
        let ok = clouds.aws.ping(p.inner[1], 3);
        let to = format!("{}:5201", p.inner[1]).parse().unwrap();
        let t = Instant::now();
        let (sent, received) = transfer(&clouds.aws.ns, &clouds.oci.ns, to, 100 << 20);
        let secs = t.elapsed().as_secs_f64();
        println!(
            "  {:<13} ping {}; 100 MiB TCP in {secs:.2} s ({:.2} Gbit/s, debug build), checksums {}",
            p.link,
            if ok { "ok" } else { "FAILED" },
            (100u64 << 20) as f64 * 8.0 / secs / 1e9,
            if sent == received { "match" } else { "DIFFER" }
        );
    }
    show("netctl links", &netctl(&clouds.aws.fx.socket(), &["links"]));
    let wg = Command::new("wg")
        .args(["show", &clouds.interface(0)])
        .output();
    match wg {
        Ok(out) => {
            println!("$ wg show {}", clouds.interface(0));
            print!("{}", String::from_utf8_lossy(&out.stdout));
        }
        Err(_) => println!("(wg from wireguard-tools is not installed: skipping `wg show`)"),
    }

    say("An operator saves a broken config and reloads: refused with line:column, tunnels untouched");
    let good = std::fs::read_to_string(clouds.aws.fx.config_path()).unwrap();
    clouds
        .aws
        .fx
        .write_config(&good.replacen("mtu = ", "mtu = \"jumbo\" # ", 1).replacen(
            "[[link]]",
            "[[link]]\nmtu = \"jumbo\"",
            1,
        ));
    show(
        "netctl reload",
        &netctl(&clouds.aws.fx.socket(), &["reload"]),
    );
    println!(
        "agentd still running: {}; interconnect still carries traffic: {}",
        aws.is_running(),
        clouds.aws.ping(PATHS[0].inner[1], 1)
    );
    clouds.aws.fx.write_config(&good);

    say("SIGTERM: both stop cleanly, interfaces and sockets removed");
    for (name, agentd) in [("aws", &mut aws), ("oci", &mut oci)] {
        agentd.signal(Signal::SIGTERM);
        let status = agentd.wait_exit(Duration::from_secs(10));
        println!("  {name}: exit {:?}", status.code());
    }
    println!(
        "\nDone in {:.1} s. Throughput of a release build against wireguard-go: tests/bench/tunnel.sh.\n\
         Routes, probes and failover come with the next issues; see docs/.",
        started.elapsed().as_secs_f64()
    );
}
