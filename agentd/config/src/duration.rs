//! Durations as the config writes them: a whole number and a unit (`250ms`, `1s`, `30s`, `5m`,
//! `1h`). A unit is mandatory because a bare `5` is ambiguous (seconds? milliseconds?) and a
//! wrong guess in a failover timer is silent; fractions are written in the smaller unit
//! (`1500ms`), so every value has one obvious spelling. [`format`] writes a duration back the
//! same way for messages.

use std::time::Duration;

use crate::values::Invalid;

const UNITS: &[(&str, u64)] = &[("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000)];

/// Parses `<digits><unit>`.
pub(crate) fn parse(text: &str) -> Result<Duration, Invalid> {
    let shape_hint =
        || r#"write a whole number and a unit (ms, s, m, h), e.g. "250ms", "30s", "5m""#;
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    if number.is_empty() {
        return Err(Invalid::new(
            format!("{text:?} is not a duration"),
            shape_hint(),
        ));
    }
    if unit.is_empty() {
        return Err(Invalid::new(
            format!("duration {text:?} has no unit"),
            format!(r#"write "{number}s" for seconds or "{number}ms" for milliseconds"#),
        ));
    }
    if unit.starts_with('.') {
        return Err(Invalid::new(
            format!("duration {text:?} has a fraction"),
            r#"write it in a smaller unit, e.g. "1500ms" instead of "1.5s""#,
        ));
    }
    let Some(&(_, millis_per_unit)) = UNITS.iter().find(|(name, _)| *name == unit.trim()) else {
        return Err(Invalid::new(
            format!("duration {text:?} has an unknown unit {unit:?}"),
            shape_hint(),
        ));
    };
    if unit.trim() != unit {
        return Err(Invalid::new(
            format!("duration {text:?} has a space before its unit"),
            format!("write {:?}", format!("{number}{}", unit.trim())),
        ));
    }
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(millis_per_unit))
        .map(Duration::from_millis)
        .ok_or_else(|| Invalid::new(format!("duration {text:?} is too long"), shape_hint()))
}

/// The shortest exact spelling: `250ms`, `1s`, `90s`, `5m`, `2h`.
pub(crate) fn format(d: Duration) -> String {
    let millis = d.as_millis();
    for &(name, per) in UNITS.iter().rev() {
        let per = u128::from(per);
        // Not `is_multiple_of`: that needs Rust 1.87, the workspace supports 1.85.
        if millis >= per && (millis / per) * per == millis {
            return format!("{}{name}", millis / per);
        }
    }
    format!("{millis}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_missing_unit_fraction_unknown_unit_and_spaces() {
        assert!(parse("5").unwrap_err().hint.contains("\"5s\""));
        assert!(parse("1.5s").unwrap_err().message.contains("fraction"));
        assert!(parse("5d").unwrap_err().message.contains("unknown unit"));
        assert!(parse("5 s").unwrap_err().message.contains("space"));
        assert!(parse("s").is_err());
        assert!(parse("").is_err());
        assert!(parse("99999999999999999999h").is_err());
    }

    #[test]
    fn formats_in_the_largest_exact_unit() {
        assert_eq!(format(Duration::from_millis(250)), "250ms");
        assert_eq!(format(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format(Duration::from_secs(90)), "90s");
        assert_eq!(format(Duration::from_secs(600)), "10m");
        assert_eq!(format(Duration::ZERO), "0ms");
    }
}
