//! The example configs in /config must always load. Their keys are never committed: each test
//! generates fresh ones next to a copy of the file (the OCI API key is a throwaway test key
//! from `tests/data`, copied with mode 0600).

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use isthmus_config::{load_file, Config, LoadOptions};

const WIREGUARD_KEYS: &[&str] = &["private.key", "interconnect.psk", "internet.psk"];
const TSIG_KEY: &str = "tsig.key";
const OCI_KEY: &str = "oci_api_key.pem";
/// Every key file an example may name.
const KEY_FILES: &[&str] = &[
    "private.key",
    "interconnect.psk",
    "internet.psk",
    TSIG_KEY,
    OCI_KEY,
];

/// Writes every key file into `dir` (mode 0600); returns their paths.
fn write_keys(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = WIREGUARD_KEYS
        .iter()
        .map(|name| common::write_key(dir, name))
        .collect();
    let secret = common::base64(&common::random_bytes::<32>());
    let tsig = common::tsig_keygen_text("isthmus-failover", "hmac-sha256", &secret);
    paths.push(common::write_file(dir, TSIG_KEY, &tsig, 0o600));
    paths.push(common::write_test_key(
        dir,
        OCI_KEY,
        "TEST-ONLY-rsa-pkcs8.pem",
        0o600,
    ));
    paths
}

fn example_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("read config dir").path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 2,
        "expected the example configs in {}",
        dir.display()
    );
    files
}

/// A copy of `example` in a fresh directory, with or without generated key files.
fn copy_example(example: &Path, with_keys: bool) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join(example.file_name().expect("a file name"));
    fs::copy(example, &copy).expect("copy the example");
    if with_keys {
        write_keys(dir.path());
    }
    (dir, copy)
}

fn load_example(name: &str) -> (tempfile::TempDir, Config) {
    let example = example_files()
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == name))
        .expect("the example exists");
    let (dir, copy) = copy_example(&example, true);
    let loaded = load_file(&copy, &LoadOptions::default()).unwrap_or_else(|r| panic!("{r}"));
    (dir, loaded.config)
}

#[test]
fn every_example_config_loads_with_fresh_keys() {
    for example in example_files() {
        let (dir, copy) = copy_example(&example, true);
        let loaded = load_file(&copy, &LoadOptions::default())
            .unwrap_or_else(|report| panic!("{}:\n{report}", example.display()));
        let config = loaded.config;
        assert!(!config.links.is_empty(), "{}", example.display());
        assert!(!config.route_groups.is_empty(), "{}", example.display());
        for link in &config.links {
            assert!(link.private_key_file.starts_with(dir.path()));
        }
        // Warnings may only be about groups missing on this test host.
        for w in &loaded.warnings {
            assert!(w.message.contains("does not exist on this host"), "{w}");
        }
    }
}

#[test]
fn without_key_files_every_error_names_a_missing_file() {
    for example in example_files() {
        let (dir, copy) = copy_example(&example, false);
        let report = load_file(&copy, &LoadOptions::default()).unwrap_err();
        let errors: Vec<_> = report.errors().collect();
        assert!(!errors.is_empty());
        for e in &errors {
            assert!(e.message.contains("does not exist"), "{e}");
            // The hint names the tool that creates the file.
            let tools = ["wg gen", "tsig-keygen", "openssl genrsa"];
            assert!(
                e.hint
                    .as_deref()
                    .is_some_and(|h| tools.iter().any(|t| h.contains(t))),
                "{e}"
            );
        }
        let text = fs::read_to_string(&copy).unwrap();
        for name in KEY_FILES {
            if text.contains(&format!("\"{name}\"")) {
                let path = dir.path().join(name);
                let needle = format!("{} does not exist", path.display());
                assert!(
                    errors.iter().any(|e| e.message.contains(&needle)),
                    "{}: no error names {}:\n{report}",
                    example.display(),
                    path.display()
                );
            }
        }
    }
}

#[test]
fn relative_key_paths_resolve_in_the_credentials_directory_when_set() {
    let example = &example_files()[0];
    let (_config_dir, copy) = copy_example(example, false);
    let credentials = tempfile::tempdir().unwrap();
    write_keys(credentials.path());
    let opts = LoadOptions {
        credentials_dir: Some(credentials.path().to_path_buf()),
    };
    let config = load_file(&copy, &opts)
        .unwrap_or_else(|r| panic!("{r}"))
        .config;
    for link in &config.links {
        assert_eq!(
            link.private_key_file,
            credentials.path().join("private.key")
        );
    }
}

