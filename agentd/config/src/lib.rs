//! agentd's configuration: the TOML schema, parsing with spans, and validation. Shared by
//! `agentd` (start-up, reload, `--check-config`) and `netctl check-config`, so it stays light:
//! no async runtime, no I/O but reading the file and its key files.
//!
//! A load reports every problem at once, each with file, line, column and a hint: `parse`
//! reads the text (recovering from syntax errors) and deserializes each section and list entry
//! on its own into the TOML-shaped structs of `raw`; `validate` checks each entry's values and
//! builds the [`Config`]; `relations` checks the rules across entries. Every check reports into
//! one sink, and the result is either a [`Loaded`] config with its warnings or a [`Report`]
//! with every error and warning.

mod diagnostic;
mod duration;
mod fields;
mod keys;
mod model;
mod parse;
mod pem;
mod raw;
mod relations;
mod source;
mod tsig;
mod validate;
mod values;

use std::path::{Path, PathBuf};

pub use diagnostic::{Diagnostic, Report, Severity};

/// A duration as the config writes it (`500ms`, `30s`, `2m`, `1h`), for command lines that take
/// the same spelling (`netctl drill --hold 2m`); the error says what is wrong and how to write it.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    duration::parse(text).map_err(|e| format!("{}: {}", e.message, e.hint))
}
pub use model::*;

use source::{Sink, Source};

/// Where relative key paths are looked up, besides the config file's directory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadOptions {
    /// systemd's credentials directory (`LoadCredential=`); relative key paths resolve here
    /// when set, else against the config file's directory.
    pub credentials_dir: Option<PathBuf>,
}

impl LoadOptions {
    /// Reads `$CREDENTIALS_DIRECTORY`, which systemd sets for a unit with `LoadCredential=`.
    pub fn from_env() -> Self {
        LoadOptions {
            credentials_dir: std::env::var_os("CREDENTIALS_DIRECTORY")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        }
    }
}

/// A valid config and the warnings found on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
}

/// Reads the file (an unreadable file is one Diagnostic with no line) and calls [`parse_str`].
pub fn load_file(path: &Path, opts: &LoadOptions) -> Result<Loaded, Report> {
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => parse_str(&text, path, opts),
            Err(_) => Err(unreadable(
                path,
                "is not valid UTF-8".to_string(),
                "TOML files are UTF-8 text; check that this is the config file",
            )),
        },
        Err(e) => {
            let hint = match e.kind() {
                std::io::ErrorKind::NotFound => {
                    "check the path; agentd reads /etc/isthmus/agentd.toml unless told otherwise"
                }
                std::io::ErrorKind::PermissionDenied => {
                    "run as a user that may read it (agentd runs as root), or fix its permissions"
                }
                _ => "check that the path names a readable file",
            };
            Err(unreadable(path, format!("cannot be read: {e}"), hint))
        }
    }
}

fn unreadable(path: &Path, what: String, hint: &str) -> Report {
    let file = path.display().to_string();
    let source = Source::new(file.clone(), "");
    let d = source.diagnostic(
        Severity::Error,
        None,
        format!("config file {file} {what}"),
        Some(hint.to_string()),
    );
    Report::new(vec![d])
}

/// Parses and validates `text`. `path` names the file in diagnostics and is the base for
/// relative key paths.
pub fn parse_str(text: &str, path: &Path, opts: &LoadOptions) -> Result<Loaded, Report> {
    let source = Source::new(path.display().to_string(), text);
    let mut sink = Sink::new(&source);
    let raw = parse::parse(&mut sink);
    let keys = keys::KeyFiles::new(path, opts.credentials_dir.as_deref());
    let config = validate::build(&raw, path, &keys, &mut sink);
    if config.is_none() && sink.error_count() == 0 {
        // Every path that builds no config reports why; this keeps the promise if one forgets.
        sink.push(
            Severity::Error,
            None,
            "the config is incomplete, but no rule said why (a bug in isthmus-config)".into(),
            Some("please report it with this config file (without keys)".into()),
        );
    }
    let diagnostics = sink.finish();
    match config {
        Some(config) if !diagnostics.iter().any(Diagnostic::is_error) => Ok(Loaded {
            config,
            warnings: diagnostics,
        }),
        _ => Err(Report::new(diagnostics)),
    }
}
