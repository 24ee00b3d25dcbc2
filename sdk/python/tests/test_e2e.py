"""End to end: the real `tailwater` binary (a server on a free loopback port,
then workers under `tailwater run`) and Python workers using the SDK, with
what was stored read back through the server's HTTP API.

The binary is `$TAILWATER_BIN` (scripts/test passes it), else the
workspace's `target/debug/tailwater`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest

TOKEN = "tw_sdk_e2e_test_token_0123456789"
REPOSITORY = Path(__file__).resolve().parents[3]


def binary() -> str:
    path = os.environ.get("TAILWATER_BIN") or str(REPOSITORY / "target" / "debug" / "tailwater")
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"no tailwater binary at {path}: run `cargo build -p tailwater`, or set TAILWATER_BIN to the binary's path"
        )
    return path


def wait_for(what: str, condition: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class Server:
    """`tailwater server` on a port the kernel picks, over a temporary data
    directory; stopped at the end of the test."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.process = subprocess.Popen(
            [binary(), "server", "--listen", "127.0.0.1:0", "--data", str(directory / "data")],
            env={**os.environ, "TAILWATER_BOOTSTRAP_TOKEN": TOKEN, "TAILWATER_LOG": "warn"},
            stdout=subprocess.PIPE,
            text=True,
        )
        announced: List[int] = []
        ready = threading.Event()

        def read() -> None:
            # Reads every line, so the server never blocks on a full pipe.
            assert self.process.stdout is not None
            for line in self.process.stdout:
                if not announced and "listening on http://" in line:
                    address = line.split("listening on http://", 1)[1].split()[0]
                    announced.append(int(address.rsplit(":", 1)[1].rstrip("/")))
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(20):
            self.process.kill()
            pytest.fail("the server did not announce `listening on http://…` within 20 s")
        self.port = announced[0]

    def get(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode(params)
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}?{query}",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return json.load(answer)
        except urllib.error.HTTPError as error:
            pytest.fail(f"GET {path} {params} answered {error.code}: {error.read().decode()}")

    def logs(self, **params: Any) -> List[Dict[str, Any]]:
        return self.get("/v1/logs", direction="forward", limit=10000, **params)["records"]

    def run(self, app: str, script: str, *args: str) -> subprocess.CompletedProcess:
        """Runs `python -c script args…` under `tailwater run` until it exits."""
        env = {
            **os.environ,
            "TAILWATER_SERVER": f"http://127.0.0.1:{self.port}",
            "TAILWATER_TOKEN": TOKEN,
            "TAILWATER_SPOOL": str(self.directory / "spool"),
            "TAILWATER_CONFIG": str(self.directory / "config.toml"),
        }
        env.pop("TAILWATER_CONTROL", None)
        env.pop("RUNPOD_ENDPOINT_ID", None)
        command = [binary(), "run", "--app", app, "--runner", f"{app}-runner", "--"]
        return subprocess.run(
            [*command, sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=120
        )

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def server() -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="tw-sdk-e2e-") as directory:
        running = Server(Path(directory))
        try:
            yield running
        finally:
            running.stop()


