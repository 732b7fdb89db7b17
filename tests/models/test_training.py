"""Training's time rules: point-in-time labels, mature days, rolling model selection, tier
one's drift margin and the per-scenario report, on real LightGBM fits and real histories."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.codec.history import history_from_table
from engine.errors import InvalidInput
from training import selection
from training.evaluate import CASCADE_RECALL
from training.periods import DAY_S, MATURE_SHARE, mature_until, point_in_time, split
from training.report import scenario_metrics
from training.simulate import CONFIGS, SCENARIOS, simulate
from training.train import _tier1_threshold


def test_point_in_time_hides_labels_known_later() -> None:
    labels = np.array([1, 0, 1, -1], np.int8)
    known_at = np.array([10.0, 20.0, 30.0, np.nan])
    np.testing.assert_array_equal(point_in_time(labels, known_at, 20.0), [1, 0, -1, -1])
    assert point_in_time(labels, known_at, None) is labels


def test_split_as_of_ignores_every_label_known_later(history) -> None:
    """Flipping every label that became known after as-of changes neither the training
    examples nor their labels: training cannot see them."""
    h = history_from_table(history)
    t = h.arrays.t
    rng = np.random.default_rng(8)
    known_at = np.where(h.labels >= 0, t + rng.uniform(0, 8 * DAY_S, t.size), np.nan)
    as_of = t.min() + 15 * DAY_S
    flipped = h.labels.copy()
    late = (known_at > as_of) & (h.labels >= 0)
    assert (late & (t < t.min() + 10 * DAY_S)).any()  # some inside the training window
    flipped[late] = 1 - flipped[late]
    masks = []
    for labels in (h.labels, flipped):
        then = point_in_time(labels, known_at, as_of)
        tr, va, te = split(t, labels, None, t.min() + 10 * DAY_S, labels_then=then, as_of=as_of)
        masks.append((tr, va, then[tr | va]))
        assert (t[te] >= as_of).all() and (t[tr | va] < as_of).all()
    for a, b in zip(*masks, strict=True):
        np.testing.assert_array_equal(a, b)


def test_mature_until_is_the_last_day_mostly_labelled() -> None:
    day = np.repeat(np.arange(10), 100)
    t = day * DAY_S + np.tile(np.arange(100) * 600.0, 10)
    labels = np.zeros(t.size, np.int8)
    # Days 0-5 fully labelled, day 6 just under the share, day 7 at it, days 8-9 not at all.
    labels[day >= 6] = -1
    labels[(day == 6) & (np.arange(t.size) % 100 < int(MATURE_SHARE * 100) - 1)] = 0
    labels[(day == 7) & (np.arange(t.size) % 100 < int(MATURE_SHARE * 100))] = 0
    assert mature_until(t, labels, 0.0, 10 * DAY_S) == 8 * DAY_S
    with pytest.raises(InvalidInput, match="labelled by then") as exc:
        mature_until(t, np.full(t.size, -1, np.int8), 0.0, 10 * DAY_S)
    assert exc.value.field == "as_of"


def _separable(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(0, 1.0, n) > 2.6).astype(np.int8)
    return X, y, np.sort(rng.uniform(0, 30 * DAY_S, n))


def test_folds_always_score_a_later_period() -> None:
    _, y, t = _separable(6000, 1)
    folds = selection.folds(t, y)
    assert len(folds) == selection.FOLDS
    for fit, score in folds:
        assert t[fit].max() < t[score].min()
    starts = [t[s].min() for _, s in folds]
    assert starts == sorted(starts)


def test_selection_picks_the_best_mean_average_precision() -> None:
    X, y, t = _separable(6000, 2)
    names = [f"f{i}" for i in range(X.shape[1])]
    params, record = selection.select(
        X, y, t, budget_s=600, max_rounds=60, seed=3, feature_names=names
    )
    cands = record["candidates"]
    assert len(cands) == len(selection.candidates(1, 1))  # all tried within the budget
    best = int(np.argmax([c["mean_average_precision"] for c in cands]))
    assert record["chosen"] == best
    assert params["num_leaves"] == cands[best]["params"]["num_leaves"]
    assert params["scale_pos_weight"] == cands[best]["params"]["scale_pos_weight"]
    weights = {c["params"]["scale_pos_weight"] for c in cands}
    assert weights == {1.0, round(float(np.sqrt((y == 0).sum() / y.sum())), 3)}


def test_selection_without_budget_takes_the_first_candidate() -> None:
    X, y, t = _separable(3000, 3)
    params, record = selection.select(
        X, y, t, budget_s=0, max_rounds=20, seed=3, feature_names=["a", "b", "c", "d"]
    )
    assert (
        record["chosen"] == 0 and record["candidates"] == [] and "no time budget" in record["note"]
    )
    assert params["num_leaves"] == selection.SHAPES[0]["num_leaves"]


def test_tier_one_margin_lowers_the_threshold_after_drift() -> None:
    """Tier-two-flagged frauds scoring lower in the validation period's second half: the
    threshold is lowered until that half keeps the cascade's recall goal."""
    rng = np.random.default_rng(5)
    n = 20000
    t = np.sort(rng.uniform(0, 10 * DAY_S, n))
    p1 = rng.beta(1, 60, n)  # the escalation cap does not bind
    must = rng.random(n) < 0.02
    late = t >= np.median(t)
    p1[must & ~late] = rng.uniform(0.4, 0.9, (must & ~late).sum())
    p1[must & late] = rng.uniform(0.15, 0.9, (must & late).sum())  # drifted down
    forced = np.zeros(n, bool)
    thr, record = _tier1_threshold(p1, must, forced, t)
    margin = record["margin"]
    assert margin["logit_shift"] > 0 and margin["checked_on"].startswith("second half")
    assert margin["recall_there_before"] < CASCADE_RECALL
    assert (p1[must & late] >= thr).mean() >= CASCADE_RECALL
    # A later period (after the validation days) takes precedence over the halves.
    later = rng.uniform(0.1, 0.9, 200)
    thr_later, rec = _tier1_threshold(p1, must, forced, t, later)
    assert rec["margin"]["checked_on"] == "after the validation period"
    assert (later >= thr_later).mean() >= CASCADE_RECALL
    # Without drift there is no margin.
    p1[must] = rng.uniform(0.4, 0.9, must.sum())
    _, calm = _tier1_threshold(p1, must, forced, t)
    assert calm["margin"]["logit_shift"] == 0.0


