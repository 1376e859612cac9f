"""Pairing a tablet with the workstation, and the checks every request passes.

The workstation shows a one-time six-digit code (in the terminal and the launch log). A
tablet that enters it gets a session: a random token in an HttpOnly, SameSite=Strict
cookie, plus a CSRF token the page sends back in the `X-CSRF-Token` header of every
write. A code works once, expires after `code_ttl_s`, and is replaced after
`max_attempts` wrong guesses; guesses are rate limited per client address and overall
(`AttemptLimit`: 429 with Retry-After), so it cannot be brute-forced. Tokens and codes are
checked to be the ASCII they are before they are compared. Only hashes of the session tokens
are kept. Reads need a session too: the live view shows the lab.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ript_robot.config import LabelAppConfig

SESSION_COOKIE = "ript_session"
CSRF_HEADER = "X-CSRF-Token"
TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")  # what `secrets.token_urlsafe` makes: session and CSRF tokens
TRACKED_CLIENTS = 1024  # per-client buckets kept before idle (full) ones are dropped


class AuthError(Exception):
    """A request without a valid session (401), without its CSRF token (403), with a malformed pairing
    request (400), or over the pairing rate limit (429, with the seconds to wait)."""

    def __init__(self, status: int, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


@dataclass
class Session:
    """A paired tablet: the name it gave (recorded as the labeler) and its CSRF token."""

    name: str
    csrf: str
    paired_at: float


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class AttemptLimit:
    """Attempts allowed per minute from one client and from all of them together: token buckets that
    hold a minute's worth (the burst) and refill evenly. Not thread-safe (`Pairing` holds its lock)."""

    def __init__(self, per_client: int, overall: int, clock: Callable[[], float]):
        """per_client, overall: attempts a minute (>= 1)."""
        if per_client < 1 or overall < 1:
            raise ValueError(f"attempts a minute must be >= 1, got {per_client} per client, {overall} overall")
        self.per_client = per_client
        self.overall = overall
        self.clock = clock
        self._overall = _Bucket(overall, clock())
        self._clients: dict[str, _Bucket] = {}

    def take(self, client: str) -> float:
        """Count one attempt of `client`: 0.0 when allowed, else the seconds until it would be (then nothing
        is counted, so a client that keeps trying is not locked out for longer)."""
        now = self.clock()
        overall = _refill(self._overall, self.overall, now)
        mine = _refill(self._clients.get(client) or _Bucket(self.per_client, now), self.per_client, now)
        wait = max(_wait(overall, self.overall), _wait(mine, self.per_client))
        if wait > 0:
            return wait
        overall.tokens -= 1
        mine.tokens -= 1
        self._clients[client] = mine  # only allowed attempts add clients: at most `overall` new ones a minute
        if len(self._clients) > TRACKED_CLIENTS:
            for key, bucket in list(self._clients.items()):
                if _refill(bucket, self.per_client, now).tokens >= self.per_client:
                    del self._clients[key]  # refilled: the same as never seen
        return 0.0


def _refill(bucket: _Bucket, per_min: int, now: float) -> _Bucket:
    bucket.tokens = min(float(per_min), bucket.tokens + max(0.0, now - bucket.stamp) * per_min / 60.0)
    bucket.stamp = now
    return bucket


def _wait(bucket: _Bucket, per_min: int) -> float:
    return 0.0 if bucket.tokens >= 1.0 else (1.0 - bucket.tokens) * 60.0 / per_min


