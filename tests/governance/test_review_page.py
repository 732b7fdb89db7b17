"""The analysts' review page on the engine's HTTP port: a real server scoring simulated orders
into a real SQLite store, Debian's Chromium driven headless by Selenium through Debian's
chromedriver (so Selenium Manager downloads nothing), and a plain HTTP client for what a
browser would never send."""

from __future__ import annotations

import gzip
import html
import http.cookiejar
import re
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import grpc
import pyarrow as pa
import pytest
from ordersight.v1 import risk_pb2 as pb
from ordersight.v1 import risk_pb2_grpc as pb_grpc
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.ui import Select, WebDriverWait

from engine.decision.policy import TRIGGERS
from engine.serving.auth import hash_token, new_token
from engine.serving.web_sessions import SESSION_S, Sessions
from engine.store import open_store
from tests.certs import Authority
from tests.grpc_harness import TIMEOUT_S, RunningServer, orders_of
from tests.services import free_port

SECRETS = {"review": new_token(), "score": new_token()}
TOKENS = [
    {"name": "analyst-1", "sha256": hash_token(SECRETS["review"]), "roles": ["review", "score"]},
    {"name": "checkout", "sha256": hash_token(SECRETS["score"]), "roles": ["score"]},
]
REVIEWER_MD = (("authorization", f"Bearer {SECRETS['review']}"),)
HOSTILE_ID = '<script>document.title="owned"</script>'
HOSTILE_CHANNEL = "<img src=x onerror=alert(1)>"
CHROMIUM_ARGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run",
)  # fmt: skip


@dataclass
class Page:
    srv: RunningServer
    base: str
    store: str
    orders: list[pb.Order]
    decisions: dict[str, pb.Decision]  # the REVIEW decisions, by order id
    md: tuple[tuple[str, str], ...] = ()

    def open_cases(self) -> list[pb.ReviewCase]:
        stub, out, token = pb_grpc.ReviewsStub(self.srv.channel), [], ""
        while True:
            got = stub.ListReviews(
                pb.ListReviewsRequest(page_size=100, page_token=token), metadata=self.md,
                timeout=TIMEOUT_S,
            )  # fmt: skip
            out += list(got.cases)
            token = got.next_page_token
            if not token:
                return out

    def review(self, order_id: str) -> pb.ReviewCase:
        stub = pb_grpc.ReviewsStub(self.srv.channel)
        return stub.GetReview(
            pb.GetReviewRequest(order_id=order_id), metadata=self.md, timeout=TIMEOUT_S
        )

    def outcomes(self) -> list[dict[str, Any]]:
        s = open_store(self.store, migrate=False)
        try:
            return s.outcomes_table().to_pylist()
        finally:
            s.close()


def _start(tmp: Path, models_dir: Path, history: pa.Table, md: Any = (), **settings: Any) -> Page:
    store = str(tmp / "store.db")
    srv = RunningServer(
        models_dir, single_process=True, store=store, log_dir=str(tmp / "log"),
        metrics_port=free_port(), **settings,
    ).start()  # fmt: skip
    orders = orders_of(history.slice(2_000, 1_000))
    hostile = pb.Order()
    hostile.CopyFrom(orders[-1])  # worth 5,000.00: HIGH_VALUE, so a human decides
    hostile.order_id, hostile.channel, hostile.amount_minor = HOSTILE_ID, HOSTILE_CHANNEL, 500_000
    hostile.ClearField("items")
    hostile.items.add(sku="tv", category="electronics", quantity=1, unit_price_minor=500_000)
    req = pb.ScoreBatchRequest(orders=pb.OrderList(orders=[*orders, hostile]))
    decisions = srv.stub.ScoreBatch(req, metadata=md, timeout=TIMEOUT_S).decisions
    assert srv.server is not None and srv.server.reviews is not None
    srv.server.reviews.flush()
    reviewed = {d.order_id: d for d in decisions if d.action == pb.REVIEW}
    assert HOSTILE_ID in reviewed and len(reviewed) > 20
    base = f"http://127.0.0.1:{srv.settings.metrics_port}"
    return Page(srv, base, store, [*orders, hostile], reviewed, tuple(md))


