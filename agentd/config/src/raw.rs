//! The config as TOML sees it: which keys exist in which table and what TOML type each holds,
//! with the span of every value. Nothing here knows what a value means: strings stay strings
//! (CIDRs, addresses, durations are read in `validate`), and every key is optional at this
//! level, so that a missing key is reported by `validate` with a hint, together with all other
//! problems, instead of stopping serde. `deny_unknown_fields` everywhere: a misspelt key is an
//! error, never silently ignored.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

pub(crate) type Text = Option<Spanned<String>>;
pub(crate) type Texts = Option<Spanned<Vec<Spanned<String>>>>;
pub(crate) type Int = Option<Spanned<i64>>;
pub(crate) type Float = Option<Spanned<f64>>;
pub(crate) type Bool = Option<Spanned<bool>>;
/// A string or an integer (groups, tables, modes).
pub(crate) type Value = Option<Spanned<Scalar>>;
/// A duration: a string such as "5s"; an integer is read so that `validate` can explain that
/// it needs a unit.
pub(crate) type Dur = Option<Spanned<DurationText>>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAgent {
    pub name: Text,
    pub log_level: Text,
    pub state_dir: Text,
    pub uapi_dir: Text,
    pub event_log_max_bytes: Int,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawControl {
    pub socket: Text,
    pub socket_mode: Value,
    pub read_group: Value,
    pub admin_group: Value,
    pub max_clients: Int,
    pub max_clients_per_user: Int,
    pub reserved_clients: Int,
    pub head_timeout: Dur,
    pub request_timeout: Dur,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetrics {
    pub listen: Text,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoutes {
    pub protocol: Int,
    pub table: Value,
}

/// `[health]` without `damping`, which `parse` reads as a section of its own so that its
/// errors are reported independently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealth {
    pub profile: Text,
    pub loss_degraded: Float,
    pub rtt_degraded: Dur,
    pub jitter_degraded: Dur,
    pub probe_port: Int,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDamping {
    pub penalty: Int,
    pub half_life: Dur,
    pub suppress_above: Int,
    pub reuse_below: Int,
    pub max_suppress: Dur,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLink {
    pub name: Text,
    pub interface: Text,
    pub private_key_file: Text,
    pub listen: Text,
    pub peer_public_key: Text,
    pub preshared_key_file: Text,
    pub peer_endpoint: Text,
    pub allowed_ips: Texts,
    pub addresses: Texts,
    pub peer_address: Text,
    /// An integer, or "auto".
    pub mtu: Value,
    pub mtu_min: Int,
    pub mtu_max: Int,
    pub persistent_keepalive: Dur,
    pub egress_price_per_gb: Float,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProbe {
    pub name: Text,
    pub kind: Text,
    pub target: Text,
    pub interval: Dur,
    pub timeout: Dur,
    pub expect_status: Int,
    pub source: Text,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRouteGroup {
    pub name: Text,
    pub destinations: Texts,
    pub links: Texts,
    pub checks: Texts,
    pub table: Value,
    pub metric: Int,
    pub failover_on: Text,
    pub preempt: Bool,
    pub failback_after: Dur,
    pub hold_down: Dur,
    pub aws_route_tables: RouteTables,
    pub oci_route_tables: RouteTables,
}

/// `aws_route_tables` or `oci_route_tables` of a route group: a list of inline tables.
pub(crate) type RouteTables = Option<Spanned<Vec<Spanned<RawRouteTable>>>>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRouteTable {
    pub id: Text,
    pub target: Text,
    pub fallback: Text,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDnsProvider {
    pub name: Text,
    pub kind: Text,
    pub server: Text,
    pub zone: Text,
    pub tsig_key_file: Text,
    pub tsig_key_name: Text,
    pub tsig_algorithm: Text,
    pub hosted_zone_id: Text,
    pub endpoint: Text,
    pub region: Text,
    pub view_id: Text,
    pub command: Texts,
    pub timeout: Dur,
    pub min_interval: Dur,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDnsGroup {
    pub name: Text,
    pub provider: Text,
    pub record: Text,
    #[serde(rename = "type")]
    pub record_type: Text,
    pub ttl: Int,
    pub answers: Option<Spanned<Vec<Spanned<RawAnswer>>>>,
    pub preempt: Bool,
    pub failback_after: Dur,
    pub hold_down: Dur,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawActions {
    pub min_interval: Dur,
    pub timeout: Dur,
    pub retry_initial: Dur,
    pub retry_max: Dur,
    pub reassert_every: Dur,
    pub verify_timeout: Dur,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAws {
    pub region: Text,
    pub profile: Text,
    pub credentials_file: Text,
    pub ec2_endpoint: Text,
    pub imds_endpoint: Text,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHa {
    pub pair: Text,
    pub etcd: Texts,
    pub priority: Int,
    pub preempt: Bool,
    pub preempt_delay: Dur,
    pub lease_ttl: Dur,
    pub margin: Dur,
    pub write_deadline: Dur,
    pub request_timeout: Dur,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOci {
    pub region: Text,
    pub tenancy: Text,
    pub user: Text,
    pub fingerprint: Text,
    pub key_file: Text,
    pub dns_endpoint: Text,
    pub iaas_endpoint: Text,
}

/// Environment variables of a hook, with the place of every name and value.
pub(crate) type Environment = Option<Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHook {
    pub name: Text,
    pub command: Texts,
    pub environment: Environment,
    pub groups: Texts,
    pub timeout: Dur,
    pub retries: Int,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAnswer {
    pub value: Text,
    pub checks: Texts,
}

/// A value that may be written as a string or as an integer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar {
    Text(String),
    Int(i64),
}

/// A duration as written; see [`Dur`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DurationText(pub Scalar);

struct ScalarVisitor(&'static str);

impl Visitor<'_> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Text(v.to_string()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        i64::try_from(v)
            .map(Scalar::Int)
            .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor("a string or an integer"))
    }
}

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor("a duration string such as \"5s\""))
            .map(DurationText)
    }
}

/// The keys of a table struct, as serde's derive lists them (renames applied), or `None` if `T`
/// is not read as a struct. Lets `parse` pick out unknown keys in one pass instead of waiting
/// for serde to reject them one per run.
pub(crate) fn keys_of<'de, T: Deserialize<'de>>() -> Option<&'static [&'static str]> {
    let mut probe = KeysProbe(None);
    let _ = T::deserialize(&mut probe);
    probe.0
}

/// A deserializer that only notes the field names a struct asks for, then stops.
struct KeysProbe(Option<&'static [&'static str]>);

#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stop")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<M: fmt::Display>(_: M) -> Self {
        Stop
    }
}

impl<'de> Deserializer<'de> for &mut KeysProbe {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Stop> {
        self.0 = Some(fields);
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// An example line for a key, for hints about missing keys and wrong types. `table` is the
/// section or list name (`agent`, `link`, `health.damping`, `answer`).
pub(crate) fn example(table: &str, key: &str) -> Option<&'static str> {
    EXAMPLES
        .iter()
        .find(|(t, k, _)| *t == table && *k == key)
        .map(|(_, _, line)| *line)
}

/// The tables that have `key`, written as headers: `[agent]`, `[[link]]`.
pub(crate) fn tables_with_key(key: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (table, k, _) in EXAMPLES {
        if *k != key {
            continue;
        }
        let header = match *table {
            "link" | "probe" | "route_group" | "dns_provider" | "dns_group" | "hook" => {
                format!("[[{table}]]")
            }
            "answer" => "the answers of [[dns_group]]".to_string(),
            "route_table" => {
                "the aws_route_tables and oci_route_tables of [[route_group]]".to_string()
            }
            _ => format!("[{table}]"),
        };
        if !out.contains(&header) {
            out.push(header);
        }
    }
    out
}

const EXAMPLES: &[(&str, &str, &str)] = &[
    ("agent", "name", r#"name = "aws-gw-1""#),
    ("agent", "log_level", r#"log_level = "info""#),
    ("agent", "state_dir", r#"state_dir = "/var/lib/isthmus""#),
    ("agent", "uapi_dir", r#"uapi_dir = "/var/run/wireguard""#),
    (
        "agent",
        "event_log_max_bytes",
        "event_log_max_bytes = 8388608",
    ),
    (
        "control",
        "socket",
        r#"socket = "/run/isthmus/agentd.sock""#,
    ),
    ("control", "socket_mode", r#"socket_mode = "0660""#),
    ("control", "read_group", r#"read_group = "isthmus""#),
    ("control", "admin_group", r#"admin_group = "isthmus-admin""#),
    ("control", "max_clients", "max_clients = 128"),
    (
        "control",
        "max_clients_per_user",
        "max_clients_per_user = 32",
    ),
    ("control", "reserved_clients", "reserved_clients = 16"),
    ("control", "head_timeout", r#"head_timeout = "1s""#),
    ("control", "request_timeout", r#"request_timeout = "5s""#),
    ("metrics", "listen", r#"listen = "127.0.0.1:9477""#),
    ("routes", "protocol", "protocol = 73"),
    ("routes", "table", r#"table = "main""#),
    ("health", "profile", r#"profile = "default""#),
    ("health", "loss_degraded", "loss_degraded = 0.2"),
    ("health", "rtt_degraded", r#"rtt_degraded = "150ms""#),
    ("health", "jitter_degraded", r#"jitter_degraded = "30ms""#),
    ("health", "probe_port", "probe_port = 51899"),
    ("health.damping", "penalty", "penalty = 1000"),
    ("health.damping", "half_life", r#"half_life = "60s""#),
    ("health.damping", "suppress_above", "suppress_above = 3000"),
    ("health.damping", "reuse_below", "reuse_below = 750"),
    ("health.damping", "max_suppress", r#"max_suppress = "10m""#),
    ("link", "name", r#"name = "interconnect""#),
    ("link", "interface", r#"interface = "isth-ic""#),
    (
        "link",
        "private_key_file",
        r#"private_key_file = "private.key""#,
    ),
    ("link", "listen", r#"listen = "192.0.2.1:51820""#),
    (
        "link",
        "peer_public_key",
        r#"peer_public_key = "<output of wg pubkey on the peer>""#,
    ),
    (
        "link",
        "preshared_key_file",
        r#"preshared_key_file = "interconnect.psk""#,
    ),
    (
        "link",
        "peer_endpoint",
        r#"peer_endpoint = "192.0.2.2:51820""#,
    ),
    ("link", "allowed_ips", r#"allowed_ips = ["10.2.0.0/16"]"#),
    ("link", "addresses", r#"addresses = ["10.255.0.0/31"]"#),
    ("link", "peer_address", r#"peer_address = "10.255.0.1""#),
    ("link", "mtu", "mtu = 1420"),
    ("link", "mtu_min", "mtu_min = 1280"),
    ("link", "mtu_max", "mtu_max = 8920"),
    (
        "link",
        "persistent_keepalive",
        r#"persistent_keepalive = "25s""#,
    ),
    ("link", "egress_price_per_gb", "egress_price_per_gb = 0.02"),
    ("probe", "name", r#"name = "adb-listener""#),
    ("probe", "kind", r#"kind = "tcp""#),
    ("probe", "target", r#"target = "10.2.1.10:1522""#),
    ("probe", "interval", r#"interval = "1s""#),
    ("probe", "timeout", r#"timeout = "500ms""#),
    ("probe", "expect_status", "expect_status = 200"),
    ("probe", "source", r#"source = "10.1.0.1""#),
    ("route_group", "name", r#"name = "oci-vcn""#),
    (
        "route_group",
        "destinations",
        r#"destinations = ["10.2.0.0/16"]"#,
    ),
    (
        "route_group",
        "links",
        r#"links = ["interconnect", "internet"]"#,
    ),
    ("route_group", "checks", r#"checks = ["adb-listener"]"#),
    ("route_group", "table", r#"table = "main""#),
    ("route_group", "metric", "metric = 100"),
    ("route_group", "failover_on", r#"failover_on = "degraded""#),
    ("route_group", "preempt", "preempt = true"),
    ("route_group", "failback_after", r#"failback_after = "30s""#),
    ("route_group", "hold_down", r#"hold_down = "5s""#),
    (
        "route_group",
        "aws_route_tables",
        r#"aws_route_tables = [{ id = "rtb-0a1b2c3d", target = "eni-0123456789abcdef0", fallback = "none" }]"#,
    ),
    (
        "route_group",
        "oci_route_tables",
        r#"oci_route_tables = [{ id = "ocid1.routetable.oc1.iad.aaaa…", target = "ocid1.privateip.oc1.iad.aaaa…", fallback = "none" }]"#,
    ),
    ("route_table", "id", r#"id = "rtb-0a1b2c3d""#),
    (
        "route_table",
        "target",
        r#"target = "eni-0123456789abcdef0""#,
    ),
    ("route_table", "fallback", r#"fallback = "none""#),
    ("dns_provider", "name", r#"name = "corp-dns""#),
    ("dns_provider", "kind", r#"kind = "rfc2136""#),
    ("dns_provider", "server", r#"server = "10.1.0.53:53""#),
    ("dns_provider", "zone", r#"zone = "example.internal.""#),
    (
        "dns_provider",
        "tsig_key_file",
        r#"tsig_key_file = "tsig.key""#,
    ),
    (
        "dns_provider",
        "tsig_algorithm",
        r#"tsig_algorithm = "hmac-sha256""#,
    ),
    (
        "dns_provider",
        "hosted_zone_id",
        r#"hosted_zone_id = "Z0123456789ABC""#,
    ),
    (
        "dns_provider",
        "endpoint",
        r#"endpoint = "https://route53.amazonaws.com""#,
    ),
    ("dns_provider", "region", r#"region = "us-east-1""#),
    (
        "dns_provider",
        "tsig_key_name",
        r#"tsig_key_name = "failover-key.""#,
    ),
    (
        "dns_provider",
        "view_id",
        r#"view_id = "ocid1.dnsview.oc1.iad.aaaa…""#,
    ),
    (
        "dns_provider",
        "command",
        r#"command = ["/usr/local/bin/publish-dns"]"#,
    ),
    ("dns_provider", "timeout", r#"timeout = "10s""#),
    ("dns_provider", "min_interval", r#"min_interval = "1s""#),
    ("dns_group", "name", r#"name = "orders-db""#),
    ("dns_group", "provider", r#"provider = "corp-dns""#),
    (
        "dns_group",
        "record",
        r#"record = "orders-db.example.internal.""#,
    ),
    ("dns_group", "type", r#"type = "A""#),
    ("dns_group", "ttl", "ttl = 30"),
    (
        "dns_group",
        "answers",
        r#"answers = [{ value = "10.2.1.10", checks = ["adb-listener"] }]"#,
    ),
    ("dns_group", "preempt", "preempt = true"),
    ("dns_group", "failback_after", r#"failback_after = "30s""#),
    ("dns_group", "hold_down", r#"hold_down = "5s""#),
    ("answer", "value", r#"value = "10.2.1.10""#),
    ("answer", "checks", r#"checks = ["adb-listener"]"#),
    ("actions", "min_interval", r#"min_interval = "1s""#),
    ("actions", "timeout", r#"timeout = "10s""#),
    ("actions", "retry_initial", r#"retry_initial = "500ms""#),
    ("actions", "retry_max", r#"retry_max = "30s""#),
    ("actions", "reassert_every", r#"reassert_every = "60s""#),
    ("actions", "verify_timeout", r#"verify_timeout = "30s""#),
    ("aws", "region", r#"region = "us-east-1""#),
    ("aws", "profile", r#"profile = "default""#),
    (
        "aws",
        "credentials_file",
        r#"credentials_file = "/root/.aws/credentials""#,
    ),
    (
        "aws",
        "ec2_endpoint",
        r#"ec2_endpoint = "https://ec2.us-east-1.amazonaws.com""#,
    ),
    (
        "aws",
        "imds_endpoint",
        r#"imds_endpoint = "http://169.254.169.254""#,
    ),
    ("oci", "region", r#"region = "us-ashburn-1""#),
    ("oci", "tenancy", r#"tenancy = "ocid1.tenancy.oc1..aaaa…""#),
    ("oci", "user", r#"user = "ocid1.user.oc1..aaaa…""#),
    (
        "oci",
        "fingerprint",
        r#"fingerprint = "20:3b:97:13:55:1c:5b:0d:d3:37:d8:50:4e:c5:3a:34""#,
    ),
    ("oci", "key_file", r#"key_file = "oci_api_key.pem""#),
    (
        "oci",
        "dns_endpoint",
        r#"dns_endpoint = "https://dns.us-ashburn-1.oraclecloud.com""#,
    ),
    (
        "oci",
        "iaas_endpoint",
        r#"iaas_endpoint = "https://iaas.us-ashburn-1.oraclecloud.com""#,
    ),
    ("ha", "pair", r#"pair = "aws-prod""#),
    (
        "ha",
        "etcd",
        r#"etcd = ["http://10.0.1.10:2379", "http://10.0.2.10:2379", "http://10.0.3.10:2379"]"#,
    ),
    ("ha", "priority", "priority = 10"),
    ("ha", "preempt", "preempt = true"),
    ("ha", "preempt_delay", r#"preempt_delay = "30s""#),
    ("ha", "lease_ttl", r#"lease_ttl = "2s""#),
    ("ha", "margin", r#"margin = "500ms""#),
    ("ha", "write_deadline", r#"write_deadline = "500ms""#),
    ("ha", "request_timeout", r#"request_timeout = "500ms""#),
    ("hook", "name", r#"name = "page-oncall""#),
    (
        "hook",
        "command",
        r#"command = ["/usr/local/bin/notify", "--channel", "db"]"#,
    ),
    ("hook", "environment", r#"environment = { TEAM = "db" }"#),
    ("hook", "groups", r#"groups = ["oci-vcn"]"#),
    ("hook", "timeout", r#"timeout = "10s""#),
    ("hook", "retries", "retries = 2"),
];
