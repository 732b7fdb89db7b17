"""The engine's HTTP port (`host`:`metrics_port`): Prometheus `/metrics` and the analysts'
review page, one aiohttp application in the engine's own event loop.

`/metrics` needs no credential (under mutual TLS the handshake admits only clients with a
certificate from `tls_client_ca`) and answers as prometheus_client's own server does:
OpenMetrics when asked for, gzip when accepted, `name[]` to select families; the text is
rendered on a worker thread, so a scrape never holds the loop.

The page (`templates/`, every order field escaped): `GET /reviews`, the open queue oldest
first, filtered and paged with the store's keyset; `GET /reviews/{order_id}`, one case;
`POST /reviews/{order_id}/resolve` (verdict, note) calls `Reviews.resolver`, which resolves
the case, stores the verdict as an outcome and teaches the state, then redirects (303) to
the queue with a confirmation.

Access follows gRPC's `Authorizer`, built the same way: with tokens configured or mutual TLS
the page needs the `review` role, from a bearer token pasted on `/login` or a client
certificate with `OU=review`, and the reviewer recorded is the token's (certificate's) name.
With neither, the page is open and the form asks for the reviewer's name.

Sessions: an opaque random id in an HttpOnly, SameSite=Strict cookie (Secure under TLS),
named after the port so that engines on one host keep theirs apart; the engine maps it to
the signed-in name (never the token), a CSRF token and a one-shot confirmation. Each lasts
SESSION_S; at most MAX_SESSIONS signed-in and as many anonymous ones are kept (`Sessions`).
Every POST must carry its session's CSRF token (403 otherwise, before anything else is
read). A body over MAX_BODY is refused (413); a page lists at most
`engine.serving.reviews.MAX_PAGE` cases.
"""

from __future__ import annotations

import asyncio
import gzip
import hmac
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import parse_qsl, quote, urlencode

import grpc
from aiohttp import web
from jinja2 import Environment, PackageLoader, StrictUndefined
from ordersight.v1 import risk_pb2 as pb
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import choose_encoder, gzip_accepted

from engine.decision.policy import TRIGGERS
from engine.errors import Conflict, InvalidInput, NotFound, OrderSightError, Unconfigured
from engine.serving.auth import Authorizer, Token, hash_token
from engine.serving.reviews import Reviews, check_resolution, list_args, page_token
from engine.serving.tls import TlsFiles, http_ssl_context
from engine.serving.web_sessions import SESSION_S, Session, Sessions
from engine.store.base import Case
from engine.store.cases import FACTS
from engine.store.tables import MAX_NOTE

MAX_BODY = 64 << 10  # bytes of a request body: a verdict's form is a few KiB at most
REVIEW_METHOD = "/ordersight.v1.Reviews/ResolveReview"  # the page needs what this RPC needs
FILTERS = ("trigger", "channel", "min_amount", "max_amount", "min_age", "page_size")
_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409, grpc.StatusCode.RESOURCE_EXHAUSTED: 503,
    grpc.StatusCode.FAILED_PRECONDITION: 503, grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}  # fmt: skip
VERDICT_WORDS = {"FRAUD": "declined (fraud)", "LEGITIMATE": "approved (legitimate)"}
FLAG_FACTS = {FACTS[k] for k in ("key_account", "billing_shipping_mismatch", "ip_billing_mismatch")}
SHARE_FACTS = {FACTS["risky_category_share"]}
_PAGE_HEADERS = {
    # No script runs on the page; its CSS is inline; forms post only to the engine itself.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",  # URLs hold order ids
    "Cache-Control": "no-store",
}
_FILTERS: dict[str, Callable[[Any], str]] = {
    "q": lambda s: quote(str(s), safe=""),  # a path segment: '/' and '?' too
    "utc": lambda t: datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
}


class _Reply(Exception):
    """An early answer (a redirect to /login, a refusal), returned by the middleware."""

    def __init__(self, response: web.Response) -> None:
        self.response = response


@dataclass
class _Visit:
    """One request's session and reviewer, as its handler learns them."""

    request: web.Request
    session: Session | None
    new: bool = False  # the session began with this request: its cookie goes with the answer
    who: str = ""