def by_message(records: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    return {record["message"]: record for record in records if record["stream"] != "system"}


def settled(server: Server, request_id: str) -> Dict[str, Any]:
    """The request's info, once it has ended."""
    return wait_for(
        f"request {request_id} to end",
        lambda: (lambda info: info if info["state"] != "in_flight" else None)(
            server.get(f"/v1/requests/{urllib.parse.quote(request_id)}")
        ),
    )


# Two requests in two threads, then two in two asyncio tasks, each pair in
# flight together while every line is written. One of each pair fails.
CONCURRENT_WORKER = r"""
import asyncio, logging, sys, threading
import tailwater

log = tailwater.RunPodLogger()
std = logging.getLogger("worker")
std.addHandler(tailwater.JsonHandler())
std.setLevel(logging.INFO)
std.propagate = False
assert tailwater.ready()

both_in = threading.Barrier(2)
def serve(job_id, fail):
    with tailwater.request(job_id):
        both_in.wait(20)
        log.info(job_id + ": runpod line", extra={"job": job_id, "steps": 30, "message": "kept"})
        std.info("%s: logging line", job_id, extra={"job": job_id})
        # One write: print() writes the newline apart, and another
        # thread's line could come between.
        sys.stdout.write(job_id + ": plain print, not attributed\n")
        sys.stdout.flush()
        both_in.wait(20)
        if fail:
            raise RuntimeError(job_id + " exploded")

def thread(job_id, fail):
    try:
        serve(job_id, fail)
    except RuntimeError:
        pass

threads = [threading.Thread(target=thread, args=("thread-ok", False)),
           threading.Thread(target=thread, args=("thread-bad", True))]
for t in threads: t.start()
for t in threads: t.join()

@tailwater.request(lambda job_id, fail, arrived, both: job_id)
async def handle(job_id, fail, arrived, both):
    arrived.append(job_id)
    if len(arrived) == 2:
        both.set()
    await both.wait()
    log.warn(job_id + ": async runpod line", extra={"job": job_id})
    await asyncio.to_thread(std.info, "%s: from a thread of the task", job_id)
    await asyncio.sleep(0.05)
    if fail:
        raise ValueError("bad input for " + job_id)
    return job_id

async def main():
    arrived, both = [], asyncio.Event()
    results = await asyncio.gather(
        handle("task-ok", False, arrived, both), handle("task-bad", True, arrived, both),
        return_exceptions=True)
    assert results[0] == "task-ok" and isinstance(results[1], ValueError), results

asyncio.run(main())
log.info("all done")
"""


def test_concurrent_requests_get_exactly_their_lines(server: Server) -> None:
    done = server.run("sdk", CONCURRENT_WORKER)
    assert done.returncode == 0, done.stderr
    assert "WARNING: tailwater" not in done.stderr, done.stderr
    wait_for("the last line", lambda: by_message(server.logs(app="sdk")).get("all done"))

    expected = {
        "thread-ok": ["runpod line", "logging line"],
        "thread-bad": ["runpod line", "logging line"],
        "task-ok": ["async runpod line", "from a thread of the task"],
        "task-bad": ["async runpod line", "from a thread of the task"],
    }
    for request_id, kinds in expected.items():
        records = server.logs(app="sdk", request=request_id)
        assert all(record["request_id"] == request_id for record in records), records
        lines = by_message(records)
        assert sorted(lines) == sorted(f"{request_id}: {kind}" for kind in kinds), lines
        first = lines[f"{request_id}: {kinds[0]}"]
        assert first["fields"]["job"] == request_id
        assert first["level"] == ("info" if request_id.startswith("thread") else "warn")
        second = lines[f"{request_id}: {kinds[1]}"]
        assert second["level"] == "info" and second["fields"]["logger"] == "worker"

    # RunPodLogger's extra fields arrive as fields; a key the agent would
    # read as the message is kept under another name.
    runpod_line = by_message(server.logs(app="sdk", request="thread-ok"))["thread-ok: runpod line"]
    assert runpod_line["fields"] == {"job": "thread-ok", "steps": 30, "extra_message": "kept"}

    # Written while both were in flight, with no id: the runner's, not mixed.
    everything = by_message(server.logs(app="sdk"))
    for request_id in ("thread-ok", "thread-bad"):
        assert everything[f"{request_id}: plain print, not attributed"]["request_id"] is None

    info = {request_id: settled(server, request_id) for request_id in expected}
    assert info["thread-ok"]["state"] == "completed" and info["thread-ok"]["error"] is None
    assert info["thread-bad"]["state"] == "error"
    assert info["thread-bad"]["error"] == "RuntimeError: thread-bad exploded"
    assert info["task-ok"]["state"] == "completed"
    assert info["task-bad"]["state"] == "error"
    assert info["task-bad"]["error"] == "ValueError: bad input for task-bad"


RUNPOD_WORKER = r"""
import runpod, tailwater

log = tailwater.RunPodLogger()

@tailwater.runpod_handler
def handler(job):
    log.info("generating", extra={"prompt": job["input"]["prompt"], "steps": 4})
    if job["input"].get("fail"):
        raise RuntimeError("the model fell over")
    return {"image": "cat.png"}

runpod.serverless.start({"handler": handler})
"""


@pytest.mark.parametrize("fail", [False, True])
def test_runpod_jobs_are_requests(server: Server, fail: bool) -> None:
    job = {"id": "rp-job-1", "input": {"prompt": "a cat", "fail": fail}}
    done = server.run("rp", RUNPOD_WORKER, "--test_input", json.dumps(job))
    assert done.returncode == (1 if fail else 0), done.stdout + done.stderr

    info = settled(server, "rp-job-1")
    records = server.logs(app="rp", request="rp-job-1")
    generating = by_message(records)["generating"]
    assert generating["fields"] == {"prompt": "a cat", "steps": 4}
    assert generating["level"] == "info"
    if fail:
        assert info["state"] == "error"
        assert info["error"] == "RuntimeError: the model fell over"
    else:
        assert info["state"] == "completed" and info["error"] is None


# runpod's own logger, without the SDK, as a worker run outside RunPod
# prints it: `LEVEL  | job id | message` text lines, not JSON.
RUNPOD_TEXT_WORKER = r"""
import runpod

log = runpod.RunPodLogger()
log.info("worker up")

def handler(job):
    log.info("generating", request_id=job["id"])
    log.warn("queue | long", job["id"])
    log.debug("step | 3")
    return {"image": "cat.png"}

runpod.serverless.start({"handler": handler})
"""


def test_runpods_text_lines_give_their_level_and_job(server: Server) -> None:
    job = {"id": "rp-text-1", "input": {}}
    done = server.run("rptext", RUNPOD_TEXT_WORKER, "--test_input", json.dumps(job))
    assert done.returncode == 0, done.stdout + done.stderr
    expected = {
        # message: (level, request id)
        "worker up": ("info", None),
        "Started.": ("info", "rp-text-1"),
        "generating": ("info", "rp-text-1"),
        "queue | long": ("warn", "rp-text-1"),
        "step | 3": ("debug", None),
    }
    lines = wait_for(
        "runpod's lines",
        lambda: (lambda lines: lines if set(expected) <= set(lines) else None)(
            by_message(server.logs(app="rptext"))
        ),
    )
    for message, (level, request_id) in expected.items():
        record = lines[message]
        assert (record["level"], record["request_id"]) == (level, request_id), record
        assert record["fields"] == {}, record
    # runpod's own lines of the job are found by its id.
    job_lines = by_message(server.logs(app="rptext", request="rp-text-1"))
    assert {"Started.", "generating", "queue | long"} <= set(job_lines), job_lines
