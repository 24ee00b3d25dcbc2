//! The control socket: how a worker (or an SDK inside it) tells the agent
//! that it is ready and which request it is serving.
//!
//! A Unix stream socket, its path given to the worker in the environment as
//! `TAILWATER_CONTROL`. The protocol is line-delimited JSON: the worker
//! writes one object per line, the agent answers each with one line, in
//! order — `{"ok":true}` (plus details) or `{"ok":false,"error":"…"}`. A
//! connection may carry any number of commands, and any number of
//! connections may be open; a request started on one connection may be
//! ended on another.
//!
//! | command | meaning | answer |
//! |---|---|---|
//! | `{"ready":true}` | the worker is ready (recorded once per boot) | `{"ok":true}` |
//! | `{"request_start":"ID"}` | request `ID` is now in flight | `{"ok":true}` |
//! | `{"request_end":"ID","status":200}` | it ended; `status` optional | `{"ok":true,"duration_ms":N}` |
//! | `{"request_end":"ID","error":"…"}` | it failed | `{"ok":true,"duration_ms":N}` |
//! | `{"log":"text","request_id":"ID"}` | one line for request `ID`, however many are in flight; `log` may be a JSON object (a structured line), `stream` may be `"stderr"` | `{"ok":true}` |
//! | `{"agent_status":true}` | what shipping is doing now (`tailwater agent status`) | `{"ok":true,"status":{…}}`: [`AgentStatus`] |
//!
//! Request ids are strings (numbers are taken as their text) of 1 to 256
//! bytes. The answer to `request_start` and `request_end` comes once the
//! lines the worker wrote before the command are recorded, so a worker that
//! waits for the answer has its lines attributed exactly. Requests still in
//! flight when the worker exits end as `unfinished`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Map, Value};
use tailwater_model::Stream;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::line::Line;
use crate::requests::{Outcome, Ready, Requests, Via, Which};
#[cfg(doc)]
use crate::ship::AgentStatus;
use crate::ship::ShipStatus;

/// The longest command line accepted; a longer one is answered with an
/// error and the connection closed.
pub const MAX_COMMAND_BYTES: usize = 1024 * 1024;
/// The longest request id accepted.
pub const MAX_REQUEST_ID_BYTES: usize = 256;

/// A bound control socket, removed (with the directory made for it) when
/// dropped.
pub struct ControlSocket {
    path: PathBuf,
    /// The private directory made for the socket, when the path was not
    /// given.
    made_dir: Option<PathBuf>,
    listener: Option<UnixListener>,
}

