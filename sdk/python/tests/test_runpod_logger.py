"""tailwater.RunPodLogger against the real one (runpod's
`runpod.serverless.modules.rp_logger.RunPodLogger`): the same calls print
the same lines; then what it adds (extra fields, the current request id)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Callable, List

import pytest
from runpod.serverless.modules import rp_logger

import tailwater
from tailwater import _runpod

ours = tailwater.RunPodLogger()
theirs = rp_logger.RunPodLogger()

# A message of each length around the cut, with distinct start and end so a
# wrong cut shows.
LONG = {n: "<" + "a" * (n // 2 - 1) + "b" * (n - n // 2 - 1) + ">" for n in (4095, 4096, 4097, 5000, 100_000)}

Call = Callable[[Any], None]
CALLS: List[Callable[..., None]] = [
    lambda log: log.info("hello"),
    lambda log: log.debug("debugging", "job-1"),
    lambda log: log.trace("tracing", request_id="job-2"),
    lambda log: log.warn({"a": 1}),
    lambda log: log.error(ValueError("boom"), "job-3"),
    lambda log: log.info('quotes " and \\ and \u00e9 and \n newline'),
    lambda log: log.log("custom", "WARN", "job-4"),
    lambda log: log.log("at notset", "NOTSET"),
    lambda log: log.secret("API_KEY", "sk-0123456789"),
    lambda log: log.secret("PIN", 1234),
    lambda log: log.info(None),
    lambda log: log.info(""),
    *[lambda log, n=n: log.error(LONG[n], "job-long") for n in LONG],
]


def printed(capsys: pytest.CaptureFixture[str], logger: Any, call: Call) -> str:
    capsys.readouterr()
    call(logger)
    return capsys.readouterr().out


@pytest.fixture(params=["plain", "json"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both of RunPod's outputs: text locally, JSON on an endpoint."""
    if request.param == "json":
        monkeypatch.setenv("RUNPOD_ENDPOINT_ID", "endpoint-1")
    else:
        monkeypatch.delenv("RUNPOD_ENDPOINT_ID", raising=False)
    return str(request.param)


@pytest.mark.parametrize("level", ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "NOTSET", 0, 3, "info"])
def test_the_same_calls_print_the_same_lines(capsys: pytest.CaptureFixture[str], mode: str, level: Any) -> None:
    assert printed(capsys, ours, lambda log: log.set_level(level)) == printed(
        capsys, theirs, lambda log: log.set_level(level)
    )
    assert ours.level == theirs.level
    for index, call in enumerate(CALLS):
        expected = printed(capsys, theirs, call)
        assert printed(capsys, ours, call) == expected, f"call {index} at {level} ({mode})"


def test_long_messages_keep_their_start_and_end(capsys: pytest.CaptureFixture[str], mode: str) -> None:
    ours.set_level("DEBUG")
    out = printed(capsys, ours, lambda log: log.info(LONG[5000]))
    message = json.loads(out)["message"] if mode == "json" else out[len("INFO   | ") : -1]
    assert message.startswith("<" + "a" * 2047)
    assert "\n...TRUNCATED 904 CHARACTERS...\n" in message
    assert message.endswith("b" * 2047 + ">")
    assert len(message) == 4096 + len("\n...TRUNCATED 904 CHARACTERS...\n")


def test_levels_are_refused_as_runpod_refuses_them() -> None:
    for bad in ("LOUD", 6, -1, 2.0, None):
        with pytest.raises(ValueError) as found:
            theirs.set_level(bad)
        with pytest.raises(ValueError, match="Invalid debug level") as said:
            ours.set_level(bad)
        assert str(said.value).startswith(str(found.value))
    with pytest.raises(ValueError):
        theirs.log("x", "LOUD")
    with pytest.raises(ValueError, match="Invalid message level: 'LOUD': use one of NOTSET"):
        ours.log("x", "LOUD")


def test_one_instance_per_process() -> None:
    assert tailwater.RunPodLogger() is ours


def test_tip_prints_at_every_level_but_notset(capsys: pytest.CaptureFixture[str], mode: str) -> None:
    # runpod 1.12's tip() raises ValueError ('TIP' is not in its list of
    # levels); its code means to print tips whatever the level.
    with pytest.raises(ValueError):
        theirs.tip("x")
    ours.set_level("ERROR")
    out = printed(capsys, ours, lambda log: log.tip("use a GPU"))
    if mode == "json":
        assert json.loads(out) == {"requestId": None, "message": "use a GPU", "level": "TIP"}
    else:
        assert out == "TIP    | use a GPU\n"
    ours.set_level("NOTSET")
    assert printed(capsys, ours, lambda log: log.tip("x")) == ""


