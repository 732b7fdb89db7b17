"""The backtest's Markdown report and fan chart (from the dict `backtest` returns)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from engine.forecast.panel import DemandPanel


def _fmt(x: float) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{x:.3f}"


def markdown(r: dict[str, Any]) -> str:
    lines = ["# Demand forecast backtest", ""]
    if r["command"]:
        lines += ["```", r["command"], "```", ""]
    d = r["data"]
    lines += [
        f"{d['series']} series, {d['periods']} periods (`--freq {d['freq']}`), horizon "
        f"{r['horizon']}, {r['origins']} rolling origins; covariates {d['covariates'] or '-'}; "
        f"static {d['static'] or '-'}. AutoETS: {r['autoets']}.",
        "",
        "MASE: mean over series of MAE(median) / in-sample seasonal naive MAE. SQL: sum of "
        "pinball losses over the quantiles / sum |y|. Coverage: share of targets in "
        "[q0.1, q0.9]. `established`: series with at least eight seasons of history at the "
        "origin (all methods scored); `short` and `new` (cold start): the model only.",
        "",
        "## Overall (all origins pooled)",
        "",
        "| method | group | series x origins | MASE | SQL | coverage 80% |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in r["methods"]:
        for g, s in r["overall"].get(name, {}).items():
            lines.append(
                f"| {name} | {g} | {s['series']} | {_fmt(s['mase'])} | "
                f"{_fmt(s['sql'])} | {_fmt(s['coverage80'])} |"
            )
    lines += ["", "## Against the best baseline (established series)", ""]
    best = r["best_baseline"]
    lines.append(
        f"Best baseline: MASE {best['mase']}, SQL {best['sql']}. Target: >= 10% "
        "better on both, coverage in [0.75, 0.85]."
    )
    lines += [
        "",
        "| strategy | MASE gain | SQL gain | coverage 80% | target met |",
        "| --- | --- | --- | --- | --- |",
    ]
    for s, v in r["verdict"].items():
        lines.append(
            f"| {s} | {v['mase_gain_vs_best_baseline']:+.1%} | "
            f"{v['sql_gain_vs_best_baseline']:+.1%} | {_fmt(v['coverage80'])} | "
            f"{'yes' if v['target_met'] else 'no'} |"
        )
    lines += [
        "",
        "## Per origin (established series)",
        "",
        "| origin | method | MASE | SQL | coverage 80% |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in r["per_origin"]:
        for name, gs in row["scores"].items():
            s = gs.get("established")
            if s:
                lines.append(
                    f"| {row['origin'][:10]} | {name} | {_fmt(s['mase'])} | "
                    f"{_fmt(s['sql'])} | {_fmt(s['coverage80'])} |"
                )
    rop = r.get("reorder_point_coverage", {})
    if rop.get("levels"):
        lines += [
            "",
            f"## Reorder points (demand over the next {rop['lead_periods']} periods)",
            "",
            "Share of established series whose demand over the lead time stayed at or "
            "under the reorder point (it should be the service level):",
            "",
            "| strategy | "
            + " | ".join(f"service level {lv}" for lv in next(iter(rop["levels"].values())))
            + " |",
            "| --- |" + " --- |" * len(next(iter(rop["levels"].values()))),
        ]
        for s, levels in rop["levels"].items():
            lines.append(f"| {s} | " + " | ".join(f"{v:.3f}" for v in levels.values()) + " |")
    lines += ["", "## Time (seconds, all origins)", ""]
    lines += [
        f"- {k}: {v:.1f}" + (" (training included)" if k.startswith("model") else "")
        for k, v in r["seconds"].items()
    ]
    lines += ["", "![fan chart](fan_chart.png)", ""]
    return "\n".join(lines)


def fan_chart(
    path: Path,
    fan: dict[str, Any],
    levels: tuple[float, ...],
    panel: DemandPanel,
    strategy: str,
    horizon: int,
    n: int = 4,
) -> None:
    """History tail, actuals and the model's quantile fan for a few established series of
    the last origin (the largest, a middling and a small one), AutoETS's median dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = fan["rows"]
    if len(rows) == 0:
        return
    cut, y, t0 = fan["cut"], fan["y"], fan["t0"]
    size = np.nanmean(cut.values[rows, -56:], axis=1)
    order = rows[np.argsort(-np.nan_to_num(size))]
    pick = order[np.linspace(0, len(order) - 1, min(n, len(order))).astype(int)]
    q = fan["preds"][f"model:{strategy}"]
    fig, axes = plt.subplots(len(pick), 1, figsize=(10, 2.6 * len(pick)), squeeze=False)
    back = min(8 * horizon // 2, t0 + 1)
    x_hist = np.arange(-back + 1, 1)
    x_fut = np.arange(1, horizon + 1)
    for ax, i in zip(axes[:, 0], pick, strict=False):
        ax.plot(x_hist, cut.values[i, t0 - back + 1 : t0 + 1], color="black", lw=1)
        ax.plot(x_fut, y[i], color="black", lw=1, ls=":", label="actual")
        nq = len(levels)
        for a in range(nq // 2):
            ax.fill_between(
                x_fut, q[i, :, a], q[i, :, nq - 1 - a], color="tab:blue", alpha=0.15, lw=0
            )
        ax.plot(x_fut, q[i, :, nq // 2], color="tab:blue", lw=1.5, label="model median")
        if "autoets" in fan["preds"]:
            ax.plot(
                x_fut,
                fan["preds"]["autoets"][i, :, nq // 2],
                color="tab:orange",
                lw=1,
                ls="--",
                label="AutoETS",
            )
        ax.set_title(str(cut.series_ids[i]), fontsize=9)
        ax.axvline(0.5, color="grey", lw=0.5)
    axes[0, 0].legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
