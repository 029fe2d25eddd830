//! The README's first command: two clouds in network namespaces. An app behind the AWS gateway
//! talks to a database behind the OCI gateway through agentd's encrypted links; the demo cuts
//! the interconnect, shows the detection, the route move and the traffic continuing over the
//! internet link, restores it, shows the failback, and prints detection time, switch time and
//! packets lost. Then the database's DNS name follows the database ([`dns`]): its listener
//! stops, the OCI gateway publishes the DR answer to a real BIND, the app's `dig` sees it, and
//! the name goes back when the listener does.
//!
//! Everything it creates is removed, also on failure (guards) and on Ctrl-C ([`interrupt`]).
//! It prints the namespaces it creates and the PIDs of the processes it starts, so that a
//! reader (and `tests/tests/demo.rs`) can check that none is left.

mod dns;
mod interrupt;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use isthmus_tests::topology::{now_ms, switch_at, transfer, Side, TwoClouds, PATHS, VPCS};
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

/// `netctl events` for the events since `since` (unix ms).
fn events_since(side: &Side, since: u64) {
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

/// The DNS group's lines on the OCI gateway.
fn shown_dns(line: &str) -> bool {
    line.starts_with("isthmus_dns_group_answer{")
        || line.starts_with("isthmus_dns_answer_checks_passing{")
        || (line.starts_with("isthmus_action_duration_seconds_count") && line.contains("dns"))
}

/// A few metric families of a gateway, as Prometheus scrapes them.
fn scrape(side: &Side, filter: fn(&str) -> bool) {
    let addr = "127.0.0.1:9477".parse().expect("address");
    match isthmus_tests::http_get(&side.ns, addr, "/metrics", Duration::from_secs(5)) {
        Ok((200, text)) => {
            for line in text.lines().filter(|l| filter(l)) {
                println!("  {line}");
            }
        }
        other => println!("  scrape failed: {other:?}"),
    }
}

/// A process the demo started and waits for itself; stopped by PID if the demo fails first.
struct Running(Option<Child>);

impl Running {
    fn start(child: Child) -> Running {
        interrupt::process(child.id());
        Running(Some(child))
    }

    fn wait_with_output(mut self) -> std::process::Output {
        let child = self.0.take().expect("running");
        child.wait_with_output().expect("waiting for a child")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            isthmus_tests::agentd::stop(&mut child);
        }
    }
}

/// Start agentd on `side` and wait until it is ready.
fn start_agent(side: &Side) -> Agentd {
    let agentd = Agentd::spawn(&side.fx, &side.ns, &[]);
    interrupt::process(agentd.pid().as_raw() as u32);
    agentd.wait_ready()
}

fn main() {
    isthmus_tests::require_root();
    interrupt::undo_on_signal();
    let started = Instant::now();
    say("Two clouds: an app in AWS, a database in OCI, a gateway in each, two underlay paths");
    let clouds = TwoClouds::new("demo").with_apps();
    let namespaces = [
        clouds.aws.ns.name(),
        clouds.oci.ns.name(),
        clouds.aws_app().name(),
        clouds.oci_app().name(),
    ];
    for name in namespaces {
        interrupt::namespace(name);
    }
    for side in [&clouds.aws, &clouds.oci] {
        interrupt::dir(side.fx.dir());
    }
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
    println!(
        "  oci-db also holds the DR database {} and the VCN's DNS server {} (BIND 9)",
        dns::DR,
        dns::NAMED_IP
    );
    println!("  namespaces: {}", namespaces.join(" "));
    let mut dns = dns::Dns::start(&clouds);
    println!(
        "  named pid {} serves {} on {}:53; the OCI gateway publishes {} there",
        dns.bind.pid().expect("named runs"),
        dns::ZONE,
        dns::NAMED_IP,
        dns::RECORD
    );

    say("Start agentd on both gateways");
    let t = Instant::now();
    let mut aws = start_agent(&clouds.aws);
    let mut oci = start_agent(&clouds.oci);
    println!(
        "  agentd pid {} (AWS gateway), pid {} (OCI gateway)",
        aws.pid(),
        oci.pid()
    );
    let up = Duration::from_secs(20);
    for side in [&clouds.aws, &clouds.oci] {
        side.wait_links_up(&["interconnect", "internet"], up);
        side.wait_active("remote", "interconnect", up);
    }
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
    let pinger = Running::start(
        clouds
            .aws_app()
            .command("ping")
            .args(["-D", "-q", "-i", "0.01", "-W", "1", "-w", "12", VPCS[1].2])
            .stdout(Stdio::piped())
            .spawn()
            .expect("ping"),
    );
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

    let out = pinger.wait_with_output();
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text
        .lines()
        .find(|l| l.contains("transmitted"))
        .unwrap_or("")
        .to_owned();
    say("Result: the interconnect cut");
    println!(
        "  detection + switch: AWS gateway {} ms, OCI gateway {} ms after the cut",
        aws_switch - cut,
        oci_switch - cut
    );
    println!("  failback: {} ms after the restore", back - restored);
    println!("  10 ms ping through it all: {summary}");
    println!("  (while replies are missing ping sends about every 16 ms; the 20-trial gap figures: tests/bench/README.md)");

    say("DNS follows the database: the OCI gateway keeps db.oci.example. on its healthy answer");
    let app = clouds.aws_app();
    dns::wait_served(app, dns::PRIMARY, Duration::from_secs(15));
    println!("$ {}   # from the app in AWS", dns::DIG);
    println!("  {}", dns::dig(app).join(" "));

    say(&format!(
        "Stop the primary database's listener ({}:{}): its check fails",
        dns::PRIMARY,
        dns::LISTENER_PORT
    ));
    let down = now_ms();
    dns.stop_primary();
    dns::wait_served(app, dns::DR, Duration::from_secs(10));
    let dr_ms = now_ms() - down;
    println!("$ {}", dns::DIG);
    println!("  {}", dns::dig(app).join(" "));
    println!(
        "the DR answer is served {dr_ms} ms after the listener went down (checked every 200 ms)"
    );
    events_since(&clouds.oci, down);
    show(
        "netctl actions   # OCI gateway",
        &netctl(&clouds.oci.fx.socket(), &["actions"]),
    );

    say(&format!(
        "Start the listener again: the name goes back once the primary has passed for {} s (30 s by default)",
        dns::FAILBACK_AFTER_S
    ));
    let again = now_ms();
    dns.start_primary(clouds.oci_app());
    dns::wait_served(app, dns::PRIMARY, Duration::from_secs(15));
    let back_ms = now_ms() - again;
    println!("$ {}", dns::DIG);
    println!("  {}", dns::dig(app).join(" "));
    println!("the primary is served again {back_ms} ms after the listener came back");

    say("What Prometheus scrapes (a few of the families in docs/metrics.md)");
    println!("$ curl -s 127.0.0.1:9477/metrics   # inside the AWS gateway's namespace");
    scrape(&clouds.aws, shown);
    println!("$ curl -s 127.0.0.1:9477/metrics   # inside the OCI gateway's namespace");
    scrape(&clouds.oci, shown_dns);

    say("Stop both gateways (SIGTERM): tunnels removed, fail-closed routes kept");
    for (name, agentd) in [("aws", &mut aws), ("oci", &mut oci)] {
        agentd.signal(Signal::SIGTERM);
        let status = agentd.wait_exit(Duration::from_secs(10));
        println!("  {name}: exit {:?}", status.code());
    }
    drop(dns);
    println!("  named: stopped");
    println!(
        "\nDone in {:.1} s; namespaces and processes are removed on exit.",
        started.elapsed().as_secs_f64()
    );
}