def test_extra_fields_are_fields_of_the_json_line(capsys: pytest.CaptureFixture[str], mode: str) -> None:
    ours.set_level("DEBUG")
    out = printed(
        capsys,
        ours,
        lambda log: log.info(
            "generated",
            "job-9",
            extra={"steps": 30, "model": {"name": "sdxl"}, "level": "x", "msg": "y", "when": object},
        ),
    )
    if mode == "plain":
        assert out.startswith("INFO   | job-9 | generated {")
        fields = json.loads(out[len("INFO   | job-9 | generated ") :])
        assert fields["steps"] == 30
        return
    line = json.loads(out)
    # RunPod's keys first and untouched; keys the agent would read as the
    # line's level or message are kept under another name.
    assert list(line)[:3] == ["requestId", "message", "level"]
    assert line == {
        "requestId": "job-9",
        "message": "generated",
        "level": "INFO",
        "steps": 30,
        "model": {"name": "sdxl"},
        "extra_level": "x",
        "extra_msg": "y",
        "when": str(object),
    }


def test_lines_carry_the_current_request(capsys: pytest.CaptureFixture[str], mode: str) -> None:
    ours.set_level("DEBUG")
    with tailwater.request("job-42"):
        inside = printed(capsys, ours, lambda log: log.info("inside"))
        named = printed(capsys, ours, lambda log: log.info("named", "other"))
    outside = printed(capsys, ours, lambda log: log.info("outside"))
    if mode == "json":
        assert json.loads(inside)["requestId"] == "job-42"
        assert json.loads(named)["requestId"] == "other"
        assert json.loads(outside)["requestId"] is None
    else:
        assert inside == "INFO   | job-42 | inside\n"
        assert named == "INFO   | other | named\n"
        assert outside == "INFO   | outside\n"


def test_under_the_agent_lines_are_json(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNPOD_ENDPOINT_ID", raising=False)
    monkeypatch.setenv("TAILWATER_CONTROL", "/nonexistent/control.sock")
    ours.set_level("DEBUG")
    out = printed(capsys, ours, lambda log: log.warn("careful", extra={"gpu": 0}))
    assert json.loads(out) == {"requestId": None, "message": "careful", "level": "WARN", "gpu": 0}


def test_runpod_batch_ids_prefix_lines_as_runpods_do(capsys: pytest.CaptureFixture[str], mode: str) -> None:
    ours.set_level("DEBUG")
    theirs.set_level("DEBUG")
    token = rp_logger._set_batch_id("batch-7")
    try:
        call: Call = lambda log: log.info("in a batch", "job-1")  # noqa: E731
        assert printed(capsys, ours, call) == printed(capsys, theirs, call)
        assert "[batchId=batch-7] in a batch" in printed(capsys, ours, call)
    finally:
        rp_logger._reset_batch_id(token)


def test_secrets_of_two_characters_or_fewer_are_masked_whole(capsys: pytest.CaptureFixture[str]) -> None:
    ours.set_level("DEBUG")
    assert printed(capsys, ours, lambda log: log.secret("K", "ab")).endswith("| K: **\n")
    assert printed(capsys, ours, lambda log: log.secret("K", "")).endswith("| K: \n")


@pytest.mark.parametrize(
    "environment, level",
    [
        ({}, "DEBUG"),
        ({"RUNPOD_DEBUG_LEVEL": "warn"}, "WARN"),
        ({"RUNPOD_LOG_LEVEL": "ERROR", "RUNPOD_DEBUG_LEVEL": "INFO"}, "ERROR"),
        ({"RUNPOD_LOG_LEVEL": "TRACE"}, "TRACE"),
    ],
)
def test_the_level_comes_from_the_environment_as_runpods_does(environment: dict, level: str) -> None:
    script = (
        "import tailwater; from runpod.serverless.modules import rp_logger as r;"
        "print(tailwater.RunPodLogger().level, r.RunPodLogger().level)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
    out = subprocess.run(
        [sys.executable, "-c", script], env={**env, **environment}, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == [level, level]


def test_a_bad_level_in_the_environment_is_said_not_fatal() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
    out = subprocess.run(
        [sys.executable, "-c", "import tailwater; print(tailwater.RunPodLogger().level)"],
        env={**env, "RUNPOD_LOG_LEVEL": "LOUD"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == "DEBUG\n"
    assert "RUNPOD_LOG_LEVEL='LOUD' is not a level: use one of NOTSET" in out.stderr


def test_the_cut_is_runpods() -> None:
    assert _runpod.MAX_MESSAGE_LENGTH == rp_logger.MAX_MESSAGE_LENGTH
    assert _runpod.LOG_LEVELS == rp_logger.LOG_LEVELS


def test_extra_fields_must_be_a_mapping() -> None:
    ours.set_level("DEBUG")
    with pytest.raises(TypeError, match="extra fields are a mapping of names to values, such as a dict, not list"):
        ours.info("x", extra=["steps", 30])  # type: ignore[arg-type]
