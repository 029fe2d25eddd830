//! The OCI providers against three references: Oracle's published signing test vector, the
//! `oci` Python SDK's signer, and a stub of the DNS and VCN APIs that checks every signature
//! with the public key and enforces etags (`isthmus_tests::oci_stub`).
//!
//! Keys are made per test with `openssl genrsa 2048` in a temporary directory. The tests that
//! need the SDK's virtualenv (`$ISTHMUS_PYENV`, default `/var/tmp/isthmus-pyenv`) skip with a
//! message when it is missing, unless `CI` is set: then they fail.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use isthmus_actions::http::HttpRequest;
use isthmus_actions::oci::signer::{authorization, prepare, signing_string, BODY_HEADERS};
use isthmus_actions::oci::{
    KeyFormat, OciAuth, OciDns, OciDnsConfig, OciRouteTable, OciRouteTableConfig, RsaKey,
};
use isthmus_actions::{
    DnsBackend, FailureKind, RRset, RecordRef, RecordType, RouteTableBackend, TableRoutes,
};
use isthmus_tests::oci_stub::OciStub;
use serde_json::{json, Value};

// Oracle's test vector (OCI docs "Request Signatures"; oci-go-sdk common/http_signer_test.go).
const TENANCY: &str =
    "ocid1.tenancy.oc1..aaaaaaaaba3pv6wkcr4jqae5f15p2b2m2yt2j6rx32uzr4h25vqstifsfdsq";
