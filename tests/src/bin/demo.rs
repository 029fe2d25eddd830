//! The README's first command: two clouds in network namespaces. An app behind the AWS gateway
//! talks to a database behind the OCI gateway through agentd's encrypted links; the demo cuts
//! the interconnect, shows the detection, the route move and the traffic continuing over the
//! internet link, restores it, shows the failback, and prints detection time, switch time and
//! packets lost. Everything it creates is removed, also on failure.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use isthmus_tests::netctl;
use isthmus_tests::topology::{now_ms, switch_at, transfer, TwoClouds, PATHS, VPCS};
use nix::sys::signal::Signal;

fn say(text: &str) {
    println!("\n\x1b[1m== {text}\x1b[0m");
}

fn show(cmd: &str, out: &isthmus_tests::Output) {
    println!("$ {cmd}");
    print!("{}", out.stdout);
    eprint!("{}", out.stderr);
}

/// `netctl events` for the events since `since` (unix ms).
fn events_since(side: &isthmus_tests::topology::Side, since: u64) {
    let count = side
        .events()
        .iter()
        .filter(|e| e["unix_ms"].as_u64().unwrap_or(0) >= since)
        .count();
    let out = netctl(
        &side.fx.socket(),
        &["events", "--limit", &count.max(1).to_string()],
    );
    println!("$ netctl events");
    for line in out.stdout.lines() {
        println!("  {line}");
    }
}

/// The metric lines worth a look after a failover and failback.
fn shown(line: &str) -> bool {
    let nonzero = !line.ends_with(" 0");
    (line.starts_with("isthmus_group_failovers_total") && nonzero)
        || line.starts_with("isthmus_group_active_link{")
        || line.starts_with("isthmus_link_up{")
        || line.starts_with("isthmus_link_rtt_seconds_count")
        || line.starts_with("isthmus_link_transmit_bytes_total")
        || (line.starts_with("isthmus_actions_total") && nonzero)
}

fn main() {
    isthmus_tests::require_root();
    let started = Instant::now();
    say("Two clouds: an app in AWS, a database in OCI, a gateway in each, two underlay paths");
    let clouds = TwoClouds::new("demo").with_apps();
    // `wg show` looks for agentd's sockets where it looks for wireguard-go's.
    clouds
        .aws
        .fx
        .set("agent", "uapi_dir", "/var/run/wireguard".into());
    println!(
        "  aws-app {} -> aws-gw -> [interconnect | internet] -> oci-gw -> oci-db {}",
        VPCS[0].2, VPCS[1].2
    );
    for (i, p) in PATHS.iter().enumerate() {
        println!(
            "  {:<13} underlay {:<13} <-> {:<13} tunnel {} <-> {} ({})",
            p.link,
            p.underlay[0],
            p.underlay[1],
            p.inner[0],
            p.inner[1],
            clouds.interface(i)
        );
    }

    say("Start agentd on both gateways");
    let t = Instant::now();
    let (mut aws, mut oci) = clouds.start_agents();
    println!(
        "tunnels up and both gateways agree on the interconnect after {:?}",
        t.elapsed()
    );
    show(
        "netctl status   # AWS gateway",
        &netctl(&clouds.aws.fx.socket(), &["status"]),
    );
    show(
        "netctl routes",
        &netctl(&clouds.aws.fx.socket(), &["routes"]),
    );
    let to = format!("{}:5201", VPCS[1].2).parse().expect("address");
    let t = Instant::now();
    let (sent, received) = transfer(clouds.aws_app(), clouds.oci_app(), to, 50 << 20);
    println!(
        "app -> db: 50 MiB over TCP in {:.2} s, checksums {}",
        t.elapsed().as_secs_f64(),
        if sent == received { "match" } else { "DIFFER" }
    );

    say("A 10 ms ping from the app to the database runs through all of what follows");
    let pinger: Child = clouds
        .aws_app()
        .command("ping")
        .args(["-D", "-q", "-i", "0.01", "-W", "1", "-w", "12", VPCS[1].2])
        .stdout(Stdio::piped())
        .spawn()
        .expect("ping");
    std::thread::sleep(Duration::from_secs(1));

    say("Cut the interconnect (nftables drops its UDP both ways)");
    clouds.cut_interconnect(true);
    let cut = now_ms();
    clouds
        .aws
        .wait_active("remote", "internet", Duration::from_secs(5));
    clouds
        .oci
        .wait_active("remote", "internet", Duration::from_secs(5));
    let aws_switch = switch_at(&clouds.aws.events(), cut, "internet").unwrap_or(cut);
    let oci_switch = switch_at(&clouds.oci.events(), cut, "internet").unwrap_or(cut);
    events_since(&clouds.aws, cut);
    show(
        "netctl routes",
        &netctl(&clouds.aws.fx.socket(), &["routes"]),
    );

    say("Restore the interconnect: failback once it has been stable for 3 s (30 s by default)");
    std::thread::sleep(Duration::from_secs(2));
    clouds.restore_interconnect();
    let restored = now_ms();
    clouds
        .aws
        .wait_active("remote", "interconnect", Duration::from_secs(15));
    clouds
        .oci
        .wait_active("remote", "interconnect", Duration::from_secs(15));
    let back = switch_at(&clouds.aws.events(), restored, "interconnect").unwrap_or(restored);
    events_since(&clouds.aws, restored);

    let out = pinger.wait_with_output().expect("ping");
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text
        .lines()
        .find(|l| l.contains("transmitted"))
        .unwrap_or("")
        .to_owned();
    say("Result");
    println!(
        "  detection + switch: AWS gateway {} ms, OCI gateway {} ms after the cut",
        aws_switch - cut,
        oci_switch - cut
    );
    println!("  failback: {} ms after the restore", back - restored);
    println!("  10 ms ping through it all: {summary}");
    println!("  (while replies are missing ping sends about every 16 ms; the 20-trial gap figures: tests/bench/README.md)");

    say("What Prometheus scrapes from the AWS gateway (a few of the families in docs/metrics.md)");
    println!("$ curl -s 127.0.0.1:9477/metrics   # inside the AWS gateway's namespace");
    let addr = "127.0.0.1:9477".parse().expect("address");
    match isthmus_tests::http_get(&clouds.aws.ns, addr, "/metrics", Duration::from_secs(5)) {
        Ok((200, text)) => {
            for line in text.lines().filter(|l| shown(l)) {
                println!("  {line}");
            }
        }
        other => println!("  scrape failed: {other:?}"),
    }

    say("Stop both gateways (SIGTERM): tunnels removed, fail-closed routes kept");
    for (name, agentd) in [("aws", &mut aws), ("oci", &mut oci)] {
        agentd.signal(Signal::SIGTERM);
        let status = agentd.wait_exit(Duration::from_secs(10));
        println!("  {name}: exit {:?}", status.code());
    }
    println!(
        "\nDone in {:.1} s; namespaces and processes are removed on exit.",
        started.elapsed().as_secs_f64()
    );
}
