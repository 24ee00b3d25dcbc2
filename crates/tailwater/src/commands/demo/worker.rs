//! The demo's workers (`tailwater demo-worker`, hidden): what a GPU model
//! server prints, with the shape of a real one, so the demo shows what
//! tailwater does with it.
//!
//! `gpu` is an HTTP server behind its agent's proxy: its health check says
//! 503 while it loads the model (a tqdm-style progress bar, redrawn with
//! `\r`) and 200 after, which is when its agent records it ready. Each
//! `POST /generate` prints JSON lines (`request_id`, `status`, fields) and
//! answers; what goes wrong depends on what the request asks, as it would:
//! a prompt longer than the text encoder takes fails with a Python-style
//! traceback and a 500, and a batch larger than the GPU holds prints CUDA's
//! out-of-memory traceback, then falls back to host memory until the
//! kernel's OOM killer ends the worker (see [`super::memory`]).
//! `crash-on-import` dies in its first second, before it could be ready.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Json;
use clap::{Args, ValueEnum};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Args, Debug)]
pub struct DemoWorkerArgs {
    #[arg(value_enum)]
    kind: WorkerKind,
    /// The port the `gpu` worker serves HTTP on (loopback).
    #[arg(long, default_value_t = 8000)]
    port: u16,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum WorkerKind {
    /// Loads a model, then serves `POST /generate`.
    Gpu,
    /// Crashes while importing its dependencies.
    CrashOnImport,
}

/// The most tokens the (pretend) text encoder takes, as CLIP's 77.
pub const MAX_PROMPT_TOKENS: usize = 77;
/// The largest batch the (pretend) GPU holds.
pub const MAX_BATCH: u32 = 4;
/// How long one (pretend) denoising step takes.
const STEP_TIME: Duration = Duration::from_millis(60);

/// Whether `n` is a multiple of `k` (`u64::is_multiple_of` is newer than
/// the workspace's Rust, 1.85).
#[allow(clippy::manual_is_multiple_of)]
pub fn every(n: u64, k: u64) -> bool {
    n % k == 0
}

/// What a client asks of `POST /generate`.
#[derive(Debug, Deserialize, serde::Serialize)]
pub struct Generate {
    pub prompt: String,
    #[serde(default = "four")]
    pub steps: u32,
    #[serde(default = "one")]
    pub batch: u32,
}

fn four() -> u32 {
    4
}

fn one() -> u32 {
    1
}

pub async fn run(args: DemoWorkerArgs) -> anyhow::Result<u8> {
    match args.kind {
        WorkerKind::Gpu => gpu_worker(args.port).await,
        WorkerKind::CrashOnImport => crash_on_import(),
    }
}

struct Worker {
    loaded: AtomicBool,
    served: AtomicU64,
}

/// A model server: answers its health check at once (503 while loading),
/// loads the weights with a progress bar, then serves.
async fn gpu_worker(port: u16) -> anyhow::Result<u8> {
    eprintln!("INFO | worker starting: cuda 12.4, driver 550.54.15, 1x NVIDIA A100-SXM4-80GB");
    let worker = Arc::new(Worker {
        loaded: AtomicBool::new(false),
        served: AtomicU64::new(0),
    });
    let app = axum::Router::new()
        .route("/health", get(health))
        .route("/generate", post(generate))
        .with_state(worker.clone());
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    load_model().await;
    tell_ready().await;
    worker.loaded.store(true, Ordering::Release);
    server.await??;
    Ok(0)
}

/// Prints what loading a diffusers pipeline prints, the progress bar
/// redrawn in place as tqdm does.
async fn load_model() {
    let started = Instant::now();
    println!("Loading model stabilityai/sdxl-turbo (fp16) from /runpod-volume/models");
    const PARTS: usize = 7;
    for part in 0..=PARTS {
        let filled = "█".repeat(part * 10 / PARTS);
        let elapsed = started.elapsed().as_secs_f64();
        let rate = if elapsed > 0.0 {
            part as f64 / elapsed
        } else {
            0.0
        };
        eprint!(
            "\rLoading pipeline components...: {:>3}%|{filled:<10}| {part}/{PARTS} [00:0{}<00:00, {rate:.2}it/s]",
            part * 100 / PARTS,
            elapsed as u64,
        );
        if part < PARTS {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
    eprintln!();
    println!(
        "{}",
        json!({
            "level": "info",
            "message": format!("model loaded in {:.1}s", started.elapsed().as_secs_f64()),
            "vram_gb": 9.8,
            "dtype": "float16",
        })
    );
    println!("--- Starting Serverless Worker |  Version 1.7.0 ---");
}

/// Tells the agent, through its control socket, that the model is loaded,
/// and waits for its answer: the runner is then ready (with the reason "the
/// worker said so"), before the health check says so too, so no client's
/// request can make it ready first.
async fn tell_ready() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let Some(path) = std::env::var_os("TAILWATER_CONTROL") else {
        return;
    };
    let Ok(mut control) = tokio::net::UnixStream::connect(path).await else {
        eprintln!("WARNING: cannot reach the agent's control socket");
        return;
    };
    let mut answer = String::new();
    if control.write_all(b"{\"ready\":true}\n").await.is_ok() {
        let _ = BufReader::new(control).read_line(&mut answer).await;
    }
}

async fn health(State(worker): State<Arc<Worker>>) -> (StatusCode, Json<Value>) {
    if worker.loaded.load(Ordering::Acquire) {
        (StatusCode::OK, Json(json!({ "status": "ready" })))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "loading" })),
        )
    }
}

