"""Numba kernels of the anomaly detector: a seasonal count baseline and a CUSUM per series.

Every series (orders of a channel, its decline rate, one error code, or an offline series)
is one row of flat state arrays, so the live monitor and `detect_series` run the same
`run_block` kernel: buckets in time order, the series of a bucket side by side.

The baseline of a bucket is multiplicative, `mu = level * daily(time of day) * weekly(day)
* correction(weekday, time of day) * exposure`, where exposure is the bucket's order count for
a rate series (declines out of orders) and 1 for a count series. Multiplicative because
order volume, errors and declines scale with traffic. The daily profile and the hour-of-week
correction have a knot every 30 min (at most 48 a day), read by linear interpolation, so a
steep morning ramp is not cut into steps that look like anomalies; the weekly factor is one
per day, a step at midnight, when volume is lowest. The daily shape is pooled over all days
and learns fast; the correction learns, per weekday, what that shape misses (weekend
mornings that start later, a Friday evening peak).

Each component is an exponentially weighted ratio of sums, observed events over the events
the other components expect (multiplicative Holt-Winters in its Poisson maximum-likelihood
form). A component moves in proportion to the events it is expected to explain: a quiet
night bucket barely moves it, where a mean of ratios would jump on every stray order. A new
series averages its first buckets exactly, then forgets at a fixed rate, so no starting
guess lingers.

Noise is count-aware: `var = poisson * mu + phi * mu**2 + floor_var`. The Poisson term
keeps a channel of 5 orders per bucket from alarming on its own noise; `phi` (a negative
binomial dispersion learned from residuals) covers day-to-day swings and model error on
busy channels; `floor_var` keeps a rare error code (0.02 per bucket) from alarming on one
event. Learning is robust to the incidents it looks for: observations are winsorised to
`mu +- clip * sd`, and nothing is learned while an alert is open, so an outage does not
become next week's normal (learning through alerts lowered the baseline after every
incident and raised false alarms a week later in the evaluation). An alert open longer
than `relearn` seconds is a lasting change, not an incident: learning resumes, clipped, so
the baseline moves to the new level and the alert ends instead of staying open forever.

Noise is one of three models (`P_NOISE`). The live monitor's is the normal approximation
above, `z = (x - mu) / sd`. Offline series (`series_detection`) use normal scores instead
(`noise_models`): a count's negative binomial mid-p value, or, for a gauge, a Student t
around the baseline whose scale is the median absolute residual and whose degrees of freedom
follow how often residuals pass 4 times it; the baseline of a gauge learns from values
winsorised at 3 sd of that scale (a Huber-type location). On data without anomalies these
scores are standard normal for every kind and scale of series, so one CUSUM threshold is one
false-alarm rate (`noise_models.cusum_tail`).

Detection is a CUSUM per direction on `z` with slack `k`: a drop of half on a
busy channel (z of -4 or less) crosses `h` in two or three buckets, while a single 3-sigma
bucket does not. A bucket on the other side of the baseline at least halves the sum, so an
incident that ends stops alerting within a few buckets however large it was (the sum is
also capped at `cap * h`); halving on every bucket short of `k` sd closed alerts sooner but
split long, shallow incidents into several alerts in the evaluation. An alert opens at `h`
and closes below `h / 2` (hysteresis), so one incident is one alert. The live score is
`1 - 2**(-sum / h)`: 0.5 at the alert threshold, 0.9 near the critical one; offline, the sum
itself (`O_STAT`) becomes a calibrated tail probability (`noise_models.calibrated_score`).
"""

from __future__ import annotations

import numpy as np

from engine.jit import njit, njit_inline
from engine.monitoring import noise_models as nm

# Columns of the scalar state `st[S, N_STATE]`.
LEVEL, LEVEL_N, PHI, PHI_N, N_OBS, CUS_UP, CUS_DN = 0, 1, 2, 3, 4, 5, 6
# A run is the stretch since a direction's CUSUM left zero: start, actual, expected, exposure.
RUN_UP, RUN_DN = 7, 11
EP_DIR, EP_SEV, EP_START, EP_ACT, EP_EXP, EP_EXPO = 15, 16, 17, 18, 19, 20
# A gauge's median absolute residual, its share of residuals past `EXCEED` of those, the
# buckets its scale has learnt from, and its tails' degrees of freedom; buckets in alert.
MED, EXC, SC_N, NU, EP_N = 21, 22, 23, 24, 25
N_STATE = 26

