"""The repository interface of review cases, outcomes and the decisions index, and its two
backends. Every method is one transaction and blocking: the engine calls them on the store's
own thread (`engine.serving.reviews`), never on the event loop or the engine's thread.

SQL is written once with `?` placeholders (psycopg's `%s` is substituted for PostgreSQL);
only connecting differs between the backends. Times are epoch seconds.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from engine.errors import Conflict, NotFound

OPEN, RESOLVED = "open", "resolved"
VERDICTS = ("FRAUD", "LEGITIMATE")

_CASE_COLUMNS = (
    "order_id", "log_seq", "customer_id", "created_at", "opened_at", "amount", "currency",
    "channel", "score", "path", "model_version", "triggers", "reasons", "facts", "replay",
    "status", "verdict", "reviewer", "note", "resolved_at",
)  # fmt: skip
DECISION_COLUMNS = (
    "order_id", "log_seq", "customer_id", "created_at", "amount", "currency", "channel",
    "action", "path", "score", "model_version", "arm", "indexed_at",
)  # fmt: skip


@dataclass
class Case:
    """A review case: a REVIEW decision waiting for (or given) an analyst's verdict."""

    order_id: str
    log_seq: int
    customer_id: str
    created_at: float
    opened_at: float
    amount: float
    currency: str
    channel: str
    score: float
    path: str
    model_version: str
    triggers: list[str]
    reasons: list[dict[str, Any]]  # code, feature, contribution, message
    facts: dict[str, Any]  # the order's key facts a reviewer reads
    replay: str  # the encoded order (base64 of a records.REPLAY row): entity keys only
    status: str = OPEN
    verdict: str | None = None
    reviewer: str | None = None
    note: str | None = None
    resolved_at: float | None = None

    def row(self) -> tuple[Any, ...]:
        values = {**self.__dict__, "triggers": _triggers(self.triggers)}
        values["reasons"], values["facts"] = json.dumps(self.reasons), json.dumps(self.facts)
        return tuple(values[c] for c in _CASE_COLUMNS)

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Case:
        d = dict(zip(_CASE_COLUMNS, row, strict=True))
        d["triggers"] = d["triggers"].split()
        d["reasons"], d["facts"] = json.loads(d["reasons"]), json.loads(d["facts"])
        return cls(**d)


def _triggers(triggers: Iterable[str]) -> str:
    """Space-padded, so that `LIKE '% CODE %'` finds one trigger exactly."""
    return " " + " ".join(triggers) + " "


@dataclass(frozen=True)
class CaseFilter:
    status: str = OPEN  # open, resolved, or "" for both
    trigger: str = ""
    opened_before: float | None = None  # cases at least this old (epoch seconds)
    min_amount: float | None = None
    max_amount: float | None = None
    channel: str = ""


@dataclass
class Outcome:
    order_id: str
    kind: str  # engine.store.tables.KINDS
    is_fraud: bool
    known_at: float
    reviewer: str | None = None
    note: str | None = None
    reported_at: float = 0.0


@dataclass
class Stored:
    """What storing one outcome did."""

    new: bool  # False: (order_id, kind) was stored before; nothing changed
    apply: bool  # the entity features should learn it: the order's first label, or its first fraud
    decision: dict[str, Any] | None = field(default=None)  # the decided order (None: unknown)


