//! agentd's configuration: the TOML schema, parsing with spans, and validation. Shared by
//! `agentd` (start-up, reload, `--check-config`) and `netctl check-config`, so it stays light:
//! no async runtime, no I/O but reading the file and its key files.
//!
//! A load reports every problem at once, each with file, line, column and a hint: `parse`
//! reads the text (recovering from syntax errors) and deserializes each section and list entry
//! on its own into the TOML-shaped structs of `raw`; `validate` checks each entry's values and
//! builds the [`Config`]; `relations` checks the rules across entries. Every check reports into
//! one sink, and the result is either a [`Loaded`] config with its warnings or a [`Report`]
//! with the errors and warnings (the first [`MAX_LISTED`] of each, and the count of the rest).
//!
//! A load takes time in proportion to the file, whatever is wrong with it, and a file is at most
//! [`MAX_CONFIG_BYTES`]: a reload of a broken or foreign file never stalls agentd.

mod diagnostic;
mod duration;
mod fields;
mod files;
mod keys;
mod model;
mod parse;
mod pem;
mod prefixes;
mod raw;
mod redact;
mod relations;
mod source;
mod tsig;
mod validate;
mod values;

use std::io::Read;
use std::path::{Path, PathBuf};

pub use diagnostic::{omitted_note, Diagnostic, Report, Severity, MAX_LISTED};
pub use files::{Disk, FileMeta, FileReader};

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

/// The largest config file agentd reads: 1 MiB. The example configs are a few KiB, and a
/// gateway with a thousand probes needs about 100 KiB; anything larger is the wrong file (a log,
/// a core dump, `/dev/zero`), and reading and checking it would only hold up a reload.
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;

/// A valid config and the warnings found on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub config: Config,
    /// The first [`MAX_LISTED`] warnings, in file order.
    pub warnings: Vec<Diagnostic>,
    /// Warnings found beyond those listed.
    pub omitted_warnings: usize,
}

impl Loaded {
    /// Every warning found, listed or not.
    pub fn warning_count(&self) -> usize {
        self.warnings.len() + self.omitted_warnings
    }
}

/// Reads the file with [`read_file`] and calls [`parse_str`].
pub fn load_file(path: &Path, opts: &LoadOptions) -> Result<Loaded, Report> {
    let text = read_file(path)?;
    parse_str(&text, path, opts)
}

/// The text of a config file: at most [`MAX_CONFIG_BYTES`], checked before reading more, and
/// valid UTF-8. A file that cannot be read or is too large is one diagnostic without a line;
/// one that is not UTF-8 is one diagnostic at the line and column of its first bad byte.
pub fn read_file(path: &Path) -> Result<String, Report> {
    let mut file = std::fs::File::open(path).map_err(|e| cannot_read(path, &e))?;
    let size = file.metadata().map_err(|e| cannot_read(path, &e))?.len();
    if size > MAX_CONFIG_BYTES as u64 {
        return Err(too_large(path, &format!("is {}", bytes(size))));
    }
    // The size may lie (a device, a pipe, a file still growing): read one byte past the limit
    // and no further.
    let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0) + 1);
    file.by_ref()
        .take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|e| cannot_read(path, &e))?;
    if data.len() > MAX_CONFIG_BYTES {
        return Err(too_large(path, "has more bytes than that"));
    }
    String::from_utf8(data).map_err(|e| not_utf8(path, e.as_bytes(), e.utf8_error()))
}

fn cannot_read(path: &Path, e: &std::io::Error) -> Report {
    let hint = match e.kind() {
        std::io::ErrorKind::NotFound => {
            "check the path; agentd reads /etc/isthmus/agentd.toml unless told otherwise"
        }
        std::io::ErrorKind::PermissionDenied => {
            "run as a user that may read it (agentd runs as root), or fix its permissions"
        }
        _ => "check that the path names a readable file",
    };
    unreadable(path, format!("cannot be read: {e}"), hint)
}

