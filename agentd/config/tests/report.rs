//! How problems are reported: all at once, warnings apart from errors, rendered like rustc,
//! carried as JSON, and never with key material in them.

mod common;

use std::path::Path;

use isthmus_config::{parse_str, Diagnostic, LoadOptions, Report, Severity};

#[test]
fn independent_errors_are_all_reported_in_one_report() {
    let (dir, _) = common::key_dir();
    let text = r#"[agent]
name = "gw"
log_level = = "info"

[[link]]
name = "ic"
interface = "isth-ic"
private_key_file = "good.key"
listen = "192.0.2.1:51820"
peer_public_key = "sTW6GPMPj3UsueeSgjVcAqH7BCh92Kd0K7aReWmVlEA="
peer_endpoint = "192.0.2.2:51820"
allowed_ips = ["10.2.0.1/16"]
addresses = ["10.255.0.0/31"]
mtu = 99999

[[link]]
name = "internet"
interface = "isth-inet"
private_key_file = "good.key"
listen = "198.51.100.1:51821"
peer_public_key = "sTW6GPMPj3UsueeSgjVcAqH7BCh92Kd0K7aReWmVlEA="
peer_endpoint = "203.0.113.1"
allowed_ips = ["10.2.0.0/16", "10.255.1.1/32"]
addresses = ["10.255.1.0/31"]
persistent_keepalive = 25

[[route_group]]
name = "databases"
destinations = ["10.2.0.0/16"]
links = ["internet", "backup"]
"#;
    let report = parse_str(
        text,
        &dir.path().join("agentd.toml"),
        &LoadOptions::default(),
    )
    .unwrap_err();
    let expected = [
        (3, "invalid TOML"),
        (12, "10.2.0.1/16 has host bits set"),
        (14, "mtu 99999 is out of range"),
        (22, "\"203.0.113.1\" has no port"),
        (25, "persistent_keepalive: duration 25 has no unit"),
        (30, "link \"backup\" is not defined"),
    ];
    for (line, message) in expected {
        assert!(
            report
                .errors()
                .any(|d| d.line == Some(line) && d.message.contains(message)),
            "missing line {line}: {message}\n{report}"
        );
    }
    assert_eq!(report.error_count(), expected.len(), "{report}");
    // In file order.
    let lines: Vec<_> = report.errors().map(|d| d.line).collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted);
}

#[test]
fn a_peer_endpoint_inside_allowed_ips_is_a_warning_and_the_config_loads() {
    let (dir, _) = common::key_dir();
    let text = r#"[agent]
name = "gw"
[[link]]
name = "ic"
interface = "isth-ic"
private_key_file = "good.key"
listen = "192.0.2.1:51820"
peer_public_key = "sTW6GPMPj3UsueeSgjVcAqH7BCh92Kd0K7aReWmVlEA="
peer_endpoint = "10.2.0.5:51820"
allowed_ips = ["10.2.0.0/16", "10.255.0.1/32"]
addresses = ["10.255.0.0/31"]
"#;
    let loaded = parse_str(
        text,
        &dir.path().join("agentd.toml"),
        &LoadOptions::default(),
    )
    .unwrap_or_else(|r| panic!("{r}"));
    let w = loaded
        .warnings
        .iter()
        .find(|w| {
            w.message
                .contains("peer_endpoint 10.2.0.5 lies inside allowed_ips 10.2.0.0/16")
        })
        .unwrap_or_else(|| panic!("{:#?}", loaded.warnings));
    assert_eq!(w.severity, Severity::Warning);
    assert_eq!((w.line, w.column), (Some(9), Some(17)));
    assert!(w.hint.as_deref().unwrap().contains("routing loop"));
    assert_eq!(loaded.config.links.len(), 1);
}

#[test]
fn warnings_travel_with_errors_in_a_report() {
    let text =
        "[agent]\nname = \"gw\"\n[metrics]\nlisten = \"0.0.0.0:9477\"\n[routes]\nprotocol = 2\n";
    let report = parse_str(
        text,
        Path::new("/etc/isthmus/agentd.toml"),
        &LoadOptions::default(),
    )
    .unwrap_err();
    assert_eq!(report.error_count(), 1);
    assert!(report
        .warnings()
        .any(|w| w.message.contains("exposed beyond localhost")));
}

