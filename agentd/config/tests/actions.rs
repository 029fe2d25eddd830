//! What the failover actions' config loads into: `[actions]`, `[aws]`, `[oci]` with its API key,
//! TSIG keys, the provider kinds, DNS group timing, cloud route tables and hooks.

mod common;

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use isthmus_config::*;

fn load(dir: &Path, text: &str) -> Config {
    parse_str(text, &dir.join("agentd.toml"), &LoadOptions::default())
        .unwrap_or_else(|r| panic!("{r}"))
        .config
}

/// The DER inside a PEM file (its base64 body).
fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("base64 body")
}

fn decoded(secret: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(secret)
        .expect("base64")
}

const PROVIDER: &str = "[[dns_provider]]\nname = \"corp\"\nkind = \"rfc2136\"\n\
                        server = \"10.1.0.53:53\"\nzone = \"example.internal.\"\n";

#[test]
fn a_tsig_keygen_file_loads_name_algorithm_and_secret() {
    let (dir, _) = common::key_dir();
    let secret = common::base64(&common::random_bytes::<64>());
    // Exactly what `tsig-keygen -a hmac-sha512 Failover-Key.Example` prints.
    let text = format!(
        "key \"Failover-Key.Example\" {{\n\talgorithm hmac-sha512;\n\tsecret \"{secret}\";\n}};\n"
    );
    common::write_file(dir.path(), "keygen.key", &text, 0o600);
    let config = load(
        dir.path(),
        &format!("[agent]\nname = \"gw\"\n{PROVIDER}tsig_key_file = \"keygen.key\"\n"),
    );
    let p = &config.dns_providers[0];
    let key = p.tsig.as_ref().expect("a TSIG key");
    assert_eq!(key.name, "failover-key.example.");
    assert_eq!(key.algorithm, TsigAlgorithm::HmacSha512);
    assert_eq!(p.tsig_algorithm, TsigAlgorithm::HmacSha512);
    assert_eq!(key.secret.expose(), decoded(&secret).as_slice());
    assert_eq!(p.tsig_key_file, Some(dir.path().join("keygen.key")));
    let debug = format!("{config:?}");
    assert!(debug.contains("SecretBytes(<redacted>)"));
    assert!(!debug.contains(&secret));
}

#[test]
fn a_bare_secret_takes_its_name_and_algorithm_from_the_config() {
    let (dir, _) = common::key_dir();
    let config = load(
        dir.path(),
        &format!(
            "[agent]\nname = \"gw\"\n{PROVIDER}tsig_key_file = \"bare-tsig.key\"\n\
             tsig_key_name = \"Failover-Key\"\ntsig_algorithm = \"hmac-sha384\"\n"
        ),
    );
    let key = config.dns_providers[0].tsig.as_ref().expect("a TSIG key");
    assert_eq!(key.name, "failover-key.");
    assert_eq!(key.algorithm, TsigAlgorithm::HmacSha384);
    assert_eq!(
        key.secret.expose(),
        decoded(common::tsig_secret()).as_slice()
    );
}

#[test]
fn a_keygen_file_may_repeat_its_name_and_algorithm_in_the_config() {
    let (dir, _) = common::key_dir();
    let config = load(
        dir.path(),
        &format!(
            "[agent]\nname = \"gw\"\n{PROVIDER}tsig_key_file = \"tsig.key\"\n\
             tsig_key_name = \"failover-key.\"\ntsig_algorithm = \"hmac-sha256\"\n"
        ),
    );
    let key = config.dns_providers[0].tsig.as_ref().expect("a TSIG key");
    assert_eq!(
        (key.name.as_str(), key.algorithm),
        ("failover-key.", TsigAlgorithm::HmacSha256)
    );
}

