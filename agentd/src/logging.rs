//! Structured logs to stderr, for journald. The level comes from `RUST_LOG` when set, else from
//! `[agent].log_level`; a reload that changes `log_level` takes effect at once (unless `RUST_LOG`
//! pins it).

use isthmus_config::LogLevel;
use tracing_subscriber::{fmt, prelude::*, reload, EnvFilter, Registry};

/// Handle to change the log level on reload.
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    pinned_by_env: bool,
}

pub fn init(level: LogLevel) -> LogControl {
    let from_env = std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty());
    let filter = match &from_env {
        Some(spec) => EnvFilter::new(spec),
        None => EnvFilter::new(level.as_str()),
    };
    let (filter, handle) = reload::Layer::new(filter);
    // journald adds its own timestamps; a terminal user wants them.
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let fmt_layer = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter);
    if under_journald {
        registry.with(fmt_layer.without_time()).init();
    } else {
        registry.with(fmt_layer).init();
    }
    LogControl {
        handle,
        pinned_by_env: from_env.is_some(),
    }
}

impl LogControl {
    pub fn set_level(&self, level: LogLevel) {
        if self.pinned_by_env {
            return;
        }
        if let Err(e) = self.handle.reload(EnvFilter::new(level.as_str())) {
            tracing::warn!(error = %e, "cannot change the log level");
        }
    }
}