def test_scenario_metrics_measure_each_scenario_against_legitimate_orders() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1], np.int8)
    scen = np.array(["legit"] * 4 + ["a", "a", "b", "b"], dtype=object)
    # Scenario a scores above every legitimate order, b below all of them.
    score = np.array([0.3, 0.4, 0.5, 0.6, 0.9, 0.8, 0.1, 0.2])
    escalated = np.array([0, 0, 0, 1, 1, 1, 0, 1], bool)
    out = scenario_metrics(y, scen, score, score, escalated, 0.7, 0.25)
    assert out["a"]["tier2_auc"] == 1.0 and out["b"]["tier2_auc"] == 0.0
    assert out["a"]["recall_at_review_rate"] == 1.0 and out["b"]["recall_at_review_rate"] == 0.0
    assert out["a"]["tier1_recall_of_tier2_flagged"] == 1.0 and out["a"]["tier2_flagged"] == 2
    assert out["legit"]["tier1_escalation_rate"] == 0.25 and out["legit"]["frauds"] == 0


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_every_scenario_occurs_in_both_worlds(config: str) -> None:
    table = simulate(35, seed=4, orders_per_day=1500, config=CONFIGS[config])
    seen = set(table.column("scenario").to_pylist())
    assert seen == set(SCENARIOS), set(SCENARIOS) - seen


def test_compromised_terminal_shows_in_the_terminal_fraud_rate(history) -> None:
    """The scenario's frauds are only visible through the terminal's matured labels: once
    its first chargebacks are known, its orders carry a device fraud rate that orders on
    clean terminals do not."""
    from engine.features.matrix import FEATURE_NAMES, replay
    from engine.features.velocity import VelocityState

    h = history_from_table(history)
    X = replay(h.arrays, h.labels, h.known_at, VelocityState(1 << 16))
    scen = np.asarray(history.column("scenario").to_pylist(), dtype=object)
    rate = X[:, FEATURE_NAMES.index("device_id.fraud_rate_30d")]
    term = scen == "compromised_terminal"
    assert term.sum() > 20
    legit = scen == "legit"
    assert np.nanmean(rate[term] > 0.02) > 5 * np.nanmean(rate[legit] > 0.02)


def test_trained_manifest_records_selection_and_margin(models_dir: Path) -> None:
    m = json.loads((models_dir / "manifest.json").read_text())
    sel = m["tier2"]["selection"]
    assert sel["candidates"] and 0 <= sel["chosen"] < len(sel["candidates"])
    chosen = sel["candidates"][sel["chosen"]]["params"]
    assert m["tier2"]["params"]["num_leaves"] == chosen["num_leaves"]
    assert "logit_shift" in m["tier1"]["threshold_choice"]["margin"]
    assert "scenarios" in m["metrics"] and "legit" in m["metrics"]["scenarios"]
