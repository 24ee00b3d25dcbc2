//! The shipping rate limit: at most so many lines, and so many bytes of
//! lines, per second leave for the server.
//!
//! Two token buckets, each holding at most one second of its rate, so a
//! quiet worker's next burst of up to a second's worth goes out at once.
//! What exceeds the rate is not dropped: it waits in the spool (which keeps
//! its own size cap), and the shipper sums up what was held back in a system
//! record. The agent's own `system` records are not metered.
//!
//! A line bigger than the byte bucket is still shipped once the bucket is
//! not empty: the bucket goes into debt and the rate holds on average.

use std::time::{Duration, Instant};

/// Lines per second shipped at most, unless configured: no limit.
pub const DEFAULT_RATE_LINES: Option<u64> = None;
/// Bytes of lines per second shipped at most, unless configured: no limit.
pub const DEFAULT_RATE_BYTES: Option<u64> = None;
/// How much unspent allowance a bucket keeps: this much time's worth.
const BURST: Duration = Duration::from_secs(1);
/// While holding back, wait for at least this much time's worth of
/// allowance before the next batch, so a throttled runner ships a few
/// batches a second rather than one per token.
const THROTTLED_BATCH_EVERY: Duration = Duration::from_millis(100);

/// The configured rates; `None` is no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimit {
    pub lines_per_second: Option<u64>,
    pub bytes_per_second: Option<u64>,
}

impl RateLimit {
    pub fn is_unlimited(&self) -> bool {
        self.lines_per_second.is_none() && self.bytes_per_second.is_none()
    }

    /// `--rate-lines 100/s --rate-bytes 65536/s`, for messages.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(lines) = self.lines_per_second {
            parts.push(format!("--rate-lines {lines}/s"));
        }
        if let Some(bytes) = self.bytes_per_second {
            parts.push(format!("--rate-bytes {bytes}/s"));
        }
        parts.join(" ")
    }
}

/// What may be shipped right now; `None` is no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allowance {
    pub lines: Option<u64>,
    /// Bytes of lines; when above zero, one line of any size may go.
    pub bytes: Option<u64>,
}

impl Allowance {
    pub const UNLIMITED: Allowance = Allowance {
        lines: None,
        bytes: None,
    };
}

pub struct Throttle {
    limit: RateLimit,
    lines: Option<Bucket>,
    bytes: Option<Bucket>,
}

impl Throttle {
    pub fn new(limit: RateLimit, now: Instant) -> Throttle {
        Throttle {
            limit,
            lines: limit.lines_per_second.map(|rate| Bucket::new(rate, now)),
            bytes: limit.bytes_per_second.map(|rate| Bucket::new(rate, now)),
        }
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    pub fn allowance(&mut self, now: Instant) -> Allowance {
        Allowance {
            lines: self.lines.as_mut().map(|bucket| bucket.available(now)),
            bytes: self.bytes.as_mut().map(|bucket| bucket.available(now)),
        }
    }

    /// `lines` lines of `bytes` bytes were shipped.
    pub fn spend(&mut self, lines: u64, bytes: u64, now: Instant) {
        if let Some(bucket) = self.lines.as_mut() {
            bucket.spend(lines, now);
        }
        if let Some(bucket) = self.bytes.as_mut() {
            bucket.spend(bytes, now);
        }
    }

    /// How long until enough allowance has gathered to ship the next part of
    /// a backlog of `lines` lines and `bytes` bytes.
    pub fn delay(&mut self, lines: u64, bytes: u64, now: Instant) -> Duration {
        let lines_delay = self
            .lines
            .as_mut()
            .map_or(Duration::ZERO, |bucket| bucket.delay(lines, now));
        let bytes_delay = self
            .bytes
            .as_mut()
            .map_or(Duration::ZERO, |bucket| bucket.delay(bytes, now));
        lines_delay.max(bytes_delay)
    }
}

struct Bucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    fn new(rate: u64, now: Instant) -> Bucket {
        let rate = rate.max(1) as f64;
        let capacity = (rate * BURST.as_secs_f64()).max(1.0);
        Bucket {
            rate,
            capacity,
            tokens: capacity,
            refilled: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.refilled = now;
    }

    fn available(&mut self, now: Instant) -> u64 {
        self.refill(now);
        self.tokens.max(0.0).floor() as u64
    }

    fn spend(&mut self, amount: u64, now: Instant) {
        self.refill(now);
        self.tokens -= amount as f64;
    }

    fn delay(&mut self, backlog: u64, now: Instant) -> Duration {
        self.refill(now);
        let chunk = (self.rate * THROTTLED_BATCH_EVERY.as_secs_f64()).max(1.0);
        let wanted = (backlog as f64).clamp(1.0, chunk.min(self.capacity));
        if self.tokens >= wanted {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((wanted - self.tokens) / self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(lines: Option<u64>, bytes: Option<u64>) -> RateLimit {
        RateLimit {
            lines_per_second: lines,
            bytes_per_second: bytes,
        }
    }

    #[test]
    fn no_limit_allows_everything() {
        let now = Instant::now();
        let mut throttle = Throttle::new(RateLimit::default(), now);
        assert_eq!(throttle.allowance(now), Allowance::UNLIMITED);
        throttle.spend(1_000_000, 1 << 30, now);
        assert_eq!(throttle.allowance(now), Allowance::UNLIMITED);
        assert_eq!(throttle.delay(1_000_000, 1 << 30, now), Duration::ZERO);
    }

    #[test]
    fn a_second_of_burst_then_the_rate() {
        let start = Instant::now();
        let mut throttle = Throttle::new(limit(Some(100), Some(10_000)), start);
        assert_eq!(
            throttle.allowance(start),
            Allowance {
                lines: Some(100),
                bytes: Some(10_000)
            }
        );
        throttle.spend(100, 4_000, start);
        assert_eq!(throttle.allowance(start).lines, Some(0));
        // A tenth of a second later: ten lines' worth.
        let later = start + Duration::from_millis(100);
        assert_eq!(throttle.allowance(later).lines, Some(10));
        // The bucket never holds more than a second's worth.
        let much_later = start + Duration::from_secs(60);
        assert_eq!(
            throttle.allowance(much_later),
            Allowance {
                lines: Some(100),
                bytes: Some(10_000)
            }
        );
    }

    #[test]
    fn a_line_bigger_than_the_bucket_goes_into_debt() {
        let start = Instant::now();
        let mut throttle = Throttle::new(limit(None, Some(1_000)), start);
        throttle.spend(1, 3_000, start);
        assert_eq!(throttle.allowance(start).bytes, Some(0));
        // 2000 bytes of debt, then 100 bytes (a tenth of a second) to ship
        // the next part of the backlog: 2.1 s at 1000 bytes/s.
        let delay = throttle.delay(5_000, 5_000, start);
        assert!((2_090..=2_110).contains(&delay.as_millis()), "{delay:?}");
    }

    #[test]
    fn the_delay_waits_for_a_tenth_of_a_second_of_allowance_or_the_backlog() {
        let start = Instant::now();
        let mut throttle = Throttle::new(limit(Some(1_000), None), start);
        throttle.spend(1_000, 0, start);
        let delay = throttle.delay(5_000, 0, start);
        assert!((99..=101).contains(&delay.as_millis()), "{delay:?}");
        // A backlog of 3 lines needs only 3 ms of allowance.
        let delay = throttle.delay(3, 0, start);
        assert!((2..=4).contains(&delay.as_millis()), "{delay:?}");
    }
}
