//! The event's own time: a time as a log line writes it, read into UTC
//! milliseconds for the envelope's `timestamp`.
//!
//! Each named format knows how its lines write their time; for JSON,
//! logfmt, CSV and regex lines `time_field` names the field and
//! `time_format` says how it is written. A time without a zone (syslog's
//! BSD form, Apache's error log, a strftime pattern without `%z`) is read
//! as UTC. Syslog's BSD form has no year: it is the year of the read time,
//! or the one before when that would put the line more than a month ahead
//! of when it was read (a December line read in January), as rsyslog and
//! Fluent Bit resolve it.
//!
//! Pure: the read time comes in as a parameter.

use chrono::{DateTime, Datelike, NaiveDateTime, TimeZone, Utc};

/// How a time is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeFormat {
    /// RFC 3339 / ISO 8601 with a zone (`2026-12-04T10:00:00.123Z`).
    Rfc3339,
    /// Seconds since the epoch (a fraction allowed).
    Unix,
    /// Milliseconds since the epoch.
    UnixMs,
    /// Apache's access log: `10/Oct/2000:13:55:36 -0700`.
    Apache,
    /// Apache's error log: `Sun Dec 04 04:47:44 2005` (2.4 adds
    /// microseconds: `Thu Jun 27 11:55:44.569531 2019`).
    ApacheError,
    /// Syslog: the BSD form `Jun 14 15:16:01` (no year), or RFC 3339.
    Syslog,
    /// A strftime pattern (`%Y-%m-%d %H:%M:%S`, with `%z` for a zone).
    Strftime(String),
}

/// `text` as UTC milliseconds since the epoch, or `None` when it does not
/// read as `format`. `read_ms` is when the line was read (for syslog's
/// missing year).
pub fn parse_time(format: &TimeFormat, text: &str, read_ms: u64) -> Option<i64> {
    let text = text.trim();
    let at: DateTime<Utc> = match format {
        TimeFormat::Rfc3339 => DateTime::parse_from_rfc3339(text).ok()?.to_utc(),
        TimeFormat::Unix => {
            let secs: f64 = text.parse().ok().filter(|s: &f64| s.is_finite())?;
            return Some((secs * 1000.0).round() as i64);
        }
        TimeFormat::UnixMs => return text.parse().ok(),
        TimeFormat::Apache => DateTime::parse_from_str(text, "%d/%b/%Y:%H:%M:%S %z")
            .ok()?
            .to_utc(),
        TimeFormat::ApacheError => NaiveDateTime::parse_from_str(text, "%a %b %d %H:%M:%S%.f %Y")
            .ok()?
            .and_utc(),
        TimeFormat::Syslog => match DateTime::parse_from_rfc3339(text) {
            Ok(t) => t.to_utc(),
            Err(_) => bsd_syslog(text, read_ms)?,
        },
        TimeFormat::Strftime(pattern) => match DateTime::parse_from_str(text, pattern) {
            Ok(t) => t.to_utc(),
            Err(_) => NaiveDateTime::parse_from_str(text, pattern).ok()?.and_utc(),
        },
    };
    Some(at.timestamp_millis())
}

/// `Jun 14 15:16:01` in the year that puts it closest before the read time
/// (at most a month ahead of it).
fn bsd_syslog(text: &str, read_ms: u64) -> Option<DateTime<Utc>> {
    let read = Utc.timestamp_millis_opt(read_ms as i64).single()?;
    let in_year = |year: i32| {
        // `Feb 29` only exists in leap years: another year gives `None`.
        NaiveDateTime::parse_from_str(&format!("{year} {text}"), "%Y %b %e %H:%M:%S")
            .ok()
            .map(|t| t.and_utc())
    };
    let this = in_year(read.year());
    let month_ahead = read + chrono::Duration::days(31);
    match this {
        Some(t) if t <= month_ahead => Some(t),
        _ => in_year(read.year() - 1).or(this),
    }
}

/// UTC milliseconds as RFC 3339 with milliseconds (`...T10:00:00.123Z`).
pub fn rfc3339_ms(ms: i64) -> Option<String> {
    let t = Utc.timestamp_millis_opt(ms).single()?;
    // Years outside 0..=9999 do not write as RFC 3339.
    if !(0..=9999).contains(&t.year()) {
        return None;
    }
    Some(t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-05T00:00:00Z.
    const JAN_2026: u64 = 1_767_571_200_000;

    fn iso(format: &TimeFormat, text: &str) -> Option<String> {
        rfc3339_ms(parse_time(format, text, JAN_2026)?)
    }

    #[test]
    fn each_format_reads_its_times() {
        assert_eq!(
            iso(&TimeFormat::Apache, "10/Oct/2000:13:55:36 -0700").as_deref(),
            Some("2000-10-10T20:55:36.000Z")
        );
        assert_eq!(
            iso(&TimeFormat::ApacheError, "Sun Dec 04 04:47:44 2005").as_deref(),
            Some("2005-12-04T04:47:44.000Z")
        );
        assert_eq!(
            iso(&TimeFormat::ApacheError, "Thu Jun 27 11:55:44.569531 2019").as_deref(),
            Some("2019-06-27T11:55:44.569Z")
        );
        assert_eq!(
            iso(&TimeFormat::Rfc3339, "2003-10-11T22:14:15.003+02:00").as_deref(),
            Some("2003-10-11T20:14:15.003Z")
        );
        assert_eq!(
            iso(&TimeFormat::Unix, "1767571200.5").as_deref(),
            Some("2026-01-05T00:00:00.500Z")
        );
        assert_eq!(
            iso(&TimeFormat::UnixMs, "1767571200123").as_deref(),
            Some("2026-01-05T00:00:00.123Z")
        );
        let pattern = TimeFormat::Strftime("%Y-%m-%d %H:%M:%S".into());
        assert_eq!(
            iso(&pattern, "2026-12-04 10:11:12").as_deref(),
            Some("2026-12-04T10:11:12.000Z")
        );
        for (format, bad) in [
            (TimeFormat::Apache, "yesterday"),
            (TimeFormat::Rfc3339, "2026-13-01T00:00:00Z"),
            (TimeFormat::Unix, "NaN"),
            (pattern, "04/12/2026"),
        ] {
            assert_eq!(iso(&format, bad), None, "{bad}");
        }
    }

    #[test]
    fn syslog_years_around_new_year() {
        // A January read: a December line is last year's, a January line
        // this year's; a line a few weeks ahead (clock skew) stays this
        // year's.
        assert_eq!(
            iso(&TimeFormat::Syslog, "Dec 31 23:59:59").as_deref(),
            Some("2025-12-31T23:59:59.000Z")
        );
        assert_eq!(
            iso(&TimeFormat::Syslog, "Jan  4 10:00:00").as_deref(),
            Some("2026-01-04T10:00:00.000Z")
        );
        assert_eq!(
            iso(&TimeFormat::Syslog, "Jan 20 10:00:00").as_deref(),
            Some("2026-01-20T10:00:00.000Z")
        );
        assert_eq!(
            iso(&TimeFormat::Syslog, "2003-10-11T22:14:15.003Z").as_deref(),
            Some("2003-10-11T22:14:15.003Z")
        );
        // Feb 29 is in neither year around the read: the line keeps its
        // read time (and is counted).
        assert_eq!(iso(&TimeFormat::Syslog, "Feb 29 12:00:00"), None);
    }
}
