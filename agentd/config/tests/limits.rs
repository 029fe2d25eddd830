//! Files that are huge, full of mistakes, or not text at all: a load takes time in proportion to
//! the file, lists the first errors and counts the rest exactly, refuses a file over the size
//! limit before reading it, and names the line and column of the first byte that is not UTF-8
//! (or is a NUL).
//!
//! The time bounds are generous (tens of times what the checks take here in a debug build);
//! the quadratic versions these tests replaced took from 20 seconds to minutes on the same
//! inputs.

mod common;

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use isthmus_config::{
    load_file, parse_str, read_file, LoadOptions, Report, MAX_CONFIG_BYTES, MAX_LISTED,
};

const BOUND: Duration = Duration::from_secs(3);

/// What `f` returns and how long it took, on the wall clock: these bound real work (no tokio
/// clock is involved, so the workspace's rule for `Instant::now` does not apply).
#[allow(clippy::disallowed_methods)]
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let value = f();
    (value, started.elapsed())
}

/// `[agent]` with its name and `n` unknown keys `k0 = 1` ... on lines 3 .. n + 2, then a
/// `[control]` whose groups exist on every host (so that there are no warnings).
fn agent_with_unknown_keys(n: usize) -> String {
    let mut text = String::with_capacity(n * 12 + 64);
    text.push_str("[agent]\nname = \"gw\"\n");
    for i in 0..n {
        let _ = writeln!(text, "k{i} = 1");
    }
    text.push_str("[control]\nread_group = 0\nadmin_group = 0\n");
    text
}

/// Parses `text`, failing if it takes longer than [`BOUND`]; the report of a file that must fail.
fn timed_failure(what: &str, text: &str, path: &Path) -> Report {
    let (result, took) = timed(|| parse_str(text, path, &LoadOptions::default()));
    assert!(
        took < BOUND,
        "{what}: took {took:?} for {} bytes",
        text.len()
    );
    match result {
        Ok(_) => panic!("{what}: loaded"),
        Err(report) => report,
    }
}

#[test]
fn twenty_thousand_unknown_keys_are_checked_at_once_and_the_first_hundred_listed() {
    let n = 20_000;
    let text = agent_with_unknown_keys(n);
    let report = timed_failure("unknown keys", &text, Path::new("/etc/isthmus/agentd.toml"));
    assert_eq!(report.error_count(), n);
    let errors: Vec<_> = report.errors().collect();
    assert_eq!(errors.len(), MAX_LISTED);
    assert_eq!(report.omitted_errors, n - MAX_LISTED);
    // The first ones in the file, in file order, each at its key.
    for (i, d) in errors.iter().enumerate() {
        assert_eq!(d.message, format!("[agent]: unknown key `k{i}`"));
        assert_eq!((d.line, d.column), (Some(i as u32 + 3), Some(1)));
        assert!(d.hint.as_deref().unwrap().contains("valid keys here: name"));
    }
    let rendered = report.render();
    let tail: Vec<&str> = rendered.lines().rev().take(3).collect();
    assert_eq!(
        tail,
        [
            "20000 errors in /etc/isthmus/agentd.toml",
            "",
            "… and 19900 more errors (not listed: only the first 100 of each kind are)",
        ]
    );
    // The counts travel with the report (netctl --json, the reload's config_invalid answer).
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["omitted_errors"], 19_900);
    assert_eq!(
        json["diagnostics"].as_array().unwrap().len(),
        report.diagnostics.len()
    );
    let back: Report = serde_json::from_value(json).unwrap();
    assert_eq!(back, report);
}

#[test]
fn unknown_keys_in_list_entries_and_unknown_sections_are_counted_the_same_way() {
    let mut text =
        String::from("[agent]\nname = \"gw\"\n[control]\nread_group = 0\nadmin_group = 0\n");
    for i in 0..5_000 {
        let _ = writeln!(text, "[[hook]]\nnmae = \"h{i}\"\ncommand = [\"/bin/true\"]");
    }
    for i in 0..5_000 {
        let _ = writeln!(text, "[section{i}]");
    }
    let report = timed_failure("entries", &text, Path::new("agentd.toml"));
    // Each hook: its unknown `nmae` (and no "missing name" after "did you mean `name`?").
    assert_eq!(report.error_count(), 10_000, "{}", report.render());
    let first = report.errors().next().unwrap();
    assert_eq!(first.message, "hook #1: unknown key `nmae`");
    assert!(first
        .hint
        .as_deref()
        .unwrap()
        .starts_with("did you mean `name`?"));
    assert_eq!(report.errors().count(), MAX_LISTED);
}

/// A valid link "l0" that carries 10.0.0.0/8, with key file `good.key`.
fn link(dir: &Path) -> String {
    format!(
        "[[link]]\nname = \"l0\"\ninterface = \"is0\"\nprivate_key_file = \"{}\"\n\
         listen = \"192.0.2.1:51820\"\npeer_public_key = \"sTW6GPMPj3UsueeSgjVcAqH7BCh92Kd0K7aReWmVlEA=\"\n\
         peer_endpoint = \"192.0.2.2:51820\"\nallowed_ips = [\"10.0.0.0/8\"]\naddresses = [\"10.255.0.0/31\"]\n",
        dir.join("good.key").display()
    )
}

