"""One contract for tier one, tier two and the rule fallback."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from engine import features
from engine.artifacts import ModelSet
from engine.encode import encode
from engine.features import N_FEATURES
from engine.schema import conform
from engine.scorers import RuleFallback, Scorer
from engine.velocity import VelocityState
from tests.conftest import CAPACITY


@pytest.fixture(scope="module")
def X(history) -> np.ndarray:
    return features.compute(encode(conform(history.slice(0, 2000))), VelocityState(CAPACITY))


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
