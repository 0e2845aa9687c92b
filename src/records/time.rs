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

use chrono::{DateTime, NaiveDateTime, Utc};

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
        TimeFormat::Rfc3339 => match utc_ms(text.as_bytes()) {
            Some(ms) => return Some(ms),
            None => DateTime::parse_from_rfc3339(text).ok()?.to_utc(),
        },
        TimeFormat::Unix => {
            let secs: f64 = text.parse().ok().filter(|s: &f64| s.is_finite())?;
            return Some((secs * 1000.0).round() as i64);
        }
        TimeFormat::UnixMs => return text.parse().ok(),
        TimeFormat::Apache => match apache_ms(text.as_bytes()) {
            Some(ms) => return Some(ms),
            None => DateTime::parse_from_str(text, "%d/%b/%Y:%H:%M:%S %z")
                .ok()?
                .to_utc(),
        },
        TimeFormat::ApacheError => NaiveDateTime::parse_from_str(text, "%a %b %d %H:%M:%S%.f %Y")
            .ok()?
            .and_utc(),
        // RFC 3164's BSD time starts with the month's name, RFC 5424's
        // with the year's digits: one reader per line, not two.
        TimeFormat::Syslog if text.starts_with(|c: char| c.is_ascii_alphabetic()) => {
            return bsd_syslog(text, read_ms);
        }
        TimeFormat::Syslog => match utc_ms(text.as_bytes()) {
            Some(ms) => return Some(ms),
            None => DateTime::parse_from_rfc3339(text).ok()?.to_utc(),
        },
        TimeFormat::Strftime(pattern) => match DateTime::parse_from_str(text, pattern) {
            Ok(t) => t.to_utc(),
            Err(_) => NaiveDateTime::parse_from_str(text, pattern).ok()?.and_utc(),
        },
    };
    Some(at.timestamp_millis())
}

