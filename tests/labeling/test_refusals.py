"""Malformed and hostile requests to the tablet app over real HTTP: a 4xx with a message, nothing written;
bodies over the limit refused before parsing; the unexpected answered with a bare 500 and a logged request id."""

from __future__ import annotations

import logging
import re
import uuid

import httpx
import pytest

from ript_robot.labeling.auth import CSRF_HEADER, SESSION_COOKIE
from ript_robot.labeling.routes import MAX_BODY_BYTES
from ript_robot.labeling.server import LabelServer


def label_rows(served) -> int:
    return sum(len(r.labels) for r in served.store.refresh().index.episodes.values())


def test_malformed_inputs_are_4xx_with_a_message_and_write_nothing(store_served) -> None:
    pairing = store_served.app.pairing
    token, session = pairing.pair(pairing.code, "tablet-1", client="in-process")
    episode_id = store_served.store.refresh().records()[0].episode_id
    unknown = uuid.uuid4().hex
    as_json = {"Content-Type": "application/json"}
    csrf = {CSRF_HEADER: session.csrf, **as_json}
    label = f"/api/episodes/{episode_id}/label"
    refused = [  # (method, path, headers, body, status, words the message has)
        ("POST", label, {CSRF_HEADER: "é".encode() + session.csrf.encode()}, b"{}", 403, CSRF_HEADER),
        ("POST", label, {**csrf, "Cookie": b"ript_session=\xc3\xa9\xff"}, b"{}", 401, "not paired"),
        ("POST", label, csrf, b'{"success": true, "revision": 0, "suggestion": NaN}', 422, "suggestion"),
        ("POST", label, csrf, b'{"success": true, "revision": 0, "suggestion": 1e999}', 422, "finite"),
        ("POST", label, csrf, b'{"success": true, "revision": "0"}', 422, "revision"),
        ("POST", label, csrf, b'{"success": 1, "revision": 0}', 422, "success"),
        ("POST", label, csrf, b'{"success": true, "revision": 1' + b"0" * 5000 + b"}", 400, "body"),
        ("POST", label, csrf, b"[" * 10_000, 400, "body"),
        ("POST", label, csrf, b'{"success": true, "revision": 0', 422, "not JSON"),
        ("POST", f"/api/episodes/{unknown}/label", csrf, b'{"success": true, "revision": 0}', 404, unknown),
        ("POST", "/api/episodes/%2e%2e/undo", csrf, b'{"revision": 0}', 422, "episode_id"),
        ("GET", f"/api/episodes/{unknown}/frames/0.jpg", {}, None, 404, unknown),
        ("GET", f"/api/episodes/{episode_id}/frames/4.jpg", {}, None, 422, "index"),
        ("GET", f"/api/episodes/{'a' * 129}/frames/0.jpg", {}, None, 422, "episode_id"),
        ("GET", "/api/contexts/workcell%2F0%00/reference.jpg", {}, None, 422, "context_id"),
        ("GET", "/api/contexts/no-such-context/reference.jpg", {}, None, 404, "no-such-context"),
        ("GET", "/static/" + "a" * 300, {}, None, 422, "name"),
        ("GET", "/static/secrets.txt", {}, None, 404, "secrets.txt"),
        ("POST", "/api/pair", as_json, '{"code": "١٢٣٤٥٦", "name": "t"}'.encode(), 400, "six digits"),
        ("POST", "/api/pair", as_json, b'{"code": "123456", "name": "\\u001b[31m"}', 400, "printable"),
        ("POST", "/api/pair", as_json, b'{"code": "123456", "name": "\\ud800"}', 422, "name"),
        ("PUT", label, csrf, b"{}", 405, "Not Allowed"),
        ("GET", "/api/nothing", {}, None, 404, "Not Found"),
    ]
    before = label_rows(store_served)
    with httpx.Client(base_url=store_served.url, cookies={SESSION_COOKIE: token}) as client:
        for method, path, headers, body, status, words in refused:
            reply = client.request(method, path, headers=headers, content=body)
            assert reply.status_code == status and words in reply.json()["error"], (path, reply.text)
            assert store_served.store.uri not in reply.text  # no path of the workstation's in an answer
    assert label_rows(store_served) == before


def test_a_body_over_the_limit_is_refused_before_it_is_parsed_declared_or_chunked(store_served) -> None:
    with httpx.Client(base_url=store_served.url) as client:
        at_limit = b'{"code": "000000", "name": "t"}'.ljust(MAX_BODY_BYTES)
        assert client.post("/api/pair", content=at_limit, headers={"Content-Type": "application/json"}).status_code in (
            403,
            429,
        )  # parsed: a wrong code
        over = client.post("/api/pair", content=b"{" * (MAX_BODY_BYTES + 1))  # not JSON, but never parsed
        assert over.status_code == 413 and str(MAX_BODY_BYTES) in over.json()["error"]
        chunks = (b"x" * 4096 for _ in range(8))  # no Content-Length: sent chunked
        chunked = client.post("/api/pair", content=chunks)
        assert chunked.status_code == 413
        huge = client.post("/api/episodes/x/label", content=b"x" * (4 << 20))  # over what is read at all
        assert huge.status_code == 413


def test_an_unexpected_error_is_a_bare_500_with_a_request_id_and_its_traceback_in_the_log(
    store_served, caplog: pytest.LogCaptureFixture
) -> None:
    server = LabelServer(store_served.app, "127.0.0.1", 0)

    @server.api.get("/api/broken")
    def broken() -> None:  # a route with a bug, as a future change might add
        raise RuntimeError(f"secret detail from {store_served.store.uri}")

    server.start()
    try:
        with caplog.at_level(logging.ERROR, logger="ript_robot.labeling"):
            reply = httpx.get(f"{server.url}/api/broken")
        assert reply.status_code == 500 and set(reply.json()) == {"error", "request_id"}
        assert reply.json()["error"] == "internal error" and "secret" not in reply.text
        request_id = reply.json()["request_id"]
        assert re.fullmatch("[0-9a-f]{32}", request_id)
        (record,) = [r for r in caplog.records if request_id in r.getMessage()]
        assert record.exc_info is not None and "secret detail" in str(record.exc_info[1])
        assert httpx.get(f"{server.url}/api/session").status_code == 401  # and the server goes on
    finally:
        server.stop()