fn example_diagnostic() -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        file: "/etc/isthmus/agentd.toml".into(),
        line: Some(31),
        // "backup" starts at column 21 of line 31 (the carets and the message point there).
        column: Some(21),
        width: 8,
        message: "route_group \"databases\": link \"backup\" is not defined".into(),
        hint: Some(
            "define a [[link]] named \"backup\", or remove it; defined links: interconnect, internet"
                .into(),
        ),
        source_line: Some("links = [\"primary\", \"backup\"]".into()),
        source_offset: 0,
    }
}

#[test]
fn a_diagnostic_renders_like_rustc() {
    let expected = r#"error: route_group "databases": link "backup" is not defined
  --> /etc/isthmus/agentd.toml:31:21
   |
31 | links = ["primary", "backup"]
   |                     ^^^^^^^^
   = hint: define a [[link]] named "backup", or remove it; defined links: interconnect, internet"#;
    assert_eq!(example_diagnostic().to_string(), expected);
}

#[test]
fn a_parsed_diagnostic_renders_the_same_way() {
    let mut text = String::from("[agent]\nname = \"gw\"\n");
    text.push_str(&"\n".repeat(8));
    text.push_str("[[link]]\nname = \"ic\"\n");
    text.push_str("interface = \"isth-ic\"\nprivate_key_file = \"/nonexistent/k\"\n");
    text.push_str("listen = \"192.0.2.1:51820\"\npeer_public_key = \"x\"\n");
    text.push_str(
        "peer_endpoint = \"192.0.2.2:51820\"\nallowed_ips = [\"10.2.0.0/16\", \"10.255.0.1/32\"]\n",
    );
    text.push_str("addresses = [\"10.255.0.0/31\"]\n");
    text.push_str("[[route_group]]\nname = \"databases\"\ndestinations = [\"10.2.0.0/16\"]\n");
    text.push_str("links = [\"ic\", \"backup\"]\n");
    let report = parse_str(
        &text,
        Path::new("/etc/isthmus/agentd.toml"),
        &LoadOptions::default(),
    )
    .unwrap_err();
    let d = report
        .errors()
        .find(|d| d.message.contains("backup"))
        .unwrap();
    let expected = r#"error: route_group "databases": link "backup" is not defined
  --> /etc/isthmus/agentd.toml:23:16
   |
23 | links = ["ic", "backup"]
   |                ^^^^^^^^
   = hint: define a [[link]] named "backup", or remove it; defined links: ic"#;
    assert_eq!(d.to_string(), expected);
}

#[test]
fn a_diagnostic_without_a_line_renders_file_and_hint() {
    let d = Diagnostic {
        line: None,
        column: None,
        width: 1,
        source_line: None,
        ..example_diagnostic()
    };
    let expected = "error: route_group \"databases\": link \"backup\" is not defined\n \
                    --> /etc/isthmus/agentd.toml\n  = hint: define a [[link]] named \"backup\", \
                    or remove it; defined links: interconnect, internet";
    assert_eq!(d.to_string(), expected);
}

#[test]
fn a_report_renders_every_diagnostic_and_a_summary() {
    let warning = Diagnostic {
        severity: Severity::Warning,
        message: "something to look at".into(),
        ..example_diagnostic()
    };
    let report = Report::new(vec![example_diagnostic(), example_diagnostic(), warning]);
    let rendered = report.render();
    assert_eq!(rendered.matches("error: ").count(), 2);
    assert_eq!(rendered.matches("warning: ").count(), 1);
    assert!(rendered.ends_with("\n\n2 errors, 1 warning in /etc/isthmus/agentd.toml\n"));
    assert_eq!(report.to_string(), rendered);
    let one = Report::new(vec![example_diagnostic()]);
    assert!(one
        .render()
        .ends_with("\n\n1 error in /etc/isthmus/agentd.toml\n"));
}