# Parameters `P[N_PARAMS]`. Memories are in buckets (or visits of a knot, in its weights).
(
    P_MEM_LEVEL,
    P_MEM_DAILY,
    P_MEM_WEEKLY,
    P_MEM_HOW,
    P_PRIOR_HOW,
    P_MEM_PHI,
    P_PHI0,
    P_PHI_PRIOR,
    P_PHI_MIN,
    P_PHI_MAX,
    P_POISSON,
    P_FLOOR_VAR,
    P_CLIP,
    P_K,
    P_H,
    P_CRIT,
    P_CAP,
    P_WARM_N,
    P_RELEARN,
    P_DAILY,
    P_WEEKLY,
    P_NOISE,
    P_MEM_SCALE,
    P_REBASE,
) = range(24)
N_PARAMS = 24

# Outputs `out[B, R, N_OUT]`, per bucket and series, after the bucket was applied.
O_EVENT, O_EXPECTED, O_SD, O_SCORE, O_WARM = 0, 1, 2, 3, 4
O_EP_DIR, O_EP_SEV, O_EP_START, O_EP_ACT, O_EP_EXP, O_EP_EXPO = 5, 6, 7, 8, 9, 10
O_STAT = 11  # the larger CUSUM, in sd
N_OUT = 12

# Noise models (`P_NOISE`): the normal approximation of a count's noise, with a variance
# floor (the live monitor, its threshold chosen on the order stream); a count's negative
# binomial and a gauge's Student t, both by normal scores (`noise_models`).
NOISE_NORMAL, NOISE_COUNT, NOISE_GAUGE = 0, 1, 2

EV_OPENED, EV_ESCALATED, EV_CLOSED = 1, 2, 3
DROP, SPIKE = 1, 2  # bits of a series' allowed directions; EP_DIR is -1 (drop) or +1 (spike)
_TINY = 1e-12
DAY = 86400.0


def params(
    per_day: float,
    *,
    daily: bool = True,
    weekly: bool = True,
    counts: bool = True,
    threshold: float = 6.0,
    critical: float = 0.9,
    noise: int = NOISE_NORMAL,
    rebase: float = 0.0,
) -> tuple[np.ndarray, int]:
    """Kernel parameters for `per_day` buckets a day, and the number of daily knots.

    Memories are in days so they mean the same at any bucket size: the level forgets over
    two weeks (slower than the weekly cycle, so a busy weekend does not lift Monday's
    baseline), the daily shape over a week, the weekly factors and the hour-of-week
    correction over four weeks. The correction, the finest component (one knot per weekday
    and half hour), starts from 20 pseudo-events of "no correction": a busy channel learns
    its Saturday mornings in one visit, a rare error code keeps the pooled shape. Alerts
    wait until every slot has been seen: a week with weekly seasonality, two days with daily
    only. An alert open for a day (or seven buckets, if longer) is a lasting change and the
    baseline resumes learning. The CUSUM slack of 1 sd and the winsorising at 3 sd are
    textbook choices; the threshold of 6 and the correction's prior were chosen on eight
    simulated streams (`python -m benchmarks.anomaly_eval --seed 1..8`): 5 doubles the
    false alarms, 7 adds most of a bucket of delay and missed one incident in 32.

    `noise` is the noise model (`NOISE_*`); a gauge's scale learns over the dispersion's
    memory. `rebase` > 0 (buckets) replaces that relearning: an alert that lasts `rebase`
    buckets ends, and its level becomes the baseline's (`_rebase`).
    """
    knots = min(48, max(1, round(per_day))) if daily else 1
    per_knot = per_day / knots
    seasonal = daily or weekly
    warm_n = max(12.0, 7 * per_day if weekly else 2 * per_day if daily else 0.0)
    P = np.zeros(N_PARAMS)
    P[P_MEM_LEVEL] = 14 * per_day if seasonal else 30.0  # a plain series: a local level
    P[P_MEM_DAILY] = 7 * per_knot
    P[P_MEM_WEEKLY] = 4 * per_day
    P[P_MEM_HOW], P[P_PRIOR_HOW] = 4 * per_knot, 20.0
    P[P_MEM_PHI] = max(7 * per_day, 100.0)
    P[P_PHI0], P[P_PHI_PRIOR] = 0.01, warm_n / 2
    P[P_PHI_MIN] = 0.0 if counts else 1e-4  # a continuous series: at least 1% noise
    P[P_PHI_MAX] = 1.0
    P[P_POISSON] = 1.0 if counts else 0.0
    P[P_FLOOR_VAR] = 1.0 if counts else 1e-4
    P[P_CLIP], P[P_K], P[P_H], P[P_CRIT], P[P_CAP] = 3.0, 1.0, threshold, critical, 4.0
    P[P_WARM_N] = warm_n
    P[P_RELEARN] = max(DAY, 7 * DAY / per_day)
    P[P_DAILY], P[P_WEEKLY] = float(daily), float(weekly)
    P[P_NOISE], P[P_MEM_SCALE], P[P_REBASE] = noise, P[P_MEM_PHI], rebase
    if rebase > 0.0:  # a lasting change ends the alert instead of being learnt through it
        P[P_RELEARN] = np.inf
    return P, knots


