"""The JSON lines popular Python loggers print, as they print them, under
the real agent (`tailwater run`): structlog's JSONRenderer (message under
`event`), loguru's `serialize=True` (everything under `record`, a logged
exception's traceback only in its text), python-json-logger (extra keys at
the top) and RunPod's logger. What the server stored is read back field by
field: level, message, request id, time and fields.

Not the SDK's own code: these share its end-to-end harness (test_e2e.py)."""

from __future__ import annotations

from typing import Any, Dict, List

from test_e2e import Server, server, wait_for  # noqa: F401  (the fixture)

WORKER = r"""
import logging, sys
import structlog
structlog.configure(processors=[structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso"), structlog.processors.JSONRenderer()])
structlog.get_logger().warning("disk nearly full", request_id="req-s", pct=91)

from loguru import logger
logger.remove()
logger.add(sys.stdout, serialize=True)
logger.bind(request_id="req-l").info("model loaded in {s}s", s=3)
try:
    1 / 0
except ZeroDivisionError:
    logger.bind(request_id="req-l").exception("inference failed")

from pythonjsonlogger import jsonlogger
handler = logging.StreamHandler(sys.stdout)
handler.setFormatter(jsonlogger.JsonFormatter("%(levelname)s %(name)s %(message)s"))
std = logging.getLogger("svc")
std.addHandler(handler)
std.setLevel(logging.INFO)
std.error("upstream timed out", extra={"request_id": "req-j", "upstream": "vae"})

import os
os.environ["RUNPOD_ENDPOINT_ID"] = "ep-1"  # deployed: RunPod's logger writes JSON
from runpod.serverless.modules.rp_logger import RunPodLogger
RunPodLogger().info("job picked up", "req-r")
sys.stdout.flush()
"""


def by_message(records: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    return {record["message"].split("\n")[0]: record for record in records if record["stream"] != "system"}


def test_popular_loggers_json_lines_are_read_field_by_field(server: Server) -> None:
    done = server.run("shapes", WORKER)
    assert done.returncode == 0, done.stderr
    wanted = ["disk nearly full", "model loaded in 3s", "inference failed", "upstream timed out", "job picked up"]
    records = wait_for(
        "every logger's line",
        lambda: (lambda seen: seen if all(m in seen for m in wanted) else None)(by_message(server.logs(app="shapes"))),
    )

    structlog_line = records["disk nearly full"]
    assert (structlog_line["level"], structlog_line["request_id"]) == ("warn", "req-s")
    assert structlog_line["fields"] == {"pct": 91}

    loaded = records["model loaded in 3s"]
    assert (loaded["level"], loaded["request_id"]) == ("info", "req-l")
    assert loaded["fields"]["s"] == 3
    assert loaded["fields"]["logger"] == "__main__"
    assert "record" not in loaded["fields"] and "text" not in loaded["fields"]

    failed = records["inference failed"]
    assert (failed["level"], failed["request_id"]) == ("error", "req-l")
    # The traceback, which loguru keeps only in its text, is in the message.
    assert "Traceback (most recent call last):" in failed["message"]
    assert failed["message"].rstrip().endswith("ZeroDivisionError: division by zero")
    assert failed["fields"]["exception"] == {"type": "ZeroDivisionError", "value": "division by zero"}

    timed_out = records["upstream timed out"]
    assert (timed_out["level"], timed_out["request_id"]) == ("error", "req-j")
    assert timed_out["fields"] == {"name": "svc", "upstream": "vae"}

    picked = records["job picked up"]
    assert (picked["level"], picked["request_id"]) == ("info", "req-r")
