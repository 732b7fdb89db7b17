"""Tier two: the exported ONNX graph against the LightGBM Booster it came from."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import onnx
import pytest

from engine.features.matrix import N_FEATURES
from engine.models.artifacts import ModelSet
from engine.models.scorers import TierTwo
from engine.models.trees import compile_booster
from training.export import to_onnx


def test_parity_on_held_out_sample(models: ModelSet, models_dir) -> None:
    with np.load(models_dir / "parity.npz") as data:
        X = data["X"]
    booster = lgb.Booster(model_file=str(models_dir / "tier2.lgb.txt"))
    np.testing.assert_allclose(models.tier2.score(X), booster.predict(X), rtol=0, atol=1e-5)


def test_parity_on_thresholds_nan_and_inf(models: ModelSet) -> None:
    """Rows on every split threshold (as float32), just beside them, NaN and inf."""
    booster = models.tier2.booster
    trees = compile_booster(booster.dump_model())
    rng = np.random.default_rng(0)
    n = trees.threshold.size
    base = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    rows = []
    for direction in (0.0, -np.inf, np.inf):
        X = base.copy()
        with np.errstate(over="ignore"):
            thr = trees.threshold.astype(np.float32)
        if direction:
            thr = np.nextafter(thr, np.float32(direction))
        X[np.arange(n), trees.feature] = thr
        rows.append(X)
    X = np.concatenate(rows + [np.full((4, N_FEATURES), v, np.float32) for v in (np.nan, np.inf)])
    special = rng.random(X.shape) < 0.1
    X[special] = rng.choice(np.array([np.nan, np.inf, -np.inf], np.float32), special.sum())
    np.testing.assert_allclose(models.tier2.score(X), booster.predict(X), rtol=0, atol=1e-5)


def test_output_shapes_are_symbolic(models_dir) -> None:
    """No fixed-size output: onnxruntime would warn on every batch."""
    model = onnx.load(str(models_dir / "tier2.onnx"))
    for out in model.graph.output:
        dims = out.type.tensor_type.shape.dim
        assert dims[0].dim_param == "N" and not dims[0].dim_value


def test_export_of_fresh_model_round_trips() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3000, N_FEATURES)).astype(np.float32)
    X[rng.random(X.shape) < 0.05] = np.nan
    y = (np.nan_to_num(X[:, 0]) + rng.normal(size=3000) > 1.5).astype(int)
    b = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 15}, lgb.Dataset(X, y), 30)
    t2 = TierTwo(to_onnx(b), b.model_to_string(), "test")
    np.testing.assert_allclose(t2.score(X), b.predict(X), rtol=0, atol=1e-5)
    assert t2.score(X[:0]).shape == (0,)
    with pytest.raises(ValueError, match="Data must be of dimension"):
        t2.score(X[:, :3])
