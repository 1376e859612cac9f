"""API fuzzing of the tablet app from its own OpenAPI schema, against the real server on loopback.

The app (`ript_robot.labeling`) serves a store of a few committed episodes of the built-in task
with the simulated arm behind it, from `LabelServer` on 127.0.0.1. Schemathesis generates
requests from the app's OpenAPI schema, valid ones and ones that break it, and each is sent as
one of several clients: with whatever cookie and CSRF header the case carries (random strings),
with the paired session's cookie but a missing, wrong, non-ASCII or swapped CSRF token or a
foreign Origin, or paired (the session's cookie and token from our origin: labels land, the arm
starts and stops). A quarter are made hostile on top: a body over the size limit (declared or
chunked), NaN and infinite numbers, malformed JSON, invalid UTF-8, deep nesting, a lying
Content-Type, a raw Cookie header that does not parse, non-ASCII tokens, an unknown or malformed
episode id, a method the route lacks, a pairing guess of the right form.

The first half is sent without a valid session and token; after each of those requests the
store's labels, the arm's status and the sessions are compared with before:
`unauthorized_state_changes` counts the requests that changed them. The second half is sent
paired. `api_server_errors` counts 5xx answers and connections the server dropped.

    python benchmarks/api_fuzz.py [--requests 5000] [--seed 0]
    python benchmarks/api_fuzz.py --smoke     # a few dozen requests, writes nothing

Saves benchmarks/results/api_fuzz.json (api_requests_fuzzed, api_server_errors,
unauthorized_state_changes, seconds). `benchmarks/integrity.py` reports the same figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.schemas import BaseSchema

from ript_robot.config import QuickstartConfig
from ript_robot.data.store import EpisodeStore
from ript_robot.labeling.auth import CSRF_HEADER, SESSION_COOKIE
from ript_robot.labeling.server import LabelServer, build_app
from ript_robot.success.labels import LabelState
from sim_bridge.label_robot import SimRobot
from sim_bridge.pick_outcomes import outcome_episodes

RESULTS = Path(__file__).resolve().parent / "results"
EPISODES = 4
SMALL = {  # the arm's policy and camera as small as the tests' (the fuzzing is about the app)
    "task": {"image_size": 32, "max_steps": 20},
    "policy": {"hidden_dim": 32, "channels": 4, "keypoints": 4, "chunk_size": 4},
    "runtime": {"execute_steps": 4},
}
# header bytes a client can send: visible ASCII first, then also spaces and obs-text (0x80-0xFF)
FIRST_BYTES = list(range(0x21, 0x7F))
HEADER_BYTES = [*FIRST_BYTES, 0x20, *range(0x80, 0x100)]
EPISODE_ROUTES = ["label", "undo", "discard", "frames/0.jpg", "frames/3.jpg"]


@dataclass
class Target:
    """The app on a store of a few committed episodes, the simulated arm behind it, served on loopback."""

    server: LabelServer
    robot: SimRobot

    @property
    def url(self) -> str:
        return self.server.url

    def state(self) -> tuple[Any, ...]:
        """What no request without a valid session and CSRF token may change: labels, the arm, sessions."""
        episodes = self.server.app.store.refresh().index.episodes
        status = self.robot.status() or {}
        labels = sorted((episode_id, len(record.labels)) for episode_id, record in episodes.items())
        arm = (status.get("seq"), status.get("state"), status.get("software_stop"))
        return labels, arm, len(self.server.app.pairing.sessions())

    def schema(self) -> BaseSchema:
        """The app's own OpenAPI schema, aimed at the server."""
        schema = schemathesis.openapi.from_dict(self.server.api.openapi())
        schema.config.update(base_url=self.url)
        return schema

    def pair(self) -> tuple[str, str]:
        """A session, paired over HTTP as a tablet pairs: (cookie token, CSRF token)."""
        code = self.server.app.pairing.code
        reply = requests.post(f"{self.url}/api/pair", json={"code": code, "name": "fuzzer"}, timeout=10)
        reply.raise_for_status()
        return reply.cookies[SESSION_COOKIE], reply.json()["csrf"]

    def close(self) -> None:
        self.server.stop()
        self.robot.close()


