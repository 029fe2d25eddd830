//! The validated configuration that agentd runs with. Every value here has passed the checks in
//! `validate` and `relations`: names are unique, references resolve, CIDRs are network addresses,
//! durations are in range, key files were readable, private and only hold keys of the right size
//! and form. Defaults are filled in; the `DEFAULT_*` constants say what they are and why. Code
//! that uses a `Config` never needs to re-check it. Secrets are loaded into [`Secret`] (WireGuard
//! keys) and [`SecretBytes`] (TSIG secrets, the OCI API key), which never print.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use ipnetwork::IpNetwork;

/// Where state survives restarts (active links, damping penalties), the FHS place for it.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/isthmus";
/// Where the WireGuard UAPI sockets go, so the standard `wg` tool finds them.
pub const DEFAULT_UAPI_DIR: &str = "/var/run/wireguard";
/// The event log's file is rotated past 8 MiB: tens of thousands of entries, far more than the
/// 1000 agentd keeps, while a log of a flapping link for weeks stays within 16 MiB.
pub const DEFAULT_EVENT_LOG_MAX_BYTES: u64 = 8 << 20;
/// 4 KiB (a few entries: tests of the rotation) to 1 GiB.
pub const EVENT_LOG_MAX_BYTES_RANGE: std::ops::RangeInclusive<i64> = 4096..=(1 << 30);
/// The control socket; `netctl` looks here unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/isthmus/agentd.sock";
/// Owner and group may connect; others may not (connect() needs write permission).
pub const DEFAULT_SOCKET_MODE: u32 = 0o660;
pub const DEFAULT_READ_GROUP: &str = "isthmus";
pub const DEFAULT_ADMIN_GROUP: &str = "isthmus-admin";
/// Room for several users at their per-user share at once; a cap so that clients cannot
/// exhaust agentd's file descriptors (128 is little against the 65536 the unit allows).
pub const DEFAULT_MAX_CLIENTS: usize = 128;
/// Far more than any honest client needs (netctl opens one connection at a time), few enough
/// that one user's stuck or hostile processes leave most of `max_clients` to the others.
pub const DEFAULT_MAX_CLIENTS_PER_USER: usize = 32;
/// Slots only root, agentd's own user and the admin group may take, so that members of the
/// read group filling the socket cannot lock out the people who fix things: by default a
/// quarter of `max_clients`, at most this many.
pub const DEFAULT_RESERVED_CLIENTS_MAX: usize = 16;
/// netctl sends its request head in one write right after connecting; a second is generous
/// on a loaded host and short enough that slow heads (slowloris) cannot hold slots.
pub const DEFAULT_HEAD_TIMEOUT: Duration = Duration::from_secs(1);
/// A request that takes longer than this is stuck; `netctl` must answer at 3 AM.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Loopback only: metrics need not leave the host unless the operator decides so.
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9477));
/// An rtnetlink route protocol number not used by iproute2 or the common routing daemons (see
/// `/etc/iproute2/rt_protos`), so agentd recognizes its own routes and never touches others.
pub const DEFAULT_ROUTE_PROTOCOL: u8 = 73;
/// The main routing table (`RT_TABLE_MAIN`).
pub const MAIN_TABLE: u32 = 254;
/// Round-trip loss of the peer probes over the probe window (about 30 s) above which a link is
/// degraded. A probe is lost if either its request or its reply is, so a one-way loss `p` in
/// each direction is a round-trip loss of `1 - (1 - p)²`: 5% each way (common on the internet,
/// not worth a failover) is about 9.75% round trip and stays below 0.2; 30% sustained loss
/// (which TCP cannot live with) is far above it. The gap leaves room for the noise of a short
/// window.
pub const DEFAULT_LOSS_DEGRADED: f64 = 0.2;
/// Well above a cross-cloud interconnect RTT, below what interactive database sessions tolerate.
pub const DEFAULT_RTT_DEGRADED: Duration = Duration::from_millis(150);
pub const DEFAULT_JITTER_DEGRADED: Duration = Duration::from_millis(30);
/// UDP port of the peer probes on both ends' inner (tunnel) addresses (docs/protocol.md): an
/// unassigned port near WireGuard's 51820, and never on an underlay address.
pub const DEFAULT_PROBE_PORT: u16 = 51899;
/// Route-flap damping values after RFC 2439 / common BGP practice: three or four quick flaps
/// suppress a link; it is reused after about two half-lives of calm (3000 → 750).
pub const DEFAULT_DAMPING_PENALTY: u32 = 1000;
pub const DEFAULT_DAMPING_HALF_LIFE: Duration = Duration::from_secs(60);
pub const DEFAULT_DAMPING_SUPPRESS_ABOVE: u32 = 3000;
pub const DEFAULT_DAMPING_REUSE_BELOW: u32 = 750;
pub const DEFAULT_DAMPING_MAX_SUPPRESS: Duration = Duration::from_secs(600);
/// 1500 minus the WireGuard overhead over IPv6 underlay (80 bytes): safe on any path.
pub const DEFAULT_MTU: u16 = 1420;
/// `mtu = "auto"`: the default floor (IPv6's minimum MTU; Linux removes a device's IPv6
/// addresses below it) and ceiling (a 9000-byte underlay less WireGuard's 80 bytes).
pub const DEFAULT_MTU_MIN: u16 = 1280;
pub const DEFAULT_MTU_MAX: u16 = 8920;