const USER: &str = "ocid1.user.oc1..aaaaaaaat5nvwcna5j6aqzjcaty5eqbb6qt2jvpkanghtgdaqedqw3rynjq";
const FINGERPRINT: &str = "20:3b:97:13:55:1c:5b:0d:d3:37:d8:50:4e:c5:3a:34";
const DATE: &str = "Thu, 05 Jan 2014 21:31:40 GMT";
const GET_URL: &str = "https://iaas.us-phoenix-1.oraclecloud.com/20160918/instances?availabilityDomain=Pjwf%3A%20PHX-AD-1&compartmentId=ocid1.compartment.oc1..aaaaaaaam3we6vgnherjq5q2idnccdflvjsnog7mlr6rtdb25gilchfeyjxa&displayName=TeamXInstances&volumeId=ocid1.volume.oc1.phx.abyhqljrgvttnlx73nmrwfaux7kcvzfs3s66izvxf2h4lgvyndsdsnoiwr5q";
const GET_SIGNING_STRING: &str = "date: Thu, 05 Jan 2014 21:31:40 GMT\n(request-target): get /20160918/instances?availabilityDomain=Pjwf%3A%20PHX-AD-1&compartmentId=ocid1.compartment.oc1..aaaaaaaam3we6vgnherjq5q2idnccdflvjsnog7mlr6rtdb25gilchfeyjxa&displayName=TeamXInstances&volumeId=ocid1.volume.oc1.phx.abyhqljrgvttnlx73nmrwfaux7kcvzfs3s66izvxf2h4lgvyndsdsnoiwr5q\nhost: iaas.us-phoenix-1.oraclecloud.com";
const GET_SIGNATURE: &str = "GBas7grhyrhSKHP6AVIj/h5/Vp8bd/peM79H9Wv8kjoaCivujVXlpbKLjMPeDUhxkFIWtTtLBj3sUzaFj34XE6YZAHc9r2DmE4pMwOAy/kiITcZxa1oHPOeRheC0jP2dqbTll8fmTZVwKZOKHYPtrLJIJQHJjNvxFWeHQjMaR7M=";
const GET_AUTHORIZATION: &str = "Signature version=\"1\",headers=\"date (request-target) host\",keyId=\"ocid1.tenancy.oc1..aaaaaaaaba3pv6wkcr4jqae5f15p2b2m2yt2j6rx32uzr4h25vqstifsfdsq/ocid1.user.oc1..aaaaaaaat5nvwcna5j6aqzjcaty5eqbb6qt2jvpkanghtgdaqedqw3rynjq/20:3b:97:13:55:1c:5b:0d:d3:37:d8:50:4e:c5:3a:34\",algorithm=\"rsa-sha256\",signature=\"GBas7grhyrhSKHP6AVIj/h5/Vp8bd/peM79H9Wv8kjoaCivujVXlpbKLjMPeDUhxkFIWtTtLBj3sUzaFj34XE6YZAHc9r2DmE4pMwOAy/kiITcZxa1oHPOeRheC0jP2dqbTll8fmTZVwKZOKHYPtrLJIJQHJjNvxFWeHQjMaR7M=\"";
const POST_URL: &str = "https://iaas.us-phoenix-1.oraclecloud.com/20160918/volumeAttachments";
const POST_BODY: &str = "{\n    \"compartmentId\": \"ocid1.compartment.oc1..aaaaaaaam3we6vgnherjq5q2idnccdflvjsnog7mlr6rtdb25gilchfeyjxa\",\n    \"instanceId\": \"ocid1.instance.oc1.phx.abuw4ljrlsfiqw6vzzxb43vyypt4pkodawglp3wqxjqofakrwvou52gb6s5a\",\n    \"volumeId\": \"ocid1.volume.oc1.phx.abyhqljrgvttnlx73nmrwfaux7kcvzfs3s66izvxf2h4lgvyndsdsnoiwr5q\"\n}";
const POST_SIGNING_STRING: &str = "date: Thu, 05 Jan 2014 21:31:40 GMT\n(request-target): post /20160918/volumeAttachments\nhost: iaas.us-phoenix-1.oraclecloud.com\ncontent-length: 316\ncontent-type: application/json\nx-content-sha256: V9Z20UJTvkvpJ50flBzKE32+6m2zJjweHpDMX/U4Uy0=";
const POST_SIGNATURE: &str = "Mje8vIDPlwIHmD/cTDwRxE7HaAvBg16JnVcsuqaNRim23fFPgQfLoOOxae6WqKb1uPjYEl0qIdazWaBy/Ml8DRhqlocMwoSXv0fbukP8J5N80LCmzT/FFBvIvTB91XuXI3hYfP9Zt1l7S6ieVadHUfqBedWH0itrtPJBgKmrWso=";
const POST_AUTHORIZATION: &str = "Signature version=\"1\",headers=\"date (request-target) host content-length content-type x-content-sha256\",keyId=\"ocid1.tenancy.oc1..aaaaaaaaba3pv6wkcr4jqae5f15p2b2m2yt2j6rx32uzr4h25vqstifsfdsq/ocid1.user.oc1..aaaaaaaat5nvwcna5j6aqzjcaty5eqbb6qt2jvpkanghtgdaqedqw3rynjq/20:3b:97:13:55:1c:5b:0d:d3:37:d8:50:4e:c5:3a:34\",algorithm=\"rsa-sha256\",signature=\"Mje8vIDPlwIHmD/cTDwRxE7HaAvBg16JnVcsuqaNRim23fFPgQfLoOOxae6WqKb1uPjYEl0qIdazWaBy/Ml8DRhqlocMwoSXv0fbukP8J5N80LCmzT/FFBvIvTB91XuXI3hYfP9Zt1l7S6ieVadHUfqBedWH0itrtPJBgKmrWso=\"";

fn published_key() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/oci-published-test-key.pem")
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An RSA key made for one test, in every form the tests need.
struct TestKey {
    dir: tempfile::TempDir,
    /// DER `RSAPublicKey`, for the stub.
    public_der: Vec<u8>,
}

