//! A record's time: whole microseconds, strictly increasing within a
//! runner's boot, so time order is capture order.

/// Stamps are whole microseconds, each a microsecond at least after the
/// last. Microseconds, not nanoseconds: a block stores time deltas in the
/// largest unit dividing them all, and the benchmark corpus stored in
/// microseconds costs 10.5 % more than in milliseconds, in nanoseconds
/// 18.8 % more (BENCHMARKS.md); a microsecond apart is also about as fast
/// as the agent reads a worker's lines at full speed, so stamps do not run
/// ahead of the clock for long.
pub(super) const STAMP_STEP_NS: i64 = 1_000;
/// How far back the clock may step (NTP) and stamps still go on a
/// microsecond at a time from the last: past it, the clock is believed, so
/// a clock put back an hour does not date an hour of lines ahead.
pub(super) const STAMP_MAX_HOLD_NS: i64 = 1_000_000_000;

/// The time after `last` for a record captured at `now` (both ns): `now`
/// cut to the microsecond, but a microsecond after `last` at least, unless
/// the clock went back more than [`STAMP_MAX_HOLD_NS`].
pub(super) fn next(last: i64, now: i64) -> i64 {
    let now = now.div_euclid(STAMP_STEP_NS) * STAMP_STEP_NS;
    let next = last.saturating_add(STAMP_STEP_NS);
    if now >= next || now.saturating_add(STAMP_MAX_HOLD_NS) < last {
        now
    } else {
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    #[test]
    fn stamps_are_microseconds_and_strictly_increase() {
        let start = 1_700_000_000 * 1_000_000_000 + 123_456_789;
        // The clock cut to the microsecond.
        assert_eq!(next(i64::MIN, start), start - 789);
        // Lines read within one microsecond, or with the clock standing
        // still, still get times in their order.
        let mut last = i64::MIN;
        let mut stamps = Vec::new();
        for _ in 0..5 {
            last = next(last, start);
            stamps.push(last);
        }
        assert_eq!(
            stamps,
            (0..5).map(|n| start - 789 + n * 1_000).collect::<Vec<_>>()
        );
        // Once the clock is ahead again, its time.
        assert_eq!(next(last, start + MS), start + MS - 789);
    }

    #[test]
    fn a_clock_put_back_holds_stamps_for_a_second_at_most() {
        let last = 1_700_000_000 * 1_000_000_000;
        // Back 5 ms: a microsecond after the last still.
        assert_eq!(next(last, last - 5 * MS), last + 1_000);
        // Back an hour: the clock is believed.
        let hour = 3_600_000 * MS;
        assert_eq!(next(last, last - hour), last - hour);
        // Before the epoch and at the ends of the range, no overflow.
        assert_eq!(next(i64::MIN, -1_500), -2_000);
        assert_eq!(next(i64::MAX, i64::MAX), i64::MAX);
    }
}
