"""Policy thresholds, human-review triggers and the fallback paths of the pipeline."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from engine.codec.arrow_orders import decode_table
from engine.decision.cascade import Engine
from engine.decision.policy import (
    APPROVE,
    DECLINE,
    FALLBACK,
    MODEL,
    REVIEW,
    SCREENED_OUT,
    PolicyConfig,
    decide,
)
from engine.errors import ModelLoadError
from engine.features.velocity import VelocityState
from engine.models import artifacts
from engine.models.artifacts import ModelSet
from tests.conftest import CAPACITY

CFG = PolicyConfig(
    review_threshold=0.3,
    decline_threshold=0.8,
    low_confidence_low=0.2,
    high_value=1000.0,
)


def _decide(score, path=MODEL, amount=10.0, key=False):
    n = len(score)
    return decide(
        CFG,
        np.asarray(score, float),
        np.full(n, path, np.int8),
        np.full(n, amount),
        np.full(n, key),
    )


def test_thresholds() -> None:
    action, triggers = _decide([0.01, 0.5, 0.9])
    assert action.tolist() == [APPROVE, REVIEW, DECLINE]
    assert triggers == [[], [], []]


def test_triggers_force_review() -> None:
    action, triggers = _decide([0.01, 0.9], amount=5000.0)
    assert action.tolist() == [REVIEW, REVIEW] and triggers == [["HIGH_VALUE"]] * 2
    action, triggers = _decide([0.01, 0.9], key=True)
    assert action.tolist() == [APPROVE, REVIEW] and triggers[1] == ["KEY_ACCOUNT"]
    action, triggers = _decide([0.25])
    assert action.tolist() == [REVIEW] and triggers == [["LOW_CONFIDENCE"]]
    action, triggers = _decide([0.9], path=FALLBACK)
    assert action.tolist() == [REVIEW] and triggers == [["MODEL_UNAVAILABLE"]]


def test_policy_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="review_threshold <= decline_threshold"):
        PolicyConfig(review_threshold=0.9, decline_threshold=0.5)
    with pytest.raises(ValueError, match="unknown policy setting"):
        PolicyConfig.from_dict({"review_treshold": 0.2})


@pytest.fixture(scope="module")
def orders(history):
    return decode_table(history.slice(0, 3000))


def test_missing_tier_two_falls_back_to_rules(models_dir, tmp_path, orders) -> None:
    broken = tmp_path / "m"
    shutil.copytree(models_dir, broken)
    (broken / "tier2.onnx").unlink()
    models = artifacts.load(broken)
    assert models.tier2 is None and any("tier two" in p for p in models.problems)
    d = Engine(models, VelocityState(CAPACITY)).score(orders)
    fallback = d.path == FALLBACK
    assert fallback.any() and set(np.unique(d.path)) <= {SCREENED_OUT, FALLBACK}
    assert {d.causes[i] for i in np.flatnonzero(fallback)} == {"MODEL_MISSING"}
    assert DECLINE not in d.action[fallback]  # rules alone never decline by default
    for i in np.flatnonzero(d.action != APPROVE):
        assert d.reasons[i]


def test_corrupt_tier_two_is_detected(models_dir, tmp_path) -> None:
    broken = tmp_path / "m"
    shutil.copytree(models_dir, broken)
    (broken / "tier2.onnx").write_bytes(b"not a model")
    models = artifacts.load(broken)
    assert models.tier2 is None
    assert any("checksum" in p for p in models.problems)


def test_unusable_manifest_is_refused(models_dir, tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="no manifest.json"):
        artifacts.load(tmp_path)
    broken = tmp_path / "m"
    shutil.copytree(models_dir, broken)
    (broken / "manifest.json").write_text('{"format": 1, "feature_names": ["x"]}')
    with pytest.raises(ModelLoadError, match="feature schema differs"):
        artifacts.load(broken)


def test_past_deadline_goes_to_fallback(models: ModelSet, orders) -> None:
    d = Engine(models, VelocityState(CAPACITY)).score(orders, deadlines=np.full(orders.n, -np.inf))
    assert (d.path == FALLBACK).any() and not (d.path == MODEL).any()
    assert {d.causes[i] for i in np.flatnonzero(d.path == FALLBACK)} == {"DEADLINE"}


def test_tier_two_failure_goes_to_fallback(models: ModelSet, orders) -> None:
    class Failing:  # a tier two whose runtime raises, as a corrupted session would
        name, version = "tier2", "failing"

        def score(self, X):
            raise RuntimeError("onnxruntime exploded")

    failing = ModelSet(models.version, models.tier1, Failing(), models.fallback, models.policy)  # type: ignore[arg-type]
    d = Engine(failing, VelocityState(CAPACITY)).score(orders)
    causes = {d.causes[i] for i in np.flatnonzero(d.path == FALLBACK)}
    assert causes == {"TIER2_ERROR: RuntimeError: onnxruntime exploded"}


def test_rules_only_engine_serves(orders) -> None:
    d = Engine(ModelSet.rules_only(), VelocityState(CAPACITY)).score(orders)
    assert (d.path == FALLBACK).all()


def test_screen_kernel_equals_the_numpy_expressions(models: ModelSet) -> None:
    """Engine.decide's one-pass screen gives escalation_mask, calibrate and _logit's values
    bit for bit, at the calibration knots, the threshold and the high-value line too."""
    from engine.decision.cascade import _logit, _screen, escalation_mask

    assert models.tier1 is not None
    t1 = models.tier1
    cx, cy = t1.calibration
    rng = np.random.default_rng(5)
    p = np.concatenate(
        [rng.random(50_000), cx, np.nextafter(cx, 2), np.nextafter(cx, -1), [0.0, 1.0]]
        + [[t1.threshold, np.nextafter(t1.threshold, 0)]]
    )
    n = p.size
    hv = models.policy.high_value
    amount = rng.choice([1.0, np.nextafter(hv, 0), hv, 1e6], n)
    key = rng.random(n) < 0.1
    esc, score, raw = np.empty(n, np.bool_), np.zeros(n), np.zeros(n)
    _screen(p, t1.threshold, amount, key, hv, cx, cy, esc, score, raw)
    want = escalation_mask(p, t1.threshold, amount, key, models.policy)
    want_score, want_raw = np.zeros(n), np.zeros(n)
    want_score[~want] = t1.calibrate(p[~want])
    want_raw[~want] = _logit(want_score[~want])
    assert np.array_equal(esc, want)
    assert np.array_equal(score, want_score)
    assert np.array_equal(raw, want_raw)
