//! The corpus: lines a fleet of serverless GPU workers prints, made one at a
//! time (never all in memory), the same bytes for the same seed.
//!
//! Each [`CorpusLine`] carries its runner (an index into [`Corpus::runners`],
//! which holds the app, version, runner id and boot), its stream, the time
//! the agent would have captured it, and its raw bytes, so the same lines can
//! become both plain text (for baselines) and `IngestBatch`es (for the store).
//!
//! The synthetic mix: plain text in the shapes Python and C++ libraries print
//! (loguru, `logging`, bracketed, glog, vLLM, bare `print`), RunPod-style JSON
//! (`{"requestId", "message", "level"}`), snake-case JSON (`{"level", "msg",
//! "request_id"}`), lines naming the request in text, multi-line Python
//! tracebacks, tqdm progress, every level, a few long lines (10–100 KiB), a
//! few lines with invalid UTF-8, across 4 apps × 8 runners, with one
//! timestamp clock so every runner's times increase. [`RARE_TERM`] is planted
//! exactly once, in the middle. [`Corpus::from_file`] takes any text file's
//! lines instead, round-robin over the same runners.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use jiff::Timestamp;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tailwater_model::time::timestamp_from_ns;
use tailwater_model::Stream;

/// A token planted exactly once in every corpus, for the rare-term search.
pub const RARE_TERM: &str = "zq7xv-canary-0451";
/// A word many synthetic messages contain, for the common-term search.
pub const COMMON_TERM: &str = "tokens";

/// The apps of the fleet and their two versions; each has 8 runners, 4 on
/// each version.
const APPS: [(&str, [&str; 2]); 4] = [
    ("sdxl-turbo", ["v14", "v15"]),
    ("whisper-large-v3", ["2024.11.2", "2024.12.0"]),
    ("llama-3-8b-vllm", ["v3", "v4"]),
    ("flux-dev", ["build-0193", "build-0201"]),
];
const RUNNERS_PER_APP: usize = 8;
/// 2026-11-20T00:00:00Z: where every corpus's clock starts.
const START_NS: i64 = 1_795_132_800_000_000_000;

/// Who printed a line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunnerLabels {
    pub app: String,
    pub version: String,
    pub runner: String,
    pub boot: String,
}

/// What shape a line has; tests use it to check the mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Plain,
    JsonRunpod,
    JsonSnake,
    RequestText,
    Traceback,
    Progress,
    Long,
    InvalidUtf8,
    Planted,
    /// A line of a `--corpus` file.
    File,
    /// A line of the web and service corpus ([`crate::corpus_web`]).
    Web,
}

/// One captured line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorpusLine {
    /// Index into [`Corpus::runners`].
    pub runner: usize,
    pub stream: Stream,
    /// When the agent read it.
    pub ts: Timestamp,
    /// Without the newline; not always UTF-8.
    pub bytes: Vec<u8>,
    pub kind: Kind,
}

/// A stream of lines and the runners that print them.
pub struct Corpus {
    runners: Vec<RunnerLabels>,
    total: u64,
    lines: Lines,
}

enum Lines {
    Synthetic(Box<Synthetic>),
    Web(Box<crate::corpus_web::Web>),
    File(FileLines),
}

impl Corpus {
    /// `lines` synthetic lines, the same for the same `seed`, stamped in
    /// microseconds as the agent stamps them.
    pub fn synthetic(seed: u64, lines: u64) -> Corpus {
        Corpus::synthetic_stamped(seed, lines, 1_000)
    }

    /// [`Corpus::synthetic`], each line's time cut to `unit_ns` and at
    /// least that after its runner's last line (as the agent stamps in
    /// microseconds): to measure what coarser or finer times cost.
    pub fn synthetic_stamped(seed: u64, lines: u64, unit_ns: i64) -> Corpus {
        let runners = fleet(seed);
        let mut synthetic = Synthetic::new(seed, lines, &runners);
        synthetic.unit_ns = unit_ns.max(1);
        Corpus {
            runners,
            total: lines,
            lines: Lines::Synthetic(Box::new(synthetic)),
        }
    }

