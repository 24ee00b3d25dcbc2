//! A real shipper speaking Elasticsearch `_bulk`: rsyslog (Debian's
//! `rsyslog` and `rsyslog-elasticsearch`), tailing a worker's log file
//! with `imfile` and sending it with `omelasticsearch` (bulk mode, basic
//! auth with the token as the password, its default JSON template). It
//! probes `_cat/health` first, then posts bulks; what it sent is read back
//! field by field through the read API.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{call, stored, TOKEN};
use serde_json::json;

/// rsyslogd in the foreground; killed (and reaped) when dropped.
struct Rsyslogd(Child);

impl Drop for Rsyslogd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn rsyslog_omelasticsearch_ships_a_workers_file() {
    let (dir, server, _admin) = common::server(10_000).await;
    let body = json!({"scope": "ingest", "tenant": "default", "app": "gpu-worker"});
    let (status, created) = call(&server, "POST", "/v1/tokens", TOKEN, Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let token = created["token"].as_str().unwrap();

    let work = dir.path().join("rsyslog");
    std::fs::create_dir_all(&work).unwrap();
    let log = work.join("worker.log");
    std::fs::write(&log, "").unwrap();
    let port = server.addr.port();
    let config = format!(
        r#"global(workDirectory="{work}")
module(load="imfile")
module(load="omelasticsearch")
input(type="imfile" file="{log}" tag="worker" severity="error" ruleset="ship")
ruleset(name="ship") {{
  action(type="omelasticsearch" server="127.0.0.1" serverport="{port}"
         searchIndex="worker-logs" bulkmode="on" esVersion.major="8"
         uid="rsyslog" pwd="{token}"
         action.resumeRetryCount="-1" action.resumeInterval="1")
}}
"#,
        work = work.display(),
        log = log.display(),
    );
    let conf = work.join("rsyslog.conf");
    std::fs::write(&conf, config).unwrap();
    let check = Command::new("rsyslogd")
        .args(["-N1", "-f"])
        .arg(&conf)
        .output()
        .expect("rsyslogd is installed (scripts/test installs rsyslog and rsyslog-elasticsearch)");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let _rsyslogd = Rsyslogd(
        Command::new("rsyslogd")
            .args(["-n", "-f"])
            .arg(&conf)
            .arg("-i")
            .arg(work.join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );

    let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    writeln!(file, "model loaded in 3.2s").unwrap();
    writeln!(
        file,
        r#"{{"level":"warn","msg":"vram 91% used","request_id":"req-7","gpu":0}}"#
    )
    .unwrap();
    file.flush().unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    let records = loop {
        let records = stored(&server, "gpu-worker").await;
        if records.len() >= 2 {
            break records;
        }
        assert!(
            Instant::now() < deadline,
            "rsyslog never shipped both lines: {records:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let [loaded, vram] = &records[..] else {
        panic!("{records:#?}")
    };
    let host = hostname();
    let day = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    for record in [loaded, vram] {
        // omelasticsearch's template: fromhost is the runner, timereported
        // the time; facility and timegenerated stay fields.
        assert_eq!(record["runner"], host, "{record}");
        assert_eq!(record["boot"], format!("es-{day}"));
        assert_eq!(record["fields"]["facility"], "local0", "{record}");
        assert!(record["fields"]["timegenerated"].is_string(), "{record}");
        let age = jiff::Timestamp::now()
            - record["ts"]
                .as_str()
                .unwrap()
                .parse::<jiff::Timestamp>()
                .unwrap();
        assert!(age.get_seconds().abs() < 120, "{record}");
    }
    // imfile's severity (error) is the level of a plain line...
    assert_eq!(
        (&loaded["message"], &loaded["level"]),
        (&json!("model loaded in 3.2s"), &json!("error"))
    );
    // ... the template's priority wins over the line's own level; the
    // line's request id and fields are read from it.
    assert_eq!(
        (
            &vram["message"],
            &vram["request_id"],
            &vram["fields"]["gpu"]
        ),
        (&json!("vram 91% used"), &json!("req-7"), &json!(0))
    );
}

fn hostname() -> String {
    let output = Command::new("hostname").output().unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}