fn too_large(path: &Path, size: &str) -> Report {
    unreadable(
        path,
        format!(
            "is larger than the limit of {} for config files: it {size}",
            bytes(MAX_CONFIG_BYTES as u64)
        ),
        "check that this is the config file (a config with a thousand probes is about \
         100 KiB); agentd does not read larger files",
    )
}

/// `1 MiB (1048576 bytes)`, `10.5 MiB (11010048 bytes)`, `812 bytes`.
fn bytes(n: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if n < MIB {
        return format!("{n} bytes");
    }
    let mib = n as f64 / MIB as f64;
    if n.is_multiple_of(MIB) {
        format!("{} MiB ({n} bytes)", n / MIB)
    } else {
        format!("{mib:.1} MiB ({n} bytes)")
    }
}

/// The first byte that is not UTF-8, at its line and column (of the text before it).
fn not_utf8(path: &Path, data: &[u8], e: std::str::Utf8Error) -> Report {
    let at = e.valid_up_to();
    let file = path.display().to_string();
    let utf16 = data.starts_with(&[0xff, 0xfe]) || data.starts_with(&[0xfe, 0xff]);
    let (message, hint) = if utf16 {
        (
            format!("config file {file} is UTF-16 text (it starts with a UTF-16 byte order mark), not UTF-8"),
            "save the file as UTF-8, e.g. `iconv -f UTF-16 -t UTF-8 agentd.toml > agentd.utf8.toml`"
                .to_string(),
        )
    } else {
        (
            format!(
                "config file {file} is not valid UTF-8: byte 0x{:02X} is not part of a UTF-8 character",
                data[at]
            ),
            "save the file as UTF-8 (TOML files are UTF-8 text); if it is binary, check that \
             this is the config file"
                .to_string(),
        )
    };
    // The text up to the bad byte is valid, and the lossy copy keeps it byte for byte: the bad
    // byte's offset is the same in both, and shows as U+FFFD under the caret.
    let text = String::from_utf8_lossy(data);
    let source = Source::new(file, &text);
    let d = source.diagnostic(Severity::Error, Some(at..at + 1), message, Some(hint));
    Report::new(vec![d])
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
    parse_str_with(text, path, opts, &Disk)
}

/// [`parse_str`] with key files looked at and read through `files` instead of the disk.
pub fn parse_str_with(
    text: &str,
    path: &Path,
    opts: &LoadOptions,
    files: &dyn FileReader,
) -> Result<Loaded, Report> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(too_large(path, &format!("is {}", bytes(text.len() as u64))));
    }
    let source = Source::new(path.display().to_string(), text);
    if let Some(at) = text.find('\0') {
        // A NUL never belongs in TOML, and the parser's recovery around one points at the wrong
        // places: a binary file would get a screen of nonsense. One error at the first NUL.
        let d = source.diagnostic(
            Severity::Error,
            Some(at..at + 1),
            format!(
                "config file {} contains a NUL byte: it is binary, not TOML text",
                path.display()
            ),
            Some(
                "save the file as UTF-8 text without NUL bytes (an editor set to UTF-16 writes \
                 one after every ASCII character); check that this is the config file"
                    .to_string(),
            ),
        );
        return Err(Report::new(vec![d]));
    }
    let mut sink = Sink::new(&source);
    let raw = parse::parse(&mut sink);
    let keys = keys::KeyFiles::new(path, opts.credentials_dir.as_deref(), files);
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
    let found = sink.finish();
    let failed = found.omitted_errors > 0 || found.diagnostics.iter().any(Diagnostic::is_error);
    match config {
        Some(config) if !failed => Ok(Loaded {
            config,
            warnings: found.diagnostics,
            omitted_warnings: found.omitted_warnings,
        }),
        _ => Err(Report {
            diagnostics: found.diagnostics,
            omitted_errors: found.omitted_errors,
            omitted_warnings: found.omitted_warnings,
        }),
    }
}
