//! The LogQL parser checked against Grafana's own grammar: every query of
//! the corpus goes through `tailwater_model::logql::parse` and through
//! `@grafana/lezer-logql` (the parser of Grafana's Loki data source,
//! pinned in `tests/lezer/package.json`, installed by `scripts/test` with
//! `npm ci`), and the two must agree, but where the corpus says why not.

use std::io::Write;
use std::process::{Command, Stdio};

use tailwater_model::logql;

/// Who accepts a query.
enum Verdict {
    Both,
    Neither,
    /// Grafana's grammar accepts it, tailwater refuses it (by name): why.
    OnlyGrafana(&'static str),
}
use Verdict::*;

const UNSUPPORTED: &str = "valid LogQL that tailwater does not answer: refused with an error naming it, never read as something else";

const CORPUS: &[(&str, Verdict)] = &[
    // Grafana's "Save & test".
    ("vector(1)+vector(1)", Both),
    // Stream selectors.
    (r#"{app="sdxl"}"#, Both),
    (r#"{app="sdxl", runner!="pod-1", level=~"warn|error", stream!~"std.*"}"#, Both),
    (r#"{app="sdxl",}"#, Neither),
    (r#"{app=`raw\d`}"#, Both),
    (r#"{app="a\"b"}"#, Both),
    (r#"{app="sdxl"} # a comment"#, Both),
    (r#"{}"#, Neither),
    (r#"{app="sdxl""#, Neither),
    (r#"{app=sdxl}"#, Neither),
    (r#"{app=="sdxl"}"#, Neither),
    (r#"app="sdxl""#, Neither),
    (r#"{app="sdxl"} {app="x"}"#, Neither),
    (r#"{app=~".*"}"#, OnlyGrafana("Loki itself refuses a selector every stream matches (an empty-compatible matcher alone), with the same message")),
    (r#"{app!="sdxl"}"#, OnlyGrafana("Loki itself refuses a selector of negative matchers alone")),
    (r#"{app=~"("}"#, OnlyGrafana("the grammar does not compile regexes; an invalid one is an error")),
    // Line filters.
    (r#"{app="sdxl"} |= "cuda" != "debug" |~ "oom|OOM" !~ "(?i)retry""#, Both),
    (r#"{app="sdxl"} |= "a" or "b""#, Both),
    (r#"{app="sdxl"} |= """#, Both),
    (r#"{app="sdxl"} |= cuda"#, Neither),
    (r#"{app="sdxl"} |="#, Neither),
    (r#"{app="sdxl"} |= ip("10.0.0.1")"#, OnlyGrafana(UNSUPPORTED)),
    // Parsers and label filters.
    (r#"{app="sdxl"} | json"#, Both),
    (r#"{app="sdxl"} | logfmt"#, Both),
    (r#"{app="sdxl"} | json | status >= 500"#, Both),
    (r#"{app="sdxl"} | logfmt | duration > 250ms and size <= 10MB"#, Both),
    (r#"{app="sdxl"} | json | level="error" or level="fatal""#, Both),
    (r#"{app="sdxl"} | json | (status=200 or status=201), method="GET""#, Both),
    (r#"{app="sdxl"} | level=~"warn|error" | request_id="req-1""#, Both),
    (r#"{app="sdxl"} | __error__="""#, Both),
    (r#"{app="sdxl"} | json | status == 500"#, Both),
    (r#"{app="sdxl"} | json | status >"#, Neither),
    (r#"{app="sdxl"} | json | status > "x""#, Neither),
    (r#"{app="sdxl"} | json status="x""#, OnlyGrafana(UNSUPPORTED)),
    (r#"{app="sdxl"} | regexp "(?P<x>\\d+)""#, OnlyGrafana(UNSUPPORTED)),
    (r#"{app="sdxl"} | pattern "<ip> <_>""#, OnlyGrafana(UNSUPPORTED)),
    (r#"{app="sdxl"} | unpack"#, OnlyGrafana(UNSUPPORTED)),
    (r#"{app="sdxl"} | label_format x=y"#, OnlyGrafana(UNSUPPORTED)),
    (r#"{app="sdxl"} | decolorize"#, OnlyGrafana(UNSUPPORTED)),
    (r#"{app="sdxl"} | frobnicate"#, Neither),
    // drop, keep, line_format.
    (r#"{app="sdxl"} | drop __error__, __error_details__"#, Both),
    (r#"{app="sdxl"} | json | drop level="debug", method"#, Both),
    (r#"{app="sdxl"} | keep app, level"#, Both),
    (r#"{app="sdxl"} | line_format "{{.level}}: {{ .request_id }}""#, Both),
    (r#"{app="sdxl"} | line_format "{{.level | ToUpper}}""#, OnlyGrafana("line_format takes {{.label}} only; Go template functions are refused")),
    (r#"{app="sdxl"} | drop"#, Neither),
    // Metric queries.
    (r#"count_over_time({app="sdxl"}[5m])"#, Both),
    (r#"rate({app="sdxl"} |= "error" [1m])"#, Both),
    (r#"bytes_over_time({app="sdxl"}[1h])"#, Both),
    (r#"bytes_rate({app="sdxl"}[30s] offset 1h)"#, Both),
    (r#"count_over_time({app="sdxl"}[5m] | json)"#, Both),
    (r#"sum by (level, detected_level) (count_over_time({app="sdxl"} |= "oom" | drop __error__ [1m]))"#, Both),
    (r#"sum(count_over_time({app="sdxl"}[1m])) by (runner)"#, Both),
    (r#"count without (stream) (rate({app="sdxl"}[5m]))"#, Both),
    (r#"avg(rate({app="a"}[1m])) / max(rate({app="b"}[1m])) * 100"#, Both),
    (r#"min(count_over_time({app="a"}[1m])) - 1"#, Both),
    (r#"count_over_time({app="sdxl"})"#, Neither),
    (r#"count_over_time({app="sdxl"}[5x])"#, Neither),
    (r#"sum by (level) ({app="sdxl"})"#, Neither),
    (r#"rate({app="sdxl"}[5m]"#, Neither),
    (r#"topk(3, sum by (app) (rate({app=~".+"}[5m])))"#, OnlyGrafana(UNSUPPORTED)),
    (r#"avg_over_time({app="sdxl"} | json | unwrap latency [5m])"#, OnlyGrafana(UNSUPPORTED)),
    (r#"sum(rate({app="a"}[1m])) > 5"#, OnlyGrafana(UNSUPPORTED)),
    (r#"vector(1) + on (app) vector(1)"#, OnlyGrafana(UNSUPPORTED)),
    ("1 + 1", Both),
    ("-1", Both),
    ("", Neither),
];

fn grafana_accepts(queries: &[&str]) -> Vec<bool> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lezer");
    assert!(
        std::path::Path::new(dir)
            .join("node_modules/@grafana/lezer-logql")
            .exists(),
        "Grafana's grammar is not installed: run `npm ci` in {dir} (scripts/test does)"
    );
    let mut child = Command::new("node")
        .arg("check.mjs")
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node runs (scripts/test installs it)");
    let input = serde_json::to_vec(queries).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "check.mjs failed");
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn the_parser_agrees_with_grafanas_grammar_on_the_corpus() {
    let queries: Vec<&str> = CORPUS.iter().map(|(query, _)| *query).collect();
    let grafana = grafana_accepts(&queries);
    let mut wrong = Vec::new();
    for ((query, verdict), grafana) in CORPUS.iter().zip(grafana) {
        let ours = logql::parse(query, tailwater_model::DEFAULT_REGEX_SIZE_LIMIT);
        let expected = match verdict {
            Both => (true, true),
            Neither => (false, false),
            OnlyGrafana(_) => (true, false),
        };
        if (grafana, ours.is_ok()) != expected {
            let why = match verdict {
                OnlyGrafana(why) => {
                    format!(" (the corpus expects only grafana to accept it: {why})")
                }
                _ => String::new(),
            };
            wrong.push(format!(
                "{query:?}: grafana accepts {grafana}, tailwater {ours:?}{why}"
            ));
        }
        if let Err(error) = ours {
            assert!(
                error.chars().next().is_some_and(|c| !c.is_uppercase()),
                "errors are lowercase: {error}"
            );
        }
    }
    assert!(wrong.is_empty(), "disagreements:\n{}", wrong.join("\n"));
}
