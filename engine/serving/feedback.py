"""What flows back into the state besides Score: reported outcomes, checkout events, and the
other replicas' accepted orders and outcomes. Each is checked by the same rules as orders,
applied on the engine's single writer. Outcomes and events are logged (when there is a
decision log) with the next sequence number, so a restart replays them in their place; the
other replicas' orders are not (a replica rebuilds its state from the stream).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from ordersight.v1 import risk_pb2 as pb

from engine.codec import order_decoder
from engine.codec.arrow_orders import conform, read_ipc, to_columns
from engine.codec.score_batch import split_score_batch
from engine.decision_log.records import EVENT, OUTCOME, Entry, Texts, texts
from engine.errors import InvalidInput, Unconfigured
from engine.orders.arrays import OrderArrays
from engine.orders.rules import check_text, check_time
from engine.serving.replication import ARROW, OUTCOMES
from engine.serving.replication import ORDERS as REPLICATED_ORDERS
from engine.store.base import Case, Outcome
from engine.store.cases import case_order

if TYPE_CHECKING:
    from engine.serving.data_plane import DataPlane

Timestamp = tuple[int, int]  # (seconds, nanos)


class OutcomeDetails(NamedTuple):
    """What an outcome says besides fraud or not (engine.store.tables.KINDS)."""

    kind: str
    reviewer: str = ""
    note: str = ""


class Reported(NamedTuple):
    accepted: int
    duplicates: int
    unmatched: list[str]


def _text(value: str) -> Texts:
    data = np.frombuffer(value.encode(), np.uint8).copy()
    return np.array([0, data.size], np.int32), data


class Feedback:
    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    async def report_outcomes(
        self,
        orders: list[bytes],
        is_fraud: np.ndarray,
        known_at: Sequence[Timestamp | None],
        replicate: bool = True,
        details: Sequence[OutcomeDetails] | None = None,
    ) -> Reported:
        """Known outcomes of orders (serialized Orders with at least their entity fields);
        an unset `known_at` means now, the latest order time the engine has scored.

        With a store, the outcomes this engine was told of (`replicate`: not another
        replica's) are stored first, idempotent per (order_id, kind), and only those that
        teach the state something (an order's first label, or its first fraud) are applied."""
        if not orders:
            return Reported(0, 0, [])
        latest = self.plane.latest()
        batch = self.plane.rules.check(order_decoder.decode_orders(orders), latest)
        self.plane.count_refused(batch)
        bad = order_decoder.first_refusal(batch, "outcomes[{i}].order.")
        if bad is not None:
            raise bad
        known = np.empty(len(orders))
        now = max(self.plane.engine.latest_order_time, float(batch.arrays.t.max()))
        for i, k in enumerate(known_at):
            name = f"outcomes[{i}].known_at"
            known[i] = now if k is None else check_time(*k, name, self.plane.rules.limits, latest)
        is_fraud = np.asarray(is_fraud, np.int8)
        known = np.maximum(known, batch.arrays.t)
        duplicates, unmatched = 0, []
        reviews = self.plane.reviews
        if reviews is not None and replicate:
            if details is None:
                raise ValueError("outcomes to store need their kinds (details)")
            kinds = details
            stored = await reviews.add_outcomes(
                [
                    Outcome(oid, d.kind, bool(f), float(k), d.reviewer or None, d.note or None,
                            self.plane.wall())
                    for oid, d, f, k in zip(batch.ids, kinds, is_fraud.tolist(), known.tolist(),
                                            strict=True)
                ]
            )  # fmt: skip
            duplicates = sum(not s.new for s in stored)
            unmatched = [
                oid for oid, s in zip(batch.ids, stored, strict=True) if s.decision is None
            ]
            rows = np.flatnonzero([s.apply for s in stored])
        else:
            rows = np.arange(len(orders))
        if rows.size:
            sel = None if rows.size == len(orders) else rows
            orders = [orders[i] for i in rows.tolist()]
            ids = [batch.ids[i] for i in rows.tolist()]
            arrays = batch.arrays if sel is None else batch.arrays.take(rows)
            is_fraud, known = is_fraud[rows], known[rows]
            seq = await self.plane.engine_job(
                self._apply_outcomes, ids, arrays, [batch.channels[i] for i in rows.tolist()],
                texts(batch.columns, "customer_id", sel), texts(batch.columns, "currency", sel),
                is_fraud, known,
            )  # fmt: skip
            if seq:
                self.plane.hub_applied.add(seq)
            if replicate and self.plane.replication is not None:
                self.plane.replication.publish_outcomes(_outcomes_request(orders, is_fraud, known))
            await self.plane.durable(seq)
        return Reported(len(known_at), duplicates, unmatched)

    async def resolve_review(self, order_id: str, verdict: str, reviewer: str, note: str) -> Case:
        """Resolve a review case (`engine.serving.reviews`); its verdict, stored as the
        order's REVIEW_VERDICT outcome known now (order time), is applied to the state and
        logged like a reported outcome when it teaches the state something. Answered once
        durable. Not published to other replicas: the stream carries whole orders, a case
        keeps only their entity keys (they see the verdict in a shared store)."""
        reviews = self.plane.reviews
        if reviews is None:
            raise Unconfigured("no store: the engine was started without `store`")
        now = self.plane.engine.latest_order_time
        case, stored = await reviews.resolve(
            order_id, verdict, reviewer, note, now if np.isfinite(now) else self.plane.wall()
        )
        if stored.apply:
            arrays = case_order(case)
            flag = np.array([int(verdict == "FRAUD")], np.int8)
            known = np.array([max(now, case.created_at)])
            seq = await self.plane.engine_job(
                self._apply_outcomes, [order_id], arrays, [case.channel or None],
                _text(case.customer_id), _text(case.currency), flag, known,
            )  # fmt: skip
            if seq:
                self.plane.hub_applied.add(seq)
            await self.plane.durable(seq)
        return case

    def _apply_outcomes(
        self, ids: list[str], arrays: OrderArrays, channels: list[str | None],
        customer: Texts, currency: Texts, is_fraud: np.ndarray, known: np.ndarray,
    ) -> int:  # fmt: skip
        """Apply outcomes to the state and log them; their entry's seq (0: no log)."""
        self.plane.engine.report_outcomes(arrays, is_fraud, known)
        if self.plane.log is None:
            return 0
        return self.plane.log.append_next(
            Entry(
                OUTCOME, 0, ids, arrays.t, channels, arrays, customer, currency,
                is_fraud=is_fraud, known_at=known, champion=self.plane.engine.models.version,
            )
        )  # fmt: skip

    async def apply_replicated(self, kind: str, body: bytes) -> None:
        """Apply another replica's accepted orders or outcomes to the velocity state, in
        the stream's order, on the engine's single writer."""
        if kind == OUTCOMES:
            outcomes = pb.ReportOutcomesRequest.FromString(body).outcomes
            await self.report_outcomes(
                [oc.order.SerializeToString() for oc in outcomes],
                np.array([oc.is_fraud for oc in outcomes], np.int8),
                [(oc.known_at.seconds, oc.known_at.nanos) for oc in outcomes],
                replicate=False,
            )
            return
        if kind == ARROW:
            cols = to_columns(
                conform(read_ipc(memoryview(body), self.plane.rules.limits), where="stream")
            )
        elif kind == REPLICATED_ORDERS:
            cols = split_score_batch(body).order_columns()
        else:
            raise InvalidInput(f"replicated message of unknown kind {kind!r}", "kind")
        # Accepted by its origin, whose clock may run ahead of this one: no time limit.
        orders = self.plane.rules.check(cols, np.inf)
        arrays = (
            orders.arrays.take(np.flatnonzero(orders.ok)) if not orders.ok.all() else orders.arrays
        )
        await self.plane.engine_job(self.plane.engine.featurize, arrays, inline_ok=True)
        self.plane.replicated_orders += arrays.n

    async def report_events(
        self, channels: Sequence[str], codes: Sequence[str], times: Sequence[Timestamp | None]
    ) -> int:
        """Checkout error events, checked by the same rules as orders' fields; how many the
        detector will count (see README "Operational alerts" for the time rules)."""
        latest = self.plane.latest()
        limits = self.plane.rules.limits
        t = np.empty(len(codes))
        for i, (channel, code, when) in enumerate(zip(channels, codes, times, strict=True)):
            check_text(code, f"events[{i}].code", limits, required=True)
            check_text(channel, f"events[{i}].channel", limits)
            if when is None:
                raise InvalidInput(f"events[{i}].time: required", f"events[{i}].time")
            t[i] = check_time(*when, f"events[{i}].time", limits, latest)
        if not t.size:
            return 0
        counted = self.plane.hub.on_events(t, list(channels), list(codes))
        if self.plane.log is not None:
            seq = self.plane.log.append_next(
                Entry(EVENT, 0, [""] * t.size, t, list(channels), codes=list(codes),
                      champion=self.plane.engine.models.version)
            )  # fmt: skip
            self.plane.hub_applied.add(seq)
            await self.plane.durable(seq)
        return counted


def _outcomes_request(orders: list[bytes], is_fraud: np.ndarray, known: np.ndarray) -> bytes:
    """A ReportOutcomesRequest of accepted outcomes, each with the known_at applied here."""
    req = pb.ReportOutcomesRequest()
    for o, f, k in zip(orders, is_fraud.tolist(), known.tolist(), strict=True):
        oc = req.outcomes.add(is_fraud=bool(f))
        oc.order.MergeFromString(o)
        sec = int(np.floor(k))
        oc.known_at.seconds, oc.known_at.nanos = sec, min(int(round((k - sec) * 1e9)), 999_999_999)
    return req.SerializeToString()
