"""The tablet app over HTTP: its routes, what each accepts, and how a refusal reads.

Without a session only the page (`/`), its static files and pairing (`POST /api/pair`) answer;
everything else needs the session cookie pairing set, and every write also its CSRF token.
Every input is checked before anything is touched: episode ids against the characters an id has
and then the store's index (an unknown one is a 404 naming it), context ids, frame indices,
tokens and codes as the ASCII they are, JSON bodies strictly typed with finite numbers, and no
body over `MAX_BODY_BYTES`. A refusal is a 4xx with `{"error": message}`; anything unexpected
is a bare 500 with a request id, its traceback in the log (`ript_robot.labeling.guard`). The
OpenAPI schema (`fastapi_app(app).openapi()`) documents every answer; it is not served, and
the API fuzzing (`tests/labeling/test_fuzz.py`, `benchmarks/api_fuzz.py`) generates requests from it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import Cookie, Depends, FastAPI, Header, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from ript_robot.data.integrity import EpisodeCorrupt
from ript_robot.labeling.app import KEY_FRAMES, LabelApp, label_json
from ript_robot.labeling.auth import CSRF_HEADER, SESSION_COOKIE, AuthError, Session
from ript_robot.labeling.guard import BodyLimit, CatchAll
from ript_robot.success.labels import LabelConflict, LabelError

log = logging.getLogger(__name__)
STATIC = FilePath(__file__).parent / "static"
STATIC_FILES = frozenset(p.name for p in STATIC.iterdir() if p.is_file())
MAX_BODY_BYTES = 16 * 1024  # the app's bodies are a few dozen bytes
EPISODE_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"  # uuid4 hex as the runtime names them; never a path
CONTEXT_ID = r"^[^\x00-\x1f\x7f]{1,256}$"  # `scene/task/seed`-like ids, printable, bounded
STATIC_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MESSAGES_SHOWN = 5  # validation problems named in one 422


class Strict(BaseModel):
    """A request body: JSON types exactly (no "1" for 1, no 1 for true), finite numbers."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False)


class PairRequest(Strict):
    code: str = Field(max_length=16, description="the six digits shown on the workstation (spaces allowed)")
    name: str = Field(max_length=64, description="this tablet's name, recorded with every label it gives")


class LabelRequest(Strict):
    success: bool
    revision: int = Field(ge=0, le=10**6, description="label rows the episode had when the operator looked")
    suggestion: float | None = Field(None, ge=0.0, le=1.0, description="the detector's probability shown")


class UndoRequest(Strict):
    revision: int = Field(ge=0, le=10**6)


class StopRequest(Strict):
    engage: bool


class SessionReply(BaseModel):
    name: str
    csrf: str


class RobotReply(BaseModel):
    ok: bool
    message: str


class ErrorReply(BaseModel):
    error: str


class ServerErrorReply(BaseModel):
    error: str
    request_id: str


WHY = {
    400: "a malformed request: a body that is not UTF-8 JSON, a malformed pairing code or name",
    401: "no valid session: pair first",
    403: "a wrong or expired pairing code, or a write without its CSRF token or from another origin",
    404: "no such episode, context, image or file",
    409: "refused: the labels changed since the revision sent, or the robot refused",
    413: "a body over the size limit",
    422: "a parameter or body field of the wrong type, form or range",
    429: "too many pairing attempts: wait Retry-After seconds",
}


