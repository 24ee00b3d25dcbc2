"""The client side of the agent's control socket.

`tailwater run` gives the worker the path of a Unix socket in
`TAILWATER_CONTROL`. The protocol (documented at the top of the agent's
`crates/agent/src/control.rs`) is one JSON object per line, each answered
with one line, in order: `{"ok": true, ...}` or `{"ok": false, "error": ...}`.

One connection per process is shared by every thread, behind a lock held for
a whole round trip, so answers never cross. A connection that fails is
dropped and the next command opens a new one. After `os.fork` the child opens
its own: a socket shared with the parent would mix their answers.

Not under an agent (no `TAILWATER_CONTROL`), every command is a silent no-op:
the same code runs locally, in tests and on platforms without tailwater. Under
an agent, a socket that cannot be reached is said once on stderr (again only
after it has worked in between), and a command the agent refuses is said each
time; the worker itself never fails because of either.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from typing import Any, Dict, Optional

#: The environment variable that holds the control socket's path.
CONTROL_ENV = "TAILWATER_CONTROL"
#: The environment variable that overrides :data:`DEFAULT_TIMEOUT_SECONDS`.
TIMEOUT_ENV = "TAILWATER_CONTROL_TIMEOUT"
#: How long one round trip may take. The agent answers a request mark once
#: the lines written before it are recorded, which it waits for at most
#: 500 ms; anything much slower means the agent is stuck or gone.
DEFAULT_TIMEOUT_SECONDS = 5.0

Answer = Dict[str, Any]


def warn(message: str) -> None:
    """Says something on stderr, in the `WARNING:` shape the agent's line
    parser reads as a warning."""
    try:
        sys.stderr.write(f"WARNING: tailwater: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass  # stderr closed or gone: nothing to tell it with


def _timeout() -> float:
    text = os.environ.get(TIMEOUT_ENV)
    if not text:
        return DEFAULT_TIMEOUT_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        warn(f"{TIMEOUT_ENV} must be a number of seconds above 0, not {text!r}; using {DEFAULT_TIMEOUT_SECONDS}")
        return DEFAULT_TIMEOUT_SECONDS
    return value


class _Connection:
    """One connected socket and the reader of its answers."""

    def __init__(self, path: str, timeout: float) -> None:
        self.pid = os.getpid()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(path)
            self.reader = self.sock.makefile("rb")
        except BaseException:
            self.sock.close()
            raise

    def round_trip(self, command: Answer) -> Answer:
        line = json.dumps(command, separators=(",", ":")) + "\n"
        self.sock.sendall(line.encode("utf-8"))
        answer = self.reader.readline()
        if not answer.endswith(b"\n"):
            raise ConnectionError("the agent closed the control socket")
        parsed = json.loads(answer)
        if not isinstance(parsed, dict):
            raise ConnectionError(f"the agent answered {answer!r}, not an object")
        return parsed

    def close(self) -> None:
        try:
            self.reader.close()
        finally:
            self.sock.close()


class Control:
    """The process's link to the agent. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connection: Optional[_Connection] = None
        self._unreachable_said = False

    def _reset_after_fork(self) -> None:
        # The lock may have been held by a thread that does not exist in
        # the child, and the socket is the parent's.
        self._lock = threading.Lock()
        self._connection = None

    def send(self, command: Answer) -> Optional[Answer]:
        """Sends `command` and returns the agent's answer; `None` when not
        under an agent, or when the agent could not be reached (said once on
        stderr). A refusal (`"ok": false`) is said on stderr and returned."""
        path = os.environ.get(CONTROL_ENV)
        if not path:
            return None
        with self._lock:
            answer = self._send_locked(path, command)
        if answer is not None and answer.get("ok") is not True:
            verb = next(iter(command))
            warn(f"the agent refused {verb}: {answer.get('error', answer)}")
        return answer

    def _send_locked(self, path: str, command: Answer) -> Optional[Answer]:
        connection = self._connection
        if connection is not None and connection.pid != os.getpid():
            connection = self._connection = None
        reused = connection is not None
        for attempt in range(2):
            try:
                if connection is None:
                    connection = self._connection = _Connection(path, _timeout())
                answer = connection.round_trip(command)
                self._unreachable_said = False
                return answer
            except (OSError, ValueError) as error:
                # ValueError: an answer that is not JSON. Either way the
                # answers on this connection can no longer be matched to
                # commands: start again on a new one.
                if connection is not None:
                    connection.close()
                connection = self._connection = None
                # A kept connection may have gone stale (the agent closed
                # it): that, and only that, is worth one more try. A timeout
                # is not retried, as the agent may have acted on the command.
                stale = reused and attempt == 0 and not isinstance(error, socket.timeout)
                if stale:
                    continue
                if not self._unreachable_said:
                    self._unreachable_said = True
                    warn(
                        f"cannot reach the agent's control socket {path} ({error}); "
                        "lines are still captured, but requests and readiness are "
                        "not marked until it answers again"
                    )
                return None
            except BaseException:
                # Interrupted (KeyboardInterrupt, a signal handler's
                # exception), perhaps after sending: its answer would be read
                # as the next command's. Start again on a new connection.
                if connection is not None:
                    connection.close()
                self._connection = None
                raise
        return None


CONTROL = Control()
if hasattr(os, "register_at_fork"):
    # Looked up at the fork: whichever link the process has then.
    os.register_at_fork(after_in_child=lambda: CONTROL._reset_after_fork())