#[test]
fn oci_api_keys_load_in_pkcs8_and_pkcs1() {
    let (dir, _) = common::key_dir();
    for (file, data, format) in [
        ("oci.pem", "TEST-ONLY-rsa-pkcs8.pem", OciKeyFormat::Pkcs8),
        (
            "oci-pkcs1.pem",
            "TEST-ONLY-rsa-pkcs1.pem",
            OciKeyFormat::Pkcs1,
        ),
    ] {
        let config = load(
            dir.path(),
            &format!(
                "[agent]\nname = \"gw\"\n[oci]\nregion = \"us-ashburn-1\"\n\
                 tenancy = \"ocid1.tenancy.oc1..aaaaaaaatenancy0\"\n\
                 user = \"ocid1.user.oc1..aaaaaaaauser0\"\n\
                 fingerprint = \"4F:02:6B:1E:CA:C5:CE:8E:3B:48:C4:19:E0:06:4F:1E\"\n\
                 key_file = \"{file}\"\n"
            ),
        );
        let oci = config.oci.expect("[oci]");
        assert_eq!(oci.key.format, format, "{file}");
        assert_eq!(
            oci.key.der.expose(),
            pem_der(&common::test_key(data)).as_slice()
        );
        assert_eq!(oci.key_file, dir.path().join(file));
        assert_eq!(oci.region, "us-ashburn-1");
        assert_eq!(oci.tenancy, "ocid1.tenancy.oc1..aaaaaaaatenancy0");
        assert_eq!(oci.user, "ocid1.user.oc1..aaaaaaaauser0");
        assert_eq!(
            oci.fingerprint,
            "4f:02:6b:1e:ca:c5:ce:8e:3b:48:c4:19:e0:06:4f:1e"
        );
        assert_eq!((oci.dns_endpoint, oci.iaas_endpoint), (None, None));
        assert!(format!("{:?}", oci.key).contains("SecretBytes(<redacted>)"));
    }
}

#[test]
fn an_encrypted_pkcs1_key_is_refused_with_the_openssl_command() {
    let (dir, _) = common::key_dir();
    common::write_test_key(
        dir.path(),
        "enc1.pem",
        "TEST-ONLY-rsa-pkcs1-encrypted.pem",
        0o600,
    );
    let text = "[agent]\nname = \"gw\"\n[oci]\nregion = \"us-ashburn-1\"\n\
                tenancy = \"ocid1.tenancy.oc1..aaaaaaaatenancy0\"\n\
                user = \"ocid1.user.oc1..aaaaaaaauser0\"\n\
                fingerprint = \"4f:02:6b:1e:ca:c5:ce:8e:3b:48:c4:19:e0:06:4f:1e\"\n\
                key_file = \"enc1.pem\"\n";
    let report = parse_str(
        text,
        &dir.path().join("agentd.toml"),
        &LoadOptions::default(),
    )
    .unwrap_err();
    let d = report.errors().next().expect("an error");
    assert!(d.message.contains("holds an encrypted private key"), "{d}");
    assert!(
        d.hint.as_deref().unwrap_or("").contains("openssl rsa -in"),
        "{d}"
    );
    assert_eq!((d.line, d.column), (Some(8), Some(12)));
}

#[test]
fn every_action_setting_has_a_default_and_can_be_set() {
    let (dir, _) = common::key_dir();
    let config = load(dir.path(), "[agent]\nname = \"gw\"\n[actions]\n");
    assert_eq!(config.actions, Actions::default());
    assert_eq!(config.actions.min_interval, Duration::from_secs(1));
    assert_eq!(config.actions.timeout, Duration::from_secs(10));
    assert_eq!(config.actions.retry_initial, Duration::from_millis(500));
    assert_eq!(config.actions.retry_max, Duration::from_secs(30));
    assert_eq!(config.actions.reassert_every, Duration::from_secs(60));
    assert_eq!(config.actions.verify_timeout, Duration::from_secs(30));
    let config = load(
        dir.path(),
        "[agent]\nname = \"gw\"\n[actions]\nmin_interval = \"2s\"\ntimeout = \"3s\"\n\
         retry_initial = \"1s\"\nretry_max = \"1m\"\nreassert_every = \"5m\"\n\
         verify_timeout = \"2m\"\n",
    );
    assert_eq!(
        config.actions,
        Actions {
            min_interval: Duration::from_secs(2),
            timeout: Duration::from_secs(3),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            reassert_every: Duration::from_secs(300),
            verify_timeout: Duration::from_secs(120),
        }
    );
}

