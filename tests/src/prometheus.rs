//! A real Prometheus (Debian's `/usr/bin/prometheus`, 2.42) scraping agentd inside a test's
//! network namespace, plus the small HTTP client the tests use to talk to it and to agentd's
//! metrics endpoint from inside the namespace.
//!
//! [`Prometheus`] owns a temporary directory (config, TSDB, log) and the process, which it
//! terminates by PID on drop. [`http_get`] does not need `curl` or a process per request: it
//! enters the namespace on a short-lived thread (`setns` changes only the calling thread's
//! network namespace) and speaks HTTP/1.1 over a plain `TcpStream`.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sched::{setns, CloneFlags};
use nix::unistd::Pid;

use crate::Netns;

/// Where Debian's package puts the server; the tests use no other.
pub const PROMETHEUS_BIN: &str = "/usr/bin/prometheus";
/// Debian's `promtool`, from the same package.
pub const PROMTOOL_BIN: &str = "/usr/bin/promtool";

/// A complete HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names as sent; look them up with [`Response::header`] (case-insensitive).
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked if it came with `Transfer-Encoding: chunked` (lossy UTF-8).
    pub body: String,
    /// The body's size in bytes as sent (compressed, if it was).
    pub body_bytes: usize,
    /// From the start of the connect to the last byte of the response read (the namespace
    /// switch before it is not included): the scrape time a client would see.
    pub elapsed: Duration,
}

impl Response {
    /// The first header named `name`, ignoring case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the body came chunked (Go's server does so for bodies over its 4 KiB buffer).
    pub fn was_chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }
}

/// `GET path_and_query` on `addr` from inside `ns`; returns the status and the body.
/// `timeout` bounds the connect and the whole exchange.
pub fn http_get(
    ns: &Netns,
    addr: SocketAddr,
    path_and_query: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    http_get_response(ns, addr, path_and_query, timeout).map(|r| (r.status, r.body))
}

/// [`http_get`] with the headers and the elapsed time (for a scrape benchmark).
pub fn http_get_response(
    ns: &Netns,
    addr: SocketAddr,
    path_and_query: &str,
    timeout: Duration,
) -> std::io::Result<Response> {
    http_get_in(&netns_path(ns.name()), addr, path_and_query, "", timeout)
}

/// [`http_get_response`] asking for a gzip body (`Accept-Encoding: gzip`, as Prometheus does):
/// the body stays compressed; [`Response::body_bytes`] is its size.
pub fn http_get_gzip(
    ns: &Netns,
    addr: SocketAddr,
    path_and_query: &str,
    timeout: Duration,
) -> std::io::Result<Response> {
    http_get_in(
        &netns_path(ns.name()),
        addr,
        path_and_query,
        "Accept-Encoding: gzip\r\n",
        timeout,
    )
}