def time_features(
    tmid: np.ndarray, knots: int, utc_offset_s: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hour-of-week knots either side of each time, the later one's weight, and the weekday.

    Knot `i` sits in the middle of its slot; Monday 00:00 local time starts the week.
    """
    local = tmid + utc_offset_s
    day = np.floor(local / DAY)
    dow = np.mod(day + 3, 7)  # 1970-01-01 was a Thursday
    pos = (dow + (local - day * DAY) / DAY) * knots - 0.5
    base = np.floor(pos)
    c0 = np.mod(base, 7 * knots).astype(np.int64)
    return c0, (c0 + 1) % (7 * knots), pos - base, dow.astype(np.int64)


State = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def new_state(n: int, knots: int, P: np.ndarray) -> State:
    """Kernel state of `n` fresh series: scalars, then daily, weekly and hour-of-week
    profiles, each with its weights (see the kernels)."""
    st = np.zeros((n, N_STATE))
    arrays = [np.zeros((n, m)) for m in (knots, knots, 7, 7, 7 * knots, 7 * knots)]
    reset_rows(np.arange(n), P, st, *arrays)
    return st, arrays[0], arrays[1], arrays[2], arrays[3], arrays[4], arrays[5]


def reset_rows(
    rows: np.ndarray | int, P: np.ndarray, st, dprof, dcnt, wprof, wcnt, cprof, ccnt
) -> None:
    """Fresh state for `rows` (an index or indices): no history, the dispersion prior, flat
    profiles."""
    st[rows] = 0.0
    st[rows, PHI] = P[P_PHI0]
    st[rows, PHI_N] = P[P_PHI_PRIOR]
    st[rows, EXC], st[rows, NU] = nm.exceedance(nm.NU_PRIOR), nm.NU_PRIOR
    for prof, cnt in ((dprof, dcnt), (wprof, wcnt), (cprof, ccnt)):
        prof[rows] = 1.0
        cnt[rows] = 0.0


@njit_inline
def _ratio_step(value, weight, w, x, base, memory, prior):
    """Exponentially weighted ratio of sums, `sum(x) / sum(base)`, after one more bucket.

    `weight` is the discounted sum of `base`, so a component's step is its share of the
    expected count: a night bucket with a tiny baseline moves it little, where a mean of
    ratios `x / base` would jump on every stray order. `w` is the bucket's weight for this
    knot. `prior` is a pseudo-count of expected events at the start value 1: a busy series
    overrules it within one bucket, a sparse one leans on it until its own events add up,
    which keeps a fine profile from learning the noise of a few counts.
    """
    if w <= 0.0 or base <= _TINY:
        return value, weight
    weight = weight * (1.0 - w / memory) + w * base
    return value + w * (x - value * base) / (weight + prior), weight


@njit_inline
def _cusum(prev, dz, k, cap):
    """One CUSUM step on the deviation `dz` in the detector's direction."""
    s = min(max(0.0, prev + dz - k), cap)
    if dz <= 0.0:
        s = min(s, 0.5 * prev)
    return s


@njit_inline
def _run(st, s, col, prev, now, t0, x, mu, e):
    """Track the run behind a CUSUM: its start and sums, reset whenever the CUSUM is zero."""
    if now <= 0.0:
        return
    if prev <= 0.0:
        st[s, col] = t0
        st[s, col + 1] = 0.0
        st[s, col + 2] = 0.0
        st[s, col + 3] = 0.0
    st[s, col + 1] += x
    st[s, col + 2] += mu
    st[s, col + 3] += e


@njit_inline
def _detect(s, x, e, mu, z, t0, warm, allowed, P, st):
    """CUSUMs and the alert episode of series `s` for one bucket; returns the event."""
    h = P[P_H]
    cap = P[P_CAP] * h
    up_prev = st[s, CUS_UP]
    dn_prev = st[s, CUS_DN]
    up = _cusum(up_prev, z, P[P_K], cap) if warm and (allowed & SPIKE) else 0.0
    dn = _cusum(dn_prev, -z, P[P_K], cap) if warm and (allowed & DROP) else 0.0
    _run(st, s, RUN_UP, up_prev, up, t0, x, mu, e)
    _run(st, s, RUN_DN, dn_prev, dn, t0, x, mu, e)
    st[s, CUS_UP] = up
    st[s, CUS_DN] = dn
    event = 0
    d = st[s, EP_DIR]
    if d != 0.0:
        st[s, EP_N] += 1.0
        st[s, EP_ACT] += x
        st[s, EP_EXP] += mu
        st[s, EP_EXPO] += e
        cs = up if d > 0.0 else dn
        if cs < 0.5 * h:
            st[s, EP_DIR] = 0.0
            event = EV_CLOSED
        elif st[s, EP_SEV] == 0.0 and 1.0 - 2.0 ** (-cs / h) >= P[P_CRIT]:
            st[s, EP_SEV] = 1.0
            event = EV_ESCALATED
    elif dn >= h or up >= h:
        col = RUN_DN if dn >= up else RUN_UP
        cs = max(dn, up)
        st[s, EP_DIR] = -1.0 if dn >= up else 1.0
        st[s, EP_SEV] = 1.0 if 1.0 - 2.0 ** (-cs / h) >= P[P_CRIT] else 0.0
        st[s, EP_START] = st[s, col]
        st[s, EP_ACT] = st[s, col + 1]
        st[s, EP_EXP] = st[s, col + 2]
        st[s, EP_EXPO] = st[s, col + 3]
        st[s, EP_N] = 1.0
        event = EV_OPENED
    return event


@njit_inline
def _interp(prof, s, i0, i1, f):
    return (1.0 - f) * prof[s, i0] + f * prof[s, i1]


@njit_inline
def _knots(prof, cnt, s, i0, i1, f, x, base, memory, prior):
    """Update the two knots a bucket falls between, each by its interpolation weight."""
    prof[s, i0], cnt[s, i0] = _ratio_step(prof[s, i0], cnt[s, i0], 1.0 - f, x, base, memory, prior)
    prof[s, i1], cnt[s, i1] = _ratio_step(prof[s, i1], cnt[s, i1], f, x, base, memory, prior)


@njit_inline
def _learn(s, x, e, mu, sd, warm, c0, c1, f, dow, P, st, dprof, dcnt, wprof, wcnt, cprof, ccnt):
    """Update level, daily knots, weekly factor, hour-of-week correction and dispersion.

    Each component learns what the others, as just updated, leave unexplained.
    """
    x_raw = x
    if warm:  # before warm-up the baseline is too rough to say what an outlier is
        x = min(max(x, mu - P[P_CLIP] * sd), mu + P[P_CLIP] * sd)
    x = max(x, 0.0)
    daily, weekly = P[P_DAILY] > 0.0, P[P_WEEKLY] > 0.0
    nd = dprof.shape[1]
    k0, k1 = c0 % nd, c1 % nd
    D = _interp(dprof, s, k0, k1, f) if daily else 1.0
    W = wprof[s, dow] if weekly else 1.0
    C = _interp(cprof, s, c0, c1, f) if daily and weekly else 1.0
    st[s, LEVEL], st[s, LEVEL_N] = _ratio_step(
        st[s, LEVEL], st[s, LEVEL_N], 1.0, x, D * W * C * e, P[P_MEM_LEVEL], 0.0
    )
    L = st[s, LEVEL]
    if daily:
        _knots(dprof, dcnt, s, k0, k1, f, x, L * W * C * e, P[P_MEM_DAILY], 0.0)
        D = _interp(dprof, s, k0, k1, f)
    if weekly:
        wprof[s, dow], wcnt[s, dow] = _ratio_step(
            wprof[s, dow], wcnt[s, dow], 1.0, x, L * D * C * e, P[P_MEM_WEEKLY], 0.0
        )
        W = wprof[s, dow]
    if daily and weekly:
        _knots(cprof, ccnt, s, c0, c1, f, x, L * D * W * e, P[P_MEM_HOW], P[P_PRIOR_HOW])
    if P[P_NOISE] == NOISE_GAUGE:
        _learn_scale(s, abs(x_raw - mu), warm, P, st)
    elif warm and mu > _TINY:
        # Method of moments for the negative binomial: E[(x - mu)^2] = p * mu + phi * mu^2.
        # Low-count buckets say little about phi and are weighted down.
        w = mu / (1.0 + mu)
        r2 = ((x - mu) ** 2 - P[P_POISSON] * mu) / (mu * mu)
        n = min(st[s, PHI_N] + w, P[P_MEM_PHI])
        st[s, PHI_N] = n
        phi = st[s, PHI] + w * (r2 - st[s, PHI]) / n
        st[s, PHI] = min(max(phi, P[P_PHI_MIN]), P[P_PHI_MAX])
    st[s, N_OBS] += 1.0


_SCALE_PRIOR = 100.0  # buckets the scale remembers in warm-up and after a re-baseline
_EXC_PRIOR = 50.0  # buckets of `nm.NU_PRIOR` tails a gauge starts from


@njit_inline
def _learn_scale(s, r, warm, P, st):
    """Learn a gauge's median absolute residual `r` and how often `r` passes EXCEED of it.

    Over its first `_SCALE_PRIOR` residuals the scale is their mean times 0.845 (median over
    mean of a normal's absolute value), winsorised at five times the estimate: efficient
    while little is known. From then on the median is tracked by its sign (Robbins-Monro in
    log space, steps 1/n for a half-normal), so an outlier moves it no more than any other
    residual does; `n` stays at `_SCALE_PRIOR` during warm-up, so the scale follows the
    residuals down as the baseline learns, and grows up to `P_MEM_SCALE` after. The share
    of residuals past EXCEED medians (the tails) is averaged over the tracking phase. The
    first bucket, which has no baseline, is skipped.
    """
    if st[s, N_OBS] < 1.0:
        return
    n_sc = st[s, SC_N]
    if n_sc < _SCALE_PRIOR:
        if n_sc >= 5.0:
            r = min(r, 5.0 * st[s, MED] / 0.845)
        st[s, MED] += (0.845 * r - st[s, MED]) / (n_sc + 1.0)
    else:
        n = min(n_sc, P[P_MEM_SCALE] if warm else _SCALE_PRIOR)
        med = max(st[s, MED], _TINY)
        above = 1.0 if r > med else 0.0
        st[s, MED] = med * np.exp(2.3 * (above - 0.5) / (n + 1.0))
        past = 1.0 if r > nm.EXCEED * med else 0.0
        m = min(n_sc - _SCALE_PRIOR, P[P_MEM_SCALE])
        st[s, EXC] += (past - st[s, EXC]) / (m + _EXC_PRIOR)
        st[s, NU] = nm.nu_from_exceedance(st[s, EXC])
    st[s, SC_N] = n_sc + 1.0


@njit_inline
def _rebase(s, P, st):
    """End an alert that lasted `P_REBASE` buckets: its level is the new normal.

    The level is scaled by actual over expected since the deviation began, both CUSUMs
    restart, and a gauge's scale learns again with fast steps (a variance change)."""
    if st[s, EP_EXP] > _TINY:
        st[s, LEVEL] *= st[s, EP_ACT] / st[s, EP_EXP]
    else:
        st[s, LEVEL] = st[s, EP_ACT] / max(st[s, EP_EXPO], 1.0)
    st[s, CUS_UP] = 0.0
    st[s, CUS_DN] = 0.0
    st[s, EP_DIR] = 0.0
    st[s, SC_N] = min(st[s, SC_N], _SCALE_PRIOR)


@njit_inline
def _noise(x, mu, s, P, st):
    """The bucket's sd and normal score under the series' noise model (`NOISE_*`)."""
    noise = P[P_NOISE]
    if noise == NOISE_GAUGE:
        med = max(st[s, MED], np.sqrt(P[P_FLOOR_VAR]) * nm.t_median(nm.NU_MAX))
        return med / 0.6744897501960817, nm.gauge_z(x, mu, med, st[s, NU])
    sd = np.sqrt(P[P_POISSON] * mu + st[s, PHI] * mu * mu + P[P_FLOOR_VAR])
    if noise == NOISE_COUNT:
        return sd, nm.count_z(x, mu, st[s, PHI])
    return sd, (x - mu) / sd


@njit
def run_block(
    rows, x, e, t0, c0, c1, f, dow, P, allowed, st, dprof, dcnt, wprof, wcnt, cprof, ccnt, out
):
    """Apply buckets `b` (rows of `x`, `e`) to series `rows[j]` (columns), in time order.

    `x[b, j]` is the count, `e[b, j]` the exposure (0: no information, e.g. a rate series of a
    silent channel); `t0[b]` the bucket's start, `c0/c1/f` its hour-of-week knots and the
    interpolation weight of `c1` (daily knots are `c % n_daily`), `dow[b]` its weekday.
    Writes `out[b, j, :]` (see `O_*`).
    """
    daily, weekly = P[P_DAILY] > 0.0, P[P_WEEKLY] > 0.0
    nd = dprof.shape[1]
    for b in range(x.shape[0]):
        for j in range(rows.shape[0]):
            s = rows[j]
            o = out[b, j]
            xb = x[b, j]
            eb = e[b, j]
            D = _interp(dprof, s, c0[b] % nd, c1[b] % nd, f[b]) if daily else 1.0
            W = wprof[s, dow[b]] if weekly else 1.0
            C = _interp(cprof, s, c0[b], c1[b], f[b]) if daily and weekly else 1.0
            mu = st[s, LEVEL] * D * W * C * eb
            sd, z = _noise(xb, mu, s, P, st)
            warm = st[s, N_OBS] >= P[P_WARM_N]
            event = 0
            if eb > 0.0:
                event = _detect(s, xb, eb, mu, z, t0[b], warm, allowed[s], P, st)
                if st[s, EP_DIR] == 0.0 or t0[b] - st[s, EP_START] >= P[P_RELEARN]:
                    _learn(
                        s, xb, eb, mu, sd, warm, c0[b], c1[b], f[b], dow[b], P,
                        st, dprof, dcnt, wprof, wcnt, cprof, ccnt,
                    )  # fmt: skip
                elif P[P_REBASE] > 0.0 and st[s, EP_N] > P[P_REBASE]:
                    _rebase(s, P, st)
                    event = EV_CLOSED
            cs = max(st[s, CUS_UP], st[s, CUS_DN])
            o[O_EVENT] = event
            o[O_EXPECTED] = mu
            o[O_SD] = sd
            o[O_SCORE] = 1.0 - 2.0 ** (-cs / P[P_H])
            o[O_STAT] = cs
            o[O_WARM] = 1.0 if warm else 0.0
            o[O_EP_DIR] = st[s, EP_DIR]
            o[O_EP_SEV] = st[s, EP_SEV]
            o[O_EP_START] = st[s, EP_START]
            o[O_EP_ACT] = st[s, EP_ACT]
            o[O_EP_EXP] = st[s, EP_EXP]
            o[O_EP_EXPO] = st[s, EP_EXPO]


@njit
def accumulate(bucket, lead, rows, value, ring_val, ring_exp, last_active):
    """Add events to their series' pending buckets (a ring of `lead` buckets).

    `rows[m, i]` is the series of kind `m` that event `i` counts towards (-1: none) and
    `value[m, i]` what it adds; every event adds one to the exposure. Marks the series active
    up to the event's bucket, for least-recently-active eviction.
    """
    for m in range(rows.shape[0]):
        for i in range(rows.shape[1]):
            r = rows[m, i]
            if r >= 0:
                slot = bucket[i] % lead
                ring_val[slot, r] += value[m, i]
                ring_exp[slot, r] += 1.0
                last_active[r] = max(last_active[r], bucket[i])