/// `mtu = "auto"`: the bounds of the link's path-MTU search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathMtuBounds {
    pub min: u16,
    pub max: u16,
}
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_millis(500);
pub const DEFAULT_EXPECT_STATUS: u16 = 200;
pub const DEFAULT_ROUTE_METRIC: u32 = 100;
/// Wait this long on a healthy preferred link before moving traffic back: avoids ping-pong.
pub const DEFAULT_FAILBACK_AFTER: Duration = Duration::from_secs(30);
/// At most one switch per hold-down, whatever the probes say.
pub const DEFAULT_HOLD_DOWN: Duration = Duration::from_secs(5);
/// Short, so resolvers follow a failover quickly.
pub const DEFAULT_DNS_TTL: u32 = 30;
/// At most one write per target (a DNS record, a cloud route table) per second: a flapping link
/// must not become an API storm (Route 53 allows five requests per second per account).
pub const DEFAULT_ACTION_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// One attempt (one API request, one verification query): long enough for a slow cloud API,
/// short enough that a hung request is retried well within a failover.
pub const DEFAULT_ACTION_TIMEOUT: Duration = Duration::from_secs(10);
/// First back-off after a failed attempt; it doubles (with jitter) up to
/// [`DEFAULT_RETRY_MAX`].
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_millis(500);
/// Longest back-off: a cloud API that is down for minutes is still tried twice a minute.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(30);
/// Every target is re-read and re-asserted this often, so a change made behind agentd's back (a
/// console click, another tool) is corrected within a minute.
pub const DEFAULT_REASSERT_EVERY: Duration = Duration::from_secs(60);
/// How long a change may take to be served (Route 53 INSYNC, the DNS server answering the new
/// value) before the write counts as failed; Route 53 usually syncs in well under a minute.
pub const DEFAULT_VERIFY_TIMEOUT: Duration = Duration::from_secs(30);
/// A hook that takes longer is killed: hooks notify, they must not hold up the next transition.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest `[[hook]].timeout` accepted.
pub const MAX_HOOK_TIMEOUT: Duration = Duration::from_secs(600);
/// The most `[[hook]].retries` accepted: a hook that fails ten times will not pass the eleventh.
pub const MAX_HOOK_RETRIES: u32 = 10;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from, as given.
    pub path: PathBuf,
    pub agent: Agent,
    pub control: Control,
    pub metrics: Metrics,
    pub routes: Routes,
    pub health: Health,
    pub links: Vec<Link>,
    pub probes: Vec<Probe>,
    pub route_groups: Vec<RouteGroup>,
    pub dns_providers: Vec<DnsProvider>,
    pub dns_groups: Vec<DnsGroup>,
    /// `[actions]`: pacing and retries of DNS and cloud route table writes.
    pub actions: Actions,
    /// `[aws]`, when given.
    pub aws: Option<Aws>,
    /// `[oci]`, when given.
    pub oci: Option<Oci>,
    /// `[[hook]]`s, in file order.
    pub hooks: Vec<Hook>,
    /// `[ha]`, when this gateway is one of a cloud's pair.
    pub ha: Option<Ha>,
}

