"""ClickHouse, in process through chdb, as a baseline of the bench's count
and read rows (crates/bench/src/clickhouse.rs starts it; scripts/bench-setup
installs chdb, pinned, in the bench's venv).

Loads the records the bench ingested (JSON lines: app, runner, ts in ns,
level, request_id, message) into a MergeTree table with the schema a
ClickHouse engineer would give logs, merges it to rest, then answers one
query a line on stdin with one line on stdout: {"count": first cell of the
answer, or rows read when the query ends in FORMAT Null}. Every query runs
with max_threads = 1. A query that fails answers {"error": "..."}.
"""

import json
import sys
import time

from chdb import session

SCHEMA = """
CREATE TABLE logs (
    app LowCardinality(String),
    runner LowCardinality(String),
    ts DateTime64(9) CODEC(Delta, ZSTD),
    level LowCardinality(String),
    request_id String CODEC(ZSTD(3)),
    message String CODEC(ZSTD(3)),
    INDEX message_words message TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 1,
    INDEX request_ids request_id TYPE bloom_filter(0.01) GRANULARITY 1
) ENGINE = MergeTree ORDER BY (app, runner, ts)
"""

COLUMNS = "app String, runner String, ts Int64, level String, request_id String, message String"


def main():
    records, directory = sys.argv[1], sys.argv[2]
    db = session.Session(directory)
    db.query("CREATE DATABASE IF NOT EXISTS bench")
    db.query("USE bench")
    db.query(SCHEMA)
    started = time.perf_counter()
    db.query(
        "INSERT INTO logs SELECT app, runner, fromUnixTimestamp64Nano(ts), level, request_id, message "
        f"FROM file('{records}', 'JSONEachRow', '{COLUMNS}')"
    )
    db.query("OPTIMIZE TABLE logs FINAL")
    loaded = time.perf_counter() - started
    stored = db.query(
        "SELECT sum(bytes_on_disk) FROM system.parts WHERE database = 'bench' AND table = 'logs' AND active",
        "CSV",
    ).bytes().decode().strip()
    print(json.dumps({"ready": True, "load_seconds": loaded, "stored_bytes": int(stored or 0)}), flush=True)
    for line in sys.stdin:
        sql = line.strip()
        if not sql:
            continue
        try:
            answer = db.query(f"{sql} SETTINGS max_threads = 1", "CSV")
            text = answer.bytes().decode().strip()
            if text:
                count = int(text.splitlines()[0].split(",")[0])
            else:
                count = answer.rows_read()
            print(json.dumps({"count": count}), flush=True)
        except Exception as error:  # noqa: BLE001: said to the bench, which says it
            print(json.dumps({"error": str(error)}), flush=True)


if __name__ == "__main__":
    main()
