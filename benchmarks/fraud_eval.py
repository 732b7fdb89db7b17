"""Fraud models per scenario on two simulated worlds, backtested on a later period.

    python -m benchmarks.fraud_eval [--days 98] [--orders-per-day 2500] [--seed 21]
        [--tune-budget 60] [--out benchmarks/results/fraud]

For each simulator configuration (`training.simulate.DEFAULT`, which the engine is developed
on, and `SHIFTED`, another fraud mix, population and label delays that training is not
tuned on) one history is simulated with a seed the engine is not developed on (`--seed`,
plus one for the second world), and its last two weeks are held out. Two trainings each:

- **point in time** (`train --as-of` the first held-out day): only labels known by then, for
  the features and for the training examples' own labels; the examples end where a day's
  orders are 90% labelled, so weeks of orders between them and the held-out period feed the
  features only. This is what a model trained on that day could have learnt.
- **labels as in the file** (`train --train-to` the day before the held-out period): every
  label of the file, also those known only after the training period. The optimistic bound.

Both are scored on the same held-out orders with their final labels: overall, and per fraud
scenario (its frauds against every legitimate order): tier two's and the cascade's AUC and
average precision, recall at the 3% review rate, tier one's escalation rate and its recall
of the frauds tier two flags, out of sample. Writes report.json and report.md to `--out`.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from training.simulate import CONFIGS, simulate
from training.train import train

START = datetime(2026, 3, 2, tzinfo=UTC)
HELD_OUT_DAYS = 14
MODES = ("point_in_time", "labels_as_in_file")


def run_config(
    name: str, days: int, per_day: int, seed: int, budget: float, tmp: Path
) -> dict[str, Any]:
    table = simulate(days, seed=seed, orders_per_day=per_day, start=START, config=CONFIGS[name])
    path = tmp / f"{name}.parquet"
    pq.write_table(table, path)
    first_held = START + timedelta(days=days - HELD_OUT_DAYS)
    out: dict[str, Any] = {"orders": table.num_rows}
    for mode in MODES:
        kwargs: dict[str, Any] = (
            {"as_of": first_held.date().isoformat()}
            if mode == "point_in_time"
            else {"train_to": (first_held - timedelta(days=1)).date().isoformat()}
        )
        t0 = time.perf_counter()
        report = train(path, tmp / f"{name}-{mode}", progress=False, tune_budget_s=budget, **kwargs)
        manifest = json.loads((tmp / f"{name}-{mode}" / "manifest.json").read_text())
        selection = manifest["tier2"]["selection"]
        out[mode] = {
            "train_seconds": round(time.perf_counter() - t0, 1),
            "arguments": kwargs,
            "rows": manifest["training"]["rows"],
            "chosen_params": selection["candidates"][selection["chosen"]]["params"]
            if selection["candidates"]
            else None,
            "selection_note": selection.get("note"),
            "tier1_threshold": manifest["tier1"]["threshold_choice"],
            "report": {k: v for k, v in report.items() if k != "policy"},
        }
        print(f"{name} {mode}: {json.dumps(report['tier2'])}", file=sys.stderr)
    return out


def _f(x: Any) -> str:
    return "–" if x is None or x != x else f"{x:.3f}"


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Fraud models per scenario, two simulated worlds",
        "",
        f"`{result['command']}` at {result['finished_at']} on {result['machine']}.",
        "",
        f"{result['days']} days at {result['orders_per_day']} orders/day, seeds from "
        f"{result['seed']} (one per world); the last {HELD_OUT_DAYS} days held out. Definitions in "
        "`benchmarks/fraud_eval.py`'s docstring.",
        "",
        "## Overall, held-out period",
        "",
        "| world | training | train/valid rows | tier 2 AUC | tier 2 AP | cascade AP | "
        "recall @3% | tier 1 escalation | tier 1 recall of tier-2 flags | chosen shape |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, cfg in result["configs"].items():
        for mode in MODES:
            m = cfg[mode]
            r = m["report"]
            p = m["chosen_params"] or {}
            shape = (
                f"{p.get('num_leaves')} leaves, lr {p.get('learning_rate')}, "
                f"pos weight {p.get('scale_pos_weight')}"
            )
            lines.append(
                f"| {name} | {mode.replace('_', ' ')} | {m['rows']['train']}/{m['rows']['valid']} "
                f"| {_f(r['tier2']['auc'])} | {_f(r['tier2']['average_precision'])} "
                f"| {_f(r['cascade']['average_precision'])} "
                f"| {_f(r['cascade']['recall_at_review_rate'])} "
                f"| {_f(r['tier1_escalation_rate'])} "
                f"| {_f(r['cascade_recall_of_tier2_flagged_frauds'])} | {shape} |"
            )
    lines += ["", "## Per scenario, held-out period", ""]
    for name, cfg in result["configs"].items():
        for mode in MODES:
            lines += [
                f"### {name}, {mode.replace('_', ' ')}",
                "",
                "| scenario | frauds | tier 2 AUC | tier 2 AP | cascade AP | recall @3% | "
                "tier 1 escalation | tier-2 flagged | tier 1 recall of them |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for scen, s in cfg[mode]["report"].get("scenarios", {}).items():
                lines.append(
                    f"| {scen} | {s['frauds']} | {_f(s.get('tier2_auc'))} "
                    f"| {_f(s.get('tier2_average_precision'))} "
                    f"| {_f(s.get('cascade_average_precision'))} "
                    f"| {_f(s.get('recall_at_review_rate'))} "
                    f"| {_f(s['tier1_escalation_rate'])} | {s.get('tier2_flagged', '–')} "
                    f"| {_f(s.get('tier1_recall_of_tier2_flagged'))} |"
                )
            lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--days", type=int, default=98)
    ap.add_argument("--orders-per-day", type=int, default=2500)
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--tune-budget", type=float, default=60.0)
    ap.add_argument("--configs", default="default,shifted")
    ap.add_argument("--out", default="benchmarks/results/fraud")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "command": "python -m benchmarks.fraud_eval " + " ".join(argv or sys.argv[1:]),
        "days": args.days,
        "orders_per_day": args.orders_per_day,
        "seed": args.seed,
        "machine": f"{platform.machine()}, Python {platform.python_version()}, "
        f"LightGBM {metadata.version('lightgbm')}",
        "configs": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for k, name in enumerate(args.configs.split(",")):
            # One seed per world: the same seed would draw the worlds' rare events together.
            result["configs"][name] = run_config(
                name, args.days, args.orders_per_day, args.seed + k, args.tune_budget, Path(tmp)
            )
    result["finished_at"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    (out / "report.json").write_text(json.dumps(result, indent=2))
    (out / "report.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
