"""RunPod: a drop-in `RunPodLogger`, and a handler wrapper that makes each
job a request.

`RunPodLogger` behaves as `runpod.serverless.modules.rp_logger.RunPodLogger`
(runpod 1.12): one instance per process; its level from `RUNPOD_LOG_LEVEL`,
else `RUNPOD_DEBUG_LEVEL`, else `DEBUG`, read at import; levels `NOTSET TRACE
DEBUG INFO WARN ERROR` (or their index); a message longer than 4096
characters keeps its first and last 2048 around a `...TRUNCATED N
CHARACTERS...` line; with `RUNPOD_ENDPOINT_ID` set, each line is
`{"requestId": …, "message": …, "level": …}`, else `LEVEL  | id | message`.

What it adds:

- `extra=` fields on every call, merged into the JSON line (RunPod's
  documentation promises them; its logger takes no such argument).
- A line with no id of its own carries the current request's
  (:func:`tailwater.current_request_id`).
- Under the tailwater agent (`TAILWATER_CONTROL` set) lines are JSON even
  without `RUNPOD_ENDPOINT_ID`, so their level, request and fields arrive.

Where it parts from RunPod's, on purpose: `tip` prints (at every level but
`NOTSET`) instead of raising `ValueError`, as runpod 1.12's does; an invalid
level in the environment is said on stderr and `DEBUG` used, where RunPod's
fails the import; `secret` masks secrets of 2 characters or fewer whole.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Mapping, Optional, TypeVar, Union

from . import _lines
from ._control import CONTROL_ENV, warn
from ._requests import check_id, current_request_id, wrap

#: The longest message printed whole.
MAX_MESSAGE_LENGTH = 4096
#: RunPod's levels, lowest first; a level may be given as its index.
LOG_LEVELS = ["NOTSET", "TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
#: Printed whatever the level (but NOTSET).
TIP = "TIP"

Level = Union[str, int]
Fields = Optional[Mapping[str, Any]]
F = TypeVar("F", bound=Callable[..., Any])


def _level_of(level: Level) -> str:
    """A level's name, from its name (any case) or index."""
    if isinstance(level, str) and level.upper() in LOG_LEVELS:
        return level.upper()
    if isinstance(level, int) and not isinstance(level, bool) and 0 <= level < len(LOG_LEVELS):
        return LOG_LEVELS[level]
    raise ValueError(f"Invalid debug level: {level}: use one of {', '.join(LOG_LEVELS)} or 0 to {len(LOG_LEVELS) - 1}")


def _level_from_environment() -> str:
    for name in ("RUNPOD_LOG_LEVEL", "RUNPOD_DEBUG_LEVEL"):
        value = os.environ.get(name)
        if value is None:
            continue
        try:
            return _level_of(value)
        except ValueError:
            warn(f"{name}={value!r} is not a level: use one of {', '.join(LOG_LEVELS)}; logging at DEBUG")
            return "DEBUG"
    return "DEBUG"


def _cut(message: str) -> str:
    if len(message) <= MAX_MESSAGE_LENGTH:
        return message
    half = MAX_MESSAGE_LENGTH // 2
    cut = len(message) - MAX_MESSAGE_LENGTH
    return f"{message[:half]}\n...TRUNCATED {cut} CHARACTERS...\n{message[-half:]}"


def _runpod_batch_id() -> Optional[str]:
    """The batch RunPod's own worker is serving, when runpod is loaded: its
    logger prefixes lines with it, and so does this one."""
    module = sys.modules.get("runpod.serverless.modules.rp_logger")
    variable = getattr(module, "_batch_id", None)
    try:
        return variable.get() if variable is not None else None
    except (AttributeError, LookupError, TypeError):
        return None


