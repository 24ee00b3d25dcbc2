"""structlog and loguru: the current request id on their events. Neither
library is imported here; these are plain functions they call.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any, Dict, MutableMapping

from . import _lines
from ._requests import current_request_id


def structlog_processor(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor that adds `request_id` (the current request's)
    unless the event has one. Put it before the renderer:
    `structlog.configure(processors=[tailwater.structlog_processor, …,
    structlog.processors.JSONRenderer()])`."""
    request_id = current_request_id()
    if request_id is not None:
        event_dict.setdefault("request_id", request_id)
    return event_dict


def loguru_patcher(record: Dict[str, Any]) -> None:
    """A loguru patcher that puts the current request's id in
    `record["extra"]["request_id"]` (unless bound already):
    `logger.configure(patcher=tailwater.loguru_patcher)`; then
    `{extra[request_id]}` in a format, or :func:`loguru_sink`."""
    request_id = current_request_id()
    if request_id is not None:
        record["extra"].setdefault("request_id", request_id)


def loguru_sink(message: Any) -> None:
    """A loguru sink writing each record to stdout as one JSON line the
    agent parses: time, level, message, request id (bound, else the current
    one), logger name, the bound `extra` fields, and `exception` (the
    traceback) when there is one. `logger.add(tailwater.loguru_sink)`."""
    record = message.record
    extra = dict(record["extra"])
    request_id = extra.pop("request_id", None)
    if request_id is None:
        request_id = current_request_id()
    line: Dict[str, Any] = {
        "time": record["time"].isoformat(),
        "level": _lines.level_name(record["level"].no),
        "msg": record["message"],
    }
    if request_id is not None:
        line["request_id"] = str(request_id)
    line["logger"] = record["name"]
    if record["exception"] is not None:
        kind, value, trace = record["exception"]
        line["exception"] = "".join(traceback.format_exception(kind, value, trace)).rstrip("\n")
    _lines.write(_lines.dumps(_lines.add_fields(line, extra)), sys.stdout)
