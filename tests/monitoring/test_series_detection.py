"""Offline detection's noise models and score: normal scores against exact references, the
CUSUM's null tail against simulation, the same false-alarm rate on pure noise of every kind
and scale, seasonality only where the data has it, and re-baselining after a level shift."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import InvalidInput
from engine.monitoring import anomaly_kernels as k
from engine.monitoring import noise_models as nm
from engine.monitoring.series_detection import (
    ALPHA,
    REBASE,
    detect_series,
    offline_params,
)

DAY = 86400.0
HOURLY = 1.7e9 + 3600.0 * np.arange(6000)


def _normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2))


def _nb_pmf(j: int, mu: float, phi: float) -> float:
    if phi == 0:
        return math.exp(j * math.log(mu) - mu - math.lgamma(j + 1))
    r = 1 / phi
    q = mu / (r + mu)
    return math.exp(
        math.lgamma(j + r) - math.lgamma(r) - math.lgamma(j + 1) + r * math.log1p(-q)
        + j * math.log(q)
    )  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(
    st.floats(0.05, 150.0),
    st.sampled_from([0.0, 0.01, 0.3]),
    st.integers(0, 400),
)
def test_count_score_is_the_mid_p_value_of_a_negative_binomial(mu, phi, x) -> None:
    lower = sum(_nb_pmf(j, mu, phi) for j in range(x)) + 0.5 * _nb_pmf(x, mu, phi)
    z = nm.count_z(float(x), mu, phi)
    if 1e-12 < lower < 1 - 1e-12:
        assert _normal_cdf(z) == pytest.approx(lower, rel=1e-6, abs=1e-9)
    else:  # beyond what doubles resolve from below: a far tail, capped
        assert abs(z) > 6


def test_cusum_tail_matches_a_simulated_cusum() -> None:
    """The detector's CUSUM (slack 1, halved by a step the other way, capped) on normal
    scores, simulated step by step: its share above s is the table's tail."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal(300_000)
    up = dn = 0.0
    stat = np.empty(z.size)
    for i, d in enumerate(z):
        pu, pd = up, dn
        up = min(max(0.0, pu + d - 1.0), 20.0)
        dn = min(max(0.0, pd - d - 1.0), 20.0)
        if d <= 0:
            up = min(up, 0.5 * pu)
        else:
            dn = min(dn, 0.5 * pd)
        stat[i] = max(up, dn)
    s, tail = nm.cusum_tail(1.0, 20.0)
    for level in (1.0, 2.0, 3.0):
        want = float(np.interp(level, s, tail))
        assert (stat >= level).mean() == pytest.approx(want, rel=0.1)


def _noise(name: str, rng: np.random.Generator) -> np.ndarray:
    n = HOURLY.size
    season = 1 + 0.5 * np.sin(2 * np.pi * (HOURLY % DAY) / DAY)
    return {
        "poisson 0.5": lambda: rng.poisson(0.5, n),
        "poisson 300": lambda: rng.poisson(300.0, n),
        "poisson 4, daily": lambda: rng.poisson(4 * season),
        "normal gauge": lambda: 40 + 2 * rng.standard_normal(n),
        "normal gauge, daily": lambda: 40 + 20 * (season - 1) + 2 * rng.standard_normal(n),
        "t3 gauge": lambda: 1e4 + 50 * rng.standard_t(3, n),
        "t3 gauge, daily": lambda: 100 + 40 * (season - 1) + 5 * rng.standard_t(3, n),
        "signed gauge": lambda: 0.01 * rng.standard_normal(n),
    }[name]().astype(np.float64)


@pytest.mark.parametrize(
    "name",
    [
        "poisson 0.5", "poisson 300", "poisson 4, daily", "normal gauge",
        "normal gauge, daily", "t3 gauge", "t3 gauge, daily", "signed gauge",
    ],
)  # fmt: skip
def test_one_threshold_is_one_false_alarm_rate_on_every_kind_of_noise(name: str) -> None:
    """On pure noise the share of points scoring at least 0.99 is near 1%, whatever the
    kind, scale or seasonality; low counts are conservative (a discrete value's mid-p)."""
    v = _noise(name, np.random.default_rng(11))
    score, in_alert = detect_series(HOURLY, v)
    scored = score[np.argmax(score > 0) :]
    assert 0.001 <= (scored >= 0.99).mean() <= 0.04
    assert (scored >= 0.999).mean() <= 0.008
    assert in_alert.mean() <= 0.01


