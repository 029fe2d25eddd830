//! The status and probes reports (`GET /v1/status`, `GET /v1/probes`), built from a [`View`].

use isthmus_api::{Access, AgentStatus, ConfigStatus, RejectedReload, Status};

use crate::view::View;

pub fn build(v: &View, caller_access: Access) -> Status {
    let config = &v.config;
    let ago = |at: std::time::Instant| v.now.saturating_duration_since(at).as_secs();
    Status {
        agent: AgentStatus {
            name: config.agent.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            api_version: isthmus_api::API_VERSION.to_owned(),
            pid: std::process::id(),
            uptime_seconds: ago(v.started_at),
            caller_access,
            metrics: Some(v.metrics_listener.clone()),
            loop_lag: v.loop_lag.clone(),
            event_log_dropped: v.event_log_dropped,
        },
        config: ConfigStatus {
            path: v.config_path.display().to_string(),
            fingerprint: v.fingerprint.clone(),
            loaded_seconds_ago: ago(v.loaded_at),
            reloads_applied: v.reloads_applied,
            reloads_rejected: v.reloads_rejected,
            last_rejected: v.last_rejected.as_ref().map(|r| RejectedReload {
                seconds_ago: ago(r.at),
                error_count: r.error_count,
                first_error: r.first_error.clone(),
            }),
            warnings: v.config_warnings.clone(),
        },
        links: v.links.clone(),
        route_groups: v.groups.clone(),
        warnings: v.host_warnings.clone(),
        dns_groups: v.dns_groups.clone(),
        actions: v.actions.clone(),
        drill: v.drill.clone(),
        peer_drill: v.peer_drill.clone(),
        faults: v
            .metrics
            .faults
            .snapshot()
            .into_iter()
            .map(|f| isthmus_api::FaultStatus {
                kind: f.kind.label().to_owned(),
                subject: f.subject,
                error: f.detail,
                seconds: ago(f.since),
            })
            .collect(),
        ha: v.ha.clone(),
    }
}

/// `GET /v1/actions`.
pub fn actions(v: &View) -> isthmus_api::ActionsStatus {
    isthmus_api::ActionsStatus {
        dns_groups: v.dns_groups.clone(),
        actions: v.actions.clone(),
    }
}

/// `GET /v1/probes`.
pub fn probes(v: &View) -> Vec<isthmus_api::ProbeStatus> {
    crate::probe::job::jobs(&v.config)
        .into_iter()
        .map(|job| {
            let r = v.targets.get(&job.key());
            let p = &job.probe;
            isthmus_api::ProbeStatus {
                name: p.name.clone(),
                link: job.via.map(|v| v.link),
                kind: p.kind.as_str().to_owned(),
                target: p.target.clone(),
                state: match r {
                    None => "unknown",
                    Some(t) if t.last.ok => "ok",
                    Some(_) => "failing",
                }
                .to_owned(),
                last_reason: r.map(|t| t.last.reason.as_str().to_owned()),
                last_duration_ms: r.map(|t| (t.last.duration.as_secs_f64() * 1e6).round() / 1e3),
                last_run_seconds_ago: r.map(|t| v.now.saturating_duration_since(t.at).as_secs()),
                successes: r.map_or(0, |t| t.successes),
                failures: r.map_or(0, |t| t.failures),
            }
        })
        .collect()
}