impl ControlSocket {
    /// Binds at `path`, or in a new private directory (mode 700) under the
    /// temporary directory.
    pub fn bind(path: Option<&Path>) -> std::io::Result<ControlSocket> {
        let (path, made_dir) = match path {
            Some(path) => {
                // A socket left by an earlier run at the same path.
                if std::fs::symlink_metadata(path)
                    .is_ok_and(|meta| std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()))
                {
                    std::fs::remove_file(path)?;
                }
                (path.to_owned(), None)
            }
            None => {
                let dir = private_dir()?;
                (dir.join("control.sock"), Some(dir))
            }
        };
        let listener = UnixListener::bind(&path).inspect_err(|_| {
            if let Some(dir) = &made_dir {
                let _ = std::fs::remove_dir(dir);
            }
        })?;
        Ok(ControlSocket {
            path,
            made_dir,
            listener: Some(listener),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers commands in the background until the task is aborted;
    /// `status` is what shipping is doing.
    pub fn serve(
        &mut self,
        requests: Arc<Requests>,
        status: Arc<ShipStatus>,
    ) -> tokio::task::JoinHandle<()> {
        let listener = self.listener.take().expect("served once");
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                };
                let (requests, status) = (requests.clone(), status.clone());
                tokio::spawn(async move {
                    let _ = serve_connection(stream, &requests, &status).await;
                });
            }
        })
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(dir) = &self.made_dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// `$TMPDIR/tailwater-XXXXXXXX`, mode 700; `/tmp` when the temporary
/// directory's path is too long for a socket (108 bytes on Linux).
fn private_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let mut base = std::env::temp_dir();
    if base.as_os_str().len() > 64 {
        base = PathBuf::from("/tmp");
    }
    let dir = base.join(format!(
        "tailwater-{}",
        hex::encode(rand::random::<[u8; 4]>())
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

async fn serve_connection(
    stream: UnixStream,
    requests: &Requests,
    status: &ShipStatus,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_COMMAND_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .await?;
        if read == 0 {
            return Ok(());
        }
        if line.len() > MAX_COMMAND_BYTES {
            let answer = failure(format!(
                "a command is at most {MAX_COMMAND_BYTES} bytes; closing the connection"
            ));
            write.write_all(answer.as_bytes()).await?;
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        if text.trim().is_empty() {
            continue;
        }
        let answer = handle(text.trim(), requests, status).await;
        write.write_all(answer.as_bytes()).await?;
        write.flush().await?;
    }
}

/// Answers one command line (the answer ends with a newline).
pub async fn handle(line: &str, requests: &Requests, status: &ShipStatus) -> String {
    match command(line, requests, status).await {
        Ok(mut answer) => {
            answer.insert("ok".into(), true.into());
            format!("{}\n", Value::Object(answer))
        }
        Err(error) => failure(error),
    }
}

fn failure(error: String) -> String {
    format!("{}\n", json!({ "ok": false, "error": error }))
}

async fn command(
    line: &str,
    requests: &Requests,
    status: &ShipStatus,
) -> Result<Map<String, Value>, String> {
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(line) else {
        return Err("not a JSON object: send one object per line, such as {\"ready\":true}".into());
    };
    let verbs: Vec<&str> = [
        "ready",
        "request_start",
        "request_end",
        "log",
        "agent_status",
    ]
    .into_iter()
    .filter(|verb| object.contains_key(*verb))
    .collect();
    let verb = match verbs[..] {
        [verb] => verb,
        [] => return Err(
            "unknown command: expected one of ready, request_start, request_end, log, agent_status"
                .into(),
        ),
        _ => return Err(format!("one command per line, not {}", verbs.join(" and "))),
    };
    match verb {
        "ready" => {
            if object["ready"] != Value::Bool(true) {
                return Err("ready must be true".into());
            }
            requests.ready(Ready::Control);
            Ok(Map::new())
        }
        "request_start" => {
            let id = request_id(&object["request_start"], "request_start")?;
            requests
                .start(&id, Via::Control, Instant::now(), Map::new())
                .await;
            Ok(Map::new())
        }
        "request_end" => {
            let finished = Instant::now();
            let id = request_id(&object["request_end"], "request_end")?;
            let status = match object.get("status") {
                None | Some(Value::Null) => None,
                Some(value) => Some(
                    value
                        .as_u64()
                        .and_then(|status| u16::try_from(status).ok())
                        .filter(|status| (100..1000).contains(status))
                        .ok_or("status must be an HTTP status, a number from 100 to 999")?,
                ),
            };
            let outcome = match object.get("error") {
                None | Some(Value::Null) => Outcome::Completed,
                Some(Value::String(error)) => Outcome::Error(error.clone()),
                Some(other) => Outcome::Error(other.to_string()),
            };
            let duration = requests
                .end(Which::Id(&id), finished, status, outcome)
                .await
                .ok_or_else(|| format!("request {id} is not in flight"))?;
            let mut answer = Map::new();
            answer.insert("duration_ms".into(), (duration.as_millis() as u64).into());
            Ok(answer)
        }
        "log" => {
            let text = match &object["log"] {
                Value::String(text) => text.clone(),
                Value::Object(structured) => Value::Object(structured.clone()).to_string(),
                _ => return Err("log must be a string or a JSON object".into()),
            };
            let stream = match object.get("stream").and_then(Value::as_str) {
                None | Some("stdout") => Stream::Stdout,
                Some("stderr") => Stream::Stderr,
                Some(other) => return Err(format!("stream must be stdout or stderr, not {other}")),
            };
            let request = match object.get("request_id") {
                None | Some(Value::Null) => requests.sole_in_flight(),
                Some(value) => Some(request_id(value, "request_id")?.into()),
            };
            requests.recorder().record_line(Line {
                in_request: request.as_deref(),
                ..Line::new(stream, text.as_bytes())
            });
            Ok(Map::new())
        }
        "agent_status" => {
            if object["agent_status"] != Value::Bool(true) {
                return Err("agent_status must be true".into());
            }
            let now = status.snapshot(requests.recorder());
            let mut answer = Map::new();
            answer.insert(
                "status".into(),
                serde_json::to_value(now).map_err(|error| error.to_string())?,
            );
            Ok(answer)
        }
        _ => unreachable!("one of the verbs above"),
    }
}

fn request_id(value: &Value, key: &str) -> Result<String, String> {
    let id = match value {
        Value::String(id) => id.clone(),
        Value::Number(number) => number.to_string(),
        _ => return Err(format!("{key} must be a request id (a string)")),
    };
    if id.is_empty() || id.len() > MAX_REQUEST_ID_BYTES {
        return Err(format!(
            "{key} must be a request id of 1 to {MAX_REQUEST_ID_BYTES} bytes"
        ));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::OutputSync;
    use crate::recorder::{Options, Recorder};

    fn status() -> ShipStatus {
        ShipStatus::new(vec!["http://a".into()])
    }

    /// Requests over a recorder spooling into a temporary directory, kept as
    /// long as the requests are.
    fn requests() -> (Requests, tempfile::TempDir) {
        let spool = tempfile::tempdir().unwrap();
        let options = Options::new("app", spool.path(), 1 << 20);
        let requests = Requests::new(
            Arc::new(Recorder::open(&options).unwrap()),
            Arc::new(OutputSync::default()),
        );
        (requests, spool)
    }

    async fn answer(requests: &Requests, line: &str) -> Value {
        let answer = handle(line, requests, &status()).await;
        assert!(answer.ends_with('\n'), "one line: {answer:?}");
        serde_json::from_str(&answer).unwrap()
    }

    #[tokio::test]
    async fn commands_are_answered_in_one_line_each() {
        let (requests, _spool) = requests();
        assert_eq!(
            answer(&requests, r#"{"ready":true}"#).await,
            json!({"ok": true})
        );
        assert!(requests.is_ready());
        assert_eq!(
            answer(&requests, r#"{"request_start":"r1"}"#).await,
            json!({"ok": true})
        );
        assert_eq!(requests.sole_in_flight().as_deref(), Some("r1"));
        // A number is taken as its text.
        answer(&requests, r#"{"request_start":42}"#).await;
        assert_eq!(requests.sole_in_flight(), None, "two in flight");
        let ended = answer(&requests, r#"{"request_end":"42","status":204}"#).await;
        assert_eq!(ended["ok"], true);
        assert!(ended["duration_ms"].is_u64());
        assert_eq!(
            answer(
                &requests,
                r#"{"log":{"level":"warn","msg":"x"},"request_id":"r1"}"#
            )
            .await,
            json!({"ok": true})
        );
        assert_eq!(
            answer(&requests, r#"{"request_end":"r1","error":"boom"}"#).await["ok"],
            true
        );
        assert_eq!(requests.sole_in_flight(), None);
        let now = answer(&requests, r#"{"agent_status":true}"#).await;
        assert_eq!(now["ok"], true);
        assert_eq!(now["status"]["server"], "http://a");
        assert_eq!(now["status"]["app"], "app");
        assert_eq!(now["status"]["failovers"]["count"], 0);
        assert!(
            now["status"]["spool"]["lines"].as_u64().unwrap() > 0,
            "{now}"
        );
    }

    #[tokio::test]
    async fn what_cannot_be_done_is_said() {
        let (requests, _spool) = requests();
        for (line, error) in [
            ("not json", "not a JSON object"),
            ("[1]", "not a JSON object"),
            ("{}", "unknown command"),
            (
                r#"{"ready":true,"request_start":"a"}"#,
                "one command per line, not ready and request_start",
            ),
            (r#"{"ready":false}"#, "ready must be true"),
            (r#"{"agent_status":1}"#, "agent_status must be true"),
            (
                r#"{"request_start":""}"#,
                "request_start must be a request id of 1 to 256 bytes",
            ),
            (
                r#"{"request_start":{"id":1}}"#,
                "request_start must be a request id",
            ),
            (r#"{"request_end":"nope"}"#, "request nope is not in flight"),
            (
                r#"{"request_end":"r","status":"ok"}"#,
                "status must be an HTTP status",
            ),
            (r#"{"log":3}"#, "log must be a string or a JSON object"),
            (
                r#"{"log":"x","stream":"stdin"}"#,
                "stream must be stdout or stderr, not stdin",
            ),
        ] {
            let answer = answer(&requests, line).await;
            assert_eq!(answer["ok"], false, "{line}");
            let said = answer["error"].as_str().unwrap();
            assert!(said.starts_with(error), "{line}: {said}");
        }
        assert!(!requests.is_ready());
    }

    #[tokio::test]
    async fn the_socket_answers_in_order_and_goes_away() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let mut socket = ControlSocket::bind(Some(&path)).unwrap();
        let (requests, _spool) = requests();
        let task = socket.serve(Arc::new(requests), Arc::new(status()));
        let mut client = UnixStream::connect(&path).await.unwrap();
        client
            .write_all(b"{\"ready\":true}\n\n{\"request_end\":\"x\"}\n")
            .await
            .unwrap();
        let mut lines = BufReader::new(client).lines();
        assert_eq!(lines.next_line().await.unwrap().unwrap(), r#"{"ok":true}"#);
        let second = lines.next_line().await.unwrap().unwrap();
        assert!(second.contains("not in flight"), "{second}");
        task.abort();
        drop(socket);
        assert!(!path.exists());

        // Made in a private directory when no path is given.
        let socket = ControlSocket::bind(None).unwrap();
        let made = socket.path().parent().unwrap().to_owned();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&made).unwrap().permissions().mode() & 0o777,
            0o700
        );
        drop(socket);
        assert!(!made.exists());
    }
}
