"""Offline training: history -> features (the serving kernels) -> tier one, tier two, rules.

Steps, each on a progress bar:
1. Replay the whole history through `engine.features.matrix.replay`, labels arriving when known.
2. Split by time: orders in [train_from, train_to] are training examples (the last fifth
   of them validates early stopping and the thresholds); orders after train_to are the
   held-out period the report is computed on. Earlier orders only feed the features.
3. Tier two: LightGBM, exported to ONNX and checked against the Booster.
4. Thresholds on the validation period: review and decline from tier two's scores; tier
   one's escalation threshold so that 99% of the frauds tier two would flag are escalated,
   capped at an escalation rate of 15%. Tier one is trained on tier two's flags.
5. Rule fallback weights: logistic regression over the rules' firing.
6. Artifact folder: manifest (versions, features, thresholds, metrics, checksums), report.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from tqdm import tqdm

from engine.codec.history import DAY_S, History, read_history
from engine.decision.cascade import Engine, escalation_mask
from engine.decision.policy import MODEL, PolicyConfig
from engine.errors import InvalidInput
from engine.features.matrix import FEATURE_NAMES, replay
from engine.features.velocity import VelocityState
from engine.models.artifacts import FORMAT, MANIFEST, load, sha256
from engine.models.scorers import RULES, TierOne, TierTwo, rule_matrix
from engine.models.trees import compile_booster
from training.export import to_onnx
from training.report import binary_metrics, plot

log = logging.getLogger(__name__)

TIER2_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.1,
    "num_leaves": 15,
    "max_depth": 5,
    "min_data_in_leaf": 40,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "verbose": -1,
    "num_threads": 2,
}
TIER1_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.3,
    "num_leaves": 16,
    "max_depth": 4,
    "min_data_in_leaf": 100,
    "verbose": -1,
    "num_threads": 2,
}
TIER1_TREES = 30
MAX_ESCALATION = 0.15
CASCADE_RECALL = 0.99  # the goal, measured on the held-out period
# The threshold keeps 99.8% on the validation period: a margin for the goal to hold later.
THRESHOLD_RECALL = 0.998
REVIEW_RATE = 0.03  # share of orders the review queue can take
DECLINE_PRECISION = 0.9


def _parse_date(s: str | None, end: bool) -> float | None:
    if s is None:
        return None
    try:
        d = dt.date.fromisoformat(s)
    except ValueError as exc:
        raise InvalidInput(f"date must be YYYY-MM-DD, is {s!r}", "date") from exc
    start = dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp()
    return start + DAY_S if end else start


def split(t: np.ndarray, labels: np.ndarray, train_from: float | None, train_to: float | None):
    """Masks (train, valid, test) over the history's rows."""
    lo = t.min() if train_from is None else train_from
    # Without train_to, the last fifth of the history is held out.
    hi = t.min() + 0.8 * (t.max() - t.min()) if train_to is None else train_to
    known = labels >= 0
    in_range = (t >= lo) & (t < hi) & known
    cut = lo + 0.8 * (hi - lo)
    train = in_range & (t < cut)
    valid = in_range & (t >= cut)
    test = (t >= hi) & known
    for name, m in (("training", train), ("validation", valid), ("held-out", test)):
        if labels[m].sum() < 5 or (labels[m] == 0).sum() < 5:
            raise InvalidInput(
                f"the {name} period has too few labelled orders of each class "
                f"({int(labels[m].sum())} fraud, {int((labels[m] == 0).sum())} legitimate); "
                "widen --train-from/--train-to or supply a longer history",
                "train_to",
            )
    return train, valid, test


class _Progress:
    """LightGBM callback that advances a tqdm bar."""

    def __init__(self, bar: tqdm) -> None:
        self.bar = bar

    def __call__(self, env: lgb.callback.CallbackEnv) -> None:
        self.bar.update(1)


def _thresholds(y: np.ndarray, p2: np.ndarray) -> PolicyConfig:
    review = float(np.quantile(p2, 1 - REVIEW_RATE))
    order = np.argsort(-p2)
    precision = np.cumsum(y[order]) / np.arange(1, y.size + 1)
    ok = np.flatnonzero((precision >= DECLINE_PRECISION) & (np.arange(y.size) >= 4))
    decline = float(p2[order][ok[-1]]) if ok.size else 0.95
    decline = max(decline, review)
    return PolicyConfig(
        review_threshold=review,
        decline_threshold=decline,
        low_confidence_low=review * 0.7,
    )