def test_seasonality_only_where_the_data_has_it() -> None:
    rng = np.random.default_rng(3)
    flat = 40 + 2 * rng.standard_normal(HOURLY.size)
    daily = flat + 3 * np.sin(2 * np.pi * (HOURLY % DAY) / DAY)
    weekend = ((HOURLY // DAY) + 3) % 7 >= 5
    weekly = flat + np.where(weekend, 8.0, 0.0)
    shifted = flat + np.where(np.arange(flat.size) >= 3000, 15.0, 0.0)  # not a cycle
    for v, want in ((flat, (0, 0)), (daily, (1, 0)), (weekly, (0, 1)), (shifted, (0, 0))):
        _, P, _ = offline_params(HOURLY, v)
        assert (P[k.P_DAILY], P[k.P_WEEKLY]) == want


def test_noise_model_follows_the_values_and_the_kind() -> None:
    counts = np.random.default_rng(4).poisson(5.0, HOURLY.size).astype(np.float64)
    assert offline_params(HOURLY, counts)[1][k.P_NOISE] == k.NOISE_COUNT
    assert offline_params(HOURLY, counts, "gauge")[1][k.P_NOISE] == k.NOISE_GAUGE
    assert offline_params(HOURLY, counts + 0.5)[1][k.P_NOISE] == k.NOISE_GAUGE
    with pytest.raises(InvalidInput, match="kind must be one of") as exc:
        detect_series(HOURLY, counts, kind="rate")
    assert exc.value.field == "kind"


@pytest.mark.parametrize(
    "make",
    [
        lambda rng, n: 40 + 2 * rng.standard_normal(n) + np.where(np.arange(n) >= 3000, 15, 0),
        lambda rng, n: rng.poisson(np.where(np.arange(n) >= 3000, 12.0, 30.0)).astype(float),
        lambda rng, n: (
            -50
            + 10 * np.sin(2 * np.pi * (HOURLY % DAY) / DAY)
            + 2 * rng.standard_normal(n)
            - np.where(np.arange(n) >= 3000, 15, 0)
        ),
    ],
    ids=["gauge up", "count down", "daily gauge below zero, down"],
)
def test_a_lasting_level_shift_is_alerted_once_then_learnt(make) -> None:
    v = make(np.random.default_rng(5), HOURLY.size)
    score, in_alert = detect_series(HOURLY, v)
    onsets = np.flatnonzero(np.diff(in_alert, prepend=0) > 0)
    first = onsets[onsets >= 3000][0]
    assert first < 3000 + 5
    assert score[first] >= 1 - ALPHA  # an alert opens where the score passes 1 - ALPHA
    assert in_alert[first : first + REBASE].all()
    assert in_alert[first + REBASE + 1 :].sum() <= 2  # the new level is the normal
    assert (onsets >= 3000).sum() == 1


def test_unobserved_points_are_neither_scored_nor_learnt() -> None:
    rng = np.random.default_rng(6)
    v = 40 + 2 * rng.standard_normal(HOURLY.size)
    seen = np.ones(HOURLY.size, bool)
    seen[2000:2100] = False
    v[2000:2100] = 1e6  # whatever a gap is bridged with must not matter
    score, in_alert = detect_series(HOURLY, v, observed=seen)
    assert (score[2000:2100] == 0).all()
    assert not in_alert[1990:].any()


def test_unobserved_points_set_no_scale_or_cycle() -> None:
    """What fills a gap (bridged, or anything else) changes neither the scale nor the noise
    model nor the cycles read from the observed points."""
    rng = np.random.default_rng(3)
    v = 50.0 + rng.normal(0, 2.0, HOURLY.size)
    observed = np.ones(HOURLY.size)
    observed[100:400] = 0
    bridged, wild = v.copy(), v.copy()
    bridged[100:400] = np.linspace(v[99], v[400], 300)
    wild[100:400] = 1e4 * np.sin(np.arange(300))
    xa, Pa, ka = offline_params(HOURLY, bridged, "gauge", observed=observed)
    xb, Pb, kb = offline_params(HOURLY, wild, "gauge", observed=observed)
    seen = observed > 0
    np.testing.assert_array_equal(xa[seen], xb[seen])
    assert ka == kb
    np.testing.assert_array_equal(Pa[[k.P_NOISE]], Pb[[k.P_NOISE]])
