//! Durations on the command line, spelt as in the config file: a whole number and a unit
//! (`500ms`, `5s`, `2m`, `1h`). The grammar and its messages are the config crate's
//! (`isthmus_config`'s `duration` module), whose parser is private to that crate; this copy
//! keeps `netctl drill --hold 60s` and `hold = "60s"` in a config reading the same way. A unit
//! is mandatory because a bare `5` is ambiguous, and fractions are written in the smaller unit.

use std::time::Duration;

const UNITS: &[(&str, u64)] = &[("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000)];
const SHAPE: &str = r#"write a whole number and a unit (ms, s, m, h), e.g. "500ms", "30s", "2m""#;

/// Parses `<digits><unit>`; the error says what is wrong and how to write it (clap prints it
/// after `invalid value '…' for '--hold <DURATION>'`).
pub fn parse(text: &str) -> Result<Duration, String> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    if number.is_empty() {
        return Err(format!("{text:?} is not a duration: {SHAPE}"));
    }
    if unit.is_empty() {
        return Err(format!(
            r#"duration {text:?} has no unit: write "{number}s" for seconds or "{number}ms" for milliseconds"#
        ));
    }
    if unit.starts_with('.') {
        return Err(format!(
            r#"duration {text:?} has a fraction: write it in a smaller unit, e.g. "1500ms" instead of "1.5s""#
        ));
    }
    let Some(&(_, per)) = UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(format!(
            "duration {text:?} has an unknown unit {unit:?}: {SHAPE}"
        ));
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(per))
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration {text:?} is too long"))
}

/// Like [`parse`], but zero is refused (an RTO target of 0 can never be met).
pub fn parse_positive(text: &str) -> Result<Duration, String> {
    match parse(text)? {
        d if d.is_zero() => Err(format!("{text:?}: must be longer than 0")),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_units_the_config_uses() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_spellings_say_how_to_write_them() {
        assert!(parse("5").unwrap_err().contains(r#""5s""#));
        assert!(parse("1.5s").unwrap_err().contains("1500ms"));
        assert!(parse("5d").unwrap_err().contains("unknown unit"));
        assert!(parse("5 s").unwrap_err().contains("unknown unit"));
        assert!(parse("s").unwrap_err().contains("not a duration"));
        assert!(parse("").unwrap_err().contains("not a duration"));
        assert!(parse("99999999999999999999h")
            .unwrap_err()
            .contains("too long"));
        assert!(parse_positive("0s").unwrap_err().contains("longer than 0"));
        assert_eq!(parse_positive("30s"), Ok(Duration::from_secs(30)));
    }
}
