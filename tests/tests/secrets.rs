//! No secret ever shows, end to end. One gateway holds every kind of secret agentd knows at
//! once, and uses each of them: WireGuard private keys and preshared keys on both links (the
//! peer gateway too), an RFC 2136 TSIG key that signs the updates of a DNS group at a real BIND,
//! AWS credentials (access key id, secret key, session token, from a shared credentials file)
//! for an EC2 route table at moto, and an OCI API key for a VCN route table at the
//! signature-checking OCI stub. All three servers run inside the AWS gateway's namespace:
//!
//! ```text
//!  aws gw (agentd, log_level trace)  ══ tunnels (WireGuard + PSK) ══  oci gw ── oci-db
//!   named 192.0.2.1:5353  (TSIG)                                    10.2.1.10:1522 primary
//!   moto  127.0.0.1:5055  (AWS keys)                                10.2.2.10:1522 DR
//!   OCI stub 127.0.0.1:8080 (API key)
//! ```
//!
//! The scenario: start; a failover (the interconnect cut) and the failback; a drill of the route
//! group with its report files; actions that fail (BIND stopped; then a TSIG key BIND does not
//! know, AWS credentials that do not parse and an OCI key the stub does not know, all by a
//! reload); a rejected reload of a broken config; `netctl check-config` and
//! `agentd --check-config` on a broken copy. Then everything an operator or a log shipper could
//! see (both agentd logs, every `netctl` command in human and `--json` form, the raw control API
//! bodies and error bodies, `/metrics`, the state directories with the event log, the drill
//! report files, the check-config outputs) is searched for every secret in every encoding it
//! could leak in ([`Secret`]). Zero hits; a hit names the secret kind, the source and the line,
//! with the secret masked.
//!
//! [`the_scanner_finds_a_planted_secret_in_every_encoding_and_masks_it`] shows that the search
//! can fail, and the end-to-end test checks the same on the key files themselves before it
//! trusts a clean result.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE};
use base64::Engine as _;
use isthmus_tests::bind::{require_named, tsig_keygen};
use isthmus_tests::dns_bed::{
    listener_addr, record_action, serve_group, wait_in_sync, DnsBed, Listener, DR, PRIMARY,
};
use isthmus_tests::moto::{self, Moto, Vpc};
use isthmus_tests::oci_stub::{api_key, OciStub};
use isthmus_tests::topology::Side;
use isthmus_tests::{bin, http_get, netctl, Fixture};
use serde_json::Value;

const REGION: &str = "eu-central-1";
/// moto and the OCI stub, on the AWS gateway namespace's loopback.
const MOTO: &str = "127.0.0.1:5055";
const OCI_STUB: &str = "127.0.0.1:8080";
/// Where nothing listens: no instance credentials may be found.
const DEAD_IMDS: &str = "http://127.0.0.1:1";
const METRICS: &str = "127.0.0.1:9477";
const TENANCY: &str = "ocid1.tenancy.oc1..aaaaaaaaisthmustesttenancy";
const USER: &str = "ocid1.user.oc1..aaaaaaaaisthmustestuser";
const OCI_TABLE: &str = "ocid1.routetable.oc1.iad.aaaaaaaaisthmustesttable";
const PRIVATE_IP: &str = "ocid1.privateip.oc1.iad.aaaaaaaaisthmusgateway";
const DRG: &str = "ocid1.drg.oc1.iad.aaaaaaaaisthmusdrg";
/// The AWS gateway's route group destination: the OCI VCN.
const REMOTE: &str = "10.2.0.0/16";
const AWS_PROFILE: &str = "isthmus";
const AWS_KEY_ID: &str = "AKIAISTHMUSSECRETS01";
/// Generous: 2 shared cores, Python, BIND, two agentd at trace level.
const LONG: Duration = Duration::from_secs(45);

// ---------------------------------------------------------------------------------------------
// The search.

/// One secret and every form it could leak in. A leak is any `window`-byte piece of one of its
/// forms: a log line that shows half a key has leaked it.
struct Secret {
    kind: String,
    /// (encoding name, text, window length).
    forms: Vec<(&'static str, String, usize)>,
}

/// Windows: 16 characters of text (base64, a PEM body, a raw secret); 32 hex digits (16
/// bytes); 24 characters of a Rust `{:?}` byte list (`[12, 200, 7, …]`, 6–8 bytes). Long enough
/// that no unrelated text matches by chance, short enough to catch a truncated or wrapped key.
const TEXT_WINDOW: usize = 16;
const HEX_WINDOW: usize = 32;
const DEBUG_WINDOW: usize = 24;

impl Secret {
    /// A secret given as text (an AWS key, a session token): the text itself.
    fn text(kind: &str, text: &str) -> Secret {
        Secret {
            kind: kind.into(),
            forms: vec![("raw text", text.to_string(), TEXT_WINDOW.min(text.len()))],
        }
    }

