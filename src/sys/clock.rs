//! Time for logs and people: the current Unix time, Unix seconds as UTC calendar time
//! (no time zone data is read: every figure we print is UTC), and lengths of time in
//! words ("5 days", "in 52 minutes").

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// "2026-11-26T04:39:12Z", for logs and machine-read fields.
pub fn rfc3339(seconds: u64) -> String {
    let (year, month, day, hour, minute, second) = civil(seconds);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
}

/// "2026-11-26 04:39:12 UTC", for people.
pub fn readable(seconds: u64) -> String {
    let (year, month, day, hour, minute, second) = civil(seconds);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02} UTC")
}

/// "Thu Nov 26 04:39:12 2026", as ctime(3) writes it (in UTC): the date mbox readers
/// expect after "From ".
pub fn asctime(seconds: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (year, month, day, hour, minute, second) = civil(seconds);
    let weekday = DAYS[(seconds / 86400 % 7) as usize];
    let month = MONTHS[(month - 1) as usize];
    format!("{weekday} {month} {day:2} {hour:02}:{minute:02}:{second:02} {year}")
}

/// "1 second", "5 days": a count and its unit, plural when it is not one.
pub fn count(n: u64, unit: &str) -> String {
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// "5 days", "1 hour", "90 seconds": exactly, in the largest unit that divides the
/// duration (for settings, which people write round).
pub fn exactly(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let (n, unit) = [(86400, "day"), (3600, "hour"), (60, "minute")]
        .into_iter()
        .find(|(size, _)| seconds >= *size && seconds.is_multiple_of(*size))
        .map_or((seconds, "second"), |(size, unit)| (seconds / size, unit));
    count(n, unit)
}

/// "52 minutes", "3 hours": about how long, in a unit that keeps the figure small.
pub fn about(seconds: u64) -> String {
    match seconds {
        0..=119 => count(seconds, "second"),
        120..=7199 => count(seconds / 60, "minute"),
        7200..=172_799 => count(seconds / 3600, "hour"),
        _ => count(seconds / 86400, "day"),
    }
}

/// "2026-05-01 12:34:56 UTC (in 52 minutes)" / "(3 hours ago)": `at` seen from `now`.
pub fn when(at: u64, now: u64) -> String {
    let relative = match at.cmp(&now) {
        std::cmp::Ordering::Greater => format!("in {}", about(at - now)),
        _ => format!("{} ago", about(now - at)),
    };
    format!("{} ({relative})", readable(at))
}

/// Year, month, day, hour, minute, second (Howard Hinnant's civil_from_days).
fn civil(seconds: u64) -> (i64, i64, i64, u64, u64, u64) {
    let days = (seconds / 86400) as i64;
    let rest = seconds % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rest / 3600, rest % 3600 / 60, rest % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_668_586), "2026-11-26T04:49:46Z");
        assert_eq!(readable(1_767_225_599), "2025-12-31 23:59:59 UTC");
        assert_eq!(asctime(0), "Thu Jan  1 00:00:00 1970");
        assert_eq!(asctime(1_795_668_586), "Thu Nov 26 04:49:46 2026");
    }

    #[test]
    fn exact_durations_in_their_largest_unit() {
        assert_eq!(exactly(Duration::from_secs(5 * 86400)), "5 days");
        assert_eq!(exactly(Duration::from_secs(3600)), "1 hour");
        assert_eq!(exactly(Duration::from_secs(90)), "90 seconds");
        assert_eq!(exactly(Duration::from_secs(25 * 3600)), "25 hours");
        assert_eq!(exactly(Duration::from_secs(0)), "0 seconds");
    }

    #[test]
    fn approximate_and_relative_times() {
        assert_eq!(about(1), "1 second");
        assert_eq!(about(119), "119 seconds");
        assert_eq!(about(3120), "52 minutes");
        assert_eq!(about(7200 + 3599), "2 hours");
        assert_eq!(about(3 * 86400 + 5), "3 days");
        assert_eq!(
            when(1000 + 3120, 1000),
            "1970-01-01 01:08:40 UTC (in 52 minutes)"
        );
        assert!(when(1000, 1000 + 90).ends_with("(90 seconds ago)"));
        assert!(when(1000, 1000).ends_with("(0 seconds ago)"));
    }

    #[test]
    fn now_is_after_this_code_was_written() {
        assert!(now() > 1_795_000_000);
    }
}
