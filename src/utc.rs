//! Calendar time in UTC from seconds since 1970, for the places that print it: log lines
//! (RFC 3339), the access log (Common Log Format) and generated certificates (X.509 time).
//! One small algorithm instead of a time crate.

use std::time::{SystemTime, UNIX_EPOCH};

/// A moment in UTC, split into calendar fields (proleptic Gregorian calendar).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Utc {
    pub year: i64,
    /// 1 to 12.
    pub month: u32,
    /// 1 to 31.
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub millis: u32,
}

impl Utc {
    /// The calendar fields of `secs` seconds (and `millis` ms) after 1970-01-01T00:00:00Z.
    pub(crate) fn from_unix(secs: i64, millis: u32) -> Utc {
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        // Days since 1970-01-01 to a date, counted in 400-year eras that start on March 1st
        // (so that the leap day is the last day of a year): Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        // Each of these is in range by construction (rem < 86 400, 1 <= month <= 12, ...).
        let small = |v: i64| u32::try_from(v).unwrap_or(0);
        Utc {
            year: era * 400 + yoe + i64::from(month <= 2),
            month: small(month),
            day: small(day),
            hour: small(rem / 3_600),
            minute: small(rem / 60 % 60),
            second: small(rem % 60),
            millis,
        }
    }

    /// `t` in UTC (a time before 1970 counts as 1970).
    pub(crate) fn of(t: SystemTime) -> Utc {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2);
        Utc::from_unix(secs, d.subsec_millis())
    }

    pub(crate) fn now() -> Utc {
        Utc::of(SystemTime::now())
    }

    /// RFC 3339 with milliseconds: `2026-12-07T01:27:11.969Z`.
    pub(crate) fn rfc3339_millis(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second, self.millis
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        let at = |secs| {
            let u = Utc::from_unix(secs, 0);
            (u.year, u.month, u.day, u.hour, u.minute, u.second)
        };
        assert_eq!(at(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(at(951_782_400), (2000, 2, 29, 0, 0, 0)); // a leap day of a 400-year leap year
        assert_eq!(at(971_189_736), (2000, 10, 10, 14, 55, 36));
        assert_eq!(at(4_107_542_399), (2100, 2, 28, 23, 59, 59)); // 2100 is no leap year
        assert_eq!(at(4_107_542_400), (2100, 3, 1, 0, 0, 0));
        assert_eq!(at(-1), (1969, 12, 31, 23, 59, 59));
    }

    #[test]
    fn rfc3339_with_millis() {
        assert_eq!(
            Utc::from_unix(1_796_606_831, 969).rfc3339_millis(),
            "2026-12-07T01:27:11.969Z"
        );
        assert_eq!(
            Utc::from_unix(0, 5).rfc3339_millis(),
            "1970-01-01T00:00:00.005Z"
        );
    }
}
