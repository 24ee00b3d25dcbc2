"""What a JSON line for the agent looks like: the one home of the keys the
agent's line parser (`crates/model/src/parse.rs`) reads, and of turning
fields into JSON without failing the log call.

The parser takes the level from `level` (or `severity`, `levelname`,
`lvl`), the message from `msg` (or `message`), the request from
`request_id` (or `requestId`, `requestID`) and the time from `ts` (or
`time`, `timestamp`); every other key is a field. So a field must never use
one of those keys, or it would change what the line says: such a field is
written as `extra_<key>`.
"""

from __future__ import annotations

import json
import math
import sys
import threading
from typing import Any, Dict, Mapping, Optional, TextIO

#: Keys the agent reads as the line's level, message, request id or time.
PARSED_KEYS = frozenset(
    {
        "level", "severity", "levelname", "lvl",
        "msg", "message",
        "request_id", "requestId", "requestID",
        "ts", "time", "timestamp",
    }
)  # fmt: skip

_write_lock = threading.Lock()


def add_fields(line: Dict[str, Any], fields: Optional[Mapping[Any, Any]]) -> Dict[str, Any]:
    """Adds `fields` to `line` (in place, and returns it). A key the line
    already has, or one the parser reads, gets an `extra_` prefix."""
    if fields is None:
        return line
    if not isinstance(fields, Mapping):
        raise TypeError(f"extra fields are a mapping of names to values, such as a dict, not {type(fields).__name__}")
    for key, value in fields.items():
        name = str(key)
        while name in PARSED_KEYS or name in line:
            name = "extra_" + name
        line[name] = value
    return line


def level_name(levelno: int) -> str:
    """A numeric level (Python logging's scale: 10 debug … 50 critical) as a
    name the parser knows; levels between take the one below."""
    if levelno >= 50:
        return "critical"
    if levelno >= 40:
        return "error"
    if levelno >= 30:
        return "warning"
    if levelno >= 20:
        return "info"
    if levelno >= 10:
        return "debug"
    return "trace"


def dumps(line: Mapping[str, Any]) -> str:
    """`line` as one line of JSON, whatever its values: objects JSON does
    not know are written as their `str`, and non-finite floats (which
    `json` would write as invalid JSON) and cycles as text."""
    try:
        return json.dumps(line, default=str, allow_nan=False)
    except (ValueError, TypeError, RecursionError):
        return json.dumps(_plain(line, 0), default=str, allow_nan=False)


def _plain(value: Any, depth: int) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if depth > 20:
        return repr(value)
    if isinstance(value, Mapping):
        return {str(key): _plain(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item, depth + 1) for item in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def write(text: str, stream: Optional[TextIO] = None) -> None:
    """Writes `text` and a newline to `stream` (stdout when `None`) in one
    write, and flushes it: lines of several threads never interleave, and a
    request's lines are written before its end is marked."""
    target = sys.stdout if stream is None else stream
    with _write_lock:
        target.write(text + "\n")
        target.flush()
