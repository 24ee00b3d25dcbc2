//! The second corpus: web and service logs, not worker output, so the query
//! rows are measured on text tailwater's own shapes did not make. A fleet of
//! 4 services × 8 instances prints, with one clock:
//!
//! - structured JSON (`{"time", "level", "msg", "request_id", "method",
//!   "path", "status", "duration_ms", "user_id"}`, as Go's slog and pino
//!   print);
//! - logfmt (`time=… level=… msg="…" key=value …`, as logrus and Heroku);
//! - RFC 5424 syslog (`<PRI>1 TIME HOST APP PROCID MSGID - MSG`);
//! - Apache combined access lines and Apache 2.4 error lines;
//! - nginx access lines (with request time) and nginx error lines.
//!
//! Request ids (UUID-like) recur across a request's lines in JSON, logfmt
//! and access lines. [`RARE_TERM`](crate::corpus::RARE_TERM) is planted
//! once, in the middle, as in the worker corpus.

use jiff::Timestamp;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tailwater_model::time::timestamp_from_ns;
use tailwater_model::Stream;

use crate::corpus::{planted_line, random_chars, CorpusLine, Kind, RunnerLabels};

/// A word many lines of this corpus hold, for the common-term rows: the
/// method of most requests, in access lines, JSON and logfmt alike.
pub const COMMON_TERM: &str = "GET";

const SERVICES: [(&str, &str); 4] = [
    ("api-gateway", "2026.11.4"),
    ("edge-nginx", "1.27.3"),
    ("checkout-svc", "v88"),
    ("auth-apache", "2.4.62"),
];
const INSTANCES: usize = 8;
/// 2026-11-20T00:00:00Z, as the worker corpus.
const START_NS: i64 = 1_795_132_800_000_000_000;
const PATHS: [&str; 10] = [
    "/",
    "/api/v1/users/{id}",
    "/api/v1/orders/{id}/items",
    "/api/v1/cart",
    "/static/app.{id}.js",
    "/healthz",
    "/api/v1/search?q=gpu+{id}",
    "/login",
    "/api/v2/payments/{id}/capture",
    "/favicon.ico",
];
const AGENTS: [&str; 4] = [
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "curl/8.11.0",
    "kube-probe/1.31",
];
const MESSAGES: [&str; 8] = [
    "request completed",
    "cache miss for session",
    "upstream responded slowly",
    "payment authorized",
    "token refreshed for user",
    "rate limit close for client",
    "database connection returned to pool",
    "order state changed",
];

/// The fleet: each service's instances, on one version.
pub fn fleet(seed: u64) -> Vec<RunnerLabels> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x005e_ed0f_3eb5);
    let mut runners = Vec::new();
    for (service, version) in SERVICES {
        for _ in 0..INSTANCES {
            runners.push(RunnerLabels {
                app: service.to_owned(),
                version: version.to_owned(),
                runner: format!(
                    "{service}-{}",
                    random_chars(&mut rng, 5, b"bcdfghjklmnpqrstvwxz2456789")
                ),
                boot: random_chars(&mut rng, 16, b"0123456789abcdef"),
            });
        }
    }
    runners
}

/// The generator.
pub struct Web {
    rng: StdRng,
    runners: usize,
    total: u64,
    emitted: u64,
    clock_ns: i64,
    /// Each instance's request in flight and the lines it has left.
    requests: Vec<Option<(String, u32)>>,
}

impl Web {
    pub fn new(seed: u64, total: u64, runners: usize) -> Web {
        Web {
            rng: StdRng::seed_from_u64(seed),
            runners,
            total,
            emitted: 0,
            clock_ns: START_NS,
            requests: vec![None; runners],
        }
    }

