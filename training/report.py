"""Training report: metrics as JSON and a PNG with ROC, precision-recall and score histograms."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)


def recall_at_rate(y: np.ndarray, score: np.ndarray, rate: float) -> float:
    """Share of frauds among the `rate` highest-scored orders."""
    if y.sum() == 0:
        return float("nan")
    k = max(int(round(rate * y.size)), 1)
    top = np.argsort(-score, kind="stable")[:k]
    return float(y[top].sum() / y.sum())


def binary_metrics(y: np.ndarray, score: np.ndarray, review_rate: float) -> dict[str, float]:
    if np.unique(y).size < 2:
        return {
            "auc": float("nan"),
            "average_precision": float("nan"),
            "recall_at_review_rate": float("nan"),
        }
    return {
        "auc": float(roc_auc_score(y, score)),
        "average_precision": float(average_precision_score(y, score)),
        "recall_at_review_rate": recall_at_rate(y, score, review_rate),
    }


def scenario_metrics(
    y: np.ndarray,
    scenario: np.ndarray,
    p2: np.ndarray,
    cascade: np.ndarray,
    escalated: np.ndarray,
    review_threshold: float,
    review_rate: float,
) -> dict[str, dict[str, float]]:
    """Per scenario: its frauds against every legitimate order. AUC and average precision
    of tier two and of the cascade; recall at the review rate (the share of the scenario's
    frauds among the `review_rate` highest-scored orders of the whole period); tier one's
    escalation rate over the scenario's rows and its recall of the scenario's frauds that
    tier two flags. The `legit` row has the legitimate orders' escalation rate."""
    k = max(int(round(review_rate * y.size)), 1)
    top = np.zeros(y.size, bool)
    top[np.argsort(-cascade, kind="stable")[:k]] = True
    legit = y == 0
    out: dict[str, dict[str, float]] = {}
    for name in sorted(set(scenario.tolist())):
        rows = scenario == name
        frauds = rows & (y == 1)
        entry: dict[str, float] = {"orders": int(rows.sum()), "frauds": int(frauds.sum())}
        entry["tier1_escalation_rate"] = float(escalated[rows].mean()) if rows.any() else math.nan
        if frauds.any():
            both = frauds | legit
            for label, s in (("tier2", p2), ("cascade", cascade)):
                entry[f"{label}_auc"] = float(roc_auc_score(y[both], s[both]))
                entry[f"{label}_average_precision"] = float(
                    average_precision_score(y[both], s[both])
                )
            entry["recall_at_review_rate"] = float(top[frauds].mean())
            flagged = frauds & (p2 >= review_threshold)
            entry["tier2_flagged"] = int(flagged.sum())
            entry["tier1_recall_of_tier2_flagged"] = (
                float(escalated[flagged].mean()) if flagged.any() else math.nan
            )
        out[name] = entry
    return out


def plot(path: Path, y: np.ndarray, curves: dict[str, np.ndarray], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for name, s in curves.items():
        fpr, tpr, _ = roc_curve(y, s)
        axes[0].plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, s):.3f})")
        prec, rec, _ = precision_recall_curve(y, s)
        axes[1].plot(rec, prec, label=f"{name} (AP {average_precision_score(y, s):.3f})")
    axes[0].plot([0, 1], [0, 1], "k:", lw=0.8)
    axes[0].set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    axes[1].set(xlabel="recall", ylabel="precision", title="Precision-recall")
    main = next(iter(curves.values()))
    bins = np.linspace(0, 1, 51)
    axes[2].hist(main[y == 0], bins=bins, alpha=0.6, label="legitimate", density=True)
    axes[2].hist(main[y == 1], bins=bins, alpha=0.6, label="fraud", density=True)
    axes[2].set(yscale="log", xlabel=f"score ({next(iter(curves))})", title="Score distribution")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
