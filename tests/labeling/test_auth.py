"""Pairing and request checks: one-time codes, sessions, CSRF and origin, over real HTTP."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ript_robot.labeling.auth import SESSION_COOKIE, TRACKED_CLIENTS, AttemptLimit, AuthError, Pairing


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


def test_pairing_attempts_are_rate_limited_per_client_and_overall_and_malformed_codes_are_no_attempt() -> None:
    clock = Clock()
    pairing = Pairing(3600, max_attempts=100, clock=clock, attempts_per_client_per_min=3, attempts_per_min=5)
    wrong = "999999" if pairing.code != "999999" else "999998"
    for _ in range(3):
        with pytest.raises(AuthError, match="wrong code"):
            pairing.pair(wrong, "t", "10.0.0.1")
    with pytest.raises(AuthError) as mine:
        pairing.pair(pairing.code, "t", "10.0.0.1")  # even the right code waits its turn
    assert mine.value.status == 429 and mine.value.retry_after_s == pytest.approx(20.0)  # 3 a minute: one per 20 s
    with pytest.raises(AuthError, match="six digits"):
        pairing.pair("12345x", "t", "10.0.0.2")  # refused before it counts
    for _ in range(2):
        with pytest.raises(AuthError, match="wrong code"):
            pairing.pair(wrong, "t", "10.0.0.2")
    with pytest.raises(AuthError) as overall:
        pairing.pair(wrong, "t", "10.0.0.3")  # a new address, but 5 tries this minute already
    assert overall.value.status == 429 and overall.value.retry_after_s == pytest.approx(12.0)
    clock.now += 20
    token, _ = pairing.pair(pairing.code, "tablet-1", "10.0.0.1")
    assert pairing.session(token).name == "tablet-1"


def test_the_rate_limit_forgets_addresses_idle_long_enough_to_be_full_again() -> None:
    clock = Clock()
    limit = AttemptLimit(per_client=2, overall=10**6, clock=clock)
    for i in range(TRACKED_CLIENTS):
        assert limit.take(f"10.0.{i // 256}.{i % 256}") == 0.0
    clock.now += 10  # each has 1 of 2 tries left, a third of one more back: remembered
    assert limit.take("192.168.0.1") == 0.0 and len(limit._clients) == TRACKED_CLIENTS + 1
    clock.now += 20  # full again: the same as never seen
    assert limit.take("192.168.0.2") == 0.0 and len(limit._clients) == 2  # the idle ones dropped
    assert limit.take("192.168.0.1") == 0.0 and limit.take("192.168.0.1") > 0  # the active one was kept


def test_over_http_pairing_guesses_get_429_with_retry_after(store_served) -> None:
    client = httpx.Client(base_url=store_served.url)
    wrong = "999999" if store_served.app.pairing.code != "999999" else "999998"
    statuses = [client.post("/api/pair", json={"code": wrong, "name": "t"}).status_code for _ in range(5)]
    assert statuses == [403] * 5  # the fifth also replaced the code
    limited = client.post("/api/pair", json={"code": store_served.app.pairing.code, "name": "t"})
    assert limited.status_code == 429 and "try again in" in limited.json()["error"]
    assert 1 <= int(limited.headers["Retry-After"]) <= 12


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


@pytest.fixture
def labeler(store_served) -> tuple[httpx.Client, str]:
    """A client paired with the served app (in process: pairing over HTTP is rate limited) and its CSRF token."""
    pairing = store_served.app.pairing
    token, session = pairing.pair(pairing.code, "fuzz", client="in-process")
    return httpx.Client(base_url=store_served.url, cookies={SESSION_COOKIE: token}), session.csrf


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_generated_label_requests_either_land_as_one_row_or_change_nothing_and_name_the_episode(
    store_served, labeler, data
) -> None:
    store = store_served.store
    client, csrf = labeler
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
