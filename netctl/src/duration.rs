//! Durations on the command line, spelt as in the config file (`500ms`, `5s`, `2m`, `1h`): the
//! config crate's parser, so that `netctl drill --hold 60s` and `hold = "60s"` read the same way.

use std::time::Duration;

/// Parses `<digits><unit>`; the error says what is wrong and how to write it (clap prints it
/// after `invalid value '…' for '--hold <DURATION>'`).
pub fn parse(text: &str) -> Result<Duration, String> {
    isthmus_config::parse_duration(text)
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
        assert!(parse("5 s").unwrap_err().contains("space before its unit"));
        assert!(parse("s").unwrap_err().contains("not a duration"));
        assert!(parse("").unwrap_err().contains("not a duration"));
        assert!(parse("99999999999999999999h")
            .unwrap_err()
            .contains("too long"));
        assert!(parse_positive("0s").unwrap_err().contains("longer than 0"));
        assert_eq!(parse_positive("30s"), Ok(Duration::from_secs(30)));
    }
}
