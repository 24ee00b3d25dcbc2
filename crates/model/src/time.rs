//! Times and durations as people type them: `90s`, `15m`, `2h`, `7d`,
//! `1h30m`, RFC 3339 timestamps, and `now`.

use jiff::{SignedDuration, Span, SpanRelativeTo, Timestamp};

/// Parses a duration such as `90s`, `15m`, `2h`, `7d` or `1h30m`. A day is
/// 24 hours.
pub fn parse_duration(text: &str) -> Result<SignedDuration, String> {
    let invalid = || {
        format!("invalid duration '{text}': write a number and a unit, such as 90s, 15m, 2h or 7d")
    };
    let span: Span = text.trim().parse().map_err(|_| invalid())?;
    let duration = span
        .to_duration(SpanRelativeTo::days_are_24_hours())
        .map_err(|_| invalid())?;
    if duration.is_negative() {
        return Err(invalid());
    }
    Ok(duration)
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
}