    /// `lines` lines of web and service logs ([`crate::corpus_web`]), the
    /// same for the same `seed`.
    pub fn web(seed: u64, lines: u64) -> Corpus {
        let runners = crate::corpus_web::fleet(seed);
        let web = crate::corpus_web::Web::new(seed, lines, runners.len());
        Corpus {
            runners,
            total: lines,
            lines: Lines::Web(Box::new(web)),
        }
    }

    /// The lines of a text file (at most `limit` of them), round-robin over
    /// the fleet's runners, one millisecond apart, plus one planted line with
    /// [`RARE_TERM`] in the middle. Reads the file twice (once to count).
    pub fn from_file(path: &Path, seed: u64, limit: Option<u64>) -> io::Result<Corpus> {
        let mut reader = BufReader::new(File::open(path)?);
        let mut count = 0u64;
        let mut buf = Vec::new();
        while limit.is_none_or(|limit| count < limit) && reader.read_until(b'\n', &mut buf)? > 0 {
            count += 1;
            buf.clear();
        }
        let runners = fleet(seed);
        let lines = FileLines {
            reader: BufReader::new(File::open(path)?),
            runners: runners.len(),
            left: count,
            index: 0,
            plant_at: count / 2,
        };
        Ok(Corpus {
            runners,
            total: count + 1,
            lines: Lines::File(lines),
        })
    }

    pub fn runners(&self) -> &[RunnerLabels] {
        &self.runners
    }

    /// How many lines the corpus yields in all.
    pub fn len(&self) -> u64 {
        self.total
    }
}

impl Iterator for Corpus {
    type Item = io::Result<CorpusLine>;
    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.lines {
            Lines::Synthetic(synthetic) => synthetic.next().map(Ok),
            Lines::Web(web) => web.next().map(Ok),
            Lines::File(file) => file.next(),
        }
    }
}

/// 4 apps × 8 runners, with RunPod-like worker ids and random boots.
fn fleet(seed: u64) -> Vec<RunnerLabels> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    let mut runners = Vec::new();
    for (app, versions) in APPS {
        for i in 0..RUNNERS_PER_APP {
            runners.push(RunnerLabels {
                app: app.to_owned(),
                version: versions[i % 2].to_owned(),
                runner: random_chars(&mut rng, 14, b"abcdefghijklmnopqrstuvwxyz0123456789"),
                boot: random_chars(&mut rng, 16, b"0123456789abcdef"),
            });
        }
    }
    runners
}

struct FileLines {
    reader: BufReader<File>,
    runners: usize,
    left: u64,
    index: u64,
    plant_at: u64,
}

impl FileLines {
    fn next(&mut self) -> Option<io::Result<CorpusLine>> {
        let index = self.index;
        let mut line = CorpusLine {
            runner: (index % self.runners as u64) as usize,
            stream: Stream::Stdout,
            ts: timestamp_from_ns(START_NS + index as i64 * 1_000_000),
            bytes: Vec::new(),
            kind: Kind::File,
        };
        if index == self.plant_at {
            self.plant_at = u64::MAX;
            self.index += 1;
            line.bytes = planted_line().into_bytes();
            line.kind = Kind::Planted;
            return Some(Ok(line));
        }
        if self.left == 0 {
            return None;
        }
        match self.reader.read_until(b'\n', &mut line.bytes) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(error) => return Some(Err(error)),
        }
        // As the agent splits lines: no newline, no carriage return before it.
        if line.bytes.last() == Some(&b'\n') {
            line.bytes.pop();
        }
        if line.bytes.last() == Some(&b'\r') {
            line.bytes.pop();
        }
        self.left -= 1;
        self.index += 1;
        Some(Ok(line))
    }
}

pub(crate) fn planted_line() -> String {
    format!("WARNING: nccl watchdog saw marker {RARE_TERM} once; continuing")
}