    pub fn next(&mut self) -> Option<CorpusLine> {
        if self.emitted == self.total {
            return None;
        }
        let planted = self.emitted == self.total / 2;
        self.emitted += 1;
        // Microseconds, as the agent stamps; a line every 2 ms or so.
        self.clock_ns += self.rng.random_range(1..4_000) * 1_000;
        let runner = self.rng.random_range(0..self.runners);
        let ts = timestamp_from_ns(self.clock_ns);
        if planted {
            return Some(CorpusLine {
                runner,
                stream: Stream::Stderr,
                ts,
                bytes: planted_line().into_bytes(),
                kind: Kind::Planted,
            });
        }
        let request = self.request(runner);
        let (stream, bytes) = self.line(runner / INSTANCES, ts, &request);
        Some(CorpusLine {
            runner,
            stream,
            ts,
            bytes: bytes.into_bytes(),
            kind: Kind::Web,
        })
    }

    /// The request `runner` serves now: a new one every few lines.
    fn request(&mut self, runner: usize) -> String {
        let rng = &mut self.rng;
        let slot = &mut self.requests[runner];
        match slot {
            Some((id, left)) if *left > 0 => {
                *left -= 1;
                id.clone()
            }
            _ => {
                let id = format!(
                    "{}-{}-4{}-{}",
                    random_chars(rng, 8, b"0123456789abcdef"),
                    random_chars(rng, 4, b"0123456789abcdef"),
                    random_chars(rng, 3, b"0123456789abcdef"),
                    random_chars(rng, 12, b"0123456789abcdef"),
                );
                *slot = Some((id.clone(), rng.random_range(1..8)));
                id
            }
        }
    }

