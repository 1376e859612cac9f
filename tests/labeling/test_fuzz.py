"""The tablet app fuzzed from its own OpenAPI schema (Schemathesis), against the real server on loopback:
no 5xx, answers as the schema documents them, and no state change without a valid session and CSRF token.
`benchmarks/api_fuzz.py` is the long run, with hostile bodies and credentials on top; a short one runs here."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ript_robot.labeling.auth import CSRF_HEADER, SESSION_COOKIE

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
# generation only: shrinking a failure would send hundreds more requests (the report names the request)
FUZZ = settings(
    max_examples=300, deadline=None, phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck)
)


@pytest.fixture(scope="module")
def api_fuzz() -> ModuleType:
    """benchmarks/api_fuzz.py: the served target and the hostile fuzzing."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        return importlib.import_module("api_fuzz")


@pytest.fixture(scope="module")
def target(api_fuzz: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A store of four committed episodes, the simulated arm and the app, on loopback (one for the module)."""
    target = api_fuzz.serve(tmp_path_factory.mktemp("fuzz"))
    yield target
    target.close()


def cases(schema: schemathesis.BaseSchema, **fixed: dict[str, str]) -> st.SearchStrategy[schemathesis.Case]:
    """Requests to every operation of the schema, valid ones and ones that break it; `fixed`: cookies and
    headers they all carry."""
    modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    return st.one_of(*(schema.as_strategy(mode, **fixed) for mode in modes))


@pytest.fixture(scope="module")
def anonymous(target: Any) -> st.SearchStrategy[schemathesis.Case]:
    """Requests with whatever cookie and CSRF header the schema generates (or none)."""
    return cases(target.schema())


@pytest.fixture(scope="module")
def paired(target: Any) -> st.SearchStrategy[schemathesis.Case]:
    """Requests with the cookie and CSRF token of a session paired over HTTP; half of those to an episode
    name a committed one (a random id is never committed)."""
    token, csrf = target.pair()
    schema, fixed = target.schema(), {"cookies": {SESSION_COOKIE: token}, "headers": {CSRF_HEADER: csrf}}
    committed = [{"episode_id": episode_id} for episode_id in target.server.app.store.refresh().index.episodes]
    return st.one_of(cases(schema, **fixed), *(cases(schema, **fixed, path_parameters=p) for p in committed))


@FUZZ
@given(data=st.data())
def test_without_a_session_no_request_gets_5xx_or_changes_anything(
    target: Any, anonymous: st.SearchStrategy[schemathesis.Case], data: st.DataObject
) -> None:
    case = data.draw(anonymous)
    before = target.state()
    case.call_and_validate(checks=CHECKS)
    assert target.state() == before


@FUZZ
@given(data=st.data())
def test_with_a_session_and_its_token_no_request_gets_5xx(
    paired: st.SearchStrategy[schemathesis.Case], data: st.DataObject
) -> None:
    data.draw(paired).call_and_validate(checks=CHECKS)


def test_hostile_requests_get_4xx_and_change_nothing_without_a_session(api_fuzz: ModuleType) -> None:
    figures = api_fuzz.fuzz_api(300, seed=0)
    assert figures["api_requests_fuzzed"] >= 300
    assert figures["api_server_errors"] == 0, figures["server_error_examples"]
    assert figures["unauthorized_state_changes"] == 0, figures["state_change_examples"]
    assert figures["statuses"].get("200", 0) > 0 and figures["statuses"].get("413", 0) > 0