/// The synthetic generator: one clock, per-runner state (the request being
/// served, the lines of a traceback still to print).
struct Synthetic {
    rng: StdRng,
    runners: Vec<RunnerState>,
    total: u64,
    emitted: u64,
    clock_ns: i64,
    /// Times are cut to this many ns, each runner's rising by one at least.
    unit_ns: i64,
    /// Each runner's last time.
    last_ns: Vec<i64>,
    /// The runner in the middle of a multi-line print.
    burst: Option<usize>,
}

struct RunnerState {
    app: usize,
    pending: VecDeque<(Stream, Kind, Vec<u8>)>,
    request: Option<Request>,
}

struct Request {
    id: String,
    lines_left: u32,
}

impl Synthetic {
    fn new(seed: u64, total: u64, runners: &[RunnerLabels]) -> Synthetic {
        let runners: Vec<RunnerState> = runners
            .iter()
            .map(|labels| RunnerState {
                app: APPS
                    .iter()
                    .position(|(app, _)| *app == labels.app)
                    .unwrap_or(0),
                pending: VecDeque::new(),
                request: None,
            })
            .collect();
        let count = runners.len();
        Synthetic {
            rng: StdRng::seed_from_u64(seed),
            runners,
            total,
            emitted: 0,
            clock_ns: START_NS,
            unit_ns: 1_000,
            last_ns: vec![i64::MIN; count],
            burst: None,
        }
    }

    fn next(&mut self) -> Option<CorpusLine> {
        if self.emitted == self.total {
            return None;
        }
        let planted = self.emitted == self.total / 2;
        self.emitted += 1;
        let runner = match self.burst {
            Some(runner) => {
                self.clock_ns += self.rng.random_range(1_000..50_000);
                runner
            }
            None => {
                self.clock_ns += self.rng.random_range(0..4_000_000);
                self.rng.random_range(0..self.runners.len())
            }
        };
        if planted {
            return Some(CorpusLine {
                runner,
                stream: Stream::Stderr,
                ts: self.stamp(runner),
                bytes: planted_line().into_bytes(),
                kind: Kind::Planted,
            });
        }
        if self.runners[runner].pending.is_empty() {
            self.event(runner);
        }
        let state = &mut self.runners[runner];
        let (stream, kind, bytes) = state.pending.pop_front()?;
        self.burst = (!state.pending.is_empty()).then_some(runner);
        Some(CorpusLine {
            runner,
            stream,
            ts: self.stamp(runner),
            bytes,
            kind,
        })
    }

    /// When the agent would have stamped `runner`'s next line: the clock
    /// cut to the unit, a unit after the runner's last at least.
    fn stamp(&mut self, runner: usize) -> Timestamp {
        let cut = self.clock_ns.div_euclid(self.unit_ns) * self.unit_ns;
        let ts = cut.max(self.last_ns[runner].saturating_add(self.unit_ns));
        self.last_ns[runner] = ts;
        timestamp_from_ns(ts)
    }