#[test]
fn credential_files_are_not_held_to_the_0600_rule_but_files_elsewhere_are() {
    use std::os::unix::fs::PermissionsExt;
    let example = &example_files()[0];
    let (config_dir, copy) = copy_example(example, false);
    let credentials = tempfile::tempdir().unwrap();
    let written = write_keys(credentials.path())
        .into_iter()
        .chain(write_keys(config_dir.path()));
    for path in written {
        // systemd >= 256 shows credentials as 0440 (with an ACL) in a private directory.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o440)).unwrap();
    }
    let with_credentials = LoadOptions {
        credentials_dir: Some(credentials.path().to_path_buf()),
    };
    load_file(&copy, &with_credentials).unwrap_or_else(|r| panic!("{r}"));
    let report = load_file(&copy, &LoadOptions::default()).unwrap_err();
    assert!(
        report
            .errors()
            .any(|d| d.message.contains("accessible to group or others")),
        "{report}"
    );
}

#[test]
fn the_two_gateways_mirror_each_other() {
    let (_a, aws) = load_example("aws-gateway.toml");
    let (_o, oci) = load_example("oci-gateway.toml");
    let aws_public = "lVjxJeAN2M0AEcbv7RDApKimsWfHvVxdmkh3Q0mW1TQ=";
    let oci_public = "sTW6GPMPj3UsueeSgjVcAqH7BCh92Kd0K7aReWmVlEA=";
    assert_eq!(aws.links.len(), oci.links.len());
    for a in &aws.links {
        let o = oci.link(&a.name).expect("same link names on both sides");
        assert_eq!(a.peer_public_key.to_string(), oci_public);
        assert_eq!(o.peer_public_key.to_string(), aws_public);
        assert_eq!(
            a.peer_endpoint.to_string(),
            o.listen.to_string(),
            "{}",
            a.name
        );
        assert_eq!(
            o.peer_endpoint.to_string(),
            a.listen.to_string(),
            "{}",
            a.name
        );
        assert_eq!(a.mtu, o.mtu, "{}", a.name);
        // Each side probes the other's tunnel address (derived from the /31s).
        assert!(
            o.addresses.iter().any(|n| n.ip() == a.peer_address),
            "{}",
            a.name
        );
        assert!(
            a.addresses.iter().any(|n| n.ip() == o.peer_address),
            "{}",
            a.name
        );
        // Each side's tunnel address is allowed on the other side.
        for addr in &a.addresses {
            assert!(
                o.allowed_ips.iter().any(|n| n.contains(addr.ip())),
                "{}",
                a.name
            );
        }
        for addr in &o.addresses {
            assert!(
                a.allowed_ips.iter().any(|n| n.contains(addr.ip())),
                "{}",
                a.name
            );
        }
    }
    assert_eq!(
        aws.route_groups[0].destinations[0].to_string(),
        "10.2.0.0/16"
    );
    assert_eq!(
        oci.route_groups[0].destinations[0].to_string(),
        "10.1.0.0/16"
    );
    assert_eq!(aws.route_groups[0].links, oci.route_groups[0].links);
    // Each side steers its own cloud's route tables, with the credentials of its own cloud.
    assert!(!aws.route_groups[0].aws_route_tables.is_empty());
    assert!(!oci.route_groups[0].oci_route_tables.is_empty());
    assert!(aws.aws.is_some() && oci.oci.is_some());
    let rfc2136 = aws.dns_provider("corp-dns").expect("corp-dns");
    assert_eq!(
        rfc2136.tsig.as_ref().map(|k| k.name.as_str()),
        Some("isthmus-failover.")
    );
    assert!(aws
        .dns_providers
        .iter()
        .any(|p| p.kind == isthmus_config::DnsProviderKind::Route53));
    assert!(oci
        .dns_providers
        .iter()
        .any(|p| p.kind == isthmus_config::DnsProviderKind::Oci));
    assert!(!aws.hooks.is_empty() && !oci.hooks.is_empty());
    // Both ends probe on the same port, and judge loss alike.
    assert_eq!(aws.health.probe_port, oci.health.probe_port);
    assert_eq!(aws.health.loss_degraded, oci.health.loss_degraded);
}
