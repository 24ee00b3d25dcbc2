"""Python's `logging`: stamp records with the current request id, and write
them as JSON lines the agent parses.

- :class:`RequestIdFilter` sets `record.request_id` (for any formatter:
  `%(request_id)s`, or python-json-logger, which writes it as a key the agent
  reads).
- :class:`JsonFormatter` writes `{"time", "level", "msg", "request_id",
  "logger", …extra}` and the traceback as `exception`.
- :class:`JsonHandler` is a stream handler (stdout by default) with both.
"""

from __future__ import annotations

import datetime
import logging
import sys
from typing import Any, Dict, Optional, TextIO

from . import _lines
from ._requests import current_request_id

# What every LogRecord has: anything else on a record came from `extra=`.
_STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "request_id",
}


class RequestIdFilter(logging.Filter):
    """Sets `record.request_id` to the current request's id (`None` outside
    one), unless the call gave one (`extra={"request_id": …}`). Lets every
    record through. Attach it to a handler: handlers' filters run in the
    thread that logs, where the request is current."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = current_request_id()
        return True


def _iso_time(created: float) -> str:
    moment = datetime.datetime.fromtimestamp(created, tz=datetime.timezone.utc)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line for the agent: its time (RFC 3339,
    UTC), level, message, request id (the record's, else the current one),
    logger name, the fields given with `extra=`, and `exception` (the
    traceback) or `stack` when the record has them."""

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None)
        if request_id is None:
            request_id = current_request_id()
        line: Dict[str, Any] = {
            "time": _iso_time(record.created),
            "level": _lines.level_name(record.levelno),
            "msg": record.getMessage(),
        }
        if request_id is not None:
            line["request_id"] = str(request_id)
        line["logger"] = record.name
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        extra = {
            key: value
            for key, value in record.__dict__.items()
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_")
        }
        return _lines.dumps(_lines.add_fields(line, extra))


class JsonHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler writing :class:`JsonFormatter` lines, stamped by
    :class:`RequestIdFilter`, to `stream` (stdout by default, looked up at
    each record so a replaced `sys.stdout` is followed)."""

    def __init__(self, stream: Optional[TextIO] = None, level: int = logging.NOTSET) -> None:
        super().__init__(stream)
        self._own_stream = stream
        self.setLevel(level)
        self.setFormatter(JsonFormatter())
        self.addFilter(RequestIdFilter())

    def emit(self, record: logging.LogRecord) -> None:
        if self._own_stream is None:
            self.stream = sys.stdout
        # One write of the line and its newline, then a flush: whole lines,
        # on the pipe before the request's end is marked.
        super().emit(record)
