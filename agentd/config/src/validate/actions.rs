//! `[actions]` and `[[hook]]`: how agentd carries out a failover beyond the kernel (DNS records,
//! cloud route tables: pacing, timeouts, retries, re-assertion), and the commands it runs on
//! every transition.

use std::collections::BTreeMap;
use std::time::Duration;

use super::routing::names_once;
use super::{command, known, name};
use crate::duration;
use crate::fields::Fields;
use crate::model::*;
use crate::parse::Entry;
use crate::raw::{RawActions, RawHook};
use crate::source::Sink;
use crate::values;

pub(super) fn actions(entry: Option<&Entry<RawActions>>, sink: &mut Sink) -> Option<Actions> {
    let defaults = Actions::default();
    let Some(e) = entry else {
        return Some(defaults);
    };
    let r = &e.value;
    let mut f = Fields::of(e, sink);
    let ms = Duration::from_millis;
    let s = Duration::from_secs;
    let min_interval = f.duration(
        &r.min_interval,
        "min_interval",
        Duration::ZERO,
        Some(s(600)),
    );
    let timeout = f.duration(&r.timeout, "timeout", ms(100), Some(s(300)));
    let retry_initial = f.duration(&r.retry_initial, "retry_initial", ms(10), Some(s(3600)));
    let retry_max = f.duration(&r.retry_max, "retry_max", ms(10), Some(s(3600)));
    let reassert_every = f.duration(&r.reassert_every, "reassert_every", s(1), None);
    let verify_timeout = f.duration(&r.verify_timeout, "verify_timeout", s(1), Some(s(3600)));
    let header = f.span();
    let mut ok = true;
    if let (Some((initial, i_span)), Some((max, m_span))) = (
        known(&retry_initial, defaults.retry_initial, &header),
        known(&retry_max, defaults.retry_max, &header),
    ) {
        if initial > max {
            let span = if retry_max.is_present() {
                m_span
            } else {
                i_span
            };
            f.error(
                span,
                format!(
                    "retry_max ({}) is shorter than retry_initial ({})",
                    duration::format(max),
                    duration::format(initial)
                ),
                "the back-off starts at retry_initial and doubles up to retry_max: make \
                 retry_max at least retry_initial",
            );
            ok = false;
        }
    }
    let actions = Actions {
        min_interval: min_interval.or(defaults.min_interval)?,
        timeout: timeout.or(defaults.timeout)?,
        retry_initial: retry_initial.or(defaults.retry_initial)?,
        retry_max: retry_max.or(defaults.retry_max)?,
        reassert_every: reassert_every.or(defaults.reassert_every)?,
        verify_timeout: verify_timeout.or(defaults.verify_timeout)?,
    };
    ok.then_some(actions)
}

pub(super) fn hook(e: &Entry<RawHook>, sink: &mut Sink) -> Option<Hook> {
    let r = &e.value;
    let mut f = Fields::of(e, sink);
    let name = name(&mut f, &r.name, 63);
    let command = command(&mut f, &r.command, "command");
    let command = f.require(command, "command");
    let environment = match &r.environment {
        None => Some(BTreeMap::new()),
        Some(map) => {
            let mut out = Some(BTreeMap::new());
            for (key, value) in map.get_ref() {
                if let Err(e) = values::env_name(key.get_ref()) {
                    f.report(key.span(), "environment", e);
                    out = None;
                } else if value.get_ref().contains('\0') {
                    f.error(
                        value.span(),
                        format!("environment: {} contains a NUL character", key.get_ref()),
                        "remove the \\u0000: environment values cannot hold it",
                    );
                    out = None;
                } else if let Some(all) = &mut out {
                    all.insert(key.get_ref().clone(), value.get_ref().clone());
                }
            }
            out
        }
    };
    let groups = names_once(&mut f, &r.groups, "groups", "group", false).or(Vec::new());
    let timeout = f
        .duration(
            &r.timeout,
            "timeout",
            Duration::from_millis(100),
            Some(MAX_HOOK_TIMEOUT),
        )
        .or(DEFAULT_HOOK_TIMEOUT);
    let retries = f
        .int(&r.retries, "retries", 0..=i64::from(MAX_HOOK_RETRIES))
        .map(|n| n as u32)
        .or(0);
    Some(Hook {
        name: name?,
        command: command?,
        environment: environment?,
        groups: groups?,
        timeout: timeout?,
        retries: retries?,
    })
}