#[test]
fn rules_across_entries_take_time_in_proportion_to_the_file() {
    let (dir, _) = common::key_dir();
    let path = dir.path().join("agentd.toml");
    let head = format!(
        "[agent]\nname = \"gw\"\n[control]\nread_group = 0\nadmin_group = 0\n{}",
        link(dir.path())
    );

    // 20,000 destinations of one group, the last overlapping the first.
    let mut text = head.clone();
    text.push_str("[[route_group]]\nname = \"g\"\nlinks = [\"l0\"]\ndestinations = [");
    for i in 0..20_000 {
        let _ = write!(text, "\"10.{}.{}.0/24\", ", i / 256, i % 256);
    }
    text.push_str("\"10.0.0.0/16\"]\n");
    let report = timed_failure("destinations", &text, &path);
    assert_eq!(report.error_count(), 1, "{}", report.render());
    let d = report.errors().next().unwrap();
    assert!(
        d.message
            .contains("destination 10.0.0.0/16 overlaps 10.0.0.0/24 of the same group"),
        "{d}"
    );

    // 4,000 probes, and 20,000 checks that name none of them.
    let mut text = head.clone();
    for i in 0..4_000 {
        let _ = writeln!(
            text,
            "[[probe]]\nname = \"p{i}\"\nkind = \"tcp\"\ntarget = \"10.0.0.1:1\""
        );
    }
    text.push_str("[[route_group]]\nname = \"g\"\nlinks = [\"l0\"]\ndestinations = [\"10.1.0.0/16\"]\nchecks = [");
    for i in 0..20_000 {
        let _ = write!(text, "\"q{i}\", ");
    }
    text.push_str("\"p1\"]\n");
    let report = timed_failure("references", &text, &path);
    assert_eq!(report.error_count(), 20_000);
    let d = report.errors().next().unwrap();
    assert_eq!(d.message, "route_group \"g\": probe \"q0\" is not defined");
    let hint = d.hint.as_deref().unwrap();
    assert!(hint.contains("did you mean \"p0\"?"), "{hint}");
    // The defined names in the hint are a sample, not four thousand.
    assert!(hint.ends_with("p19 and 3980 more"), "{hint}");

    // 6,000 route groups of one destination each; the last repeats the first's.
    let mut text = head;
    for i in 0..6_000 {
        let _ = writeln!(
            text,
            "[[route_group]]\nname = \"g{i}\"\nlinks = [\"l0\"]\ndestinations = [\"10.{}.{}.0/24\"]",
            i / 256,
            i % 256
        );
    }
    text.push_str(
        "[[route_group]]\nname = \"last\"\nlinks = [\"l0\"]\ndestinations = [\"10.0.0.0/24\"]\n",
    );
    let report = timed_failure("route groups", &text, &path);
    assert_eq!(report.error_count(), 1, "{}", report.render());
    assert!(
        report.errors().next().unwrap().message.contains(
            "route_group \"last\": destination 10.0.0.0/24 overlaps 10.0.0.0/24 of route_group \"g0\""
        ),
        "{}",
        report.render()
    );
}

#[test]
fn a_file_over_the_size_limit_is_refused_with_the_limit_and_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agentd.toml");
    // Exactly the limit: read (and checked; a comment pads it out).
    let base = "[agent]\nname = \"gw\"\n#";
    let mut text = String::from(base);
    text.push_str(&"x".repeat(MAX_CONFIG_BYTES - base.len() - 1));
    text.push('\n');
    assert_eq!(text.len(), MAX_CONFIG_BYTES);
    std::fs::write(&path, &text).unwrap();
    assert_eq!(read_file(&path).unwrap().len(), MAX_CONFIG_BYTES);

    // One byte more: refused, whichever way it comes in.
    text.push('\n');
    std::fs::write(&path, &text).unwrap();
    let report = load_file(&path, &LoadOptions::default()).unwrap_err();
    assert_eq!(report.diagnostics.len(), 1);
    let d = &report.diagnostics[0];
    assert_eq!(
        d.message,
        format!(
            "config file {} is larger than the limit of 1 MiB (1048576 bytes) for config \
             files: it is 1.0 MiB (1048577 bytes)",
            path.display()
        )
    );
    assert!(d
        .hint
        .as_deref()
        .unwrap()
        .contains("check that this is the config file"));
    let report = parse_str(&text, &path, &LoadOptions::default()).unwrap_err();
    assert!(
        report.diagnostics[0]
            .message
            .contains("larger than the limit of 1 MiB"),
        "{report}"
    );

    // 10 MB: refused from its size, without reading it.
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(10 * 1024 * 1024).unwrap();
    let report = read_file(&path).unwrap_err();
    assert!(
        report.diagnostics[0]
            .message
            .ends_with("it is 10 MiB (10485760 bytes)"),
        "{report}"
    );

    // A file whose size says nothing: read up to the limit and no further.
    let (report, took) = timed(|| read_file(Path::new("/dev/zero")).unwrap_err());
    assert!(took < BOUND, "{took:?}");
    assert_eq!(
        report.diagnostics[0].message,
        "config file /dev/zero is larger than the limit of 1 MiB (1048576 bytes) for config \
         files: it has more bytes than that"
    );
}

