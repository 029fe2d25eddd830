//! Loading a config for the daemon (start-up and reload), describing what a reload changes, and
//! applying it to the running shell.
//!
//! A reload is all-or-nothing: the new file is read and validated completely, off the event
//! loop, before anything changes; on any error the running config stays and the caller gets
//! every diagnostic. Applying it is ordered by the adapters' answers: links that must stop (gone,
//! or changed in a way that needs a new interface) first lose their routes, and only once the
//! routes adapter confirms that are they stopped; the caller's answer lists what the links
//! adapter did.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use isthmus_api::{ErrorBody, EventKind, ReloadOutcome};
use isthmus_config::{Config, Diagnostic, LoadOptions, Report};
use tokio::sync::oneshot;

use super::shell::{PendingReload, Shell, Step};
use crate::events;
use crate::view::Rejected;

/// The config agentd runs with, and where it came from.
#[derive(Debug, Clone)]
pub struct Running {
    pub config: Arc<Config>,
    pub warnings: Vec<Diagnostic>,
    /// Hash of the file text: tells operators (and later the peer) which version runs.
    pub fingerprint: String,
    pub loaded_at: Instant,
}

pub fn load(path: &Path, opts: &LoadOptions) -> Result<Running, Report> {
    // Bounded and checked for UTF-8 by the config crate, so that every read of the file (start,
    // reload, --check-config) refuses the same files the same way.
    let text = isthmus_config::read_file(path)?;
    let loaded = isthmus_config::parse_str(&text, path, opts)?;
    Ok(Running {
        config: Arc::new(loaded.config),
        warnings: loaded.warnings,
        fingerprint: fingerprint(&text),
        loaded_at: crate::clock::now(),
    })
}

/// Settings whose change needs a new interface or socket: such a link is stopped and started
/// again (its routes move away first).
fn link_restarts(old: &isthmus_config::Link, new: &isthmus_config::Link) -> bool {
    old.interface != new.interface
        || old.listen != new.listen
        || old.tun_mtu() != new.tun_mtu()
        || old.addresses != new.addresses
}

impl Shell {
    /// A reload was asked for (SIGHUP or `netctl reload`): read the file off the loop.
    pub(super) fn start_reload(
        &mut self,
        reply: Option<oneshot::Sender<Result<ReloadOutcome, ErrorBody>>>,
    ) {
        crate::notify::reloading();
        let loader = self.adapters.loader.clone();
        let inputs = self.inputs.clone();
        tokio::task::spawn_blocking(move || {
            let result = loader();
            let _ = inputs.blocking_send(super::input::Input::ConfigLoaded { result, reply });
        });
    }

    /// The file was read: refuse it, or apply it.
    pub(super) fn finish_reload(
        &mut self,
        result: Result<Running, Report>,
        reply: Option<oneshot::Sender<Result<ReloadOutcome, ErrorBody>>>,
        now: Instant,
    ) {
        match result {
            Err(report) => {
                let err = self.reject(report, now);
                crate::notify::ready();
                if let Some(reply) = reply {
                    let _ = reply.send(Err(err));
                }
            }
            Ok(new) => self.apply(new, reply, now),
        }
    }

    fn reject(&mut self, report: Report, now: Instant) -> ErrorBody {
        self.reloads_rejected += 1;
        let first = report
            .errors()
            .next()
            .map(|d| match (d.line, d.column) {
                (Some(l), Some(c)) => format!("{}:{l}:{c}: {}", d.file, d.message),
                _ => format!("{}: {}", d.file, d.message),
            })
            .unwrap_or_default();
        tracing::error!(
            config = %self.running.config.path.display(),
            errors = report.error_count(),
            first_error = %first,
            "reload rejected; the running config stays"
        );
        self.last_rejected = Some(Rejected {
            at: now,
            error_count: report.error_count(),
            first_error: first,
        });
        let message = format!(
            "{} has {} error(s); agentd keeps running the config loaded before \
             (fingerprint {})",
            self.running.config.path.display(),
            report.error_count(),
            self.running.fingerprint
        );
        ErrorBody::config_invalid(message, report)
    }