def refusals(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI description of a route's 4xx answers."""
    out: dict[int | str, dict[str, Any]] = {s: {"model": ErrorReply, "description": WHY[s]} for s in statuses}
    if 429 in statuses:
        out[429]["headers"] = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
    return out


JPEG = {200: {"content": {"image/jpeg": {}}, "description": "a JPEG image"}}
EVERY_ROUTE = {
    **refusals(400, 413, 422),
    500: {"model": ServerErrorReply, "description": "an unexpected error, logged under request_id"},
}
SessionCookie = Annotated[
    str | None, Cookie(alias=SESSION_COOKIE, max_length=256, description="the session token pairing set")
]
CsrfToken = Annotated[str | None, Header(alias=CSRF_HEADER, max_length=256, description="the session's CSRF token")]
EpisodeId = Annotated[str, Path(pattern=EPISODE_ID, description="a committed episode's id")]


def reader(request: Request, token: SessionCookie = None) -> Session:
    """A read: the session of the request's cookie (AuthError 401 without one)."""
    app: LabelApp = request.app.state.label_app
    return app.pairing.session(token)


def writer(request: Request, token: SessionCookie = None, csrf: CsrfToken = None) -> Session:
    """A write: the session, its CSRF token and our origin (AuthError 401 or 403)."""
    app: LabelApp = request.app.state.label_app
    return app.pairing.check_write(token, csrf, request.headers.get("origin"), request.headers.get("host"))


Reader = Annotated[Session, Depends(reader)]
Writer = Annotated[Session, Depends(writer)]


def fastapi_app(app: LabelApp, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The routes: the page, pairing, state, images, labels and robot commands, behind `guard`."""
    api = FastAPI(title="ript-robot label app", docs_url=None, redoc_url=None, openapi_url=None, responses=EVERY_ROUTE)
    api.state.label_app = app  # for `reader` and `writer`
    api.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    api.add_middleware(CatchAll)  # added last: the outermost, it sees what everything inside raises
    _refusal_handlers(api)

    def known(episode_id: str) -> str:
        if not app.known(episode_id):
            raise HTTPException(404, f"no committed episode {episode_id} in this store")
        return episode_id

    @api.get("/", response_class=Response, responses={200: {"content": {"text/html": {}}, "description": "the page"}})
    def page() -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    @api.get(
        "/static/{name}",
        response_class=Response,
        responses={200: {"content": {"text/css": {}, "text/javascript": {}, "text/html": {}}}, **refusals(404)},
    )
    def static(name: Annotated[str, Path(pattern=STATIC_NAME)]) -> Response:
        if name not in STATIC_FILES:
            raise HTTPException(404, f"no static file {name}")
        return FileResponse(STATIC / name, headers={"Cache-Control": "no-store"})

    @api.post("/api/pair", response_model=SessionReply, responses=refusals(400, 403, 429))
    def pair(body: PairRequest, request: Request) -> JSONResponse:
        client = request.client.host if request.client else ""
        token, session = app.pairing.pair(body.code, body.name, client)
        response = JSONResponse({"name": session.name, "csrf": session.csrf})
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", max_age=7 * 24 * 3600)
        return response

    @api.get("/api/session", response_model=SessionReply, responses=refusals(401))
    def session(s: Reader) -> dict[str, Any]:
        return {"name": s.name, "csrf": s.csrf}

    @api.get("/api/state", responses=refusals(401))
    def state(s: Reader) -> dict[str, Any]:
        return app.state(s)

    @api.get("/api/live.jpg", response_class=Response, responses={**JPEG, **refusals(401, 404)})
    def live(s: Reader) -> Response:
        return _image(app.live_frame(), "no live view: no robot is connected, or it sent no frame yet")

    @api.get(
        "/api/episodes/{episode_id}/frames/{index}.jpg",
        response_class=Response,
        responses={**JPEG, **refusals(401, 404)},
    )
    def frame(s: Reader, episode_id: EpisodeId, index: Annotated[int, Path(ge=0, lt=KEY_FRAMES)]) -> Response:
        return _image(_key_frame(app, known(episode_id), index), f"episode {episode_id} has no frame {index}")

    @api.get(
        "/api/contexts/{context_id:path}/reference.jpg",
        response_class=Response,
        responses={**JPEG, **refusals(401, 404)},
    )
    def reference(s: Reader, context_id: Annotated[str, Path(pattern=CONTEXT_ID)]) -> Response:
        return _image(app.reference_frame(context_id), f"no committed episode of context {context_id!r}")

    labels = refusals(401, 403, 404, 409)

    @api.post("/api/episodes/{episode_id}/label", responses=labels)
    def label(s: Writer, episode_id: EpisodeId, body: LabelRequest) -> dict[str, Any]:
        state = app.desk.label(known(episode_id), body.success, s.name, body.revision, body.suggestion)
        return {"episode_id": episode_id, **label_json(state)}

    @api.post("/api/episodes/{episode_id}/undo", responses=labels)
    def undo(s: Writer, episode_id: EpisodeId, body: UndoRequest) -> dict[str, Any]:
        return {"episode_id": episode_id, **label_json(app.desk.undo(known(episode_id), s.name, body.revision))}

    @api.post("/api/episodes/{episode_id}/discard", responses=labels)
    def discard(s: Writer, episode_id: EpisodeId, body: UndoRequest) -> dict[str, Any]:
        return {"episode_id": episode_id, **label_json(app.desk.discard(known(episode_id), s.name, body.revision))}

    robot = {200: {"model": RobotReply}, **refusals(401, 403), 409: {"model": RobotReply, "description": WHY[409]}}

    @api.post("/api/robot/start", response_class=JSONResponse, responses=robot)
    def start(s: Writer) -> JSONResponse:
        return _robot_reply(app, lambda link: link.start())

    @api.post("/api/robot/software_stop", response_class=JSONResponse, responses=robot)
    def software_stop(s: Writer, body: StopRequest) -> JSONResponse:
        return _robot_reply(app, lambda link: link.software_stop(body.engage))

    return api


def _refusal_handlers(api: FastAPI) -> None:
    """Every refusal as `{"error": message}` (and the current labels, for a conflict)."""

    @api.exception_handler(AuthError)
    async def _auth(request: Request, exc: AuthError) -> JSONResponse:
        wait = {} if exc.retry_after_s is None else {"Retry-After": str(math.ceil(exc.retry_after_s))}
        return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=wait)

    @api.exception_handler(LabelConflict)
    async def _conflict(request: Request, exc: LabelConflict) -> JSONResponse:
        return JSONResponse({"error": str(exc), **label_json(exc.current)}, status_code=409)

    @api.exception_handler(LabelError)
    async def _refused(request: Request, exc: LabelError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=409)

    @api.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [_problem(e) for e in exc.errors()]
        return JSONResponse({"error": "; ".join(problems[:MESSAGES_SHOWN])}, status_code=422)


def _problem(error: dict[str, Any]) -> str:
    """One validation error as the page shows it: the field ("revision", "episode_id") and what is wrong."""
    loc = tuple(error.get("loc", ()))
    if error.get("type") == "json_invalid":
        where = f" at character {loc[-1]}" if len(loc) > 1 else ""
        return f"body: not JSON ({error.get('ctx', {}).get('error', 'malformed')}{where})"
    return f"{'.'.join(map(str, loc[1:] or loc)) or 'request'}: {error.get('msg', 'invalid')}"


def _key_frame(app: LabelApp, episode_id: str, index: int) -> bytes | None:
    try:
        return app.key_frame(episode_id, index)
    except EpisodeCorrupt as exc:  # the store's fault, not the request's: logged, and the page shows no image
        log.warning("key frame %d of episode %s: %s", index, episode_id, exc)
        raise HTTPException(404, f"episode {episode_id} is damaged: its frames cannot be shown") from exc


def _image(data: bytes | None, missing: str) -> Response:
    if data is None:
        raise HTTPException(404, missing)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


def _robot_reply(app: LabelApp, call: Callable[[Any], tuple[bool, str]]) -> JSONResponse:
    if app.robot is None:
        return JSONResponse({"ok": False, "message": "no robot is connected to this app"}, status_code=409)
    ok, message = call(app.robot)
    return JSONResponse({"ok": ok, "message": message}, status_code=200 if ok else 409)