/// `Jun 14 15:16:01` (the day may be padded with a space) in the year that
/// puts it closest before the read time (at most a month ahead of it), in
/// ms since the epoch.
fn bsd_syslog(text: &str, read_ms: u64) -> Option<i64> {
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let t = text.as_bytes();
    let month = MONTHS.iter().position(|m| t.get(..3) == Some(&m[..]))? as i64 + 1;
    let rest = text.get(3..)?.trim_start_matches(' ');
    let (day, clock) = rest.split_once(' ')?;
    let day: i64 = day.parse().ok()?;
    let c = clock.as_bytes();
    if c.len() != 8 || c[2] != b':' || c[5] != b':' {
        return None;
    }
    let two = |i: usize| -> Option<i64> {
        let (a, b) = (c[i], c[i + 1]);
        (a.is_ascii_digit() && b.is_ascii_digit()).then(|| i64::from((a - b'0') * 10 + (b - b'0')))
    };
    let (h, mi, s) = (two(0)?, two(3)?, two(6)?);
    if h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let at = |year: i64| -> Option<i64> {
        // `Feb 29` only exists in leap years: another year gives `None`.
        (day >= 1 && day <= days_in_month(year, month))
            .then(|| ((days_from_civil(year, month, day) * 24 + h) * 60 + mi) * 60_000 + s * 1000)
    };
    let read_year = civil_from_days((read_ms / 86_400_000) as i64).0;
    let this = at(read_year);
    let month_ahead = read_ms as i64 + 31 * 86_400_000;
    match this {
        Some(t) if t <= month_ahead => Some(t),
        _ => at(read_year - 1).or(this),
    }
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day since 1970-01-01 (the inverse of
/// [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, the form runtimes and most programs
/// write, in ms since the epoch without the general parser; `None` for any
/// other form (an offset, a space for the `T`), which the general parser
/// then reads.
pub fn utc_ms(t: &[u8]) -> Option<i64> {
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        t.get(r)?.iter().try_fold(0i64, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + i64::from(b - b'0'))
        })
    };
    let seps = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if t.last() != Some(&b'Z') || seps.iter().any(|&(i, c)| t.get(i) != Some(&c)) {
        return None;
    }
    let (y, mo, d) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (h, mi, s) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let ms = match t.get(19) {
        Some(b'.') => {
            let frac = &t[20..t.len() - 1];
            if frac.is_empty() || !frac.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let mut v = digits(20..20 + frac.len().min(3))?;
            for _ in frac.len()..3 {
                v *= 10;
            }
            v
        }
        Some(b'Z') if t.len() == 20 => 0,
        _ => return None,
    };
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    Some(((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60_000 + s * 1000 + ms)
}

/// Apache's access time, `10/Oct/2000:13:55:36 -0700` exactly (two-digit
/// day, English month, four-digit offset), in UTC ms since the epoch
/// without the general parser; `None` for anything else, which chrono's
/// `%d/%b/%Y:%H:%M:%S %z` then reads.
fn apache_ms(t: &[u8]) -> Option<i64> {
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        t.get(r)?.iter().try_fold(0i64, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + i64::from(b - b'0'))
        })
    };
    let seps = [
        (2, b'/'),
        (6, b'/'),
        (11, b':'),
        (14, b':'),
        (17, b':'),
        (20, b' '),
    ];
    if t.len() != 26 || seps.iter().any(|&(i, c)| t[i] != c) {
        return None;
    }
    let mo = MONTHS.iter().position(|m| t[3..6] == m[..])? as i64 + 1;
    let (d, y) = (digits(0..2)?, digits(7..11)?);
    let (h, mi, s) = (digits(12..14)?, digits(15..17)?, digits(18..20)?);
    let sign = match t[21] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (oh, om) = (digits(22..24)?, digits(24..26)?);
    if d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 59 || oh > 23 || om > 59 {
        return None;
    }
    let local = ((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60_000 + s * 1000;
    Some(local - sign * (oh * 60 + om) * 60_000)
}

/// UTC milliseconds as RFC 3339 with milliseconds (`...T10:00:00.123Z`).
pub fn rfc3339_ms(ms: i64) -> Option<String> {
    let (days, in_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    // Years outside 0..=9999 do not write as RFC 3339.
    if !(0..=9999).contains(&y) {
        return None;
    }
    let (h, rest) = (in_day / 3_600_000, in_day % 3_600_000);
    let (mi, rest) = (rest / 60_000, rest % 60_000);
    let (s, milli) = (rest / 1000, rest % 1000);
    let mut out = String::with_capacity(24);
    for (v, width, after) in [
        (y, 4, '-'),
        (m, 2, '-'),
        (d, 2, 'T'),
        (h, 2, ':'),
        (mi, 2, ':'),
        (s, 2, '.'),
        (milli, 3, 'Z'),
    ] {
        let mut div = 10i64.pow(width - 1);
        while div > 0 {
            out.push(char::from(b'0' + (v / div % 10) as u8));
            div /= 10;
        }
        out.push(after);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone};

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

    proptest::proptest! {
        /// The hand-written readers and writer agree with chrono's.
        #[test]
        fn times_read_and_write_as_chrono_does(ms in -62_135_596_800_000i64..253_402_300_799_999, read in 0u64..4_102_444_800_000) {
            let t = Utc.timestamp_millis_opt(ms).single().unwrap_or_default();
            let want = (0..=9999).contains(&t.year()).then(|| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string());
            proptest::prop_assert_eq!(rfc3339_ms(ms), want.clone());
            if let Some(text) = want {
                proptest::prop_assert_eq!(utc_ms(text.as_bytes()), Some(ms));
            }
            // The BSD form: what chrono reads in the same year.
            let bsd = t.format("%b %e %H:%M:%S").to_string();
            let year = Utc.timestamp_millis_opt(read as i64).single().unwrap_or_default().year();
            let chrono_at = |y: i32| NaiveDateTime::parse_from_str(&format!("{y} {bsd}"), "%Y %b %e %H:%M:%S").ok().map(|t| t.and_utc().timestamp_millis());
            let this = chrono_at(year);
            let want = match this {
                Some(v) if v <= read as i64 + 31 * 86_400_000 => Some(v),
                _ => chrono_at(year - 1).or(this),
            };
            proptest::prop_assert_eq!(bsd_syslog(&bsd, read), want);
        }

        /// Apache's access time read by hand as chrono reads it, at any
        /// offset (and chrono's reading of what the hand reader declines).
        #[test]
        fn apache_times_read_as_chrono_does(ms in -62_135_596_800_000i64..253_402_300_799_999, offset_min in -1439i32..1439) {
            let zone = chrono::FixedOffset::east_opt(offset_min * 60).expect("under a day");
            let t = Utc.timestamp_millis_opt(ms - ms.rem_euclid(1000)).single().unwrap_or_default().with_timezone(&zone);
            let text = t.format("%d/%b/%Y:%H:%M:%S %z").to_string();
            let want = DateTime::parse_from_str(&text, "%d/%b/%Y:%H:%M:%S %z").ok().map(|t| t.timestamp_millis());
            proptest::prop_assert_eq!(parse_time(&TimeFormat::Apache, &text, 0), want);
            if (0..=9999).contains(&t.year()) {
                proptest::prop_assert_eq!(apache_ms(text.as_bytes()), want);
            }
        }

        /// Syslog's time, either form, reads as chrono reads it.
        #[test]
        fn syslog_times_read_as_chrono_does(ms in 0i64..253_402_300_799_999) {
            let t = Utc.timestamp_millis_opt(ms).single().unwrap_or_default();
            for text in [t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(), t.format("%Y-%m-%dT%H:%M:%S%.6f+02:00").to_string()] {
                let want = DateTime::parse_from_rfc3339(&text).ok().map(|t| t.timestamp_millis());
                proptest::prop_assert_eq!(parse_time(&TimeFormat::Syslog, &text, 0), want);
            }
        }
    }
}