def serve(root: Path, episodes: int = EPISODES, seed: int = 0) -> Target:
    """A store under `root` with `episodes` committed rollouts (the first sim-labeled, the rest waiting for
    the operator), the simulated arm and the app, on a free loopback port."""
    cfg = QuickstartConfig.model_validate(SMALL)
    cfg.store.uri = str(root / "store")
    store = EpisodeStore(cfg.store.uri, create=True)
    for i, episode in enumerate(outcome_episodes(episodes, cfg.task.image_size, seed=seed, max_steps=10)):
        episode.meta.label = episode.meta.label if i == 0 else None
        store.write_episode(episode)
    robot = SimRobot(cfg.store.uri, cfg)
    app = build_app(cfg.label_app, cfg.store, cfg.detector, robot)
    return Target(LabelServer(app, "127.0.0.1", 0).start(), robot)


def header_bytes(min_size: int = 1, max_size: int = 64) -> st.SearchStrategy[bytes]:
    """Header values a client can put on the wire, non-ASCII included (never starting with a space)."""
    rest = st.lists(st.sampled_from(HEADER_BYTES), min_size=min_size - 1, max_size=max_size - 1)
    return st.tuples(st.sampled_from(FIRST_BYTES), rest).map(lambda t: bytes([t[0], *t[1]]))


def credentials(token: str, csrf: str, url: str, paired: bool) -> st.SearchStrategy[dict[str, Any]]:
    """Cookies and headers of a client: the paired one, or one that holds no valid session and token."""
    if paired:
        return st.just({"cookies": {SESSION_COOKIE: token}, "headers": {CSRF_HEADER: csrf, "Origin": url}})
    ascii_text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64)
    wrong = ascii_text.filter(lambda t: t != csrf)
    return st.one_of(
        st.just({}),  # what the case generated: random strings or nothing
        st.just({"cookies": {SESSION_COOKIE: None}, "headers": {CSRF_HEADER: None}}),
        st.just({"cookies": {SESSION_COOKIE: token}, "headers": {CSRF_HEADER: None}}),
        wrong.map(lambda w: {"cookies": {SESSION_COOKIE: token}, "headers": {CSRF_HEADER: w}}),
        header_bytes().map(lambda b: {"cookies": {SESSION_COOKIE: token}, "headers": {CSRF_HEADER: b + "é".encode()}}),
        st.just({"cookies": {SESSION_COOKIE: csrf}, "headers": {CSRF_HEADER: token}}),  # swapped
        st.just({"cookies": {SESSION_COOKIE: token}, "headers": {CSRF_HEADER: csrf, "Origin": "http://evil.example"}}),
        header_bytes().map(lambda b: {"headers": {"Cookie": b, CSRF_HEADER: csrf}}),  # a raw, unparsable cookie
    )


def _body(data: Any, content_type: str = "application/json") -> Callable[[dict[str, Any]], None]:
    def swap(kwargs: dict[str, Any]) -> None:
        kwargs.pop("json", None)
        kwargs["data"] = data
        kwargs["headers"]["Content-Type"] = content_type

    return swap