def _tier1_threshold(p1: np.ndarray, must: np.ndarray, forced: np.ndarray) -> tuple[float, str]:
    """Highest threshold that keeps THRESHOLD_RECALL of `must` escalated, capped at 15%."""
    if must.sum() == 0:
        return float(np.quantile(p1, 1 - MAX_ESCALATION)), "no tier-two-flagged frauds to keep"
    thr = float(np.quantile(p1[must], 1 - THRESHOLD_RECALL, method="lower"))
    rate = float(((p1 >= thr) | forced).mean())
    if rate <= MAX_ESCALATION:
        return thr, "recall target met within the escalation cap"
    # Cap: the threshold at which escalation (forced rows included) is 15%.
    free = np.sort(p1[~forced])[::-1]
    budget = max(int(MAX_ESCALATION * p1.size) - int(forced.sum()), 1)
    return float(free[min(budget, free.size) - 1]), "escalation capped at 15%: recall target missed"


def train(
    orders: str | Path,
    out: str | Path,
    *,
    train_from: str | None = None,
    train_to: str | None = None,
    label_delay_days: float = 7.0,
    capacity: int = 1 << 20,
    seed: int = 7,
    max_rounds: int = 400,
    progress: bool = True,
) -> dict[str, Any]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tqdm(total=6, desc="train", disable=not progress, unit="step") as steps:
        steps.set_postfix_str("features")
        hist: History = read_history(orders, label_delay_days)
        enc = hist.arrays
        X = replay(enc, hist.labels, hist.known_at, VelocityState(capacity=capacity))
        y = hist.labels
        t = enc.t
        lo, hi = _parse_date(train_from, end=False), _parse_date(train_to, end=True)
        tr, va, te = split(t, y, lo, hi)
        steps.update()

        steps.set_postfix_str("tier two")
        dtrain = lgb.Dataset(X[tr], y[tr], feature_name=list(FEATURE_NAMES), free_raw_data=False)
        dvalid = lgb.Dataset(X[va], y[va], reference=dtrain)
        with tqdm(
            total=max_rounds, desc="tier two rounds", disable=not progress, leave=False
        ) as bar:
            booster = lgb.train(
                {**TIER2_PARAMS, "seed": seed},
                dtrain,
                num_boost_round=max_rounds,
                valid_sets=[dvalid],
                callbacks=[lgb.early_stopping(40, verbose=False), _Progress(bar)],
            )
        booster = lgb.Booster(
            model_str=booster.model_to_string(num_iteration=booster.best_iteration)
        )
        steps.update()

        steps.set_postfix_str("thresholds")
        p2_valid = np.asarray(booster.predict(X[va]))
        policy = _thresholds(y[va], p2_valid)
        steps.update()

        steps.set_postfix_str("tier one")
        # Tier one learns what tier two would flag (and every known fraud): its job is to
        # predict where tier two is needed, which a few shallow trees do far better than
        # predicting fraud itself (measured: escalation 10% instead of 20-50% for the same
        # 99.5% cascade recall on the held-out period).
        flagged = (np.asarray(booster.predict(X[tr])) >= policy.review_threshold) | (y[tr] == 1)
        b1 = lgb.train(
            {**TIER1_PARAMS, "seed": seed},
            lgb.Dataset(X[tr], flagged.astype(np.int8)),
            TIER1_TREES,
        )
        trees = compile_booster(b1.dump_model())
        version = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        identity = (np.array([0.0, 1.0]), np.array([0.0, 1.0]))
        p1_valid = TierOne(trees, 0.0, identity, version).screen(X[va])
        must = (y[va] == 1) & (p2_valid >= policy.review_threshold)
        forced = escalation_mask(
            np.zeros(va.sum()), 1.0, enc.amount[va], enc.key_account[va], policy
        )
        thr1, thr1_note = _tier1_threshold(p1_valid, must, forced)
        # Fraud probability of what tier one screens out, for those orders' decisions.
        out_va = (p1_valid < thr1) & ~forced
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        iso.fit(p1_valid[out_va], y[va][out_va])
        calibration = {"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}
        steps.update()

        steps.set_postfix_str("rules")
        R = rule_matrix(X[tr])
        lr = LogisticRegression(C=1.0, max_iter=1000).fit(R, y[tr])
        weights = {r.code: float(w) for r, w in zip(RULES, lr.coef_[0], strict=True)}
        steps.update()

        steps.set_postfix_str("export")
        onnx_bytes = to_onnx(booster)
        (out / "tier2.onnx").write_bytes(onnx_bytes)
        (out / "tier2.lgb.txt").write_text(booster.model_to_string())
        np.savez(out / "tier1.npz", **trees.to_npz())  # type: ignore[arg-type]
        rng = np.random.default_rng(seed)
        sample = rng.choice(np.flatnonzero(te), size=min(512, int(te.sum())), replace=False)
        t2 = TierTwo(onnx_bytes, booster.model_to_string(), version)
        expected = t2.score(X[sample])
        lgb_err = float(np.max(np.abs(expected - booster.predict(X[sample]))))
        if lgb_err > 1e-5:
            raise RuntimeError(f"ONNX export differs from LightGBM by {lgb_err:.2e}")
        np.savez(out / "parity.npz", X=X[sample], expected=expected)

        manifest: dict[str, Any] = {
            "format": FORMAT,
            "version": version,
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
            "feature_names": list(FEATURE_NAMES),
            "velocity": {"capacity": capacity},
            "tier1": {
                "file": "tier1.npz",
                "threshold": thr1,
                "calibration": calibration,
                "trees": TIER1_TREES,
                "params": TIER1_PARAMS,
            },
            "tier2": {
                "onnx": "tier2.onnx",
                "booster": "tier2.lgb.txt",
                "parity": "parity.npz",
                "trees": booster.num_trees(),
                "params": TIER2_PARAMS,
                "onnx_target_opset": 15,
            },
            "fallback": {"bias": float(lr.intercept_[0]), "weights": weights},
            "policy": asdict(policy),
            "training": {
                "orders": str(orders),
                "train_from": train_from,
                "train_to": train_to,
                "label_delay_days": label_delay_days,
                "seed": seed,
                "rows": {"train": int(tr.sum()), "valid": int(va.sum()), "held_out": int(te.sum())},
            },
        }
        for entry, key in (
            ("tier1", "file"),
            ("tier2", "onnx"),
            ("tier2", "booster"),
            ("tier2", "parity"),
        ):
            manifest[entry][f"{key}_sha256"] = sha256(out / manifest[entry][key])
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2))

        report = evaluate(out, X[te], y[te], enc, te, booster, thr1_note, lgb_err)
        manifest["metrics"] = report
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
        (out / "report.json").write_text(json.dumps(report, indent=2))
        steps.update()
    return report


