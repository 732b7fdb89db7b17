"""The review page's sessions: an opaque id (the cookie's value) mapped to the signed-in
name, a CSRF token and a one-shot confirmation, in memory and bounded."""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

MAX_SESSIONS = 1024
SESSION_S = 12 * 3600.0  # a working day, then sign in again


@dataclass
class Session:
    sid: str
    csrf: str
    expires: float  # on the sessions' clock
    name: str = ""  # the signed-in token's name ("" = not signed in)
    reviewer: str = ""  # on the open page: the name typed last, offered again
    flash: str = ""  # a confirmation shown once, on the next queue page


class Sessions:
    """Sessions by id in two pools, each bounded (past `limit`, its least recently used is
    dropped): signed-in ones, which only a valid token makes, and anonymous ones (the open
    page, a login form), which anyone can make, so that a flood of them signs no analyst out."""

    def __init__(self, clock: Callable[[], float], limit: int = MAX_SESSIONS) -> None:
        self.clock = clock
        self.limit = limit
        self._pools: tuple[OrderedDict[str, Session], ...] = (OrderedDict(), OrderedDict())

    def get(self, sid: str | None) -> Session | None:
        for pool in self._pools:
            s = pool.get(sid or "")
            if s is not None and self.clock() >= s.expires:
                del pool[s.sid]
            elif s is not None:
                pool.move_to_end(s.sid)
                return s
        return None

    def new(self, name: str = "") -> Session:
        pool = self._pools[bool(name)]
        while len(pool) >= self.limit:
            pool.popitem(last=False)
        token = secrets.token_urlsafe
        s = Session(token(32), token(32), self.clock() + SESSION_S, name)
        pool[s.sid] = s
        return s

    def drop(self, sid: str) -> None:
        for pool in self._pools:
            pool.pop(sid, None)

    def __len__(self) -> int:
        return sum(len(pool) for pool in self._pools)
