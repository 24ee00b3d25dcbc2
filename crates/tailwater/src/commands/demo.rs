//! `tailwater demo`: a server on its embedded default and a few workers, each
//! under its own agent process, that log like GPU workers do. And the demo
//! workers themselves (`tailwater demo-worker`, hidden).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::thread::sleep;
use std::time::Duration;

use clap::{Args, ValueEnum};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Keep the demo's data here (default: a temporary directory, removed on
    /// exit).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Address the demo server listens on.
    #[arg(long, default_value = tailwater_server::DEFAULT_LISTEN)]
    listen: SocketAddr,
}

#[derive(Args, Debug)]
pub struct DemoWorkerArgs {
    #[arg(value_enum)]
    kind: WorkerKind,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum WorkerKind {
    /// Loads a model, then serves requests forever.
    Gpu,
    /// Crashes while importing its dependencies.
    CrashOnImport,
}

struct DemoWorker {
    app: &'static str,
    version: &'static str,
    runner: &'static str,
    kind: &'static str,
}

const WORKERS: [DemoWorker; 3] = [
    DemoWorker {
        app: "sdxl-turbo",
        version: "v3",
        runner: "r-gpu-a100-1",
        kind: "gpu",
    },
    DemoWorker {
        app: "sdxl-turbo",
        version: "v3",
        runner: "r-gpu-a100-2",
        kind: "gpu",
    },
    DemoWorker {
        app: "whisper-large",
        version: "v7",
        runner: "r-gpu-l4-1",
        kind: "crash-on-import",
    },
];

pub async fn run(args: DemoArgs) -> anyhow::Result<u8> {
    super::init_tracing("warn");
    let super::LocalServer {
        server,
        url,
        token,
        data,
        temporary,
    } = super::LocalServer::start(args.data.clone(), args.listen, "tailwater-demo-").await?;

    let exe = std::env::current_exe()?;
    let mut agents = Vec::new();
    for worker in &WORKERS {
        let agent = tokio::process::Command::new(&exe)
            .args([
                "run",
                "--quiet",
                "--server",
                &url,
                "--app",
                worker.app,
                "--version",
                worker.version,
            ])
            // The demo's own spools, beside its data: not the user's.
            .arg("--spool")
            .arg(data.join("spool"))
            .args(["--runner", worker.runner, "--"])
            .arg(&exe)
            .args(["demo-worker", worker.kind])
            .env("TAILWATER_TOKEN", &token)
            .stdin(Stdio::null())
            // Ctrl-C reaches the demo, which stops the agents in order.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()?;
        agents.push(agent);
    }

    let banner = format!(
        "tailwater demo is running: a server and {workers} workers under the agent

  server  {url}
  data    {data}
  token   {token}

try, in another terminal:
  export TAILWATER_SERVER={url} TAILWATER_TOKEN={token}
  tailwater logs --app sdxl-turbo -f             # live, across both runners
  tailwater logs --app whisper-large             # a worker that crashed while importing
  tailwater logs --app sdxl-turbo --level warn   # warnings and errors only
  tailwater logs --request req-a100-1-0003       # one request
  tailwater logs --stream system --json          # lifecycle events

press Ctrl-C to stop
",
        workers = WORKERS.len(),
        data = data.display(),
    );
    // A closed stdout must not stop the demo before it stops its workers.
    let _ = std::io::stdout().write_all(banner.as_bytes());

    tailwater_server::shutdown_signal().await;
    let _ = std::io::stdout().write_all("stopping the workers…\n".as_bytes());
    for agent in &agents {
        if let Some(pid) = agent.id() {
            // SAFETY: kill(2) on a child we started; no memory effects.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
    }
    for mut agent in agents {
        if tokio::time::timeout(Duration::from_secs(10), agent.wait())
            .await
            .is_err()
        {
            let _ = agent.kill().await;
        }
    }
    server.shutdown().await?;
    drop(temporary);
    Ok(0)
}

pub async fn worker(args: DemoWorkerArgs) -> anyhow::Result<u8> {
    match args.kind {
        WorkerKind::Gpu => gpu_worker(),
        WorkerKind::CrashOnImport => crash_on_import(),
    }
}

/// A model server: loads weights with a progress bar, then serves requests,
/// with a warning now and then and an occasional failed request.
fn gpu_worker() -> ! {
    let runner = std::env::var("TAILWATER_RUNNER").unwrap_or_else(|_| "r-local".into());
    let short = runner.trim_start_matches("r-gpu-").to_owned();
    eprintln!("INFO | worker starting: cuda 12.4, driver 550.54.15, 1x NVIDIA A100-SXM4-80GB");
    println!("Loading model stabilityai/sdxl-turbo (fp16) from /runpod-volume/models");
    for step in 0..=7 {
        let filled = "█".repeat(step * 10 / 7);
        eprintln!("Loading pipeline components...: {:>3}%|{filled:<10}| {step}/7 [00:0{}<00:0{}, 2.47it/s]", step * 100 / 7, step / 3, (7 - step) / 3);
        sleep(Duration::from_millis(150));
    }
    println!(
        r#"{{"level":"info","message":"model loaded in 1.2s","vram_gb":9.8,"dtype":"float16"}}"#
    );
    println!("--- Starting Serverless Worker |  Version 1.7.0 ---");
    for n in 1u64.. {
        let request = format!("req-{short}-{n:04}");
        println!(r#"{{"requestId": "{request}", "message": "Started.", "level": "INFO"}}"#);
        println!(
            r#"{{"requestId": "{request}", "level": "debug", "message": "generating 1024x1024, 4 steps", "prompt_tokens": {}}}"#,
            40 + n % 37
        );
        if n % 5 == 0 {
            eprintln!("WARNING: vram usage at 91% (72.8/80.0 GiB); consider a smaller batch size");
        }
        if n % 7 == 0 {
            eprintln!("Traceback (most recent call last):");
            eprintln!("  File \"/app/handler.py\", line 41, in handler");
            eprintln!("    image = pipe(prompt, num_inference_steps=steps).images[0]");
            eprintln!("  File \"/usr/local/lib/python3.11/site-packages/torch/utils/_contextlib.py\", line 115, in decorate_context");
            eprintln!("    return func(*args, **kwargs)");
            eprintln!("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.50 GiB. GPU 0 has a total capacity of 79.15 GiB of which 1.12 GiB is free.");
            println!(
                r#"{{"requestId": "{request}", "message": "Failed: CUDA out of memory", "level": "ERROR"}}"#
            );
        } else {
            println!(
                r#"{{"requestId": "{request}", "message": "Finished.", "level": "INFO", "duration_ms": {}}}"#,
                800 + (n * 37) % 400
            );
        }
        sleep(Duration::from_millis(1500));
    }
    unreachable!("serves forever")
}

/// A worker whose dependency is missing: it dies in its first second with a
/// Python traceback, before it could ever report ready.
fn crash_on_import() -> ! {
    println!("Starting worker for openai/whisper-large-v3");
    sleep(Duration::from_millis(300));
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
