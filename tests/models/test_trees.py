"""Tier-one tree kernel against LightGBM, NaN and inf included."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from engine.models.trees import MAX_PADDED_DEPTH, CompiledTrees, compile_booster, predict_raw

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


# The padded kernel (float32 rows, trees of depth <= MAX_PADDED_DEPTH) against LightGBM, on a
# model mixing every shape and missing-value rule it must handle.

MIXED_FEATURES = 4
BAND = np.float32(1e-35)  # LightGBM's zero band: |x| <= kZeroThreshold, the float 1e-35f


@pytest.fixture(scope="module")
def mixed() -> tuple[list[lgb.Booster], CompiledTrees]:
    """Boosters trained with different settings, their trees compiled as one model:
    unbalanced trees, stumps, a single-leaf tree, and missing types NaN, Zero and None."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(3000, MIXED_FEATURES))
    X[rng.random(X.shape) < 0.15] = np.nan
    X[rng.random(X.shape) < 0.2] = 0.0
    X[:, 3] = np.where(rng.random(3000) < 0.5, -(X[:, 3] ** 2), X[:, 3])  # mostly negative
    y = (np.nan_to_num(X[:, 0], nan=1.0) + 0.5 * np.nan_to_num(X[:, 3]) > 0.2).astype(int)
    variants: list[dict] = [
        {"num_leaves": 24, "min_data_in_leaf": 5},  # unbalanced, up to depth ~7; NaN type
        {"max_depth": 1},  # stumps
        {"zero_as_missing": True, "num_leaves": 8},  # missing type Zero
        {"use_missing": False, "num_leaves": 8},  # missing type None: NaN counts as 0.0
        {"min_data_in_leaf": 2000},  # no split allowed: one single-leaf tree
    ]
    boosters = [
        lgb.train({"objective": "binary", "verbose": -1, **s}, lgb.Dataset(X, y), 4)
        for s in variants
    ]
    dumps = [b.dump_model() for b in boosters]
    trees = compile_booster({**dumps[0], "tree_info": [t for d in dumps for t in d["tree_info"]]})
    return boosters, trees


def _reference(boosters: list[lgb.Booster], X: np.ndarray) -> np.ndarray:
    return sum(b.predict(X.astype(np.float64), raw_score=True) for b in boosters)


def _edge_values(trees: CompiledTrees) -> np.ndarray:
    """Thresholds as float32 (rounded down, as the kernel compares) and one ulp either side,
    and the values where missing-value rules change."""
    _, _, t32 = trees.routing
    values = [t32, np.nextafter(t32, np.float32(-np.inf)), np.nextafter(t32, np.float32(np.inf))]
    band = [BAND, np.nextafter(BAND, np.float32(0)), np.nextafter(BAND, np.float32(1))]
    band += [np.float32(1e-40), np.float32(1e-45)]  # subnormal
    values.append(np.array(band + [-b for b in band], np.float32))
    values.append(np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1.0, -1.0], np.float32))
    return np.unique(np.concatenate(values))  # NaN kept once


def test_mixed_model_is_padded(mixed: tuple[list[lgb.Booster], CompiledTrees]) -> None:
    """The case under test: the padded layout, with all four routing variants."""
    _, trees = mixed
    padded = trees.padded
    assert padded is not None
    assert padded.depth <= MAX_PADDED_DEPTH
    assert padded.nan_key.size == 4
    assert set(np.unique(trees.missing)) == {0, 1, 2}


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_padded_matches_lightgbm(
    mixed: tuple[list[lgb.Booster], CompiledTrees], data: st.DataObject
) -> None:
    boosters, trees = mixed
    elements = st.one_of(st.sampled_from(list(_edge_values(trees))), st.floats(-4, 4, width=32))
    n = data.draw(st.integers(1, 40))  # a batch of one, blocks of 8 and a remainder
    X = data.draw(arrays(np.float32, (n, MIXED_FEATURES), elements=elements))
    np.testing.assert_allclose(predict_raw(trees, X), _reference(boosters, X), rtol=0, atol=1e-9)


def test_padded_on_every_edge_value(mixed: tuple[list[lgb.Booster], CompiledTrees]) -> None:
    """Each edge value in each column, the other columns cycling through them too."""
    boosters, trees = mixed
    values = _edge_values(trees)
    n = values.size * MIXED_FEATURES
    X = np.resize(values, (n, MIXED_FEATURES)).astype(np.float32)
    for j in range(MIXED_FEATURES):
        X[j * values.size : (j + 1) * values.size, j] = values
    np.testing.assert_allclose(predict_raw(trees, X), _reference(boosters, X), rtol=0, atol=1e-9)
    np.testing.assert_allclose(  # float64 rows take the generic walk: same answers
        predict_raw(trees, X.astype(np.float64)), predict_raw(trees, X), rtol=0, atol=1e-12
    )


def test_padded_single_leaf_and_stump_only() -> None:
    """Models of depth 0 (single-leaf trees only) and depth 1."""
    rng = np.random.default_rng(8)
    X = rng.normal(size=(1000, 2))
    y = (X[:, 0] > 0).astype(int)
    for params in ({"min_data_in_leaf": 800}, {"max_depth": 1}):
        b = lgb.train({"objective": "binary", "verbose": -1, **params}, lgb.Dataset(X, y), 3)
        trees = compile_booster(b.dump_model())
        assert trees.padded is not None
        assert trees.padded.depth == (0 if "min_data_in_leaf" in params else 1)
        Xt = np.concatenate([X[:20], [[np.nan, np.inf], [-0.0, -np.inf]]]).astype(np.float32)
        np.testing.assert_allclose(
            predict_raw(trees, Xt), b.predict(Xt.astype(np.float64), raw_score=True), atol=1e-9
        )


@pytest.mark.parametrize("shape", ["deep", "wide"])
def test_generic_walk_beyond_the_padded_bounds(shape: str) -> None:
    """Trees deeper than MAX_PADDED_DEPTH, or rows too wide for the key scratch, keep the
    generic walk for float32 rows too, with the same answers."""
    rng = np.random.default_rng(9)
    n_features = 4 if shape == "deep" else 600
    X = rng.normal(size=(3000 if shape == "deep" else 400, n_features))
    X[rng.random(X.shape) < 0.1] = np.nan
    y = (np.nan_to_num(X[:, 0]) + rng.normal(size=X.shape[0]) > 0).astype(int)
    params = {"num_leaves": 200, "min_data_in_leaf": 2} if shape == "deep" else {"num_leaves": 4}
    b = lgb.train({"objective": "binary", "verbose": -1, **params}, lgb.Dataset(X, y), 3)
    trees = compile_booster(b.dump_model())
    assert trees.padded is None
    Xt = X[:50].astype(np.float32)
    np.testing.assert_allclose(
        predict_raw(trees, Xt), b.predict(Xt.astype(np.float64), raw_score=True), atol=1e-9
    )


def test_non_contiguous_rows(mixed: tuple[list[lgb.Booster], CompiledTrees]) -> None:
    boosters, trees = mixed
    X = np.asfortranarray(np.resize(_edge_values(trees), (30, MIXED_FEATURES)))
    np.testing.assert_allclose(predict_raw(trees, X), _reference(boosters, X), rtol=0, atol=1e-9)
    np.testing.assert_allclose(
        predict_raw(trees, X[::2]), _reference(boosters, X[::2]), rtol=0, atol=1e-9
    )