fn write_bytes(dir: &Path, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join("agentd.toml");
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(bytes))
        .expect("writing the test file");
    path
}

#[test]
fn a_file_that_is_not_utf8_is_refused_at_the_line_and_column_of_its_first_bad_byte() {
    let dir = tempfile::tempdir().unwrap();
    // Line 3: `name = "äö` is 10 characters (12 bytes), then a Latin-1 byte.
    let path = write_bytes(
        dir.path(),
        b"# gateway\n[agent]\nname = \"\xc3\xa4\xc3\xb6\xff\"\nlog_level = \"\xe9\"\n",
    );
    let report = load_file(&path, &LoadOptions::default()).unwrap_err();
    assert_eq!(report.diagnostics.len(), 1, "{report}");
    let d = &report.diagnostics[0];
    assert_eq!((d.line, d.column), (Some(3), Some(11)), "{d}");
    assert_eq!(
        d.message,
        format!(
            "config file {} is not valid UTF-8: byte 0xFF is not part of a UTF-8 character",
            path.display()
        )
    );
    assert!(d
        .hint
        .as_deref()
        .unwrap()
        .starts_with("save the file as UTF-8"));
    let rendered = d.to_string();
    assert!(
        rendered.contains(&format!("--> {}:3:11", path.display())),
        "{rendered}"
    );
    assert!(
        rendered.contains("3 | name = \"äö\u{FFFD}\"\n  |           ^"),
        "{rendered}"
    );

    // UTF-16, as some editors save "Unicode" text: said so, at the start.
    let utf16: Vec<u8> = [0xfeff_u16]
        .into_iter()
        .chain("[agent]\nname = \"gw\"\n".encode_utf16())
        .flat_map(u16::to_le_bytes)
        .collect();
    let path = write_bytes(dir.path(), &utf16);
    let d = &load_file(&path, &LoadOptions::default())
        .unwrap_err()
        .diagnostics[0];
    assert_eq!((d.line, d.column), (Some(1), Some(1)));
    assert!(d.message.contains("is UTF-16 text"), "{d}");
    assert!(d
        .hint
        .as_deref()
        .unwrap()
        .contains("iconv -f UTF-16 -t UTF-8"));

    // Binary garbage on one long line: the place, and a short, printable piece of the line.
    let mut garbage: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    garbage[150_000] = 0x80;
    let path = write_bytes(dir.path(), &garbage);
    let d = &load_file(&path, &LoadOptions::default())
        .unwrap_err()
        .diagnostics[0];
    assert_eq!((d.line, d.column), (Some(1), Some(150_001)));
    let shown = d.source_line.as_deref().unwrap();
    assert!(shown.chars().count() <= 161, "{} characters", shown.len());
    let rendered = d.to_string();
    let lines: Vec<&str> = rendered.lines().collect();
    let (text, carets) = (lines[3], lines[4]);
    // The caret stands under the bad byte's replacement character.
    let caret_at = carets.chars().position(|c| c == '^').unwrap();
    assert_eq!(text.chars().nth(caret_at), Some('\u{FFFD}'), "{rendered}");
    assert!(text.contains("| …"), "{rendered}");
}

#[test]
fn a_nul_byte_is_one_error_at_its_place_and_never_printed() {
    let (dir, _) = common::key_dir();
    let path = dir.path().join("agentd.toml");
    let text = "[agent]\nname = \"gw\"\n\n# a comment\0\0\0\0\n\0\0[[link]]\n";
    let report = parse_str(text, &path, &LoadOptions::default()).unwrap_err();
    assert_eq!(report.diagnostics.len(), 1, "{report}");
    let d = &report.diagnostics[0];
    assert_eq!((d.line, d.column), (Some(4), Some(12)));
    assert!(d.message.contains("contains a NUL byte"), "{d}");
    assert!(d
        .hint
        .as_deref()
        .unwrap()
        .starts_with("save the file as UTF-8 text"));
    let rendered = report.render();
    assert!(!rendered.contains('\0'), "{rendered:?}");
    assert!(
        rendered.contains("4 | # a comment\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}"),
        "{rendered}"
    );

    // A file of nothing but NULs (a truncated or preallocated file) says the same at 1:1.
    let path = write_bytes(dir.path(), &[0u8; 100_000]);
    let report = load_file(&path, &LoadOptions::default()).unwrap_err();
    assert_eq!(report.diagnostics.len(), 1, "{report}");
    assert_eq!(
        (report.diagnostics[0].line, report.diagnostics[0].column),
        (Some(1), Some(1))
    );
}
