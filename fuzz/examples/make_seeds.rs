//! Writes the seed corpus of every target into `seeds/` (small, valid
//! inputs, most made by the real writers: a store's log and part, an
//! agent's spool). Run from `fuzz/` after a format changes:
//! `cargo run --no-default-features --example make_seeds`.

use std::fs;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use tailwater_agent::spool::{SegmentHeader, Spool};
use tailwater_fuzz::join;
use tailwater_model::wire::{encode_binary_batch, IngestBatch, IngestRecord};
use tailwater_model::{Cursor, FieldsJson, IdRange, Level, Stream};
use tailwater_store::part::layout::{self, Raw};
use tailwater_store::part::reader::Part;
use tailwater_store::{Store, StoreOptions};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let seed = |target: &str, name: &str, bytes: &[u8]| {
        let folder = root.join(target);
        fs::create_dir_all(&folder).unwrap();
        fs::write(folder.join(name), bytes).unwrap();
    };

    for (name, batch) in [
        ("plain", batch("sdxl", 0, 3)),
        ("fields", batch("x-612e", 7, 2)),
    ] {
        seed("ingest_body", name, &serde_json::to_vec(&batch).unwrap());
        seed("ingest_binary", name, &encode_binary_batch(&batch));
    }
    let cut = br#"{"app":"a.","runner":"r","boot":"b","records":[{"seq":1,"ts":"2026-01-01T00:00:00Z","stream":"stderr","level":"error","request_id":"req\u0001","message":"token=sk_live_1234567890abcdefghijkl and a line much longer than sixty-four bytes, to be cut","fields":{"a":1,"b":[1,2],"c":{"d":"e"},"f":null,"g":"a long field value that is longer than sixty four bytes, to be cut"}}]}"#;
    seed("ingest_body", "cut", cut);
    let cut: IngestBatch = serde_json::from_slice(cut).unwrap();
    seed("ingest_binary", "cut", &encode_binary_batch(&cut));

    // A message of the cluster's stream, as a node publishes it (mode 0),
    // and an envelope's JSON for the target to frame (mode 1).
    let envelope = tailwater_server::cluster::message::Envelope {
        tenant: "default".into(),
        retention_secs: 86_400,
        batch: batch("sdxl", 0, 3),
    };
    let mut message = vec![0];
    message.extend(tailwater_server::cluster::message::encode(&envelope));
    seed("cluster_message", "message", &message);
    let mut json = vec![16];
    json.extend(serde_json::to_vec(&envelope).unwrap());
    seed("cluster_message", "envelope", &json);
    // Values of the cluster's shared registry, as a registry writes them:
    // the changes its journal holds (a tenant, an app, tokens), each
    // under its key.
    {
        use tailwater_model::tenancy::{NewApp, Scope};
        use tailwater_server::access::registry::replica::ReplicatedChange;
        use tailwater_server::access::registry::Registry;
        let dir = tempfile::tempdir().unwrap();
        let (registry, _) = Registry::open(dir.path(), Some("tw_seed")).unwrap();
        registry.create_tenant("acme", true).unwrap();
        let app = NewApp {
            name: "api v2 ✓".into(),
            retention_days: Some(3),
            ..NewApp::default()
        };
        registry.create_app("acme", &app).unwrap();
        let (_, token) = registry
            .create_token(
                Scope::Caller,
                Some("acme".into()),
                None,
                None,
                Some("gateway".into()),
            )
            .unwrap();
        registry.revoke_token(&token.id).unwrap();
        drop(registry);
        let journal = fs::read(dir.path().join("registry.journal")).unwrap();
        for (n, line) in journal
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .enumerate()
        {
            let line: serde_json::Value = serde_json::from_slice(line).unwrap();
            let value = serde_json::to_vec(&line["change"]).unwrap();
            let change = ReplicatedChange::read(&value).unwrap();
            let (key, value) = (change.key(), change.encode());
            let entry = [key.as_bytes(), tailwater_fuzz::SPLIT, &value].concat();
            seed("registry_entry", &format!("change{n}"), &entry);
        }
    }
    // An agent's intake subject, and three names (tenant, app, runner) one
    // a line, with the characters a subject cannot hold as they are.
    let subject = tailwater_server::cluster::message::intake_subject("acme", "api", "gpu-7");
    seed("intake_subject", "subject", subject.as_bytes());
    seed("intake_subject", "names", "a.b\n*\ngpu 7>%é".as_bytes());
    // A drain's body, a signature header, a Loki label value.
    for (name, mode, parts) in [
        (
            "public",
            0u8,
            [
                &br#"{"url":"https://logs.example.com/in","format":"otlp","name":"archive"}"#[..],
                b"t=1800000000,v1=00",
                b"sdxl \"v2\"\\n",
            ],
        ),
        (
            "loopback",
            1,
            [
                br#"{"url":"http://[::ffff:127.0.0.1]:9/in","token":"tw_x"}"#,
                b"v1=zz,t=-1",
                "\u{3a9}/\u{1f600}\n".as_bytes(),
            ],
        ),
    ] {
        seed("drain", name, &join(mode, &parts));
    }

    for (name, line) in [
        (
            "json",
            r#"{"level":"warning","msg":"vram 91%","requestId":"req-7","ts":"2026-01-01T00:00:00Z","gpu":{"id":0}}"#,
        ),
        ("prefix", "ERROR | worker crashed: CUDA out of memory"),
        ("bracket", "[WARN] queue is 90% full"),
        ("glog", "I0101 12:00:00.123456  1234 main.cc:42] started"),
        (
            "glog_year",
            "E20260101 12:00:00.123456  1234 main.cc:42] NCCL error: unhandled cuda error",
        ),
        ("runpod_text", "INFO   | sync-3f2c9a1e-u1 | Started."),
        ("python", "WARNING:root:deprecated"),
        ("traceback", "RuntimeError: CUDA error: out of memory"),
        ("plain", "loading model weights 3/7"),
    ] {
        seed("parse_line", name, line.as_bytes());
    }

    // Multi-line events: a mode byte (the size cap), then lines, each led
    // by a byte (bit 0 stderr, bits 1-2 the request, bits 3-7 the pause).
    let lines = |mode: u8, lines: &[(u8, &str)]| {
        let mut data = vec![mode];
        for (index, (control, text)) in lines.iter().enumerate() {
            if index > 0 {
                data.push(b'\n');
            }
            data.push(*control);
            data.extend_from_slice(text.as_bytes());
        }
        data
    };
    seed(
        "multiline",
        "python",
        &lines(
            63,
            &[
                (0, "about to divide"),
                (1, "Traceback (most recent call last):"),
                (1, "  File \"w.py\", line 1, in <module>"),
                (0, "  stdout between"),
                (1, "ZeroDivisionError: division by zero"),
                (1, ""),
                (
                    1,
                    "During handling of the above exception, another exception occurred:",
                ),
                (1, ""),
                (1, "Traceback (most recent call last):"),
                (1 | 2, "  File \"w.py\", line 3, in <module>"),
                (1 | 96, "KeyError: 'x'"),
            ],
        ),
    );
    seed(
        "multiline",
        "go-cut",
        &lines(
            1,
            &[
                (1, "panic: boom"),
                (1, ""),
                (1, "goroutine 1 [running]:"),
                (1, "main.main()"),
                (1, "\t/w/main.go:5 +0x1d"),
                (1, "exit status 2"),
                (0, "Exception in thread \"main\" java.lang.Error: x"),
                (0, "\tat Main.main(Main.java:3)"),
                (0, "thread 'main' (7) panicked at a.rs:1:1:"),
                (0, "boom"),
                (0, "note: run with `RUST_BACKTRACE=1`"),
            ],
        ),
    );

    let seal = tailwater_fuzz::model::seal("acme");
    let cursor = Cursor {
        ts_ns: 1_767_225_600_000_000_000,
        position: 42,
    };
    let range = IdRange {
        after: 10,
        through: 20,
    };
    for (name, query) in [
        (
            "labels",
            "app=sdxl&version_not=v1&runner_re=r%5B0-9%5D%2B&boot_not_re=b.*".to_owned(),
        ),
        (
            "text",
            "text=out+of+memory&contains=CUDA&case=sensitive&regex=%28oom%7Ckilled%29&level=warn"
                .to_owned(),
        ),
        (
            "fields",
            "field.status=200&field.gpu.id=0&source=worker&stream=stderr&request=req-7".to_owned(),
        ),
        (
            "times",
            "since=15m&until=now&limit=10&direction=forward&after=5".to_owned(),
        ),
        ("cursor", format!("cursor={}", cursor.encode(&seal))),
    ] {
        seed("logs_params", name, query.as_bytes());
    }

    // The queries Grafana's Loki data source sends (Save & test, Explore,
    // the logs volume, Logs Drilldown), and the rest of what is read.
    for (name, query) in [
        ("save_and_test", "vector(1)+vector(1)"),
        (
            "selector",
            r#"{app="sdxl", runner!="pod-1", level=~"warn|error", stream!~"std.*"}"#,
        ),
        (
            "line_filters",
            r#"{app="sdxl"} |= "cuda" != "debug" |~ "oom|OOM" !~ "(?i)retry" |= "a" or "b""#,
        ),
        (
            "json",
            r#"{app=~".+"} | json | status >= 500 and took > 100ms, nested_a="b" | drop __error__, __error_details__"#,
        ),
        (
            "logfmt",
            r#"{app="sdxl"} | logfmt | (status=200 or size <= 10MB) | keep app, status | line_format "{{.status}} {{ .app }}""#,
        ),
        ("request", r#"{source="run"} | request_id="req-1""#),
        (
            "volume",
            r#"sum by (level, detected_level) (count_over_time({app="sdxl"} |= "oom" | drop __error__[1s]))"#,
        ),
        (
            "metric",
            r#"avg(rate({app="sdxl"}[5s] | json)) / max(bytes_rate({app=""}[2s] offset 1s)) * 100 - count without (stream) (bytes_over_time({level="error"}[3s]))"#,
        ),
    ] {
        seed("logql", name, query.as_bytes());
    }

    for (name, query) in [
        (
            "filters",
            "app=sdxl&runner=gpu-a100-7&state=error&since=1h&until=now&limit=500".to_owned(),
        ),
        (
            "cursor",
            format!("state=in_flight&cursor={}", cursor.encode(&seal)),
        ),
    ] {
        seed("requests_params", name, query.as_bytes());
    }

    for (name, parts) in [
        (
            "words",
            [
                &b"\x00"[..],
                b"out of (memory|disk) error",
                b"CUDA out",
                b"of memory",
                b"CUDA out of memory error",
            ],
        ),
        (
            "case",
            [
                b"\x01",
                b"(?i)oom|killed\\s+\\d+",
                b"OOM killer",
                b"killer",
                b"the OOM killer killed 42",
            ],
        ),
        (
            "classes",
            [
                b"\x00",
                b"^[a-z]+_(gpu|cpu)[0-9]{2,}$",
                b"err-",
                b"...",
                b"err-worker_gpu12 x",
            ],
        ),
    ] {
        let mut data = parts[0].to_vec();
        data.extend_from_slice(&join(0, &parts[1..])[1..]);
        seed("filter_match", name, &data);
    }

    seed("cursor", "cursor", cursor.encode(&seal).as_bytes());
    seed("cursor", "range", range.encode(&seal).as_bytes());
    seed(
        "cursor",
        "numbers",
        &[
            1, 2, 3, 4, 5, 6, 7, 8, 255, 254, 253, 252, 251, 250, 249, 248,
        ],
    );

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    store.append("acme", batch("sdxl", 0, 3)).unwrap();
    store.append("acme", batch("x-612e", 0, 2)).unwrap();
    store.append("globex", batch("sdxl", 5, 2)).unwrap();
    let log = newest(&dir.path().join("wal"), "log");
    let bytes = fs::read(&log).unwrap();
    seed("wal", "raw", &join(0, &[&bytes]));
    let payloads = wal_payloads(&bytes);
    seed("wal", "framed", &join(1, &payloads));
    seed("wal", "v1", &join(3, &payloads));

    store.flush().unwrap();
    let path = newest(&dir.path().join("parts"), "twp");
    let bytes = fs::read(&path).unwrap();
    seed("part", "raw", &join(0, &[&bytes]));
    let part = Part::open(&path).unwrap();
    let footer_len = u32::from_le_bytes(bytes[bytes.len() - 16..][..4].try_into().unwrap());
    let data_end = bytes.len() - 16 - footer_len as usize;
    let footer = zstd::decode_all(&bytes[data_end..bytes.len() - 16]).unwrap();
    seed("part", "framed", &join(1, &[&bytes[..data_end], &footer]));

    let meta = &part.footer.blocks[0];
    let compressed = part.read_compressed(0).unwrap();
    let mut decompressor = zstd::bulk::Decompressor::new().unwrap();
    let Raw::V2([numbers, messages, fields]) =
        layout::decompress(&compressed, meta.raw_len as usize, &mut decompressor).unwrap()
    else {
        panic!("a store writes block format 2");
    };
    seed(
        "block",
        "format-2",
        &join(3, &[&numbers, &messages, &fields]),
    );
    // Block format 1 and a TWPART03 part, as the code before format 2
    // wrote them (the store's own fixture).
    let old = include_bytes!("../../crates/store/src/part/fixtures/twpart03.twp");
    seed("part", "twpart03", &join(0, &[old]));
    let old_dir = tempfile::tempdir().unwrap();
    let old_path = old_dir.path().join("000000000001.twp");
    fs::write(&old_path, old).unwrap();
    let old_part = Part::open(&old_path).unwrap();
    let old_meta = &old_part.footer.blocks[0];
    let old_block = old_part.read_compressed(0).unwrap();
    let columns = zstd::bulk::decompress(&old_block, old_meta.raw_len as usize).unwrap();
    seed("block", "framed", &join(1, &[&columns]));
    let mut raw = ((meta.raw_len as usize).div_ceil(16) as u16)
        .to_le_bytes()
        .to_vec();
    raw.extend_from_slice(&compressed);
    seed("block", "raw", &join(0, &[&raw]));
    drop(store);

    let spool_dir = tempfile::tempdir().unwrap();
    let runner = spool_dir.path().join("runner");
    let header = SegmentHeader {
        app: "sdxl".into(),
        version: "v1".into(),
        runner: "runner".into(),
        boot: "boot1".into(),
        source: Default::default(),
    };
    let (mut spool, _) = Spool::open(&runner, header, 1 << 20).unwrap();
    for record in batch("sdxl", 0, 3).records {
        spool.append(&record, 0, record.message.len() as u64);
    }
    spool.flush();
    spool.shutdown();
    drop(spool);
    let segment = newest(&runner, "seg");
    let bytes = fs::read(&segment).unwrap();
    seed("spool", "raw", &join(0, &[&bytes]));
    let mut bodies = spool_bodies(&bytes);
    seed("spool", "framed", &join(1, &bodies));
    let ledger = br#"{"acked_segment":1,"acked_offset":0,"dropped":[]}"#;
    bodies.push(ledger);
    seed("spool", "ledger", &join(3, &bodies));
}

