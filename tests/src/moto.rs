//! moto's AWS emulator (`moto_server`, from the test Python venv) on a free loopback port,
//! for the AWS providers' tests, and the venv's Python for botocore cross-checks.
//!
//! The venv lives at `$ISTHMUS_PYENV`, else [`DEFAULT_PYENV`] (made by `tests/pyenv install`).
//! Without it, [`pyenv`] says so and the test skips, unless `CI` is set: there a missing venv
//! is a failure, not a silent pass. [`Moto`] owns the server process and its log; [`Drop`]
//! stops it by PID (never by name) and prints the log if the test failed.
//!
//! moto does not check signatures and picks the service from the credential scope of the
//! `Authorization` header, so requests must be signed (any key will do).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where `tests/pyenv install` puts the venv.
pub const DEFAULT_PYENV: &str = "/var/tmp/isthmus-pyenv";

/// How long moto_server may take to answer after start (about 1.5 s on 2 cores).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The Python venv with moto, botocore and boto3; `None` (after saying why) when it is missing
/// and `CI` is unset. Panics in CI.
pub fn pyenv(test: &str) -> Option<PathBuf> {
    let dir =
        PathBuf::from(std::env::var_os("ISTHMUS_PYENV").unwrap_or_else(|| DEFAULT_PYENV.into()));
    if dir.join("bin/moto_server").exists() && dir.join("bin/python").exists() {
        return Some(dir);
    }
    let msg = format!(
        "{test}: the Python venv with moto is missing ({} has no bin/moto_server): \
         run `tests/pyenv install` or set ISTHMUS_PYENV",
        dir.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("SKIPPED {msg}");
    None
}

/// Run `script` with the venv's Python, `stdin` on its standard input, and return its
/// standard output; panics with its standard error if it fails.
pub fn python(pyenv: &Path, script: &str, stdin: &str, env: &[(&str, &str)]) -> String {
    let mut child = Command::new(pyenv.join("bin/python"))
        .arg("-c")
        .arg(script)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the venv's python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("writing to python");
    let out = child.wait_with_output().expect("python output");
    assert!(
        out.status.success(),
        "python failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("python's output is UTF-8")
}

/// A running `moto_server -H 127.0.0.1 -p <port>`.
pub struct Moto {
    child: Option<Child>,
    addr: SocketAddr,
    pyenv: PathBuf,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl Moto {
    /// Start moto_server from `pyenv` on a free port and wait until it answers.
    pub fn start(pyenv: &Path) -> Moto {
        let dir = tempfile::Builder::new()
            .prefix("isthmus-moto-")
            .tempdir()
            .expect("tempdir");
        let log = dir.path().join("moto.log");
        let port = free_port();
        let out = std::fs::File::create(&log).expect("moto log");
        let err = out.try_clone().expect("moto log");
        let child = Command::new(pyenv.join("bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(dir.path())
            // moto must not find real credentials or config of the user running the tests.
            .env("HOME", dir.path())
            .env_remove("AWS_PROFILE")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("starting moto_server");
        let moto = Moto {
            child: Some(child),
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            pyenv: pyenv.to_path_buf(),
            _dir: dir,
            log,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if moto.request("POST", "/moto-api/reset").is_ok() {
                return moto;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer on {} within {START_TIMEOUT:?}:\n{}",
                moto.addr,
                moto.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:<port>`: the endpoint for every service and for the metadata service.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Forget every resource (`POST /moto-api/reset`).
    pub fn reset(&self) {
        let status = self.request("POST", "/moto-api/reset").expect("moto reset");
        assert_eq!(status, 200, "moto reset");
    }

    /// Run a boto3 `script` against this server and return the JSON it prints. The script
    /// finds `client(service, region="us-east-1")` defined, with fake keys and this endpoint.
    pub fn boto3(&self, script: &str) -> serde_json::Value {
        let prelude = "import boto3, json, os\n\
            def client(service, region='us-east-1'):\n    \
                return boto3.client(service, region_name=region, endpoint_url=os.environ['MOTO_ENDPOINT'],\n        \
                    aws_access_key_id='testing', aws_secret_access_key='testing')\n";
        let endpoint = self.endpoint();
        let out = python(
            &self.pyenv,
            &format!("{prelude}{script}"),
            "",
            &[("MOTO_ENDPOINT", &endpoint), ("HOME", "/nonexistent")],
        );
        serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("boto3 script printed no JSON ({e}): {out}"))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One request; the status.
    fn request(&self, method: &str, path: &str) -> std::io::Result<u16> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.addr
        )?;
        let mut head = Vec::new();
        s.read_to_end(&mut head)?;
        let text = String::from_utf8_lossy(&head);
        text.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("not HTTP: {text:.80}")))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::agentd::stop(&mut child);
        }
        if std::thread::panicking() {
            eprintln!(
                "--- moto_server log ({}) ---\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// A port nothing listens on now (the kernel's pick; another process could take it before
/// moto binds it, which start-up then reports).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}
