"""Rebuild the state after a restart: the snapshot, then the log's entries after it.

The velocity state replays every `decision` and `outcome` row whose seq is after the
snapshot's `log_seq`, in the log's order (the order they were applied), through the same
kernels (`Engine.featurize`, `Engine.report_outcomes`) with the same encoded values, so the
state is the one the engine had when it stopped. Each replayed decision's features are
compared with the ones it logged: a difference means the feature code or the log changed
and is reported. The anomaly detector replays the `decision` and `event` rows it had not
counted when its snapshot was taken (`Applied`): it counts ScoreBatch calls at their end,
so what it has seen is not a prefix of the log.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from engine.decision.cascade import Engine
from engine.decision.policy import ACTION_NAMES, PATH_NAMES
from engine.decision_log import segments
from engine.decision_log.records import KINDS, SCHEMA, replay_arrays
from engine.decision_log.writer import DecisionLog
from engine.errors import ModelLoadError
from engine.monitoring.alert_hub import AlertHub

log = logging.getLogger(__name__)
_KIND = {name: code for code, name in enumerate(KINDS)}
ABOVE_MAX = 10_000
"""Seqs held past a missing one; past this the missing one is taken as seen (a call that
failed between its log entry and the detector), so the set stays small."""
_ACTION = {name: code for code, name in ACTION_NAMES.items()}
_PATH = {name: code for code, name in PATH_NAMES.items()}


@dataclass
class Applied:
    """The seqs a state has seen: every one up to `mark`, and `above` past it."""

    mark: int = 0
    above: set[int] = field(default_factory=set)

    def add(self, seq: int) -> None:
        if seq <= self.mark:
            return
        self.above.add(seq)
        while self.mark + 1 in self.above:
            self.mark += 1
            self.above.discard(self.mark)
        if len(self.above) > ABOVE_MAX:  # a seq that never came (its call failed): skip it
            self.mark = min(self.above) - 1
            self.add(self.mark + 1)

    def through(self, seq: int) -> None:
        """Everything up to `seq` counts as seen (after a replay: the log holds no more)."""
        self.mark = max(self.mark, seq)
        self.above = {s for s in self.above if s > self.mark}

    def __contains__(self, seq: int) -> bool:
        return seq <= self.mark or seq in self.above

    def to_json(self) -> str:
        return json.dumps({"mark": self.mark, "above": sorted(self.above)})

    @classmethod
    def from_json(cls, text: str) -> Applied:
        d = json.loads(text)
        return cls(int(d["mark"]), {int(s) for s in d["above"]})


@dataclass
class Replayed:
    orders: int = 0
    outcomes: int = 0
    hub_rows: int = 0
    mismatched: int = 0  # replayed decisions whose features differ from the logged ones
    last_seq: int = 0
    next_seq: int = 0  # the seq the next state entry after `after` must carry


def _codes(col: pa.Array, table: dict[str, int]) -> np.ndarray:
    return np.array([table.get(v, 0) for v in col.to_pylist()], np.int8)


def recover(
    decisions: DecisionLog, engine: Engine, hub: AlertHub, after: int, applied: Applied
) -> Replayed:
    """At start-up, with a snapshot holding the state up to seq `after`: replay the log
    after it, report what was replayed, and number new entries after everything it holds."""
    done = replay(decisions.folder, engine, hub, after, applied)
    decisions.continue_after(max(after, done.last_seq))
    log.info(
        "decision log %s: replayed %d orders and %d outcomes after seq %d into the state, "
        "%d rows into the anomaly detector", decisions.folder, done.orders, done.outcomes,
        after, done.hub_rows,
    )  # fmt: skip
    if done.mismatched:
        log.error(
            "decision log replay: %d orders' features differ from the ones they were decided "
            "with (the feature code or the log changed)", done.mismatched,
        )  # fmt: skip
    return done


def replay(folder: Path, engine: Engine, hub: AlertHub, after: int, applied: Applied) -> Replayed:
    """Apply the log's entries after seq `after` to the engine's velocity state, and those
    `applied` has not seen to the anomaly detector (`applied` is updated)."""
    out = Replayed(next_seq=after + 1)
    start = min(after, applied.mark)
    for batch in segments.read_folder(folder, start):
        meta = {
            k: v for k, v in (batch.schema.metadata or {}).items() if k.startswith(b"ordersight.")
        }
        if meta != SCHEMA.metadata:
            raise ModelLoadError(
                f"decision log {folder}: its format, feature or replay layout is not this "
                "engine's; it cannot be replayed (serve the version that wrote it, or start "
                "without it)"
            )
        _replay_batch(batch, engine, hub, after, applied, out)
    applied.through(max(out.last_seq, after))  # a seq missing from the log is gone for good
    return out


def _check_contiguous(seq: np.ndarray, out: Replayed) -> None:
    """State entries after the snapshot carry every seq in turn: a missing one is a change
    the state had and the log lost (a failed write, a removed segment), which no replay
    can make up for."""
    got = np.unique(seq)
    want = np.arange(out.next_seq, out.next_seq + got.size)
    if not np.array_equal(got, want):
        missing = sorted(set(range(out.next_seq, int(got.max()) + 1)) - set(got.tolist()))
        where = f"{missing[0]}..{missing[-1]}" if missing else f"before {out.next_seq}"
        raise ModelLoadError(
            f"the decision log misses entries {where} after the snapshot: "
            "the state cannot be rebuilt exactly (restore the missing segments, or remove the "
            "snapshot and the log to start empty)"
        )
    out.next_seq += got.size


def _runs(mask: np.ndarray, kind: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Maximal runs of selected rows of one kind, in row order: (kind, row indices)."""
    rows = np.flatnonzero(mask)
    if not rows.size:
        return []
    cut = np.flatnonzero(np.diff(kind[rows]) != 0) + 1
    return [(int(kind[r[0]]), r) for r in np.split(rows, cut)]


