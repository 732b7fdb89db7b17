"""One contract for tier one, tier two and the rule fallback."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from engine.codec.arrow_orders import decode_table
from engine.decision.policy import APPROVE, FALLBACK, MODEL, SCREENED_OUT
from engine.features import matrix as features
from engine.features.matrix import N_FEATURES
from engine.features.velocity import VelocityState
from engine.models.artifacts import ModelSet
from engine.models.scorers import RuleFallback, Scorer
from tests.conftest import CAPACITY


@pytest.fixture(scope="module")
def X(history) -> np.ndarray:
    return features.compute(decode_table(history.slice(0, 2000)).arrays, VelocityState(CAPACITY))


@pytest.fixture(params=["tier1", "tier2", "fallback"])
def scorer(request, models: ModelSet) -> Scorer:
    return getattr(models, request.param)


def test_probabilities_per_row(scorer: Scorer, X: np.ndarray) -> None:
    p = scorer.score(X)
    assert p.shape == (X.shape[0],)
    assert np.all((p >= 0) & (p <= 1))
    assert scorer.name and scorer.version


def test_empty_batch(scorer: Scorer, X: np.ndarray) -> None:
    assert scorer.score(X[:0]).shape == (0,)


def test_batch_equals_single_rows(scorer: Scorer, X: np.ndarray) -> None:
    batch = scorer.score(X[:50])
    single = np.concatenate([scorer.score(X[i : i + 1]) for i in range(50)])
    np.testing.assert_allclose(batch, single, rtol=0, atol=1e-7)


def test_nan_rows_are_scored(scorer: Scorer) -> None:
    p = scorer.score(np.full((3, N_FEATURES), np.nan, np.float32))
    assert np.all(np.isfinite(p))


def test_wrong_width_is_refused(scorer: Scorer, X: np.ndarray) -> None:
    with pytest.raises(ValueError, match=f"Data must be of dimension \\(N, {N_FEATURES}\\)"):
        scorer.score(X[:, :-1])


def test_rule_fallback_pickles_and_decomposes(X: np.ndarray, models: ModelSet) -> None:
    fb = pickle.loads(pickle.dumps(models.fallback))
    np.testing.assert_array_equal(fb.score(X), models.fallback.score(X))
    fired = fb.fired(X)
    np.testing.assert_allclose(fb.raw(fired), fb.bias + fired @ fb.weights)
    with pytest.raises(ValueError, match="rule weights missing"):
        RuleFallback({"NEW_ACCOUNT": 1.0})


# --- what the cascade calls: each decision path reports its scorer's own numbers ----------


def _decide(models: ModelSet, X: np.ndarray, history) -> tuple:  # type: ignore[no-untyped-def]
    from engine.decision.cascade import Engine

    orders = decode_table(history.slice(0, 2000))
    return Engine(models, VelocityState(CAPACITY)).decide(orders.ids, orders.arrays, X), orders


def test_screened_out_rows_carry_tier_ones_calibrated_score(X, models: ModelSet, history) -> None:
    d, orders = _decide(models, X, history)
    t1 = models.tier1
    assert t1 is not None
    out = d.path == SCREENED_OUT
    assert out.any()
    np.testing.assert_allclose(d.score[out], t1.score(X)[out], rtol=0, atol=1e-12)
    # escalated exactly where screen() reaches the threshold (or the order is high-stakes)
    stakes = (orders.arrays.amount >= models.policy.high_value) | orders.arrays.key_account
    np.testing.assert_array_equal(~out, (t1.screen(X) >= t1.threshold) | stakes)


def test_model_rows_carry_tier_twos_score_and_exact_contributions(
    X, models: ModelSet, history
) -> None:
    d, _ = _decide(models, X, history)
    t2 = models.tier2
    assert t2 is not None
    rows = np.flatnonzero(d.path == MODEL)
    assert rows.size
    np.testing.assert_allclose(d.score[rows], t2.score(X[rows]), rtol=0, atol=1e-12)
    contrib = t2.contributions(X[rows])
    assert contrib.shape == (rows.size, N_FEATURES + 1)
    np.testing.assert_allclose(contrib[:, -1], t2.expected, atol=1e-9)
    # onnxruntime sums the trees in float32: compare as probabilities
    p = 1.0 / (1.0 + np.exp(-contrib.sum(axis=1)))
    np.testing.assert_allclose(p, d.score[rows], rtol=1e-4, atol=1e-6)
    for i in rows[d.action[rows] != APPROVE]:  # explained rows: reasons add up to raw
        model_reasons = [r for r in d.reasons[i] if r.feature or r.code == "OTHER_FEATURES"]
        assert abs(d.base[i] + sum(r.contribution for r in model_reasons) - d.raw[i]) < 1e-9


def test_fallback_rows_carry_the_rules_score_and_fired_weights(X, history) -> None:
    rules_only = ModelSet.rules_only()
    d, _ = _decide(rules_only, X, history)
    fb = rules_only.fallback
    assert (d.path == FALLBACK).all()
    np.testing.assert_allclose(d.score, fb.score(X), rtol=0, atol=1e-15)
    fired = fb.fired(X)
    np.testing.assert_allclose(d.raw, fb.raw(fired), rtol=0, atol=1e-12)
    assert set(d.causes) == {"MODEL_MISSING"}
