//! The AWS providers (isthmus-actions `aws`): signatures byte for byte against botocore,
//! Route 53 and EC2 route tables against moto_server, the credentials chain from each of its
//! sources, and an in-test HTTP stub for what moto never does (PENDING changes, throttling).
//!
//! Tests that need the Python venv skip with a message when it is missing (and fail in CI);
//! the stub tests always run. Nothing leaves loopback.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use isthmus_actions::aws::{
    sign, CredentialChain, CredentialSettings, CredentialSource, Credentials, Ec2RouteTable,
    Ec2RouteTableSettings, Route53, Route53Settings,
};
use isthmus_actions::http::HttpRequest;
use isthmus_actions::{
    DnsBackend, FailureKind, RRset, RecordRef, RecordType, RouteTableBackend, TableRoutes,
};
use isthmus_tests::moto::{self, Moto};

const TIMEOUT: Duration = Duration::from_secs(10);

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A chain that finds fake keys in its environment (moto takes any).
fn fake_chain() -> Arc<CredentialChain> {
    Arc::new(CredentialChain::new(
        CredentialSettings::default(),
        env(&[
            ("AWS_ACCESS_KEY_ID", "AKIDTESTING"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ]),
    ))
}

fn route53(endpoint: &str, zone: &str, insync_timeout: Duration) -> Route53 {
    Route53::new(Route53Settings {
        hosted_zone_id: zone.into(),
        endpoint: Some(endpoint.into()),
        chain: fake_chain(),
        timeout: TIMEOUT,
        insync_timeout,
    })
}

fn ec2(endpoint: &str, table: &str) -> Ec2RouteTable {
    Ec2RouteTable::new(Ec2RouteTableSettings {
        route_table_id: table.into(),
        region: "eu-central-1".into(),
        endpoint: Some(endpoint.into()),
        chain: fake_chain(),
        timeout: TIMEOUT,
    })
}

fn rec(name: &str) -> RecordRef {
    RecordRef {
        name: name.into(),
        rtype: RecordType::A,
    }
}

fn a(ttl: u32, values: &[&str]) -> RRset {
    RRset::new(ttl, values.iter().map(|v| v.to_string()).collect())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Signatures against botocore.

const BOTOCORE_SIGN: &str = r#"
import sys, json, datetime
import botocore.auth as auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
out = []
for c in json.load(sys.stdin):
    fixed = datetime.datetime.strptime(c["time"], "%Y%m%dT%H%M%SZ")
    auth.get_current_datetime = lambda remove_tzinfo=True: fixed
    req = AWSRequest(method=c["method"], url=c["url"], data=c["body"].encode(), headers=c["headers"])
    auth.SigV4Auth(Credentials(c["ak"], c["sk"], c["token"]), c["service"], c["region"]).add_auth(req)
    out.append({k.lower(): v for k, v in req.headers.items()})
print(json.dumps(out))
"#;

/// The headers a signature consists of.
const SIGNATURE_HEADERS: [&str; 4] = [
    "authorization",
    "x-amz-date",
    "x-amz-content-sha256",
    "x-amz-security-token",
];

#[test]
fn every_request_we_send_is_signed_exactly_as_botocore_signs_it() {
    let Some(pyenv) = moto::pyenv("every_request_we_send_is_signed_exactly_as_botocore_signs_it")
    else {
        return;
    };
    // 2026-01-02T03:04:05Z.
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_323_045);
    let r53 = Route53::new(Route53Settings {
        hosted_zone_id: "Z0123456789ABCDEFGHIJ".into(),
        endpoint: None,
        chain: fake_chain(),
        timeout: TIMEOUT,
        insync_timeout: TIMEOUT,
    });
    let table = Ec2RouteTable::new(Ec2RouteTableSettings {
        route_table_id: "rtb-0a1b2c3d4e5f60718".into(),
        region: "eu-central-1".into(),
        endpoint: None,
        chain: fake_chain(),
        timeout: TIMEOUT,
    });
    let gw = rec("gw.example.com.");
    let requests: Vec<(&str, &str, &str, HttpRequest)> = vec![
        (
            "ChangeResourceRecordSets",
            "us-east-1",
            "route53",
            r53.change_request(
                &gw,
                Some(&a(60, &["192.0.2.1"])),
                &a(60, &["192.0.2.2", "198.51.100.7"]),
            ),
        ),
        (
            "GetChange",
            "us-east-1",
            "route53",
            r53.get_change_request("/change/C2682N5HXP0BZ4"),
        ),
        (
            "ListResourceRecordSets",
            "us-east-1",
            "route53",
            r53.list_request(&gw),
        ),
        (
            "DescribeRouteTables",
            "eu-central-1",
            "ec2",
            table.describe_request(),
        ),
        (
            "ReplaceRoute",
            "eu-central-1",
            "ec2",
            table
                .route_request("ReplaceRoute", "10.2.0.0/16", Some("eni-0123456789abcdef0"))
                .unwrap(),
        ),
    ];
    let (ak, sk) = ("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
    let token = "IQoJb3JpZ2luX2VjEtoken/with+slashes==";
    let mut cases = Vec::new();
    let mut ours = Vec::new();
    for (op, region, service, req) in &requests {
        for token in [None, Some(token)] {
            let mut signed = req.clone();
            let creds = Credentials::new(ak, sk, token.map(str::to_string));
            sign(&mut signed, &creds, region, service, time).unwrap();
            // botocore gets the request as it is before the signature (with our Host).
            let unsigned: BTreeMap<String, String> = signed
                .headers
                .iter()
                .filter(|(n, _)| !SIGNATURE_HEADERS.contains(&n.to_lowercase().as_str()))
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect();
            cases.push(serde_json::json!({
                "method": signed.method, "url": signed.url, "headers": unsigned,
                "body": String::from_utf8(signed.body.clone()).unwrap(),
                "ak": ak, "sk": sk, "token": token, "region": region, "service": service,
                "time": "20260102T030405Z",
            }));
            ours.push((format!("{op} (session token: {})", token.is_some()), signed));
        }
    }
    let out = moto::python(
        &pyenv,
        BOTOCORE_SIGN,
        &serde_json::Value::from(cases).to_string(),
        &[],
    );
    let theirs: Vec<BTreeMap<String, String>> = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(theirs.len(), ours.len());
    for ((what, signed), theirs) in ours.iter().zip(&theirs) {
        let header = |name: &str| {
            signed
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        assert!(
            header("authorization").is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260102/")),
            "{what}: {signed:?}"
        );
        for name in SIGNATURE_HEADERS {
            assert_eq!(
                header(name).as_ref(),
                theirs.get(name),
                "{what}: {name} differs from botocore's\nours: {signed:?}\nbotocore: {theirs:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Route 53 and EC2 against moto.

#[test]
fn route53_reads_the_served_set_and_replaces_it_only_while_it_is_as_read() {
    let Some(pyenv) =
        moto::pyenv("route53_reads_the_served_set_and_replaces_it_only_while_it_is_as_read")
    else {
        return;
    };
    let moto = Moto::start(&pyenv);
    moto.reset();
    let zone = moto.boto3(
        r#"
r53 = client("route53")
z = r53.create_hosted_zone(Name="example.test.", CallerReference="isthmus")["HostedZone"]["Id"]
for name, value in [("gw.example.test.", "192.0.2.1"), ("zz.example.test.", "203.0.113.9")]:
    r53.change_resource_record_sets(HostedZoneId=z, ChangeBatch={"Changes": [{"Action": "CREATE",
        "ResourceRecordSet": {"Name": name, "Type": "A", "TTL": 60, "ResourceRecords": [{"Value": value}]}}]})
print(json.dumps(z))
"#,
    );
    let zone = zone.as_str().unwrap().to_string();
    let listed = || {
        let v = moto.boto3(&format!(
            r#"
sets = client("route53").list_resource_record_sets(HostedZoneId="{zone}")["ResourceRecordSets"]
print(json.dumps({{s["Name"]: [s.get("TTL"), sorted(r["Value"] for r in s.get("ResourceRecords", []))] for s in sets if s["Type"] == "A"}}))
"#
        ));
        serde_json::to_string(&v).unwrap()
    };
    let r53 = route53(&moto.endpoint(), &zone, TIMEOUT);
    let gw = rec("gw.example.test.");
    runtime().block_on(async {
        let seen = r53.read(&gw).await.unwrap();
        assert_eq!(seen, Some(a(60, &["192.0.2.1"])));
        // The API lists from the name on: a missing name must not read as the next set.
        assert_eq!(r53.read(&rec("aa.example.test.")).await.unwrap(), None);
        assert_eq!(r53.read(&rec("gx.example.test.")).await.unwrap(), None);

        let new = a(30, &["192.0.2.2", "192.0.2.3"]);
        r53.replace(&gw, seen.as_ref(), &new).await.unwrap();
        assert_eq!(r53.read(&gw).await.unwrap(), Some(new.clone()));
        assert_eq!(
            listed(),
            r#"{"gw.example.test.":[30,["192.0.2.2","192.0.2.3"]],"zz.example.test.":[60,["203.0.113.9"]]}"#
        );

        // Somebody else's value: the batch fails as a whole, and nothing changed.
        let stale = a(60, &["192.0.2.99"]);
        let err = r53
            .replace(&gw, Some(&stale), &a(60, &["198.51.100.1"]))
            .await
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::Conflict, "{err}");
        assert!(err.message.contains("gw.example.test. A"), "{err}");
        assert_eq!(r53.read(&gw).await.unwrap(), Some(new.clone()));
        assert!(listed().contains(r#""gw.example.test.":[30,["192.0.2.2","192.0.2.3"]]"#));

        // A set that did not exist is created.
        let fresh = rec("new.example.test.");
        r53.replace(&fresh, None, &a(60, &["192.0.2.7"])).await.unwrap();
        assert_eq!(r53.read(&fresh).await.unwrap(), Some(a(60, &["192.0.2.7"])));

        // A zone that does not exist is the operator's error.
        let err = route53(&moto.endpoint(), "ZNOSUCHZONE", TIMEOUT)
            .read(&gw)
            .await
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::Rejected, "{err}");
    });
}

#[test]
fn ec2_routes_are_created_replaced_and_deleted_while_a_foreign_route_stays() {
    let Some(pyenv) =
        moto::pyenv("ec2_routes_are_created_replaced_and_deleted_while_a_foreign_route_stays")
    else {
        return;
    };
    let moto = Moto::start(&pyenv);
    moto.reset();
    let ids = moto.boto3(
        r#"
ec2 = client("ec2", "eu-central-1")
vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
eni = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]["NetworkInterfaceId"]
other = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]["NetworkInterfaceId"]
vgw = ec2.create_vpn_gateway(Type="ipsec.1")["VpnGateway"]["VpnGatewayId"]
ec2.attach_vpn_gateway(VpcId=vpc, VpnGatewayId=vgw)
rtb = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
ec2.create_route(RouteTableId=rtb, DestinationCidrBlock="10.9.0.0/16", NetworkInterfaceId=other)
print(json.dumps({"eni": eni, "other": other, "vgw": vgw, "rtb": rtb}))
"#,
    );
    let id = |k: &str| ids[k].as_str().unwrap().to_string();
    let (eni, other, vgw, rtb) = (id("eni"), id("other"), id("vgw"), id("rtb"));
    let routes_in_moto = || {
        let v = moto.boto3(&format!(
            r#"
t = client("ec2", "eu-central-1").describe_route_tables(RouteTableIds=["{rtb}"])["RouteTables"][0]
print(json.dumps({{r["DestinationCidrBlock"]: r.get("NetworkInterfaceId") or r.get("GatewayId") for r in t["Routes"]}}))
"#
        ));
        serde_json::from_value::<BTreeMap<String, String>>(v).unwrap()
    };
    let table = ec2(&moto.endpoint(), &rtb);
    let ours = ["10.2.0.0/16".to_string()];
    let want = |t: Option<&str>| -> TableRoutes {
        [("10.2.0.0/16".to_string(), t.map(str::to_string))].into()
    };
    runtime().block_on(async {
        let mut seen = table.read(&ours).await.unwrap();
        assert_eq!(seen.routes, want(None));
        for target in [
            Some(eni.as_str()),
            Some(vgw.as_str()),
            Some(eni.as_str()),
            None,
        ] {
            table.apply(&seen, &want(target)).await.unwrap();
            seen = table.read(&ours).await.unwrap();
            assert_eq!(seen.routes, want(target), "after applying {target:?}");
            let routes = routes_in_moto();
            assert_eq!(
                routes.get("10.9.0.0/16"),
                Some(&other),
                "foreign route: {routes:?}"
            );
            assert_eq!(routes.get("10.0.0.0/16").map(String::as_str), Some("local"));
            assert_eq!(routes.get("10.2.0.0/16").map(String::as_str), target);
            // Applying the same again sends nothing that could fail.
            table.apply(&seen, &want(target)).await.unwrap();
        }

        // Our route vanished between read and write: ReplaceRoute says so.
        let stale = isthmus_actions::TableSeen {
            routes: want(Some(eni.as_str())),
            version: None,
        };
        let err = table.apply(&stale, &want(Some(&vgw))).await.unwrap_err();
        assert_eq!(err.kind, FailureKind::Conflict, "{err}");
        assert_eq!(routes_in_moto().get("10.2.0.0/16"), None);

        // A table that does not exist: AWS's words reach the operator.
        let err = ec2(&moto.endpoint(), "rtb-00000000000000000")
            .read(&ours)
            .await
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::Rejected, "{err}");
        assert!(
            err.message.contains("InvalidRouteTableID.NotFound"),
            "{err}"
        );
    });
}

#[test]
fn instance_credentials_come_from_moto_metadata_service() {
    let Some(pyenv) = moto::pyenv("instance_credentials_come_from_moto_metadata_service") else {
        return;
    };
    let moto = Moto::start(&pyenv);
    let home = tempfile::tempdir().unwrap();
    let chain = CredentialChain::new(
        CredentialSettings {
            imds_endpoint: Some(moto.endpoint()),
            ..CredentialSettings::default()
        },
        env(&[("HOME", home.path().to_str().unwrap())]),
    );
    let c = runtime().block_on(chain.credentials()).unwrap();
    assert_eq!(
        c.source(),
        &CredentialSource::InstanceMetadata {
            role: "default-role".into()
        }
    );
    assert_eq!(
        c.source().to_string(),
        "instance metadata (role default-role)"
    );
    assert_eq!(
        (
            c.access_key_id.as_str(),
            c.secret_access_key(),
            c.session_token()
        ),
        ("test-key", "test-secret-key", Some("test-session-token"))
    );
    let left = c
        .expires
        .unwrap()
        .duration_since(SystemTime::now())
        .unwrap();
    assert!(left > Duration::from_secs(3600), "expires in {left:?}");
}

// ---------------------------------------------------------------------------------------------
// The credentials chain without moto.

const TWO_PROFILES: &str = "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = default-secret\n\n[prod]\naws_access_key_id=AKIDPROD\naws_secret_access_key=prod-secret\naws_session_token=prod-token\n";

fn credentials_file(mode: u32) -> (tempfile::TempDir, std::path::PathBuf) {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join(".aws")).unwrap();
    let path = home.path().join(".aws/credentials");
    std::fs::write(&path, TWO_PROFILES).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    (home, path)
}

/// A metadata address where nothing answers, so that a test that reaches IMDS fails fast.
fn dead_imds() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

#[test]
fn the_environment_comes_first_then_the_configured_profile_of_the_shared_file() {
    let (home, path) = credentials_file(0o600);
    let h = home.path().to_str().unwrap();
    let get = |settings: CredentialSettings, vars: &[(&str, &str)]| {
        let chain = CredentialChain::new(
            CredentialSettings {
                imds_endpoint: Some(dead_imds()),
                ..settings
            },
            env(vars),
        );
        runtime().block_on(chain.credentials())
    };
    let c = get(
        CredentialSettings::default(),
        &[
            ("HOME", h),
            ("AWS_ACCESS_KEY_ID", "AKIDENV"),
            ("AWS_SECRET_ACCESS_KEY", "env-secret"),
            ("AWS_SESSION_TOKEN", "env-token"),
        ],
    )
    .unwrap();
    assert_eq!(c.source(), &CredentialSource::Environment);
    assert_eq!(
        (
            c.access_key_id.as_str(),
            c.secret_access_key(),
            c.session_token()
        ),
        ("AKIDENV", "env-secret", Some("env-token"))
    );

    let c = get(CredentialSettings::default(), &[("HOME", h)]).unwrap();
    assert_eq!(
        (c.access_key_id.as_str(), c.session_token()),
        ("AKIDDEFAULT", None)
    );
    assert_eq!(
        c.source().to_string(),
        format!("shared file {} (profile default)", path.display())
    );

    let c = get(
        CredentialSettings::default(),
        &[("HOME", h), ("AWS_PROFILE", "prod")],
    )
    .unwrap();
    assert_eq!(
        (
            c.access_key_id.as_str(),
            c.secret_access_key(),
            c.session_token()
        ),
        ("AKIDPROD", "prod-secret", Some("prod-token"))
    );

    // The setting wins over the environment; the file can be named anywhere.
    let elsewhere = tempfile::tempdir().unwrap();
    let c = get(
        CredentialSettings {
            profile: Some("prod".into()),
            credentials_file: Some(path.clone()),
            ..CredentialSettings::default()
        },
        &[
            ("HOME", elsewhere.path().to_str().unwrap()),
            ("AWS_PROFILE", "default"),
        ],
    )
    .unwrap();
    assert_eq!(
        c.source(),
        &CredentialSource::SharedFile {
            path: path.clone(),
            profile: "prod".into()
        }
    );

    // A profile asked for and missing is an error, not the instance role.
    let err = get(
        CredentialSettings {
            profile: Some("dev".into()),
            ..CredentialSettings::default()
        },
        &[("HOME", h)],
    )
    .unwrap_err();
    assert_eq!(err.kind, FailureKind::Auth);
    assert!(err.message.contains("no profile [dev]"), "{err}");
    let err = get(
        CredentialSettings::default(),
        &[("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")],
    )
    .unwrap_err();
    assert!(err.message.contains("/nonexistent/credentials"), "{err}");
    let err = get(
        CredentialSettings::default(),
        &[("HOME", h), ("AWS_ACCESS_KEY_ID", "AKIDENV")],
    )
    .unwrap_err();
    assert!(
        err.message.contains("AWS_SECRET_ACCESS_KEY is not"),
        "{err}"
    );
}

#[test]
fn a_credentials_file_readable_by_others_is_refused() {
    let (home, path) = credentials_file(0o644);
    let chain = CredentialChain::new(
        CredentialSettings {
            imds_endpoint: Some(dead_imds()),
            ..CredentialSettings::default()
        },
        env(&[("HOME", home.path().to_str().unwrap())]),
    );
    let err = runtime().block_on(chain.credentials()).unwrap_err();
    assert_eq!(err.kind, FailureKind::Auth);
    assert!(
        err.message
            .contains("accessible to group or others (mode 0644)")
            && err
                .message
                .contains(&format!("chmod 600 {}", path.display())),
        "{err}"
    );
    assert!(!err.message.contains("secret"), "{err}");
}

#[test]
fn without_any_source_the_error_names_each_one_tried() {
    let home = tempfile::tempdir().unwrap();
    let chain = CredentialChain::new(
        CredentialSettings {
            imds_endpoint: Some(dead_imds()),
            ..CredentialSettings::default()
        },
        env(&[("HOME", home.path().to_str().unwrap())]),
    );
    let err = runtime().block_on(chain.credentials()).unwrap_err();
    assert_eq!(err.kind, FailureKind::Auth, "{err}");
    assert!(
        err.message.contains("none in the environment")
            && err.message.contains("no profile [default]")
            && err.message.contains("instance metadata failed"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// An HTTP stub for what moto never does.

/// One request as the stub saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    #[allow(dead_code)]
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Answer = Box<dyn Fn(&Seen, &[Seen]) -> (u16, String) + Send + Sync>;

/// Answers each request with `answer(request, earlier requests)`; stops on drop.
struct Stub {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Stub {
    async fn start(answer: Answer) -> Stub {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
        let answer = Arc::new(answer);
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (log, answer) = (log.clone(), answer.clone());
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (log, answer) = (log.clone(), answer.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let seen = Seen {
                                method: parts.method.to_string(),
                                path: parts.uri.to_string(),
                                headers: parts
                                    .headers
                                    .iter()
                                    .map(|(n, v)| {
                                        (n.to_string(), v.to_str().unwrap_or("").to_string())
                                    })
                                    .collect(),
                                body: String::from_utf8_lossy(&body).into_owned(),
                            };
                            let (status, text) = {
                                let mut log = log.lock().unwrap();
                                let out = answer(&seen, &log);
                                log.push(seen);
                                out
                            };
                            Ok::<_, Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from(text)))
                                    .unwrap(),
                            )
                        }
                    },
                );
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Stub { addr, seen, task }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn change_info(root: &str, status: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?><{root} xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\">\
         <ChangeInfo><Id>/change/C1</Id><Status>{status}</Status>\
         <SubmittedAt>2026-01-02T03:04:05Z</SubmittedAt></ChangeInfo></{root}>"
    )
}

fn r53_error(code: &str, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?><ErrorResponse xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\">\
         <Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>\
         <RequestId>r</RequestId></ErrorResponse>"
    )
}

#[tokio::test]
async fn a_replace_waits_while_the_change_is_pending_and_returns_once_it_is_insync() {
    let stub = Stub::start(Box::new(|req, earlier| {
        if req.method == "POST" {
            return (
                200,
                change_info("ChangeResourceRecordSetsResponse", "PENDING"),
            );
        }
        let polls = earlier.iter().filter(|r| r.method == "GET").count();
        let status = if polls < 2 { "PENDING" } else { "INSYNC" };
        (200, change_info("GetChangeResponse", status))
    }))
    .await;
    let r53 = route53(&stub.endpoint(), "Z1", Duration::from_secs(10));
    let gw = rec("gw.example.test.");
    r53.replace(&gw, Some(&a(60, &["192.0.2.1"])), &a(60, &["192.0.2.2"]))
        .await
        .unwrap();
    let seen = stub.seen();
    let paths: Vec<&str> = seen.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/2013-04-01/hostedzone/Z1/rrset/",
            "/2013-04-01/change/C1",
            "/2013-04-01/change/C1",
            "/2013-04-01/change/C1"
        ]
    );
    for r in &seen {
        let auth = r.header("authorization").unwrap_or_default();
        assert!(auth.contains("/us-east-1/route53/aws4_request"), "{r:?}");
    }
}

