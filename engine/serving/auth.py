"""Bearer tokens and roles: who may call which method.

A token is a random secret that a client sends as `authorization: Bearer <token>` metadata;
the config keeps only its SHA-256 (`[[tokens]]` tables of name, sha256 and roles), so a config
file that leaks leaks no credential. Every RPC but health and reflection needs a token with
the method's role: `score` (Score, ScoreBatch), `report` (ReportOutcomes, ReportEvent),
`forecast` (Forecast, GetForecastModel) or `admin` (ModelAdmin, loading and rolling back
forecast models, and the operational alerts). A missing or unknown token gets
UNAUTHENTICATED, a token without the role PERMISSION_DENIED. A presented token is hashed and
compared with every entry in constant time (`hmac.compare_digest`, no early exit), so timing
tells nothing of how close a guess was. With no tokens configured every RPC is open, which
the engine logs at start-up.

Under mutual TLS (`engine.serving.tls`) a client may instead present a certificate whose
subject's organizational units name its roles (`OU=score`): a call with no bearer token is
checked against those. With mutual TLS on, calls are checked even with no tokens configured.

Standard library and grpc only: the front processes check calls with it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from engine.serving.frames import SERVICES
from engine.serving.tls import cert_name, cert_roles

ROLES = ("score", "report", "admin", "forecast", "review", "route")
METHOD_ROLE = {
    "/ordersight.v1.OrderRisk/Score": "score",
    "/ordersight.v1.OrderRisk/ScoreBatch": "score",
    "/ordersight.v1.OrderRisk/ReportOutcomes": "report",
    "/ordersight.v1.OrderRisk/ReportEvent": "report",
    "/ordersight.v1.OrderRisk/ListAlerts": "admin",
    "/ordersight.v1.OrderRisk/WatchAlerts": "admin",
    "/ordersight.v1.ModelAdmin/ListModels": "admin",
    "/ordersight.v1.ModelAdmin/GetStatus": "admin",
    "/ordersight.v1.ModelAdmin/LoadModel": "admin",
    "/ordersight.v1.ModelAdmin/Rollback": "admin",
    "/ordersight.v1.ModelAdmin/SetChallenger": "admin",
    "/ordersight.v1.ModelAdmin/ClearChallenger": "admin",
    "/ordersight.v1.Forecasting/Forecast": "forecast",
    "/ordersight.v1.Forecasting/GetForecastModel": "forecast",
    "/ordersight.v1.Forecasting/LoadForecastModel": "admin",
    "/ordersight.v1.Forecasting/RollbackForecastModel": "admin",
    "/ordersight.v1.Reviews/ListReviews": "review",
    "/ordersight.v1.Reviews/GetReview": "review",
    "/ordersight.v1.Reviews/ResolveReview": "review",
    **{f"/ordersight.v1.Routing/{name}": "route" for name in SERVICES["ordersight.v1.Routing"]},
}


@dataclass(frozen=True)
class Token:
    name: str
    digest: bytes  # SHA-256 of the secret
    roles: frozenset[str]


def new_token() -> str:
    """A fresh secret: 32 random bytes as hex (never starting with '-', which a command line
    would take for an option)."""
    return secrets.token_hex(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_tokens(entries: Sequence[Any]) -> tuple[Token, ...]:
    """`[[tokens]]` entries as Tokens; ValueError names the entry and the field."""
    out = []
    for i, e in enumerate(entries):
        where = f"tokens[{i}]"
        if not isinstance(e, dict):
            raise ValueError(f"{where}: must be a table of name, sha256 and roles")
        unknown = sorted(set(e) - {"name", "sha256", "roles"})
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}")
        name, digest, roles = e.get("name"), e.get("sha256"), e.get("roles")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}.name: required, a non-empty string")
        try:
            raw = bytes.fromhex(digest) if isinstance(digest, str) else b""
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise ValueError(f"{where}.sha256: must be 64 hex digits (ordersight token prints it)")
        if not isinstance(roles, list) or not roles or not set(roles) <= set(ROLES):
            raise ValueError(f"{where}.roles: a non-empty list of {', '.join(ROLES)}")
        out.append(Token(name, raw, frozenset(roles)))
    return tuple(out)


def write_tokens(tokens: Sequence[Token], path: Path) -> None:
    """The table (digests, not secrets) for the front processes, readable by the owner only."""
    path.touch(mode=0o600)
    rows = [{"name": t.name, "sha256": t.digest.hex(), "roles": sorted(t.roles)} for t in tokens]
    path.write_text(json.dumps(rows))


def read_tokens(path: str | Path) -> tuple[Token, ...]:
    return parse_tokens(json.loads(Path(path).read_text()))


class Authorizer:
    def __init__(self, tokens: Sequence[Token], certs: bool = False) -> None:
        self.tokens = tuple(tokens)
        self.certs = certs  # client certificates' OU roles count (mutual TLS)

    def check(
        self, method: str, metadata: Any, context: grpc.aio.ServicerContext | None = None
    ) -> tuple[grpc.StatusCode, str] | None:
        """Why the call may not go on (status, message), or None when it may. Health and
        reflection are never guarded (load balancers and grpcurl reach them first)."""
        presented = None
        for key, value in metadata or ():
            if key == "authorization" and isinstance(value, str):
                presented = value
        if presented is None and self.certs and context is not None:
            return self._check_cert(method, context)
        if presented is None or presented[:7].lower() != "bearer ":  # RFC 6750: any case
            return grpc.StatusCode.UNAUTHENTICATED, (
                "credential required: send metadata 'authorization: Bearer <token>'"
            )
        digest = hashlib.sha256(presented[len("Bearer ") :].strip().encode()).digest()
        match = None
        for t in self.tokens:  # every entry, so the time does not depend on which matched
            if hmac.compare_digest(t.digest, digest):
                match = t
        if match is None:
            return grpc.StatusCode.UNAUTHENTICATED, "unknown token"
        return _permitted(method, f"token '{match.name}'", match.roles)

    def _check_cert(
        self, method: str, context: grpc.aio.ServicerContext
    ) -> tuple[grpc.StatusCode, str] | None:
        roles = cert_roles(context) & set(ROLES)
        if not roles:
            return grpc.StatusCode.UNAUTHENTICATED, (
                "credential required: a bearer token ('authorization: Bearer <token>'), or a "
                f"client certificate whose subject names roles (OU={'|'.join(ROLES)})"
            )
        return _permitted(method, f"client certificate '{cert_name(context)}'", roles)


def _permitted(
    method: str, who: str, roles: frozenset[str] | set[str]
) -> tuple[grpc.StatusCode, str] | None:
    """PERMISSION_DENIED unless `roles` hold the method's role (a method not listed needs
    the strictest, admin)."""
    role = METHOD_ROLE.get(method, "admin")
    if role in roles:
        return None
    return grpc.StatusCode.PERMISSION_DENIED, (
        f"{who} lacks the role '{role}' that {method.lstrip('/')} needs "
        f"(it has: {', '.join(sorted(roles))})"
    )


Unary = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
Stream = Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]


def guard_unary(auth: Authorizer | None, method: str, handler: Unary) -> Unary:
    """`handler`, refusing first what `auth` refuses (no check at all without `auth`). In
    the handler rather than a server interceptor: grpc.aio's interceptors add an awaited
    layer to every call."""
    if auth is None:
        return handler

    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        denied = auth.check(method, context.invocation_metadata(), context)
        if denied is not None:
            await context.abort(*denied)
        return await handler(request, context)

    return guarded


def guard_stream(auth: Authorizer | None, method: str, handler: Stream) -> Stream:
    """`guard_unary` for a server-streaming handler."""
    if auth is None:
        return handler

    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        denied = auth.check(method, context.invocation_metadata(), context)
        if denied is not None:
            await context.abort(*denied)
        async for item in handler(request, context):
            yield item

    return guarded