    fn apply(
        &mut self,
        new: Running,
        reply: Option<oneshot::Sender<Result<ReloadOutcome, ErrorBody>>>,
        now: Instant,
    ) {
        let changes = diff(&self.running.config, &new.config);
        let old = std::mem::replace(&mut self.running, new);
        (self.adapters.on_config)(&old.config, &self.running.config);
        // Traffic so far is priced at the old price.
        self.accumulate_egress();
        self.reloads_applied += 1;
        self.last_rejected = None;
        let config = self.running.config.clone();

        // Links that stop (gone, or restarted on a new interface) leave the routes first.
        for (name, entry) in self.links.configs() {
            let stays = config
                .link(&name)
                .is_some_and(|l| !link_restarts(&entry, l));
            if !stays {
                self.links.withdraw(&name);
            }
        }
        let links = self.links.follow(&config.links);
        self.failover.update_config(&config, now);
        self.sync_transport();
        let jobs = crate::probe::job::jobs(&config);
        let keys: std::collections::BTreeSet<_> = jobs.iter().map(|j| j.key()).collect();
        self.targets.retain(|k, _| keys.contains(k));
        self.adapters.send_targets(jobs);
        self.metrics.follow_config(&config);
        self.configure_ha(now);
        self.configure_actions();
        self.feed_dns_groups(now);

        let outcome = ReloadOutcome {
            changed: !changes.applied.is_empty() || !changes.needs_restart.is_empty(),
            fingerprint: self.running.fingerprint.clone(),
            changes: changes.applied,
            needs_restart: changes.needs_restart,
            warnings: self.running.warnings.clone(),
        };
        let mut rec = events::record(
            EventKind::Reload,
            format!("config {} applied", outcome.fingerprint),
        );
        rec.to = Some(outcome.fingerprint.clone());
        self.push_event(rec);
        self.pending_reloads
            .push_back(Some(PendingReload { outcome, reply }));
        self.after_engine(now);
        // Always after the routes of this config are in, so that link applies keep their
        // order (and the callers' answers theirs).
        let generation = self.reconcile_routes();
        self.after_routes(generation, Step::ApplyLinks(links));
    }

    /// The links adapter finished a reload's [`crate::tunnel::LinkCmd::Apply`]: answer its caller.
    pub(super) fn reload_done(&mut self, link_changes: Vec<String>) {
        let Some(mut p) = self.pending_reloads.pop_front().flatten() else {
            for change in link_changes {
                tracing::debug!(change, "start-up");
            }
            return;
        };
        if !link_changes.is_empty() {
            p.outcome.changed = true;
        }
        p.outcome.changes.extend(link_changes);
        tracing::info!(
            fingerprint = %p.outcome.fingerprint,
            changes = %p.outcome.changes.join("; "),
            needs_restart = %p.outcome.needs_restart.join("; "),
            "config reloaded"
        );
        crate::notify::ready();
        if let Some(reply) = p.reply {
            let _ = reply.send(Ok(p.outcome));
        }
    }
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
        "agent.event_log_max_bytes",
        old.agent.event_log_max_bytes != new.agent.event_log_max_bytes,
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
        "control.max_clients_per_user",
        old.control.max_clients_per_user != new.control.max_clients_per_user,
    );
    setting(
        true,
        "control.reserved_clients",
        old.control.reserved_clients != new.control.reserved_clients,
    );
    setting(
        true,
        "control.head_timeout",
        old.control.head_timeout != new.control.head_timeout,
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
    setting(false, "actions", old.actions != new.actions);
    setting(false, "aws", old.aws != new.aws);
    setting(false, "oci", old.oci != new.oci);

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
    named(&mut c.applied, "hook", &old.hooks, &new.hooks, |h| &h.name);
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
            + "[control]\nmax_clients = 100\nread_group = 0\n";
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
