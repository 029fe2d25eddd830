//! The README's first command: two gateways, one per cloud, each running agentd from the
//! shipped example config in its own network namespace; netctl shows them, a broken reload is
//! refused while the daemon runs on, and both stop cleanly. Everything it creates is removed.

use std::time::Duration;

use isthmus_tests::{netctl, Agentd, Fixture, Netns};
use nix::sys::signal::Signal;

fn say(text: &str) {
    println!("\n\x1b[1m== {text}\x1b[0m");
}

fn show(cmd: &str, out: &isthmus_tests::Output) {
    println!("$ {cmd}");
    print!("{}", out.stdout);
    eprint!("{}", out.stderr);
    println!("(exit {})", out.code);
}

fn main() {
    isthmus_tests::require_root();
    say("Two gateways, each in its own network namespace, each running agentd from config/");
    let aws_ns = Netns::new("aws");
    let oci_ns = Netns::new("oci");
    let aws = Fixture::example("aws-gateway.toml");
    let oci = Fixture::example("oci-gateway.toml");
    // The shipped configs name the groups that systemd-sysusers creates on a real gateway;
    // this machine has none, so let the root group read and write here.
    for fx in [&aws, &oci] {
        fx.set("control", "read_group", "root".into());
        fx.set("control", "admin_group", "root".into());
    }
    let mut aws_agentd = Agentd::start(&aws, &aws_ns);
    let mut oci_agentd = Agentd::start(&oci, &oci_ns);
    println!(
        "agentd pid {} in {} (AWS), pid {} in {} (OCI); both told systemd READY=1",
        aws_agentd.pid(),
        aws_ns.name(),
        oci_agentd.pid(),
        oci_ns.name()
    );

    say("netctl status on the AWS gateway");
    show("netctl status", &netctl(&aws.socket(), &["status"]));
    say("netctl status on the OCI gateway");
    show("netctl status", &netctl(&oci.socket(), &["status"]));

    say(
        "An operator saves a broken config and reloads: rejected with line:column, old config kept",
    );
    let good = std::fs::read_to_string(aws.config_path()).unwrap();
    aws.write_config(&good.replacen("mtu = ", "mtu = \"jumbo\" # ", 1));
    show("netctl reload", &netctl(&aws.socket(), &["reload"]));
    let status = netctl(&aws.socket(), &["--json", "status"]).json();
    println!(
        "agentd still running: {} (reloads rejected: {}, config {} still active)",
        aws_agentd.is_running(),
        status["config"]["reloads_rejected"],
        status["config"]["fingerprint"]
    );

    say("The fixed config reloads");
    aws.write_config(&good);
    show("netctl reload", &netctl(&aws.socket(), &["reload"]));

    say("SIGTERM: both stop cleanly and remove their sockets");
    for (name, agentd, fx) in [
        ("aws", &mut aws_agentd, &aws),
        ("oci", &mut oci_agentd, &oci),
    ] {
        agentd.signal(Signal::SIGTERM);
        let status = agentd.wait_exit(Duration::from_secs(10));
        println!(
            "{name}: exit {:?}, socket still there: {}",
            status.code(),
            fx.socket().exists()
        );
    }
    println!("\nTunnels, routes and failover come with the next issues; see docs/.");
}
