"""Anomaly detection: kernel against a plain-Python reference; the live monitor on clean and
broken streams; bounded memory; the offline detector on any scale and interval; CSV errors."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import InvalidInput
from engine.monitoring import anomaly_kernels as k
from engine.monitoring.anomaly import Alert, StreamMonitor
from engine.monitoring.series_detection import detect_csv, detect_series

DAY = 86400.0
MONDAY = 1709510400.0  # 2024-03-04 00:00 UTC


# -- kernel against a reference ----------------------------------------------------------------


def reference(P, nd, x, e, t0, c0, c1, f, dow, allowed):
    """The detector of one series from its definition, one bucket at a time."""
    daily, weekly = P[k.P_DAILY] > 0, P[k.P_WEEKLY] > 0
    L = Lw = 0.0
    phi, phin, nobs = P[k.P_PHI0], P[k.P_PHI_PRIOR], 0
    D, Dw = [1.0] * nd, [0.0] * nd
    W, Ww = [1.0] * 7, [0.0] * 7
    C, Cw = [1.0] * (7 * nd), [0.0] * (7 * nd)
    cus = {1: 0.0, -1: 0.0}
    run = {1: [0.0] * 4, -1: [0.0] * 4}
    ep = {"dir": 0, "sev": 0, "start": 0.0, "act": 0.0, "exp": 0.0, "expo": 0.0}
    h = P[k.P_H]
    out = np.zeros((len(x), k.N_OUT))

    def ratio(v, wsum, w, xx, base, mem, prior=0.0):
        if w <= 0 or base <= 1e-12:
            return v, wsum
        wsum = wsum * (1 - w / mem) + w * base
        return v + w * (xx - v * base) / (wsum + prior), wsum

    def score(s):
        return 1 - 2 ** (-s / h)

    for b in range(len(x)):
        k0, k1 = c0[b] % nd, c1[b] % nd
        dd = (1 - f[b]) * D[k0] + f[b] * D[k1] if daily else 1.0
        ww = W[dow[b]] if weekly else 1.0
        cc = (1 - f[b]) * C[c0[b]] + f[b] * C[c1[b]] if daily and weekly else 1.0
        mu = L * dd * ww * cc * e[b]
        sd = math.sqrt(P[k.P_POISSON] * mu + phi * mu * mu + P[k.P_FLOOR_VAR])
        warm = nobs >= P[k.P_WARM_N]
        event = 0
        if e[b] > 0:
            z = (x[b] - mu) / sd
            for d in (1, -1):
                prev = cus[d]
                on = warm and allowed & (k.SPIKE if d == 1 else k.DROP)
                s = min(max(0.0, prev + d * z - P[k.P_K]), P[k.P_CAP] * h) if on else 0.0
                if on and d * z <= 0:
                    s = min(s, 0.5 * prev)
                if s > 0:
                    if prev <= 0:
                        run[d] = [t0[b], 0.0, 0.0, 0.0]
                    run[d][1] += x[b]
                    run[d][2] += mu
                    run[d][3] += e[b]
                cus[d] = s
            if ep["dir"]:
                ep["act"] += x[b]
                ep["exp"] += mu
                ep["expo"] += e[b]
                if cus[ep["dir"]] < h / 2:
                    ep["dir"], event = 0, k.EV_CLOSED
                elif not ep["sev"] and score(cus[ep["dir"]]) >= P[k.P_CRIT]:
                    ep["sev"], event = 1, k.EV_ESCALATED
            elif max(cus.values()) >= h:
                d = -1 if cus[-1] >= cus[1] else 1
                ep = {"dir": d, "sev": int(score(cus[d]) >= P[k.P_CRIT]), "start": run[d][0]}
                ep.update(act=run[d][1], exp=run[d][2], expo=run[d][3])
                event = k.EV_OPENED
            if not ep["dir"] or t0[b] - ep["start"] >= P[k.P_RELEARN]:
                xx = min(max(x[b], mu - P[k.P_CLIP] * sd), mu + P[k.P_CLIP] * sd) if warm else x[b]
                xx = max(xx, 0.0)
                L, Lw = ratio(L, Lw, 1.0, xx, dd * ww * cc * e[b], P[k.P_MEM_LEVEL])
                if daily:
                    for kn, w in ((k0, 1 - f[b]), (k1, f[b])):
                        base = L * ww * cc * e[b]
                        D[kn], Dw[kn] = ratio(D[kn], Dw[kn], w, xx, base, P[k.P_MEM_DAILY])
                    dd = (1 - f[b]) * D[k0] + f[b] * D[k1]
                if weekly:
                    base = L * dd * cc * e[b]
                    W[dow[b]], Ww[dow[b]] = ratio(
                        W[dow[b]], Ww[dow[b]], 1.0, xx, base, P[k.P_MEM_WEEKLY]
                    )
                    ww = W[dow[b]]
                if daily and weekly:
                    for kn, w in ((c0[b], 1 - f[b]), (c1[b], f[b])):
                        base, mem, prior = L * dd * ww * e[b], P[k.P_MEM_HOW], P[k.P_PRIOR_HOW]
                        C[kn], Cw[kn] = ratio(C[kn], Cw[kn], w, xx, base, mem, prior)
                if warm and mu > 1e-12:
                    w = mu / (1 + mu)
                    r2 = ((xx - mu) ** 2 - P[k.P_POISSON] * mu) / mu**2
                    phin = min(phin + w, P[k.P_MEM_PHI])
                    phi = min(max(phi + w * (r2 - phi) / phin, P[k.P_PHI_MIN]), P[k.P_PHI_MAX])
                nobs += 1
        o = out[b]
        o[k.O_EVENT], o[k.O_EXPECTED], o[k.O_SD] = event, mu, sd
        o[k.O_SCORE], o[k.O_WARM] = score(max(cus.values())), warm
        o[k.O_STAT] = max(cus.values())
        o[k.O_EP_DIR], o[k.O_EP_SEV], o[k.O_EP_START] = ep["dir"], ep["sev"], ep["start"]
        o[k.O_EP_ACT], o[k.O_EP_EXP], o[k.O_EP_EXPO] = ep["act"], ep["exp"], ep["expo"]
    return out


def params(mode: str, bucket_s: float) -> np.ndarray:
    """Short memories and warm-up, so a short series exercises forgetting and alerts."""
    P = np.zeros(k.N_PARAMS)
    P[k.P_MEM_LEVEL], P[k.P_MEM_DAILY], P[k.P_MEM_WEEKLY] = 20, 3, 4
    P[k.P_MEM_HOW], P[k.P_PRIOR_HOW], P[k.P_MEM_PHI] = 2, 5, 10
    P[k.P_PHI0], P[k.P_PHI_PRIOR], P[k.P_PHI_MIN], P[k.P_PHI_MAX] = 0.02, 3, 0.001, 1.0
    P[k.P_POISSON], P[k.P_FLOOR_VAR] = (0.0, 0.01) if mode == "plain" else (1.0, 1.0)
    P[k.P_CLIP], P[k.P_K], P[k.P_H], P[k.P_CRIT], P[k.P_CAP] = 2.5, 1.0, 4.0, 0.8, 3.0
    P[k.P_WARM_N], P[k.P_RELEARN] = 12, 5 * bucket_s
    P[k.P_DAILY] = P[k.P_WEEKLY] = float(mode != "plain")
    return P


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(["count", "rate", "plain"]),
    st.lists(st.tuples(st.integers(0, 120), st.integers(0, 120)), min_size=1, max_size=150),
    st.floats(0.0, 4 * 3600.0),
)
def test_kernel_matches_reference(mode: str, pairs: list[tuple[int, int]], offset: float) -> None:
    bucket_s, nd = 4 * 3600.0, 6
    a, b = np.ascontiguousarray(np.array(pairs, dtype=np.float64).T)
    x, e = (np.minimum(a, b), np.maximum(a, b)) if mode == "rate" else (a, np.ones_like(a))
    t0 = MONDAY + offset + bucket_s * np.arange(x.size)
    mid = t0 + bucket_s / 2
    dow = (((mid - MONDAY) // DAY) % 7).astype(np.int64)
    pos = (mid - MONDAY) % (7 * DAY) / DAY * nd - 0.5
    c0 = np.floor(pos).astype(np.int64) % (7 * nd)
    c1, f = (c0 + 1) % (7 * nd), pos - np.floor(pos)
    P = params(mode, bucket_s)
    allowed = k.DROP | k.SPIKE
    state = k.new_state(1, nd, P)
    out = np.empty((x.size, 1, k.N_OUT))
    rows, allow = np.zeros(1, np.int64), np.array([allowed], np.int8)
    k.run_block(rows, x[:, None], e[:, None], t0, c0, c1, f, dow, P, allow, *state, out)
    want = reference(P, nd, x, e, t0, c0, c1, f, dow, allowed)
    np.testing.assert_allclose(out[:, 0], want, rtol=1e-9, atol=1e-9)


# -- the live monitor --------------------------------------------------------------------------

CHANNELS = ("web", "app", "phone")
PEAK = np.array([150.0, 60.0, 4.0])  # orders per 5-min bucket at the daily peak
CODES = ("PAYMENT_TIMEOUT", "ADDRESS_INVALID")
CODE_RATE = np.array([0.004, 0.001])  # errors per order


def mean_orders(t: float) -> np.ndarray:
    """Daily cycle (quiet at 4:00, busy at 16:00) and busier weekends."""
    hour = (t % DAY) / 3600
    weekend = ((t - MONDAY) // DAY) % 7 >= 5
    return PEAK * (0.55 - 0.45 * math.cos(2 * math.pi * (hour - 4) / 24)) * (1.3 if weekend else 1)


@dataclass
class Feed:
    """A clean stream, bucket by bucket, that tests can break from any point on."""

    monitor: StreamMonitor
    t: float
    rng: np.random.Generator

    def run(
        self,
        buckets: int,
        orders_factor: dict[str, float] | None = None,
        error_factor: float = 1.0,
    ) -> Iterator[list[Alert]]:
        bs = self.monitor.bucket_s
        for _ in range(buckets):
            lam = mean_orders(self.t + bs / 2)
            for c, f in (orders_factor or {}).items():
                lam[CHANNELS.index(c)] *= f
            n = self.rng.poisson(lam)
            ch = np.repeat(np.array(CHANNELS), n)
            tt = self.t + bs * self.rng.random(ch.size)
            flags = [self.rng.random(ch.size) < p for p in (0.02, 0.1, 0.004)]
            self.monitor.observe_orders(tt, ch, *flags)
            err = self.rng.poisson(np.outer(lam, CODE_RATE))
            err[1, 0] = self.rng.poisson(lam[1] * CODE_RATE[0] * error_factor)
            pair = np.repeat(np.arange(err.size), err.ravel())
            ech = np.array(CHANNELS)[pair // len(CODES)]
            self.monitor.observe_events(
                self.t + bs * self.rng.random(pair.size), ech, np.array(CODES)[pair % len(CODES)]
            )
            self.t += bs
            yield self.monitor.advance(self.t)


@pytest.fixture(scope="module")
def clean() -> tuple[Feed, list[Alert]]:
    """Three weeks of a clean stream at 5-min buckets, and every alert it raised."""
    feed = Feed(StreamMonitor(), MONDAY, np.random.default_rng(3))
    alerts = [a for batch in feed.run(21 * 288) for a in batch]
    return feed, alerts


def resume(clean: tuple[Feed, list[Alert]], hour: float) -> Feed:
    """A copy of the warmed-up stream, advanced (cleanly) to `hour` of the next day."""
    feed = copy.deepcopy(clean[0])
    assert not [a for b in feed.run(int(hour * 12)) for a in b]
    return feed


def test_no_alert_on_clean_seasonal_stream(clean: tuple[Feed, list[Alert]]) -> None:
    feed, alerts = clean
    assert alerts == []
    assert feed.monitor.active_alerts() == []
    snapshot = {s.series: s for s in feed.monitor.series_snapshot()}
    assert len(snapshot) == 4 * len(CHANNELS) + len(CHANNELS) * len(CODES)
    assert all(s.warm for s in snapshot.values())


def test_half_drop_detected_within_three_buckets_and_is_one_alert(
    clean: tuple[Feed, list[Alert]],
) -> None:
    feed = resume(clean, 14.0)
    raised = [a for batch in feed.run(3, {"web": 0.5}) for a in batch]
    assert [(a.series, a.kind) for a in raised] == [("orders{channel=web}", "drop")]
    alert = raised[0]
    assert alert.actual < 0.65 * alert.expected
    assert alert.explanation.startswith("web orders ")
    # The incident goes on for an hour, then ends: it stays one alert, which then resolves.
    later = [a for batch in feed.run(12, {"web": 0.5}) for a in batch]
    later += [a for batch in feed.run(12) for a in batch]
    assert {(a.series, a.start) for a in later} == {(alert.series, alert.start)}
    # Escalated while it lasted, then resolved (keeping the severity it reached).
    assert [(a.severity, a.end is None) for a in later] == [("critical", True), ("critical", False)]
    assert feed.monitor.active_alerts() == []


def test_silent_channel_counts_as_zero(clean: tuple[Feed, list[Alert]]) -> None:
    feed = resume(clean, 11.0)
    raised = [a for batch in feed.run(3, {"app": 0.0}) for a in batch]
    assert [(a.series, a.kind) for a in raised] == [("orders{channel=app}", "drop")]
    assert raised[0].actual == 0.0
    # Still silent: the evidence grows and the alert escalates; nothing else alerts.
    raised = [a for batch in feed.run(3, {"app": 0.0}) for a in batch]
    assert [(a.series, a.severity) for a in raised] == [("orders{channel=app}", "critical")]
    assert [a.series for a in feed.monitor.active_alerts()] == ["orders{channel=app}"]


def test_error_code_spike_detected(clean: tuple[Feed, list[Alert]]) -> None:
    feed = resume(clean, 20.0)
    raised = [a for batch in feed.run(4, error_factor=40.0) for a in batch]
    series = "errors{channel=app,code=PAYMENT_TIMEOUT}"
    assert {(a.series, a.kind, a.start) for a in raised} == {(series, "spike", raised[0].start)}
    assert raised[0].actual > 5 * raised[0].expected


def test_memory_bounded_over_many_channels_and_codes() -> None:
    mon = StreamMonitor(max_series=64)
    nbytes = mon.nbytes
    rng = np.random.default_rng(0)
    t = MONDAY
    for _ in range(2000):
        names = np.array(["web"] + [f"ch{rng.integers(1_000_000)}" for _ in range(9)])
        mon.observe_orders(np.full(10, t + 1), names, *np.zeros((3, 10), bool))
        codes = [f"E{rng.integers(1_000_000)}" for _ in range(5)]
        mon.observe_events(np.full(5, t + 2), ["web"] * 5, codes)
        t += mon.bucket_s
        mon.advance(t)
        assert mon.n_series <= 64
    assert mon.nbytes == nbytes
    kept = {s.series for s in mon.series_snapshot()}
    assert "orders{channel=web}" in kept  # the one channel active all along is never evicted
    assert mon.dropped_full == 0


def test_late_events_are_counted_not_added() -> None:
    mon = StreamMonitor()
    mon.observe_orders(np.array([MONDAY + 10.0]), ["web"], *np.zeros((3, 1), bool))
    mon.advance(MONDAY + 600.0)
    mon.observe_orders(np.array([MONDAY + 20.0]), ["web"], *np.zeros((3, 1), bool))
    assert mon.dropped_late == 1


def test_observe_validates_with_expected_and_actual() -> None:
    mon = StreamMonitor()
    with pytest.raises(InvalidInput, match=r"declined must have shape \(2,\), is \(3,\)") as exc:
        mon.observe_orders(np.zeros(2), ["a", "b"], np.zeros(3, bool), np.zeros(2), np.zeros(2))
    assert exc.value.field == "declined"
    with pytest.raises(InvalidInput, match="finite") as exc:
        mon.observe_events(np.array([np.nan]), ["a"], ["E"])
    assert exc.value.field == "t"
    with pytest.raises(InvalidInput, match="channel must have 1 values, has 2"):
        mon.observe_events(np.zeros(1), ["a", "b"], ["E"])


# -- offline -------------------------------------------------------------------------------------


def _one_minute_millions(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    t = 1.7e9 + 60.0 * np.arange(5 * 1440)
    hour = (t % DAY) / 3600
    v = 1e6 * (1 + 0.5 * np.sin(2 * np.pi * (hour - 9) / 24)) * (1 + 0.01 * rng.normal(size=t.size))
    shift = 4 * 1440 + 600
    v[shift:] *= 0.75
    return t, v, shift


def _hourly_counts(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    t = 1.7e9 + 3600.0 * np.arange(28 * 24)
    hour = (t % DAY) / 3600
    weekend = ((t // DAY) + 3) % 7 >= 5
    lam = 3 * (1 + 0.5 * np.sin(2 * np.pi * (hour - 9) / 24)) * np.where(weekend, 1.3, 1.0)
    shift = 21 * 24 + 5
    lam[shift:] *= 3
    return t, rng.poisson(lam).astype(np.float64), shift


def _daily_negative(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """Daily values around zero (a margin, say) with a weekly pattern."""
    t = 1.7e9 + DAY * np.arange(15 * 7)
    weekend = ((t // DAY) + 3) % 7 >= 5
    v = np.where(weekend, -20.0, 5.0) + rng.normal(0, 1.0, t.size)
    shift = 12 * 7 + 2
    v[shift:] -= 15
    return t, v, shift


@pytest.mark.parametrize(
    ("make", "max_delay"),
    [
        (_one_minute_millions, 5),  # -25% on a 1% noise: seen at once
        (_hourly_counts, 12),  # 3 -> 9 events an hour: Poisson noise takes hours to rule out
        (_daily_negative, 3),
    ],
)
def test_detect_series_finds_a_level_shift_at_any_scale(make, max_delay: int) -> None:
    t, v, shift = make(np.random.default_rng(1))
    score, alert = detect_series(t, v)
    assert score.shape == alert.shape == t.shape
    assert ((score >= 0) & (score <= 1)).all()
    onsets = np.flatnonzero(np.diff(alert, prepend=0) > 0)
    assert (onsets < shift).sum() <= shift / 1000  # few false onsets on the clean part
    assert alert[shift:].any() and np.argmax(alert[shift:]) < max_delay


def test_detect_csv_round_trip_with_named_columns(tmp_path: Path) -> None:
    t, v, shift = _hourly_counts(np.random.default_rng(2))
    stamps = pa.array((t * 1e6).astype("int64"), pa.timestamp("us")).cast(pa.string())
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    pacsv.write_csv(pa.table({"when": stamps, "n": v}), src)
    assert detect_csv(str(src), str(out), timestamp_col="when", value_col="n") == t.size
    res = pacsv.read_csv(out)
    assert res.column_names == [
        "timestamp", "value", "points", "filled", "anomaly_score", "alert", "in_alert",
    ]  # fmt: skip
    alert, in_alert = res.column("alert").to_numpy(), res.column("in_alert").to_numpy()
    assert in_alert[shift:].any() and not in_alert[:shift].any()
    onsets = np.flatnonzero(np.diff(in_alert, prepend=0) > 0)
    np.testing.assert_array_equal(np.flatnonzero(alert), onsets)  # the first point only
    np.testing.assert_array_equal(res.column("value").to_numpy(), v)
    assert (res.column("points").to_numpy() == 1).all() and not res.column(
        "filled"
    ).to_numpy().any()


@pytest.mark.parametrize(
    ("rows", "column", "message"),
    [
        ({"timestamp": [1, 2, 3], "v": [1, 2, 3]}, "value", "column 'value' not found"),
        ({"ts": list(range(30)), "value": [1] * 30}, "timestamp", "column 'timestamp' not found"),
        ({"timestamp": list(range(30)), "value": ["1"] * 29 + ["abc"]}, "value", "not numbers"),
        ({"timestamp": ["2024-01-01"] * 29 + ["soon"], "value": [1] * 30}, "timestamp", "not time"),
        ({"timestamp": list(range(10)), "value": [1] * 10}, "timestamp", "too short"),
        (
            {"timestamp": list(range(29)) + [10**9], "value": [1] * 30},
            "timestamp",
            "would have 1,000,000,001 buckets",
        ),
        ({"timestamp": [5] * 30, "value": [1] * 30}, "timestamp", "every timestamp is the same"),
    ],
)
def test_detect_csv_errors_name_the_column(
    tmp_path: Path, rows: dict[str, list], column: str, message: str
) -> None:
    src = tmp_path / "in.csv"
    src.write_text(
        ",".join(rows)
        + "\n"
        + "\n".join(",".join(str(c) for c in r) for r in zip(*rows.values(), strict=True))
        + "\n"
    )
    with pytest.raises(InvalidInput, match=message) as exc:
        detect_csv(str(src), str(tmp_path / "out.csv"))
    assert exc.value.field == column
    assert f"'{column}'" in str(exc.value)


def test_detect_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from engine.cli import main

    t, v, shift = _hourly_counts(np.random.default_rng(4))
    stamps = pa.array((t * 1e6).astype("int64"), pa.timestamp("us")).cast(pa.string())
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    pacsv.write_csv(pa.table({"ts": stamps, "orders": v}), src)
    args = ["detect", "--csv", str(src), "--timestamp-col", "ts", "--value-col", "orders"]
    assert main([*args, "--out", str(out)]) == 0
    assert pacsv.read_csv(out).column("alert").to_numpy()[shift:].any()
    assert main([*args, "--out", str(out), "--kind", "gauge", "--interval", "1h"]) == 0
    assert main(["detect", "--csv", str(src), "--out", str(out)]) == 2  # default names absent
    assert "column 'timestamp'" in capsys.readouterr().err


def _write(path: Path, ts: list, values: list) -> None:
    pacsv.write_csv(pa.table({"timestamp": ts, "value": values}), path)


def test_counts_on_a_grid_missing_is_zero_duplicates_add_order_does_not_matter(
    tmp_path: Path,
) -> None:
    """--kind count: points are summed per bucket, an empty bucket is 0, out-of-order and
    repeated timestamps are taken as they are."""
    t, v, shift = _hourly_counts(np.random.default_rng(5))
    keep = np.ones(t.size, bool)
    keep[[10, 11, 40]] = False  # three missing hours
    ts, vals = list(t[keep]), list(v[keep])
    ts += [t[20], t[20] + 60.0]  # the 20th hour reported twice more, inside the hour
    vals += [2.0, 1.0]
    perm = np.random.default_rng(6).permutation(len(ts))  # and all of it shuffled
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    _write(src, [ts[i] for i in perm], [vals[i] for i in perm])
    assert detect_csv(str(src), str(out), kind="count") == t.size
    res = pacsv.read_csv(out)
    np.testing.assert_array_equal(res.column("timestamp").to_numpy(), t)
    want = np.where(keep, v, 0.0)
    want[20] += 3.0
    np.testing.assert_array_equal(res.column("value").to_numpy(), want)
    np.testing.assert_array_equal(res.column("filled").to_numpy(), (~keep).astype(int))
    assert res.column("points").to_numpy()[20] == 3
    assert res.column("in_alert").to_numpy()[shift:].any()


def test_gauges_average_duplicates_and_leave_gaps_missing(tmp_path: Path) -> None:
    """--kind gauge (auto for non-integers): a bucket is the mean of its points, a gap is
    bridged for the model, marked filled, scored 0 and never an alert."""
    rng = np.random.default_rng(7)
    t = 1_700_000_000.0 + 60.0 * np.arange(3000)
    v = 40.0 + rng.normal(0, 2.0, t.size)  # a CPU %: continuous, no integers
    v[2500:] += 25.0  # a level shift
    gap = slice(1200, 1260)  # an hour with no points
    keep = np.ones(t.size, bool)
    keep[gap] = False
    ts = list(t[keep]) + [t[100] + 5.0]  # a duplicate in minute 100
    vals = list(v[keep]) + [v[100] + 10.0]
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    _write(src, ts, vals)
    assert detect_csv(str(src), str(out)) == t.size  # auto: a gauge
    res = pacsv.read_csv(out)
    value, filled = res.column("value").to_numpy(), res.column("filled").to_numpy()
    assert value[100] == pytest.approx(v[100] + 5.0)  # the mean of the two
    assert filled[gap].all() and filled.sum() == 60
    assert np.isfinite(value).all()
    score, alert = res.column("anomaly_score").to_numpy(), res.column("alert").to_numpy()
    assert (score[gap] == 0).all() and not alert[gap].any()
    assert res.column("in_alert").to_numpy()[2500:2520].any()
    assert alert.sum() == np.count_nonzero(
        np.diff(res.column("in_alert").to_numpy(), prepend=0) > 0
    )


def test_the_interval_can_be_forced(tmp_path: Path) -> None:
    t, v, _ = _hourly_counts(np.random.default_rng(8))
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    _write(src, list(t), list(v))
    n = detect_csv(str(src), str(out), kind="count", interval=4 * 3600.0)
    res = pacsv.read_csv(out)
    assert n == res.num_rows == -(-t.size // 4)
    assert res.column("value").to_numpy().sum() == v.sum()  # counts add up into 4 h buckets