impl Config {
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    pub fn probe(&self, name: &str) -> Option<&Probe> {
        self.probes.iter().find(|p| p.name == name)
    }

    pub fn route_group(&self, name: &str) -> Option<&RouteGroup> {
        self.route_groups.iter().find(|g| g.name == name)
    }

    pub fn dns_provider(&self, name: &str) -> Option<&DnsProvider> {
        self.dns_providers.iter().find(|p| p.name == name)
    }

    pub fn dns_group(&self, name: &str) -> Option<&DnsGroup> {
        self.dns_groups.iter().find(|g| g.name == name)
    }

    pub fn hook(&self, name: &str) -> Option<&Hook> {
        self.hooks.iter().find(|h| h.name == name)
    }
}

/// `[agent]`
#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    pub name: String,
    pub log_level: LogLevel,
    pub state_dir: PathBuf,
    pub uapi_dir: PathBuf,
    /// `event_log_max_bytes`: past this size `<state_dir>/events.jsonl` is rotated to
    /// `events.jsonl.1`, so the log takes at most twice this on disk.
    pub event_log_max_bytes: u64,
}

impl Agent {
    /// An agent with this name and every other setting at its default.
    pub fn named(name: impl Into<String>) -> Self {
        Agent {
            name: name.into(),
            log_level: LogLevel::Info,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            uapi_dir: PathBuf::from(DEFAULT_UAPI_DIR),
            event_log_max_bytes: DEFAULT_EVENT_LOG_MAX_BYTES,
        }
    }
}

/// Declares a keyword enum: its variants, their spelling in the config file, and `as_str`.
macro_rules! keywords {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every variant, in the order the documentation lists them.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The spelling in the config file.
            pub fn as_str(&self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl crate::values::Keyword for $name {
            const ALL: &'static [Self] = $name::ALL;
            fn text(&self) -> &'static str {
                self.as_str()
            }
        }
    };
}

keywords! {
    /// `[agent].log_level`; `RUST_LOG` overrides it.
    LogLevel { Error = "error", Warn = "warn", Info = "info", Debug = "debug", Trace = "trace" }
}
keywords! {
    /// `[health].profile`: timing of the built-in peer probes.
    Profile { Default = "default", Fast = "fast" }
}
keywords! {
    /// `[[probe]].kind`
    ProbeKind { Icmp = "icmp", Tcp = "tcp", Http = "http", Https = "https" }
}
keywords! {
    /// `[[route_group]].failover_on`: the link health that makes a group leave a link.
    FailoverOn { Degraded = "degraded", Down = "down" }
}
keywords! {
    /// `[[dns_provider]].kind`
    DnsProviderKind { Rfc2136 = "rfc2136", Route53 = "route53", Oci = "oci", Exec = "exec" }
}
keywords! {
    /// `[[dns_provider]].tsig_algorithm`, and the `algorithm` of a `tsig-keygen` key file.
    TsigAlgorithm {
        HmacSha256 = "hmac-sha256",
        HmacSha384 = "hmac-sha384",
        HmacSha512 = "hmac-sha512",
    }
}
keywords! {
    /// `[[dns_group]].type`
    RecordType { A = "A", Aaaa = "AAAA", Cname = "CNAME" }
}

/// `[control]`: the Unix socket `netctl` talks to, and who may do what on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Control {
    pub socket: PathBuf,
    /// Permission bits of the socket file; never any bit for "others".
    pub socket_mode: u32,
    /// Members may connect and read.
    pub read_group: GroupRef,
    /// Members may also change things (reload, failover).
    pub admin_group: GroupRef,
    /// Connections at once, all callers together.
    pub max_clients: usize,
    /// Connections at once from one uid (root's too).
    pub max_clients_per_user: usize,
    /// Of `max_clients`, slots only privileged callers (root, agentd's user, the admin group)
    /// may take; always less than `max_clients`.
    pub reserved_clients: usize,
    /// From connect to the end of the request head.
    pub head_timeout: Duration,
    /// After the head: for the body, and for each stalled write of the response.
    pub request_timeout: Duration,
}

/// The reserved slots when `reserved_clients` is not set: a quarter of `max_clients`, at most
/// [`DEFAULT_RESERVED_CLIENTS_MAX`].
pub fn default_reserved_clients(max_clients: usize) -> usize {
    (max_clients / 4).min(DEFAULT_RESERVED_CLIENTS_MAX)
}