#[test]
fn diagnostics_survive_a_json_round_trip() {
    let d = example_diagnostic();
    let json = serde_json::to_string(&d).unwrap();
    assert!(json.contains(r#""severity":"error""#), "{json}");
    assert!(json.contains(r#""line":31"#), "{json}");
    let back: Diagnostic = serde_json::from_str(&json).unwrap();
    assert_eq!(back, d);
    let warning: Diagnostic = serde_json::from_str(
        r#"{"severity":"warning","file":"f","line":null,"column":null,"width":1,
            "message":"m","hint":null,"source_line":null}"#,
    )
    .unwrap();
    assert_eq!(warning.severity, Severity::Warning);
}

#[test]
fn no_message_contains_key_material() {
    let (dir, short) = common::key_dir();
    let private_content = short.clone();
    common::write_file(
        dir.path(),
        "private.key",
        &format!("  {private_content}\n"),
        0o600,
    );
    // Not base64 at all: base64's own error would quote the offending character.
    common::write_file(dir.path(), "weird.psk", "zq9!Xw#Lp0@vK7\n", 0o600);
    let text = r#"[agent]
name = "gw"
[[link]]
name = "ic"
interface = "isth-ic"
private_key_file = "private.key"
preshared_key_file = "weird.psk"
listen = "192.0.2.1:51820"
peer_public_key = "sTW6GPMPj3UsueeSgjVcAqH7BCh92Kd0K7aReWmVlEA="
peer_endpoint = "192.0.2.2:51820"
allowed_ips = ["10.2.0.0/16", "10.255.0.1/32"]
addresses = ["10.255.0.0/31"]
[[dns_provider]]
name = "corp"
kind = "rfc2136"
server = "10.1.0.53:53"
zone = "example.internal."
tsig_key_file = "open.key"
"#;
    let report = parse_str(
        text,
        &dir.path().join("agentd.toml"),
        &LoadOptions::default(),
    )
    .unwrap_err();
    assert_eq!(report.error_count(), 3, "{report}");
    let rendered = report.render();
    let json = serde_json::to_string(&report).unwrap();
    let open_content = std::fs::read_to_string(dir.path().join("open.key")).unwrap();
    for secret in [
        private_content.as_str(),
        "zq9!Xw#Lp0@vK7",
        open_content.trim(),
    ] {
        for window in secret.as_bytes().windows(6) {
            let piece = std::str::from_utf8(window).unwrap();
            assert!(!rendered.contains(piece), "{piece:?} leaked:\n{rendered}");
            assert!(!json.contains(piece), "{piece:?} leaked:\n{json}");
        }
    }
}

#[test]
fn secrets_do_not_print() {
    let (dir, _) = common::key_dir();
    let text = r#"[agent]
name = "gw"
[[link]]
name = "ic"
interface = "isth-ic"
private_key_file = "good.key"
listen = "192.0.2.1:51820"
peer_public_key = "sTW6GPMPj3UsueeSgjVcAqH7BCh92Kd0K7aReWmVlEA="
peer_endpoint = "192.0.2.2:51820"
allowed_ips = ["10.2.0.0/16", "10.255.0.1/32"]
addresses = ["10.255.0.0/31"]
"#;
    let config = parse_str(
        text,
        &dir.path().join("agentd.toml"),
        &LoadOptions::default(),
    )
    .unwrap()
    .config;
    let key = std::fs::read_to_string(dir.path().join("good.key")).unwrap();
    let debug = format!("{config:?}");
    assert!(debug.contains("Secret(<redacted>)"));
    assert!(!debug.contains(key.trim()));
    let bytes = config.links[0].private_key.expose();
    assert_eq!(common::base64(bytes), key.trim());
    assert_eq!(
        format!("{:?}", config.links[0].peer_public_key),
        "PublicKey(sTW6GPMPj3UsueeSgjVcAqH7BCh92Kd0K7aReWmVlEA=)"
    );
}

#[test]
fn a_minimal_config_is_all_defaults() {
    let loaded = parse_str(
        "[agent]\nname = \"x\"\n",
        Path::new("agentd.toml"),
        &LoadOptions::default(),
    )
    .unwrap();
    let c = loaded.config;
    assert_eq!(c.agent, isthmus_config::Agent::named("x"));
    assert_eq!(c.control, isthmus_config::Control::default());
    assert_eq!(c.metrics, isthmus_config::Metrics::default());
    assert_eq!(c.routes, isthmus_config::Routes::default());
    assert_eq!(c.health, isthmus_config::Health::default());
    assert!(c.links.is_empty() && c.probes.is_empty() && c.route_groups.is_empty());
    assert!(c.dns_providers.is_empty() && c.dns_groups.is_empty());
    assert_eq!(c.actions, isthmus_config::Actions::default());
    assert_eq!((c.aws, c.oci), (None, None));
    assert!(c.hooks.is_empty());
}