#[test]
fn providers_groups_route_tables_and_hooks_load_with_their_defaults() {
    let (dir, _) = common::key_dir();
    let text = r#"[agent]
name = "gw"
[aws]
region = "eu-west-1"
profile = "isthmus"
credentials_file = "/etc/isthmus/aws-credentials"
ec2_endpoint = "http://127.0.0.1:5055"
imds_endpoint = "http://169.254.169.254"
[oci]
region = "us-ashburn-1"
tenancy = "ocid1.tenancy.oc1..aaaaaaaatenancy0"
user = "ocid1.user.oc1..aaaaaaaauser0"
fingerprint = "4f:02:6b:1e:ca:c5:ce:8e:3b:48:c4:19:e0:06:4f:1e"
key_file = "oci.pem"
dns_endpoint = "http://127.0.0.1:5056"
iaas_endpoint = "http://127.0.0.1:5057"
[[link]]
name = "ic"
interface = "isth-ic"
private_key_file = "good.key"
listen = "192.0.2.1:51820"
peer_public_key = "sTW6GPMPj3UsueeSgjVcAqH7BCh92Kd0K7aReWmVlEA="
peer_endpoint = "192.0.2.2:51820"
allowed_ips = ["10.2.0.0/16", "10.3.0.0/16", "10.255.0.1/32"]
addresses = ["10.255.0.0/31"]
[[route_group]]
name = "vcn"
destinations = ["10.2.0.0/16"]
links = ["ic"]
aws_route_tables = [
  { id = "rtb-0a1b2c3d", target = "eni-0123456789abcdef0", fallback = "vgw-0123abcd" },
  { id = "rtb-0a1b2c3e", target = "i-0123456789abcdef0", fallback = "none" },
]
oci_route_tables = [
  { id = "ocid1.routetable.oc1.iad.aaaa", target = "ocid1.privateip.oc1.iad.aaaa", fallback = "ocid1.drg.oc1.iad.aaaa" },
]
[[route_group]]
name = "other"
destinations = ["10.3.0.0/16"]
links = ["ic"]
aws_route_tables = [{ id = "rtb-0a1b2c3d", target = "eni-0123456789abcdef0", fallback = "none" }]
[[dns_provider]]
name = "r53"
kind = "route53"
hosted_zone_id = "Z0123456789ABC"
min_interval = "2s"
[[dns_provider]]
name = "oci-dns"
kind = "oci"
zone = "example.internal"
view_id = "ocid1.dnsview.oc1.iad.aaaa"
[[dns_provider]]
name = "script"
kind = "exec"
command = ["/usr/local/bin/publish-dns", "--zone", "x"]
timeout = "20s"
[[dns_group]]
name = "orders-db"
provider = "oci-dns"
record = "orders-db.example.internal"
answers = [{ value = "10.2.1.10" }]
[[dns_group]]
name = "app"
provider = "script"
record = "app.example.com"
answers = [{ value = "10.2.1.11" }]
preempt = false
failback_after = "2m"
hold_down = "10s"
[[hook]]
name = "page-oncall"
command = ["/usr/local/bin/notify", "--channel", "db"]
environment = { TEAM = "db", _LEVEL2 = "page" }
groups = ["vcn", "orders-db"]
timeout = "30s"
retries = 2
[[hook]]
name = "log"
command = ["/usr/bin/logger"]
"#;
    let c = load(dir.path(), text);
    let aws = c.aws.as_ref().expect("[aws]");
    assert_eq!(
        *aws,
        Aws {
            region: "eu-west-1".into(),
            profile: Some("isthmus".into()),
            credentials_file: Some("/etc/isthmus/aws-credentials".into()),
            ec2_endpoint: Some("http://127.0.0.1:5055".into()),
            imds_endpoint: Some("http://169.254.169.254".into()),
        }
    );
    let oci = c.oci.as_ref().expect("[oci]");
    assert_eq!(oci.dns_endpoint.as_deref(), Some("http://127.0.0.1:5056"));
    assert_eq!(oci.iaas_endpoint.as_deref(), Some("http://127.0.0.1:5057"));

    let vcn = c.route_group("vcn").expect("group vcn");
    assert_eq!(
        vcn.aws_route_tables,
        vec![
            CloudRouteTable {
                id: "rtb-0a1b2c3d".into(),
                target: "eni-0123456789abcdef0".into(),
                fallback: Some("vgw-0123abcd".into()),
            },
            CloudRouteTable {
                id: "rtb-0a1b2c3e".into(),
                target: "i-0123456789abcdef0".into(),
                fallback: None,
            },
        ]
    );
    assert_eq!(
        vcn.oci_route_tables,
        vec![CloudRouteTable {
            id: "ocid1.routetable.oc1.iad.aaaa".into(),
            target: "ocid1.privateip.oc1.iad.aaaa".into(),
            fallback: Some("ocid1.drg.oc1.iad.aaaa".into()),
        }]
    );
    // The same table for another destination, in another group, is fine.
    assert_eq!(
        c.route_group("other")
            .expect("group other")
            .aws_route_tables[0]
            .id,
        "rtb-0a1b2c3d"
    );

    let r53 = c.dns_provider("r53").expect("r53");
    assert_eq!(r53.kind, DnsProviderKind::Route53);
    assert_eq!(r53.min_interval, Some(Duration::from_secs(2)));
    assert_eq!(r53.tsig, None);
    let oci_dns = c.dns_provider("oci-dns").expect("oci-dns");
    assert_eq!(oci_dns.kind, DnsProviderKind::Oci);
    assert_eq!(oci_dns.zone.as_deref(), Some("example.internal"));
    assert_eq!(
        oci_dns.view_id.as_deref(),
        Some("ocid1.dnsview.oc1.iad.aaaa")
    );
    assert_eq!(oci_dns.min_interval, None);
    let script = c.dns_provider("script").expect("script");
    assert_eq!(script.kind, DnsProviderKind::Exec);
    assert_eq!(
        script.command,
        ["/usr/local/bin/publish-dns", "--zone", "x"]
    );
    assert_eq!(script.timeout, Some(Duration::from_secs(20)));

    let orders = c.dns_group("orders-db").expect("orders-db");
    assert!(orders.preempt);
    assert_eq!(orders.failback_after, DEFAULT_FAILBACK_AFTER);
    assert_eq!(orders.hold_down, DEFAULT_HOLD_DOWN);
    let app = c.dns_group("app").expect("app");
    assert!(!app.preempt);
    assert_eq!(app.failback_after, Duration::from_secs(120));
    assert_eq!(app.hold_down, Duration::from_secs(10));

    let page = c.hook("page-oncall").expect("page-oncall");
    assert_eq!(page.command, ["/usr/local/bin/notify", "--channel", "db"]);
    assert_eq!(
        page.environment.iter().collect::<Vec<_>>(),
        [
            (&"TEAM".to_string(), &"db".to_string()),
            (&"_LEVEL2".to_string(), &"page".to_string())
        ]
    );
    assert_eq!(page.groups, ["vcn", "orders-db"]);
    assert_eq!((page.timeout, page.retries), (Duration::from_secs(30), 2));
    let log = c.hook("log").expect("log");
    assert!(log.environment.is_empty() && log.groups.is_empty());
    assert_eq!((log.timeout, log.retries), (DEFAULT_HOOK_TIMEOUT, 0));
}

#[test]
fn a_hosted_zone_id_loads_with_or_without_the_hostedzone_prefix() {
    let dir = tempfile::tempdir().unwrap();
    for id in ["Z0123456789ABC", "/hostedzone/Z0123456789ABC"] {
        let text = format!(
            "[agent]\nname = \"gw\"\n[[dns_provider]]\nname = \"r53\"\nkind = \"route53\"\n\
             hosted_zone_id = \"{id}\"\n"
        );
        let c = load(dir.path(), &text);
        assert_eq!(
            c.dns_provider("r53").unwrap().hosted_zone_id.as_deref(),
            Some("Z0123456789ABC"),
            "{id}"
        );
    }
}