impl TestKey {
    fn new() -> TestKey {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
        // OpenSSL 3 writes PKCS#8; -traditional gives the PKCS#1 that `oci setup keys` writes.
        openssl(&["genrsa", "-out", &p("pkcs8.pem"), "2048"]);
        openssl(&[
            "rsa",
            "-in",
            &p("pkcs8.pem"),
            "-traditional",
            "-out",
            &p("pkcs1.pem"),
        ]);
        openssl(&[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            &p("pkcs8.pem"),
            "-outform",
            "DER",
            "-out",
            &p("pkcs8.der"),
        ]);
        openssl(&[
            "rsa",
            "-in",
            &p("pkcs8.pem"),
            "-traditional",
            "-outform",
            "DER",
            "-out",
            &p("pkcs1.der"),
        ]);
        openssl(&[
            "rsa",
            "-in",
            &p("pkcs8.pem"),
            "-RSAPublicKey_out",
            "-outform",
            "DER",
            "-out",
            &p("public.der"),
        ]);
        let public_der = std::fs::read(p("public.der")).unwrap();
        TestKey { dir, public_der }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn pem(&self, format: KeyFormat) -> String {
        let name = match format {
            KeyFormat::Pkcs8 => "pkcs8.pem",
            KeyFormat::Pkcs1 => "pkcs1.pem",
        };
        std::fs::read_to_string(self.path(name)).unwrap()
    }

    fn auth(&self, format: KeyFormat) -> Arc<OciAuth> {
        Arc::new(OciAuth {
            tenancy: TENANCY.into(),
            user: USER.into(),
            fingerprint: FINGERPRINT.into(),
            key: RsaKey::from_pem(&self.pem(format)).unwrap(),
        })
    }
}

fn key_id() -> String {
    format!("{TENANCY}/{USER}/{FINGERPRINT}")
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> &'a str {
    req.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} header"))
}