fn batch(app: &str, first_seq: u64, records: u64) -> IngestBatch {
    let mut fields = serde_json::Map::new();
    fields.insert("status".into(), 200.into());
    fields.insert("gpu".into(), serde_json::json!({"id": 0}));
    IngestBatch {
        app: app.into(),
        version: "v1".into(),
        runner: "r1".into(),
        boot: "b1".into(),
        source: Default::default(),
        records: (first_seq..first_seq + records)
            .map(|seq| IngestRecord {
                seq,
                ts: Timestamp::from_second(1_767_225_600 + seq as i64).unwrap(),
                stream: if seq % 2 == 0 {
                    Stream::Stdout
                } else {
                    Stream::Stderr
                },
                level: if seq % 2 == 0 {
                    Level::Info
                } else {
                    Level::Error
                },
                request_id: (seq % 2 == 1).then(|| format!("req-{seq}")),
                message: format!("step {seq}: CUDA out of memory on gpu{seq}"),
                fields: if seq == 0 {
                    FieldsJson::default()
                } else {
                    FieldsJson::from_map(&fields)
                },
                invalid_utf8: false,
            })
            .collect(),
    }
}

/// The newest file with extension `ext` under `dir`.
fn newest(dir: &Path, ext: &str) -> PathBuf {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(folder) = stack.pop() {
        for entry in fs::read_dir(folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == ext)
                && fs::metadata(&path).unwrap().len() > 16
            {
                found.push(path);
            }
        }
    }
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| panic!("no .{ext} file under {}", dir.display()))
}

/// The payloads of a current-format log segment.
fn wal_payloads(bytes: &[u8]) -> Vec<&[u8]> {
    let mut rest = &bytes[8..];
    let mut payloads = Vec::new();
    while rest.len() >= 16 {
        let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        payloads.push(&rest[16..16 + len]);
        rest = &rest[16 + len..];
    }
    payloads
}

/// The frame bodies of a spool segment.
fn spool_bodies(bytes: &[u8]) -> Vec<&[u8]> {
    let mut rest = &bytes[8..];
    let mut bodies = Vec::new();
    while rest.len() >= 8 {
        let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        bodies.push(&rest[8..8 + len]);
        rest = &rest[8 + len..];
    }
    bodies
}
