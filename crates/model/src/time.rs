//! Times and durations as people type them: `90s`, `15m`, `2h`, `7d`,
//! `1h30m`, RFC 3339 timestamps, and `now`; durations as people read them
//! (the one home of that text: [`format_duration`], [`format_rough`],
//! [`format_setting`]); and a time as the nanoseconds since the Unix epoch
//! that stores, spools and columns keep, shown to a [`TimePrecision`].

use jiff::{SignedDuration, Span, SpanRelativeTo, Timestamp};

/// Parses a duration such as `90s`, `15m`, `2h`, `7d` or `1h30m` (and `0`,
/// which needs no unit). A day is 24 hours. The one syntax of every
/// duration a user types.
pub fn parse_duration(text: &str) -> Result<SignedDuration, String> {
    let invalid = || {
        format!("invalid duration '{text}': write a number and a unit, such as 90s, 15m, 2h or 7d")
    };
    if text.trim() == "0" {
        return Ok(SignedDuration::ZERO);
    }
    let span: Span = text.trim().parse().map_err(|_| invalid())?;
    let duration = span
        .to_duration(SpanRelativeTo::days_are_24_hours())
        .map_err(|_| invalid())?;
    if duration.is_negative() {
        return Err(invalid());
    }
    Ok(duration)
}

/// [`parse_duration`] as a [`std::time::Duration`], the type settings and
/// timers take: the value parser of every duration flag.
pub fn parse_std_duration(text: &str) -> Result<std::time::Duration, String> {
    let duration = parse_duration(text)?;
    std::time::Duration::try_from(duration).map_err(|error| error.to_string())
}

/// A duration for people, to about two digits: `153ms`, `8s`, `2.4s`,
/// `3m05s`, `2h10m`.
pub fn format_duration(duration: std::time::Duration) -> String {
    let millis = duration.as_millis();
    let seconds = duration.as_secs();
    match millis {
        0..1_000 => format!("{millis}ms"),
        1_000..60_000 if duration.subsec_millis() == 0 => format!("{seconds}s"),
        1_000..60_000 => format!("{:.1}s", duration.as_secs_f64()),
        60_000..3_600_000 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
    }
}

/// A duration in its largest whole unit, for ages and notices: `12s`,
/// `3m`, `2h`, `4d`. The sign is left to the caller (`3m ago`, `in 3m`).
pub fn format_rough(duration: SignedDuration) -> String {
    let (amount, unit) = match duration.as_secs().unsigned_abs() {
        s @ 0..60 => (s, "s"),
        s @ 60..3600 => (s / 60, "m"),
        s @ 3600..86400 => (s / 3600, "h"),
        s => (s / 86400, "d"),
    };
    format!("{amount}{unit}")
}

