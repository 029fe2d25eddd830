//! The status report (`GET /v1/status`), built from the event loop's state.

use isthmus_api::{Access, AgentStatus, ConfigStatus, RejectedReload, Status};

use crate::daemon::State;

pub fn build(state: &State, caller_access: Access) -> Status {
    let config = &state.running.config;
    Status {
        agent: AgentStatus {
            name: config.agent.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            api_version: isthmus_api::API_VERSION.to_owned(),
            pid: std::process::id(),
            uptime_seconds: state.started_at.elapsed().as_secs(),
            caller_access,
            metrics: Some(state.metrics_listener.borrow().clone()),
        },
        config: ConfigStatus {
            path: state.config_path.display().to_string(),
            fingerprint: state.running.fingerprint.clone(),
            loaded_seconds_ago: state.running.loaded_at.elapsed().as_secs(),
            reloads_applied: state.reloads_applied,
            reloads_rejected: state.reloads_rejected,
            last_rejected: state
                .last_rejected
                .as_ref()
                .map(|(at, error_count, first_error)| RejectedReload {
                    seconds_ago: at.elapsed().as_secs(),
                    error_count: *error_count,
                    first_error: first_error.clone(),
                }),
            warnings: state.running.warnings.clone(),
        },
        links: state.link_statuses(),
        route_groups: config
            .route_groups
            .iter()
            .filter_map(|g| state.group_status(&g.name))
            .collect(),
        warnings: state.host_warnings.clone(),
    }
}

/// `GET /v1/probes`.
pub fn probes(state: &State) -> Vec<isthmus_api::ProbeStatus> {
    crate::probe::job::jobs(&state.running.config)
        .into_iter()
        .map(|job| {
            let r = state.target_results.get(&job.key());
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
                last_run_seconds_ago: r.map(|t| t.at.elapsed().as_secs()),
                successes: r.map_or(0, |t| t.successes),
                failures: r.map_or(0, |t| t.failures),
            }
        })
        .collect()
}
