"""Training report: metrics as JSON and a PNG with ROC, precision-recall and score histograms."""

from __future__ import annotations

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
