"""tailwater: request-attributed logs for workers run under the tailwater
agent (`tailwater run`).

- :func:`request` marks a request (context manager and decorator); lines
  written inside carry its id, and the agent records its start and end.
- :func:`ready` tells the agent the worker is ready.
- :class:`RunPodLogger` is RunPod's logger with `extra=` fields and request
  ids; :func:`runpod_handler` makes each RunPod job a request.
- :class:`JsonHandler`, :class:`JsonFormatter`, :class:`RequestIdFilter`
  (Python's `logging`), :func:`structlog_processor`, :func:`loguru_patcher`
  and :func:`loguru_sink` stamp the current request id on log lines.

Not under an agent, marks are silent no-ops and logging works as usual.
"""

from ._integrations import loguru_patcher, loguru_sink, structlog_processor
from ._logging import JsonFormatter, JsonHandler, RequestIdFilter
from ._requests import Request, current_request_id, ready, request
from ._runpod import RunPodLogger, runpod_handler

__all__ = [
    "JsonFormatter",
    "JsonHandler",
    "Request",
    "RequestIdFilter",
    "RunPodLogger",
    "current_request_id",
    "loguru_patcher",
    "loguru_sink",
    "ready",
    "request",
    "runpod_handler",
    "structlog_processor",
]
