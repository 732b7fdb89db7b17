"""Reason codes decompose the model's raw score exactly."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from engine.codec.arrow_orders import decode_table
from engine.decision.cascade import Engine
from engine.decision.policy import APPROVE, MODEL, SCREENED_OUT
from engine.features import matrix as features
from engine.features.velocity import VelocityState
from engine.models.artifacts import ModelSet
from engine.models.trees import compile_booster
from engine.models.treeshap import TreeExplainer
from tests.conftest import CAPACITY


def _decisions(models: ModelSet, history):
    engine = Engine(models, VelocityState(CAPACITY))
    return engine.score(decode_table(history.slice(0, 20000)))


def test_contributions_match_lightgbm_and_sum_to_raw(models: ModelSet, history) -> None:
    enc = decode_table(history.slice(0, 3000)).arrays
    X = features.compute(enc, VelocityState(CAPACITY))
    contrib = models.tier2.contributions(X)
    reference = models.tier2.booster.predict(X, pred_contrib=True)
    np.testing.assert_allclose(contrib, reference, rtol=0, atol=1e-9)
    raw = models.tier2.booster.predict(X, raw_score=True)
    np.testing.assert_allclose(contrib.sum(axis=1), raw, rtol=0, atol=1e-9)
    p = models.tier2.score(X)
    np.testing.assert_allclose(1 / (1 + np.exp(-contrib.sum(axis=1))), p, rtol=0, atol=1e-5)


def test_every_review_and_decline_is_explained(models: ModelSet, history) -> None:
    d = _decisions(models, history)
    flagged = np.flatnonzero(d.action != APPROVE)
    assert flagged.size > 10  # the simulated history has fraud to flag
    assert not (d.path[flagged] == SCREENED_OUT).any()  # only tier two or the rules flag
    for i in flagged:
        assert d.reasons[i], f"row {i} has no reasons"
        assert all(r.message for r in d.reasons[i])
        if d.score[i] >= models.policy.review_threshold:  # flagged by its score: say why
            assert any(r.feature for r in d.reasons[i]), d.reasons[i]
    model_rows = [i for i in flagged if d.path[i] == MODEL]
    assert model_rows
    for i in model_rows:
        total = d.base[i] + sum(r.contribution for r in d.reasons[i])
        assert abs(total - d.raw[i]) < 1e-9
        assert abs(1 / (1 + np.exp(-d.raw[i])) - d.score[i]) < 1e-5
        named = [r for r in d.reasons[i] if r.feature]
        assert len(named) <= models.policy.max_reasons
        assert all(r.contribution > 0 for r in named)


def test_raw_score_is_the_scores_log_odds(models: ModelSet, history) -> None:
    d = _decisions(models, history)
    np.testing.assert_allclose(1 / (1 + np.exp(-d.raw)), d.score, rtol=0, atol=1e-5)


def test_treeshap_matches_lightgbm_on_deep_trees_with_missing_values() -> None:
    """Repeated features on a path, NaN routing and single-leaf trees, against pred_contrib."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(4000, 6))
    X[rng.random(X.shape) < 0.15] = np.nan
    y = (np.nan_to_num(X[:, 0]) * np.nan_to_num(X[:, 1]) + rng.normal(size=4000) > 0.3).astype(int)
    params = {"objective": "binary", "num_leaves": 40, "max_depth": 8, "verbose": -1}
    b = lgb.train(params, lgb.Dataset(X, y), 25)
    explainer = TreeExplainer(compile_booster(b.dump_model()))
    Xt = X[:300].copy()
    Xt[0] = np.nan
    Xt[1] = np.inf
    np.testing.assert_allclose(
        explainer.shap_values(Xt), b.predict(Xt, pred_contrib=True), rtol=0, atol=1e-9
    )


def test_treeshap_is_the_same_in_any_batch_size(models: ModelSet, history) -> None:
    """Small batches go row by row, larger ones in blocks of rows: same values either way."""
    enc = decode_table(history.slice(0, 300)).arrays
    X = features.compute(enc, VelocityState(CAPACITY))
    explainer = models.tier2.explainer
    whole = explainer.shap_values(X)
    np.testing.assert_allclose(
        whole, models.tier2.booster.predict(X, pred_contrib=True), rtol=0, atol=1e-9
    )
    for n in (1, 2, 4, 5, 16, 17, 33):
        parts = np.concatenate([explainer.shap_values(X[i : i + n]) for i in range(0, 99, n)])
        np.testing.assert_allclose(parts, whole[: parts.shape[0]], rtol=0, atol=1e-12)
    assert explainer.shap_values(X[:0]).shape == (0, X.shape[1] + 1)


@pytest.mark.parametrize(
    ("params", "missing_type"),
    [({}, 2), ({"zero_as_missing": True}, 1), ({"use_missing": False}, 0)],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_treeshap_routes_edge_values_as_lightgbm(params, missing_type, dtype) -> None:
    """Each missing-value type, on thresholds and their neighbours, +-0.0, values LightGBM
    reads as zero, NaN and inf, in batches taken row by row and in blocks."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(3000, 5)).astype(dtype)
    X[rng.random(X.shape) < 0.2] = 0.0
    X[rng.random(X.shape) < 0.1] = np.nan
    y = np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 1]) ** 2 + rng.normal(size=3000) > 0.5
    b = lgb.train(
        {"objective": "binary", "num_leaves": 15, "verbose": -1, **params},
        lgb.Dataset(X, y.astype(int)),
        20,
    )
    trees = compile_booster(b.dump_model())
    assert missing_type in trees.missing
    t = trees.threshold[np.isfinite(trees.threshold)].astype(dtype)
    special = np.array([0.0, -0.0, 1e-36, -1e-36, np.nan, np.inf, -np.inf], dtype)
    edges = np.concatenate(
        [t, np.nextafter(t, dtype(np.inf)), np.nextafter(t, dtype(-np.inf)), special]
    )
    Xt = rng.choice(edges, size=(600, 5))
    explainer = TreeExplainer(trees)
    reference = b.predict(Xt, pred_contrib=True)
    for n in (1, 3, 600):
        got = np.concatenate([explainer.shap_values(Xt[i : i + n]) for i in range(0, 600, n)])
        np.testing.assert_allclose(got, reference, rtol=0, atol=1e-9)
