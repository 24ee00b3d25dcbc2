use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

/// `tailwater demo`: the workers' logs reach `tailwater logs`, including the
/// whole traceback and the exit code of the worker that crashed importing.
#[test]
fn demo_workers_logs_include_the_import_crash_with_traceback_and_exit_code() {
    let mut demo = Command::new(binary())
        .args(["demo", "--listen", &format!("127.0.0.1:{ANY_PORT}")])
        .env("TAILWATER_BOOTSTRAP_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let port = announced_port(demo.stdout.take().expect("piped"));
    let server = DemoServer { port };

    let mut crashed = Vec::new();
    wait_for(
        "the crashed worker's exit record",
        Duration::from_secs(30),
        || {
            crashed = server.logs(&["--app", "whisper-large"]);
            crashed.iter().any(|r| r["fields"]["event"] == "exit")
        },
    );
    let lines = messages(&crashed);
    let traceback = [
        "Traceback (most recent call last):",
        "  File \"/app/handler.py\", line 4, in <module>",
        "    from faster_whisper import WhisperModel",
        "  File \"/usr/local/lib/python3.11/site-packages/faster_whisper/__init__.py\", line 1, in <module>",
        "    from faster_whisper.audio import decode_audio",
        "  File \"/usr/local/lib/python3.11/site-packages/faster_whisper/audio.py\", line 7, in <module>",
        "    import av",
        "ModuleNotFoundError: No module named 'av'",
    ];
    let whole = traceback.join("\n");
    let at = lines
        .iter()
        .position(|l| *l == whole)
        .expect("the whole traceback is one record, in order");
    assert_eq!(crashed[at]["level"], "error");
    let exit = crashed.last().unwrap();
    assert_eq!(exit["stream"], "system");
    assert_eq!(exit["fields"]["exit_code"], 1);
    assert_eq!(exit["level"], "error");
    assert_eq!(crashed.first().unwrap()["fields"]["event"], "start");

    assert!(crashed
        .iter()
        .all(|r| r["runner"] == "gpu-l4-1" && r["version"] == "v7"));

    // The GPU workers load their model and serve requests through their
    // agents, the worker's lines between the agent's start and end.
    let mut served = Vec::new();
    wait_for(
        "a GPU worker's finished request",
        Duration::from_secs(30),
        || {
            served = server.logs(&["--app", "sdxl-turbo", "--request", "req-a100-1-0001"]);
            served.iter().any(|r| r["fields"]["event"] == "request_end")
        },
    );
    assert_eq!(
        messages(&served)[1..4],
        ["Started.", "generating 1024x1024, 4 steps", "Finished."]
    );
    assert_eq!(served[0]["fields"]["event"], "request_start");
    assert_eq!(served[2]["level"], "debug");
    assert_eq!(served[4]["fields"]["status"], 200);
    let mut loading = Vec::new();
    wait_for(
        "both GPU runners' model loaded line",
        Duration::from_secs(30),
        || {
            loading = server.logs(&["--app", "sdxl-turbo", "--grep", "model loaded"]);
            let runners: std::collections::BTreeSet<_> = loading
                .iter()
                .map(|r| r["runner"].as_str().unwrap_or_default().to_owned())
                .collect();
            runners.len() == 2
        },
    );
    assert_eq!(loading[0]["fields"]["vram_gb"], 9.8);

    // SIGTERM stops the demo cleanly.
    // SAFETY: kill(2) on our own child process.
    unsafe { libc::kill(demo.id() as libc::pid_t, libc::SIGTERM) };
    let status = demo.wait().unwrap();
    assert!(status.success(), "demo exit status: {status:?}");
}

struct DemoServer {
    port: u16,
}

impl DemoServer {
    fn logs(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let output = Command::new(binary())
            .args(
                [
                    &[
                        "logs",
                        "--json",
                        "-n",
                        "10000",
                        "--server",
                        &format!("http://127.0.0.1:{}", self.port),
                        "--token",
                        TOKEN,
                    ],
                    args,
                ]
                .concat(),
            )
            .output()
            .unwrap();
        if !output.status.success() {
            return Vec::new(); // not up yet
        }
        json_lines(&output.stdout)
    }
}
