//! Wall-clock time as memory shows it: milliseconds since the epoch in storage, ISO 8601 in the
//! API, and OM's "Nov 22, 2026" / "14:30" labels in observations. UTC throughout; no tz database
//! on an edge box, and a memory that changes with the server's zone would be worse.

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Year, month (1-12), day of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the inverse of `civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// An instant written as epoch seconds, `YYYY-MM-DD` (midnight UTC) or
/// `YYYY-MM-DDTHH:MM:SS[.fff]Z`, in milliseconds; `None` if it is none of these.
pub fn parse(s: &str) -> Option<u64> {
    if let Ok(secs) = s.parse::<u64>() {
        return secs.checked_mul(1000);
    }
    let (date, time) = s.split_once('T').unwrap_or((s, "00:00:00Z"));
    let mut d = date.splitn(3, '-').map(str::parse::<u32>);
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || !(1970..=9999).contains(&y) {
        return None;
    }
    // Fractions of a second are allowed and dropped.
    let time = time.strip_suffix('Z')?;
    let time = time.split_once('.').map_or(time, |(whole, _)| whole);
    let mut t = time.splitn(3, ':').map(str::parse::<u64>);
    let (h, min, sec) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    if h > 23 || min > 59 || sec > 60 {
        return None;
    }
    let days = u64::try_from(days_from_civil(i64::from(y), m, day)).ok()?;
    Some(((days * 24 + h) * 60 + min) * 60_000 + sec * 1000)
}

struct Parts {
    year: i64,
    month: u32,
    day: u32,
    hour: u64,
    minute: u64,
    second: u64,
    milli: u64,
}

fn parts(ms: u64) -> Parts {
    let secs = ms / 1000;
    let (year, month, day) = civil((secs / 86_400) as i64);
    let rem = secs % 86_400;
    Parts {
        year,
        month,
        day,
        hour: rem / 3600,
        minute: rem % 3600 / 60,
        second: rem % 60,
        milli: ms % 1000,
    }
}

/// `2026-11-22T14:30:05.123Z`, as JavaScript's `Date.toJSON` writes it (Mastra's field format).
pub fn iso8601(ms: u64) -> String {
    let p = parts(ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        p.year, p.month, p.day, p.hour, p.minute, p.second, p.milli
    )
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Nov 22, 2026`: the date header of a group of observations.
pub fn date_label(ms: u64) -> String {
    let p = parts(ms);
    format!("{} {}, {}", MONTHS[p.month as usize - 1], p.day, p.year)
}

/// `14:30`: the time of one observation or transcript line.
pub fn time_label(ms: u64) -> String {
    let p = parts(ms);
    format!("{:02}:{:02}", p.hour, p.minute)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_formats() {
        for ms in [0, 1_795_974_807_000, 951_782_400_000] {
            let secs = ms / 1000 * 1000;
            assert_eq!(parse(&iso8601(secs)), Some(secs), "{}", iso8601(secs));
        }
        assert_eq!(parse("2026-11-29"), parse("2026-11-29T00:00:00Z"));
        assert_eq!(parse("1795974807"), Some(1_795_974_807_000));
        for bad in ["2026-13-01", "yesterday", "2026-11-29T25:00:00Z", "2026-11-29T10:00:00"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        // 2024-02-29 (a leap day) 23:59:59.999 UTC.
        assert_eq!(iso8601(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(iso8601(1_795_357_805_123), "2026-11-22T14:30:05.123Z");
        assert_eq!(date_label(1_795_357_805_123), "Nov 22, 2026");
        assert_eq!(time_label(1_795_357_805_123), "14:30");
    }
}