@pytest.fixture(scope="module")
def open_page(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path, history: pa.Table
) -> Iterator[Page]:
    """An engine without tokens: the page is open and asks for the reviewer's name."""
    page = _start(tmp_path_factory.mktemp("open"), models_dir, history)
    yield page
    page.srv.stop()


@pytest.fixture(scope="module")
def guarded_page(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path, history: pa.Table
) -> Iterator[Page]:
    page = _start(tmp_path_factory.mktemp("guarded"), models_dir, history, REVIEWER_MD,
                  tokens=TOKENS)  # fmt: skip
    yield page
    page.srv.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in (*CHROMIUM_ARGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(TIMEOUT_S)
    yield driver
    driver.quit()


# --- a plain HTTP client ---------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: Any
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 303 itself is the answer


class Client:
    """urllib with a cookie jar of its own; redirects are answers, not followed."""

    def __init__(self, base: str, context: ssl.SSLContext | None = None) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        handlers: list[Any] = [urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect()]
        if context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=context))
        self.opener = urllib.request.build_opener(*handlers)

    def get(self, path: str, **headers: str) -> Answer:
        return self._send(urllib.request.Request(self.base + path, headers=headers))

    def post(self, path: str, fields: dict[str, str]) -> Answer:
        return self._send(urllib.request.Request(self.base + path, urlencode(fields).encode()))

    def csrf(self, path: str) -> str:
        found = re.search(r'name="csrf" value="([^"]+)"', self.get(path).text)
        assert found, f"no CSRF field on {path}"
        return found.group(1)

    def _send(self, req: urllib.request.Request) -> Answer:
        try:
            with self.opener.open(req, timeout=TIMEOUT_S) as r:
                return Answer(r.status, r.headers, r.read())
        except urllib.error.HTTPError as e:
            return Answer(e.code, e.headers, e.read())


def _ordinary(page: Page) -> list[pb.ReviewCase]:
    """The open cases but the hostile one (which other tests look at)."""
    return [c for c in page.open_cases() if c.order_id != HOSTILE_ID]


def _case_url(order_id: str) -> str:
    return "/reviews/" + quote(order_id, safe="")


def _rows(driver: WebDriver) -> list[str]:
    return [
        e.get_attribute("data-order") or ""
        for e in driver.find_elements(By.CSS_SELECTOR, "tr.case")
    ]


def _open_first_case(driver: WebDriver) -> str:
    """Open the oldest case of the queue but the hostile one (which other tests look at)."""
    for row in driver.find_elements(By.CSS_SELECTOR, "tr.case"):
        order_id = row.get_attribute("data-order") or ""
        if order_id != HOSTILE_ID:
            row.find_element(By.CSS_SELECTOR, "a.open").click()
            return order_id
    raise AssertionError("no case in the queue")


def _wait(driver: WebDriver, css: str) -> Any:
    return WebDriverWait(driver, TIMEOUT_S).until(lambda d: d.find_element(By.CSS_SELECTOR, css))


def _submit(driver: WebDriver, button: str) -> None:
    """Click a form's button and wait until the page it leaves is gone, so that what is
    looked up next is on the answer (the old page may hold the same ids)."""
    old = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.ID, button).click()
    WebDriverWait(driver, TIMEOUT_S).until(staleness_of(old))


# --- the open page ---------------------------------------------------------------------------


