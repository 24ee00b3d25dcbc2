"""The current request id on lines of Python's logging (with tailwater's
formatter and with python-json-logger), structlog and loguru; and the JSON
lines themselves, in the keys the agent's parser reads."""

from __future__ import annotations

import io
import json
import logging
import math
from typing import Any, Dict, Iterator, List

import pytest
import structlog
from loguru import logger as loguru_logger
from pythonjsonlogger.json import JsonFormatter as PythonJsonFormatter

import tailwater


@pytest.fixture
def std_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("tailwater-tests")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger
    logger.handlers.clear()


def lines(text: str) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_json_handler_lines_carry_the_request(std_logger: logging.Logger, capsys: Any) -> None:
    std_logger.addHandler(tailwater.JsonHandler())
    std_logger.info("before")
    with tailwater.request("job-1"):
        std_logger.warning("inside %s", "job", extra={"steps": 30, "ts": "not the time"})
        std_logger.info("named", extra={"request_id": "other"})
    got = lines(capsys.readouterr().out)
    assert [line.get("request_id") for line in got] == [None, "job-1", "other"]
    inside = got[1]
    assert inside["level"] == "warning" and inside["msg"] == "inside job"
    assert inside["logger"] == "tailwater-tests"
    assert inside["steps"] == 30 and inside["extra_ts"] == "not the time"
    assert inside["time"].endswith("Z") and "T" in inside["time"]
    assert "request_id" not in got[0]


def test_levels_are_names_the_agent_reads(std_logger: logging.Logger, capsys: Any) -> None:
    std_logger.addHandler(tailwater.JsonHandler())
    std_logger.setLevel(1)
    for level in (5, logging.DEBUG, logging.INFO, 25, logging.WARNING, logging.ERROR, logging.CRITICAL):
        std_logger.log(level, "x")
    names = [line["level"] for line in lines(capsys.readouterr().out)]
    assert names == ["trace", "debug", "info", "info", "warning", "error", "critical"]


def test_exceptions_are_one_line_with_the_traceback(std_logger: logging.Logger, capsys: Any) -> None:
    std_logger.addHandler(tailwater.JsonHandler())
    try:
        raise RuntimeError("CUDA out of memory")
    except RuntimeError:
        std_logger.exception("generation failed")
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    line = json.loads(out)
    assert line["level"] == "error" and line["msg"] == "generation failed"
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert line["exception"].endswith("RuntimeError: CUDA out of memory")


def test_fields_json_cannot_hold_are_text(std_logger: logging.Logger, capsys: Any) -> None:
    std_logger.addHandler(tailwater.JsonHandler())
    looped: Dict[str, Any] = {}
    looped["self"] = looped
    std_logger.info("odd", extra={"nan": math.nan, "obj": object(), "loop": looped})
    line = json.loads(capsys.readouterr().out)  # strict JSON: no NaN
    assert line["nan"] == "nan" and line["obj"].startswith("<object object")
    assert line["msg"] == "odd"


def test_the_filter_serves_other_formatters(std_logger: logging.Logger) -> None:
    text, as_json = io.StringIO(), io.StringIO()
    plain = logging.StreamHandler(text)
    plain.setFormatter(logging.Formatter("%(request_id)s %(message)s"))
    plain.addFilter(tailwater.RequestIdFilter())
    # python-json-logger writes extra attributes as top-level keys, where
    # the agent reads `request_id`.
    other = logging.StreamHandler(as_json)
    other.setFormatter(PythonJsonFormatter("%(levelname)s %(message)s"))
    other.addFilter(tailwater.RequestIdFilter())
    std_logger.addHandler(plain)
    std_logger.addHandler(other)
    std_logger.info("outside")
    with tailwater.request("job-2"):
        std_logger.info("inside")
    assert text.getvalue() == "None outside\njob-2 inside\n"
    got = lines(as_json.getvalue())
    assert got[0]["request_id"] is None  # a null id: the agent drops it
    assert got[1] == {"levelname": "INFO", "message": "inside", "request_id": "job-2"}


def test_the_formatter_alone_reads_the_current_request(std_logger: logging.Logger) -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(tailwater.JsonFormatter())
    std_logger.addHandler(handler)
    with tailwater.request("job-3"):
        std_logger.info("x")
    assert json.loads(out.getvalue())["request_id"] == "job-3"


def test_structlog_events_carry_the_request(capsys: Any) -> None:
    structlog.configure(
        processors=[
            tailwater.structlog_processor,
            structlog.processors.add_log_level,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    try:
        log = structlog.get_logger()
        log.info("outside")
        with tailwater.request("job-4"):
            log.info("inside", steps=3)
            log.info("named", request_id="other")
    finally:
        structlog.reset_defaults()
    got = lines(capsys.readouterr().out)
    assert [line.get("request_id") for line in got] == [None, "job-4", "other"]
    assert got[1] == {"event": "inside", "steps": 3, "request_id": "job-4", "level": "info"}


@pytest.fixture
def loguru() -> Iterator[Any]:
    loguru_logger.remove()
    yield loguru_logger
    loguru_logger.remove()
    loguru_logger.configure(patcher=None)


def test_loguru_patcher_binds_the_request(loguru: Any) -> None:
    out = io.StringIO()
    loguru.configure(patcher=tailwater.loguru_patcher)
    loguru.add(out, format="{extra[request_id]} {message}", level="DEBUG")
    with tailwater.request("job-5"):
        loguru.info("inside")
        loguru.bind(request_id="bound").info("bound")
    assert out.getvalue() == "job-5 inside\nbound bound\n"


def test_loguru_sink_writes_agent_lines(loguru: Any, capsys: Any) -> None:
    loguru.add(tailwater.loguru_sink, level="TRACE")
    loguru.success("outside")
    with tailwater.request("job-6"):
        loguru.bind(model="sdxl", level="custom").warning("inside")
        try:
            _ = 1 / 0
        except ZeroDivisionError:
            loguru.exception("failed")
    got = lines(capsys.readouterr().out)
    assert got[0]["level"] == "info" and got[0]["msg"] == "outside" and "request_id" not in got[0]
    assert got[1]["request_id"] == "job-6" and got[1]["level"] == "warning"
    assert got[1]["model"] == "sdxl" and got[1]["extra_level"] == "custom"
    assert got[1]["logger"] == __name__
    assert got[2]["level"] == "error"
    assert got[2]["exception"].endswith("ZeroDivisionError: division by zero")
