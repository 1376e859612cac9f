"""Pairing and request checks: one-time codes, sessions, CSRF and origin, over real HTTP."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from synthetic import synthetic_episode

from ript_robot.labeling.auth import AuthError, Pairing


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_code_pairs_once_expires_and_is_replaced_after_too_many_wrong_tries() -> None:
    shown: list[str] = []
    clock = Clock()
    pairing = Pairing(code_ttl_s=60, max_attempts=3, announce=lambda code, ttl: shown.append(code), clock=clock)
    code = pairing.code
    token, _session = pairing.pair(code, "tablet-1")
    assert pairing.session(token).name == "tablet-1" and shown[-1] != code  # a new code is shown
    with pytest.raises(AuthError, match="wrong code: enter"):
        pairing.pair(code, "tablet-2")  # used once already: wrong try 1 of 3
    before = pairing.code
    wrong = "999999" if before != "999999" else "999998"
    with pytest.raises(AuthError, match="wrong code: enter"):
        pairing.pair(wrong, "x")
    with pytest.raises(AuthError, match="too many tries"):
        pairing.pair(wrong, "x")
    assert pairing.code != before and shown[-1] == pairing.code
    clock.now += 61
    stale = shown[-1]
    with pytest.raises(AuthError, match="expired"):
        pairing.pair(stale, "tablet-3")
    with pytest.raises(AuthError) as missing:
        pairing.session("not-a-token")
    assert missing.value.status == 401


def test_over_http_reads_and_writes_need_the_session_its_csrf_token_and_our_origin(served) -> None:
    client = httpx.Client(base_url=served.url)
    assert client.get("/api/state").status_code == 401
    assert client.get("/api/live.jpg").status_code == 401
    assert client.post("/api/robot/start").status_code == 401
    assert client.post("/api/pair", json={"code": "12", "name": "t"}).status_code == 403
    reply = client.post("/api/pair", json={"code": served.app.pairing.code, "name": "tablet-1"})
    assert reply.status_code == 200
    assert (
        "httponly" in reply.headers["set-cookie"].lower() and "samesite=strict" in reply.headers["set-cookie"].lower()
    )
    csrf = reply.json()["csrf"]
    assert client.get("/api/state").json()["you"] == "tablet-1"
    assert client.post("/api/robot/start").status_code == 403  # no CSRF token
    evil = client.post("/api/robot/start", headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"})
    assert evil.status_code == 403 and "cross-site" in evil.json()["error"]
    assert served.robot.status()["state"] == "ready"  # nothing started
    started = client.post("/api/robot/start", headers={"X-CSRF-Token": csrf, "Origin": served.url})
    assert started.status_code == 200 and started.json()["ok"]
    stop = client.post("/api/robot/software_stop", json={"engage": True}, headers={"X-CSRF-Token": csrf})
    assert stop.status_code == 200 and served.robot.status()["software_stop"]
    refused = client.post("/api/robot/start", headers={"X-CSRF-Token": csrf})
    assert refused.status_code == 409 and "software stop" in refused.json()["message"]


bodies = st.one_of(
    st.fixed_dictionaries({"revision": st.integers(-2, 6)}, optional={"success": st.booleans()}),
    st.dictionaries(
        st.sampled_from(["revision", "success", "suggestion", "x"]),
        # every scalar a JSON body can carry (NaN and inf cannot be sent as JSON)
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
        max_size=3,
    ),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_generated_label_requests_either_land_as_one_row_or_change_nothing_and_name_the_episode(served, data) -> None:
    store = served.store
    if not store.refresh().records():
        for seed in range(2):
            store.write_episode(synthetic_episode(f"workcell/{seed}", steps=2, success=None, seed=seed, image_size=32))
    client = httpx.Client(base_url=served.url)
    csrf = client.post("/api/pair", json={"code": served.app.pairing.code, "name": "fuzz"}).json()["csrf"]
    ids = [r.episode_id for r in store.refresh().records()]
    episode_id = data.draw(st.one_of(st.sampled_from(ids), st.text("abcdef0123456789", min_size=1, max_size=32)))
    action = data.draw(st.sampled_from(["label", "discard", "undo"]))
    body = data.draw(bodies)
    before = {i: len(store.index.episodes[i].labels) for i in ids}
    reply = client.post(f"/api/episodes/{episode_id}/{action}", json=body, headers={"X-CSRF-Token": csrf})
    after = {i: len(store.refresh().index.episodes[i].labels) for i in ids}
    assert reply.status_code in (200, 404, 409, 422), reply.text
    if reply.status_code == 200:
        assert sum(after.values()) == sum(before.values()) + 1 and after[episode_id] == before[episode_id] + 1
    else:
        assert after == before  # a refusal writes nothing
    if reply.status_code in (404, 409):
        assert episode_id in reply.json()["error"]