#[tokio::test]
async fn a_change_that_never_gets_insync_is_not_verified_within_the_timeout() {
    let stub = Stub::start(Box::new(|req, _| {
        let root = if req.method == "POST" {
            "ChangeResourceRecordSetsResponse"
        } else {
            "GetChangeResponse"
        };
        (200, change_info(root, "PENDING"))
    }))
    .await;
    let r53 = route53(&stub.endpoint(), "Z1", Duration::from_millis(600));
    let started = tokio::time::Instant::now();
    let err = r53
        .replace(&rec("gw.example.test."), None, &a(60, &["192.0.2.2"]))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.kind, FailureKind::NotVerified, "{err}");
    assert!(
        err.message.contains("C1") && err.message.contains("PENDING"),
        "{err}"
    );
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // 50, 100, 200 ms, then the rest of the 600 ms: a few polls, not a busy loop.
    let polls = stub.seen().iter().filter(|r| r.method == "GET").count();
    assert!((3..=5).contains(&polls), "{polls} polls");
}

#[tokio::test]
async fn throttling_and_refused_signatures_are_told_apart() {
    let answers: [(u16, String, FailureKind); 5] = [
        (400, r53_error("Throttling", "Rate exceeded"), FailureKind::Throttled),
        (
            400,
            r53_error("PriorRequestNotComplete", "The request was rejected because Route 53 was still processing a prior request."),
            FailureKind::Throttled,
        ),
        (503, String::new(), FailureKind::Throttled),
        (
            403,
            r53_error("SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided."),
            FailureKind::Auth,
        ),
        (
            400,
            "<?xml version=\"1.0\"?><InvalidChangeBatch xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><Messages><Message>Tried to delete resource record set [name='gw.example.test.', type='A'] but the values provided do not match the current values</Message></Messages></InvalidChangeBatch>".to_string(),
            FailureKind::Conflict,
        ),
    ];
    for (status, body, kind) in answers {
        let body = body.clone();
        let stub = Stub::start(Box::new(move |_, _| (status, body.clone()))).await;
        let r53 = route53(&stub.endpoint(), "Z1", TIMEOUT);
        let err = r53
            .replace(
                &rec("gw.example.test."),
                Some(&a(60, &["192.0.2.1"])),
                &a(60, &["192.0.2.2"]),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind, kind, "HTTP {status}: {err}");
        assert!(
            !err.message.contains("testing"),
            "no secret in messages: {err}"
        );
    }

    let stub = Stub::start(Box::new(|_, _| {
        (
            503,
            "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors></Response>".into(),
        )
    }))
    .await;
    let err = ec2(&stub.endpoint(), "rtb-1")
        .read(&["10.2.0.0/16".to_string()])
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::Throttled, "{err}");
    assert!(err.message.contains("RequestLimitExceeded"), "{err}");
    let auth = stub.seen()[0]
        .header("authorization")
        .unwrap_or_default()
        .to_string();
    assert!(auth.contains("/eu-central-1/ec2/aws4_request"), "{auth}");
}