/// A duration as a setting is written, in the largest unit that divides it
/// (`7d`, `1h`, `15m`, `90s`): [`parse_duration`] reads it back exactly.
pub fn format_setting(duration: std::time::Duration) -> String {
    match duration.as_secs() {
        s if s % 86400 == 0 && s > 0 => format!("{}d", s / 86400),
        s if s % 3600 == 0 && s > 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Parses a point in time: RFC 3339 (`2026-11-20T10:00:00Z`), `now`, or a
/// duration meaning that long before `now` (`15m`).
pub fn parse_time(text: &str, now: Timestamp) -> Result<Timestamp, String> {
    let text = text.trim();
    if text == "now" {
        return Ok(now);
    }
    if let Ok(timestamp) = text.parse::<Timestamp>() {
        return Ok(timestamp);
    }
    let ago = parse_duration(text).map_err(|_| {
        format!("invalid time '{text}': use RFC 3339 (2026-11-20T10:00:00Z), 'now', or a duration ago such as 15m or 2h")
    })?;
    now.checked_sub(ago)
        .map_err(|_| format!("time '{text}' is too far in the past"))
}

/// Nanoseconds since the Unix epoch, saturated to `i64` (years 1677–2262).
pub fn timestamp_ns(ts: Timestamp) -> i64 {
    ts.as_nanosecond().clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// The time `ns` nanoseconds after the Unix epoch: the inverse of
/// [`timestamp_ns`]. Every `i64` is in jiff's range (years -9999–9999), so
/// this never fails; the saturation is only there so no caller needs a
/// fallback of its own.
pub fn timestamp_from_ns(ns: i64) -> Timestamp {
    Timestamp::from_nanosecond(i128::from(ns)).unwrap_or(if ns < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// How many digits of a second a time is shown with: `ms` (3, what people
/// read and what times were kept to before), `us` (6, what the agent
/// stamps) or `ns` (9, what the store can hold). Shown times are cut, never
/// rounded up, so a time never shows as later than it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TimePrecision {
    #[default]
    Ms,
    Us,
    Ns,
}

impl TimePrecision {
    /// Every precision, as [`TimePrecision::as_str`] names it.
    pub const ALL: [TimePrecision; 3] = [TimePrecision::Ms, TimePrecision::Us, TimePrecision::Ns];

    /// Digits after the decimal point: 3, 6 or 9.
    pub fn digits(self) -> usize {
        match self {
            TimePrecision::Ms => 3,
            TimePrecision::Us => 6,
            TimePrecision::Ns => 9,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TimePrecision::Ms => "ms",
            TimePrecision::Us => "us",
            TimePrecision::Ns => "ns",
        }
    }

    /// `ts` in RFC 3339, UTC, with exactly this many digits of a second.
    pub fn rfc3339(self, ts: Timestamp) -> String {
        format!("{ts:.*}", self.digits())
    }
}

impl std::str::FromStr for TimePrecision {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        TimePrecision::ALL
            .into_iter()
            .find(|precision| precision.as_str() == text)
            .ok_or_else(|| {
                format!("invalid time precision '{text}': use ms, us or ns (digits of a second shown: 3, 6 or 9)")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_unit_people_type() {
        assert_eq!(
            parse_duration("90s").unwrap(),
            SignedDuration::from_secs(90)
        );
        assert_eq!(
            parse_duration("15m").unwrap(),
            SignedDuration::from_mins(15)
        );
        assert_eq!(parse_duration("2h").unwrap(), SignedDuration::from_hours(2));
        assert_eq!(
            parse_duration("7d").unwrap(),
            SignedDuration::from_hours(168)
        );
        assert_eq!(
            parse_duration("1h30m").unwrap(),
            SignedDuration::from_mins(90)
        );
        assert_eq!(
            parse_duration("250ms").unwrap(),
            SignedDuration::from_millis(250)
        );
    }

    #[test]
    fn durations_for_settings_and_timers() {
        assert_eq!(
            parse_std_duration("1h30m").unwrap(),
            std::time::Duration::from_secs(5400)
        );
        assert!(parse_std_duration("soon")
            .unwrap_err()
            .contains("such as 90s"));
        // Zero needs no unit; any other number does, whatever the flag.
        assert_eq!(parse_std_duration("0").unwrap(), std::time::Duration::ZERO);
        assert!(parse_std_duration("3")
            .unwrap_err()
            .contains("write a number and a unit"));
    }

    #[test]
    fn durations_for_people() {
        let ms = std::time::Duration::from_millis;
        assert_eq!(format_duration(ms(153)), "153ms");
        assert_eq!(format_duration(ms(8_000)), "8s");
        assert_eq!(format_duration(ms(2_449)), "2.4s");
        assert_eq!(format_duration(ms(185_000)), "3m05s");
        assert_eq!(format_duration(ms(7_800_000)), "2h10m");
    }

    #[test]
    fn rough_durations_in_their_largest_whole_unit() {
        let secs = SignedDuration::from_secs;
        assert_eq!(format_rough(secs(0)), "0s");
        assert_eq!(format_rough(secs(59)), "59s");
        assert_eq!(format_rough(secs(179)), "2m");
        assert_eq!(format_rough(secs(7300)), "2h");
        assert_eq!(format_rough(secs(4 * 86400 + 5)), "4d");
        assert_eq!(format_rough(secs(-3)), "3s");
    }

    #[test]
    fn settings_are_written_as_they_are_read() {
        for text in ["7d", "1h", "15m", "90s", "0s", "25h"] {
            let duration = parse_std_duration(text).unwrap();
            assert_eq!(
                parse_std_duration(&format_setting(duration)).unwrap(),
                duration
            );
        }
        assert_eq!(
            format_setting(std::time::Duration::from_secs(2 * 86400)),
            "2d"
        );
        assert_eq!(format_setting(std::time::Duration::from_secs(5400)), "90m");
    }

    #[test]
    fn bad_duration_says_what_to_write() {
        let error = parse_duration("soon").unwrap_err();
        assert!(error.contains("such as 90s"), "{error}");
    }

    #[test]
    fn times_absolute_relative_and_now() {
        let now: Timestamp = "2026-11-20T12:00:00Z".parse().unwrap();
        assert_eq!(parse_time("now", now).unwrap(), now);
        assert_eq!(
            parse_time("15m", now).unwrap(),
            "2026-11-20T11:45:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(
            parse_time("2026-11-19T00:00:00+01:00", now).unwrap(),
            "2026-11-18T23:00:00Z".parse::<Timestamp>().unwrap()
        );
        assert!(parse_time("yesterday-ish", now)
            .unwrap_err()
            .contains("RFC 3339"));
    }

    #[test]
    fn nanoseconds_and_times_round_trip_over_the_whole_i64_range() {
        for ns in [i64::MIN, -1, 0, 1, 1_763_600_000_123_456_789, i64::MAX] {
            assert_eq!(timestamp_ns(timestamp_from_ns(ns)), ns);
        }
        assert_eq!(
            timestamp_from_ns(1_763_600_000_123_456_789),
            "2025-11-20T00:53:20.123456789Z"
                .parse::<Timestamp>()
                .unwrap()
        );
        assert_eq!(timestamp_ns(Timestamp::MAX), i64::MAX, "saturates");
        assert_eq!(timestamp_ns(Timestamp::MIN), i64::MIN, "saturates");
    }

    #[test]
    fn time_precisions_cut_to_their_digits_and_round_trip_their_names() {
        let ts: Timestamp = "2026-11-20T10:00:00.123456789Z".parse().unwrap();
        assert_eq!(TimePrecision::Ms.rfc3339(ts), "2026-11-20T10:00:00.123Z");
        assert_eq!(TimePrecision::Us.rfc3339(ts), "2026-11-20T10:00:00.123456Z");
        assert_eq!(
            TimePrecision::Ns.rfc3339(ts),
            "2026-11-20T10:00:00.123456789Z"
        );
        // A whole second keeps its digits; a time shown is never later.
        let whole: Timestamp = "2026-11-20T10:00:00Z".parse().unwrap();
        assert_eq!(
            TimePrecision::Us.rfc3339(whole),
            "2026-11-20T10:00:00.000000Z"
        );
        let late: Timestamp = "2026-11-20T10:00:00.999999999Z".parse().unwrap();
        assert_eq!(TimePrecision::Ms.rfc3339(late), "2026-11-20T10:00:00.999Z");
        for precision in TimePrecision::ALL {
            assert_eq!(precision.as_str().parse(), Ok(precision));
            // What is shown reads back, to its digits.
            let shown: Timestamp = precision.rfc3339(ts).parse().unwrap();
            let unit = 10i64.pow(9 - precision.digits() as u32);
            assert_eq!(timestamp_ns(shown), timestamp_ns(ts) / unit * unit);
        }
        assert_eq!(TimePrecision::default(), TimePrecision::Ms);
        let error = "s".parse::<TimePrecision>().unwrap_err();
        assert!(error.contains("use ms, us or ns"), "{error}");
    }

    #[test]
    fn nanosecond_times_round_trip_through_numbers_and_text() {
        for text in [
            "2026-11-20T10:00:00.123456789Z",
            "2026-11-20T10:00:00.000001Z",
            "1969-12-31T23:59:59.999999999Z",
        ] {
            let ts: Timestamp = text.parse().unwrap();
            assert_eq!(timestamp_from_ns(timestamp_ns(ts)), ts);
            // RFC 3339 as the wire writes it (serde uses Display) keeps every digit.
            let json = serde_json::to_string(&ts).unwrap();
            assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), ts);
            assert_eq!(json, format!("\"{text}\""));
        }
    }
}