    /// Queues what `runner` prints next: one line, or several.
    fn event(&mut self, runner: usize) {
        let rng = &mut self.rng;
        let state = &mut self.runners[runner];
        let app = state.app;
        let roll: f64 = rng.random();
        let lines = &mut state.pending;
        if roll < 1.0 / 15_000.0 {
            lines.push_back((Stream::Stdout, Kind::Long, long_line(rng)));
        } else if roll < 1.0 / 15_000.0 + 1.0 / 4_000.0 {
            lines.push_back((Stream::Stderr, Kind::InvalidUtf8, invalid_utf8_line(rng)));
        } else if roll < 0.003 {
            for line in traceback(rng, app) {
                lines.push_back((Stream::Stderr, Kind::Traceback, line.into_bytes()));
            }
            if let Some(request) = state.request.take() {
                let line = runpod_json(Some(&request.id), "Failed.", "ERROR");
                lines.push_back((Stream::Stdout, Kind::JsonRunpod, line.into_bytes()));
            }
        } else if state.request.is_none() && rng.random_bool(0.04) {
            let id = request_id(rng);
            let line = runpod_json(Some(&id), "Started.", "INFO");
            lines.push_back((Stream::Stdout, Kind::JsonRunpod, line.into_bytes()));
            state.request = Some(Request {
                id,
                lines_left: rng.random_range(5..60),
            });
        } else if state.request.as_ref().is_some_and(|r| r.lines_left == 0) {
            let id = state.request.take().map(|r| r.id);
            let line = runpod_json(id.as_deref(), "Finished.", "INFO");
            lines.push_back((Stream::Stdout, Kind::JsonRunpod, line.into_bytes()));
        } else {
            if let Some(request) = &mut state.request {
                request.lines_left -= 1;
            }
            let id = state.request.as_ref().map(|r| r.id.as_str());
            lines.push_back(ordinary_line(rng, app, id, self.clock_ns));
        }
    }
}

/// One line of everyday output.
fn ordinary_line(
    rng: &mut StdRng,
    app: usize,
    request: Option<&str>,
    now_ns: i64,
) -> (Stream, Kind, Vec<u8>) {
    let level = random_level(rng);
    let message = message(rng, app);
    let roll: f64 = rng.random();
    let (stream, kind, line) = if roll < 0.32 {
        (
            Stream::Stderr,
            Kind::Plain,
            plain(rng, level, &message, now_ns),
        )
    } else if roll < 0.54 {
        let name = ["DEBUG", "DEBUG", "INFO", "WARN", "ERROR", "ERROR"][level];
        (
            Stream::Stdout,
            Kind::JsonRunpod,
            runpod_json(request, &message, name),
        )
    } else if roll < 0.70 {
        (
            Stream::Stdout,
            Kind::JsonSnake,
            snake_json(rng, level, &message, request),
        )
    } else if roll < 0.80 && request.is_some() {
        let id = request.unwrap_or_default();
        let line = match rng.random_range(0..3) {
            0 => format!("INFO | [{id}] {message}"),
            1 => format!("[{id}] {message}"),
            _ => format!("handler: request {id}: {message}"),
        };
        (Stream::Stdout, Kind::RequestText, line)
    } else if roll < 0.80 {
        (Stream::Stdout, Kind::Plain, message)
    } else {
        (Stream::Stderr, Kind::Progress, progress(rng, app))
    };
    (stream, kind, line.into_bytes())
}

/// 0 trace … 5 fatal, mostly info.
fn random_level(rng: &mut StdRng) -> usize {
    match rng.random_range(0..1000) {
        0..20 => 0,
        20..170 => 1,
        170..770 => 2,
        770..890 => 3,
        890..990 => 4,
        _ => 5,
    }
}

fn plain(rng: &mut StdRng, level: usize, message: &str, now_ns: i64) -> String {
    let upper = ["TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"][level];
    let time = timestamp_from_ns(now_ns);
    match rng.random_range(0..6) {
        0 => format!(
            "{} | {upper:<8} | handler:run:{} - {message}",
            time.strftime("%Y-%m-%d %H:%M:%S%.3f"),
            rng.random_range(20..400)
        ),
        1 => format!(
            "{upper}:worker.{}:{message}",
            ["pipeline", "cache", "io"][level % 3]
        ),
        2 => format!(
            "[{}] [{upper}] {message}",
            time.strftime("%Y-%m-%d %H:%M:%S")
        ),
        3 if level >= 2 => format!(
            "{}{} {} {}] {message}",
            ["I", "W", "E", "F"][level - 2],
            time.strftime("%m%d %H:%M:%S%.6f"),
            rng.random_range(1000..99999),
            ["cuda_graph.cc:113", "allocator.cc:412", "nccl_utils.cc:88"][level % 3]
        ),
        4 => format!(
            "{upper} {} metrics.py:341] {message}",
            time.strftime("%m-%d %H:%M:%S")
        ),
        _ => format!("{upper}: {message}"),
    }
}

