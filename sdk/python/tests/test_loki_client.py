"""The real python-logging-loki handler pushing to `POST /loki/api/v1/push`
(JSON, the token as basic auth's password, as it sends it): what was stored
is read back field by field through the server's API.

Not the SDK's own code: these tests share its end-to-end harness (a real
`tailwater server` on a free port, see test_e2e.py)."""

from __future__ import annotations

import logging

import logging_loki

from test_e2e import TOKEN, Server, server, wait_for  # noqa: F401  (the fixture)


def test_python_logging_loki_pushes_lines_that_read_back_field_by_field(server: Server) -> None:
    handler = logging_loki.LokiHandler(
        url=f"http://127.0.0.1:{server.port}/loki/api/v1/push",
        tags={"app": "loki-app", "runner": "py-1", "env": "prod"},
        auth=("any-user", TOKEN),
        version="1",
    )
    logger = logging.getLogger("loki.test")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        logger.warning("disk nearly full", extra={"tags": {"disk": "sda"}})
        logger.error("model failed to load")
    finally:
        logger.removeHandler(handler)
        handler.close()

    records = wait_for("two records", lambda: (lambda r: r if len(r) == 2 else None)(server.logs(app="loki-app")))
    full, failed = records
    for record in records:
        assert record["runner"] == "py-1"
        assert record["boot"].startswith("loki-")
        assert record["fields"]["env"] == "prod"
        assert record["fields"]["logger"] == "loki.test"
    assert (full["message"], full["level"], full["fields"]["disk"]) == ("disk nearly full", "warn", "sda")
    assert (failed["message"], failed["level"]) == ("model failed to load", "error")


def test_a_refused_push_raises_in_the_handler_and_stores_nothing(server: Server) -> None:
    handler = logging_loki.LokiHandler(
        url=f"http://127.0.0.1:{server.port}/loki/api/v1/push",
        tags={"app": "loki-refused"},
        auth=("any-user", "tw_not_a_token"),
        version="1",
    )
    failures = []
    handler.handleError = lambda record: failures.append(record)  # type: ignore[method-assign]
    logger = logging.getLogger("loki.refused")
    logger.addHandler(handler)
    try:
        logger.error("never stored")
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert len(failures) == 1, "the handler saw the refusal"
    assert server.logs(app="loki-refused") == []