class _Peer:
    """A verified client certificate as the gRPC auth context `Authorizer.check` reads
    (subject as RFC 4514 text, common name): certificate roles follow one rule on both ports."""

    def __init__(self, cert: Mapping[str, Any]) -> None:
        rdns = [(k, str(v)) for rdn in cert.get("subject", ()) for k, v in rdn]
        self.name = next((v for k, v in rdns if k == "commonName"), "?")
        keys = {"commonName": "CN", "organizationalUnitName": "OU"}
        subject = ",".join(f"{keys.get(k, k)}={v}".replace(",", "\\,") for k, v in rdns)
        self._context = {
            "x509_subject": [subject.encode()],
            "x509_common_name": [self.name.encode()],
        }

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._context


class HttpServer:
    """The HTTP port's application; `start` listens, `stop` finishes in-flight requests."""

    def __init__(
        self,
        registry: CollectorRegistry,
        reviews: Reviews | None,
        tokens: tuple[Token, ...],
        tls: TlsFiles,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry, self.reviews, self.tls = registry, reviews, tls
        self.auth = Authorizer(tokens, certs=tls.mutual) if tokens or tls.mutual else None
        self.sessions = Sessions(clock)
        self.cookie = "ordersight_session"
        loader = PackageLoader("engine.serving", "templates")
        self.env = Environment(loader=loader, autoescape=True, undefined=StrictUndefined)
        self.env.filters.update(_FILTERS)
        self.m_requests = Counter(
            "ordersight_http_requests", "Requests to the HTTP port, by route and status",
            ["path", "status"], registry=registry,
        )  # fmt: skip
        self.app = web.Application(client_max_size=MAX_BODY, middlewares=[self._middleware])
        for method, path, handler in (
            ("GET", "/metrics", self._metrics), ("GET", "/", self._home),
            ("GET", "/login", self._login_form), ("POST", "/login", self._login),
            ("POST", "/logout", self._logout), ("GET", "/reviews", self._queue),
            ("GET", "/reviews/{order_id}", self._case),
            ("POST", "/reviews/{order_id}/resolve", self._resolve),
        ):  # fmt: skip
            self.app.router.add_route(method, path, handler)
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int, grace_s: float = 5.0) -> None:
        self.cookie = f"ordersight_session_{port}"
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=grace_s)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port, ssl_context=http_ssl_context(self.tls)).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- plumbing -------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        status = 500
        try:
            try:
                response = await handler(request)
            except _Reply as reply:
                response = reply.response
            status = response.status
        except web.HTTPException as exc:  # aiohttp's own: 404, 405, 413
            status = exc.status
            raise
        finally:
            route = request.match_info.route.resource
            self.m_requests.labels(route.canonical if route else "unmatched", str(status)).inc()
        if response.content_type == "text/html":
            response.headers.update(_PAGE_HEADERS)
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    def _visit(self, request: web.Request) -> _Visit:
        return _Visit(request, self.sessions.get(request.cookies.get(self.cookie)))

    def _begin(self, v: _Visit) -> Session:
        """The visit's session; a new anonymous one (its cookie set on the answer) when it
        has none."""
        if v.session is None:
            v.session, v.new = self.sessions.new(), True
        return v.session

    def _who(self, v: _Visit) -> str:
        """The signed-in reviewer's name ("" on the open page); otherwise a redirect to
        /login, or a refusal (a POST, a certificate lacking the role)."""
        if self.auth is None:
            return ""
        v.who = v.session.name if v.session else ""
        transport = v.request.transport
        cert = transport.get_extra_info("peercert") if transport else None
        if not v.who and self.auth.certs and cert:
            peer = _Peer(cert)
            denied = self.auth.check(REVIEW_METHOD, (), cast(Any, peer))
            if denied is None:
                v.who = peer.name
            elif not self.auth.tokens:
                raise _Reply(self._message(v, 403, "Not allowed", denied[1]))
        if v.who:
            return v.who
        if not self.auth.tokens:  # mutual TLS alone: only a certificate can say who
            text = "The page needs a client certificate with the role review (OU=review)."
            raise _Reply(self._message(v, 403, "Not allowed", text))
        if v.request.method == "GET":
            raise _Reply(self._redirect(v, "/login"))
        raise _Reply(self._message(v, 401, "Sign in first", "Sign in on /login."))

    def _check_csrf(self, v: _Visit, form: Mapping[str, Any]) -> Session:
        token = form.get("csrf")
        if v.session is None or not isinstance(token, str) or not hmac.compare_digest(
            token.encode(), v.session.csrf.encode()
        ):  # fmt: skip
            text = "403: the form's security token is missing or out of date; reload the page"
            raise _Reply(web.Response(status=403, text=text))
        return v.session

    def _answer(self, v: _Visit, response: web.Response) -> web.Response:
        if v.new and v.session is not None:
            response.set_cookie(
                self.cookie, v.session.sid, max_age=int(SESSION_S), path="/", httponly=True,
                samesite="Strict", secure=self.tls.on,
            )  # fmt: skip
        return response

    def _redirect(self, v: _Visit, location: str) -> web.Response:
        return self._answer(v, web.Response(status=303, headers={"Location": location}))

    def _page(self, v: _Visit, template: str, status: int = 200, **ctx: Any) -> web.Response:
        html = self.env.get_template(template).render(
            who=v.who, guarded=self.auth is not None,
            sign_in=self.auth is not None and bool(self.auth.tokens),
            csrf=v.session.csrf if v.session else "", **ctx,
        )  # fmt: skip
        return self._answer(v, web.Response(text=html, status=status, content_type="text/html"))

    def _message(self, v: _Visit, status: int, title: str, text: str) -> web.Response:
        return self._page(v, "message.html", status, title=title, message=text)

    def _store(self, v: _Visit) -> Reviews:
        if self.reviews is None:
            text = "This engine runs without a store (setting `store`): it keeps no cases."
            raise _Reply(self._message(v, 503, "No review queue", text))
        return self.reviews

    # --- /metrics and signing in ------------------------------------------------------------------

    async def _metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        names = request.query.getall("name[]", [])
        registry: Any = self.registry.restricted_registry(names) if names else self.registry
        zipped = gzip_accepted(request.headers.get("Accept-Encoding", ""))

        def render() -> bytes:
            text = encoder(registry)
            return gzip.compress(text) if zipped else text

        body = await asyncio.get_running_loop().run_in_executor(None, render)
        headers = {"Content-Type": content_type}
        if zipped:
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, headers=headers)

    async def _home(self, request: web.Request) -> web.Response:
        return self._redirect(self._visit(request), "/reviews")

    async def _login_form(self, request: web.Request) -> web.Response:
        v = self._visit(request)
        if self.auth is None or not self.auth.tokens:
            return self._redirect(v, "/reviews")
        self._begin(v)
        return self._page(v, "login.html", error="")

    async def _login(self, request: web.Request) -> web.Response:
        v = self._visit(request)
        form = await request.post()
        session = self._check_csrf(v, form)
        if self.auth is None or not self.auth.tokens:
            return self._redirect(v, "/reviews")
        secret = str(form.get("token", "")).strip()
        denied = self.auth.check(REVIEW_METHOD, (("authorization", f"Bearer {secret}"),))
        if denied is not None:
            status = 401 if denied[0] == grpc.StatusCode.UNAUTHENTICATED else 403
            return self._page(v, "login.html", status, error=denied[1])
        digest, name = bytes.fromhex(hash_token(secret)), ""
        for t in self.auth.tokens:  # every entry, as Authorizer.check compares them
            if hmac.compare_digest(t.digest, digest):
                name = t.name
        self.sessions.drop(session.sid)  # a new id once signed in: no fixation
        v.session, v.new = self.sessions.new(name), True
        return self._redirect(v, "/reviews")

    async def _logout(self, request: web.Request) -> web.Response:
        v = self._visit(request)
        self.sessions.drop(self._check_csrf(v, await request.post()).sid)
        v.session = None
        return self._redirect(v, "/login" if self.auth and self.auth.tokens else "/reviews")

    # --- the review page ------------------------------------------------------------------------

    async def _queue(self, request: web.Request) -> web.Response:
        v = self._visit(request)
        self._who(v)
        reviews = self._store(v)
        session = self._begin(v)
        query = {k: request.query.get(k, "").strip() for k in FILTERS}
        chosen = {k: x for k, x in query.items() if x}
        flash, session.flash = session.flash, ""
        ctx: dict[str, Any] = dict(
            filters=query, triggers=TRIGGERS, flash=flash, cases=[], depth=None, next_url="",
            back=urlencode(chosen), now=reviews.wall(), error="",
        )  # fmt: skip
        try:
            f, limit, after = list_args(_list_request(query, request.query), reviews.wall())
        except InvalidInput as exc:
            return self._page(v, "queue.html", 400, **{**ctx, "error": str(exc)})
        cases, ctx["depth"] = await reviews.list_cases(f, limit + 1, after)
        if len(cases) > limit:
            token = page_token(cases[limit - 1])
            ctx["next_url"] = "/reviews?" + urlencode({**chosen, "page": token})
        ctx["cases"] = cases[:limit]
        return self._page(v, "queue.html", **ctx)

    async def _case(self, request: web.Request) -> web.Response:
        v = self._visit(request)
        self._who(v)
        reviewer = self._begin(v).reviewer
        case = await self._get_case(v)
        back = _back(request.query.get("back", ""))
        return self._case_page(v, 200, case, back, reviewer, "", "")

    async def _resolve(self, request: web.Request) -> web.Response:
        v = self._visit(request)
        form = await request.post()
        session = self._check_csrf(v, form)
        who = self._who(v)
        reviews = self._store(v)
        verdict, note = str(form.get("verdict", "")), str(form.get("note", ""))
        reviewer = who or str(form.get("reviewer", ""))
        back = _back(str(form.get("back", "")))
        try:
            order_id, verdict, reviewer, note = check_resolution(
                request.match_info["order_id"], verdict, reviewer, note
            )
            if reviews.resolver is None:
                raise Unconfigured("the review queue is not wired to the engine")
            await reviews.resolver(order_id, verdict, reviewer, note)
        except (InvalidInput, Conflict) as exc:  # the case again, saying why
            case = await self._get_case(v)
            error = str(exc)
            if isinstance(exc, Conflict):
                verdict = VERDICT_WORDS.get(case.verdict or "", "?")
                error = f"This case was resolved already: {verdict} by {case.reviewer}."
            return self._case_page(v, _HTTP_STATUS[exc.code], case, back, reviewer, note, error)
        except NotFound:
            return self._no_case(v)
        except OrderSightError as exc:  # the engine stopping, its log down: try again later
            return self._message(v, _HTTP_STATUS.get(exc.code, 500), "Not resolved", str(exc))
        if not who:
            session.reviewer = reviewer
        session.flash = f"Order {order_id} {VERDICT_WORDS[verdict]}: the verdict is stored."
        return self._redirect(v, "/reviews" + (f"?{back}" if back else ""))

    async def _get_case(self, v: _Visit) -> Case:
        try:
            return await self._store(v).get_case(v.request.match_info["order_id"])
        except NotFound:
            raise _Reply(self._no_case(v)) from None

    def _no_case(self, v: _Visit) -> web.Response:
        text = f"No review case for order {v.request.match_info['order_id']}."
        return self._message(v, 404, "No such case", text)

    def _case_page(
        self, v: _Visit, status: int, case: Case, back: str, reviewer: str, note: str, error: str
    ) -> web.Response:
        return self._page(
            v, "case.html", status, case=case, back=back, reviewer=reviewer, note=note,
            error=error, trigger_codes=TRIGGERS, flags=FLAG_FACTS, shares=SHARE_FACTS,
            verdict_words=VERDICT_WORDS, now=self._store(v).wall(), max_note=MAX_NOTE,
        )  # fmt: skip