impl Default for Control {
    fn default() -> Self {
        Control {
            socket: PathBuf::from(DEFAULT_SOCKET),
            socket_mode: DEFAULT_SOCKET_MODE,
            read_group: GroupRef::Name(DEFAULT_READ_GROUP.to_string()),
            admin_group: GroupRef::Name(DEFAULT_ADMIN_GROUP.to_string()),
            max_clients: DEFAULT_MAX_CLIENTS,
            max_clients_per_user: DEFAULT_MAX_CLIENTS_PER_USER,
            reserved_clients: default_reserved_clients(DEFAULT_MAX_CLIENTS),
            head_timeout: DEFAULT_HEAD_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// A Unix group by name (looked up when used, it may be created after agentd starts) or by id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GroupRef {
    Name(String),
    Id(u32),
}

impl GroupRef {
    /// The gid now, or `None` if the name does not resolve on this host.
    pub fn resolve(&self) -> Option<u32> {
        match self {
            GroupRef::Id(gid) => Some(*gid),
            GroupRef::Name(name) => nix::unistd::Group::from_name(name)
                .ok()
                .flatten()
                .map(|g| g.gid.as_raw()),
        }
    }
}

impl fmt::Display for GroupRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupRef::Name(name) => f.write_str(name),
            GroupRef::Id(gid) => write!(f, "{gid}"),
        }
    }
}

/// `[metrics]`
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    pub listen: SocketAddr,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            listen: DEFAULT_METRICS_LISTEN,
        }
    }
}

/// `[routes]`
#[derive(Debug, Clone, PartialEq)]
pub struct Routes {
    /// rtnetlink protocol number that marks agentd's routes.
    pub protocol: u8,
    /// Default routing table of the route groups; `main` is [`MAIN_TABLE`].
    pub table: u32,
}

impl Default for Routes {
    fn default() -> Self {
        Routes {
            protocol: DEFAULT_ROUTE_PROTOCOL,
            table: MAIN_TABLE,
        }
    }
}

/// `[health]`: when a link counts as degraded, and how flapping links are damped.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub profile: Profile,
    /// Round-trip loss ratio of the peer probes over the probe window (about 30 s), strictly
    /// between 0 and 1, above which a link is degraded.
    pub loss_degraded: f64,
    pub rtt_degraded: Duration,
    pub jitter_degraded: Duration,
    /// UDP port on the inner addresses where peer probes are sent and answered, on both ends.
    pub probe_port: u16,
    pub damping: Damping,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            profile: Profile::Default,
            loss_degraded: DEFAULT_LOSS_DEGRADED,
            rtt_degraded: DEFAULT_RTT_DEGRADED,
            jitter_degraded: DEFAULT_JITTER_DEGRADED,
            probe_port: DEFAULT_PROBE_PORT,
            damping: Damping::default(),
        }
    }
}

/// `[health.damping]`: each flap adds `penalty`; the penalty halves every `half_life`; above
/// `suppress_above` the link is not used until the penalty falls below `reuse_below`, or at most
/// `max_suppress`.
#[derive(Debug, Clone, PartialEq)]
pub struct Damping {
    pub penalty: u32,
    pub half_life: Duration,
    pub suppress_above: u32,
    pub reuse_below: u32,
    pub max_suppress: Duration,
}

impl Default for Damping {
    fn default() -> Self {
        Damping {
            penalty: DEFAULT_DAMPING_PENALTY,
            half_life: DEFAULT_DAMPING_HALF_LIFE,
            suppress_above: DEFAULT_DAMPING_SUPPRESS_ABOVE,
            reuse_below: DEFAULT_DAMPING_REUSE_BELOW,
            max_suppress: DEFAULT_DAMPING_MAX_SUPPRESS,
        }
    }
}

