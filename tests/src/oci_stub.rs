//! A stand-in for the two OCI APIs the providers call, strict where OCI is: DNS record sets
//! (`GetRRSet`, `UpdateRRSet`) and VCN route tables (`GetRouteTable`, `UpdateRouteTable`), on
//! 127.0.0.1.
//!
//! Every request's signature is checked with the public key, from the request as received
//! (its own signing-string code, not the signer's): a missing or wrong signature, a body whose
//! `x-content-sha256` or `content-length` does not match, or a `date` more than five minutes
//! off is `401 NotAuthenticated`, as OCI answers. Every object has an etag that changes with
//! each change; a write must carry `if-match` (`428` without, a stricter rule than OCI's, so
//! that a blind write fails the test) and a stale one is `412`. Another writer is simulated by
//! [`OciStub::set_record`] and [`OciStub::set_rules`], which change the object and its etag,
//! and by [`OciStub::set_rules_racing`], whose second change lands right after the next read
//! of the table is answered: between a reader's GET and its PUT.
//!
//! [`OciStub::start_in`] listens inside a test's network namespace instead (on its loopback,
//! say), for an agentd running there: the socket is made in the namespace and served by the
//! test's runtime.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

/// OCI's allowed clock skew.
const MAX_SKEW: Duration = Duration::from_secs(300);

/// A running stub; stops when dropped.
pub struct OciStub {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

struct State {
    /// DER `RSAPublicKey` of the one API key the stub knows.
    public_key: Vec<u8>,
    key_id: String,
    next_version: u64,
    /// Zone name → its view (private zones).
    zones: BTreeMap<String, Option<String>>,
    /// (zone, domain, rtype) → records and version.
    records: BTreeMap<(String, String, String), (Vec<Value>, u64)>,
    /// Route table OCID → table (JSON, with `routeRules`) and version.
    tables: BTreeMap<String, (Value, u64)>,
    /// Route table OCID → the rules another writer sets right after the next GET of it.
    races: BTreeMap<String, Vec<Value>>,
    /// `METHOD path?query → status` of every request, in order.
    log: Vec<String>,
}

impl State {
    fn bump(&mut self) -> u64 {
        self.next_version += 1;
        self.next_version
    }
}

fn etag(version: u64) -> String {
    format!("\"v{version}\"")
}

impl OciStub {
    /// Listen on 127.0.0.1 and accept requests signed by `key_id` with the key whose public
    /// half is `public_key` (DER `RSAPublicKey`).
    pub async fn start(public_key: Vec<u8>, key_id: &str) -> OciStub {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        OciStub::serve(listener, public_key, key_id)
    }

    /// [`OciStub::start`], listening on `addr` inside `ns` (a socket stays in the namespace it
    /// was made in). Must be called within a tokio runtime, which then serves it.
    pub fn start_in(
        ns: &crate::Netns,
        addr: SocketAddr,
        public_key: Vec<u8>,
        key_id: &str,
    ) -> OciStub {
        let listener = ns.run_in(move || {
            let l = std::net::TcpListener::bind(addr)
                .unwrap_or_else(|e| panic!("binding the OCI stub to {addr}: {e}"));
            l.set_nonblocking(true).expect("non-blocking listener");
            l
        });
        let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
        OciStub::serve(listener, public_key, key_id)
    }