    /// One line of `service` (an index into [`SERVICES`]).
    fn line(&mut self, service: usize, ts: Timestamp, request: &str) -> (Stream, String) {
        let rng = &mut self.rng;
        let method = ["GET", "GET", "GET", "GET", "POST", "PUT", "DELETE"][rng.random_range(0..7)];
        let id = rng.random_range(1..100_000);
        let path = PATHS[rng.random_range(0..PATHS.len())].replace("{id}", &id.to_string());
        let status = [
            200, 200, 200, 200, 201, 204, 301, 304, 400, 401, 404, 429, 500, 502, 503,
        ][rng.random_range(0..15)];
        let bytes = rng.random_range(0..200_000);
        let ip = format!(
            "10.{}.{}.{}",
            rng.random_range(0..255),
            rng.random_range(0..255),
            rng.random_range(1..255)
        );
        let agent = AGENTS[rng.random_range(0..AGENTS.len())];
        let level =
            ["debug", "info", "info", "info", "info", "warn", "error"][rng.random_range(0..7)];
        let message = MESSAGES[rng.random_range(0..MESSAGES.len())];
        let millis = rng.random_range(0..250_000) as f64 / 1000.0;
        let roll: f64 = rng.random();
        let rfc3339 = format!("{ts:.3}");
        match (service, roll) {
            // nginx: access lines mostly, error lines sometimes.
            (1, r) if r < 0.85 => (
                Stream::Stdout,
                format!(
                    "{ip} - - [{}] \"{method} {path} HTTP/1.1\" {status} {bytes} \"-\" \"{agent}\" rt={:.3} req={request}",
                    ts.strftime("%d/%b/%Y:%H:%M:%S +0000"),
                    millis / 1000.0
                ),
            ),
            (1, _) => (
                Stream::Stderr,
                format!(
                    "{} [error] {}#{}: *{} connect() failed (111: Connection refused) while connecting to upstream, client: {ip}, server: api.example.com, request: \"{method} {path} HTTP/1.1\", upstream: \"http://10.0.3.{}:8080{path}\", host: \"api.example.com\"",
                    ts.strftime("%Y/%m/%d %H:%M:%S"),
                    rng.random_range(20..40),
                    rng.random_range(20..40),
                    rng.random_range(1..10_000_000),
                    rng.random_range(1..20),
                ),
            ),
            // The gateway: structured JSON, and RFC 5424 from its sidecar.
            (0, r) if r < 0.8 => (
                Stream::Stdout,
                format!(
                    "{{\"time\":\"{rfc3339}\",\"level\":\"{level}\",\"msg\":\"{message}\",\"request_id\":\"{request}\",\"method\":\"{method}\",\"path\":\"{path}\",\"status\":{status},\"duration_ms\":{millis},\"user_id\":{id}}}"
                ),
            ),
            (0, _) => (
                Stream::Stdout,
                format!(
                    "<{}>1 {rfc3339} gw-{} envoy {} {} - {message}: {method} {path} {status} via upstream checkout",
                    [134, 131, 132, 135][rng.random_range(0..4)],
                    rng.random_range(1..9),
                    rng.random_range(100..60_000),
                    ["ACCESS", "UPSTREAM", "HEALTH"][rng.random_range(0..3)],
                ),
            ),
            // The checkout service: logfmt.
            (2, _) => (
                Stream::Stdout,
                format!(
                    "time={rfc3339} level={level} msg=\"{message}\" request_id={request} method={method} path={path} status={status} duration={millis}ms order_id={id} retries={}",
                    rng.random_range(0..3)
                ),
            ),
            // Apache: combined access lines, and 2.4 error lines.
            (_, r) if r < 0.85 => (
                Stream::Stdout,
                format!(
                    "{ip} - {} [{}] \"{method} {path} HTTP/1.1\" {status} {bytes} \"https://shop.example.com/\" \"{agent}\"",
                    ["-", "alice", "bob", "svc-batch"][rng.random_range(0..4)],
                    ts.strftime("%d/%b/%Y:%H:%M:%S +0000"),
                ),
            ),
            (_, _) => (
                Stream::Stderr,
                format!(
                    "[{}.{:06} {}] [proxy:error] [pid {}:tid {}] (111)Connection refused: AH00957: http: attempt to connect to 127.0.0.1:8080 (localhost) failed [client {ip}:{}]",
                    ts.strftime("%a %b %d %H:%M:%S"),
                    ts.subsec_microsecond(),
                    ts.strftime("%Y"),
                    rng.random_range(1000..9000),
                    rng.random_range(100_000..999_999),
                    rng.random_range(1024..65535),
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::corpus::{Corpus, Kind, RARE_TERM};

    #[test]
    fn the_web_corpus_is_seeded_mixed_and_plants_its_term_once() {
        let lines: Vec<_> = Corpus::web(7, 5_000).map(Result::unwrap).collect();
        let again: Vec<_> = Corpus::web(7, 5_000).map(Result::unwrap).collect();
        assert_eq!(lines, again, "the same seed makes the same lines");
        assert_eq!(lines.len(), 5_000);
        let text: Vec<String> = lines
            .iter()
            .map(|line| String::from_utf8(line.bytes.clone()).unwrap())
            .collect();
        let planted = text.iter().filter(|line| line.contains(RARE_TERM)).count();
        assert_eq!(planted, 1);
        assert!(lines.iter().filter(|line| line.kind == Kind::Web).count() > 4_900);
        // Every format of the mix is there.
        let has = |test: &dyn Fn(&str) -> bool| text.iter().any(|line| test(line));
        assert!(has(&|line| line.starts_with("{\"time\":")), "JSON");
        assert!(
            has(&|line| line.starts_with("time=") && line.contains(" msg=\"")),
            "logfmt"
        );
        assert!(
            has(&|line| line.starts_with('<') && line.contains(">1 ")),
            "RFC 5424"
        );
        assert!(
            has(&|line| line.contains("] \"GET ") && line.contains(" rt=")),
            "nginx access"
        );
        assert!(
            has(&|line| line.contains(" [error] ") && line.contains("upstream")),
            "nginx error"
        );
        assert!(
            has(&|line| line.contains("\"https://shop.example.com/\"")),
            "Apache access"
        );
        assert!(has(&|line| line.contains("[proxy:error]")), "Apache error");
        // Times rise with one clock.
        assert!(lines.windows(2).all(|pair| pair[0].ts <= pair[1].ts));
    }
}