/// `[[link]]`: one WireGuard tunnel to the peer over one underlay path.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub name: String,
    /// TUN interface name.
    pub interface: String,
    /// Resolved, absolute.
    pub private_key_file: PathBuf,
    pub private_key: Secret,
    /// Local underlay address and UDP port.
    pub listen: SocketAddr,
    pub peer_public_key: PublicKey,
    /// Resolved, absolute.
    pub preshared_key_file: Option<PathBuf>,
    pub preshared_key: Option<Secret>,
    pub peer_endpoint: Endpoint,
    /// Remote networks carried by this link (network addresses).
    pub allowed_ips: Vec<IpNetwork>,
    /// Inner addresses of the TUN interface (host address and prefix).
    pub addresses: Vec<IpNetwork>,
    /// The peer gateway's inner (tunnel) address, where peer probes go. Given, or derived from
    /// the first of `addresses` (the other address of a /31 or /30, IPv6 /127 or /126). Inside
    /// one of `addresses` (so it is routed through this link's interface), covered by
    /// `allowed_ips`, and not one of this end's own addresses.
    pub peer_address: IpAddr,
    /// The MTU in use: the configured one, or with `mtu = "auto"` the floor until the search
    /// confirms more.
    pub mtu: u16,
    /// `mtu = "auto"`: search the path MTU between these bounds.
    pub path_mtu: Option<PathMtuBounds>,
    pub persistent_keepalive: Option<Duration>,
    /// What the cloud charges per GiB sent over this path, in any currency: turns transmitted
    /// bytes into the `isthmus_link_egress_cost_total` estimate. Finite and not negative.
    pub egress_price_per_gb: Option<f64>,
}

impl Link {
    /// The MTU of the link's TUN device and data path: the configured one, or with
    /// `mtu = "auto"` the search's ceiling, so that probes of every size cross it.
    pub fn tun_mtu(&self) -> u16 {
        self.path_mtu.map_or(self.mtu, |b| b.max)
    }
}

/// 32 bytes of key material (WireGuard private or preshared key). Never printed: `Debug` shows
/// `Secret(<redacted>)` and there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; 32]);

impl Secret {
    pub fn new(bytes: [u8; 32]) -> Self {
        Secret(bytes)
    }

    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Key material does not outlive its use in memory.
impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Key material of any length (a TSIG secret, the DER of the OCI API key). Never printed:
/// `Debug` shows `SecretBytes(<redacted>)` and there is no `Display`; wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBytes(<redacted>)")
    }
}

/// A WireGuard public key; displays (and debug-prints) as base64, as `wg` shows it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl PublicKey {
    /// Parses base64 of exactly 32 bytes (surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Option<Self> {
        decode_key(text).map(PublicKey)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base64::engine::general_purpose::STANDARD.encode(self.0))
    }
}

/// Base64 of exactly 32 bytes, as `wg genkey` writes it. Whitespace around it is ignored.
pub(crate) fn decode_key(text: &str) -> Option<[u8; 32]> {
    let mut bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()?;
    let key = <[u8; 32]>::try_from(bytes.as_slice()).ok();
    zeroize::Zeroize::zeroize(&mut bytes);
    key
}

/// Where the peer is: an address, or a host name that agentd resolves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Addr(SocketAddr),
    Host { host: String, port: u16 },
}

impl Endpoint {
    pub fn port(&self) -> u16 {
        match self {
            Endpoint::Addr(a) => a.port(),
            Endpoint::Host { port, .. } => *port,
        }
    }

    /// The address, if it is one (not a host name).
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Endpoint::Addr(a) => Some(a.ip()),
            Endpoint::Host { .. } => None,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Addr(a) => write!(f, "{a}"),
            Endpoint::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// `[[probe]]`: a check of a target behind the tunnels, run over each link that lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub name: String,
    pub kind: ProbeKind,
    /// icmp: IP or host name; tcp: `HOST:PORT`; http/https: URL.
    pub target: String,
    pub interval: Duration,
    /// At most `interval`.
    pub timeout: Duration,
    /// http/https only (defaults to 200 there); `None` for other kinds.
    pub expect_status: Option<u16>,
    pub source: Option<IpAddr>,
}

/// `[[route_group]]`: destinations routed over the first usable link of an ordered list.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteGroup {
    pub name: String,
    pub destinations: Vec<IpNetwork>,
    /// Link names, most preferred first.
    pub links: Vec<String>,
    /// Probe names that must pass on a link for it to be usable.
    pub checks: Vec<String>,
    /// Resolved: the group's own table or `[routes].table`.
    pub table: u32,
    pub metric: u32,
    pub failover_on: FailoverOn,
    pub preempt: bool,
    pub failback_after: Duration,
    pub hold_down: Duration,
    /// AWS VPC route tables whose routes for `destinations` point at this gateway while the
    /// group has a usable link (needs `[aws]`).
    pub aws_route_tables: Vec<CloudRouteTable>,
    /// OCI VCN route tables, likewise (needs `[oci]`).
    pub oci_route_tables: Vec<CloudRouteTable>,
}

