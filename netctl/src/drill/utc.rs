//! UTC wall-clock times of a drill, from the unix milliseconds agentd reports. The report is
//! read in UTC on both gateways and by the operator, whatever the local time zone.

use isthmus_api::utc::civil;

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
