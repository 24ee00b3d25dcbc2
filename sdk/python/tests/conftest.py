"""Shared fixtures: a stand-in for the agent's control socket, for the unit
tests of what the SDK sends (the end-to-end tests use the real agent)."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest

from tailwater import _control

Command = Dict[str, Any]


class FakeAgent:
    """Speaks the control protocol on a Unix socket: one JSON object per
    line, one answer line each. Keeps every command, in order, with the
    connection it came on. `answer` decides each answer (by default
    `{"ok": true}`, and a `duration_ms` for `request_end`)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.commands: List[Command] = []
        self.connections = 0
        self.answer: Callable[[Command], Optional[Command]] = self.default_answer
        self._lock = threading.Lock()
        self._open: List[socket.socket] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen(16)
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @staticmethod
    def default_answer(command: Command) -> Optional[Command]:
        if "request_end" in command:
            return {"ok": True, "duration_ms": 7}
        return {"ok": True}

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._open.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader:
            try:
                for line in reader:
                    command = json.loads(line)
                    with self._lock:
                        self.commands.append(command)
                    answer = self.answer(command)
                    if answer is None:  # hang up instead of answering
                        conn.shutdown(socket.SHUT_RDWR)
                        return
                    conn.sendall((json.dumps(answer) + "\n").encode())
            except OSError:
                return  # the client went away (it gave up waiting)

    def drop_connections(self) -> None:
        """Closes every open connection, as an agent going away would."""
        with self._lock:
            for conn in self._open:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._open.clear()

    def close(self) -> None:
        self._listener.close()
        self.drop_connections()

    def verbs(self) -> List[str]:
        return [next(iter(command)) + "=" + str(next(iter(command.values()))) for command in self.commands]


@pytest.fixture(autouse=True)
def fresh_control(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts with no agent and no connection kept from another."""
    monkeypatch.delenv(_control.CONTROL_ENV, raising=False)
    monkeypatch.delenv(_control.TIMEOUT_ENV, raising=False)
    monkeypatch.setattr(_control, "CONTROL", _control.Control())
    import tailwater._requests as requests_module

    monkeypatch.setattr(requests_module, "CONTROL", _control.CONTROL)
    yield


@pytest.fixture
def agent(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAgent]:
    """A stand-in agent, its socket in `TAILWATER_CONTROL`."""
    directory = tempfile.mkdtemp(prefix="tw-sdk-")
    fake = FakeAgent(os.path.join(directory, "control.sock"))
    monkeypatch.setenv(_control.CONTROL_ENV, fake.path)
    yield fake
    fake.close()
    os.unlink(fake.path)
    os.rmdir(directory)