/// The file `ip netns add` bind-mounts the namespace on.
fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// [`http_get_response`] by namespace path: the [`Prometheus`] guard keeps the path, not a
/// borrow of the test's [`Netns`].
fn http_get_in(
    ns_path: &Path,
    addr: SocketAddr,
    path_and_query: &str,
    extra_headers: &str,
    timeout: Duration,
) -> std::io::Result<Response> {
    let ns_path = ns_path.to_path_buf();
    let request = format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: isthmus-tests\r\n\
         Accept: */*\r\n{extra_headers}Connection: close\r\n\r\n"
    );
    std::thread::Builder::new()
        .name("http-in-netns".into())
        .spawn(move || -> std::io::Result<Response> {
            let ns_file = File::open(&ns_path)?;
            setns(&ns_file, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
            let start = Instant::now();
            let deadline = start + timeout;
            let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
            stream.set_write_timeout(Some(timeout))?;
            stream.write_all(request.as_bytes())?;
            let mut raw = Vec::new();
            let mut buf = [0u8; 64 * 1024];
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no complete response from {addr} within {timeout:?}"),
                    ));
                }
                stream.set_read_timeout(Some(left))?;
                match stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => raw.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            let elapsed = start.elapsed();
            let mut response = parse_response(&raw)?;
            response.elapsed = elapsed;
            Ok(response)
        })?
        .join()
        .map_err(|_| std::io::Error::other("the HTTP thread panicked"))?
}

fn invalid(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

/// Parse a whole `Connection: close` response (status line, headers, body).
fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid(format!("no end of headers in {} bytes", raw.len())))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let rest = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| status_line.starts_with("HTTP/"))
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut response = Response {
        status,
        headers,
        body: String::new(),
        body_bytes: 0,
        elapsed: Duration::ZERO,
    };
    let body = if response.was_chunked() {
        dechunk(rest)?
    } else if let Some(len) = response.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| invalid(format!("bad Content-Length {len:?}")))?;
        if rest.len() < len {
            return Err(invalid(format!(
                "body cut short: {} of {len} bytes",
                rest.len()
            )));
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    response.body_bytes = body.len();
    response.body = String::from_utf8_lossy(&body).into_owned();
    Ok(response)
}

/// Decode a chunked body: `<hex size>[;ext]\r\n<data>\r\n` ... `0\r\n[trailers]\r\n`.
fn dechunk(mut rest: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| invalid("chunked body cut short (no chunk size line)"))?;
        let line = String::from_utf8_lossy(&rest[..eol]);
        let size_hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| invalid(format!("bad chunk size {line:?}")))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(body); // Trailers, if any, are ignored.
        }
        if rest.len() < size + 2 || &rest[size..size + 2] != b"\r\n" {
            return Err(invalid(format!(
                "chunk of {size} bytes cut short or not followed by CRLF"
            )));
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// Percent-encode `s` for a query string value: everything but `A-Z a-z 0-9 - _ . ~`
/// becomes `%XX` (UTF-8 bytes), so PromQL's `{}"=~[]+` and spaces survive.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A Prometheus server running in a test's namespace, listening on `127.0.0.1:9090` there,
/// scraping its targets every second as job `isthmus`. Terminated by PID on drop; its log is
/// printed if the test is failing.
pub struct Prometheus {
    child: Option<Child>,
    ns_name: String,
    ns_path: PathBuf,
    addr: SocketAddr,
    log: PathBuf,
    config: PathBuf,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Write a config (scrape and evaluation interval 1 s, job `isthmus` with `scrape_targets`,
    /// `rule_files` made absolute), start Prometheus in `ns` and wait until `/-/ready` answers
    /// 200 (30 s at most).
    pub fn start(ns: &Netns, scrape_targets: &[SocketAddr], rule_files: &[PathBuf]) -> Prometheus {
        assert!(
            Path::new(PROMETHEUS_BIN).exists(),
            "prometheus is not installed: apt-get install prometheus (the README's .ci/run does)"
        );
        let dir = tempfile::Builder::new()
            .prefix("isthmus-prometheus-")
            .tempdir()
            .expect("creating the Prometheus directory");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, config_yaml(scrape_targets, rule_files))
            .expect("writing prometheus.yml");
        let log = dir.path().join("prometheus.log");
        let addr: SocketAddr = "127.0.0.1:9090".parse().unwrap();
        let mut cmd = ns.command(PROMETHEUS_BIN);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(File::create(&log).unwrap())
            .stderr(File::create(&log).unwrap());
        let child = cmd.spawn().expect("starting prometheus");
        let mut prometheus = Prometheus {
            child: Some(child),
            ns_name: ns.name().to_string(),
            ns_path: netns_path(ns.name()),
            addr,
            log,
            config,
            dir,
        };
        prometheus.wait_ready(ns);
        prometheus
    }

    fn wait_ready(&mut self, ns: &Netns) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = http_get(ns, self.addr, "/-/ready", Duration::from_secs(1)) {
                return;
            }
            assert!(
                self.is_running(),
                "prometheus exited before it was ready\n--- prometheus log (tail) ---\n{}",
                self.log_tail()
            );
            assert!(
                Instant::now() < deadline,
                "prometheus was not ready in 30 s\n--- prometheus log (tail) ---\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Where it listens, inside the namespace.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The temporary directory with `prometheus.yml`, `data/` and `prometheus.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// `GET path_and_query` on the server (10 s timeout); panics if the request fails.
    pub fn get(&self, path_and_query: &str) -> Response {
        // The guard keeps the namespace's path, not the Netns (the test owns that, and
        // declares it first so that it outlives this guard).
        assert!(
            self.ns_path.exists(),
            "namespace {} is gone while Prometheus still runs in it",
            self.ns_name
        );
        http_get_in(
            &self.ns_path,
            self.addr,
            path_and_query,
            "",
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| {
            panic!(
                "GET {path_and_query} from Prometheus: {e}\n--- prometheus log (tail) ---\n{}",
                self.log_tail()
            )
        })
    }

    /// GET an API path and return its JSON `data`; panics with the body unless the HTTP status
    /// is 200 and the API status `success`.
    fn api(&self, path_and_query: &str) -> serde_json::Value {
        let r = self.get(path_and_query);
        let json: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_else(|e| {
            panic!(
                "GET {path_and_query}: HTTP {} and no JSON ({e}): {}",
                r.status, r.body
            )
        });
        assert!(
            r.status == 200 && json["status"] == "success",
            "GET {path_and_query}: HTTP {}: {}",
            r.status,
            r.body
        );
        json["data"].clone()
    }

    /// An instant query; returns `data.result`: for a vector, an array of
    /// `{"metric": {...}, "value": [<ts>, "<value>"]}`; for a scalar, `[<ts>, "<value>"]`.
    pub fn query(&self, promql: &str) -> serde_json::Value {
        self.api(&format!("/api/v1/query?query={}", url_encode(promql)))["result"].clone()
    }

    /// The value of an instant query that returns exactly one sample (a one-element vector or
    /// a scalar); `None` for an empty vector; panics if there are several.
    pub fn query_f64(&self, promql: &str) -> Option<f64> {
        let result = self.query(promql);
        let arr = result.as_array().expect("query result");
        let value = match arr.first() {
            None => return None,
            Some(serde_json::Value::Object(_)) => {
                assert!(
                    arr.len() == 1,
                    "{promql}: {} series, expected one: {result}",
                    arr.len()
                );
                arr[0]["value"][1].clone()
            }
            Some(_) => arr[1].clone(), // A scalar or string: [ts, "v"].
        };
        let text = value.as_str().expect("a sample value is a string");
        Some(match text {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            t => t.parse().expect("a sample value"),
        })
    }

    /// The series matching `selector` in the last hour: each a label map.
    pub fn series(&self, selector: &str) -> Vec<serde_json::Value> {
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            - 3600;
        let data = self.api(&format!(
            "/api/v1/series?{}={}&start={start}",
            url_encode("match[]"),
            url_encode(selector)
        ));
        data.as_array().expect("series list").clone()
    }

    /// The active alerts (pending and firing), from `/api/v1/alerts`.
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        self.api("/api/v1/alerts")["alerts"]
            .as_array()
            .expect("alerts list")
            .clone()
    }

    /// The active scrape targets, from `/api/v1/targets`.
    pub fn targets(&self) -> Vec<serde_json::Value> {
        self.api("/api/v1/targets?state=active")["activeTargets"]
            .as_array()
            .expect("target list")
            .clone()
    }

    /// Whether there are active targets and the last scrape of each one succeeded.
    pub fn targets_up(&self) -> bool {
        let targets = self.targets();
        !targets.is_empty() && targets.iter().all(|t| t["health"] == "up")
    }

    /// Wait until [`Prometheus::targets_up`].
    pub fn wait_targets_up(&self, timeout: Duration) {
        self.wait_for("all scrape targets up", timeout, |p| p.targets_up());
    }

    /// Poll `f` every 200 ms until it returns true; panic naming `what`, with the targets and
    /// the log tail, after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut f: impl FnMut(&Prometheus) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if f(self) {
                return;
            }
            if Instant::now() >= deadline {
                let targets = http_get_in(
                    &self.ns_path,
                    self.addr,
                    "/api/v1/targets",
                    "",
                    Duration::from_secs(2),
                )
                .map(|r| r.body)
                .unwrap_or_else(|e| format!("({e})"));
                panic!(
                    "timed out after {timeout:?} waiting for: {what}\n--- targets ---\n{targets}\n\
                     --- prometheus log (tail) ---\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last 40 lines of the log.
    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::agentd::stop(&mut child);
        }
        if std::thread::panicking() {
            eprintln!(
                "--- prometheus log ({}, tail) ---\n{}",
                self.log.display(),
                self.log_tail()
            );
        }
    }
}

fn config_yaml(scrape_targets: &[SocketAddr], rule_files: &[PathBuf]) -> String {
    // JSON strings are valid YAML scalars, so paths need no further quoting care.
    let quote = |s: String| serde_json::Value::String(s).to_string();
    let targets: Vec<String> = scrape_targets
        .iter()
        .map(|t| quote(t.to_string()))
        .collect();
    let rules: Vec<String> = rule_files
        .iter()
        .map(|p| {
            let abs = std::path::absolute(p).expect("absolute rule file path");
            quote(abs.display().to_string())
        })
        .collect();
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files: [{}]\n\
         scrape_configs:\n  - job_name: isthmus\n    scrape_interval: 1s\n    \
         scrape_timeout: 1s\n    static_configs:\n      - targets: [{}]\n",
        rules.join(", "),
        targets.join(", ")
    )
}

/// Run `promtool check metrics` on `text` (the exposition format on stdin); returns whether it
/// exited 0 and its combined stdout and stderr. It exits non-zero for lint problems as well as
/// for parse errors, and names each problem in the output, so callers can assert on that.
pub fn promtool_check_metrics(text: &str) -> (bool, String) {
    assert!(
        Path::new(PROMTOOL_BIN).exists(),
        "promtool is not installed: apt-get install prometheus (the README's .ci/run does)"
    );
    let mut child = Command::new(PROMTOOL_BIN)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting promtool");
    let mut stdin = child.stdin.take().unwrap();
    let input = text.to_string();
    // A writer thread, so a large input cannot dead-lock against promtool's output.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().expect("running promtool");
    writer.join().unwrap();
    let mut combined = String::from_utf8_lossy(&out.stdout).into_owned();
    combined.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), combined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encode_promql() {
        assert_eq!(
            url_encode("rate(x{job=\"a b\",y=~\"c+\"}[1m])"),
            "rate%28x%7Bjob%3D%22a%20b%22%2Cy%3D~%22c%2B%22%7D%5B1m%5D%29"
        );
        assert_eq!(url_encode("A-z_0.9~"), "A-z_0.9~");
        assert_eq!(url_encode("é"), "%C3%A9");
    }

    #[test]
    fn parses_content_length() {
        let r =
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: y\r\n\r\nhello").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "hello");
        assert_eq!(r.header("x"), Some("y"));
        assert!(!r.was_chunked());
    }

    #[test]
    fn parses_chunked() {
        let raw = b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n\
                    5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nTrailer: x\r\n\r\n";
        let r = parse_response(raw).unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.body, "hello, world");
        assert!(r.was_chunked());
    }

    #[test]
    fn rejects_truncated() {
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nab")
                .is_err()
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }

    #[test]
    fn config_has_job_and_absolute_rules() {
        let yaml = config_yaml(
            &["127.0.0.1:9100".parse().unwrap()],
            &[PathBuf::from("rules/a.yml")],
        );
        assert!(yaml.contains("job_name: isthmus"));
        assert!(yaml.contains("targets: [\"127.0.0.1:9100\"]"));
        let cwd = std::env::current_dir().unwrap();
        assert!(yaml.contains(&format!("\"{}\"", cwd.join("rules/a.yml").display())));
    }
}
