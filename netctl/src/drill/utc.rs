//! UTC wall-clock times of a drill, from the unix milliseconds agentd reports. The report is
//! read in UTC on both gateways and by the operator, whatever the local time zone.

/// A moment split into its civil UTC fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u64,
    minute: u64,
    second: u64,
    milli: u64,
}

fn civil(unix_ms: u64) -> Civil {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    Civil {
        year: yoe + era * 400 + i64::from(month <= 2),
        month,
        day,
        hour: rem / 3600,
        minute: rem % 3600 / 60,
        second: rem % 60,
        milli: unix_ms % 1000,
    }
}

/// `20261126T150418Z`: for file names (sorts by time, no characters a shell or Windows minds).
pub fn compact(unix_ms: u64) -> String {
    let c = civil(unix_ms);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// `2026-11-26 15:04:18 UTC`.
pub fn date_time(unix_ms: u64) -> String {
    let c = civil(unix_ms);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// `15:04:18.123`: a step of the time line (the date is in the report's header).
pub fn time_of_day(unix_ms: u64) -> String {
    let c = civil(unix_ms);
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        c.hour, c.minute, c.second, c.milli
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_moments_in_utc() {
        assert_eq!(compact(0), "19700101T000000Z");
        assert_eq!(compact(1_795_705_458_123), "20261126T150418Z");
        assert_eq!(date_time(1_795_705_458_123), "2026-11-26 15:04:18 UTC");
        assert_eq!(time_of_day(1_795_705_458_123), "15:04:18.123");
        // A leap day, and the last millisecond of a year.
        assert_eq!(date_time(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(time_of_day(1_767_225_599_999), "23:59:59.999");
        assert_eq!(compact(1_767_225_599_999), "20251231T235959Z");
    }
}