#[tokio::test]
async fn instance_credentials_need_the_session_token_and_are_cached_until_shortly_before_expiry() {
    let stub = Stub::start(Box::new(|req, _| match (req.method.as_str(), req.path.as_str()) {
        ("PUT", "/latest/api/token") => match req.header("x-aws-ec2-metadata-token-ttl-seconds") {
            Some("21600") => (200, "tok-1".into()),
            _ => (400, "missing TTL".into()),
        },
        ("GET", path) if req.header("x-aws-ec2-metadata-token") != Some("tok-1") => {
            (401, format!("{path}: no token"))
        }
        ("GET", "/latest/meta-data/iam/security-credentials/") => (200, "gw-role\n".into()),
        ("GET", "/latest/meta-data/iam/security-credentials/gw-role") => (
            200,
            r#"{"Code":"Success","Type":"AWS-HMAC","AccessKeyId":"ASIAROLE","SecretAccessKey":"role-secret","Token":"role-token","Expiration":"2030-01-01T00:00:00Z"}"#.into(),
        ),
        _ => (404, "not here".into()),
    }))
    .await;
    let home = tempfile::tempdir().unwrap();
    let chain = CredentialChain::new(
        CredentialSettings::default(),
        env(&[
            ("HOME", home.path().to_str().unwrap()),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &stub.endpoint()),
        ]),
    );
    let expiry = SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_456_000);
    let day_before = expiry - Duration::from_secs(86_400);
    let c = chain.credentials_at(day_before).await.unwrap();
    assert_eq!(c.source().to_string(), "instance metadata (role gw-role)");
    assert_eq!(
        (
            c.access_key_id.as_str(),
            c.secret_access_key(),
            c.session_token(),
            c.expires
        ),
        ("ASIAROLE", "role-secret", Some("role-token"), Some(expiry))
    );
    let calls = |stub: &Stub| {
        stub.seen()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect::<Vec<_>>()
    };
    let first = [
        "PUT /latest/api/token",
        "GET /latest/meta-data/iam/security-credentials/",
        "GET /latest/meta-data/iam/security-credentials/gw-role",
    ];
    assert_eq!(calls(&stub), first);

    // Cached: no request.
    chain.credentials_at(day_before).await.unwrap();
    chain
        .credentials_at(expiry - Duration::from_secs(6 * 60))
        .await
        .unwrap();
    assert_eq!(calls(&stub).len(), 3);
    // Within five minutes of expiry: fetched again, token first.
    chain
        .credentials_at(expiry - Duration::from_secs(4 * 60))
        .await
        .unwrap();
    assert_eq!(calls(&stub)[3..], first);
    assert!(!format!("{c:?}").contains("role-secret"));
}