    /// A base64 secret (a WireGuard key, a TSIG secret): the text as given, other base64
    /// alphabets and padding, and the decoded bytes as hex and as a Rust byte list.
    fn base64(kind: &str, b64: &str) -> Secret {
        let bytes = STANDARD
            .decode(b64.trim())
            .unwrap_or_else(|e| panic!("{kind}: not base64: {e}"));
        let mut s = Secret::bytes(kind, &bytes);
        s.forms
            .insert(0, ("base64", b64.trim().to_string(), TEXT_WINDOW));
        s
    }

    /// Raw bytes: base64 (standard, unpadded, URL-safe), hex (both cases) and `{:?}`.
    fn bytes(kind: &str, bytes: &[u8]) -> Secret {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let debug = format!("{bytes:?}");
        Secret {
            kind: kind.into(),
            forms: vec![
                ("base64", STANDARD.encode(bytes), TEXT_WINDOW),
                (
                    "base64, unpadded",
                    STANDARD_NO_PAD.encode(bytes),
                    TEXT_WINDOW,
                ),
                ("base64, URL-safe", URL_SAFE.encode(bytes), TEXT_WINDOW),
                ("hex", hex.clone(), HEX_WINDOW),
                ("HEX", hex.to_uppercase(), HEX_WINDOW),
                (
                    "byte list",
                    debug[1..debug.len() - 1].to_string(),
                    DEBUG_WINDOW,
                ),
            ],
        }
    }

    /// A PEM private key: its body lines (joined, so that a piece across a line break
    /// counts too) and the DER they encode, after the first 48 bytes (the first body line):
    /// the ASN.1 header and the start of the public modulus, the same in every RSA key of a
    /// size, so not a secret (and shared with the public key).
    fn pem(kind: &str, pem: &str) -> Secret {
        let body: String = pem
            .lines()
            .filter(|l| !l.starts_with("-----") && !l.contains(':'))
            .map(str::trim)
            .collect();
        let der = STANDARD
            .decode(&body)
            .unwrap_or_else(|e| panic!("{kind}: PEM body not base64: {e}"));
        let mut s = Secret::bytes(kind, &der[PEM_HEADER_BYTES..]);
        s.forms.insert(
            0,
            (
                "PEM body",
                body[PEM_HEADER_BYTES / 3 * 4..].to_string(),
                TEXT_WINDOW,
            ),
        );
        s
    }
}

/// See [`Secret::pem`]: one PEM line.
const PEM_HEADER_BYTES: usize = 48;

/// One hit: where, which secret, and the line with every piece of a secret masked.
#[derive(Debug)]
struct Hit {
    source: String,
    line: usize,
    kind: String,
    form: &'static str,
    masked: String,
}

/// Every window of every form of every secret, by window length, for one pass over the text.
struct Scanner {
    windows: BTreeMap<usize, HashMap<Vec<u8>, (usize, usize)>>,
    secrets: Vec<Secret>,
}

impl Scanner {
    fn new(secrets: Vec<Secret>) -> Scanner {
        let mut windows: BTreeMap<usize, HashMap<Vec<u8>, (usize, usize)>> = BTreeMap::new();
        // A piece in two secrets is structure both share (a key format's header), not either
        // secret: it is dropped.
        let mut shared = Vec::new();
        for (i, s) in secrets.iter().enumerate() {
            for (j, (_, text, w)) in s.forms.iter().enumerate() {
                assert!(
                    text.len() >= *w,
                    "{}: a form shorter than its window",
                    s.kind
                );
                let map = windows.entry(*w).or_default();
                for piece in text.as_bytes().windows(*w) {
                    let seen = *map.entry(piece.to_vec()).or_insert((i, j));
                    if seen.0 != i {
                        shared.push((*w, piece.to_vec()));
                    }
                }
            }
        }
        for (w, piece) in shared {
            windows.get_mut(&w).map(|m| m.remove(&piece));
        }
        Scanner { windows, secrets }
    }

    /// The hits in `text`, one per line and secret form, each line masked wholly.
    fn scan(&self, source: &str, text: &str) -> Vec<Hit> {
        let mut hits = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let bytes = line.as_bytes();
            let mut masked = vec![false; bytes.len()];
            let mut found: Vec<(usize, usize)> = Vec::new();
            for (w, map) in &self.windows {
                for (at, piece) in bytes.windows(*w).enumerate() {
                    if let Some(&(i, j)) = map.get(piece) {
                        masked[at..at + w].iter_mut().for_each(|m| *m = true);
                        if !found.contains(&(i, j)) {
                            found.push((i, j));
                        }
                    }
                }
            }
            if found.is_empty() {
                continue;
            }
            let masked = mask(line, &masked);
            for (i, j) in found {
                hits.push(Hit {
                    source: source.to_string(),
                    line: n + 1,
                    kind: self.secrets[i].kind.clone(),
                    form: self.secrets[i].forms[j].0,
                    masked: masked.clone(),
                });
            }
        }
        hits
    }