def test_an_analyst_declines_a_case_and_it_becomes_an_outcome(
    open_page: Page, browser: WebDriver
) -> None:
    before = open_page.open_cases()
    browser.get(open_page.base + "/reviews")
    assert browser.find_element(By.ID, "depth").text.startswith(f"{len(before)} open cases")
    assert _rows(browser) == [c.order_id for c in before[:50]]  # oldest first, as gRPC lists
    order_id = _open_first_case(browser)
    assert _wait(browser, "#order-id").text == order_id
    decision = open_page.decisions[order_id]
    shown = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "tr.reason td.message")]
    assert shown == [r.message for r in decision.reasons if r.code not in TRIGGERS] and shown
    shares = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "tr.reason td.share")]
    assert all(s.endswith("%") for s in shares)
    triggers = browser.find_element(By.ID, "triggers").text
    for t in decision.review_triggers:
        assert t in triggers
    if "HIGH_VALUE" in decision.review_triggers:
        assert "amount at or above the review threshold" in triggers
    assert browser.find_element(By.ID, "facts").text  # the key facts, in words
    browser.find_element(By.ID, "reviewer").send_keys("ana")
    browser.find_element(By.ID, "note").send_keys("card reported stolen")
    browser.find_element(By.ID, "decline").click()
    flash = _wait(browser, "#flash").text
    assert order_id in flash and "declined" in flash
    assert browser.current_url.endswith("/reviews")
    assert order_id not in _rows(browser)
    assert browser.find_element(By.ID, "depth").text.startswith(f"{len(before) - 1} open cases")
    got = open_page.review(order_id)
    assert (got.status, got.verdict, got.reviewer) == ("resolved", pb.FRAUD, "ana")
    mine = [r for r in open_page.outcomes() if r["order_id"] == order_id]
    assert [(r["kind"], r["is_fraud"], r["reviewer"], r["note"]) for r in mine] == [
        ("REVIEW_VERDICT", True, "ana", "card reported stolen")
    ]
    browser.get(open_page.base + _case_url(order_id))  # the case now says who decided
    assert "declined (fraud) by ana" in browser.find_element(By.ID, "resolution").text
    assert not browser.find_elements(By.ID, "decline")


def test_the_queue_filters_and_pages_as_the_store_lists(
    open_page: Page, browser: WebDriver
) -> None:
    cases = open_page.open_cases()
    browser.get(open_page.base + "/reviews?page_size=7")
    seen = _rows(browser)
    while browser.find_elements(By.ID, "next"):
        _submit(browser, "next")  # each page's rows read from the page, not the one it left
        seen += _rows(browser)
    assert seen == [c.order_id for c in cases]
    browser.get(open_page.base + "/reviews")
    Select(browser.find_element(By.ID, "f-trigger")).select_by_value("HIGH_VALUE")
    browser.find_element(By.ID, "f-min-amount").send_keys("100")
    _submit(browser, "filter")
    _wait(browser, "#depth")
    want = [c.order_id for c in cases if "HIGH_VALUE" in c.review_triggers and c.amount >= 100]
    assert _rows(browser) == want[:50] and want
    # a case opened from a filtered queue leads back to the same filter
    old = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.CSS_SELECTOR, "tr.case a.open").click()
    WebDriverWait(browser, TIMEOUT_S).until(staleness_of(old))
    _submit(browser, "back")
    assert _rows(browser) == want[:50]
    client = Client(open_page.base)
    for query, field in (("min_amount=abc", "min_amount"), ("page_size=501", "page_size"),
                         ("trigger=NOPE", "trigger"), ("min_amount=9&max_amount=1", "min_amount"),
                         ("page=%25%25", "page_token")):  # fmt: skip
        got = client.get(f"/reviews?{query}")
        assert got.status == 400 and f'id="error">{field}:' in got.text, (query, got.text)


def test_a_hostile_order_id_and_channel_are_shown_as_text(
    open_page: Page, browser: WebDriver
) -> None:
    browser.get(open_page.base + _case_url(HOSTILE_ID))
    assert browser.find_element(By.ID, "order-id").text == HOSTILE_ID
    assert browser.find_element(By.ID, "channel").text == HOSTILE_CHANNEL
    assert browser.title != "owned" and not browser.find_elements(By.TAG_NAME, "script")
    assert not browser.find_elements(By.TAG_NAME, "img")
    client = Client(open_page.base)
    for path in (_case_url(HOSTILE_ID), "/reviews?page_size=500"):
        page = client.get(path).text
        assert "&lt;script&gt;document.title=&#34;owned&#34;&lt;/script&gt;" in page
        assert "<script" not in page and "<img" not in page
    browser.get(open_page.base + "/reviews?page_size=500")
    assert HOSTILE_ID in _rows(browser)


