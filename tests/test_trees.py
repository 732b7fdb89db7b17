"""Tier-one tree kernel against LightGBM, NaN and inf included."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from engine.trees import CompiledTrees, compile_booster, predict_raw

N_FEATURES = 5


@pytest.fixture(scope="module")
def booster() -> lgb.Booster:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4000, N_FEATURES))
    X[rng.random(X.shape) < 0.15] = np.nan  # missing values seen in training: NaN splits
    X[:, 4] = rng.integers(0, 3, 4000)  # a feature with zeros and no NaN
    y = ((np.nan_to_num(X[:, 0]) + X[:, 4] * 0.5 + rng.normal(size=4000)) > 1).astype(int)
    params = {"objective": "binary", "num_leaves": 16, "max_depth": 4, "verbose": -1}
    return lgb.train(params, lgb.Dataset(X, y), 20)


@pytest.fixture(scope="module")
def trees(booster: lgb.Booster) -> CompiledTrees:
    return compile_booster(booster.dump_model())


floats = st.one_of(
    st.floats(-5, 5, width=32),
    st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -0.0]),
)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 50), st.just(N_FEATURES)), elements=floats))
def test_matches_lightgbm(booster: lgb.Booster, trees: CompiledTrees, X: np.ndarray) -> None:
    expected = booster.predict(X.astype(np.float64), raw_score=True)
    np.testing.assert_allclose(predict_raw(trees, X), expected, rtol=0, atol=1e-9)


def test_exact_thresholds(booster: lgb.Booster, trees: CompiledTrees) -> None:
    """Rows sitting exactly on every split threshold go the same way as in LightGBM."""
    X = np.zeros((trees.threshold.size, N_FEATURES))
    X[np.arange(trees.threshold.size), trees.feature] = trees.threshold
    np.testing.assert_allclose(
        predict_raw(trees, X), booster.predict(X, raw_score=True), rtol=0, atol=1e-9
    )


def test_round_trip_and_shape_error(trees: CompiledTrees) -> None:
    again = CompiledTrees.from_npz(trees.to_npz())
    X = np.ones((3, N_FEATURES), np.float32)
    np.testing.assert_array_equal(predict_raw(again, X), predict_raw(trees, X))
    with pytest.raises(ValueError, match=r"Data must be of dimension \(N, 5\), is \(3, 4\)"):
        predict_raw(trees, np.ones((3, 4), np.float32))


def test_infinite_thresholds() -> None:
    """LightGBM dumps its last bin's bound (+inf) as 1e300; +inf must still go left."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(3000, 2))
    X[rng.random(3000) < 0.2, 1] = np.nan
    y = (np.nan_to_num(X[:, 1], nan=3.0) > 0.5).astype(int)
    b = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(X, y), 10)
    trees = compile_booster(b.dump_model())
    Xt = np.array([[0.0, np.inf], [0.0, -np.inf], [np.inf, np.nan]])
    np.testing.assert_allclose(predict_raw(trees, Xt), b.predict(Xt, raw_score=True), atol=1e-9)


def test_float32_rows_on_and_beside_thresholds(booster: lgb.Booster, trees: CompiledTrees) -> None:
    """float32 rows compare with thresholds rounded down to float32: still LightGBM's answer."""
    with np.errstate(over="ignore"):
        t32 = trees.threshold.astype(np.float32)
    rows = []
    for step in (0.0, -np.inf, np.inf):
        X = np.zeros((t32.size, N_FEATURES), np.float32)
        X[np.arange(t32.size), trees.feature] = np.nextafter(t32, np.float32(step)) if step else t32
        rows.append(X)
    X = np.concatenate(rows)
    np.testing.assert_allclose(
        predict_raw(trees, X), booster.predict(X.astype(np.float64), raw_score=True), atol=1e-9
    )
