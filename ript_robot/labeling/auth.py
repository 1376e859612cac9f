"""Pairing a tablet with the workstation, and the checks every request passes.

The workstation shows a one-time six-digit code (in the terminal and the launch log). A
tablet that enters it gets a session: a random token in an HttpOnly, SameSite=Strict
cookie, plus a CSRF token the page sends back in the `X-CSRF-Token` header of every
write. A code works once, expires after `code_ttl_s`, and is replaced after
`max_attempts` wrong guesses, so it cannot be brute-forced. Only hashes of the session
tokens are kept. Reads need a session too: the live view shows the lab.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

SESSION_COOKIE = "ript_session"
CSRF_HEADER = "X-CSRF-Token"


class AuthError(Exception):
    """A request without a valid session (401) or without its CSRF token (403)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Session:
    """A paired tablet: the name it gave (recorded as the labeler) and its CSRF token."""

    name: str
    csrf: str
    paired_at: float


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Pairing:
    """One-time pairing codes and the sessions they open (thread-safe)."""

    def __init__(
        self,
        code_ttl_s: float = 600.0,
        max_attempts: int = 5,
        announce: Callable[[str, float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        """code_ttl_s: seconds (> 0) a code stays valid; max_attempts: wrong codes (>= 1) before a new
        one; announce(code, ttl_s): shows each new code on the workstation."""
        if code_ttl_s <= 0 or max_attempts < 1:
            raise ValueError(f"code_ttl_s must be > 0 and max_attempts >= 1, got {code_ttl_s}, {max_attempts}")
        self.code_ttl_s = code_ttl_s
        self.max_attempts = max_attempts
        self.announce = announce
        self.clock = clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._code = ""
        self._code_expires = 0.0
        self._failures = 0
        self.new_code()

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

    def pair(self, code: str, name: str) -> tuple[str, Session]:
        """Exchange the current code for a session; returns (token, session). Raises AuthError."""
        name = " ".join(name.split())[:40]
        if not name:
            raise AuthError(400, "give this tablet a name (it is recorded with every label it gives)")
        with self._lock:
            if self.clock() >= self._code_expires:
                self._new_code()
                raise AuthError(403, "that code has expired; enter the new code shown on the workstation")
            if not hmac.compare_digest(code.strip().replace(" ", ""), self._code):
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
        session = self._sessions.get(_digest(token)) if token else None
        if session is None:
            raise AuthError(401, "this tablet is not paired: enter the code shown on the workstation")
        return session

    def check_write(self, token: str | None, csrf: str | None, origin: str | None, host: str | None) -> Session:
        """A state-changing request: a session, its CSRF token, and (when the browser sends one) our origin."""
        session = self.session(token)
        if not csrf or not hmac.compare_digest(csrf, session.csrf):
            raise AuthError(403, f"missing or wrong {CSRF_HEADER}: reload the page")
        if origin is not None and host is not None and origin.split("://", 1)[-1] != host:
            raise AuthError(403, f"cross-site request from {origin} refused")
        return session

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())
