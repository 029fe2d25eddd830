//! Loading a config for the daemon (start-up and reload) and describing what a reload changes.
//!
//! A reload is all-or-nothing: the new file is read and validated completely before anything
//! changes; on any error the running config stays and the caller gets every diagnostic.

use std::fs;
use std::path::Path;
use std::time::Instant;

use isthmus_config::{Config, Diagnostic, LoadOptions, Report};

/// The config agentd runs with, and where it came from.
#[derive(Debug, Clone)]
pub struct Running {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
    /// Hash of the file text: tells operators (and later the peer) which version runs.
    pub fingerprint: String,
    pub loaded_at: Instant,
}

pub fn load(path: &Path, opts: &LoadOptions) -> Result<Running, Report> {
    let text = fs::read_to_string(path);
    let loaded = match &text {
        Ok(text) => isthmus_config::parse_str(text, path, opts)?,
        // Let the config crate produce the diagnostic for an unreadable file.
        Err(_) => isthmus_config::load_file(path, opts)?,
    };
    Ok(Running {
        config: loaded.config,
        warnings: loaded.warnings,
        fingerprint: fingerprint(text.as_deref().unwrap_or_default()),
        loaded_at: Instant::now(),
    })
}

/// FNV-1a, 64 bits, as 12 hex digits: stable across builds and platforms (unlike std's hasher),
/// enough to tell config versions apart; not a security property.
pub fn fingerprint(text: &str) -> String {
    let hash = isthmus_core::fnv::fnv1a_64(text.as_bytes());
    format!("{:012x}", hash >> 16)
}

/// What a reload changes, for the caller and the log.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    /// Applied by the reload.
    pub applied: Vec<String>,
    /// Changed in the file but only taking effect after a restart.
    pub needs_restart: Vec<String>,
}

pub fn diff(old: &Config, new: &Config) -> Changes {
    let mut c = Changes::default();
    let mut setting = |restart: bool, name: &str, changed: bool| {
        if changed {
            let list = if restart {
                &mut c.needs_restart
            } else {
                &mut c.applied
            };
            list.push(format!("{name}: changed"));
        }
    };
    setting(false, "agent.name", old.agent.name != new.agent.name);
    setting(
        false,
        "agent.log_level",
        old.agent.log_level != new.agent.log_level,
    );
    setting(
        true,
        "agent.state_dir",
        old.agent.state_dir != new.agent.state_dir,
    );
    setting(
        true,
        "agent.uapi_dir",
        old.agent.uapi_dir != new.agent.uapi_dir,
    );
    setting(
        true,
        "control.socket",
        old.control.socket != new.control.socket,
    );
    setting(
        true,
        "control.max_clients",
        old.control.max_clients != new.control.max_clients,
    );
    setting(
        true,
        "control.request_timeout",
        old.control.request_timeout != new.control.request_timeout,
    );
    setting(
        false,
        "control.socket_mode",
        old.control.socket_mode != new.control.socket_mode,
    );
    setting(
        false,
        "control.read_group",
        old.control.read_group != new.control.read_group,
    );
    setting(
        false,
        "control.admin_group",
        old.control.admin_group != new.control.admin_group,
    );
    setting(false, "metrics", old.metrics != new.metrics);
    setting(false, "routes", old.routes != new.routes);
    setting(false, "health", old.health != new.health);

    // Links are reported by the tunnel manager, which knows what it did to each.
    named(&mut c.applied, "probe", &old.probes, &new.probes, |p| {
        &p.name
    });
    named(
        &mut c.applied,
        "route_group",
        &old.route_groups,
        &new.route_groups,
        |g| &g.name,
    );
    named(
        &mut c.applied,
        "dns_provider",
        &old.dns_providers,
        &new.dns_providers,
        |p| &p.name,
    );
    named(
        &mut c.applied,
        "dns_group",
        &old.dns_groups,
        &new.dns_groups,
        |g| &g.name,
    );
    c
}

/// Added, removed and changed entries of a list whose entries are identified by name.
fn named<T: PartialEq>(
    out: &mut Vec<String>,
    kind: &str,
    old: &[T],
    new: &[T],
    name: fn(&T) -> &String,
) {
    for o in old {
        match new.iter().find(|n| name(n) == name(o)) {
            None => out.push(format!("{kind} {}: removed", name(o))),
            Some(n) if n != o => out.push(format!("{kind} {}: changed", name(o))),
            Some(_) => {}
        }
    }
    for n in new {
        if !old.iter().any(|o| name(o) == name(n)) {
            out.push(format!("{kind} {}: added", name(n)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        isthmus_config::parse_str(
            text,
            Path::new("/test/agentd.toml"),
            &LoadOptions::default(),
        )
        .unwrap()
        .config
    }

    const BASE: &str = r#"
[agent]
name = "gw"
[[probe]]
name = "db"
kind = "tcp"
target = "10.2.1.10:1522"
[[probe]]
name = "app"
kind = "tcp"
target = "10.2.1.11:443"
"#;

    #[test]
    fn an_identical_file_changes_nothing() {
        assert_eq!(diff(&parse(BASE), &parse(BASE)), Changes::default());
    }

    #[test]
    fn names_added_removed_and_changed_entries_and_restart_only_settings() {
        let new = BASE
            .replace("10.2.1.10:1522", "10.2.1.10:1521")
            .replace("name = \"app\"", "name = \"web\"")
            + "[control]\nmax_clients = 3\nread_group = 0\n";
        let c = diff(&parse(BASE), &parse(&new));
        assert_eq!(
            c.applied,
            vec![
                "control.read_group: changed",
                "probe db: changed",
                "probe app: removed",
                "probe web: added"
            ]
        );
        assert_eq!(c.needs_restart, vec!["control.max_clients: changed"]);
    }

    #[test]
    fn fingerprint_is_stable_and_tells_files_apart() {
        assert_eq!(fingerprint("a"), fingerprint("a"));
        assert_ne!(fingerprint("a"), fingerprint("b"));
        assert_eq!(fingerprint("").len(), 12);
    }
}
