//! A private copy of a config with its keys, state, UAPI directory and sockets in a temporary
//! directory, so that several agentd can run side by side.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use tempfile::TempDir;

pub struct Fixture {
    dir: TempDir,
    config: PathBuf,
}

impl Fixture {
    /// A fixture with `config_text` after pointing its paths into the fixture's directory.
    pub fn new(config_text: &str) -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("isthmus-test-")
            .tempdir()
            .expect("tempdir");
        // Unprivileged test users must reach the control socket inside.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let fx = Fixture {
            config: dir.path().join("agentd.toml"),
            dir,
        };
        fx.write_config(&fx.localize(config_text));
        fx
    }

    /// A fixture from one of the shipped example configs in `config/`, with fresh keys.
    pub fn example(file: &str) -> Fixture {
        let text = fs::read_to_string(crate::repo_root().join("config").join(file))
            .unwrap_or_else(|e| panic!("reading config/{file}: {e}"));
        let fx = Fixture::new(&text);
        for key in ["private.key", "interconnect.psk", "internet.psk"] {
            fx.write_key(key);
        }
        // The TSIG key of the AWS example's rfc2136 provider, in the format tsig-keygen writes.
        let mut secret = [0u8; 32];
        getrandom(&mut secret);
        let secret = base64::engine::general_purpose::STANDARD.encode(secret);
        fx.write_key_text(
            "tsig.key",
            &format!(
                "key \"failover-key\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{secret}\";\n}};"
            ),
        );
        // The OCI example's API key: a throwaway test key committed for the config tests.
        let pem = crate::repo_root().join("agentd/config/tests/data/TEST-ONLY-rsa-pkcs8.pem");
        let pem = fs::read_to_string(&pem).unwrap_or_else(|e| panic!("{}: {e}", pem.display()));
        fx.write_key_text("oci_api_key.pem", pem.trim_end());
        fx
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn socket(&self) -> PathBuf {
        self.dir().join("run").join("agentd.sock")
    }

    /// Replace the config file verbatim (no path rewriting).
    pub fn write_config(&self, text: &str) {
        fs::write(&self.config, text).expect("writing config");
    }

    /// Point agentd's paths (socket, state, UAPI) into this fixture, keeping everything else.
    pub fn localize(&self, text: &str) -> String {
        let mut doc: toml::Table = text.parse().expect("fixture config must be valid TOML");
        let dir = self.dir().display().to_string();
        let agent = table(&mut doc, "agent");
        agent.insert("state_dir".into(), format!("{dir}/state").into());
        agent.insert("uapi_dir".into(), format!("{dir}/wireguard").into());
        let control = table(&mut doc, "control");
        control.insert("socket".into(), self.socket().display().to_string().into());
        toml::to_string(&doc).expect("serializing fixture config")
    }

    /// Set `[section] key = value` in the config file (value as a TOML literal).
    pub fn set(&self, section: &str, key: &str, value: toml::Value) {
        let text = fs::read_to_string(&self.config).unwrap();
        let mut doc: toml::Table = text.parse().unwrap();
        table(&mut doc, section).insert(key.into(), value);
        self.write_config(&toml::to_string(&doc).unwrap());
    }

    /// Replace the config's `[[probe]]` list with target checks `(name, kind, target)`, all
    /// with the same interval and timeout (TOML duration strings).
    pub fn set_probes(&self, probes: &[(&str, &str, &str)], interval: &str, timeout: &str) {
        let text = fs::read_to_string(&self.config).unwrap();
        let mut doc: toml::Table = text.parse().unwrap();
        let list = probes
            .iter()
            .map(|(name, kind, target)| {
                let mut t = toml::Table::new();
                t.insert("name".into(), (*name).into());
                t.insert("kind".into(), (*kind).into());
                t.insert("target".into(), (*target).into());
                t.insert("interval".into(), interval.into());
                t.insert("timeout".into(), timeout.into());
                toml::Value::Table(t)
            })
            .collect();
        doc.insert("probe".into(), toml::Value::Array(list));
        self.write_config(&toml::to_string(&doc).unwrap());
    }

    /// Write `text` (a base64 key) as `name` with mode 0600.
    pub fn write_key_text(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir().join(name);
        fs::write(&path, format!("{text}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// Write a fresh random 32-byte key (base64, as `wg genkey` does) with mode 0600.
    pub fn write_key(&self, name: &str) -> PathBuf {
        let mut bytes = [0u8; 32];
        getrandom(&mut bytes);
        let path = self.dir().join(name);
        fs::write(
            &path,
            base64::engine::general_purpose::STANDARD.encode(bytes) + "\n",
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        path
    }
}

fn table<'a>(doc: &'a mut toml::Table, name: &str) -> &'a mut toml::Table {
    doc.entry(name)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .unwrap_or_else(|| panic!("[{name}] is not a table"))
}

fn getrandom(buf: &mut [u8]) {
    use std::io::Read;
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .expect("reading /dev/urandom");
}