def test_resolving_a_case_resolved_meanwhile_says_by_whom(
    open_page: Page, browser: WebDriver
) -> None:
    case = _ordinary(open_page)[1]
    browser.get(open_page.base + _case_url(case.order_id))
    pb_grpc.ReviewsStub(open_page.srv.channel).ResolveReview(
        pb.ResolveReviewRequest(order_id=case.order_id, verdict=pb.LEGITIMATE, reviewer="bo"),
        timeout=TIMEOUT_S,
    )  # another analyst, while this page was open
    browser.find_element(By.ID, "reviewer").send_keys("ana")
    browser.find_element(By.ID, "decline").click()
    error = _wait(browser, "#error").text
    assert "resolved already" in error and "approved (legitimate) by bo" in error
    assert not browser.find_elements(By.ID, "decline")  # the page shows the resolution instead
    got = open_page.review(case.order_id)
    assert (got.verdict, got.reviewer) == (pb.LEGITIMATE, "bo")
    client = Client(open_page.base)
    csrf = client.csrf(_case_url(HOSTILE_ID))  # an open case's form
    again = client.post(_case_url(case.order_id) + "/resolve",
                        {"csrf": csrf, "verdict": "FRAUD", "reviewer": "cy"})  # fmt: skip
    assert again.status == 409 and "resolved already" in again.text


def test_a_post_without_its_sessions_csrf_token_is_refused(open_page: Page) -> None:
    order_id = _ordinary(open_page)[0].order_id
    path = _case_url(order_id) + "/resolve"
    client, other = Client(open_page.base), Client(open_page.base)
    client.get("/reviews")  # a session, but no token in the form
    fields = {"verdict": "FRAUD", "reviewer": "eve"}
    assert client.post(path, fields).status == 403
    assert client.post(path, {**fields, "csrf": "forged"}).status == 403
    assert other.post(path, {**fields, "csrf": client.csrf(_case_url(order_id))}).status == 403
    assert open_page.review(order_id).status == "open"
    # with its own token: the field rules of ResolveReview, naming the field
    csrf = client.csrf(_case_url(order_id))
    nameless = client.post(path, {"csrf": csrf, "verdict": "FRAUD"})
    assert nameless.status == 400 and 'id="error">reviewer: required' in nameless.text
    unknown = client.post(path, {"csrf": csrf, "verdict": "MAYBE", "reviewer": "eve"})
    assert unknown.status == 400 and "verdict: FRAUD or LEGITIMATE" in unknown.text
    long = client.post(
        path, {"csrf": csrf, "verdict": "FRAUD", "reviewer": "eve", "note": "n" * 2001}
    )
    assert long.status == 400 and "note: at most 2000" in long.text
    huge = client.post(
        path, {"csrf": csrf, "verdict": "FRAUD", "reviewer": "eve", "note": "n" * 70_000}
    )
    assert huge.status == 413
    assert open_page.review(order_id).status == "open"
    ok = client.post(path, {"csrf": csrf, "verdict": "LEGITIMATE", "reviewer": "eve"})
    assert ok.status == 303 and ok.headers["Location"] == "/reviews"