class Store:
    """One connection; not thread-safe (one thread uses it)."""

    placeholder = "?"

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def _exec(self, cur: Any, sql: str, args: Sequence[Any] = ()) -> Any:
        cur.execute(self._sql(sql), tuple(args))
        return cur

    def _tx(self) -> Any:
        """One transaction: committed at the end of the block, rolled back on an error."""
        return self.conn

    def relax(self) -> None:
        """Commit without waiting for the disk on this connection: a crash may lose the
        last commits, never corrupt the store. For writes the decision log can rebuild
        (the writer's catch-up), not for what a client was told is stored."""
        self.conn.execute("PRAGMA synchronous=NORMAL")

    def close(self) -> None:
        self.conn.close()

    # --- writes from the engine: cases and the decisions index -----------------------------

    def record(
        self,
        cases: Sequence[Case],
        decisions: Sequence[tuple[Any, ...]],
        watermark: tuple[str, int] | None,
        now: float = 0.0,
    ) -> int:
        """Open `cases` and index `decisions` (rows of DECISION_COLUMNS but the last,
        indexed_at, which is `now`), both idempotent by order_id, and move the watermark
        (key, log seq) in the same transaction; how many cases were new."""
        cols = ", ".join(_CASE_COLUMNS)
        marks = ", ".join("?" * len(_CASE_COLUMNS))
        dcols, dmarks = ", ".join(DECISION_COLUMNS), ", ".join("?" * len(DECISION_COLUMNS))
        with self._tx():
            cur = self.conn.cursor()
            new = 0
            for c in cases:
                self._exec(
                    cur,
                    f"INSERT INTO review_cases ({cols}) VALUES ({marks}) "
                    "ON CONFLICT (order_id) DO NOTHING",
                    c.row(),
                )
                new += max(cur.rowcount, 0)
            if decisions:
                cur.executemany(
                    self._sql(
                        f"INSERT INTO decisions ({dcols}) VALUES ({dmarks}) "
                        "ON CONFLICT (order_id) DO NOTHING"
                    ),
                    [(*d, now) for d in decisions],
                )
            if watermark is not None:
                self._set_meta(cur, watermark[0], str(watermark[1]))
        return new

    def meta(self, key: str) -> str | None:
        row = self._exec(self.conn.cursor(), "SELECT value FROM store_meta WHERE key = ?", (key,))
        got = row.fetchone()
        return None if got is None else str(got[0])

    def _set_meta(self, cur: Any, key: str, value: str) -> None:
        self._exec(
            cur,
            "INSERT INTO store_meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def prune_decisions(self, before: float) -> int:
        """Drop the decisions index's rows indexed before `before` (wall clock: retention)."""
        with self._tx():
            cur = self._exec(
                self.conn.cursor(), "DELETE FROM decisions WHERE indexed_at < ?", (before,)
            )
            return max(cur.rowcount, 0)

    # --- the review queue ---------------------------------------------------------------------

    def list_cases(
        self, f: CaseFilter, limit: int, after: tuple[float, str] | None = None
    ) -> list[Case]:
        """Cases matching `f`, oldest first, `limit` at most, after the keyset `after`
        (opened_at, order_id) of the previous page's last case."""
        where: list[str] = []
        args: list[Any] = []
        if f.status:
            where.append("status = ?")
            args.append(f.status)
        if f.trigger:
            where.append("triggers LIKE ?")
            args.append(f"% {f.trigger} %")
        if f.opened_before is not None:
            where.append("opened_at <= ?")
            args.append(f.opened_before)
        if f.min_amount is not None:
            where.append("amount >= ?")
            args.append(f.min_amount)
        if f.max_amount is not None:
            where.append("amount <= ?")
            args.append(f.max_amount)
        if f.channel:
            where.append("channel = ?")
            args.append(f.channel)
        if after is not None:
            where.append("(opened_at > ? OR (opened_at = ? AND order_id > ?))")
            args += [after[0], after[0], after[1]]
        sql = f"SELECT {', '.join(_CASE_COLUMNS)} FROM review_cases"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY opened_at, order_id LIMIT ?"
        rows = self._exec(self.conn.cursor(), sql, [*args, limit]).fetchall()
        return [Case.from_row(r) for r in rows]

    def get_case(self, order_id: str) -> Case | None:
        row = self._exec(
            self.conn.cursor(),
            f"SELECT {', '.join(_CASE_COLUMNS)} FROM review_cases WHERE order_id = ?",
            (order_id,),
        ).fetchone()
        return None if row is None else Case.from_row(row)

    def resolve_case(
        self, order_id: str, verdict: str, reviewer: str, note: str, at: float, known_at: float
    ) -> tuple[Case, Stored]:
        """Close an open case with the analyst's verdict, and store the verdict as the
        order's REVIEW_VERDICT outcome, in one transaction. NotFound for no such case,
        Conflict for one resolved already (naming by whom and when)."""
        with self._tx():
            cur = self.conn.cursor()
            self._exec(
                cur,
                "UPDATE review_cases SET status = ?, verdict = ?, reviewer = ?, note = ?, "
                "resolved_at = ? WHERE order_id = ? AND status = ?",
                (RESOLVED, verdict, reviewer, note, at, order_id, OPEN),
            )
            if cur.rowcount != 1:
                case = self.get_case(order_id)
                if case is None:
                    raise NotFound(f"order_id: no review case for order {order_id!r}")
                raise Conflict(
                    f"order_id: the case of order {order_id!r} was resolved already "
                    f"({case.verdict} by {case.reviewer})",
                    "order_id",
                )
            created = self._exec(
                cur, "SELECT created_at FROM review_cases WHERE order_id = ?", (order_id,)
            ).fetchone()[0]
            known_at = max(known_at, float(created))
            stored = self._add_outcome(
                cur,
                Outcome(
                    order_id,
                    "REVIEW_VERDICT",
                    verdict == "FRAUD",
                    known_at,
                    reviewer,
                    note or None,
                    at,
                ),
            )
        case = self.get_case(order_id)
        assert case is not None
        return case, stored

    def queue(self) -> tuple[int, float | None]:
        """Open cases and the oldest one's opened_at (None when the queue is empty)."""
        row = self._exec(
            self.conn.cursor(),
            "SELECT COUNT(*), MIN(opened_at) FROM review_cases WHERE status = ?",
            (OPEN,),
        ).fetchone()
        return int(row[0]), None if row[1] is None else float(row[1])

    # --- outcomes -----------------------------------------------------------------------------

    def add_outcomes(self, outcomes: Sequence[Outcome]) -> list[Stored]:
        """Store outcomes, idempotent per (order_id, kind), in one transaction."""
        with self._tx():
            cur = self.conn.cursor()
            return [self._add_outcome(cur, o) for o in outcomes]

    def _add_outcome(self, cur: Any, o: Outcome) -> Stored:
        prior = [
            bool(r[0])
            for r in self._exec(
                cur, "SELECT is_fraud FROM outcomes WHERE order_id = ?", (o.order_id,)
            )
        ]
        got = self._exec(
            cur,
            "SELECT action, channel, model_version, arm, created_at FROM decisions "
            "WHERE order_id = ?",
            (o.order_id,),
        ).fetchone()
        decision = None if got is None else dict(
            zip(("action", "channel", "model_version", "arm", "created_at"), got, strict=True)
        )  # fmt: skip
        self._exec(
            cur,
            "INSERT INTO outcomes (order_id, kind, is_fraud, known_at, reviewer, note, "
            "reported_at, matched) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (order_id, kind) DO NOTHING",
            (o.order_id, o.kind, o.is_fraud, o.known_at, o.reviewer, o.note, o.reported_at,
             decision is not None),
        )  # fmt: skip
        if cur.rowcount != 1:
            return Stored(False, False, decision)
        apply = not prior or (o.is_fraud and not any(prior))
        return Stored(True, apply, decision)

    def outcomes_table(self) -> pa.Table:
        """Every outcome, as engine.store.tables.OUTCOMES."""
        from engine.store.tables import OUTCOMES

        rows = self._exec(
            self.conn.cursor(),
            "SELECT order_id, kind, is_fraud, known_at, reviewer, note, reported_at "
            "FROM outcomes ORDER BY known_at, order_id, kind",
        ).fetchall()
        cols: list[Any] = list(zip(*rows, strict=True)) if rows else [() for _ in range(7)]
        us = [[round(t * 1e6) for t in c] for c in (cols[3], cols[6])]
        arrays = [
            pa.array(cols[0], pa.string()), pa.array(cols[1], pa.string()),
            pa.array([bool(v) for v in cols[2]], pa.bool_()),
            pa.array(us[0], pa.int64()).cast(OUTCOMES.field("known_at").type),
            pa.array(cols[4], pa.string()), pa.array(cols[5], pa.string()),
            pa.array(us[1], pa.int64()).cast(OUTCOMES.field("reported_at").type),
        ]  # fmt: skip
        return pa.Table.from_arrays(arrays, schema=OUTCOMES)

    def count(self, table: str) -> int:
        if table not in ("review_cases", "outcomes", "decisions"):
            raise ValueError(table)
        return int(self._exec(self.conn.cursor(), f"SELECT COUNT(*) FROM {table}").fetchone()[0])


class SqliteStore(Store):
    """SQLite in WAL mode (readers never wait for the writer), fsync'ed at every commit
    (synchronous=FULL: a committed case survives a power loss)."""

    def __init__(self, path: Path) -> None:
        conn = sqlite3.connect(path, timeout=30.0, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=30000")
        super().__init__(conn)


class PostgresStore(Store):
    placeholder = "%s"

    def __init__(self, dsn: str) -> None:
        import psycopg

        super().__init__(psycopg.connect(dsn, autocommit=True))

    def _tx(self) -> Any:
        return self.conn.transaction()

    def relax(self) -> None:
        self.conn.execute("SET synchronous_commit = off")