/// One cloud route table that a route group steers: each of the group's destinations is routed
/// to `target` while the group has a usable link, and to `fallback` (or removed) when it has
/// none. A (table, destination) pair belongs to one group only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudRouteTable {
    /// AWS `rtb-…`; OCI a route table OCID.
    pub id: String,
    /// This gateway: AWS `eni-…` or `i-…`; OCI a private IP OCID.
    pub target: String,
    /// Where the routes point when the group fails closed; `None` removes them.
    pub fallback: Option<String>,
}

/// `[[dns_provider]]`: where DNS answers are published.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsProvider {
    pub name: String,
    pub kind: DnsProviderKind,
    /// rfc2136: the primary server.
    pub server: Option<SocketAddr>,
    /// rfc2136: the zone to update; oci: the zone name or OCID.
    pub zone: Option<String>,
    /// rfc2136: resolved, absolute; kept for messages (the key itself is in `tsig`).
    pub tsig_key_file: Option<PathBuf>,
    /// rfc2136: the algorithm in use (from `tsig_algorithm` or the key file; `hmac-sha256`
    /// when there is no key).
    pub tsig_algorithm: TsigAlgorithm,
    /// rfc2136: the key that signs updates, loaded from `tsig_key_file`.
    pub tsig: Option<TsigKey>,
    /// route53
    pub hosted_zone_id: Option<String>,
    /// route53: API endpoint override (tests point it at moto).
    pub endpoint: Option<String>,
    /// route53
    pub region: Option<String>,
    /// oci: the private view of the zone (then requests use `scope=PRIVATE`).
    pub view_id: Option<String>,
    /// exec: the program (an absolute path) and its arguments; empty for other kinds.
    pub command: Vec<String>,
    /// exec: how long one run may take; `None` = `[actions].timeout`.
    pub timeout: Option<Duration>,
    /// Overrides `[actions].min_interval` for this provider's records.
    pub min_interval: Option<Duration>,
}

/// A TSIG key: its name as the DNS server knows it, its algorithm and its secret.
#[derive(Debug, Clone, PartialEq)]
pub struct TsigKey {
    /// Absolute, lowercase, with the trailing dot: `failover-key.`.
    pub name: String,
    pub algorithm: TsigAlgorithm,
    /// The base64-decoded secret.
    pub secret: SecretBytes,
}

/// `[actions]`: how agentd writes DNS records and cloud route tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actions {
    /// At most one write per target per interval.
    pub min_interval: Duration,
    /// One attempt: one API request or one verification query.
    pub timeout: Duration,
    /// First back-off after a failure; doubles, with jitter, up to `retry_max`.
    pub retry_initial: Duration,
    /// At least `retry_initial`.
    pub retry_max: Duration,
    /// Every target is re-read and re-asserted this often.
    pub reassert_every: Duration,
    /// How long a change may take to be served before the write counts as failed.
    pub verify_timeout: Duration,
}

impl Default for Actions {
    fn default() -> Self {
        Actions {
            min_interval: DEFAULT_ACTION_MIN_INTERVAL,
            timeout: DEFAULT_ACTION_TIMEOUT,
            retry_initial: DEFAULT_RETRY_INITIAL,
            retry_max: DEFAULT_RETRY_MAX,
            reassert_every: DEFAULT_REASSERT_EVERY,
            verify_timeout: DEFAULT_VERIFY_TIMEOUT,
        }
    }
}

/// `[aws]`: the gateway's AWS account settings, for `aws_route_tables` (EC2) and route53
/// providers (which always sign for us-east-1, the region of the Route 53 API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aws {
    /// The EC2 region of the gateway.
    pub region: String,
    /// Profile in the shared credentials file; `None`: `$AWS_PROFILE`, else `default`.
    pub profile: Option<String>,
    /// Absolute; `None`: `$AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`.
    pub credentials_file: Option<PathBuf>,
    /// EC2 API endpoint override (`http://` or `https://`; tests point it at moto).
    pub ec2_endpoint: Option<String>,
    /// Instance metadata service override.
    pub imds_endpoint: Option<String>,
}

