//! One broken config per rule: each must fail with the expected message at the expected line
//! and column, with a hint, and with exactly one error (no cascade of follow-up errors).

mod common;

use std::path::Path;

use isthmus_config::{parse_str, LoadOptions, Severity};

struct Case {
    name: &'static str,
    toml: &'static str,
    message: &'static str,
    line: u32,
    column: u32,
}

/// Lines 1-2.
macro_rules! agent {
    () => {
        "[agent]\nname = \"gw\"\n"
    };
}

/// 9 lines: a valid link "ic" (key file good.key, carries 10.2.0.0/16).
macro_rules! link_ic {
    () => {
        r#"[[link]]
name = "ic"
interface = "isth-ic"
private_key_file = "good.key"
listen = "192.0.2.1:51820"
peer_public_key = "sTW6GPMPj3UsueeSgjVcAqH7BCh92Kd0K7aReWmVlEA="
peer_endpoint = "192.0.2.2:51820"
allowed_ips = ["10.2.0.0/16", "10.255.0.1/32"]
addresses = ["10.255.0.0/31"]
"#
    };
}

/// 9 lines: a valid link "internet".
macro_rules! link_inet {
    () => {
        r#"[[link]]
name = "internet"
interface = "isth-inet"
private_key_file = "good.key"
listen = "198.51.100.1:51821"
peer_public_key = "sTW6GPMPj3UsueeSgjVcAqH7BCh92Kd0K7aReWmVlEA="
peer_endpoint = "203.0.113.1:51821"
allowed_ips = ["10.2.0.0/16", "10.255.1.1/32"]
addresses = ["10.255.1.0/31"]
"#
    };
}

/// 9 lines: link "ic" with the given allowed_ips and addresses (lines 10 and 11).
macro_rules! link_ic_nets {
    ($allowed_ips:literal, $addresses:literal) => {
        concat!(
            r#"[[link]]
name = "ic"
interface = "isth-ic"
private_key_file = "good.key"
listen = "192.0.2.1:51820"
peer_public_key = "sTW6GPMPj3UsueeSgjVcAqH7BCh92Kd0K7aReWmVlEA="
peer_endpoint = "192.0.2.2:51820"
"#,
            "allowed_ips = ",
            $allowed_ips,
            "\naddresses = ",
            $addresses,
            "\n"
        )
    };
}

/// 4 lines: a valid tcp probe "db".
macro_rules! probe_db {
    () => {
        "[[probe]]\nname = \"db\"\nkind = \"tcp\"\ntarget = \"10.2.1.10:1522\"\n"
    };
}

/// 5 lines: a valid rfc2136 provider "corp".
macro_rules! provider {
    () => {
        "[[dns_provider]]\nname = \"corp\"\nkind = \"rfc2136\"\nserver = \"10.1.0.53:53\"\nzone = \"example.internal.\"\n"
    };
}

/// 6 lines: a valid [oci] section with these values (tenancy line 3 col 11 after agent!, user
/// col 8, fingerprint col 15, key_file col 12).
macro_rules! oci {
    ($tenancy:literal, $user:literal, $fingerprint:literal, $key_file:literal) => {
        concat!(
            "[oci]\nregion = \"us-ashburn-1\"\ntenancy = \"",
            $tenancy,
            "\"\nuser = \"",
            $user,
            "\"\nfingerprint = \"",
            $fingerprint,
            "\"\nkey_file = \"",
            $key_file,
            "\"\n"
        )
    };
    () => {
        oci!(
            "ocid1.tenancy.oc1..aaaaaaaatenancy0",
            "ocid1.user.oc1..aaaaaaaauser0",
            "20:3b:97:13:55:1c:5b:0d:d3:37:d8:50:4e:c5:3a:34",
            "oci.pem"
        )
    };
}

/// 2 lines: a valid [aws] section.
macro_rules! aws {
    () => {
        "[aws]\nregion = \"us-east-1\"\n"
    };
}

/// 4 lines: route group "a" over link "ic" for 10.2.0.0/16.
macro_rules! group_a {
    () => {
        "[[route_group]]\nname = \"a\"\ndestinations = [\"10.2.0.0/16\"]\nlinks = [\"ic\"]\n"
    };
}

/// 3 lines: hook "page" with a valid command (line 5 after agent!).
macro_rules! hook {
    () => {
        "[[hook]]\nname = \"page\"\ncommand = [\"/usr/local/bin/notify\"]\n"
    };
}

