"""Offline training: history -> features (the serving kernels) -> tier one, tier two, rules.

Steps, each on a progress bar:
1. Replay the whole history through `engine.features.matrix.replay`, labels arriving when known.
2. Split by time: orders in [train_from, train_to] are training examples (the last fifth
   of them validates early stopping and the thresholds); orders after train_to (or after
   `as_of`) are the held-out period the report is computed on. Earlier orders only feed
   the features. With `as_of`, training examples and their labels are only what was known
   then (`point_in_time`), so a backtest reproduces what a model trained that day knew.
3. Tier two: LightGBM, its hyperparameters and class weighting chosen by rolling
   time-based validation on the training window (`training.selection`), exported to ONNX
   and checked against the Booster.
4. Thresholds on the validation period: review and decline from tier two's scores; tier
   one's escalation threshold so that 99.8% of the frauds tier two would flag are escalated,
   lowered by the drift seen on a later period (`_margin`), capped at an escalation rate of
   15%. Tier one is trained on tier two's flags, the flagged frauds weighted up.
5. Rule fallback weights: logistic regression over the rules' firing.
6. Artifact folder: manifest (versions, features, thresholds, selection, metrics,
   checksums), report (overall and, when the history has a `scenario` column, per scenario).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from tqdm import tqdm

from engine.codec.history import DAY_S, History, history_from_table, read_table
from engine.decision.cascade import Engine, escalation_mask
from engine.decision.policy import MODEL, PolicyConfig
from engine.errors import InvalidInput
from engine.features.matrix import FEATURE_NAMES, replay
from engine.features.velocity import VelocityState
from engine.models.artifacts import FORMAT, MANIFEST, load, sha256
from engine.models.scorers import RULES, TierOne, TierTwo, rule_matrix
from engine.models.trees import compile_booster
from engine.orders.arrays import OrderArrays
from training.export import to_onnx
from training.report import binary_metrics, plot, scenario_metrics
from training.selection import select

log = logging.getLogger(__name__)


@dataclass
class Held:
    """The held-out period: features, final labels, orders and (simulated) scenarios."""

    X: np.ndarray
    y: np.ndarray
    orders: OrderArrays
    scenario: np.ndarray | None


TIER1_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.3,
    "num_leaves": 32,
    "max_depth": 5,
    "min_data_in_leaf": 100,
    "verbose": -1,
    "num_threads": 2,
}
TIER1_TREES = 30
FLAGGED_FRAUD_WEIGHT = 20.0
MAX_ESCALATION = 0.15
CASCADE_RECALL = 0.99  # the goal, measured on the held-out period
# The threshold keeps 99.8% on the validation period, and is lowered further by the drift
# measured between the validation period's halves: a margin for the goal to hold later.
THRESHOLD_RECALL = 0.998
MIN_MARGIN_FRAUDS = 10  # tier-two-flagged frauds per half needed to measure the drift
REVIEW_RATE = 0.03  # share of orders the review queue can take
DECLINE_PRECISION = 0.9
MATURE_SHARE = 0.9  # with --as-of: a day trains once this share of its orders is labelled
TUNE_BUDGET_S = 120.0


def _parse_moment(s: str | None, end: bool, field: str) -> float | None:
    """Epoch seconds of YYYY-MM-DD (its start, or its end with `end`) or of an ISO
    datetime (UTC unless it names its offset)."""
    if s is None:
        return None
    try:
        if len(s) == 10:
            d = dt.date.fromisoformat(s)
            start = dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp()
            return start + DAY_S if end else start
        moment = dt.datetime.fromisoformat(s)
    except ValueError as exc:
        raise InvalidInput(
            f"--{field.replace('_', '-')} must be YYYY-MM-DD or an ISO datetime, is {s!r}", field
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def point_in_time(labels: np.ndarray, known_at: np.ndarray, as_of: float | None) -> np.ndarray:
    """The labels as they stood at `as_of`: a label known later is unknown (-1)."""
    if as_of is None:
        return labels
    with np.errstate(invalid="ignore"):
        return np.where(known_at <= as_of, labels, np.int8(-1)).astype(np.int8)


def mature_until(t: np.ndarray, labels_then: np.ndarray, lo: float, as_of: float) -> float:
    """End of the last whole day before `as_of` (from `lo`) of which at least MATURE_SHARE
    of the orders had a known label at `as_of`: later orders' legitimate labels are mostly
    still to come, and training on them would over-represent the early-labelled frauds."""
    day = np.floor((t - lo) / DAY_S).astype(np.int64)
    inside = (t >= lo) & (t < as_of)
    if not inside.any():
        raise InvalidInput("no order lies between --train-from and --as-of", "as_of")
    n = np.bincount(day[inside])
    known = np.bincount(day[inside], weights=(labels_then[inside] >= 0).astype(float))
    share = np.divide(known, n, out=np.zeros_like(known), where=n > 0)
    ok = np.flatnonzero((share >= MATURE_SHARE) & (lo + (np.arange(n.size) + 1) * DAY_S <= as_of))
    if not ok.size:
        raise InvalidInput(
            f"no day before --as-of has {MATURE_SHARE:.0%} of its orders labelled by then "
            "(labels mature later): give an earlier --train-to or a later --as-of",
            "as_of",
        )
    return lo + (int(ok[-1]) + 1) * DAY_S


def split(
    t: np.ndarray,
    labels: np.ndarray,
    train_from: float | None,
    train_to: float | None,
    *,
    labels_then: np.ndarray | None = None,
    as_of: float | None = None,
):
    """Masks (train, valid, test) over the history's rows. Training and validation take the
    labels known at `as_of` (`labels_then`); the held-out period starts at `as_of` when
    given (else at train_to) and is scored with the final `labels`."""
    labels_then = labels if labels_then is None else labels_then
    lo = t.min() if train_from is None else train_from
    if as_of is not None and train_to is not None and train_to > as_of:
        raise InvalidInput("--train-to must not be after --as-of", "train_to")
    if train_to is not None:
        hi = train_to
    elif as_of is not None:
        hi = mature_until(t, labels_then, lo, as_of)
    else:  # without train_to, the last fifth of the history is held out
        hi = t.min() + 0.8 * (t.max() - t.min())
    known = labels_then >= 0
    in_range = (t >= lo) & (t < hi) & known
    cut = lo + 0.8 * (hi - lo)
    train = in_range & (t < cut)
    valid = in_range & (t >= cut)
    test = (t >= (hi if as_of is None else as_of)) & (labels >= 0)
    for name, m, y in (
        ("training", train, labels_then),
        ("validation", valid, labels_then),
        ("held-out", test, labels),
    ):
        if y[m].sum() < 5 or (y[m] == 0).sum() < 5:
            raise InvalidInput(
                f"the {name} period has too few labelled orders of each class "
                f"({int(y[m].sum())} fraud, {int((y[m] == 0).sum())} legitimate); "
                "widen --train-from/--train-to, move --as-of or supply a longer history",
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


def _logit(p: float) -> float:
    p = min(max(p, 1e-9), 1 - 1e-9)
    return float(np.log(p / (1 - p)))


def _margin(
    p1: np.ndarray, must: np.ndarray, t: np.ndarray, later: np.ndarray | None
) -> dict[str, Any]:
    """How far tier one's scores on tier-two-flagged frauds drift after the period its
    threshold is set on: the log-odds by which a threshold keeping THRESHOLD_RECALL there
    must be lowered to keep CASCADE_RECALL on a later period.

    The later period is `later` (tier one's scores of flagged frauds after the validation
    days whose labels were known at --as-of: frauds are labelled early) when it holds
    enough of them; otherwise the validation period's second half, against a threshold set
    on its first half."""
    if later is not None and later.size >= MIN_MARGIN_FRAUDS:
        source, ref, check = "after the validation period", p1[must], later
    else:
        late = t >= np.median(t)
        source, ref, check = (
            "second half of the validation period",
            p1[must & ~late],
            p1[must & late],
        )
    if ref.size < MIN_MARGIN_FRAUDS or check.size < MIN_MARGIN_FRAUDS:
        return {"logit_shift": 0.0, "note": "too few tier-two-flagged frauds to measure drift"}
    thr = float(np.quantile(ref, 1 - THRESHOLD_RECALL, method="lower"))
    needed = float(np.quantile(check, 1 - CASCADE_RECALL, method="lower"))
    return {
        "logit_shift": max(_logit(thr) - _logit(needed), 0.0),
        "checked_on": source,
        "threshold_before": thr,
        "recall_there_before": float((check >= thr).mean()),
        "flagged_frauds": [int(ref.size), int(check.size)],
    }


def _tier1_threshold(
    p1: np.ndarray,
    must: np.ndarray,
    forced: np.ndarray,
    t: np.ndarray,
    later: np.ndarray | None = None,
) -> tuple[float, dict[str, Any]]:
    """Highest threshold that keeps THRESHOLD_RECALL of `must` escalated, lowered by the
    drift margin (`_margin`), capped at MAX_ESCALATION."""
    if must.sum() == 0:
        thr = float(np.quantile(p1, 1 - MAX_ESCALATION))
        return thr, {"note": "no tier-two-flagged frauds to keep", "margin": {"logit_shift": 0.0}}
    margin = _margin(p1, must, t, later)
    base = float(np.quantile(p1[must], 1 - THRESHOLD_RECALL, method="lower"))
    thr = 1.0 / (1.0 + np.exp(-(_logit(base) - margin["logit_shift"])))
    rate = float(((p1 >= thr) | forced).mean())
    if rate <= MAX_ESCALATION:
        return thr, {"note": "recall target met within the escalation cap", "margin": margin}
    # Cap: the threshold at which escalation (forced rows included) is 15%.
    free = np.sort(p1[~forced])[::-1]
    budget = max(int(MAX_ESCALATION * p1.size) - int(forced.sum()), 1)
    note = "escalation capped at 15%: recall target missed"
    return float(free[min(budget, free.size) - 1]), {"note": note, "margin": margin}


def train(
    orders: str | Path,
    out: str | Path,
    *,
    train_from: str | None = None,
    train_to: str | None = None,
    as_of: str | None = None,
    label_delay_days: float = 7.0,
    capacity: int = 1 << 20,
    seed: int = 7,
    max_rounds: int = 400,
    tune_budget_s: float = TUNE_BUDGET_S,
    progress: bool = True,
) -> dict[str, Any]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tqdm(total=6, desc="train", disable=not progress, unit="step") as steps:
        steps.set_postfix_str("features")
        raw = read_table(orders)
        hist: History = history_from_table(raw, label_delay_days, str(orders))
        scenario = (
            np.asarray(raw.column("scenario").to_numpy(zero_copy_only=False), dtype=object)
            if "scenario" in raw.column_names
            else None
        )
        enc = hist.arrays
        X = replay(enc, hist.labels, hist.known_at, VelocityState(capacity=capacity))
        t = enc.t
        lo = _parse_moment(train_from, end=False, field="train_from")
        hi = _parse_moment(train_to, end=True, field="train_to")
        cut = _parse_moment(as_of, end=False, field="as_of")
        y_then = point_in_time(hist.labels, hist.known_at, cut)
        tr, va, te = split(t, hist.labels, lo, hi, labels_then=y_then, as_of=cut)
        y = y_then  # training and validation labels (held-out ones come from hist.labels)
        steps.update()

        steps.set_postfix_str("tier two")
        params, selection = select(
            X[tr],
            y[tr],
            t[tr],
            budget_s=tune_budget_s,
            max_rounds=max_rounds,
            seed=seed,
            feature_names=list(FEATURE_NAMES),
            progress=progress,
        )
        dtrain = lgb.Dataset(X[tr], y[tr], feature_name=list(FEATURE_NAMES), free_raw_data=False)
        dvalid = lgb.Dataset(X[va], y[va], reference=dtrain)
        with tqdm(
            total=max_rounds, desc="tier two rounds", disable=not progress, leave=False
        ) as bar:
            booster = lgb.train(
                params,
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
        # Tier one learns what tier two would flag: its job is to predict where tier two is
        # needed, which a few shallow trees do far better than predicting fraud itself. The
        # flagged frauds, the orders it must not screen out, weigh FLAGGED_FRAUD_WEIGHT
        # times more; frauds tier two would not flag are no target (chasing them spends the
        # trees on what tier two would let through anyway).
        flagged = np.asarray(booster.predict(X[tr])) >= policy.review_threshold
        weight = np.where(flagged & (y[tr] == 1), FLAGGED_FRAUD_WEIGHT, 1.0)
        b1 = lgb.train(
            {**TIER1_PARAMS, "seed": seed},
            lgb.Dataset(X[tr], flagged.astype(np.int8), weight=weight),
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
        # With --as-of, the frauds known by then among the orders after the validation days
        # (they feed only the features) check tier one on a later period.
        later = None
        gap = (t > t[va].max()) & (t < cut) & (y == 1) if cut is not None else None
        if gap is not None and gap.any():
            flagged_later = np.asarray(booster.predict(X[gap])) >= policy.review_threshold
            screen = TierOne(trees, 0.0, identity, version)
            later = screen.screen(X[gap][flagged_later])
        thr1, thr1_record = _tier1_threshold(p1_valid, must, forced, t[va], later)
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
                "threshold_choice": thr1_record,
                "calibration": calibration,
                "trees": TIER1_TREES,
                "params": TIER1_PARAMS,
            },
            "tier2": {
                "onnx": "tier2.onnx",
                "booster": "tier2.lgb.txt",
                "parity": "parity.npz",
                "trees": booster.num_trees(),
                "params": params,
                "selection": selection,
                "onnx_target_opset": 15,
            },
            "fallback": {"bias": float(lr.intercept_[0]), "weights": weights},
            "policy": asdict(policy),
            "training": {
                "orders": str(orders),
                "train_from": train_from,
                "train_to": train_to,
                "as_of": as_of,
                "label_delay_days": label_delay_days,
                "seed": seed,
                "rows": {"train": int(tr.sum()), "valid": int(va.sum()), "held_out": int(te.sum())},
                "labels_unknown_at_as_of": int(((hist.labels >= 0) & (y_then < 0)).sum()),
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

        held = Held(
            X[te], hist.labels[te], enc.take(te), None if scenario is None else scenario[te]
        )
        report = evaluate(out, held, thr1_record["note"], lgb_err)
        manifest["metrics"] = report
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
        (out / "report.json").write_text(json.dumps(report, indent=2))
        steps.update()
    return report


def evaluate(out: Path, held: Held, thr1_note: str, onnx_err: float) -> dict[str, Any]:
    """Held-out metrics of tier two alone, the rules alone and the engine's cascade, overall
    and per scenario when the history names them."""
    models = load(out)
    if models.problems:
        raise RuntimeError(f"freshly trained models fail to load: {models.problems}")
    policy = models.policy
    X, y = held.X, held.y
    p2 = models.tier2.score(X)  # type: ignore[union-attr]
    p1 = models.tier1.screen(X)  # type: ignore[union-attr]
    p_rules = models.fallback.score(X)
    amount, key = held.orders.amount, held.orders.key_account
    escalated = escalation_mask(p1, models.tier1.threshold, amount, key, policy)  # type: ignore[union-attr]
    flagged2 = (p2 >= policy.review_threshold) & (y == 1)
    # The engine's own decisions on the held-out rows (features already computed).
    engine = Engine(models, VelocityState(capacity=64, probe=4))
    d = engine.decide([""] * y.size, held.orders, X)
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
    if held.scenario is not None:
        report["scenarios"] = scenario_metrics(
            y, held.scenario, p2, cascade_score, escalated, policy.review_threshold, REVIEW_RATE
        )
    plot(
        out / "report.png",
        y,
        {"tier two": p2, "cascade": cascade_score, "rules": p_rules},
        f"Held-out period: {y.size} orders, {int(y.sum())} frauds",
    )
    return report