/// One JSON line on stdout, as a Python worker's JSON logger writes it.
fn log(level: &str, request: &str, message: &str, fields: Value) {
    let mut line = json!({ "level": level, "request_id": request, "message": message });
    if let (Some(line), Value::Object(fields)) = (line.as_object_mut(), fields) {
        line.extend(fields);
    }
    println!("{line}");
}

async fn generate(
    State(worker): State<Arc<Worker>>,
    headers: HeaderMap,
    Json(ask): Json<Generate>,
) -> (StatusCode, Json<Value>) {
    let started = Instant::now();
    // The agent's proxy gives every request an id.
    let request = headers
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    if !worker.loaded.load(Ordering::Acquire) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "the model is still loading" })),
        );
    }
    let tokens = ask.prompt.split_whitespace().count();
    log(
        "info",
        &request,
        "Started.",
        json!({ "prompt_tokens": tokens, "batch": ask.batch }),
    );
    log(
        "debug",
        &request,
        &format!("generating 1024x1024, {} steps", ask.steps),
        json!({ "steps": ask.steps }),
    );
    let served = worker.served.fetch_add(1, Ordering::Relaxed) + 1;
    if every(served, 5) {
        eprintln!(
            "WARNING: vram usage at {}% ({:.1}/80.0 GiB); consider a smaller batch size",
            88 + served % 8,
            80.0 * (88 + served % 8) as f64 / 100.0
        );
    }
    if tokens > MAX_PROMPT_TOKENS {
        let error = format!(
            "ValueError: prompt has {tokens} tokens, more than the {MAX_PROMPT_TOKENS} the text encoder takes"
        );
        for line in prompt_traceback() {
            eprintln!("{line}");
        }
        eprintln!("{error}");
        log(
            "error",
            &request,
            &format!("Failed: {error}"),
            json!({ "status": 500, "error": "ValueError" }),
        );
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "request_id": request, "error": error })),
        );
    }
    if ask.batch > MAX_BATCH {
        for line in cuda_oom_traceback(ask.batch) {
            eprintln!("{line}");
        }
        log(
            "warning",
            &request,
            &format!(
                "CUDA OOM with a batch of {}: retrying with the model offloaded to CPU memory",
                ask.batch
            ),
            json!({ "batch": ask.batch }),
        );
        tokio::task::spawn_blocking(super::memory::exhaust_host_memory)
            .await
            .ok();
        unreachable!("the worker is killed before it gets here");
    }
    tokio::time::sleep(STEP_TIME * ask.steps.min(50)).await;
    let took = started.elapsed().as_millis() as u64;
    log(
        "info",
        &request,
        "Finished.",
        json!({ "status": 200, "duration_ms": took }),
    );
    (
        StatusCode::OK,
        Json(json!({
            "request_id": request,
            "images": [format!("s3://demo-outputs/{request}.png")],
        })),
    )
}

/// What diffusers raises for a prompt that is too long (abridged).
fn prompt_traceback() -> [&'static str; 7] {
    [
        "Traceback (most recent call last):",
        "  File \"/app/handler.py\", line 52, in handler",
        "    image = pipe(prompt=job[\"prompt\"], num_inference_steps=steps).images[0]",
        "  File \"/usr/local/lib/python3.11/site-packages/diffusers/pipelines/stable_diffusion_xl/pipeline_stable_diffusion_xl.py\", line 1013, in __call__",
        "    self.check_inputs(",
        "  File \"/usr/local/lib/python3.11/site-packages/diffusers/pipelines/stable_diffusion_xl/pipeline_stable_diffusion_xl.py\", line 571, in check_inputs",
        "    raise ValueError(",
    ]
}

/// What torch raises when a batch does not fit on the GPU.
fn cuda_oom_traceback(batch: u32) -> Vec<String> {
    vec![
        "Traceback (most recent call last):".into(),
        "  File \"/app/handler.py\", line 52, in handler".into(),
        "    image = pipe(prompt=job[\"prompt\"], num_inference_steps=steps).images[0]".into(),
        "  File \"/usr/local/lib/python3.11/site-packages/torch/utils/_contextlib.py\", line 115, in decorate_context".into(),
        "    return func(*args, **kwargs)".into(),
        format!(
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate {:.2} GiB. GPU 0 has a total capacity of 79.15 GiB of which 1.12 GiB is free.",
            2.5 * batch as f64
        ),
    ]
}

/// A worker whose dependency is missing: it dies in its first second with a
/// Python traceback, before it could ever report ready.
fn crash_on_import() -> anyhow::Result<u8> {
    println!("Starting worker for openai/whisper-large-v3");
    std::thread::sleep(Duration::from_millis(300));
    for line in CRASH_TRACEBACK {
        eprintln!("{line}");
    }
    std::process::exit(1)
}

const CRASH_TRACEBACK: [&str; 8] = [
    "Traceback (most recent call last):",
    "  File \"/app/handler.py\", line 4, in <module>",
    "    from faster_whisper import WhisperModel",
    "  File \"/usr/local/lib/python3.11/site-packages/faster_whisper/__init__.py\", line 1, in <module>",
    "    from faster_whisper.audio import decode_audio",
    "  File \"/usr/local/lib/python3.11/site-packages/faster_whisper/audio.py\", line 7, in <module>",
    "    import av",
    "ModuleNotFoundError: No module named 'av'",
];