def _back(raw: str) -> str:
    """The queue's filters from a `back` value, as a query string: known filters only, so a
    redirect never leaves /reviews."""
    kept = [(k, v) for k, v in parse_qsl(raw[:2000]) if k in FILTERS and v]
    return urlencode(kept[: len(FILTERS)])


def _list_request(query: Mapping[str, str], raw: Mapping[str, str]) -> pb.ListReviewsRequest:
    """The queue's filters as a ListReviewsRequest, for `list_args` to check as gRPC's are;
    InvalidInput names a field that is not a number of the right kind."""
    if query["trigger"] and query["trigger"] not in TRIGGERS:
        raise InvalidInput(f"trigger: one of {', '.join(TRIGGERS)}, not {query['trigger']!r}")
    n = {k: _number(query, k) for k in ("min_amount", "max_amount", "min_age", "page_size")}
    if n["min_age"] * 60 >= 2**32:
        raise InvalidInput(f"min_age: at most {(2**32 - 1) // 60} minutes", "min_age")
    if not n["page_size"].is_integer() or n["page_size"] >= 2**32:
        raise InvalidInput(f"page_size: a whole number, not {query['page_size']!r}", "page_size")
    return pb.ListReviewsRequest(
        trigger=query["trigger"], channel=query["channel"], min_age_s=int(n["min_age"] * 60),
        min_amount=n["min_amount"], max_amount=n["max_amount"], page_size=int(n["page_size"]),
        page_token=raw.get("page", ""),
    )  # fmt: skip


def _number(query: Mapping[str, str], name: str) -> float:
    raw = query[name]
    try:
        value = float(raw) if raw else 0.0
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise InvalidInput(f"{name}: a number of at least 0, not {raw!r}", name)
    return value