def test_verdicts_given_on_the_page_while_orders_are_scored(
    open_page: Page, history: pa.Table
) -> None:
    cases = _ordinary(open_page)[-10:]
    more = orders_of(history.slice(5_000, 2_000))
    failures: list[BaseException] = []

    def load() -> None:
        try:
            for i in range(0, len(more), 100):
                req = pb.ScoreBatchRequest(orders=pb.OrderList(orders=more[i : i + 100]))
                open_page.srv.stub.ScoreBatch(req, timeout=TIMEOUT_S)
        except BaseException as exc:
            failures.append(exc)

    t = threading.Thread(target=load)
    t.start()
    client = Client(open_page.base)
    for c in cases:
        fields = {
            "csrf": client.csrf(_case_url(c.order_id)),
            "verdict": "LEGITIMATE",
            "reviewer": "di",
        }
        assert client.post(_case_url(c.order_id) + "/resolve", fields).status == 303
    t.join(TIMEOUT_S)
    assert not t.is_alive() and not failures
    assert all(open_page.review(c.order_id).reviewer == "di" for c in cases)


def test_an_unknown_case_is_404(open_page: Page) -> None:
    client = Client(open_page.base)
    got = client.get("/reviews/no-such-order")
    assert got.status == 404 and "No review case for order no-such-order" in got.text
    csrf = client.csrf(_case_url(HOSTILE_ID))
    post = client.post(
        "/reviews/no-such-order/resolve", {"csrf": csrf, "verdict": "FRAUD", "reviewer": "a"}
    )
    assert post.status == 404