def _chunked(size: int) -> Callable[[dict[str, Any]], None]:
    """A body with no declared length, sent in 4 KiB chunks."""
    return _body(b"x" * 4096 for _ in range(size // 4096 + 1))


def _non_finite(value: str) -> Callable[[dict[str, Any]], None]:
    numbers = ("revision", "suggestion", "success", "engage", "code")
    return _body(("{" + ", ".join(f'"{k}": {value}' for k in numbers) + "}").encode())


def _method(method: str) -> Callable[[dict[str, Any]], None]:
    def swap(kwargs: dict[str, Any]) -> None:
        kwargs["method"] = method

    return swap


def _header(name: str, value: bytes) -> Callable[[dict[str, Any]], None]:
    def swap(kwargs: dict[str, Any]) -> None:
        kwargs["headers"][name] = value

    return swap


def _aim(kwargs: dict[str, Any], method: str, path: str) -> None:
    """Send the request to `path` on the same server, with `method` and no query."""
    server = re.match(r"https?://[^/]+", kwargs["url"])
    kwargs.update(url=f"{server.group(0) if server else ''}{path}", method=method)
    kwargs.pop("params", None)


def _guess(code: str) -> Callable[[dict[str, Any]], None]:
    """The request turned into a pairing guess: a code of the right form (the rate limits answer most)."""

    def swap(kwargs: dict[str, Any]) -> None:
        _body(json.dumps({"code": code, "name": "guesser"}).encode())(kwargs)
        _aim(kwargs, "POST", "/api/pair")

    return swap


def _episode(episode_id: str, route: str) -> Callable[[dict[str, Any]], None]:
    """The request aimed at an episode route of an unknown or malformed id instead (keeping its body)."""

    def swap(kwargs: dict[str, Any]) -> None:
        method = "GET" if route.startswith("frames") else "POST"
        _aim(kwargs, method, f"/api/episodes/{quote(episode_id, safe='')}/{route}")

    return swap


def hostile() -> st.SearchStrategy[Callable[[dict[str, Any]], None]]:
    """One change that makes a request hostile."""
    episode_ids = st.one_of(
        st.uuids().map(lambda u: u.hex),  # well formed, unknown
        st.sampled_from([".", "..", "%00", "a/../..", "A" * 129, "épisode", " ", "~root", "0x" + "f" * 200]),
        st.text(min_size=1, max_size=40),
    )
    return st.one_of(
        st.integers(16 * 1024 + 1, 512 * 1024).map(lambda n: _body(b'{"pad": "' + b"x" * n + b'"}')),
        st.integers(16 * 1024 + 1, 256 * 1024).map(_chunked),
        st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e999"]).map(_non_finite),
        st.binary(max_size=256).map(_body),
        st.sampled_from([b'{"code": "\xff\xfe", "name": "\xc3"}', b'{"name": "\\ud800", "code": "1"}']).map(_body),
        st.integers(100, 8000).map(lambda n: _body(b"[" * n)),
        st.integers(1, 5000).map(lambda n: _body(b'{"revision": 1' + b"0" * n + b"}")),
        st.sampled_from(
            [
                "text/plain",
                "application/x-www-form-urlencoded",
                "multipart/form-data",
                "application/json; charset=utf-16",
            ]
        ).map(lambda t: _body(b'{"success": true, "revision": 0}', t)),
        header_bytes().map(lambda b: _header("Cookie", b)),
        header_bytes().map(lambda b: _header(CSRF_HEADER, b"\xe9" + b)),
        header_bytes().map(lambda b: _header("Origin", b)),
        st.sampled_from(["PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE"]).map(_method),
        st.builds(_episode, episode_ids, st.sampled_from(EPISODE_ROUTES)),
        st.from_regex(r"\A[0-9]{3} ?[0-9]{3}\Z").map(_guess),
    )


@dataclass
class Tally:
    """What the fuzzing saw: answers by status, server errors (with the first few requests), state changes."""

    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    dropped: int = 0
    state_changes: list[str] = field(default_factory=list)
    label_rows: int = 0  # label rows the phase's requests wrote


def send(kwargs: dict[str, Any], tally: Tally, session: requests.Session) -> None:
    """One request; a 5xx or a dropped connection is a server error."""
    tally.sent += 1
    where = f"{kwargs['method']} {kwargs['url'][:160]}"
    try:
        reply = session.request(**kwargs, timeout=30, allow_redirects=False)
    except (requests.ConnectionError, requests.Timeout) as exc:
        tally.dropped += 1
        tally.server_errors.append(f"{where}: no answer: {exc}")
        return
    finally:
        session.cookies.clear()  # a cookie the server set stays with the request that got it
    tally.statuses[reply.status_code] += 1
    if reply.status_code >= 500:
        tally.server_errors.append(f"{where}: {reply.status_code} {reply.text[:200]}")


def fuzzed_requests(target: Target, token: str, csrf: str, paired: bool) -> st.SearchStrategy[dict[str, Any]]:
    """Requests from the schema's cases (valid and schema-violating), as one client, a quarter made hostile;
    half the cases that name an episode name one of the store's, with the label revision it has now (random
    ids are almost never committed, random revisions almost never current)."""
    schema = target.schema()
    cases = st.one_of(schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE))
    store = target.server.app.store
    committed = sorted(store.refresh().index.episodes)

    def build(
        case: Any, episode_id: str | None, who: dict[str, Any], mutate: Callable[[dict[str, Any]], None] | None
    ) -> dict[str, Any]:
        if episode_id is not None and "episode_id" in (case.path_parameters or {}):
            case.path_parameters["episode_id"] = episode_id
            if isinstance(case.body, dict) and "revision" in case.body:  # the revision the episode has now
                case.body["revision"] = LabelState.of(store.refresh().index.episodes[episode_id]).revision
        kwargs = case.as_transport_kwargs(base_url=target.url)
        for part in ("headers", "cookies"):
            merged = {**dict(kwargs.get(part) or {}), **who.get(part, {})}
            kwargs[part] = {k: v for k, v in merged.items() if v is not None}  # None: leave it out
        if mutate is not None:
            mutate(kwargs)
        return kwargs

    episode_ids = st.one_of(st.none(), st.sampled_from(committed))
    mutation = st.one_of(st.none(), st.none(), st.none(), hostile())
    return st.builds(build, cases, episode_ids, credentials(token, csrf, target.url, paired), mutation)


def drive(strategy: st.SearchStrategy[Any], n: int, seed: int, each: Callable[[Any], None]) -> None:
    """Run `each` on `n` examples of `strategy` (Hypothesis, generation only, reproducible from `seed`)."""

    @hypothesis_seed(seed)
    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def run(example: Any) -> None:
        each(example)

    run()


def fuzz(target: Target, requests_wanted: int, seed: int) -> dict[str, Tally]:
    """Half the requests without a valid session and token (the state compared after each), half paired."""
    token, csrf = target.pair()
    session = requests.Session()
    half = requests_wanted // 2
    tallies = {}
    for phase, paired, wanted in (("unauthorized", False, half), ("paired", True, requests_wanted - half)):
        tally = tallies[phase] = Tally()

        def each(kwargs: dict[str, Any], tally: Tally = tally, paired: bool = paired) -> None:
            before = None if paired else target.state()
            send(kwargs, tally, session)
            if before is not None and target.state() != before:
                tally.state_changes.append(f"{kwargs['method']} {kwargs['url'][:160]}")

        strategy = fuzzed_requests(target, token, csrf, paired)
        rows_before = sum(n for _, n in target.state()[0])
        round_ = 0
        while tally.sent < wanted:  # Hypothesis may stop short of max_examples: top up with the next seed
            drive(strategy, wanted - tally.sent, seed * 1000 + round_, each)
            round_ += 1
        tally.label_rows = sum(n for _, n in target.state()[0]) - rows_before
    return tallies


def fuzz_api(requests: int, seed: int = 0) -> dict[str, Any]:
    """Fuzz a freshly served app with at least `requests` generated requests; the figures."""
    start = time.perf_counter()
    target = serve(Path(tempfile.mkdtemp(prefix="api_fuzz_")), seed=seed)
    try:
        tallies = fuzz(target, requests, seed)
    finally:
        target.close()
    statuses: Counter[int] = sum((t.statuses for t in tallies.values()), Counter())
    errors = [e for t in tallies.values() for e in t.server_errors]
    return {
        "api_requests_fuzzed": sum(t.sent for t in tallies.values()),
        "api_server_errors": len(errors),
        "unauthorized_state_changes": len(tallies["unauthorized"].state_changes),
        "seconds": time.perf_counter() - start,
        "requests_without_session": tallies["unauthorized"].sent,
        "requests_paired": tallies["paired"].sent,
        "label_rows_written_paired": tallies["paired"].label_rows,  # the paired requests do change state
        "dropped_connections": sum(t.dropped for t in tallies.values()),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "server_error_examples": errors[:10],
        "state_change_examples": tallies["unauthorized"].state_changes[:10],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=5000, help="generated requests, at least")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="a few dozen requests; writes nothing")
    args = parser.parse_args()
    result = fuzz_api(40 if args.smoke else args.requests, args.seed)
    result.update(smoke=args.smoke, machine=f"{os.cpu_count()} CPU cores, loopback, local store")
    print(json.dumps(result, indent=2))
    if not args.smoke:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "api_fuzz.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