#[test]
fn oracles_published_test_vector_is_reproduced_byte_for_byte() {
    let pem = std::fs::read_to_string(published_key()).unwrap();
    // The vector's key has 1024 bits. ring signs with 2048 to 4096 bits only, as OCI accepts
    // API keys of 2048 bits or more; so the RSA step is checked by verifying the published
    // signatures over our signing strings, and every other step byte for byte.
    let err = RsaKey::from_pem(&pem).unwrap_err();
    assert_eq!(err.kind, FailureKind::Rejected);
    assert!(err.message.contains("2048"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let public = dir.path().join("public.der");
    openssl(&[
        "rsa",
        "-in",
        published_key().to_str().unwrap(),
        "-RSAPublicKey_out",
        "-outform",
        "DER",
        "-out",
        public.to_str().unwrap(),
    ]);
    let public = std::fs::read(public).unwrap();
    let verify = |text: &str, signature: &str| {
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
            &public,
        )
        .verify(text.as_bytes(), &B64.decode(signature).unwrap())
        .is_ok()
    };

    let mut get = HttpRequest {
        method: "GET".into(),
        url: GET_URL.into(),
        headers: vec![],
        body: vec![],
    };
    let names = prepare(&mut get, DATE).unwrap();
    let text = signing_string(&get, names).unwrap();
    assert_eq!(text, GET_SIGNING_STRING);
    assert!(
        verify(&text, GET_SIGNATURE),
        "the published GET signature does not verify over our signing string"
    );
    assert!(
        !verify(&text.replace("get ", "put "), GET_SIGNATURE),
        "verification accepts anything"
    );
    assert_eq!(
        authorization(&key_id(), names, GET_SIGNATURE),
        GET_AUTHORIZATION
    );

    let mut post = HttpRequest {
        method: "POST".into(),
        url: POST_URL.into(),
        headers: vec![],
        body: POST_BODY.as_bytes().to_vec(),
    };
    let names = prepare(&mut post, DATE).unwrap();
    assert_eq!(names, BODY_HEADERS);
    assert_eq!(header(&post, "content-length"), "316");
    assert_eq!(
        header(&post, "x-content-sha256"),
        "V9Z20UJTvkvpJ50flBzKE32+6m2zJjweHpDMX/U4Uy0="
    );
    let text = signing_string(&post, names).unwrap();
    assert_eq!(text, POST_SIGNING_STRING);
    assert!(
        verify(&text, POST_SIGNATURE),
        "the published POST signature does not verify over our signing string"
    );
    assert_eq!(
        authorization(&key_id(), names, POST_SIGNATURE),
        POST_AUTHORIZATION
    );
}

#[test]
fn keys_load_from_pem_and_der_in_both_formats_and_debug_shows_no_key() {
    let key = TestKey::new();
    for format in [KeyFormat::Pkcs1, KeyFormat::Pkcs8] {
        let name = match format {
            KeyFormat::Pkcs8 => "pkcs8.der",
            KeyFormat::Pkcs1 => "pkcs1.der",
        };
        let der = std::fs::read(key.path(name)).unwrap();
        let k = RsaKey::from_der(&der, format).unwrap();
        assert_eq!(k.bits(), 2048);
        assert_eq!(k.public_key_der(), key.public_der.as_slice());
        // The other format's parser refuses it: the format is not guessed.
        let other = match format {
            KeyFormat::Pkcs8 => KeyFormat::Pkcs1,
            KeyFormat::Pkcs1 => KeyFormat::Pkcs8,
        };
        assert!(RsaKey::from_der(&der, other).is_err());
    }
    let auth = key.auth(KeyFormat::Pkcs1);
    let debug = format!("{auth:?}");
    assert!(debug.contains("RsaKey(2048 bits)"), "{debug}");
    let pem = key.pem(KeyFormat::Pkcs1);
    let secret_line = pem.lines().nth(5).unwrap();
    assert!(!debug.contains(secret_line), "{debug}");
}

/// The virtualenv's python with `oci` importable, or `None` (skip) outside CI.
fn sdk_python() -> Option<PathBuf> {
    let dir = std::env::var("ISTHMUS_PYENV").unwrap_or_else(|_| "/var/tmp/isthmus-pyenv".into());
    let python = Path::new(&dir).join("bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import oci"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    let why = format!(
        "{} cannot import oci (set ISTHMUS_PYENV to a virtualenv with the oci SDK)",
        python.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{why}");
    }
    eprintln!("SKIP: {why}");
    None
}

/// Sign `cases` (method, URL, body) with `oci.signer.Signer` and the key in `key_file`, with
/// the date header fixed; no request is sent.
fn sdk_sign(python: &Path, key_file: &Path, cases: &[(&str, &str, Option<&str>)]) -> Vec<Value> {
    const SCRIPT: &str = r#"
import json, sys
import oci
from oci._vendor import requests
args = json.loads(sys.argv[1])
signer = oci.signer.Signer(args["tenancy"], args["user"], args["fingerprint"], args["key_file"])
out = []
for method, url, body in args["cases"]:
    headers = {"date": args["date"]}
    if body is not None:
        body = body.encode("utf-8")
    prepared = requests.Request(method, url, data=body, headers=headers).prepare()
    signer(prepared)
    out.append({k: prepared.headers.get(k) for k in
                ["authorization", "host", "content-length", "content-type", "x-content-sha256"]})
print(json.dumps(out))
"#;
    let args = json!({
        "tenancy": TENANCY, "user": USER, "fingerprint": FINGERPRINT,
        "key_file": key_file, "date": DATE, "cases": cases,
    });
    let out = Command::new(python)
        .args(["-c", SCRIPT, &args.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// An Authorization header's parameters in the Python SDK's (alphabetical) order.
fn alphabetical(header: &str) -> String {
    let params = header.strip_prefix("Signature ").unwrap();
    let mut parts: Vec<&str> = params.split(',').collect();
    parts.sort_by_key(|p| p.split_once('=').unwrap().0);
    format!("Signature {}", parts.join(","))
}

#[test]
fn our_signatures_equal_the_oci_python_sdks() {
    let Some(python) = sdk_python() else { return };
    // The SDK as the baseline: it reproduces Oracle's vector.
    let vector = sdk_sign(
        &python,
        &published_key(),
        &[("GET", GET_URL, None), ("POST", POST_URL, Some(POST_BODY))],
    );
    assert_eq!(
        vector[0]["authorization"],
        json!(alphabetical(GET_AUTHORIZATION))
    );
    assert_eq!(
        vector[1]["authorization"],
        json!(alphabetical(POST_AUTHORIZATION))
    );

    let key = TestKey::new();
    let body =
        r#"{"items":[{"domain":"gw.example.com","rtype":"A","rdata":"192.0.2.7","ttl":30}]}"#;
    let cases = [
        ("GET", "https://dns.us-ashburn-1.oraclecloud.com/20180115/zones/example.com/records/gw.example.com/A?scope=PRIVATE&viewId=ocid1.dnsview.oc1.iad.aaaa", None),
        ("PUT", "https://dns.us-ashburn-1.oraclecloud.com/20180115/zones/example.com/records/gw.example.com/A", Some(body)),
        ("PUT", "https://iaas.us-ashburn-1.oraclecloud.com/20160918/routeTables/ocid1.routetable.oc1.iad.aaaa", Some("{}")),
        ("GET", "http://127.0.0.1:8443/20160918/routeTables/ocid1.routetable.oc1.iad.aaaa", None),
    ];
    for (format, file) in [
        (KeyFormat::Pkcs1, "pkcs1.pem"),
        (KeyFormat::Pkcs8, "pkcs8.pem"),
    ] {
        let auth = key.auth(format);
        let theirs = sdk_sign(&python, &key.path(file), &cases);
        for ((method, url, body), theirs) in cases.iter().zip(theirs) {
            let mut ours = HttpRequest {
                method: method.to_string(),
                url: url.to_string(),
                headers: vec![],
                body: body.unwrap_or("").as_bytes().to_vec(),
            };
            auth.sign_dated(&mut ours, DATE).unwrap();
            let context = format!("{format:?} {method} {url}");
            assert_eq!(
                json!(alphabetical(header(&ours, "authorization"))),
                theirs["authorization"],
                "{context}"
            );
            assert_eq!(json!(header(&ours, "host")), theirs["host"], "{context}");
            if body.is_some() {
                for h in ["content-length", "content-type", "x-content-sha256"] {
                    assert_eq!(json!(header(&ours, h)), theirs[h], "{context}: {h}");
                }
            }
        }
    }
}

const ZONE: &str = "example.com";
const PRIV_A: &str = "ocid1.privateip.oc1.iad.gateway-a";
const PRIV_B: &str = "ocid1.privateip.oc1.iad.gateway-b";
const DRG: &str = "ocid1.drg.oc1.iad.fallback";
const TABLE: &str = "ocid1.routetable.oc1.iad.stub";

fn dns(stub: &OciStub, auth: Arc<OciAuth>, view: Option<&str>) -> OciDns {
    OciDns::new(OciDnsConfig {
        zone: ZONE.into(),
        view_id: view.map(str::to_string),
        endpoint: Some(stub.url()),
        region: "us-ashburn-1".into(),
        auth,
        timeout: Duration::from_secs(5),
    })
    .unwrap()
}

fn rec(name: &str, rtype: RecordType) -> RecordRef {
    RecordRef {
        name: name.into(),
        rtype,
    }
}

fn set(ttl: u32, values: &[&str]) -> RRset {
    RRset::new(ttl, values.iter().map(|v| v.to_string()).collect())
}

fn count(stub: &OciStub, prefix: &str) -> usize {
    stub.log().iter().filter(|l| l.starts_with(prefix)).count()
}

async fn start(key: &TestKey) -> OciStub {
    let stub = OciStub::start(key.public_der.clone(), &key_id()).await;
    stub.add_zone(ZONE, None);
    stub
}

#[tokio::test]
async fn a_dns_replace_changes_the_record_on_the_etag_of_the_read() {
    let key = TestKey::new();
    let stub = start(&key).await;
    stub.set_record(ZONE, "gw.example.com", "A", &[("192.0.2.1", 60)]);
    let dns = dns(&stub, key.auth(KeyFormat::Pkcs1), None);
    let gw = rec("gw.example.com.", RecordType::A);

    let seen = dns.read(&gw).await.unwrap();
    assert_eq!(seen, Some(set(60, &["192.0.2.1"])));
    let new = set(30, &["198.51.100.7"]);
    dns.replace(&gw, seen.as_ref(), &new).await.unwrap();
    assert_eq!(
        stub.record(ZONE, "gw.example.com", "A"),
        vec![("198.51.100.7".into(), 30)]
    );
    assert_eq!(dns.read(&gw).await.unwrap(), Some(new.clone()));

    // A second change right after the first writes on the etag of the first: no read between.
    let gets = count(&stub, "GET");
    let newer = set(30, &["198.51.100.7", "198.51.100.8"]);
    dns.replace(&gw, Some(&new), &newer).await.unwrap();
    assert_eq!(count(&stub, "GET"), gets);
    assert_eq!(
        stub.record(ZONE, "gw.example.com", "A"),
        vec![("198.51.100.7".into(), 30), ("198.51.100.8".into(), 30)]
    );

    // An absent set is created on the etag of the empty read.
    let v6 = rec("gw6.example.com.", RecordType::Aaaa);
    assert_eq!(dns.read(&v6).await.unwrap(), None);
    dns.replace(&v6, None, &set(30, &["2001:db8::7"]))
        .await
        .unwrap();
    assert_eq!(
        stub.record(ZONE, "gw6.example.com", "AAAA"),
        vec![("2001:db8::7".into(), 30)]
    );

    let log = stub.log();
    assert!(log.iter().all(|l| l.ends_with("→ 200")), "{log:#?}");
}

#[tokio::test]
async fn a_change_by_another_writer_between_read_and_replace_is_a_conflict_and_stays() {
    let key = TestKey::new();
    let stub = start(&key).await;
    stub.set_record(ZONE, "gw.example.com", "A", &[("192.0.2.1", 60)]);
    let dns = dns(&stub, key.auth(KeyFormat::Pkcs8), None);
    let gw = rec("gw.example.com.", RecordType::A);

    let seen = dns.read(&gw).await.unwrap();
    stub.set_record(ZONE, "gw.example.com", "A", &[("203.0.113.9", 60)]);
    let err = dns
        .replace(&gw, seen.as_ref(), &set(30, &["198.51.100.7"]))
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::Conflict, "{err}");
    assert!(
        stub.log().last().unwrap().ends_with("→ 412"),
        "{:#?}",
        stub.log()
    );
    assert_eq!(
        stub.record(ZONE, "gw.example.com", "A"),
        vec![("203.0.113.9".into(), 60)]
    );

    // Without a read of its own, the provider reads first and does not write at all.
    let fresh = self::dns(&stub, key.auth(KeyFormat::Pkcs8), None);
    let puts = count(&stub, "PUT");
    let err = fresh
        .replace(&gw, seen.as_ref(), &set(30, &["198.51.100.7"]))
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::Conflict, "{err}");
    assert!(err.message.contains("203.0.113.9"), "{err}");
    assert_eq!(count(&stub, "PUT"), puts);
    assert_eq!(
        stub.record(ZONE, "gw.example.com", "A"),
        vec![("203.0.113.9".into(), 60)]
    );

    // Read again, decide again: that works.
    let seen = dns.read(&gw).await.unwrap();
    dns.replace(&gw, seen.as_ref(), &set(30, &["198.51.100.7"]))
        .await
        .unwrap();
    assert_eq!(
        stub.record(ZONE, "gw.example.com", "A"),
        vec![("198.51.100.7".into(), 30)]
    );
}

#[tokio::test]
async fn a_wrong_key_or_a_skewed_clock_is_an_auth_failure() {
    let key = TestKey::new();
    let stub = start(&key).await;
    stub.set_record(ZONE, "gw.example.com", "A", &[("192.0.2.1", 60)]);
    stub.set_rules(TABLE, vec![]);
    let gw = rec("gw.example.com.", RecordType::A);

    let wrong = TestKey::new();
    let err = dns(&stub, wrong.auth(KeyFormat::Pkcs1), None)
        .read(&gw)
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::Auth, "{err}");
    assert!(err.message.contains("NotAuthenticated"), "{err}");
    let table = OciRouteTable::new(OciRouteTableConfig {
        route_table_id: TABLE.into(),
        endpoint: Some(stub.url()),
        region: "us-ashburn-1".into(),
        auth: wrong.auth(KeyFormat::Pkcs8),
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    let err = table.read(&["10.2.0.0/16".into()]).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::Auth, "{err}");

    let skewed =
        |by: Duration| -> isthmus_actions::oci::Clock { Arc::new(move || SystemTime::now() + by) };
    let late =
        dns(&stub, key.auth(KeyFormat::Pkcs1), None).with_clock(skewed(Duration::from_secs(600)));
    let err = late.read(&gw).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::Auth, "{err}");
    assert!(err.message.contains("off"), "{err}");
    // Two minutes off is within OCI's five.
    let near =
        dns(&stub, key.auth(KeyFormat::Pkcs1), None).with_clock(skewed(Duration::from_secs(120)));
    assert_eq!(near.read(&gw).await.unwrap(), Some(set(60, &["192.0.2.1"])));
    assert_eq!(
        stub.record(ZONE, "gw.example.com", "A"),
        vec![("192.0.2.1".into(), 60)]
    );
}

#[tokio::test]
async fn a_private_zone_is_reached_through_its_view() {
    let key = TestKey::new();
    let stub = OciStub::start(key.public_der.clone(), &key_id()).await;
    let view = "ocid1.dnsview.oc1.iad.internal";
    stub.add_zone(ZONE, Some(view));
    stub.set_record(ZONE, "gw.example.com", "A", &[("10.0.0.5", 60)]);
    let gw = rec("gw.example.com.", RecordType::A);

    let dns = dns(&stub, key.auth(KeyFormat::Pkcs1), Some(view));
    let seen = dns.read(&gw).await.unwrap();
    assert_eq!(seen, Some(set(60, &["10.0.0.5"])));
    dns.replace(&gw, seen.as_ref(), &set(60, &["10.0.0.6"]))
        .await
        .unwrap();
    assert_eq!(
        stub.record(ZONE, "gw.example.com", "A"),
        vec![("10.0.0.6".into(), 60)]
    );
    assert!(stub.log().iter().all(|l| !l.contains("/records/")
        || l.contains("?scope=PRIVATE&viewId=ocid1.dnsview.oc1.iad.internal")));

    // Without the view the zone is not found: the read sees nothing, the write says why.
    let lost = self::dns(&stub, key.auth(KeyFormat::Pkcs1), None);
    assert_eq!(lost.read(&gw).await.unwrap(), None);
    let err = lost
        .replace(&gw, None, &set(60, &["10.0.0.7"]))
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::Rejected, "{err}");
    assert!(err.message.contains("NotAuthorizedOrNotFound"), "{err}");
    assert_eq!(
        stub.record(ZONE, "gw.example.com", "A"),
        vec![("10.0.0.6".into(), 60)]
    );
}

/// A table with rules of others around ours: a default route, a service gateway, and a
/// foreign DRG route; ours is 10.2.0.0/16.
fn foreign_and_ours() -> Vec<Value> {
    vec![
        json!({"destination": "0.0.0.0/0", "destinationType": "CIDR_BLOCK",
               "networkEntityId": "ocid1.internetgateway.oc1.iad.igw", "description": "default route",
               "routeType": "STATIC", "cidrBlock": null}),
        json!({"destination": "all-iad-services-in-oracle-services-network",
               "destinationType": "SERVICE_CIDR_BLOCK", "networkEntityId": "ocid1.servicegateway.oc1.iad.sgw"}),
        json!({"cidrBlock": "10.2.0.0/16", "destination": "10.2.0.0/16", "destinationType": "CIDR_BLOCK",
               "networkEntityId": PRIV_A, "description": "isthmus"}),
        json!({"destination": "192.168.10.0/24", "destinationType": "CIDR_BLOCK",
               "networkEntityId": "ocid1.drg.oc1.iad.theirs", "description": "someone else's"}),
    ]
}

fn table(stub: &OciStub, key: &TestKey) -> OciRouteTable {
    OciRouteTable::new(OciRouteTableConfig {
        route_table_id: TABLE.into(),
        endpoint: Some(stub.url()),
        region: "us-ashburn-1".into(),
        auth: key.auth(KeyFormat::Pkcs1),
        timeout: Duration::from_secs(5),
    })
    .unwrap()
}

fn routes(pairs: &[(&str, Option<&str>)]) -> TableRoutes {
    pairs
        .iter()
        .map(|(d, t)| (d.to_string(), t.map(str::to_string)))
        .collect()
}

fn ours() -> Vec<String> {
    vec!["10.2.0.0/16".into(), "10.3.0.0/16".into()]
}

#[tokio::test]
async fn a_route_table_apply_changes_only_our_destinations_and_keeps_foreign_rules() {
    let key = TestKey::new();
    let stub = start(&key).await;
    stub.set_rules(TABLE, foreign_and_ours());
    let table = table(&stub, &key);

    let seen = table.read(&ours()).await.unwrap();
    assert_eq!(
        seen.routes,
        routes(&[("10.2.0.0/16", Some(PRIV_A)), ("10.3.0.0/16", None)])
    );
    assert!(seen.version.is_some());
    let desired = routes(&[("10.2.0.0/16", Some(PRIV_B)), ("10.3.0.0/16", Some(PRIV_B))]);
    table.apply(&seen, &desired).await.unwrap();

    let mut want = foreign_and_ours();
    want[2]["networkEntityId"] = json!(PRIV_B);
    want.push(json!({"destination": "10.3.0.0/16", "destinationType": "CIDR_BLOCK", "networkEntityId": PRIV_B}));
    assert_eq!(stub.rules(TABLE), want);

    // Applying what is there already writes nothing.
    let seen = table.read(&ours()).await.unwrap();
    assert_eq!(seen.routes, desired);
    let puts = count(&stub, "PUT");
    table.apply(&seen, &desired).await.unwrap();
    assert_eq!(count(&stub, "PUT"), puts);
    assert_eq!(stub.rules(TABLE), want);
}

#[tokio::test]
async fn a_lost_race_on_the_route_table_is_a_conflict_and_the_other_writers_rule_survives() {
    let key = TestKey::new();
    let stub = start(&key).await;
    stub.set_rules(TABLE, foreign_and_ours());
    let table = table(&stub, &key);
    let desired = routes(&[("10.2.0.0/16", Some(PRIV_B))]);

    let seen = table.read(&ours()).await.unwrap();
    let mut theirs = foreign_and_ours();
    theirs.push(json!({"destination": "172.16.0.0/12", "destinationType": "CIDR_BLOCK",
                       "networkEntityId": "ocid1.drg.oc1.iad.theirs", "description": "added meanwhile"}));
    stub.set_rules(TABLE, theirs.clone());
    let err = table.apply(&seen, &desired).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::Conflict, "{err}");
    assert!(
        stub.log().last().unwrap().ends_with("→ 412"),
        "{:#?}",
        stub.log()
    );
    assert_eq!(stub.rules(TABLE), theirs);

    // A stale version the provider never saw: read, see it differs, do not write.
    let puts = count(&stub, "PUT");
    let err = self::table(&stub, &key)
        .apply(&seen, &desired)
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::Conflict, "{err}");
    assert_eq!(count(&stub, "PUT"), puts);

    // Read again and apply: ours changes, theirs stays.
    let seen = table.read(&ours()).await.unwrap();
    table.apply(&seen, &desired).await.unwrap();
    let mut want = theirs;
    want[2]["networkEntityId"] = json!(PRIV_B);
    assert_eq!(stub.rules(TABLE), want);
}

#[tokio::test]
async fn a_route_falls_back_to_the_drg_and_is_removed_with_none() {
    let key = TestKey::new();
    let stub = start(&key).await;
    stub.set_rules(TABLE, foreign_and_ours());
    let table = table(&stub, &key);

    let seen = table.read(&ours()).await.unwrap();
    table
        .apply(
            &seen,
            &routes(&[("10.2.0.0/16", Some(DRG)), ("10.3.0.0/16", Some(DRG))]),
        )
        .await
        .unwrap();
    let seen = table.read(&ours()).await.unwrap();
    assert_eq!(
        seen.routes,
        routes(&[("10.2.0.0/16", Some(DRG)), ("10.3.0.0/16", Some(DRG))])
    );

    table
        .apply(
            &seen,
            &routes(&[("10.2.0.0/16", None), ("10.3.0.0/16", None)]),
        )
        .await
        .unwrap();
    let mut want = foreign_and_ours();
    want.remove(2);
    assert_eq!(stub.rules(TABLE), want);
    let seen = table.read(&ours()).await.unwrap();
    assert_eq!(
        seen.routes,
        routes(&[("10.2.0.0/16", None), ("10.3.0.0/16", None)])
    );
}
