"""A real OrderSight server on 127.0.0.1 in a background thread, and orders to send it.

Used by the gRPC and CLI tests. Nothing is mocked; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.ipc
import pytest
from ordersight.v1 import risk_pb2 as pb
from ordersight.v1 import risk_pb2_grpc as pb_grpc

from engine.codec.order_messages import orders_from_table
from engine.config import load_settings
from engine.decision.decisions import Decisions
from engine.orders.schema import ORDER_SCHEMA
from engine.serving.server import Server
from tests.conftest import CAPACITY

SERVICE = "ordersight.v1.OrderRisk"
TIMEOUT_S = 120  # bounds a wait for an event that must happen; never waited out when all is well


# --- a real server in a background thread ---------------------------------------------------


class RunningServer:
    """`engine.serving.server.Server` on its own event loop in a thread, plus a client channel."""

    def __init__(
        self,
        models_dir: Path,
        credentials: grpc.ChannelCredentials | None = None,
        **settings: Any,
    ) -> None:
        """`credentials`: the client channel's (TLS); None for plaintext."""
        self.credentials = credentials
        self.settings = load_settings(
            env={},
            models=str(models_dir),
            **{
                "host": "127.0.0.1",
                "port": 0,
                "state_capacity": CAPACITY,
                "workers": 2,
                **settings,
            },
        )
        self.loop_errors: list[dict[str, Any]] = []
        self.failure: BaseException | None = None
        self.server: Server | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.port = 0
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ordersight-server", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start() / stop() in the test's thread
            self.failure = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.loop.set_exception_handler(lambda _loop, ctx: self.loop_errors.append(ctx))
        self._stop = asyncio.Event()
        self.server = Server(self.settings)
        self.port = await self.server.start()
        self._ready.set()
        await self._stop.wait()
        await self.server.stop()

    def start(self) -> RunningServer:
        self._thread.start()
        if not self._ready.wait(TIMEOUT_S) or self.failure is not None:
            raise RuntimeError(f"server did not start: {self.failure!r}")
        target = f"127.0.0.1:{self.port}"
        self.channel = (
            grpc.insecure_channel(target)
            if self.credentials is None
            else grpc.secure_channel(target, self.credentials)
        )
        grpc.channel_ready_future(self.channel).result(timeout=TIMEOUT_S)
        self.stub = pb_grpc.OrderRiskStub(self.channel)
        return self

    def request_stop(self) -> None:
        """Begin a graceful stop; safe from any thread, including the server's own."""
        assert self.loop is not None and self._stop is not None
        if threading.current_thread() is self._thread:
            self._stop.set()
        else:
            self.loop.call_soon_threadsafe(self._stop.set)

    def join(self) -> None:
        """Wait for the server to have stopped; fail if anything escaped it."""
        self._thread.join(TIMEOUT_S)
        assert not self._thread.is_alive(), "server thread did not stop"
        assert self.failure is None, f"server crashed: {self.failure!r}"
        assert not self.loop_errors, f"unhandled errors on the server loop: {self.loop_errors}"

    def stop(self) -> None:
        if self._thread.is_alive():
            self.request_stop()
        self.join()
        if hasattr(self, "channel"):
            self.channel.close()


# --- orders ----------------------------------------------------------------------------------


def orders_of(table: pa.Table) -> list[pb.Order]:
    return orders_from_table(table)


def simple_order(order_id: str = "o-1", **fields: Any) -> pb.Order:
    o = pb.Order(order_id=order_id, customer_id="c-1", amount_minor=1999, currency="USD")
    o.created_at.FromSeconds(1_769_947_200)  # 2026-02-01T12:00:00Z
    for name, value in fields.items():
        setattr(o, name, value)
    return o


def arrow_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pyarrow.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def order_columns(table: pa.Table) -> pa.Table:
    return table.select(ORDER_SCHEMA.names)


def unknown_labels(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full(n, -1, np.int8), np.full(n, np.nan)


def assert_same_decisions(got: list[pb.Decision], want: Decisions, tol: float) -> None:
    """Every Decision field but latency: ids, action, path, scores, reasons, triggers, cause
    and model version."""
    assert [d.order_id for d in got] == want.order_ids
    assert [d.action for d in got] == want.action.tolist()
    assert [d.path for d in got] == want.path.tolist()
    np.testing.assert_allclose([d.score for d in got], want.score, rtol=0, atol=tol)
    np.testing.assert_allclose(
        [d.raw_score for d in got], want.raw, rtol=0, atol=max(tol, 1e-9) * 100
    )
    np.testing.assert_allclose([d.base_value for d in got], want.base, rtol=0, atol=1e-9)
    assert [list(d.review_triggers) for d in got] == want.triggers
    assert [d.fallback_cause for d in got] == want.causes
    assert {d.model_version for d in got} <= {want.model_version}
    for d, reasons in zip(got, want.reasons, strict=True):
        assert [r.code for r in d.reasons] == [r.code for r in reasons], d.order_id
        assert [r.feature for r in d.reasons] == [r.feature for r in reasons]
        assert [r.message for r in d.reasons] == [r.message for r in reasons]
        np.testing.assert_allclose(
            [r.contribution for r in d.reasons], [r.contribution for r in reasons], atol=1e-6
        )


def assert_decisions_equal(got: Decisions, want: Decisions) -> None:
    """Two engines' Decisions, field by field (exactly)."""
    assert got.order_ids == want.order_ids
    for name in ("action", "path", "score", "raw", "base"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    assert got.triggers == want.triggers and got.causes == want.causes
    assert got.reasons == want.reasons and got.model_version == want.model_version


def rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


@contextmanager
def featurize_held(srv: RunningServer) -> Iterator[threading.Event]:
    """The engine's next featurize (the first step of any scoring) blocks until the block
    ends; the event is set once it has started."""
    assert srv.server is not None
    engine = srv.server.engine
    featurize = engine.featurize
    entered, release = threading.Event(), threading.Event()

    def gated(enc):  # type: ignore[no-untyped-def]
        if not entered.is_set():
            entered.set()
            release.wait(TIMEOUT_S)
        return featurize(enc)

    engine.featurize = gated  # type: ignore[method-assign]
    try:
        yield entered
    finally:
        release.set()