def test_metrics_still_serve_and_count_the_pages_requests(open_page: Page) -> None:
    client = Client(open_page.base)
    client.get("/reviews")
    client.get("/reviews/no-such-order")
    got = client.get("/metrics")
    assert got.status == 200 and got.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = got.text
    assert 'ordersight_http_requests_total{path="/reviews",status="200"}' in text
    assert 'ordersight_http_requests_total{path="/reviews/{order_id}",status="404"}' in text
    assert "ordersight_review_queue_depth" in text and "process_resident_memory_bytes" in text
    assert "ordersight_decisions_total" in text
    om = client.get("/metrics", Accept="application/openmetrics-text; version=1.0.0")
    assert om.headers["Content-Type"].startswith("application/openmetrics-text")
    assert om.text.rstrip().endswith("# EOF")
    zipped = client.get("/metrics", **{"Accept-Encoding": "gzip"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert "ordersight_review_queue_depth" in gzip.decompress(zipped.body).decode()
    one = client.get("/metrics?name[]=ordersight_review_queue_depth").text
    assert "ordersight_review_queue_depth" in one and "ordersight_decisions_total" not in one
    scraper = Client(open_page.base)
    assert scraper.get("/metrics").status == 200 and not scraper.jar  # no session for /metrics


# --- credentials -----------------------------------------------------------------------------


def test_signing_in_with_a_review_token(guarded_page: Page, browser: WebDriver) -> None:
    base = guarded_page.base
    browser.get(base + "/reviews")
    assert browser.current_url == base + "/login"
    for secret, words in ((SECRETS["score"], "token 'checkout' lacks the role 'review'"),
                          ("not-a-token", "unknown token")):  # fmt: skip
        browser.find_element(By.ID, "token").send_keys(secret)
        _submit(browser, "sign-in")
        assert words in _wait(browser, "#error").text
    browser.find_element(By.ID, "token").send_keys(SECRETS["review"])
    browser.find_element(By.ID, "sign-in").click()
    assert _wait(browser, "#who").text == "analyst-1"
    port = guarded_page.srv.settings.metrics_port
    cookie = browser.get_cookie(f"ordersight_session_{port}")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert SECRETS["review"] not in cookie["value"]
    order_id = _open_first_case(browser)
    assert _wait(browser, "#order-id").text == order_id
    assert not browser.find_elements(By.ID, "reviewer")  # the token names the reviewer
    browser.find_element(By.ID, "approve").click()
    assert "approved" in _wait(browser, "#flash").text
    got = guarded_page.review(order_id)
    assert (got.status, got.verdict, got.reviewer) == ("resolved", pb.LEGITIMATE, "analyst-1")
    browser.find_element(By.ID, "sign-out").click()
    _wait(browser, "#token")
    browser.get(base + "/reviews")
    assert browser.current_url == base + "/login"


def test_the_guarded_page_refuses_whoever_has_not_signed_in(guarded_page: Page) -> None:
    client = Client(guarded_page.base)
    got = client.get("/reviews")
    assert got.status == 303 and got.headers["Location"] == "/login"
    assert not client.jar  # no session for whoever may not see the page
    assert client.get(_case_url(HOSTILE_ID)).status == 303
    csrf = client.csrf("/login")  # a session, not signed in
    resolve = {"csrf": csrf, "verdict": "FRAUD", "reviewer": "eve"}
    assert client.post(_case_url(HOSTILE_ID) + "/resolve", resolve).status == 401
    assert client.post("/login", {"token": SECRETS["review"]}).status == 403  # no CSRF token
    assert guarded_page.review(HOSTILE_ID).status == "open"
    assert client.get("/metrics").status == 200  # /metrics needs no credential, as before


def test_mutual_tls_takes_the_reviewer_from_the_client_certificate(
    tmp_path: Path, models_dir: Path, history: pa.Table
) -> None:
    ca = Authority(tmp_path)
    server, scorer = (
        ca.issue("server", "localhost", server=True),
        ca.issue("s", "checkout-1", ("score",)),
    )
    reviewer = ca.issue("r", "analyst-cert", ("review",))
    creds = grpc.ssl_channel_credentials(
        ca.pem.cert.read_bytes(), scorer.key.read_bytes(), scorer.cert.read_bytes()
    )
    page = _start(tmp_path, models_dir, history, credentials=creds, tls_cert=str(server.cert),
                  tls_key=str(server.key), tls_client_ca=str(ca.pem.cert))  # fmt: skip
    try:
        base = page.base.replace("http://", "https://")

        def client(who: Any) -> Client:
            ctx = ssl.create_default_context(cafile=str(ca.pem.cert))
            if who is not None:
                ctx.load_cert_chain(str(who.cert), str(who.key))
            return Client(base, ctx)

        analyst = client(reviewer)
        queue = analyst.get("/reviews")
        assert queue.status == 200 and 'id="who">analyst-cert<' in queue.text
        csrf = analyst.csrf(_case_url(HOSTILE_ID))
        resolved = analyst.post(
            _case_url(HOSTILE_ID) + "/resolve", {"csrf": csrf, "verdict": "FRAUD"}
        )
        assert resolved.status == 303
        mine = [r for r in page.outcomes() if r["order_id"] == HOSTILE_ID]
        assert [(r["reviewer"], r["is_fraud"]) for r in mine] == [("analyst-cert", True)]
        refused = client(scorer).get("/reviews")
        assert refused.status == 403 and "lacks the role 'review'" in html.unescape(refused.text)
        assert client(scorer).get("/metrics").status == 200  # no role needed, as before
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            client(None).get("/reviews")
    finally:
        page.srv.stop()


# --- without a store, and the sessions' bound ------------------------------------------------


def test_without_a_store_the_page_says_so(start_server: Callable[..., RunningServer]) -> None:
    srv = start_server(single_process=True, metrics_port=free_port())
    client = Client(f"http://127.0.0.1:{srv.settings.metrics_port}")
    got = client.get("/reviews")
    assert got.status == 503 and "without a store" in got.text
    assert client.get("/metrics").status == 200


def test_sessions_are_bounded_and_expire() -> None:
    now = [0.0]
    sessions = Sessions(lambda: now[0], limit=3)
    first, *rest = [sessions.new(f"analyst-{i}") for i in range(4)]
    assert len(sessions) == 3 and sessions.get(first.sid) is None  # the least recently used
    assert all(sessions.get(s.sid) is s for s in rest)
    anonymous = [sessions.new() for _ in range(10)]  # anyone can make these: a pool of their own
    assert all(sessions.get(s.sid) is s for s in rest)
    assert [sessions.get(s.sid) is not None for s in anonymous] == [False] * 7 + [True] * 3
    now[0] = SESSION_S
    assert all(sessions.get(s.sid) is None for s in [*rest, *anonymous]) and not len(sessions)
