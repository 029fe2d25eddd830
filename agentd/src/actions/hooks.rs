//! Hooks: commands run on every transition of the groups they list (`[[hook]]`).
//!
//! Each hook has its own runner task and a bounded queue, so its runs happen in the order of
//! the transitions, one at a time, and a hook that hangs (killed at its timeout) or fails
//! (retried with back-off) delays only its own later runs. When the queue is full the
//! transition is dropped and reported, never waited for.

use std::collections::BTreeMap;

use isthmus_actions::command::{self, CommandSpec, RunResult};
use tokio::sync::mpsc;

use super::Pacing;
use crate::daemon::input::Input;

/// Transitions queued per hook before new ones are dropped.
pub const QUEUE: usize = 32;

/// One run of a hook for one transition.
#[derive(Debug, Clone, PartialEq)]
pub struct HookRun {
    pub hook: String,
    /// The group whose transition it is.
    pub group: String,
    pub spec: CommandSpec,
    pub retries: u32,
}

/// How a run (with its retries) ended.
#[derive(Debug, Clone, PartialEq)]
pub struct HookReport {
    pub hook: String,
    pub group: String,
    /// The last attempt: its result, or why it could not start.
    pub result: Result<RunResult, String>,
    pub attempts: u32,
}

impl HookReport {
    pub fn success(&self) -> bool {
        self.result.as_ref().is_ok_and(RunResult::success)
    }

    pub fn describe(&self) -> String {
        let what = match &self.result {
            Ok(r) => r.describe(),
            Err(e) => e.clone(),
        };
        if self.attempts > 1 {
            format!("{what} (attempt {})", self.attempts)
        } else {
            what
        }
    }
}

pub(super) struct Runners {
    queues: BTreeMap<String, mpsc::Sender<HookRun>>,
    reports: mpsc::Sender<Input>,
    pacing: Pacing,
}

impl Runners {
    pub(super) fn new(reports: mpsc::Sender<Input>) -> Self {
        Runners {
            queues: BTreeMap::new(),
            reports,
            pacing: Pacing::default(),
        }
    }

    pub(super) fn set_pacing(&mut self, pacing: Pacing) {
        self.pacing = pacing;
    }

    pub(super) fn run(&mut self, run: HookRun) {
        let queue = self.queues.entry(run.hook.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(runner(rx, self.reports.clone(), self.pacing.clone()));
            tx
        });
        if let Err(e) = queue.try_send(run) {
            let run = match e {
                mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r) => r,
            };
            tracing::warn!(hook = %run.hook, group = %run.group, "hook queue full: this transition's run is dropped");
            let report = HookReport {
                hook: run.hook,
                group: run.group,
                result: Err(format!("not run: {QUEUE} runs already queued")),
                attempts: 0,
            };
            let reports = self.reports.clone();
            tokio::spawn(async move {
                let _ = reports.send(Input::Hook(report)).await;
            });
        }
    }
}

async fn runner(mut rx: mpsc::Receiver<HookRun>, reports: mpsc::Sender<Input>, pacing: Pacing) {
    while let Some(run) = rx.recv().await {
        let mut attempts = 0;
        let result = loop {
            attempts += 1;
            let result = command::run(&run.spec).await.map_err(|f| f.message);
            let ok = result.as_ref().is_ok_and(RunResult::success);
            if ok || attempts > run.retries {
                break result;
            }
            let wait = pacing
                .retry_initial
                .saturating_mul(1 << (attempts - 1).min(10))
                .min(pacing.retry_max);
            tracing::info!(hook = %run.hook, attempt = attempts, retry_in = ?wait, "hook failed; retrying");
            tokio::time::sleep(wait).await;
        };
        let report = HookReport {
            hook: run.hook.clone(),
            group: run.group.clone(),
            result,
            attempts,
        };
        if reports.send(Input::Hook(report)).await.is_err() {
            return;
        }
    }
}

/// The environment of a hook run: the transition, in `ISTHMUS_*` variables.
#[allow(clippy::too_many_arguments)]
pub fn environment(
    agent: &str,
    hook: &str,
    kind: &str,
    group: &str,
    from: Option<&str>,
    to: Option<&str>,
    reason: &str,
    figures: &[(&str, String)],
    time: &str,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let mut set = |k: &str, v: &str| {
        env.insert(k.to_owned(), v.to_owned());
    };
    set("ISTHMUS_AGENT", agent);
    set("ISTHMUS_HOOK", hook);
    set("ISTHMUS_KIND", kind);
    set("ISTHMUS_GROUP", group);
    set("ISTHMUS_FROM", from.unwrap_or(""));
    set("ISTHMUS_TO", to.unwrap_or(""));
    set("ISTHMUS_REASON", reason);
    set("ISTHMUS_TIME", time);
    for (k, v) in figures {
        set(&format!("ISTHMUS_{k}"), v);
    }
    env
}
