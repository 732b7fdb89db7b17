"""Operational anomaly detection: drops and spikes in what the engine sees, live and offline.

`StreamMonitor` counts orders, declines, escalations and fallbacks per channel, and checkout
error events per channel and code, in time buckets of event time. When the caller's
`advance(t)` moves past a bucket, every known series gets a value for it (a channel that sent
nothing counts as zero) and the kernels in `engine.monitoring.anomaly_kernels` update its seasonal
baseline and CUSUMs. Alerts open, escalate and resolve per series; one incident is one alert.

`engine.monitoring.series_detection` runs the same kernel over one series of any interval and
scale, offline.

Memory is fixed at construction: at most `max_series` series, each a row of fixed-size arrays.
A new series beyond that evicts the least recently active one, preferring series without an
open alert, so a flood of made-up channel names cannot grow the process.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime as dt
from datetime import timedelta, timezone
from typing import Any

import numpy as np

from engine.errors import InvalidInput
from engine.monitoring import anomaly_kernels as k

DAY = k.DAY
MIN_POINTS = 20
METRICS = ("orders", "decline_rate", "escalation_rate", "fallbacks", "errors")
_ALLOWED = (k.DROP | k.SPIKE, k.SPIKE, k.SPIKE, k.SPIKE, k.SPIKE)
_RATE = (False, True, True, False, False)
_WHAT = ("orders", "decline rate", "escalation rate", "fallback decisions", "errors")
_ORDERS, _ERRORS = 0, 4
_CHUNK = 288  # buckets per kernel call when `advance` jumps far: bounds the scratch arrays
_MAX_LABEL = 64
_NEVER = np.iinfo(np.int64).max  # eviction key of a row pinned by the current call


@dataclass(frozen=True)
class Alert:
    """One incident on one series; `(series, start)` identifies it across updates.

    `expected` and `actual` cover the alert's window from `start` to `at`: sums for a count
    series, fractions of orders for a rate series (`decline_rate`, `escalation_rate`).
    """

    series: str  # e.g. "orders{channel=web}", "errors{channel=app,code=PAYMENT_TIMEOUT}"
    kind: str  # "drop" or "spike"
    severity: str  # "warning" or "critical"
    start: float  # epoch seconds: start of the first anomalous bucket
    at: float  # epoch seconds: end of the bucket that raised or last updated the alert
    expected: float
    actual: float
    score: float  # 0..1; 0.5 at the alert threshold
    explanation: str
    end: float | None = None  # epoch seconds when it resolved (end of the first calm bucket)


@dataclass(frozen=True)
class SeriesState:
    """A series at its last closed bucket; `lower`/`upper` are `expected -+ 3 sd`."""

    series: str
    at: float
    actual: float
    expected: float
    lower: float
    upper: float
    score: float
    warm: bool  # False while the series is still learning its baseline (no alerts)


def _label(value: object, field: str) -> str:
    """A channel or code as it appears in series names: bounded, without name syntax."""
    if value is None or value == "":
        return "unknown"
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be strings or None, got {type(value).__name__}", field)
    for c in "{},=":
        value = value.replace(c, "_")
    return value[:_MAX_LABEL]


def _distinct(
    n: int, *columns: tuple[Sequence[object] | np.ndarray, str]
) -> tuple[list[tuple], np.ndarray]:
    """Distinct rows of the given columns (values, field name) and each row's index into them.

    A dict pass, not `np.unique`: a micro-batch holds a handful of channels, and hashing them
    costs a fraction of sorting strings.
    """
    lists = []
    for values, field in columns:
        items = values.tolist() if isinstance(values, np.ndarray) else list(values)
        if len(items) != n:
            raise InvalidInput(f"{field} must have {n} values, has {len(items)}", field)
        lists.append(items)
    rows = lists[0] if len(lists) == 1 else list(zip(*lists, strict=True))
    index = {v: i for i, v in enumerate(dict.fromkeys(rows))}  # first-seen order
    inv = np.fromiter(map(index.__getitem__, rows), np.int64, n)
    return [(v,) for v in index] if len(lists) == 1 else list(index), inv


def _span(seconds: float) -> str:
    m = int(round(seconds / 60))
    d, h, mm = m // 1440, m % 1440 // 60, m % 60
    parts = [f"{d} d" if d else "", f"{h} h" if h else "", f"{mm} min" if mm else ""]
    return " ".join(p for p in parts if p) or "0 min"


def _num(v: float) -> str:
    return f"{v:,.1f}" if abs(v) < 10 else f"{v:,.0f}"


class StreamMonitor:
    """Counts what the engine sees per channel and outcome in time buckets and detects
    drops/spikes.

    Time is EVENT time (epoch seconds, float) passed in by the caller; buckets close when
    `advance(t)` moves past them. Events for an already closed bucket are dropped and counted
    in `dropped_late` (so advance to a little before now); events more than `max_lead_s`
    ahead of the oldest open bucket in `dropped_early`; events of new series while every row
    is pinned by the same call in `dropped_full`. Not thread-safe: feed and advance it from
    one thread (or under one lock).

    `bucket_s`: 5 min trades detection delay (an alert needs 1-3 buckets) against noise per
    bucket. `utc_offset_s`: the business's clock, which daily and weekly cycles follow (a
    fixed offset). `threshold`: the CUSUM threshold in sd; higher means fewer, later alerts.
    `critical_score`: the score at which an alert escalates to critical.
    """

    def __init__(
        self,
        bucket_s: float = 300.0,
        *,
        max_series: int = 512,
        utc_offset_s: float = 0.0,
        threshold: float = 6.0,
        critical_score: float = 0.9,
        max_lead_s: float = 3600.0,
    ) -> None:
        if not 0.0 < bucket_s <= DAY / 4:
            raise InvalidInput(f"bucket_s must be in (0, {DAY / 4:.0f}], is {bucket_s}", "bucket_s")
        if max_series < 1:
            raise InvalidInput(f"max_series must be >= 1, is {max_series}", "max_series")
        if threshold <= 0.0:
            raise InvalidInput(f"threshold must be > 0, is {threshold}", "threshold")
        if not 0.5 < critical_score < 1.0:
            raise InvalidInput(
                f"critical_score must be in (0.5, 1), is {critical_score}", "critical_score"
            )
        self.bucket_s = float(bucket_s)
        self.utc_offset_s = float(utc_offset_s)
        self._tz = timezone(timedelta(seconds=self.utc_offset_s))
        self._P, self._knots = k.params(
            DAY / bucket_s, threshold=threshold, critical=critical_score
        )
        S = max_series
        # The kernel's state (`anomaly_kernels.new_state`), one row per series.
        self._arrays = k.new_state(S, self._knots, self._P)
        self._st = self._arrays[0]
        self._allowed = np.zeros(S, np.int8)
        self._rate = np.zeros(S, np.bool_)
        self._last_active = np.full(S, -1, np.int64)  # bucket of the last event; -1: free row
        self._pinned = np.zeros(S, np.bool_)
        self._last = np.zeros((S, 6))  # last closed bucket: actual, exposure, mu, sd, score, warm
        self._lead = max(1, math.ceil(max_lead_s / bucket_s)) + 1
        self._ring_val = np.zeros((self._lead, S))
        self._ring_exp = np.zeros((self._lead, S))
        self._names: list[str] = [""] * S
        self._keys: list[tuple[int, str, str]] = [(0, "", "")] * S  # metric, channel, code
        self._rows: dict[str, int] = {}
        self._free = list(range(S - 1, -1, -1))  # rows never used yet
        self._memo: dict[tuple[int, object, object], int] = {}  # raw (metric, channel, code)
        self._cur: int | None = None  # index of the oldest open bucket
        self._active: dict[int, Alert] = {}
        self._pending: list[Alert] = []  # resolved by eviction, reported by the next advance
        self.dropped_late = self.dropped_early = self.dropped_full = 0

    @property
    def nbytes(self) -> int:
        arrays = self._arrays + (self._allowed, self._rate, self._last_active, self._pinned)
        return sum(a.nbytes for a in arrays + (self._last, self._ring_val, self._ring_exp))

    @property
    def n_series(self) -> int:
        return len(self._rows)

    def observe_orders(
        self,
        t: np.ndarray,
        channel: list[str | None] | np.ndarray,
        declined: np.ndarray,
        escalated: np.ndarray,
        fallback: np.ndarray,
    ) -> None:
        """Count decided orders: one row each, at event time `t`."""
        times = self._times(t)
        n = times.size
        given = {"declined": declined, "escalated": escalated, "fallback": fallback}
        flags = [self._flags(a, n, name) for name, a in given.items()]
        keys, inv = _distinct(n, (channel, "channel"))
        rows = np.array([[self._row(m, c, None) for (c,) in keys] for m in range(4)], np.int64)
        values = np.stack([np.ones(n)] + [f.astype(np.float64) for f in flags])
        self._add(times, rows.reshape(4, len(keys))[:, inv], values)

    def counts(self, t: np.ndarray) -> np.ndarray:
        """Which events at times `t` would be counted if they were added now: those in an
        open bucket, up to `max_lead_s` ahead (the rules of `_add`, but a full series table)."""
        b = np.floor(self._times(t) / self.bucket_s).astype(np.int64)
        if not b.size:
            return np.zeros(0, np.bool_)
        cur = int(b.min()) if self._cur is None else self._cur
        return (b >= cur) & (b < cur + self._lead)

    def observe_events(
        self, t: np.ndarray, channel: list[str | None] | np.ndarray, code: list[str] | np.ndarray
    ) -> None:
        """Count checkout error events: one row each, at event time `t`."""
        times = self._times(t)
        n = times.size
        keys, inv = _distinct(n, (channel, "channel"), (code, "code"))
        rows = np.array([self._row(_ERRORS, c, e) for c, e in keys], np.int64)
        self._add(times, rows[inv][None, :], np.ones((1, n)))

    def advance(self, t: float) -> list[Alert]:
        """Close every bucket ending at or before `t` and run the detectors over them.

        Returns, in time order, the alerts that opened, escalated to critical, or resolved
        (`end` set) in those buckets; `active_alerts` has the latest numbers of open ones.
        """
        if not math.isfinite(t):
            raise InvalidInput(f"t must be finite epoch seconds, is {t}", "t")
        end = math.floor(t / self.bucket_s)
        alerts, self._pending = self._pending, []
        if self._cur is None:
            self._cur = end
        rows = np.flatnonzero(self._last_active >= 0)
        while self._cur < end:
            nb = min(end - self._cur, _CHUNK)
            if rows.size:
                alerts += self._close(self._cur, nb, rows)
            self._cur += nb
        return alerts

    def active_alerts(self) -> list[Alert]:
        """Open alerts with their numbers as of the last closed bucket."""
        at = (self._cur or 0) * self.bucket_s
        return [self._update(r, a, at) for r, a in sorted(self._active.items())]

    def series_snapshot(self) -> list[SeriesState]:
        """Every series at the last closed bucket, e.g. for expected-versus-actual gauges."""
        at = (self._cur or 0) * self.bucket_s
        out = []
        for name, r in sorted(self._rows.items()):
            x, e, mu, sd, score, warm = self._last[r]
            div = e if self._rate[r] and e > 0 else 1.0
            lo, hi = max(mu - 3 * sd, 0.0) / div, (mu + 3 * sd) / div
            out.append(SeriesState(name, at, x / div, mu / div, lo, hi, score, bool(warm)))
        return out

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Everything the detector has learnt and holds open: arrays, and JSON-able values
        (`restore` takes them back into a monitor built with the same settings)."""
        names = ("allowed", "rate", "last_active", "last", "ring_val", "ring_exp")
        arrays = {f"k{i}": a for i, a in enumerate(self._arrays)}
        arrays.update({n: getattr(self, f"_{n}") for n in names})
        arrays["params"] = self._P
        meta = {
            "bucket_s": self.bucket_s, "utc_offset_s": self.utc_offset_s,
            "names": self._names, "keys": [list(k) for k in self._keys], "rows": self._rows,
            "free": self._free, "cur": self._cur,
            "active": [[r, asdict(a)] for r, a in self._active.items()],
            "pending": [asdict(a) for a in self._pending],
            "dropped": [self.dropped_late, self.dropped_early, self.dropped_full],
        }  # fmt: skip
        return arrays, meta

    def restore(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Take back a `state()`; InvalidInput when it was taken with other settings."""
        same = (
            meta.get("bucket_s") == self.bucket_s
            and meta.get("utc_offset_s") == self.utc_offset_s
            and "params" in arrays
            and np.array_equal(arrays["params"], self._P)
            and all(arrays[f"k{i}"].shape == a.shape for i, a in enumerate(self._arrays))
            and arrays["ring_val"].shape == self._ring_val.shape
        )
        if not same:
            raise InvalidInput(
                "the detector's state was taken with other settings (bucket, series, "
                "threshold or lead)",
                "alert_bucket_s",
            )
        for i, a in enumerate(self._arrays):
            a[...] = arrays[f"k{i}"]
        for n in ("allowed", "rate", "last_active", "last", "ring_val", "ring_exp"):
            getattr(self, f"_{n}")[...] = arrays[n]
        self._names = list(meta["names"])
        self._keys = [(int(m), str(c), str(d)) for m, c, d in meta["keys"]]
        self._rows = {str(k): int(v) for k, v in meta["rows"].items()}
        self._free = [int(r) for r in meta["free"]]
        self._cur = None if meta["cur"] is None else int(meta["cur"])
        self._active = {int(r): Alert(**a) for r, a in meta["active"]}
        self._pending = [Alert(**a) for a in meta["pending"]]
        self.dropped_late, self.dropped_early, self.dropped_full = meta["dropped"]
        self._memo.clear()

    # -- internals ---------------------------------------------------------------------------

    def _times(self, t: np.ndarray) -> np.ndarray:
        times = np.asarray(t, dtype=np.float64)
        if times.ndim != 1:
            raise InvalidInput(f"t must be one-dimensional, has shape {times.shape}", "t")
        bad = int(np.count_nonzero(~np.isfinite(times)))
        if bad:
            raise InvalidInput(f"t must be finite epoch seconds; {bad} value(s) are not", "t")
        return times

    @staticmethod
    def _flags(a: np.ndarray, n: int, field: str) -> np.ndarray:
        arr = np.asarray(a)
        if arr.shape != (n,):
            raise InvalidInput(f"{field} must have shape ({n},), is {arr.shape}", field)
        return arr.astype(np.bool_)

    def _row(self, metric: int, channel: object, code: object) -> int:
        """The row of a series, created on first sight (evicting the least recently active
        one if full) and pinned for the current call; -1 if every row is pinned.

        Memoised on the raw values, so the hot path neither validates nor formats names.
        """
        row = self._memo.get((metric, channel, code))
        if row is None:
            ch, cd = _label(channel, "channel"), _label(code, "code") if metric == _ERRORS else ""
            name = f"{METRICS[metric]}{{channel={ch}" + (f",code={cd}}}" if cd else "}")
            row = self._rows.get(name)
            if row is None:
                if self._free:
                    row = self._free.pop()
                else:
                    key = self._last_active + (self._st[:, k.EP_DIR] != 0) * (1 << 40)
                    row = int(np.where(self._pinned, _NEVER, key).argmin())
                    if self._pinned[row]:
                        return -1
                    self._evict(row)
                self._rows[name], self._names[row], self._keys[row] = row, name, (metric, ch, cd)
                self._allowed[row], self._rate[row] = _ALLOWED[metric], _RATE[metric]
                self._last_active[row] = self._cur or 0
            if len(self._memo) >= 8 * len(self._names):
                self._memo.clear()
            self._memo[(metric, channel, code)] = row
        self._pinned[row] = True
        return row

    def _evict(self, row: int) -> None:
        self._memo.clear()  # it may point at this row
        if row in self._active:
            at = (self._cur or 0) * self.bucket_s
            self._pending.append(self._update(row, self._active.pop(row), at, end=at))
        del self._rows[self._names[row]]
        k.reset_rows(row, self._P, *self._arrays)
        self._ring_val[:, row] = 0.0
        self._ring_exp[:, row] = 0.0
        self._last[row] = 0.0

    def _add(self, times: np.ndarray, rows: np.ndarray, values: np.ndarray) -> None:
        """Add events (columns) to the pending buckets of `rows` (one line per series kind)."""
        try:
            if times.size == 0:
                return
            b = np.floor(times / self.bucket_s).astype(np.int64)
            if self._cur is None:
                self._cur = int(b.min())
            late, early = b < self._cur, b >= self._cur + self._lead
            self.dropped_late += int(np.count_nonzero(late))
            self.dropped_early += int(np.count_nonzero(early))
            self.dropped_full += int(np.count_nonzero((rows < 0).any(axis=0) & ~late & ~early))
            rows = np.ascontiguousarray(np.where(late | early, -1, rows))  # one compiled layout
            k.accumulate(
                b, self._lead, rows, values, self._ring_val, self._ring_exp, self._last_active
            )
        finally:
            self._pinned[:] = False

    def _close(self, first: int, nb: int, rows: np.ndarray) -> list[Alert]:
        """Run the kernel over buckets `first .. first + nb - 1` for `rows`."""
        b = first + np.arange(nb)
        inring = min(nb, self._lead)
        slots = b[:inring] % self._lead
        x = np.zeros((nb, rows.size))
        e = np.ones((nb, rows.size))
        x[:inring] = self._ring_val[slots][:, rows]
        rate = self._rate[rows]
        e[:, rate] = 0.0
        e[:inring, rate] = self._ring_exp[slots][:, rows[rate]]
        self._ring_val[slots] = 0.0
        self._ring_exp[slots] = 0.0
        t0 = b * self.bucket_s
        c0, c1, f, dow = k.time_features(t0 + self.bucket_s / 2, self._knots, self.utc_offset_s)
        out = np.empty((nb, rows.size, k.N_OUT))
        k.run_block(rows, x, e, t0, c0, c1, f, dow, self._P, self._allowed, *self._arrays, out)
        last = out[-1]
        self._last[rows] = np.column_stack(
            [x[-1], e[-1], last[:, k.O_EXPECTED], last[:, k.O_SD], last[:, k.O_SCORE]]
            + [last[:, k.O_WARM]]
        )
        alerts = []
        for bi, j in zip(*np.nonzero(out[:, :, k.O_EVENT]), strict=True):
            row, o, at = int(rows[j]), out[bi, j], float(t0[bi] + self.bucket_s)
            event = int(o[k.O_EVENT])
            if event == k.EV_OPENED:
                kind = "drop" if o[k.O_EP_DIR] < 0 else "spike"
                start = float(o[k.O_EP_START])
                self._active[row] = Alert(self._names[row], kind, "warning", start, at, 0, 0, 0, "")
            a = self._update(
                row, self._active[row], at, o, end=at if event == k.EV_CLOSED else None
            )
            if event == k.EV_CLOSED:
                del self._active[row]
            else:
                self._active[row] = a
            alerts.append(a)
        return alerts

    def _update(
        self, row: int, a: Alert, at: float, o: np.ndarray | None = None, end: float | None = None
    ) -> Alert:
        """`a` with the numbers of output `o` (default: the current state) and an explanation."""
        if o is None:
            st = self._st[row]
            sev, act, exp, expo = st[k.EP_SEV], st[k.EP_ACT], st[k.EP_EXP], st[k.EP_EXPO]
            score = self._last[row, 4]
        else:
            sev, act, exp, expo = o[k.O_EP_SEV], o[k.O_EP_ACT], o[k.O_EP_EXP], o[k.O_EP_EXPO]
            score = o[k.O_SCORE]
        metric, channel, code = self._keys[row]
        window = f"in the {_span(at - a.start)} to {dt.fromtimestamp(at, self._tz):%H:%M}"
        day = dt.fromtimestamp(at - self.bucket_s, self._tz).strftime("%A")
        what = f"{channel} {code} errors" if metric == _ERRORS else f"{channel} {_WHAT[metric]}"
        if _RATE[metric]:
            actual, expected = act / max(expo, 1.0), exp / max(expo, 1.0)
            text = f"{what} {actual:.1%} ({act:,.0f} of {expo:,.0f} orders) {window}"
            text += f", expected {expected:.1%}"
        else:
            actual, expected = act, exp
            text = f"{what} {_num(act)} {window}, expected {_num(exp)}"
        if exp >= 1.0:
            text += f" ({(act - exp) / exp:+.0%})"
        text += f" for a {day} at this hour"
        if end is not None:
            text = f"resolved at {dt.fromtimestamp(end, self._tz):%H:%M}: {text}"
        severity = "critical" if sev > 0 else "warning"
        numbers = (float(expected), float(actual), float(score))
        return Alert(a.series, a.kind, severity, a.start, at, *numbers, text, end)
