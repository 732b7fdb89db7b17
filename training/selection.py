"""Tier-two hyperparameters chosen by rolling time-based validation on the training window.

The training examples are cut by time into an expanding window: fold k fits on the examples
before cut k and is scored on the examples between cut k and cut k+1, so each fold predicts
a period after the one it learnt from, as the served model will. A large fit set keeps every
fraud and a weighted sample of the legitimate orders (at most MAX_FIT_ROWS rows): choosing
between candidates needs their ranking, and the time budget then covers more of them.

A fixed list of candidates (tree shapes, learning rates, and class weighting) is tried in
order; each fold stops early on its own scored period. Candidates are tried until the time
budget is spent (the first is always tried), and the one with the best mean average
precision over the folds wins: fraud is rare, and average precision ranks the few frauds
among many legitimate orders where AUC hardly moves.

Class imbalance is handled explicitly: every shape is tried unweighted and with the positive
class weighted by sqrt(negatives / positives), a middle ground between no weighting and full
balancing (which inflates every score and blurs the ranking at the top). The choice, every
candidate's fold scores and the time spent go into the manifest.
"""

from __future__ import annotations

import time
from typing import Any

import lightgbm as lgb
import numpy as np
from sklearn.metrics import average_precision_score
from tqdm import tqdm

BASE_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "verbose": -1,
    "num_threads": 2,
}
# Tree shapes, from the engine's long-standing default to deeper and shallower ones. Depth
# stays within what the exact TreeSHAP explainer takes (engine.models.treeshap.MAX_DEPTH
# distinct features on a path).
SHAPES: tuple[dict[str, Any], ...] = (
    {"num_leaves": 15, "max_depth": 5, "min_data_in_leaf": 40, "learning_rate": 0.1},
    {"num_leaves": 31, "max_depth": 8, "min_data_in_leaf": 20, "learning_rate": 0.05},
    {"num_leaves": 63, "max_depth": 10, "min_data_in_leaf": 50, "learning_rate": 0.05},
    {"num_leaves": 7, "max_depth": 3, "min_data_in_leaf": 100, "learning_rate": 0.1},
)
FOLDS = 3
MAX_FIT_ROWS = 60_000  # a fold fits on every fraud and a weighted sample of the rest
MIN_FOLD_FRAUDS = 5  # a scored period with fewer frauds says nothing about average precision
EARLY_STOP = 40


def candidates(pos: int, neg: int) -> list[dict[str, Any]]:
    """Every shape unweighted, then every shape with the positives weighted."""
    weight = float(np.sqrt(neg / max(pos, 1)))
    out = [BASE_PARAMS | s | {"scale_pos_weight": 1.0} for s in SHAPES]
    return out + [BASE_PARAMS | s | {"scale_pos_weight": round(weight, 3)} for s in SHAPES]


def _fit_sample(
    fit: np.ndarray, y: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, weights) of a fold's fit set of at most MAX_FIT_ROWS: every fraud, and the
    legitimate orders sampled and weighted up by the inverse of their sampling rate, so the
    classes keep their balance (and the candidates' class weights their meaning)."""
    if fit.size <= MAX_FIT_ROWS:
        return fit, np.ones(fit.size)
    pos, neg = fit[y[fit] == 1], fit[y[fit] == 0]
    keep = max(MAX_FIT_ROWS - pos.size, 1)
    if keep >= neg.size:
        return fit, np.ones(fit.size)
    sampled = np.sort(rng.choice(neg, keep, replace=False))
    rows = np.sort(np.concatenate([pos, sampled]))
    return rows, np.where(y[rows] == 1, 1.0, neg.size / keep)


def folds(
    t: np.ndarray, y: np.ndarray, n_folds: int = FOLDS
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit, score) index pairs of an expanding window over the examples' times: the last
    half of the window is cut into `n_folds` scored periods. Folds whose scored period has
    too few frauds are dropped."""
    order = np.argsort(t, kind="stable")
    lo, hi = float(t.min()), float(t.max())
    cuts = lo + (hi - lo) * (0.5 + 0.5 * np.arange(n_folds + 1) / n_folds)
    out = []
    for k in range(n_folds):
        fit = order[t[order] < cuts[k]]
        score = order[(t[order] >= cuts[k]) & (t[order] <= cuts[k + 1])]
        if y[score].sum() >= MIN_FOLD_FRAUDS and y[fit].sum() >= MIN_FOLD_FRAUDS:
            out.append((fit, score))
    return out


def select(
    X: np.ndarray,
    y: np.ndarray,
    t: np.ndarray,
    *,
    budget_s: float,
    max_rounds: int,
    seed: int,
    feature_names: list[str],
    progress: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(chosen parameters, the record for the manifest). With no budget, or no fold with
    enough frauds to score, the first candidate is taken and the record says why."""
    pos, neg = int(y.sum()), int((y == 0).sum())
    cands = candidates(pos, neg)
    record: dict[str, Any] = {
        "metric": "average_precision (mean over folds)",
        "budget_s": budget_s,
        "examples": {"fraud": pos, "legitimate": neg},
        "candidates": [],
    }
    splits = folds(t, y) if budget_s > 0 else []
    record["folds"] = [
        {"fit": int(f.size), "scored": int(s.size), "scored_frauds": int(y[s].sum())}
        for f, s in splits
    ]
    if not splits:
        record["chosen"] = 0
        record["note"] = (
            "no time budget: the first candidate"
            if budget_s <= 0
            else "too few frauds per period for rolling validation: the first candidate"
        )
        record["elapsed_s"] = 0.0
        return cands[0] | {"seed": seed}, record
    t0 = time.perf_counter()
    best, best_ap = 0, -np.inf
    bar = tqdm(
        total=len(cands) * len(splits), desc="tier two selection", unit="fit",
        disable=not progress, leave=False,
    )  # fmt: skip
    for i, params in enumerate(cands):
        if i > 0 and time.perf_counter() - t0 > budget_s:
            record["note"] = f"budget spent after {i} of {len(cands)} candidates"
            break
        c0 = time.perf_counter()
        aps, rounds = [], []
        rng = np.random.default_rng(seed)  # the same sample for every candidate
        for fold, score in splits:
            fit, w = _fit_sample(fold, y, rng)
            dfit = lgb.Dataset(
                X[fit], y[fit], weight=w, feature_name=feature_names, free_raw_data=False
            )
            dscore = lgb.Dataset(X[score], y[score], reference=dfit)
            b = lgb.train(
                params | {"seed": seed},
                dfit,
                num_boost_round=max_rounds,
                valid_sets=[dscore],
                callbacks=[lgb.early_stopping(EARLY_STOP, verbose=False)],
            )
            p = b.predict(X[score], num_iteration=b.best_iteration)
            aps.append(float(average_precision_score(y[score], p)))
            rounds.append(int(b.best_iteration))
            bar.update()
        mean_ap = float(np.mean(aps))
        record["candidates"].append(
            {
                "params": {k: params[k] for k in (*SHAPES[0], "scale_pos_weight")},
                "fold_average_precision": aps,
                "mean_average_precision": mean_ap,
                "rounds": rounds,
                "seconds": round(time.perf_counter() - c0, 2),
            }
        )
        if mean_ap > best_ap:
            best, best_ap = i, mean_ap
    else:
        record["note"] = f"all {len(cands)} candidates tried within the budget"
    bar.close()
    record["chosen"] = best
    record["elapsed_s"] = round(time.perf_counter() - t0, 2)
    return cands[best] | {"seed": seed}, record