class RunPodLogger:
    """RunPod's logger, with `extra=` fields and request ids (see the
    module's documentation). One instance per process."""

    _instance: Optional[RunPodLogger] = None
    level: str = _level_from_environment()

    def __new__(cls) -> RunPodLogger:
        if RunPodLogger._instance is None:
            RunPodLogger._instance = object.__new__(cls)
        return RunPodLogger._instance

    def set_level(self, new_level: Level) -> None:
        """Sets the level, by name or index."""
        self.level = _level_of(new_level)
        self.info(f"Log level set to {self.level}")

    def log(
        self,
        message: Any,
        message_level: str = "INFO",
        job_id: Optional[str] = None,
        extra: Fields = None,
    ) -> None:
        """Prints `message` at `message_level` for `job_id` (else the current
        request), with `extra` fields."""
        if message_level != TIP and message_level not in LOG_LEVELS:
            raise ValueError(f"Invalid message level: {message_level!r}: use one of {', '.join(LOG_LEVELS)} or {TIP}")
        if self.level == "NOTSET":
            return
        if message_level != TIP and LOG_LEVELS.index(message_level) < LOG_LEVELS.index(self.level):
            return

        text = str(message)
        batch_id = _runpod_batch_id()
        if batch_id:
            text = f"[batchId={batch_id}] {text}"
        text = _cut(text)
        request_id = job_id if job_id is not None else current_request_id()

        if os.environ.get("RUNPOD_ENDPOINT_ID") or os.environ.get(CONTROL_ENV):
            line = {"requestId": request_id, "message": text, "level": message_level}
            _lines.write(_lines.dumps(_lines.add_fields(line, extra)))
            return
        if request_id:
            text = f"{request_id} | {text}"
        if extra:
            text = f"{text} {_lines.dumps(_lines.add_fields({}, extra))}"
        _lines.write(f"{message_level.ljust(7)}| {text}")

    def secret(self, secret_name: str, secret: Any) -> None:
        """Logs that a secret is set, showing only its first and last
        characters."""
        text = str(secret)
        shown = text[0] + "*" * (len(text) - 2) + text[-1] if len(text) > 2 else "*" * len(text)
        self.info(f"{secret_name}: {shown}")

    def trace(self, message: Any, request_id: Optional[str] = None, extra: Fields = None) -> None:
        self.log(message, "TRACE", request_id, extra)

    def debug(self, message: Any, request_id: Optional[str] = None, extra: Fields = None) -> None:
        self.log(message, "DEBUG", request_id, extra)

    def info(self, message: Any, request_id: Optional[str] = None, extra: Fields = None) -> None:
        self.log(message, "INFO", request_id, extra)

    def warn(self, message: Any, request_id: Optional[str] = None, extra: Fields = None) -> None:
        self.log(message, "WARN", request_id, extra)

    def error(self, message: Any, request_id: Optional[str] = None, extra: Fields = None) -> None:
        self.log(message, "ERROR", request_id, extra)

    def tip(self, message: Any, extra: Fields = None) -> None:
        """A tip: printed at every level but NOTSET."""
        self.log(message, TIP, None, extra)


def _job_id(job: Any, *args: Any, **kwargs: Any) -> Optional[str]:
    found = job.get("id") if isinstance(job, Mapping) else None
    try:
        return check_id(found)
    except ValueError as error:
        # The job runs whatever its id: only its marks need one.
        warn(f"a RunPod job's id (job['id']) is unusable ({error}); the job gets a new request id")
        return None


def _job_error(output: Any) -> Optional[str]:
    # RunPod fails a job whose handler returns (or a stream item that is)
    # a dict with a true `error`.
    if isinstance(output, Mapping) and output.get("error"):
        return str(output["error"])
    return None


def runpod_handler(handler: F) -> F:
    """Wraps a RunPod handler so each job is a request named by `job["id"]`:
    `runpod.serverless.start({"handler": tailwater.runpod_handler(handler)})`.
    Works for functions, coroutine functions, generators and async
    generators. A job fails when the handler raises, or returns (or yields)
    a dict with an `error`, as RunPod decides."""
    return wrap(handler, _job_id, _job_error)
