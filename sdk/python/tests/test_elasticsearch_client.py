"""The official Elasticsearch Python client (elasticsearch 8, from PyPI)
speaking to tailwater's Elasticsearch API: `info()` (which checks the
`X-Elastic-Product` header), `helpers.bulk` to `POST /_bulk` and under the
`/es` prefix, with the token as an API key and as basic auth's password;
what was stored is read back field by field through the server's API.

Not the SDK's own code: these tests share its end-to-end harness (a real
`tailwater server` on a free port, see test_e2e.py)."""

from __future__ import annotations

import pytest
from elasticsearch import Elasticsearch, helpers

from test_e2e import TOKEN, Server, server, wait_for  # noqa: F401  (the fixture)


def test_helpers_bulk_stores_documents_that_read_back_field_by_field(server: Server) -> None:
    client = Elasticsearch(f"http://127.0.0.1:{server.port}", api_key=("tailwater", TOKEN))
    info = client.info()
    assert info["version"]["number"].startswith("8.")
    assert client.cluster.health()["status"] == "green"

    actions = [
        {
            "_index": "inference",
            "_id": "doc-1",
            "@timestamp": "2026-12-07T10:00:00.250Z",
            "message": "generated 4 images",
            "log": {"level": "info"},
            "service": {"name": "es-app", "version": "2.1"},
            "host": {"name": "gpu-3"},
            "request_id": "req-1",
            "images": 4,
        },
        {
            "_op_type": "create",
            "_index": "inference",
            "@timestamp": "2026-12-07T10:00:01Z",
            "message": "CUDA out of memory",
            "log.level": "error",
            "service.name": "es-app",
            "service.version": "2.1",
            "host": {"name": "gpu-3"},
        },
    ]
    ok, errors = helpers.bulk(client, actions)
    assert (ok, errors) == (2, [])

    records = wait_for("two records", lambda: (lambda r: r if len(r) == 2 else None)(server.logs(app="es-app")))
    generated, oom = records
    for record in records:
        assert (record["runner"], record["version"]) == ("gpu-3", "2.1")
        assert record["boot"].startswith("es-")
    assert (generated["message"], generated["level"], generated["request_id"]) == (
        "generated 4 images",
        "info",
        "req-1",
    )
    assert generated["ts"] == "2026-12-07T10:00:00.25Z"
    assert generated["fields"] == {"images": 4}
    assert (oom["message"], oom["level"], oom["ts"]) == ("CUDA out of memory", "error", "2026-12-07T10:00:01Z")

    # The same document sent again with its _id is stored once.
    ok, _ = helpers.bulk(client, actions[:1])
    assert ok == 1
    assert len(server.logs(app="es-app")) == 2


def test_under_the_es_prefix_with_basic_auth_and_item_errors(server: Server) -> None:
    client = Elasticsearch(f"http://127.0.0.1:{server.port}/es", basic_auth=("elastic", TOKEN))
    assert client.info()["tagline"] == "You Know, for Search"
    actions = [
        {"_index": "logs", "message": "kept", "app": "es-prefixed"},
        {"_op_type": "delete", "_index": "logs", "_id": "x"},
    ]
    with pytest.raises(helpers.BulkIndexError) as raised:
        helpers.bulk(client, actions)
    (failed,) = raised.value.errors
    assert failed["delete"]["status"] == 400
    assert failed["delete"]["error"]["type"] == "illegal_argument_exception"
    records = server.logs(app="es-prefixed")
    assert [record["message"] for record in records] == ["kept"]


def test_a_bad_token_is_refused_in_elasticsearchs_shape(server: Server) -> None:
    from elasticsearch import AuthenticationException

    client = Elasticsearch(f"http://127.0.0.1:{server.port}", bearer_auth="tw_not_a_token")
    with pytest.raises(AuthenticationException) as raised:
        helpers.bulk(client, [{"_index": "logs", "message": "never", "app": "es-refused"}])
    assert raised.value.meta.status == 401
    assert raised.value.body["error"]["type"] == "security_exception"
    assert server.logs(app="es-refused") == []