    fn serve(listener: tokio::net::TcpListener, public_key: Vec<u8>, key_id: &str) -> OciStub {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            public_key,
            key_id: key_id.to_string(),
            next_version: 0,
            zones: BTreeMap::new(),
            records: BTreeMap::new(),
            tables: BTreeMap::new(),
            races: BTreeMap::new(),
            log: Vec::new(),
        }));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, hyper::Error>(handle(&state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        OciStub { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn add_zone(&self, name: &str, view: Option<&str>) {
        let mut s = self.state.lock().unwrap();
        s.zones.insert(name.to_string(), view.map(str::to_string));
    }

    /// Another writer sets a record set (`(rdata, ttl)` each); `[]` deletes it.
    pub fn set_record(&self, zone: &str, domain: &str, rtype: &str, records: &[(&str, u32)]) {
        let mut s = self.state.lock().unwrap();
        let items = records
            .iter()
            .map(|(rdata, ttl)| json!({"domain": domain, "rtype": rtype, "rdata": rdata, "ttl": ttl}))
            .collect();
        let v = s.bump();
        s.records.insert(
            (zone.to_string(), domain.to_string(), rtype.to_string()),
            (decorate(items, v), v),
        );
    }

    /// `(rdata, ttl)` of a record set as the stub holds it, sorted.
    pub fn record(&self, zone: &str, domain: &str, rtype: &str) -> Vec<(String, u64)> {
        let s = self.state.lock().unwrap();
        let key = (zone.to_string(), domain.to_string(), rtype.to_string());
        let mut out: Vec<(String, u64)> = s
            .records
            .get(&key)
            .map(|(items, _)| {
                items
                    .iter()
                    .map(|i| {
                        (
                            i["rdata"].as_str().unwrap().to_string(),
                            i["ttl"].as_u64().unwrap(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Another writer sets the rules of a route table (creating it).
    pub fn set_rules(&self, id: &str, rules: Vec<Value>) {
        let mut s = self.state.lock().unwrap();
        let v = s.bump();
        let table = json!({
            "id": id,
            "compartmentId": "ocid1.compartment.oc1..stub",
            "vcnId": "ocid1.vcn.oc1..stub",
            "displayName": "stub",
            "lifecycleState": "AVAILABLE",
            "routeRules": rules,
        });
        s.tables.insert(id.to_string(), (table, v));
    }

    /// Another writer sets the rules of an existing table to `now`, and to `after_next_read`
    /// right after the next GET of the table has been answered: a reader that writes on the
    /// etag of that GET loses the race (`412`).
    pub fn set_rules_racing(&self, id: &str, now: Vec<Value>, after_next_read: Vec<Value>) {
        let mut s = self.state.lock().unwrap();
        let v = s.bump();
        let (table, version) = s.tables.get_mut(id).expect("set_rules first");
        table["routeRules"] = Value::Array(now);
        *version = v;
        s.races.insert(id.to_string(), after_next_read);
    }

    /// Whether a race armed by [`OciStub::set_rules_racing`] is still waiting for its read.
    pub fn race_pending(&self, id: &str) -> bool {
        self.state.lock().unwrap().races.contains_key(id)
    }

    pub fn rules(&self, id: &str) -> Vec<Value> {
        let s = self.state.lock().unwrap();
        s.tables[id].0["routeRules"].as_array().unwrap().clone()
    }

    /// `METHOD path?query → status` of every request so far.
    pub fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }
}

impl Drop for OciStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What OCI adds to each record it stores.
fn decorate(items: Vec<Value>, version: u64) -> Vec<Value> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, mut item)| {
            item["recordHash"] = json!(format!("h{version}-{i}"));
            item["isProtected"] = json!(false);
            item["rrsetVersion"] = json!(version.to_string());
            item
        })
        .collect()
}

fn answer(status: u16, etag_header: Option<String>, body: Value) -> Response<Full<Bytes>> {
    let mut b = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("opc-request-id", "stub-request");
    if let Some(e) = etag_header {
        b = b.header("etag", e);
    }
    b.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

fn error(status: u16, code: &str, message: &str) -> Response<Full<Bytes>> {
    answer(status, None, json!({"code": code, "message": message}))
}

async fn handle(state: &Mutex<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let mut s = state.lock().unwrap();
    let resp = match verify(&s, &parts, &target, &body) {
        Err(why) => error(401, "NotAuthenticated", &why),
        Ok(()) => route(&mut s, parts.method.as_str(), &parts, &target, &body),
    };
    let line = format!("{} {target} → {}", parts.method, resp.status().as_u16());
    s.log.push(line);
    resp
}

fn header<'a>(parts: &'a hyper::http::request::Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Check the request's signature as OCI does; the reason when it fails.
fn verify(
    s: &State,
    parts: &hyper::http::request::Parts,
    target: &str,
    body: &[u8],
) -> Result<(), String> {
    let auth = header(parts, "authorization").ok_or("no authorization header")?;
    let params = auth
        .strip_prefix("Signature ")
        .ok_or("not a Signature authorization")?;
    let mut map = BTreeMap::new();
    for p in params.split(',') {
        let (k, v) = p.split_once('=').ok_or("bad parameter")?;
        map.insert(k.trim(), v.trim().trim_matches('"'));
    }
    if map.get("version") != Some(&"1") || map.get("algorithm") != Some(&"rsa-sha256") {
        return Err("unsupported signature version or algorithm".into());
    }
    if map.get("keyId") != Some(&s.key_id.as_str()) {
        return Err("unknown keyId".into());
    }
    let names: Vec<&str> = map.get("headers").ok_or("no headers")?.split(' ').collect();
    let with_body = matches!(parts.method.as_str(), "POST" | "PUT" | "PATCH");
    let mut required = vec!["date", "(request-target)", "host"];
    if with_body {
        required.extend(["content-length", "content-type", "x-content-sha256"]);
    }
    for r in &required {
        if !names.contains(r) {
            return Err(format!("{r} is not signed"));
        }
    }
    let mut lines = Vec::new();
    for n in &names {
        let value = if *n == "(request-target)" {
            format!("{} {target}", parts.method.as_str().to_lowercase())
        } else {
            header(parts, n)
                .ok_or(format!("signed header {n} missing"))?
                .to_string()
        };
        lines.push(format!("{n}: {value}"));
    }
    let signature = B64
        .decode(map.get("signature").ok_or("no signature")?)
        .map_err(|_| "signature is not base64")?;
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        &s.public_key,
    )
    .verify(lines.join("\n").as_bytes(), &signature)
    .map_err(|_| "the signature does not verify".to_string())?;
    if with_body {
        let digest = B64.encode(ring::digest::digest(&ring::digest::SHA256, body).as_ref());
        if header(parts, "x-content-sha256") != Some(digest.as_str()) {
            return Err("x-content-sha256 does not match the body".into());
        }
        if header(parts, "content-length") != Some(body.len().to_string().as_str()) {
            return Err("content-length does not match the body".into());
        }
    }
    let date = header(parts, "date").ok_or("no date")?;
    let date = httpdate::parse_http_date(date).map_err(|_| "bad date")?;
    let now = SystemTime::now();
    let skew = now
        .duration_since(date)
        .or_else(|_| date.duration_since(now))
        .unwrap_or_default();
    if skew > MAX_SKEW {
        return Err(format!("date is {}s off", skew.as_secs()));
    }
    Ok(())
}

fn route(
    s: &mut State,
    method: &str,
    parts: &hyper::http::request::Parts,
    target: &str,
    body: &[u8],
) -> Response<Full<Bytes>> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query: BTreeMap<&str, &str> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let if_match = header(parts, "if-match").map(str::to_string);
    match (method, segments.as_slice()) {
        (_, ["20180115", "zones", zone, "records", domain, rtype]) => {
            let Some(view) = s.zones.get(*zone).cloned() else {
                return error(404, "NotAuthorizedOrNotFound", "zone not found");
            };
            if let Some(view) = view {
                if query.get("scope") != Some(&"PRIVATE")
                    || query.get("viewId") != Some(&view.as_str())
                {
                    return error(404, "NotAuthorizedOrNotFound", "zone not found in scope");
                }
            }
            let key = (zone.to_string(), domain.to_string(), rtype.to_string());
            let (items, version) = s.records.get(&key).cloned().unwrap_or((vec![], 0));
            match method {
                "GET" => answer(200, Some(etag(version)), json!({ "items": items })),
                "PUT" => {
                    let Some(m) = if_match else {
                        return error(428, "PreconditionRequired", "if-match required");
                    };
                    if m != etag(version) {
                        return error(412, "PreconditionFailed", "etag mismatch");
                    }
                    let Ok(new) = serde_json::from_slice::<Value>(body) else {
                        return error(400, "InvalidParameter", "body is not JSON");
                    };
                    let Some(new) = new["items"].as_array().cloned() else {
                        return error(400, "InvalidParameter", "no items");
                    };
                    for item in &new {
                        if item["domain"] != json!(domain) || item["rtype"] != json!(rtype) {
                            return error(400, "InvalidParameter", "item of another rrset");
                        }
                    }
                    let v = s.bump();
                    let items = decorate(new, v);
                    s.records.insert(key, (items.clone(), v));
                    answer(200, Some(etag(v)), json!({ "items": items }))
                }
                _ => error(405, "MethodNotAllowed", "method not allowed"),
            }
        }
        (_, ["20160918", "routeTables", id]) => {
            let Some((table, version)) = s.tables.get(*id).cloned() else {
                return error(404, "NotAuthorizedOrNotFound", "route table not found");
            };
            match method {
                "GET" => {
                    let resp = answer(200, Some(etag(version)), table.clone());
                    if let Some(rules) = s.races.remove(*id) {
                        let v = s.bump();
                        let mut table = table;
                        table["routeRules"] = Value::Array(rules);
                        s.tables.insert(id.to_string(), (table, v));
                    }
                    resp
                }
                "PUT" => {
                    let Some(m) = if_match else {
                        return error(428, "PreconditionRequired", "if-match required");
                    };
                    if m != etag(version) {
                        return error(412, "PreconditionFailed", "etag mismatch");
                    }
                    let Ok(new) = serde_json::from_slice::<Value>(body) else {
                        return error(400, "InvalidParameter", "body is not JSON");
                    };
                    let Some(rules) = new["routeRules"].as_array().cloned() else {
                        return error(400, "InvalidParameter", "no routeRules");
                    };
                    let v = s.bump();
                    let mut table = table;
                    table["routeRules"] = Value::Array(rules);
                    s.tables.insert(id.to_string(), (table.clone(), v));
                    answer(200, Some(etag(v)), table)
                }
                _ => error(405, "MethodNotAllowed", "method not allowed"),
            }
        }
        _ => error(404, "NotFound", "no such API"),
    }
}

/// An RSA API key made with `openssl genrsa 2048` for one test.
pub struct ApiKey {
    pub pem: String,
    /// DER `RSAPublicKey`, for the stub.
    pub public_der: Vec<u8>,
    /// `openssl md5 -c` of the public key's DER, as the console shows it.
    pub fingerprint: String,
}

fn openssl(args: &[&str]) -> String {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn api_key() -> ApiKey {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    openssl(&["genrsa", "-out", &p("key.pem"), "2048"]);
    for (flag, out) in [("-RSAPublicKey_out", "rsa.der"), ("-pubout", "spki.der")] {
        openssl(&[
            "rsa",
            "-in",
            &p("key.pem"),
            flag,
            "-outform",
            "DER",
            "-out",
            &p(out),
        ]);
    }
    let md5 = openssl(&["md5", "-c", &p("spki.der")]);
    let fingerprint = md5
        .rsplit("= ")
        .next()
        .expect("openssl md5 prints `MD5(file)= ..`")
        .trim()
        .to_string();
    ApiKey {
        pem: std::fs::read_to_string(p("key.pem")).unwrap(),
        public_der: std::fs::read(p("rsa.der")).unwrap(),
        fingerprint,
    }
}