def evaluate(
    out: Path,
    X: np.ndarray,
    y: np.ndarray,
    enc_all,
    mask: np.ndarray,
    booster: lgb.Booster,
    thr1_note: str,
    onnx_err: float,
) -> dict[str, Any]:
    """Held-out metrics of tier two alone, the rules alone and the engine's cascade."""
    models = load(out)
    if models.problems:
        raise RuntimeError(f"freshly trained models fail to load: {models.problems}")
    policy = models.policy
    p2 = models.tier2.score(X)  # type: ignore[union-attr]
    p1 = models.tier1.screen(X)  # type: ignore[union-attr]
    p_rules = models.fallback.score(X)
    amount, key = enc_all.amount[mask], enc_all.key_account[mask]
    escalated = escalation_mask(p1, models.tier1.threshold, amount, key, policy)  # type: ignore[union-attr]
    flagged2 = (p2 >= policy.review_threshold) & (y == 1)
    # The engine's own decisions on the held-out rows (features already computed).
    engine = Engine(models, VelocityState(capacity=64, probe=4))
    sub = enc_all.take(mask)
    d = engine.decide([""] * int(mask.sum()), sub, X)
    cascade_score = d.score
    review_rate = float((p2 >= policy.review_threshold).mean())
    report = {
        "held_out_orders": int(y.size),
        "held_out_frauds": int(y.sum()),
        "tier2": binary_metrics(y, p2, REVIEW_RATE),
        "cascade": binary_metrics(y, cascade_score, REVIEW_RATE),
        "tier1_alone": binary_metrics(y, models.tier1.calibrate(p1), REVIEW_RATE),  # type: ignore[union-attr]
        "rules_alone": binary_metrics(y, p_rules, REVIEW_RATE),
        "review_rate_target": REVIEW_RATE,
        "tier2_flag_rate": review_rate,
        "tier1_escalation_rate": float(escalated.mean()),
        "tier1_escalation_rate_screener_only": float((p1 >= models.tier1.threshold).mean()),  # type: ignore[union-attr]
        "cascade_recall_of_tier2_flagged_frauds": (
            float(escalated[flagged2].mean()) if flagged2.any() else float("nan")
        ),
        "tier2_flagged_frauds": int(flagged2.sum()),
        "tier1_goals": {
            "max_escalation_rate": MAX_ESCALATION,
            "min_cascade_recall": CASCADE_RECALL,
            "escalation_met": bool(escalated.mean() <= MAX_ESCALATION),
            "recall_met": bool(flagged2.any() and escalated[flagged2].mean() >= CASCADE_RECALL),
        },
        "tier1_threshold_note": thr1_note,
        "engine_paths": {
            "screened_out": float((d.path == 1).mean()),
            "model": float((d.path == MODEL).mean()),
            "fallback": float((d.path == 3).mean()),
        },
        "engine_actions": {
            "approve": float((d.action == 1).mean()),
            "review": float((d.action == 2).mean()),
            "decline": float((d.action == 3).mean()),
        },
        "onnx_vs_lightgbm_max_abs_error": onnx_err,
        "policy": asdict(policy),
    }
    plot(
        out / "report.png",
        y,
        {"tier two": p2, "cascade": cascade_score, "rules": p_rules},
        f"Held-out period: {y.size} orders, {int(y.sum())} frauds",
    )
    return report