/// `[ha]`: this gateway is one of a pair in its cloud, and the pair elects which one is active
/// on a lease in etcd (reached over the VPC, never through the tunnels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ha {
    /// The pair's name, the same on both gateways: its keys live under `/isthmus/ha/<pair>/`.
    pub pair: String,
    /// `http://host:port` of each etcd member of this cloud's cluster.
    pub etcd: Vec<String>,
    /// Lower is preferred, as for links.
    pub priority: u8,
    /// Take the role back from a gateway of worse priority once ready for `preempt_delay`.
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// The lease's TTL (etcd grants whole seconds, at least 1.5 × its election timeout).
    pub lease_ttl: Duration,
    /// Below this much lease left, the active stops writing route tables and announcing itself.
    pub margin: Duration,
    /// The longest a cloud route-table write may take while active.
    pub write_deadline: Duration,
    /// The deadline of every etcd request.
    pub request_timeout: Duration,
}

pub const DEFAULT_HA_PRIORITY: u8 = 100;
pub const DEFAULT_HA_PREEMPT_DELAY: Duration = Duration::from_secs(30);
pub const DEFAULT_HA_LEASE_TTL: Duration = Duration::from_secs(2);
pub const DEFAULT_HA_MARGIN: Duration = Duration::from_millis(500);
pub const DEFAULT_HA_WRITE_DEADLINE: Duration = Duration::from_millis(500);
pub const DEFAULT_HA_REQUEST_TIMEOUT: Duration = Duration::from_millis(500);

/// `[oci]`: the API signing identity, for oci providers and `oci_route_tables`.
#[derive(Debug, Clone, PartialEq)]
pub struct Oci {
    pub region: String,
    /// Tenancy OCID.
    pub tenancy: String,
    /// User OCID.
    pub user: String,
    /// Fingerprint of the API key as OCI shows it: 16 lowercase hex pairs joined by `:`.
    pub fingerprint: String,
    /// The API private key, loaded from `key_file`.
    pub key: OciKey,
    /// Resolved, absolute; kept for messages.
    pub key_file: PathBuf,
    /// DNS API endpoint override (tests).
    pub dns_endpoint: Option<String>,
    /// Core services (VCN route tables) endpoint override (tests).
    pub iaas_endpoint: Option<String>,
}

/// An unencrypted RSA private key, as DER.
#[derive(Debug, Clone, PartialEq)]
pub struct OciKey {
    pub der: SecretBytes,
    pub format: OciKeyFormat,
}

/// What `OciKey::der` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OciKeyFormat {
    /// `-----BEGIN PRIVATE KEY-----`: a PKCS#8 `PrivateKeyInfo` of an RSA key.
    Pkcs8,
    /// `-----BEGIN RSA PRIVATE KEY-----`: a PKCS#1 `RSAPrivateKey`.
    Pkcs1,
}

/// `[[hook]]`: a command run on every transition of the groups it lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub name: String,
    /// The program (an absolute path) and its arguments.
    pub command: Vec<String>,
    /// Added to the environment the hook gets; names match `[A-Z_][A-Z0-9_]*` and never start
    /// with `ISTHMUS_` (agentd's own variables).
    pub environment: BTreeMap<String, String>,
    /// Route or DNS group names; empty = every group.
    pub groups: Vec<String>,
    /// The hook is killed at its timeout; at most [`MAX_HOOK_TIMEOUT`].
    pub timeout: Duration,
    /// Further attempts after a failure, 0..=[`MAX_HOOK_RETRIES`].
    pub retries: u32,
}

/// `[[dns_group]]`: one record whose value follows the health of ordered answers.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsGroup {
    pub name: String,
    pub provider: String,
    pub record: String,
    pub record_type: RecordType,
    pub ttl: u32,
    /// Most preferred first.
    pub answers: Vec<DnsAnswer>,
    /// Go back to a more preferred answer once its checks pass again.
    pub preempt: bool,
    /// How long a more preferred answer must stay healthy before it is published again.
    pub failback_after: Duration,
    /// At most one change of the record per hold-down.
    pub hold_down: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DnsAnswer {
    pub value: String,
    /// Probe names that must pass for this answer to be published.
    pub checks: Vec<String>,
}