def _replay_batch(
    batch: pa.RecordBatch, engine: Engine, hub: AlertHub, after: int, applied: Applied,
    out: Replayed,
) -> None:  # fmt: skip
    seq = batch.column("seq").to_numpy().astype(np.int64)
    kind = _codes(batch.column("kind"), _KIND)
    if seq.size:
        out.last_seq = max(out.last_seq, int(seq.max()))
    _check_contiguous(seq[(kind != _KIND["challenger"]) & (seq > after)], out)
    state = ((kind == _KIND["decision"]) | (kind == _KIND["outcome"])) & (seq > after)
    replay_col = batch.column("replay")
    for k, rows in _runs(state, kind):
        arrays, known = replay_arrays(replay_col.take(pa.array(rows)))
        if k == _KIND["outcome"]:
            is_fraud = batch.column("is_fraud").take(pa.array(rows)).to_numpy(zero_copy_only=False)
            engine.report_outcomes(arrays, is_fraud.astype(np.int8), known)
            out.outcomes += rows.size
            continue
        X = engine.featurize(arrays)
        logged = batch.column("features").take(pa.array(rows))
        flat = logged.values.to_numpy(zero_copy_only=False).reshape(X.shape)
        same = (flat == X) | (np.isnan(flat) & np.isnan(X))
        out.mismatched += int(np.count_nonzero(~same.all(axis=1)))
        out.orders += rows.size
    seen = np.fromiter((s in applied for s in seq.tolist()), bool, seq.size)
    hub_rows = ((kind == _KIND["decision"]) | (kind == _KIND["event"])) & ~seen
    channels = batch.column("channel")
    for k, rows in _runs(hub_rows, kind):
        idx = pa.array(rows)
        t = replay_arrays(replay_col.take(idx))[0].t
        ch = channels.take(idx).to_pylist()
        if k == _KIND["event"]:
            hub.on_events(t, ch, batch.column("code").take(idx).to_pylist())
        else:
            action = _codes(batch.column("action").take(idx), _ACTION)
            path = _codes(batch.column("path").take(idx), _PATH)
            hub.on_decisions(t, ch, action, path)
        out.hub_rows += rows.size
    for s in np.unique(seq[hub_rows | (kind == _KIND["outcome"])]).tolist():
        applied.add(s)
