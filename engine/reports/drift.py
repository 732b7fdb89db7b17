"""`ordersight report drift`: the PSI of the served score and of the model's top features,
per hour of order time, from a decision log, against the reference distributions in the
models' manifest — computed by the live monitor's own code (`engine.monitoring.drift`,
the log's decisions fed in the log's order), so the report's hours are the engine's."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from engine.errors import InvalidInput

VERSION = "report"  # one reference for every row: the manifest given


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log", required=True, help="decision log folder (setting log_dir)")
    p.add_argument(
        "--models", required=True, help="model folder whose manifest holds the reference"
    )
    p.add_argument(
        "--bound", type=float, default=0.2, help="PSI that counts as drift (default 0.2)"
    )
    p.add_argument("--min-orders", type=int, default=200,
                   help="orders an hour needs to be judged (default 200)")  # fmt: skip
    p.add_argument("--out", default="reports/drift", help="report folder (default reports/drift)")


def hours_of(log: Path, drift_ref: dict, bound: float, min_orders: int) -> list:
    """Every closed hour of the log's champion decisions, as the live monitor closes them."""
    from engine.decision_log import segments
    from engine.features.matrix import FEATURE_NAMES
    from engine.monitoring.drift import DriftMonitor

    monitor = DriftMonitor(FEATURE_NAMES, bound, min_orders)
    manifest = {"drift": drift_ref}
    seen = 0
    for batch in segments.read_folder(log):
        rows = batch.filter(pc.equal(batch.column("kind"), "decision"))
        if not rows.num_rows:
            continue
        seen += rows.num_rows
        t = rows.column("created_at").cast("int64").to_numpy() / 1e6
        score = rows.column("score").fill_null(np.nan).to_numpy(zero_copy_only=False)
        X = rows.column("features").flatten().to_numpy(zero_copy_only=False)
        monitor.observe(VERSION, manifest, t, score, X.reshape(rows.num_rows, -1))
    if not seen:
        raise InvalidInput(f"--log: {log} holds no decisions", "--log")
    monitor.flush()
    return monitor.take_closed()


def run(args: argparse.Namespace) -> int:
    from engine.reports.render import Report, figure

    log, models = Path(args.log), Path(args.models)
    if not log.is_dir():
        raise InvalidInput(f"--log: {log} is not a folder", "--log")
    try:
        manifest = json.loads((models / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"--models: {models}/manifest.json: {exc}", "--models") from exc
    ref = manifest.get("drift")
    if not ref:
        raise InvalidInput(
            f"--models: {models}'s manifest has no drift reference (models trained before "
            "drift was recorded: retrain them)", "--models",
        )  # fmt: skip
    if args.bound <= 0:
        raise InvalidInput(f"--bound: must be positive, is {args.bound}", "--bound")
    hours = hours_of(log, ref, args.bound, args.min_orders)
    series = list(hours[0].psi) if hours else ["score"]
    judged = [h for h in hours if h.orders >= args.min_orders]
    rep = Report(args.out, "Drift against training")
    rep.para(
        f"Decision log `{log}`, reference from models `{manifest.get('version', models.name)}` "
        f"(their held-out period). {len(hours)} hours of order time, {len(judged)} with at least "
        f"{args.min_orders} orders. PSI over {args.bound:g} counts as drift (< 0.1 stable, "
        "0.1-0.2 some shift)."
    )
    worst = sorted(
        ((h.psi[s], s, h) for h in judged for s in series if np.isfinite(h.psi[s])),
        key=lambda x: x[0],
        reverse=True,
    )
    rep.heading("Series")
    rows = []
    for s in series:
        vals = np.array([h.psi[s] for h in judged]) if judged else np.array([np.nan])
        rows.append([s, float(np.nanmedian(vals)), float(np.nanmax(vals)),
                     int((vals > args.bound).sum())])  # fmt: skip
    rep.table(["series", "median PSI", "max PSI", "hours over the bound"], rows)
    rep.heading("Hours over the bound")
    over = [(v, s, h) for v, s, h in worst if v > args.bound]
    if over:
        rep.table(
            ["hour (UTC)", "series", "PSI", "orders"],
            [[_when(h.start), s, v, h.orders] for v, s, h in over[:50]],
        )
    else:
        rep.para("None.")
    if judged:
        fig, ax = figure(8, 3.4)
        x = [dt.datetime.fromtimestamp(h.start, dt.UTC) for h in judged]
        for s in series[:4]:
            ax.plot(x, [h.psi[s] for h in judged], label=s, lw=1)
        ax.axhline(args.bound, color="red", ls="--", lw=1, label=f"bound {args.bound:g}")
        ax.set_ylabel("PSI")
        ax.legend(fontsize=7)
        fig.autofmt_xdate()
        rep.figure("psi", fig, "PSI per hour: the score and the top features")
    print(rep.write())
    return 0


def _when(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:00")