fn runpod_json(request: Option<&str>, message: &str, level: &str) -> String {
    let id = request.map_or("null".to_owned(), json_string);
    let message = json_string(message);
    format!(r#"{{"requestId": {id}, "message": {message}, "level": "{level}"}}"#)
}

fn snake_json(rng: &mut StdRng, level: usize, message: &str, request: Option<&str>) -> String {
    let name = ["trace", "debug", "info", "warning", "error", "fatal"][level];
    let mut line = format!(r#"{{"level":"{name}","msg":{}"#, json_string(message));
    if let Some(id) = request {
        line.push_str(&format!(r#","request_id":{}"#, json_string(id)));
    }
    if rng.random_bool(0.5) {
        line.push_str(&format!(
            r#","gpu":{},"latency_ms":{:.1}"#,
            rng.random_range(0..8),
            rng.random_range(1.0..900.0)
        ));
    }
    line.push('}');
    line
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes to json")
}

/// A message in the words of each app.
fn message(rng: &mut StdRng, app: usize) -> String {
    let n = rng.random_range(1..4096);
    let ms = rng.random_range(3..2500);
    let pct: f64 = rng.random_range(0.0..100.0);
    match (app, rng.random_range(0..6)) {
        (_, 0) => format!("GPU memory: {:.2} GiB allocated, {:.1}% of VRAM in use", pct / 4.0, pct),
        (_, 1) => format!("handled job in {ms} ms (queue wait {} ms)", ms / 7),
        (0, 2) => format!("denoising {} steps at {}x{} guidance=0.0", n % 50 + 1, 512 + n % 3 * 256, 1024),
        (0, 3) => format!("safety checker flagged {} of 4 images", n % 2),
        (0, _) => format!("encoded prompt into {} tokens (truncated to 77)", n % 300),
        (1, 2) => format!("detected language 'en' with probability {:.3}", pct / 100.0),
        (1, 3) => format!("decoded {} tokens for {:.1}s of audio", n, ms as f64 / 100.0),
        (1, _) => format!("segment {}: [{:.2}s -> {:.2}s] transcribed", n, pct, pct + 4.2),
        (2, 2) => format!(
            "Avg prompt throughput: {:.1} tokens/s, Avg generation throughput: {:.1} tokens/s, Running: {} reqs, Pending: 0 reqs, GPU KV cache usage: {pct:.1}%",
            pct * 20.0, pct * 3.0, n % 16
        ),
        (2, 3) => format!("generated {n} tokens in {ms} ms (prefix cache hit rate {pct:.1}%)"),
        (2, _) => format!("Added request cmpl-{n:08x} with max_tokens={}", n % 2048),
        (_, 2) => format!("loading transformer shard {}/{} from /runpod-volume/models", n % 12 + 1, 12),
        (_, 3) => format!("torch.compile cache hit for graph {n:x} ({ms} ms saved)"),
        _ => format!("uploaded result to s3://outputs/{n:x}.png in {ms} ms"),
    }
}

fn progress(rng: &mut StdRng, app: usize) -> String {
    let total = [30, 265, 512, 28][app];
    let mut updates = Vec::new();
    let first = rng.random_range(0..total);
    for done in first..(first + rng.random_range(1..4)).min(total + 1) {
        let fraction = done as f64 / total as f64;
        let full = (fraction * 10.0) as usize;
        let bar = format!("{}{}", "█".repeat(full), " ".repeat(10 - full));
        let desc = ["", "Transcribing: ", "Processed prompts: ", "Sampling: "][app];
        let rate: f64 = rng.random_range(1.0..40.0);
        updates.push(format!(
            "{desc}{:3.0}%|{bar}| {done}/{total} [00:{:02}<00:{:02}, {rate:.2}it/s]",
            fraction * 100.0,
            done / 10 % 60,
            (total - done) / 10 % 60
        ));
    }
    // tqdm redraws with a carriage return; through a pipe they stay on one line.
    updates.join("\r")
}

fn traceback(rng: &mut StdRng, app: usize) -> Vec<String> {
    let frames = [
        ("/app/handler.py", "handler", "result = pipe(**job_input)"),
        (
            "/usr/local/lib/python3.11/site-packages/torch/utils/_contextlib.py",
            "decorate_context",
            "return func(*args, **kwargs)",
        ),
        (
            "/usr/local/lib/python3.11/site-packages/torch/nn/modules/module.py",
            "_call_impl",
            "return forward_call(*args, **kwargs)",
        ),
        (
            "/usr/local/lib/python3.11/site-packages/diffusers/models/attention_processor.py",
            "__call__",
            "hidden_states = F.scaled_dot_product_attention(query, key, value)",
        ),
        (
            "/app/storage.py",
            "upload",
            "client.put_object(Bucket=bucket, Key=key, Body=body)",
        ),
    ];
    let mut lines = vec!["Traceback (most recent call last):".to_owned()];
    for (file, function, code) in frames.iter().take(rng.random_range(2..=frames.len())) {
        let line = rng.random_range(10..1500);
        lines.push(format!("  File \"{file}\", line {line}, in {function}"));
        lines.push(format!("    {code}"));
    }
    let gib: f64 = rng.random_range(0.5..8.0);
    lines.push(match (app + rng.random_range(0..4)) % 4 {
        0 => format!("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate {gib:.2} GiB. GPU 0 has a total capacity of 23.68 GiB of which {:.2} GiB is free.", gib / 3.0),
        1 => "RuntimeError: CUDA error: device-side assert triggered".to_owned(),
        2 => format!("KeyError: 'num_inference_steps_{}'", rng.random_range(0..9)),
        _ => "ConnectionResetError: [Errno 104] Connection reset by peer".to_owned(),
    });
    lines
}

/// 10–100 KiB: a base64 image echoed by a debug print, or a tensor dump.
fn long_line(rng: &mut StdRng) -> Vec<u8> {
    let size = rng.random_range(10 * 1024..100 * 1024);
    if rng.random_bool(0.5) {
        let mut line = br#"DEBUG | handler output: {"image_base64": ""#.to_vec();
        const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        line.extend((0..size).map(|_| BASE64[rng.random_range(0..64)]));
        line.extend_from_slice(br#""}"#);
        line
    } else {
        let mut line = String::from("tensor([[");
        while line.len() < size {
            line.push_str(&format!("{:.4}, ", rng.random_range(-3.0..3.0f32)));
        }
        line.push_str("0.0000]], device='cuda:0', dtype=torch.float16)");
        line.into_bytes()
    }
}

/// A progress bar cut in the middle of a block character, or stray bytes.
fn invalid_utf8_line(rng: &mut StdRng) -> Vec<u8> {
    if rng.random_bool(0.5) {
        let mut line = " 42%|████".as_bytes().to_vec();
        line.extend_from_slice(&"█".as_bytes()[..2]);
        line.extend_from_slice(b"     | 11/26 [00:04<00:06, 2.41it/s]");
        line
    } else {
        let mut line = b"WARNING: could not decode header bytes ".to_vec();
        line.extend_from_slice(&[0xff, 0xfe, rng.random_range(0x80..0xc0u8)]);
        line.extend_from_slice(b" from upload");
        line
    }
}

/// RunPod-style job ids: a UUID and a suffix.
fn request_id(rng: &mut StdRng) -> String {
    let hex = random_chars(rng, 32, b"0123456789abcdef");
    format!(
        "{}-{}-{}-{}-{}-u{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..],
        rng.random_range(1..3)
    )
}

pub(crate) fn random_chars(rng: &mut StdRng, len: usize, alphabet: &[u8]) -> String {
    (0..len)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::io::Write;

    use tailwater_model::{parse_line, Level};

    use super::*;

    fn lines(seed: u64, count: u64) -> Vec<CorpusLine> {
        Corpus::synthetic(seed, count)
            .map(|line| line.unwrap())
            .collect()
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let a = lines(7, 3_000);
        assert_eq!(a, lines(7, 3_000));
        assert_ne!(a, lines(8, 3_000));
        assert_eq!(a.len(), 3_000);
        assert_eq!(fleet(7), fleet(7));
        assert_ne!(fleet(7), fleet(8));
    }

    #[test]
    fn the_mix_has_every_kind_and_level() {
        let lines = lines(42, 60_000);
        let kinds: HashSet<Kind> = lines.iter().map(|line| line.kind).collect();
        for kind in [
            Kind::Plain,
            Kind::JsonRunpod,
            Kind::JsonSnake,
            Kind::RequestText,
            Kind::Traceback,
            Kind::Progress,
            Kind::Long,
            Kind::InvalidUtf8,
            Kind::Planted,
        ] {
            assert!(kinds.contains(&kind), "no {kind:?} line");
        }
        let levels: HashSet<Level> = lines
            .iter()
            .filter_map(|line| parse_line(&String::from_utf8_lossy(&line.bytes)).level)
            .collect();
        assert_eq!(levels.len(), Level::ALL.len(), "levels seen: {levels:?}");

        let planted = lines
            .iter()
            .filter(|line| memchr::memmem::find(&line.bytes, RARE_TERM.as_bytes()).is_some());
        assert_eq!(planted.count(), 1);
        assert!(lines.iter().all(|line| !line.bytes.contains(&b'\n')));
        let long = lines.iter().filter(|line| line.kind == Kind::Long);
        assert!(long
            .clone()
            .all(|line| (10 * 1024..=101 * 1024).contains(&line.bytes.len())));
        let invalid = lines
            .iter()
            .filter(|line| std::str::from_utf8(&line.bytes).is_err());
        assert!(invalid.count() >= 1);
        let runners: HashSet<usize> = lines.iter().map(|line| line.runner).collect();
        assert_eq!(runners.len(), 32);
    }

    #[test]
    fn times_increase_per_runner_and_tracebacks_are_contiguous() {
        let lines = lines(3, 20_000);
        let mut last = vec![Timestamp::MIN; 32];
        for line in &lines {
            assert!(
                line.ts > last[line.runner],
                "time went back on runner {}",
                line.runner
            );
            last[line.runner] = line.ts;
        }
        let start = lines
            .iter()
            .position(|line| line.bytes.starts_with(b"Traceback"))
            .expect("a traceback");
        let runner = lines[start].runner;
        let rest = lines[start..]
            .iter()
            .take_while(|line| line.kind == Kind::Traceback);
        assert!(rest.clone().count() >= 5);
        assert!(rest.clone().all(|line| line.runner == runner));
        assert!(rest
            .last()
            .is_some_and(
                |line| parse_line(&String::from_utf8_lossy(&line.bytes)).level
                    == Some(Level::Error)
            ));
    }

    #[test]
    fn a_file_corpus_takes_its_lines_round_robin_and_plants_the_term() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        write!(file, "one\r\ntwo\nthree\nfour\nfive").unwrap();
        let corpus = Corpus::from_file(file.path(), 1, None).unwrap();
        assert_eq!(corpus.len(), 6);
        let lines: Vec<CorpusLine> = corpus.map(|line| line.unwrap()).collect();
        let texts: Vec<String> = lines
            .iter()
            .map(|line| String::from_utf8_lossy(&line.bytes).into_owned())
            .collect();
        assert_eq!(texts[..2], ["one", "two"]);
        assert!(texts[2].contains(RARE_TERM));
        assert_eq!(texts[3..], ["three", "four", "five"]);
        assert_eq!(lines[1].runner, 1);

        let limited = Corpus::from_file(file.path(), 1, Some(2)).unwrap();
        assert_eq!(limited.len(), 3);
        assert_eq!(limited.count(), 3);
    }
}