const CASES: &[Case] = &[
    Case {
        name: "ha without etcd",
        toml: concat!(agent!(), "[ha]\npair = \"aws-prod\"\n"),
        message: "[ha]: missing required key `etcd`",
        line: 3,
        column: 1,
    },
    Case {
        name: "ha etcd over https",
        toml: concat!(
            agent!(),
            "[ha]\npair = \"p\"\netcd = [\"https://10.0.1.10:2379\"]\n"
        ),
        message: "TLS to etcd is not supported yet",
        line: 5,
        column: 9,
    },
    Case {
        name: "ha etcd member twice",
        toml: concat!(
            agent!(),
            "[ha]\npair = \"p\"\netcd = [\"http://10.0.1.10:2379\", \"http://10.0.1.10:2379\"]\n"
        ),
        message: "is listed twice",
        line: 5,
        column: 34,
    },
    Case {
        name: "ha lease in fractions of a second",
        toml: concat!(
            agent!(),
            "[ha]\npair = \"p\"\netcd = [\"http://10.0.1.10:2379\"]\nlease_ttl = \"2500ms\"\n"
        ),
        message: "lease_ttl 2500ms is not a whole number of seconds",
        line: 6,
        column: 13,
    },
    Case {
        name: "ha margin and write deadline leave no lease",
        toml: concat!(
            agent!(),
            "[ha]\npair = \"p\"\netcd = [\"http://10.0.1.10:2379\"]\nmargin = \"800ms\"\n"
        ),
        message: "margin 800ms plus write_deadline 500ms is more than half of lease_ttl 2s",
        line: 6,
        column: 10,
    },
    Case {
        name: "ha request timeout as long as the keepalive interval",
        toml: concat!(
            agent!(),
            "[ha]\npair = \"p\"\netcd = [\"http://10.0.1.10:2379\"]\nrequest_timeout = \"1s\"\n"
        ),
        message: "request_timeout 1s is not shorter than a third of lease_ttl 2s",
        line: 6,
        column: 19,
    },
    Case {
        name: "syntax error",
        toml: concat!(agent!(), "log_level = = \"info\"\n"),
        message: "invalid TOML: extra `=`",
        line: 3,
        column: 13,
    },
    Case {
        name: "unknown section",
        toml: concat!(agent!(), "[agnet]\nname = \"x\"\n"),
        message: "unknown section `agnet`",
        line: 3,
        column: 2,
    },
    Case {
        name: "unknown key at top level",
        toml: concat!("colour = \"blue\"\n", agent!()),
        message: "unknown section `colour`",
        line: 1,
        column: 1,
    },
    Case {
        name: "unknown key in [agent]",
        toml: concat!(agent!(), "nmae = \"x\"\n"),
        message: "[agent]: unknown key `nmae`",
        line: 3,
        column: 1,
    },
    Case {
        name: "unknown key in [[link]]",
        toml: concat!(agent!(), link_ic!(), "lisen = \"192.0.2.1:1\"\n"),
        message: "link \"ic\": unknown key `lisen`",
        line: 12,
        column: 1,
    },
    Case {
        name: "wrong type",
        toml: "[agent]\nname = 5\n",
        message: "[agent]: name: invalid type: integer `5`, expected a string",
        line: 2,
        column: 8,
    },
    Case {
        name: "wrong type in a list",
        toml: concat!(agent!(), "[metrics]\nlisten = [\"127.0.0.1:9477\"]\n"),
        message: "[metrics]: listen: invalid type: sequence",
        line: 4,
        column: 10,
    },
    Case {
        name: "missing required field",
        toml: concat!(agent!(), "[[probe]]\nname = \"db\"\ntarget = \"10.2.1.10:1522\"\n"),
        message: "probe \"db\": missing required key `kind`",
        line: 3,
        column: 1,
    },
    Case {
        name: "missing agent name",
        toml: "[agent]\nlog_level = \"debug\"\n",
        message: "[agent]: missing required key `name`",
        line: 1,
        column: 1,
    },
    Case {
        name: "bad duration",
        toml: concat!(agent!(), "[control]\nrequest_timeout = \"5 seconds\"\n"),
        message: "request_timeout: duration \"5 seconds\" has an unknown unit",
        line: 4,
        column: 19,
    },
    Case {
        name: "duration without unit",
        toml: concat!(agent!(), "[health]\nrtt_degraded = 150\n"),
        message: "rtt_degraded: duration 150 has no unit",
        line: 4,
        column: 16,
    },
    Case {
        name: "bad CIDR",
        toml: concat!(
            agent!(),
            link_ic!(),
            "[[route_group]]\nname = \"g\"\ndestinations = [\"10.2.0.0/33\"]\nlinks = [\"ic\"]\n"
        ),
        message: "destinations: \"33\" in \"10.2.0.0/33\" is not a prefix length",
        line: 14,
        column: 17,
    },
    Case {
        name: "host bits set in CIDR",
        toml: concat!(
            agent!(),
            link_ic!(),
            "[[route_group]]\nname = \"g\"\ndestinations = [\"10.2.0.0/16\", \"10.2.0.1/16\"]\nlinks = [\"ic\"]\n"
        ),
        message: "10.2.0.1/16 has host bits set",
        line: 14,
        column: 32,
    },
    Case {
        name: "interface name too long",
        toml: concat!(
            agent!(),
            r#"[[link]]
name = "ic"
interface = "isth-interconnect"
private_key_file = "good.key"
listen = "192.0.2.1:51820"
peer_public_key = "sTW6GPMPj3UsueeSgjVcAqH7BCh92Kd0K7aReWmVlEA="
peer_endpoint = "192.0.2.2:51820"
allowed_ips = ["10.2.0.0/16", "10.255.0.1/32"]
addresses = ["10.255.0.0/31"]
"#
        ),
        message: "is 17 bytes long; Linux allows at most 15",
        line: 5,
        column: 13,
    },
    Case {
        name: "duplicate link name",
        toml: concat!(
            agent!(),
            link_ic!(),
            r#"[[link]]
name = "ic"
interface = "isth-inet"
private_key_file = "good.key"
listen = "198.51.100.1:51821"
peer_public_key = "sTW6GPMPj3UsueeSgjVcAqH7BCh92Kd0K7aReWmVlEA="
peer_endpoint = "203.0.113.1:51821"
allowed_ips = ["10.2.0.0/16", "10.255.1.1/32"]
addresses = ["10.255.1.0/31"]
"#
        ),
        message: "link \"ic\" is defined twice",
        line: 13,
        column: 8,
    },
    Case {
        name: "duplicate interface",
        toml: concat!(
            agent!(),
            link_ic!(),
            r#"[[link]]
name = "internet"
interface = "isth-ic"
private_key_file = "good.key"
listen = "198.51.100.1:51821"
peer_public_key = "sTW6GPMPj3UsueeSgjVcAqH7BCh92Kd0K7aReWmVlEA="
peer_endpoint = "203.0.113.1:51821"
allowed_ips = ["10.2.0.0/16", "10.255.1.1/32"]
addresses = ["10.255.1.0/31"]
"#
        ),
        message: "interface \"isth-ic\" is already used by link \"ic\"",
        line: 14,
        column: 13,
    },
    Case {
        name: "duplicate listen address",
        toml: concat!(
            agent!(),
            link_ic!(),
            r#"[[link]]
name = "internet"
interface = "isth-inet"
private_key_file = "good.key"
listen = "0.0.0.0:51820"
peer_public_key = "sTW6GPMPj3UsueeSgjVcAqH7BCh92Kd0K7aReWmVlEA="
peer_endpoint = "203.0.113.1:51821"
allowed_ips = ["10.2.0.0/16", "10.255.1.1/32"]
addresses = ["10.255.1.0/31"]
"#
        ),
        message: "listen 0.0.0.0:51820 clashes with 192.0.2.1:51820 of link \"ic\"",
        line: 16,
        column: 10,
    },
    Case {
        name: "dangling link reference",
        toml: concat!(
            agent!(),
            link_ic!(),
            "[[route_group]]\nname = \"databases\"\ndestinations = [\"10.2.0.0/16\"]\nlinks = [\"ic\", \"backup\"]\n"
        ),
        message: "route_group \"databases\": link \"backup\" is not defined",
        line: 15,
        column: 16,
    },
    Case {
        name: "dangling probe reference",
        toml: concat!(
            agent!(),
            link_ic!(),
            probe_db!(),
            "[[route_group]]\nname = \"g\"\ndestinations = [\"10.2.0.0/16\"]\nlinks = [\"ic\"]\nchecks = [\"dbb\"]\n"
        ),
        message: "route_group \"g\": probe \"dbb\" is not defined",
        line: 20,
        column: 11,
    },
    Case {
        name: "dangling dns provider",
        toml: concat!(
            agent!(),
            "[[dns_group]]\nname = \"orders\"\nprovider = \"corp\"\nrecord = \"orders.example.internal.\"\nanswers = [{ value = \"10.2.1.10\" }]\n"
        ),
        message: "dns_group \"orders\": dns_provider \"corp\" is not defined",
        line: 5,
        column: 12,
    },
    Case {
        name: "dangling probe in a dns answer",
        toml: concat!(
            agent!(),
            provider!(),
            "[[dns_group]]\nname = \"orders\"\nprovider = \"corp\"\nrecord = \"orders.example.internal.\"\nanswers = [{ value = \"10.2.1.10\", checks = [\"db\"] }]\n"
        ),
        message: "dns_group \"orders\": probe \"db\" is not defined",
        line: 12,
        column: 45,
    },
    Case {
        name: "overlapping destinations across groups",
        toml: concat!(
            agent!(),
            link_ic!(),
            "[[route_group]]\nname = \"a\"\ndestinations = [\"10.2.0.0/16\"]\nlinks = [\"ic\"]\n",
            "[[route_group]]\nname = \"b\"\ndestinations = [\"10.2.3.0/24\"]\nlinks = [\"ic\"]\n"
        ),
        message: "destination 10.2.3.0/24 overlaps 10.2.0.0/16 of route_group \"a\"",
        line: 18,
        column: 17,
    },
    Case {
        name: "overlapping destinations within a group",
        toml: concat!(
            agent!(),
            link_ic!(),
            "[[route_group]]\nname = \"a\"\ndestinations = [\"10.2.0.0/16\", \"10.2.3.0/24\"]\nlinks = [\"ic\"]\n"
        ),
        message: "destination 10.2.3.0/24 overlaps 10.2.0.0/16 of the same group",
        line: 14,
        column: 32,
    },
    Case {
        name: "destination not carried by a link",
        toml: concat!(
            agent!(),
            link_ic!(),
            link_inet!(),
            "[[route_group]]\nname = \"g\"\ndestinations = [\"10.3.0.0/16\"]\nlinks = [\"ic\"]\n"
        ),
        message: "destination 10.3.0.0/16 is not carried by link \"ic\"",
        line: 23,
        column: 17,
    },
    Case {
        name: "wildcard listen on the probe port",
        toml: concat!(
            agent!(),
            "[health]\nprobe_port = 51820\n",
            r#"[[link]]
name = "ic"
interface = "isth-ic"
private_key_file = "good.key"
listen = "0.0.0.0:51820"
peer_public_key = "sTW6GPMPj3UsueeSgjVcAqH7BCh92Kd0K7aReWmVlEA="
peer_endpoint = "192.0.2.2:51820"
allowed_ips = ["10.2.0.0/16", "10.255.0.1/32"]
addresses = ["10.255.0.0/31"]
"#
        ),
        message: "link \"ic\": listen 0.0.0.0:51820 takes UDP port 51820 on every address, and the peer probes need it on the tunnel addresses ([health] probe_port)",
        line: 9,
        column: 10,
    },
    Case {
        name: "negative egress price",
        toml: concat!(agent!(), link_ic!(), "egress_price_per_gb = -0.01\n"),
        message: "egress_price_per_gb -0.01 must be a number of at least 0",
        line: 12,
        column: 23,
    },
    Case {
        name: "loss_degraded out of range",
        toml: concat!(agent!(), "[health]\nloss_degraded = 1.5\n"),
        message: "loss_degraded 1.5 must be greater than 0 and less than 1",
        line: 4,
        column: 17,
    },
    Case {
        name: "event_log_max_bytes too small",
        toml: concat!(agent!(), "event_log_max_bytes = 100\n"),
        message: "[agent]: event_log_max_bytes 100 is out of range 4096..=1073741824",
        line: 3,
        column: 23,
    },
    Case {
        name: "probe_port 0",
        toml: concat!(agent!(), "[health]\nprobe_port = 0\n"),
        message: "[health]: probe_port 0 is out of range 1..=65535",
        line: 4,
        column: 14,
    },
    Case {
        name: "peer_address not derivable from a /24",
        toml: concat!(
            agent!(),
            link_ic_nets!(r#"["10.2.0.0/16", "10.255.0.2/32"]"#, r#"["10.255.0.1/24"]"#)
        ),
        message: "link \"ic\": cannot derive peer_address from addresses 10.255.0.1/24",
        line: 11,
        column: 14,
    },
    Case {
        name: "peer_address not derivable from the network address of a /30",
        toml: concat!(
            agent!(),
            link_ic_nets!(r#"["10.2.0.0/16", "10.255.0.2/32"]"#, r#"["10.255.0.0/30"]"#)
        ),
        message: "10.255.0.0 is not one of the two host addresses of its /30",
        line: 11,
        column: 14,
    },
    Case {
        name: "peer_address outside the link's addresses",
        toml: concat!(agent!(), link_ic!(), "peer_address = \"10.255.7.1\"\n"),
        message: "link \"ic\": peer_address 10.255.7.1 is outside this link's addresses (10.255.0.0/31)",
        line: 12,
        column: 16,
    },
    Case {
        name: "peer_address of the other IP version",
        toml: concat!(agent!(), link_ic!(), "peer_address = \"fd00::1\"\n"),
        message: "peer_address fd00::1 is outside this link's addresses",
        line: 12,
        column: 16,
    },
    Case {
        name: "peer_address not an address",
        toml: concat!(agent!(), link_ic!(), "peer_address = \"10.255.0.1/31\"\n"),
        message: "link \"ic\": peer_address: ",
        line: 12,
        column: 16,
    },
    Case {
        name: "peer_address not in allowed_ips",
        toml: concat!(
            agent!(),
            link_ic_nets!(r#"["10.2.0.0/16"]"#, r#"["10.255.0.1/24"]"#),
            "peer_address = \"10.255.0.2\"\n"
        ),
        message: "link \"ic\": peer_address 10.255.0.2 is not covered by allowed_ips",
        line: 12,
        column: 16,
    },
    Case {
        name: "derived peer_address not in allowed_ips",
        toml: concat!(
            agent!(),
            link_ic_nets!(r#"["10.2.0.0/16"]"#, r#"["10.255.0.0/31"]"#)
        ),
        message: "peer_address 10.255.0.1 (derived from addresses 10.255.0.0/31) is not covered by allowed_ips",
        line: 10,
        column: 15,
    },
    Case {
        name: "peer_address equal to the link's own address",
        toml: concat!(agent!(), link_ic!(), "peer_address = \"10.255.0.0\"\n"),
        message: "link \"ic\": peer_address 10.255.0.0 is this gateway's own address (addresses 10.255.0.0/31)",
        line: 12,
        column: 16,
    },
    Case {
        name: "reuse_below not below suppress_above",
        toml: concat!(agent!(), "[health.damping]\nsuppress_above = 3000\nreuse_below = 3000\n"),
        message: "reuse_below (3000) must be less than suppress_above (3000)",
        line: 5,
        column: 15,
    },
    Case {
        name: "max_suppress shorter than half_life",
        toml: concat!(agent!(), "[health.damping]\nmax_suppress = \"30s\"\n"),
        message: "max_suppress (30s) is shorter than half_life (1m)",
        line: 4,
        column: 16,
    },
    Case {
        name: "timeout longer than interval",
        toml: concat!(agent!(), probe_db!(), "interval = \"1s\"\ntimeout = \"2s\"\n"),
        message: "probe \"db\": timeout (2s) is longer than interval (1s)",
        line: 8,
        column: 11,
    },
    Case {
        name: "interval below 50ms",
        toml: concat!(agent!(), probe_db!(), "interval = \"20ms\"\ntimeout = \"10ms\"\n"),
        message: "probe \"db\": interval 20ms is too short",
        line: 7,
        column: 12,
    },
    Case {
        name: "expect_status on a tcp probe",
        toml: concat!(agent!(), probe_db!(), "expect_status = 200\n"),
        message: "expect_status applies only to http and https probes, not tcp",
        line: 7,
        column: 17,
    },
    Case {
        name: "https URL on an http probe",
        toml: concat!(
            agent!(),
            "[[probe]]\nname = \"app\"\nkind = \"http\"\ntarget = \"https://10.1.20.15/health\"\n"
        ),
        message: "is an https URL but the probe kind is http",
        line: 6,
        column: 10,
    },
    Case {
        name: "expect_status out of range",
        toml: concat!(
            agent!(),
            "[[probe]]\nname = \"app\"\nkind = \"http\"\ntarget = \"http://10.1.20.15/health\"\nexpect_status = 999\n"
        ),
        message: "expect_status 999 is out of range 100..=599",
        line: 7,
        column: 17,
    },
    Case {
        name: "reserved_clients takes every slot",
        toml: concat!(agent!(), "[control]\nmax_clients = 8\nreserved_clients = 8\nread_group = 0\nadmin_group = 0\n"),
        message: "reserved_clients 8 leaves no slot of max_clients 8 for the read group",
        line: 5,
        column: 20,
    },
    Case {
        name: "head_timeout too short",
        toml: concat!(agent!(), "[control]\nhead_timeout = \"10ms\"\nread_group = 0\nadmin_group = 0\n"),
        message: "head_timeout 10ms is too short",
        line: 4,
        column: 16,
    },
    Case {
        name: "max_clients_per_user zero",
        toml: concat!(agent!(), "[control]\nmax_clients_per_user = 0\nread_group = 0\nadmin_group = 0\n"),
        message: "max_clients_per_user 0 is out of range 1..=1024",
        line: 4,
        column: 24,
    },
    Case {
        name: "socket_mode world-accessible",
        toml: concat!(agent!(), "[control]\nsocket_mode = \"0666\"\nread_group = 0\nadmin_group = 0\n"),
        message: "socket_mode 0666 gives others access to the control socket",
        line: 4,
        column: 15,
    },
    Case {
        name: "socket_mode as a TOML integer",
        toml: concat!(agent!(), "[control]\nsocket_mode = 660\nread_group = 0\nadmin_group = 0\n"),
        message: "socket_mode: 660 is an integer",
        line: 4,
        column: 15,
    },
    Case {
        name: "routes.protocol reserved",
        toml: concat!(agent!(), "[routes]\nprotocol = 4\n"),
        message: "protocol 4 is reserved by the kernel",
        line: 4,
        column: 12,
    },
    Case {
        name: "reserved routing table in a group",
        toml: concat!(
            agent!(),
            link_ic!(),
            "[[route_group]]\nname = \"g\"\ndestinations = [\"10.2.0.0/16\"]\nlinks = [\"ic\"]\ntable = 255\n"
        ),
        message: "table: 255 is the kernel's \"local\" table",
        line: 16,
        column: 9,
    },
    Case {
        name: "bad public key",
        toml: concat!(
            agent!(),
            r#"[[link]]
name = "ic"
interface = "isth-ic"
private_key_file = "good.key"
listen = "192.0.2.1:51820"
peer_public_key = "sTW6GPMPj3UsueeSgjVcAqH7BCh92Kd0K7aReWmVlE=="
peer_endpoint = "192.0.2.2:51820"
allowed_ips = ["10.2.0.0/16", "10.255.0.1/32"]
addresses = ["10.255.0.0/31"]
"#
        ),
        message: "peer_public_key: not a WireGuard public key",
        line: 8,
        column: 19,
    },
    Case {
        name: "bare IPv6 endpoint",
        toml: concat!(
            agent!(),
            r#"[[link]]
name = "ic"
interface = "isth-ic"
private_key_file = "good.key"
listen = "[2001:db8::1]:51820"
peer_public_key = "sTW6GPMPj3UsueeSgjVcAqH7BCh92Kd0K7aReWmVlEA="
peer_endpoint = "2001:db8::2:51820"
allowed_ips = ["10.2.0.0/16", "10.255.0.1/32"]
addresses = ["10.255.0.0/31"]
"#
        ),
        message: "an IPv6 address needs brackets before a port",
        line: 9,
        column: 17,
    },
    Case {
        name: "missing key file",
        toml: concat!(
            agent!(),
            r#"[[link]]
name = "ic"
interface = "isth-ic"
private_key_file = "absent.key"
listen = "192.0.2.1:51820"
peer_public_key = "sTW6GPMPj3UsueeSgjVcAqH7BCh92Kd0K7aReWmVlEA="
peer_endpoint = "192.0.2.2:51820"
allowed_ips = ["10.2.0.0/16", "10.255.0.1/32"]
addresses = ["10.255.0.0/31"]
"#
        ),
        message: "absent.key does not exist",
        line: 6,
        column: 20,
    },
    Case {
        name: "key file readable by others",
        toml: concat!(
            agent!(),
            r#"[[link]]
name = "ic"
interface = "isth-ic"
private_key_file = "open.key"
listen = "192.0.2.1:51820"
peer_public_key = "sTW6GPMPj3UsueeSgjVcAqH7BCh92Kd0K7aReWmVlEA="
peer_endpoint = "192.0.2.2:51820"
allowed_ips = ["10.2.0.0/16", "10.255.0.1/32"]
addresses = ["10.255.0.0/31"]
"#
        ),
        message: "open.key is accessible to group or others (mode 0644)",
        line: 6,
        column: 20,
    },
    Case {
        name: "preshared key not 32 bytes",
        toml: concat!(
            agent!(),
            r#"[[link]]
name = "ic"
interface = "isth-ic"
private_key_file = "good.key"
listen = "192.0.2.1:51820"
peer_public_key = "sTW6GPMPj3UsueeSgjVcAqH7BCh92Kd0K7aReWmVlEA="
preshared_key_file = "short.key"
peer_endpoint = "192.0.2.2:51820"
allowed_ips = ["10.2.0.0/16", "10.255.0.1/32"]
addresses = ["10.255.0.0/31"]
"#
        ),
        message: "short.key does not hold a WireGuard key (base64 of 32 bytes)",
        line: 9,
        column: 22,
    },
    Case {
        name: "mtu out of range",
        toml: concat!(agent!(), link_ic!(), "mtu = 576\n"),
        message: "link \"ic\": mtu 576 is out of range 1280..=9000",
        line: 12,
        column: 7,
    },
    Case {
        name: "mtu neither a number nor auto",
        toml: concat!(agent!(), link_ic!(), "mtu = \"jumbo\"\n"),
        message: "link \"ic\": mtu \"jumbo\" is neither a number nor \"auto\"",
        line: 12,
        column: 7,
    },
    Case {
        name: "mtu_max without mtu = auto",
        toml: concat!(agent!(), link_ic!(), "mtu = 1420\nmtu_max = 8920\n"),
        message: "link \"ic\": mtu_max applies only with mtu = \"auto\"",
        line: 13,
        column: 11,
    },
    Case {
        name: "mtu_min above mtu_max",
        toml: concat!(
            agent!(),
            link_ic!(),
            "mtu = \"auto\"\nmtu_min = 4000\nmtu_max = 1500\n"
        ),
        message: "link \"ic\": mtu_min 4000 is above mtu_max 1500",
        line: 14,
        column: 11,
    },
    Case {
        name: "mtu_min below IPv6's minimum",
        toml: concat!(agent!(), link_ic!(), "mtu = \"auto\"\nmtu_min = 1200\n"),
        message: "link \"ic\": mtu_min 1200 is out of range 1280..=9000",
        line: 13,
        column: 11,
    },
    Case {
        name: "persistent_keepalive zero",
        toml: concat!(agent!(), link_ic!(), "persistent_keepalive = \"0s\"\n"),
        message: "persistent_keepalive 0ms is too short",
        line: 12,
        column: 24,
    },
    Case {
        name: "[link] written with single brackets",
        toml: concat!(
            agent!(),
            r#"[link]
name = "ic"
interface = "isth-ic"
private_key_file = "good.key"
listen = "192.0.2.1:51820"
peer_public_key = "sTW6GPMPj3UsueeSgjVcAqH7BCh92Kd0K7aReWmVlEA="
peer_endpoint = "192.0.2.2:51820"
allowed_ips = ["10.2.0.0/16", "10.255.0.1/32"]
addresses = ["10.255.0.0/31"]
"#
        ),
        message: "[link] is a list: each entry needs double brackets",
        line: 3,
        column: 2,
    },
    Case {
        name: "link listed twice in a group",
        toml: concat!(
            agent!(),
            link_ic!(),
            "[[route_group]]\nname = \"g\"\ndestinations = [\"10.2.0.0/16\"]\nlinks = [\"ic\", \"ic\"]\n"
        ),
        message: "links: link \"ic\" is listed twice",
        line: 15,
        column: 16,
    },
    Case {
        name: "bad answer value for type A",
        toml: concat!(
            agent!(),
            provider!(),
            "[[dns_group]]\nname = \"orders\"\nprovider = \"corp\"\nrecord = \"orders.example.internal.\"\nanswers = [{ value = \"10.2.1.10\" }, { value = \"fd00::10\" }]\n"
        ),
        message: "answers #2: \"fd00::10\" is an IPv6 address but the record type is A",
        line: 12,
        column: 47,
    },
    Case {
        name: "unknown key in a dns answer",
        toml: concat!(
            agent!(),
            provider!(),
            "[[dns_group]]\nname = \"orders\"\nprovider = \"corp\"\nrecord = \"orders.example.internal.\"\nanswers = [{ value = \"10.2.1.10\", check = [] }]\n"
        ),
        message: "dns_group \"orders\": unknown key `check`",
        line: 12,
        column: 35,
    },
    Case {
        name: "dns record outside the provider's zone",
        toml: concat!(
            agent!(),
            provider!(),
            "[[dns_group]]\nname = \"orders\"\nprovider = \"corp\"\nrecord = \"orders.example.com.\"\nanswers = [{ value = \"10.2.1.10\" }]\n"
        ),
        message: "record \"orders.example.com.\" is outside zone \"example.internal.\"",
        line: 11,
        column: 10,
    },
    Case {
        name: "rfc2136 provider without server",
        toml: concat!(
            agent!(),
            "[[dns_provider]]\nname = \"corp\"\nkind = \"rfc2136\"\nzone = \"example.internal.\"\n"
        ),
        message: "dns_provider \"corp\": missing required key `server`",
        line: 3,
        column: 1,
    },
    Case {
        name: "route53 key on an rfc2136 provider",
        toml: concat!(agent!(), provider!(), "hosted_zone_id = \"Z0123\"\n"),
        message: "hosted_zone_id applies only to route53 providers",
        line: 8,
        column: 18,
    },
    Case {
        name: "view_id on an rfc2136 provider",
        toml: concat!(agent!(), provider!(), "view_id = \"ocid1.dnsview.oc1.iad.aaaa\"\n"),
        message: "view_id applies only to oci providers",
        line: 8,
        column: 11,
    },
    Case {
        name: "timeout on an rfc2136 provider",
        toml: concat!(agent!(), provider!(), "timeout = \"5s\"\n"),
        message: "timeout applies only to exec providers",
        line: 8,
        column: 11,
    },
    Case {
        name: "bad OCID",
        toml: concat!(
            agent!(),
            oci!(
                "ocid1.tenancy.oc1",
                "ocid1.user.oc1..aaaaaaaauser0",
                "20:3b:97:13:55:1c:5b:0d:d3:37:d8:50:4e:c5:3a:34",
                "oci.pem"
            )
        ),
        message: "[oci]: tenancy: \"ocid1.tenancy.oc1\" is not a valid OCID",
        line: 5,
        column: 11,
    },
    Case {
        name: "OCID of the wrong type",
        toml: concat!(
            agent!(),
            oci!(
                "ocid1.tenancy.oc1..aaaaaaaatenancy0",
                "ocid1.tenancy.oc1..aaaaaaaatenancy0",
                "20:3b:97:13:55:1c:5b:0d:d3:37:d8:50:4e:c5:3a:34",
                "oci.pem"
            )
        ),
        message: "[oci]: user: \"ocid1.tenancy.oc1..aaaaaaaatenancy0\" is the OCID of a tenancy, not of a user",
        line: 6,
        column: 8,
    },
    Case {
        name: "bad fingerprint",
        toml: concat!(
            agent!(),
            oci!(
                "ocid1.tenancy.oc1..aaaaaaaatenancy0",
                "ocid1.user.oc1..aaaaaaaauser0",
                "20:3b:97:13:55:1c:5b:0d:d3:37:d8:50:4e:c5:3a",
                "oci.pem"
            )
        ),
        message: "[oci]: fingerprint: \"20:3b:97:13:55:1c:5b:0d:d3:37:d8:50:4e:c5:3a\" is not a key fingerprint",
        line: 7,
        column: 15,
    },
    Case {
        name: "OCI API key readable by others",
        toml: concat!(
            agent!(),
            oci!(
                "ocid1.tenancy.oc1..aaaaaaaatenancy0",
                "ocid1.user.oc1..aaaaaaaauser0",
                "20:3b:97:13:55:1c:5b:0d:d3:37:d8:50:4e:c5:3a:34",
                "open-oci.pem"
            )
        ),
        message: "open-oci.pem is accessible to group or others (mode 0644)",
        line: 8,
        column: 12,
    },
    Case {
        name: "encrypted OCI API key",
        toml: concat!(
            agent!(),
            oci!(
                "ocid1.tenancy.oc1..aaaaaaaatenancy0",
                "ocid1.user.oc1..aaaaaaaauser0",
                "20:3b:97:13:55:1c:5b:0d:d3:37:d8:50:4e:c5:3a:34",
                "encrypted-oci.pem"
            )
        ),
        message: "encrypted-oci.pem holds an encrypted private key",
        line: 8,
        column: 12,
    },
    Case {
        name: "[aws] without region",
        toml: concat!(agent!(), "[aws]\nprofile = \"default\"\n"),
        message: "[aws]: missing required key `region`",
        line: 3,
        column: 1,
    },
    Case {
        name: "ec2_endpoint not a URL",
        toml: concat!(agent!(), aws!(), "ec2_endpoint = \"localhost:5055\"\n"),
        message: "[aws]: ec2_endpoint: \"localhost:5055\" does not start with https://",
        line: 5,
        column: 16,
    },
    Case {
        name: "retry_max shorter than retry_initial",
        toml: concat!(agent!(), "[actions]\nretry_initial = \"1m\"\nretry_max = \"30s\"\n"),
        message: "[actions]: retry_max (30s) is shorter than retry_initial (1m)",
        line: 5,
        column: 13,
    },
    Case {
        name: "exec command not absolute",
        toml: concat!(
            agent!(),
            "[[dns_provider]]\nname = \"script\"\nkind = \"exec\"\ncommand = [\"publish-dns\", \"--zone\", \"x\"]\n"
        ),
        message: "dns_provider \"script\": command: the program \"publish-dns\" is not an absolute path",
        line: 6,
        column: 12,
    },
    Case {
        name: "exec command empty",
        toml: concat!(
            agent!(),
            "[[dns_provider]]\nname = \"script\"\nkind = \"exec\"\ncommand = []\n"
        ),
        message: "dns_provider \"script\": command is empty",
        line: 6,
        column: 11,
    },
    Case {
        name: "oci provider without [oci]",
        toml: concat!(
            agent!(),
            "[[dns_provider]]\nname = \"oci-dns\"\nkind = \"oci\"\nzone = \"example.internal\"\n"
        ),
        message: "dns_provider \"oci-dns\": an oci provider needs an [oci] section",
        line: 5,
        column: 8,
    },
    Case {
        name: "tsig key file with a syntax error",
        toml: concat!(agent!(), provider!(), "tsig_key_file = \"broken-tsig.key\"\n"),
        message: "broken-tsig.key:3:2: expected `;` after the algorithm, found a word",
        line: 8,
        column: 17,
    },
    Case {
        name: "tsig key name differs from the key file's",
        toml: concat!(
            agent!(),
            provider!(),
            "tsig_key_file = \"tsig.key\"\ntsig_key_name = \"other-key\"\n"
        ),
        message: "tsig_key_name \"other-key.\" is not the name of the key in",
        line: 9,
        column: 17,
    },
    Case {
        name: "bare tsig secret without tsig_key_name",
        toml: concat!(agent!(), provider!(), "tsig_key_file = \"bare-tsig.key\"\n"),
        message: "bare-tsig.key holds a bare secret, which does not name the key",
        line: 8,
        column: 17,
    },
    Case {
        name: "tsig algorithm differs from the key file's",
        toml: concat!(
            agent!(),
            provider!(),
            "tsig_key_file = \"tsig.key\"\ntsig_algorithm = \"hmac-sha512\"\n"
        ),
        message: "tsig_algorithm hmac-sha512 differs from the algorithm of the key in",
        line: 9,
        column: 18,
    },
    Case {
        name: "tsig_key_name without a key file",
        toml: concat!(agent!(), provider!(), "tsig_key_name = \"failover-key\"\n"),
        message: "tsig_key_name without tsig_key_file",
        line: 8,
        column: 17,
    },
    Case {
        name: "dns group hold_down without unit",
        toml: concat!(
            agent!(),
            provider!(),
            "[[dns_group]]\nname = \"orders\"\nprovider = \"corp\"\nrecord = \"orders.example.internal.\"\nanswers = [{ value = \"10.2.1.10\" }]\nhold_down = \"5\"\n"
        ),
        message: "dns_group \"orders\": hold_down: duration \"5\" has no unit",
        line: 13,
        column: 13,
    },
    Case {
        name: "aws_route_tables without [aws]",
        toml: concat!(
            agent!(),
            link_ic!(),
            group_a!(),
            "aws_route_tables = [{ id = \"rtb-0a1b2c3d\", target = \"eni-0123456789abcdef0\", fallback = \"none\" }]\n"
        ),
        message: "route_group \"a\": aws_route_tables needs an [aws] section",
        line: 16,
        column: 20,
    },
    Case {
        name: "oci_route_tables without [oci]",
        toml: concat!(
            agent!(),
            link_ic!(),
            group_a!(),
            "oci_route_tables = [{ id = \"ocid1.routetable.oc1.iad.aaaa\", target = \"ocid1.privateip.oc1.iad.aaaa\", fallback = \"none\" }]\n"
        ),
        message: "route_group \"a\": oci_route_tables needs an [oci] section",
        line: 16,
        column: 20,
    },
    Case {
        name: "bad route table id",
        toml: concat!(
            agent!(),
            aws!(),
            link_ic!(),
            group_a!(),
            "aws_route_tables = [{ id = \"rtb-xyz\", target = \"eni-0123456789abcdef0\", fallback = \"none\" }]\n"
        ),
        message: "route_group \"a\": aws_route_tables #1 id: \"rtb-xyz\" is not a valid AWS id",
        line: 18,
        column: 28,
    },
    Case {
        name: "route table without fallback",
        toml: concat!(
            agent!(),
            aws!(),
            link_ic!(),
            group_a!(),
            "aws_route_tables = [{ id = \"rtb-0a1b2c3d\", target = \"eni-0123456789abcdef0\" }]\n"
        ),
        message: "route_group \"a\": aws_route_tables #1 has no `fallback`",
        line: 18,
        column: 21,
    },
    Case {
        name: "OCI route table fallback of the wrong type",
        toml: concat!(
            agent!(),
            oci!(),
            link_ic!(),
            group_a!(),
            "oci_route_tables = [{ id = \"ocid1.routetable.oc1.iad.aaaa\", target = \"ocid1.privateip.oc1.iad.aaaa\", fallback = \"ocid1.vcn.oc1.iad.aaaa\" }]\n"
        ),
        message: "oci_route_tables #1 fallback: \"ocid1.vcn.oc1.iad.aaaa\" is the OCID of a vcn",
        line: 22,
        column: 113,
    },
    Case {
        name: "the same route table and destination in two groups",
        toml: concat!(
            agent!(),
            aws!(),
            link_ic!(),
            group_a!(),
            "aws_route_tables = [{ id = \"rtb-0a1b2c3d\", target = \"eni-0123456789abcdef0\", fallback = \"none\" }]\n",
            "[[route_group]]\nname = \"b\"\ndestinations = [\"10.2.0.0/16\"]\nlinks = [\"ic\"]\ntable = 100\n",
            "aws_route_tables = [{ id = \"rtb-0a1b2c3d\", target = \"i-0a1b2c3d\", fallback = \"none\" }]\n"
        ),
        message: "route_group \"b\": route table \"rtb-0a1b2c3d\" is already steered for 10.2.0.0/16 by route_group \"a\" (line 18)",
        line: 24,
        column: 28,
    },
    Case {
        name: "hook without command",
        toml: concat!(agent!(), "[[hook]]\nname = \"page\"\n"),
        message: "hook \"page\": missing required key `command`",
        line: 3,
        column: 1,
    },
    Case {
        name: "unknown hook group",
        toml: concat!(agent!(), hook!(), "groups = [\"orders-db\"]\n"),
        message: "hook \"page\": group \"orders-db\" is not defined",
        line: 6,
        column: 11,
    },
    Case {
        name: "hook environment in agentd's namespace",
        toml: concat!(agent!(), hook!(), "environment = { ISTHMUS_GROUP = \"x\" }\n"),
        message: "hook \"page\": environment: \"ISTHMUS_GROUP\" starts with ISTHMUS_",
        line: 6,
        column: 17,
    },
    Case {
        name: "hook timeout too long",
        toml: concat!(agent!(), hook!(), "timeout = \"11m\"\n"),
        message: "hook \"page\": timeout 11m is too long",
        line: 6,
        column: 11,
    },
    Case {
        name: "hook retries out of range",
        toml: concat!(agent!(), hook!(), "retries = 11\n"),
        message: "hook \"page\": retries 11 is out of range 0..=10",
        line: 6,
        column: 11,
    },
];

#[test]
fn every_broken_config_fails_at_the_right_place_with_a_hint() {
    let (dir, _) = common::key_dir();
    let path = dir.path().join("agentd.toml");
    let mut failures = Vec::new();
    for case in CASES {
        match check(case, &path) {
            Ok(()) => {}
            Err(why) => failures.push(format!("{}: {why}", case.name)),
        }
    }
    assert!(CASES.len() >= 25);
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

fn check(case: &Case, path: &Path) -> Result<(), String> {
    let report = match parse_str(case.toml, path, &LoadOptions::default()) {
        Ok(_) => return Err("loaded without error".into()),
        Err(report) => report,
    };
    let rendered = report.render();
    let Some(d) = report
        .diagnostics
        .iter()
        .find(|d| d.message.contains(case.message))
    else {
        return Err(format!(
            "no message contains {:?}:\n{rendered}",
            case.message
        ));
    };
    if d.severity != Severity::Error {
        return Err(format!("not an error:\n{d}"));
    }
    if (d.line, d.column) != (Some(case.line), Some(case.column)) {
        return Err(format!(
            "at {:?}:{:?}, expected {}:{}:\n{d}",
            d.line, d.column, case.line, case.column
        ));
    }
    if d.hint.as_deref().is_none_or(str::is_empty) {
        return Err(format!("no hint:\n{d}"));
    }
    if report.error_count() != 1 {
        return Err(format!(
            "{} errors, expected exactly this one:\n{rendered}",
            report.error_count()
        ));
    }
    Ok(())
}

#[test]
fn tsig_key_file_errors_never_show_the_secret() {
    let (dir, _) = common::key_dir();
    let path = dir.path().join("agentd.toml");
    let secret = common::tsig_secret();
    for file in ["broken-tsig.key", "bare-tsig.key"] {
        for extra in ["", "tsig_key_name = \"other-key\"\n"] {
            let text = format!(
                "[agent]\nname = \"gw\"\n[[dns_provider]]\nname = \"corp\"\nkind = \"rfc2136\"\n\
                 server = \"10.1.0.53:53\"\nzone = \"example.internal.\"\n\
                 tsig_key_file = \"{file}\"\ntsig_algorithm = \"hmac-sha512\"\n{extra}"
            );
            let Err(report) = parse_str(&text, &path, &LoadOptions::default()) else {
                // A bare secret with a name and an algorithm is a valid key.
                assert_eq!((file, extra.is_empty()), ("bare-tsig.key", false));
                continue;
            };
            let rendered = report.render();
            let json = serde_json::to_string(&report).unwrap();
            for window in secret.as_bytes().windows(6) {
                let piece = std::str::from_utf8(window).unwrap();
                assert!(!rendered.contains(piece), "{piece:?} leaked:\n{rendered}");
                assert!(!json.contains(piece), "{piece:?} leaked:\n{json}");
            }
        }
    }
}

/// A key pasted into the config itself (under a key of its own, or where its file's path
/// belongs, or as an AWS secret where the credentials file goes) is refused without being
/// repeated: not in a message, a hint or the line shown.
#[test]
fn a_secret_pasted_into_the_config_is_never_shown() {
    let (dir, _) = common::key_dir();
    let path = dir.path().join("agentd.toml");
    let key = "sGmCGSIGMcfR6vYHcRs3ZWvucxpbDj+gaTjB8d2o8n4=";
    let aws = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    let text = format!(
        "[agent]\nname = \"gw\"\n[[link]]\nname = \"ic\"\ninterface = \"ic0\"\n\
         private_key_file = \"{key}\"\nprivate_key = \"{key}\"\npsk = {key}\n\
         listen = \"192.0.2.1:51820\"\n\
         peer_public_key = \"xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\"\n\
         peer_endpoint = \"192.0.2.2:51820\"\nallowed_ips = [\"10.2.0.0/16\", \"10.255.0.1/32\"]\n\
         addresses = [\"10.255.0.0/31\"]\n\
         [aws]\nregion = \"eu-central-1\"\ncredentials_file = \"{aws}\"\n\
         aws_secret_access_key = \"{aws}\"\n"
    );
    let report = parse_str(&text, &path, &LoadOptions::default()).unwrap_err();
    let rendered = report.render();
    let json = serde_json::to_string(&report).unwrap();
    for secret in [key, aws] {
        for window in secret.as_bytes().windows(8) {
            let piece = std::str::from_utf8(window).unwrap();
            assert!(!rendered.contains(piece), "{piece:?} leaked:\n{rendered}");
            assert!(!json.contains(piece), "{piece:?} leaked:\n{json}");
        }
    }
    // Each is still reported at its place, the key named.
    for (line, what) in [
        (6, "looks like a key itself"),
        (7, "unknown key `private_key`"),
        (8, "unknown key `psk`"),
        (16, "looks like a key or secret itself"),
        (17, "unknown key `aws_secret_access_key`"),
    ] {
        assert!(
            report
                .errors()
                .any(|d| d.line == Some(line) && d.message.contains(what)),
            "no error {what:?} at line {line}:\n{rendered}"
        );
    }
}

#[test]
fn a_file_without_agent_section_says_so_without_a_line() {
    let report = parse_str(
        "",
        Path::new("/etc/isthmus/agentd.toml"),
        &LoadOptions::default(),
    )
    .unwrap_err();
    let d = report.errors().next().unwrap();
    assert_eq!(d.message, "missing section [agent]");
    assert_eq!((d.line, d.column), (None, None));
    assert!(d.hint.is_some());
}

#[test]
fn an_unreadable_file_is_one_diagnostic_without_a_line() {
    let report = isthmus_config::load_file(
        Path::new("/nonexistent/isthmus/agentd.toml"),
        &LoadOptions::default(),
    )
    .unwrap_err();
    assert_eq!(report.diagnostics.len(), 1);
    let d = &report.diagnostics[0];
    assert_eq!(d.line, None);
    assert!(
        d.message.contains("/nonexistent/isthmus/agentd.toml"),
        "{d}"
    );
    assert!(d.hint.is_some());
}

#[test]
fn mtu_is_a_number_or_auto_with_bounds() {
    let (dir, _) = common::key_dir();
    let path = dir.path().join("agentd.toml");
    let link = |extra: &str| {
        let toml = format!("{}{}{extra}", agent!(), link_ic!());
        parse_str(&toml, &path, &LoadOptions::default())
            .map(|c| {
                let l = &c.config.links[0];
                (l.mtu, l.path_mtu.map(|b| (b.min, b.max)), l.tun_mtu())
            })
            .map_err(|r| r.render())
    };
    assert_eq!(link(""), Ok((1420, None, 1420)));
    assert_eq!(link("mtu = 9000\n"), Ok((9000, None, 9000)));
    // Auto: the TUN runs at the ceiling; the floor is what is used until a probe confirms more.
    assert_eq!(
        link("mtu = \"auto\"\n"),
        Ok((1280, Some((1280, 8920)), 8920))
    );
    assert_eq!(
        link("mtu = \"auto\"\nmtu_min = 1380\nmtu_max = 1420\n"),
        Ok((1380, Some((1380, 1420)), 1420))
    );
}