    /// Kinds of secret found anywhere in `text`.
    fn kinds_in(&self, text: &str) -> Vec<String> {
        let mut kinds: Vec<String> = self.scan("", text).into_iter().map(|h| h.kind).collect();
        kinds.dedup();
        kinds
    }
}

/// `line` with every masked byte run replaced by `«masked»` (a run may cut a UTF-8 character:
/// the line is rebuilt from bytes, lossily).
fn mask(line: &str, masked: &[bool]) -> String {
    let mut out = Vec::new();
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if masked[i] {
            out.extend_from_slice("«masked»".as_bytes());
            while i < bytes.len() && masked[i] {
                i += 1;
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The failure message for `hits`, naming each (the secret masked); `None` without hits.
fn hits_report(hits: &[Hit], sources: usize, bytes: usize) -> Option<String> {
    if hits.is_empty() {
        return None;
    }
    let mut report = format!(
        "{} secret hit(s) in what {sources} sources ({bytes} bytes) show:\n",
        hits.len()
    );
    for h in hits.iter().take(50) {
        report += &format!(
            "  {} ({}) in {}, line {}: {}\n",
            h.kind, h.form, h.source, h.line, h.masked
        );
    }
    if hits.len() > 50 {
        report += &format!("  … and {} more\n", hits.len() - 50);
    }
    Some(report)
}

#[test]
fn the_scanner_finds_a_planted_secret_in_every_encoding_and_masks_it() {
    let key = [7u8, 200, 13, 99, 1, 2, 3, 4, 250, 251, 252, 253, 9, 8, 7, 6]
        .repeat(2)
        .to_vec();
    let b64 = STANDARD.encode(&key);
    let pem_body = STANDARD.encode((0u8..=200).collect::<Vec<_>>());
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n{}\n{}\n-----END PRIVATE KEY-----\n",
        &pem_body[..64],
        &pem_body[64..128],
        &pem_body[128..]
    );
    let scanner = Scanner::new(vec![
        Secret::base64("WireGuard private key", &b64),
        Secret::pem("OCI API key", &pem),
        Secret::text("AWS secret access key", "isthmusAwsSecret/k9Q2w8E7r6T5y4U3"),
    ]);
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let planted = [
        ("base64", format!("key = {b64}")),
        (
            "base64, unpadded",
            format!("key={}", STANDARD_NO_PAD.encode(&key)),
        ),
        ("base64, URL-safe", format!("k {}", URL_SAFE.encode(&key))),
        ("hex", format!("decoded {hex} end")),
        ("HEX", format!("decoded {} end", hex.to_uppercase())),
        ("byte list", format!("Key({key:?})")),
        ("half a key", format!("truncated: {}…", &b64[..20])),
        (
            "a PEM line",
            format!("error near `{}`", &pem_body[170..200]),
        ),
        ("across PEM lines", format!("got {}", &pem_body[120..150])),
        (
            "the AWS secret",
            "sk=isthmusAwsSecret/k9Q2w8E7r6T5y4U3&x=1".to_string(),
        ),
    ];
    for (what, line) in &planted {
        let text = format!("an innocent line\n{line}\nanother innocent line\n");
        let hits = scanner.scan("planted", &text);
        assert!(!hits.is_empty(), "{what} was not found in {line:?}");
        assert!(hits.iter().all(|h| h.line == 2), "{hits:?}");
        for h in &hits {
            assert!(h.masked.contains("«masked»"), "{h:?}");
            assert!(
                scanner.scan("masked", &h.masked).is_empty(),
                "{what}: the masked line still shows the secret: {}",
                h.masked
            );
        }
    }
    // A hit fails the test with a message that names the kind and the place, not the secret.
    let hits = scanner.scan("agentd log", &format!("DEBUG loaded key {b64}\n"));
    let message = hits_report(&hits, 1, 10).expect("a hit must fail the test");
    assert!(message.contains("WireGuard private key"), "{message}");
    assert!(message.contains("agentd log, line 1"), "{message}");
    assert!(!message.contains(&b64[..16]), "{message}");
    assert!(hits_report(&[], 1, 10).is_none());
    // Text without secrets: nothing, also for numbers and base64 of other things.
    let clean = "rtt_ms=12 loss=0.0 [1, 2, 3, 4, 5, 6, 7, 8]\nfingerprint 20:3a:9f\nAAAAAAAAAAAAAAAAAAAAAAAA\n";
    assert!(scanner.scan("clean", clean).is_empty());
    // A PEM's first line is the key format's header, the same in every key: not a secret.
    assert!(scanner.scan("header", &pem_body[..60]).is_empty());
}

// ---------------------------------------------------------------------------------------------
// The bed.

fn random_b64(n: usize) -> String {
    use std::io::Read;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("urandom");
    STANDARD.encode(bytes)
}

fn edit(fx: &Fixture, f: impl FnOnce(&mut toml::Table)) {
    let mut doc: toml::Table = std::fs::read_to_string(fx.config_path())
        .unwrap()
        .parse()
        .unwrap();
    f(&mut doc);
    fx.write_config(&toml::to_string(&doc).unwrap());
}

fn link_mut<'a>(doc: &'a mut toml::Table, name: &str) -> &'a mut toml::Table {
    doc["link"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .filter_map(|l| l.as_table_mut())
        .find(|l| l["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no link {name}"))
}

fn wait_for<T: std::fmt::Debug>(what: &str, mut f: impl FnMut() -> (bool, T)) -> T {
    let deadline = Instant::now() + LONG;
    loop {
        let (ok, seen) = f();
        if ok {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {LONG:?}; last seen: {seen:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The target of the OCI VCN in the moto route table.
fn aws_route(moto: &Moto, rtb: &str) -> Option<String> {
    let form = format!("Action=DescribeRouteTables&Version=2016-11-15&RouteTableId.1={rtb}");
    let (status, body) = moto.call("ec2", REGION, "POST", "/", &form).ok()?;
    (status == 200).then(|| moto::route_target(&body, REMOTE))?
}

/// The target of the OCI VCN in the stub's route table.
fn oci_route(stub: &OciStub) -> Option<String> {
    stub.rules(OCI_TABLE)
        .into_iter()
        .find(|r| r["destination"] == REMOTE)
        .and_then(|r| r["networkEntityId"].as_str().map(str::to_owned))
}

/// The action entries of a side (`netctl --json actions`).
fn action_list(side: &Side) -> Vec<Value> {
    let out = netctl(&side.fx.socket(), &["--json", "actions"]);
    assert_eq!(out.code, 0, "netctl actions: {out:?}");
    out.json()["actions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Whether all three action targets (the record, both route tables) are in sync; and them.
fn unsynced(side: &Side) -> (bool, Vec<Value>) {
    let all = action_list(side);
    let ok = all.len() == 3 && all.iter().all(|a| a["state"] == "in_sync");
    (ok, all)
}

/// Everything collected for the search: (source, text).
#[derive(Default)]
struct Seen {
    texts: Vec<(String, String)>,
}

impl Seen {
    fn add(&mut self, source: impl Into<String>, text: impl Into<String>) {
        self.texts.push((source.into(), text.into()));
    }

    fn add_output(&mut self, source: &str, out: &isthmus_tests::Output) {
        self.add(format!("{source} (stdout)"), out.stdout.clone());
        self.add(format!("{source} (stderr)"), out.stderr.clone());
    }

    /// Every netctl read command of `side`, human and `--json`, and the raw control API.
    /// `drill --last` writes the last drill's report files into the fixture's `reports`.
    fn snapshot(&mut self, label: &str, side: &Side) {
        let socket = side.fx.socket();
        let reports = side.fx.dir().join("reports");
        let reports = reports.to_str().unwrap();
        for cmd in [
            &["status"][..],
            &["links"],
            &["routes"],
            &["probes"],
            &["actions"],
            &["events", "--limit", "1000"],
            &["version"],
            &["drill", "--last", "--report", reports],
        ] {
            for json in [false, true] {
                let mut args: Vec<&str> = if json { vec!["--json"] } else { vec![] };
                args.extend_from_slice(cmd);
                let out = netctl(&socket, &args);
                self.add_output(
                    &format!("{label}: {} netctl {}", side.name, args.join(" ")),
                    &out,
                );
            }
        }
        for path in [
            "/v1/status",
            "/v1/links",
            "/v1/routes",
            "/v1/probes",
            "/v1/actions",
            "/v1/events?limit=1000",
            "/v1/drill",
            "/v1/version",
        ] {
            self.add(
                format!("{label}: {} GET {path}", side.name),
                control(&socket, "GET", path, None),
            );
        }
    }

    /// Files under `dir` (recursively), as text (lossily).
    fn add_dir(&mut self, label: &str, dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.filter_map(Result::ok) {
            let path = e.path();
            let kind = e.file_type().unwrap();
            if kind.is_dir() {
                self.add_dir(label, &path);
            } else if kind.is_file() {
                let bytes = std::fs::read(&path).unwrap_or_default();
                self.add(
                    format!("{label}: {}", path.display()),
                    String::from_utf8_lossy(&bytes).into_owned(),
                );
            }
        }
    }
}

/// A raw control API request (curl over the Unix socket): status line, headers and body.
fn control(socket: &Path, method: &str, path: &str, body: Option<&str>) -> String {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-i", "--max-time", "10", "--unix-socket"])
        .arg(socket)
        .args(["-X", method]);
    if let Some(b) = body {
        cmd.args(["-H", "content-type: application/json", "--data-binary", b]);
    }
    let out = cmd
        .arg(format!("http://agentd{path}"))
        .output()
        .expect("curl (apt-get install curl)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The metrics of a side, scraped in its namespace.
fn metrics(side: &Side) -> String {
    let (status, body) = http_get(
        &side.ns,
        METRICS.parse::<SocketAddr>().unwrap(),
        "/metrics",
        Duration::from_secs(10),
    )
    .expect("scraping /metrics");
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn no_secret_shows_in_logs_status_events_metrics_drill_reports_or_errors() {
    if !require_named() {
        return;
    }
    let Some(pyenv) =
        moto::pyenv("no_secret_shows_in_logs_status_events_metrics_drill_reports_or_errors")
    else {
        return;
    };
    let mut bed = DnsBed::new("sx", None);
    let (aws, oci) = (&bed.clouds.aws, &bed.clouds.oci);

    // WireGuard: the private keys are the bed's; a preshared key per link, on both sides.
    let psks = [random_b64(32), random_b64(32)];
    for side in [aws, oci] {
        for (link, psk) in ["interconnect", "internet"].iter().zip(&psks) {
            let file = format!("{link}.psk");
            side.fx.write_key_text(&file, psk);
            edit(&side.fx, |doc| {
                link_mut(doc, link).insert("preshared_key_file".into(), file.into());
            });
        }
        side.fx.set("agent", "log_level", "trace".into());
        side.fx.set("metrics", "listen", METRICS.into());
    }

    // TSIG: the DNS group orders-db, published through named with the key.
    serve_group(aws, &bed.key.text, Duration::from_secs(3));
    // Actions re-read every target often, so that wrong credentials show soon.
    edit(&aws.fx, |doc| {
        doc["actions"]
            .as_table_mut()
            .unwrap()
            .insert("reassert_every".into(), "1s".into());
    });

    // AWS: a shared credentials file with a named profile and a session token, for an EC2
    // route table at moto.
    let moto = Moto::start_in(&pyenv, &aws.ns, MOTO.parse().unwrap());
    let Vpc { eni, vgw, rtb, .. } = Vpc::create(&moto, REGION);
    let aws_secret = random_b64(30);
    let aws_token = format!("IQoJ{}", random_b64(120));
    let credentials = format!(
        "[default]\naws_access_key_id = AKIADEFAULTNOTUSED01\naws_secret_access_key = nope\n\n\
         [{AWS_PROFILE}]\naws_access_key_id = {AWS_KEY_ID}\naws_secret_access_key = {aws_secret}\n\
         aws_session_token = {aws_token}\n"
    );
    let credentials_file = aws.fx.write_key_text("aws-credentials", &credentials);
    moto::steer_route_tables(
        &aws.fx,
        &format!(
            "region = \"{REGION}\"\nec2_endpoint = \"http://{MOTO}\"\nimds_endpoint = \"{DEAD_IMDS}\"\n\
             profile = \"{AWS_PROFILE}\"\ncredentials_file = \"{}\"\n",
            credentials_file.display()
        ),
        &[(&rtb, &eni, &vgw)],
    );

    // OCI: an API key for a VCN route table at the stub (which checks every signature).
    let api = api_key();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let stub = {
        let _in = runtime.enter();
        OciStub::start_in(
            &aws.ns,
            OCI_STUB.parse().unwrap(),
            api.public_der.clone(),
            &format!("{TENANCY}/{USER}/{}", api.fingerprint),
        )
    };
    stub.set_rules(OCI_TABLE, Vec::new());
    aws.fx.write_key_text("oci_api_key.pem", api.pem.trim_end());
    edit(&aws.fx, |doc| {
        let oci: toml::Table = toml::from_str(&format!(
            "region = \"us-ashburn-1\"\ntenancy = \"{TENANCY}\"\nuser = \"{USER}\"\n\
             fingerprint = \"{}\"\nkey_file = \"oci_api_key.pem\"\n\
             dns_endpoint = \"http://{OCI_STUB}\"\niaas_endpoint = \"http://{OCI_STUB}\"\n",
            api.fingerprint
        ))
        .unwrap();
        doc.insert("oci".into(), oci.into());
        let table: toml::Table = toml::from_str(&format!(
            "id = \"{OCI_TABLE}\"\ntarget = \"{PRIVATE_IP}\"\nfallback = \"{DRG}\"\n"
        ))
        .unwrap();
        doc["route_group"].as_array_mut().unwrap()[0]
            .as_table_mut()
            .unwrap()
            .insert("oci_route_tables".into(), vec![table].into());
    });
    let good_config = std::fs::read_to_string(aws.fx.config_path()).unwrap();

    // Secrets that only the failure steps hand agentd: a TSIG key named like the right one
    // that BIND does not know, and an OCI key the stub does not know.
    let wrong_tsig = tsig_keygen(&bed.key.name);
    let wrong_api = api_key();
    aws.fx
        .write_key_text("wrong-tsig.key", wrong_tsig.text.trim_end());
    aws.fx
        .write_key_text("wrong-oci.pem", wrong_api.pem.trim_end());
    let wrong_aws_secret = random_b64(30);
    let wrong_aws_token = format!("IQoJ{}", random_b64(120));
    // The secret lines unparsable (no `=`), the file still the shared-file format.
    let broken_credentials = aws.fx.write_key_text(
        "aws-credentials-broken",
        &format!(
            "[{AWS_PROFILE}]\naws_access_key_id = {AWS_KEY_ID}\naws_secret_access_key {wrong_aws_secret}\n\
             aws_session_token: {wrong_aws_token}\n"
        ),
    );

    let secrets = vec![
        Secret::base64("WireGuard private key (aws gw)", &aws.key.private),
        Secret::base64("WireGuard private key (oci gw)", &oci.key.private),
        Secret::base64("WireGuard preshared key (interconnect)", &psks[0]),
        Secret::base64("WireGuard preshared key (internet)", &psks[1]),
        Secret::base64("TSIG secret", &bed.key.secret_b64),
        Secret::base64("TSIG secret (the wrong key)", &wrong_tsig.secret_b64),
        Secret::text("AWS secret access key", &aws_secret),
        Secret::text("AWS session token", &aws_token),
        Secret::text("AWS secret access key (broken file)", &wrong_aws_secret),
        Secret::text("AWS session token (broken file)", &wrong_aws_token),
        Secret::pem("OCI API key", &api.pem),
        Secret::pem("OCI API key (the unknown one)", &wrong_api.pem),
    ];
    let scanner = Scanner::new(secrets);
    // The search finds each secret in the very files agentd reads: a clean result below
    // means the secrets are absent, not that the search misses them.
    let files = [
        ("private.key", vec!["WireGuard private key (aws gw)"]),
        (
            "interconnect.psk",
            vec!["WireGuard preshared key (interconnect)"],
        ),
        ("internet.psk", vec!["WireGuard preshared key (internet)"]),
        ("tsig.key", vec!["TSIG secret"]),
        ("wrong-tsig.key", vec!["TSIG secret (the wrong key)"]),
        (
            "aws-credentials",
            vec!["AWS secret access key", "AWS session token"],
        ),
        (
            "aws-credentials-broken",
            vec![
                "AWS secret access key (broken file)",
                "AWS session token (broken file)",
            ],
        ),
        ("oci_api_key.pem", vec!["OCI API key"]),
        ("wrong-oci.pem", vec!["OCI API key (the unknown one)"]),
    ];
    for (file, kinds) in files {
        let text = std::fs::read_to_string(aws.fx.dir().join(file)).unwrap();
        assert_eq!(scanner.kinds_in(&text), kinds, "the search in {file}");
    }
    let oci_private = std::fs::read_to_string(oci.fx.dir().join("private.key")).unwrap();
    assert_eq!(
        scanner.kinds_in(&oci_private),
        ["WireGuard private key (oci gw)"]
    );

    let mut seen = Seen::default();

    // Start: every secret in use. The tunnels are up (keys and PSKs), the record is served
    // (TSIG), and both route tables point at this gateway (AWS and OCI signatures).
    let (aws_agentd, oci_agentd) = bed.clouds.start_agents();
    let (aws, oci) = (&bed.clouds.aws, &bed.clouds.oci);
    bed.wait_served(PRIMARY, LONG);
    wait_in_sync(aws, PRIMARY, LONG);
    wait_for("the VCN route at moto", || {
        let r = aws_route(&moto, &rtb);
        (r.as_deref() == Some(eni.as_str()), r)
    });
    wait_for("the VCN route at the OCI stub", || {
        let r = oci_route(&stub);
        (r.as_deref() == Some(PRIVATE_IP), r)
    });
    wait_for("every action target in sync", || unsynced(aws));
    seen.snapshot("started", aws);
    seen.snapshot("started", oci);

    // A failover: the interconnect cut; and the failback when it returns.
    bed.clouds.cut_interconnect(true);
    aws.wait_active("remote", "internet", LONG);
    oci.wait_active("remote", "internet", LONG);
    seen.snapshot("failed over", aws);
    bed.clouds.restore_interconnect();
    aws.wait_links_up(&["interconnect", "internet"], LONG);
    aws.wait_active("remote", "interconnect", LONG);
    oci.wait_active("remote", "interconnect", LONG);
    wait_for("every action target in sync", || unsynced(aws));

    // A drill of the route group, with its report files; its dry runs read both route tables
    // and the peer's view through the tunnels.
    let reports = aws.fx.dir().join("reports");
    let reports_s = reports.to_str().unwrap();
    let drill = netctl(
        &aws.fx.socket(),
        &[
            "drill",
            "remote",
            "--hold",
            "3s",
            "--rto-target",
            "10s",
            "--reason",
            "secrets test",
            "--report",
            reports_s,
        ],
    );
    seen.add_output("netctl drill remote", &drill);
    assert_eq!(drill.code, 0, "{drill:?}");
    for ext in ["md", "json", "svg"] {
        let n = std::fs::read_dir(&reports)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == ext))
            .count();
        assert!(n >= 1, "no .{ext} drill report in {}", reports.display());
    }
    let last = netctl(
        &aws.fx.socket(),
        &["--json", "drill", "--last", "--report", reports_s],
    );
    seen.add_output("netctl --json drill --last --report", &last);
    assert_eq!(last.json()["state"], "done", "{last:?}");
    seen.snapshot("after the drill", aws);
    seen.snapshot("after the drill", oci);

    // An action failure: named stopped while the primary's listener goes away, so the DR
    // answer cannot be written.
    bed.bind.stop();
    bed.primary.stop();
    wait_for("the record's write failing", || {
        let a = record_action(aws);
        (a["state"] != "in_sync" && !a["last_error"].is_null(), a)
    });
    seen.snapshot("named down", aws);
    bed.bind.start_again();
    wait_in_sync(aws, DR, LONG);

    // Wrong credentials everywhere, by a valid reload: a TSIG key BIND does not know (the
    // failback to the primary is refused), AWS credentials that do not parse, an OCI key the
    // stub does not know.
    edit(&aws.fx, |doc| {
        doc["dns_provider"].as_array_mut().unwrap()[0]
            .as_table_mut()
            .unwrap()
            .insert("tsig_key_file".into(), "wrong-tsig.key".into());
        let aws = doc["aws"].as_table_mut().unwrap();
        aws.insert(
            "credentials_file".into(),
            broken_credentials.display().to_string().into(),
        );
        doc["oci"]
            .as_table_mut()
            .unwrap()
            .insert("key_file".into(), "wrong-oci.pem".into());
    });
    let reload = netctl(&aws.fx.socket(), &["reload"]);
    seen.add_output("netctl reload (wrong credentials)", &reload);
    assert_eq!(reload.code, 0, "{reload:?}");
    bed.primary = Listener::start(bed.clouds.oci_app(), listener_addr(PRIMARY));
    let failing = wait_for("every action target failing", || {
        let all = action_list(aws);
        let errors = all.iter().filter(|a| !a["last_error"].is_null()).count();
        (errors == 3, all)
    });
    println!("failing targets: {failing:#?}");
    seen.snapshot("wrong credentials", aws);

    // A rejected reload: a broken config, each key file pointing at another kind of secret
    // (which must not be quoted back), and a bad value next to them.
    let broken = broken_config(
        &good_config,
        [&aws.key.private, &psks[1], aws_secret.as_str()],
    );
    aws.fx.write_config(&broken);
    let rejected = netctl(&aws.fx.socket(), &["reload"]);
    seen.add_output("netctl reload (broken config)", &rejected);
    assert_ne!(
        rejected.code, 0,
        "a broken config must be rejected: {rejected:?}"
    );
    let rejected_json = netctl(&aws.fx.socket(), &["--json", "reload"]);
    seen.add_output("netctl --json reload (broken config)", &rejected_json);
    let raw = control(&aws.fx.socket(), "POST", "/v1/reload", Some("{}"));
    assert!(raw.contains("422"), "{raw}");
    seen.add("POST /v1/reload (broken config)", raw);
    for (method, path, body) in [
        ("GET", "/v1/events?bogus=1", None),
        ("POST", "/v1/groups/nope/failover", Some("{\"to\":\"x\"}")),
        ("POST", "/v1/groups/remote/failover", Some("{not json")),
        ("POST", "/v1/drill", Some("{\"group\":\"remote\"}")),
        ("GET", "/v1/nothing", None),
    ] {
        seen.add(
            format!("{method} {path}"),
            control(&aws.fx.socket(), method, path, body),
        );
    }

    // check-config on broken copies (wrong key files; a syntax error), by netctl and agentd.
    for (name, text) in [
        ("broken-copy.toml", broken.clone()),
        ("unparsable-copy.toml", unparsable_config(&good_config)),
    ] {
        let copy = aws.fx.dir().join(name);
        std::fs::write(&copy, text).unwrap();
        let copy_s = copy.to_str().unwrap();
        for json in [false, true] {
            let mut args = vec!["check-config", copy_s];
            if json {
                args.insert(0, "--json");
            }
            let out = netctl(&aws.fx.socket(), &args);
            assert_ne!(out.code, 0, "{out:?}");
            seen.add_output(&format!("netctl {}", args.join(" ")), &out);
        }
        let check = Command::new(bin("agentd"))
            .arg("--check-config")
            .arg(&copy)
            .output()
            .expect("agentd --check-config");
        assert!(!check.status.success(), "agentd --check-config {name}");
        seen.add(
            format!("agentd --check-config {name} (stdout)"),
            String::from_utf8_lossy(&check.stdout),
        );
        seen.add(
            format!("agentd --check-config {name} (stderr)"),
            String::from_utf8_lossy(&check.stderr),
        );
    }
    let diagnostics = format!("{}{}", rejected.stdout, rejected.stderr);
    println!("the rejected reload:\n{diagnostics}");

    // The good config again: everything in sync.
    aws.fx.write_config(&good_config);
    let reload = netctl(&aws.fx.socket(), &["reload"]);
    seen.add_output("netctl reload (good again)", &reload);
    assert_eq!(reload.code, 0, "{reload:?}");
    wait_in_sync(aws, PRIMARY, LONG);
    wait_for("every action target in sync", || unsynced(aws));

    // Everything else an operator or a log shipper sees.
    seen.snapshot("at the end", aws);
    seen.snapshot("at the end", oci);
    seen.add("aws gw /metrics", metrics(aws));
    seen.add("oci gw /metrics", metrics(oci));
    for side in [aws, oci] {
        seen.add_dir(
            &format!("{} state dir", side.name),
            &side.fx.dir().join("state"),
        );
    }
    seen.add_dir("drill reports", &reports);
    let aws_log = aws_agentd.log_text();
    assert!(aws_log.contains("TRACE"), "not logging at trace level");
    seen.add("aws gw agentd log", aws_log);
    seen.add("oci gw agentd log", oci_agentd.log_text());

    let everything: String = seen.texts.iter().map(|(_, t)| t.as_str()).collect();
    let hits: Vec<Hit> = seen
        .texts
        .iter()
        .flat_map(|(source, text)| scanner.scan(source, text))
        .collect();
    if let Some(report) = hits_report(&hits, seen.texts.len(), everything.len()) {
        panic!("{report}");
    }
    // The record of what went wrong is there (the search looked at real errors).
    for (what, needle) in [
        ("an event log file", "active_link_changed"),
        ("a failed action", "action_failed"),
        ("the diagnostics of a key file", "oci_api_key.pem"),
        ("check-config of the copy", "broken-copy.toml"),
        ("the pasted key refused", "unknown key `private_key`"),
        ("the key given as a path refused", "looks like a key itself"),
    ] {
        assert!(
            everything.contains(needle),
            "no {what} ({needle:?}) in the output"
        );
    }

    println!(
        "searched {} sources, {} bytes, for {} secrets: no hit",
        seen.texts.len(),
        everything.len(),
        scanner.secrets.len()
    );
    drop(runtime);
}

/// `good` with every key file pointing at another kind of secret, a bad value on the line
/// next to each, and secrets pasted into the config itself (`pasted`: a WireGuard key, a PSK,
/// an AWS secret access key): what an operator's slips look like.
fn broken_config(good: &str, pasted: [&str; 3]) -> String {
    let mut doc: toml::Table = good.parse().unwrap();
    let [wg, psk, aws_secret] = pasted;
    link_mut(&mut doc, "internet").insert("private_key".into(), wg.into());
    link_mut(&mut doc, "internet").insert("psk".into(), psk.into());
    doc["aws"]
        .as_table_mut()
        .unwrap()
        .insert("aws_secret_access_key".into(), aws_secret.into());
    let link = link_mut(&mut doc, "interconnect");
    link.insert("private_key_file".into(), "oci_api_key.pem".into());
    link.insert("preshared_key_file".into(), "tsig.key".into());
    link.insert("listen".into(), "192.0.2.1:99999".into());
    let link = link_mut(&mut doc, "internet");
    link.insert("private_key_file".into(), wg.into());
    link.insert("preshared_key_file".into(), "oci_api_key.pem".into());
    let provider = doc["dns_provider"].as_array_mut().unwrap()[0]
        .as_table_mut()
        .unwrap();
    provider.insert("tsig_key_file".into(), "oci_api_key.pem".into());
    provider.insert("zone".into(), "not a zone!".into());
    let oci = doc["oci"].as_table_mut().unwrap();
    oci.insert("key_file".into(), "interconnect.psk".into());
    oci.insert("fingerprint".into(), "not-a-fingerprint".into());
    let aws = doc["aws"].as_table_mut().unwrap();
    aws.insert("credentials_file".into(), "relative/credentials".into());
    doc["agent"].as_table_mut().unwrap().insert(
        "aws_session_token".into(),
        format!("{aws_secret}token").into(),
    );
    toml::to_string(&doc).unwrap()
}

/// `good` with a line that is not TOML next to a key file's line: a syntax error.
fn unparsable_config(good: &str) -> String {
    good.replacen(
        "tsig_key_file = \"tsig.key\"",
        "tsig_key_file = \"tsig.key\"\ntsig_algorithm = hmac-sha256",
        1,
    )
}