class Pairing:
    """One-time pairing codes and the sessions they open (thread-safe)."""

    def __init__(
        self,
        code_ttl_s: float = 600.0,
        max_attempts: int = 5,
        announce: Callable[[str, float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        attempts_per_client_per_min: int = 5,
        attempts_per_min: int = 10,
    ):
        """code_ttl_s: seconds (> 0) a code stays valid; max_attempts: wrong codes (>= 1) before a new
        one; announce(code, ttl_s): shows each new code on the workstation; attempts_per_client_per_min,
        attempts_per_min: pairing attempts a minute allowed from one address and from all (`AttemptLimit`)."""
        if code_ttl_s <= 0 or max_attempts < 1:
            raise ValueError(f"code_ttl_s must be > 0 and max_attempts >= 1, got {code_ttl_s}, {max_attempts}")
        self.code_ttl_s = code_ttl_s
        self.max_attempts = max_attempts
        self.announce = announce
        self.clock = clock
        self.limit = AttemptLimit(attempts_per_client_per_min, attempts_per_min, clock)
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._code = ""
        self._code_expires = 0.0
        self._failures = 0
        self.new_code()

    @classmethod
    def for_app(cls, config: LabelAppConfig, announce: Callable[[str, float], None] | None = None) -> Pairing:
        """Pairing as the app's config sets it: the code's lifetime and the rate limits."""
        return cls(
            config.pairing_code_ttl_s,
            announce=announce,
            attempts_per_client_per_min=config.pairing_attempts_per_client_per_min,
            attempts_per_min=config.pairing_attempts_per_min,
        )

    def new_code(self) -> str:
        """Replace the pairing code (the old one stops working) and announce it."""
        with self._lock:
            return self._new_code()

    def _new_code(self) -> str:
        self._code = f"{secrets.randbelow(10**6):06d}"
        self._code_expires = self.clock() + self.code_ttl_s
        self._failures = 0
        if self.announce is not None:
            self.announce(self._code, self.code_ttl_s)
        return self._code

    @property
    def code(self) -> str:
        """The current code, renewed first if it expired."""
        with self._lock:
            if self.clock() >= self._code_expires:
                self._new_code()
            return self._code

    def pair(self, code: str, name: str, client: str = "") -> tuple[str, Session]:
        """Exchange the current code for a session; returns (token, session). Raises AuthError.

        client: the requester's address, for the per-client rate limit."""
        name = " ".join(name.split())[:40]
        if not name or not name.isprintable():
            raise AuthError(400, "give this tablet a name of printable characters (it is recorded with its labels)")
        digits = code.replace(" ", "")
        if not (digits.isascii() and digits.isdigit()):
            raise AuthError(400, "the code is the six digits shown on the workstation")
        with self._lock:
            wait = self.limit.take(client)
            if wait > 0:
                raise AuthError(429, f"too many pairing attempts: try again in {math.ceil(wait)} s", wait)
            if self.clock() >= self._code_expires:
                self._new_code()
                raise AuthError(403, "that code has expired; enter the new code shown on the workstation")
            if not hmac.compare_digest(digits, self._code):
                self._failures += 1
                if self._failures >= self.max_attempts:
                    self._new_code()
                    raise AuthError(403, "wrong code, too many tries: the workstation shows a new code")
                raise AuthError(403, "wrong code: enter the code shown on the workstation")
            token = secrets.token_urlsafe(32)
            session = Session(name, secrets.token_urlsafe(24), time.time())
            self._sessions[_digest(token)] = session
            self._new_code()  # one pairing per code
            return token, session

    def session(self, token: str | None) -> Session:
        """The session of a cookie's token; AuthError(401) when there is none."""
        session = self._sessions.get(_digest(token)) if token and TOKEN.fullmatch(token) else None
        if session is None:
            raise AuthError(401, "this tablet is not paired: enter the code shown on the workstation")
        return session

    def check_write(self, token: str | None, csrf: str | None, origin: str | None, host: str | None) -> Session:
        """A state-changing request: a session, its CSRF token, and (when the browser sends one) our origin."""
        session = self.session(token)
        if not csrf or not TOKEN.fullmatch(csrf) or not hmac.compare_digest(csrf, session.csrf):
            raise AuthError(403, f"missing or wrong {CSRF_HEADER}: reload the page")
        if origin is not None and host is not None and origin.split("://", 1)[-1] != host:
            raise AuthError(403, f"cross-site request from {origin} refused")
        return session

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())
