"""`ordersight` command line: serve, simulate, train, score-file, score."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

from engine.errors import InvalidInput, ModelLoadError


def _token(args: argparse.Namespace) -> int:
    from engine.serving.auth import hash_token, new_token, parse_tokens

    roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    secret = new_token()
    try:  # the engine's own rule for an entry, so the CLI never writes one it would refuse
        parse_tokens([{"name": args.name, "sha256": hash_token(secret), "roles": roles}])
    except ValueError as exc:
        raise InvalidInput(f"--roles: {str(exc).split(': ', 1)[-1]}") from exc
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", args.name):
        raise InvalidInput(
            f"--name: letters, digits, '.', '_' or '-', at most 64; is {args.name!r}"
        )  # stricter than the engine's rule: the name is written into TOML unquoted-safe
    entry = (
        f'[[tokens]]\nname = "{args.name}"\nsha256 = "{hash_token(secret)}"\n'
        f"roles = [{', '.join(repr(r).replace(chr(39), chr(34)) for r in roles)}]\n"
    )
    if args.write:
        out = Path(args.write)
        out.mkdir(parents=True, exist_ok=True)
        if (out / "token").exists():
            raise InvalidInput(f"--write: {out / 'token'} exists; remove it (and its entry in "
                               f"{out / 'config.toml'}) to make another")  # fmt: skip
        fd = os.open(out / "token", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:  # owner-only from its creation on
            f.write(secret + "\n")
        with (out / "config.toml").open("a") as f:
            f.write(entry)
        print(
            f"token for '{args.name}' in {out / 'token'}; its hash added to {out / 'config.toml'}"
        )
        return 0
    print(f"token (shown once; give it to the client): {secret}")
    print("add to the engine's config file:")
    print(entry, end="")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from engine.config import load_settings
    from engine.serving.server import Server

    settings = load_settings(
        args.config,
        models=args.models,
        host=args.host,
        port=args.port,
        warm_history=args.warm_from,
        workers=args.workers,
        single_process=args.single_process or None,
        log_dir=args.log_dir,
        snapshot_dir=args.snapshot_dir,
        metrics_port=args.metrics_port,
        hash_secret_file=args.hash_secret_file,
        forecast_models=args.forecast_models,
        control_fraction=args.control_fraction,
        store=args.store,
        routing_models=args.routing_models,
    )
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(Server(settings).serve_forever())
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from training.simulate import main_simulate

    if args.days < 1:
        raise InvalidInput(f"--days must be >= 1, is {args.days}", "days")
    t0 = time.perf_counter()
    n = main_simulate(
        args.days,
        args.out,
        seed=args.seed,
        orders_per_day=args.orders_per_day,
        config=args.config,
    )
    print(f"wrote {n} orders to {args.out} in {time.perf_counter() - t0:.1f}s")
    return 0


def _train(args: argparse.Namespace) -> int:
    from training.train import train

    report = train(
        args.orders,
        args.out,
        train_from=args.train_from,
        train_to=args.train_to,
        as_of=args.as_of,
        label_delay_days=args.label_delay,
        seed=args.seed,
        capacity=args.state_capacity,
        tune_budget_s=args.tune_budget,
    )
    keys = ("tier2", "cascade", "tier1_escalation_rate", "cascade_recall_of_tier2_flagged_frauds")
    print(json.dumps({k: report[k] for k in keys}, indent=2))
    print(f"models and report written to {args.out}")
    return 0


def _score_file(args: argparse.Namespace) -> int:
    from engine.decision.score_file import score_file

    t0 = time.perf_counter()
    n = score_file(
        args.models,
        args.orders,
        args.out,
        label_delay_days=args.label_delay,
        capacity=args.state_capacity,
    )
    dt = time.perf_counter() - t0
    print(f"scored {n} orders in {dt:.2f}s ({n / dt:,.0f} orders/s) -> {args.out}")
    return 0


_UNITS = {"s": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def _seconds(text: str) -> float:
    """A duration: a number of seconds, or a number with a unit (s, min, h, d, w)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-z]*)\s*", text.lower())
    if m is None or m.group(2) not in ("", *_UNITS) or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a positive duration (seconds, or 90s, 5min, 1h, 1d, 1w)"
        )
    return float(m.group(1)) * _UNITS.get(m.group(2), 1.0)


def _detect(args: argparse.Namespace) -> int:
    from engine.monitoring.series_detection import detect_csv

    n = detect_csv(
        args.csv, args.out, timestamp_col=args.timestamp_col, value_col=args.value_col,
        kind=args.kind, interval=args.interval,
    )  # fmt: skip
    print(f"wrote {n} rows to {args.out}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ordersight", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="start the gRPC engine")
    s.add_argument("--config", help="TOML settings file (see engine/config.py)")
    s.add_argument("--models", help="artifact folder (default models/default)")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument(
        "--warm-from", help="history (Parquet) replayed into the velocity state at start-up"
    )
    s.add_argument(
        "--workers", type=int, help="gRPC front processes sharing the port (default: one per core)"
    )
    s.add_argument(
        "--single-process",
        action="store_true",
        help="take gRPC calls in the engine's own process (no front processes)",
    )
    s.add_argument("--metrics-port", type=int, help="Prometheus /metrics port on --host (0: off)")
    s.add_argument("--log-dir", help="decision log folder (setting log_dir)")
    s.add_argument(
        "--snapshot-dir", help="state snapshot folder (setting snapshot_dir): restarts replay "
        "the decision log after the snapshot",
    )  # fmt: skip
    s.add_argument(
        "--hash-secret-file", help="file holding the secret of the entity keys (setting "
        "hash_secret_file; see docs/SECURITY.md)",
    )  # fmt: skip
    s.add_argument(
        "--forecast-models", help="forecast model folder Forecasting serves (setting "
        "forecast_models; see ordersight forecast train)",
    )  # fmt: skip
    s.add_argument(
        "--store", help="review cases and outcomes: a SQLite file or a postgresql:// DSN "
        "(setting store)",
    )  # fmt: skip
    s.add_argument(
        "--routing-models", help="routing text model folder Routing reads cases with "
        "(setting routing_models; see ordersight route train)",
    )  # fmt: skip
    s.add_argument(
        "--control-fraction", type=float, help="share of customers the rules alone decide, "
        "the pilot's control group (setting control_fraction; 0 to 0.5)",
    )  # fmt: skip
    s.set_defaults(func=_serve)

    s = sub.add_parser("simulate", help="write a simulated labelled order history (Parquet)")
    s.add_argument("--days", type=int, required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--orders-per-day", type=int, default=6000)
    s.add_argument(
        "--config",
        choices=("default", "shifted"),
        default="default",
        help="the simulated world: default, or shifted (another fraud mix, population and "
        "label delays, which training is not tuned on)",
    )
    s.set_defaults(func=_simulate)

    s = sub.add_parser("train", help="train tier one, tier two and the rules from a history")
    s.add_argument("--orders", required=True, help="history file (Parquet)")
    s.add_argument("--train-from", help="first day of training examples, YYYY-MM-DD (inclusive)")
    s.add_argument(
        "--train-to",
        help="last day of training examples, YYYY-MM-DD (inclusive); "
        "later orders are the held-out period",
    )
    s.add_argument(
        "--as-of",
        help="train as on this day or ISO datetime (UTC unless it names an offset): only "
        "labels known by then, for features and for the examples' own labels; examples end "
        "where 90%% of a day's orders are labelled, the held-out period starts here",
    )
    s.add_argument(
        "--tune-budget",
        type=lambda text: 0.0 if text.strip() == "0" else _seconds(text),
        default=120.0,
        help="time for choosing tier two's hyperparameters by rolling validation "
        "(seconds, or with a unit: 90s, 5min); 0 takes the first candidate",
    )
    s.add_argument(
        "--label-delay",
        type=float,
        default=7.0,
        help="days until a label is known where label_known_at is absent",
    )
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--state-capacity", type=int, default=1 << 20)
    s.add_argument("--out", required=True, help="artifact folder to write")
    s.set_defaults(func=_train)

    s = sub.add_parser("score-file", help="replay a history through the serving code")
    s.add_argument("--models", required=True)
    s.add_argument("--orders", required=True)
    s.add_argument("--out", required=True, help=".parquet or .csv")
    s.add_argument("--label-delay", type=float, default=7.0)
    s.add_argument("--state-capacity", type=int, default=1 << 20)
    s.set_defaults(func=_score_file)

    s = sub.add_parser("detect", help="anomaly scores for a time series in a CSV file")
    s.add_argument("--csv", required=True)
    s.add_argument("--timestamp-col", default="timestamp")
    s.add_argument("--value-col", default="value")
    s.add_argument(
        "--out", required=True,
        help="CSV, a row per bucket: timestamp, value, points, filled, anomaly_score (1 - the "
        "share of points of anomaly-free data that score as high; alerts open at 0.9999), "
        "alert (an incident's first bucket), in_alert",
    )  # fmt: skip
    s.add_argument(
        "--kind", choices=("auto", "count", "gauge"), default="auto",
        help="count: a bucket sums its points, an empty one is 0; gauge: averages them, an "
        "empty one is missing; auto: count when every value is a non-negative integer",
    )  # fmt: skip
    s.add_argument(
        "--interval", type=_seconds, default=None,
        help="bucket size: seconds, or with a unit (90s, 5min, 1h, 1d); default: the median "
        "step between points",
    )  # fmt: skip
    s.set_defaults(func=_detect)

    from engine.client_cli import add_parsers as add_client_parsers

    add_client_parsers(sub)

    s = sub.add_parser("token", help="make a bearer token and the config entry with its hash")
    s.add_argument("--name", required=True, help="who holds it, e.g. checkout-eu")
    s.add_argument(
        "--roles", required=True,
        help="comma-separated: score, report, admin, forecast, review, route",
    )  # fmt: skip
    s.add_argument(
        "--write", metavar="DIR", help="write the secret to DIR/token and append the entry to "
        "DIR/config.toml (what `make run` does), instead of printing them",
    )  # fmt: skip
    s.set_defaults(func=_token)

    from engine.decision_log.commands import add_parser as add_log_parser

    add_log_parser(sub)
    from engine.forecast.cli import add_parser as add_forecast_parser

    add_forecast_parser(sub)
    from engine.routing.cli import add_parser as add_route_parser

    add_route_parser(sub)
    from engine.serving.review_cli import add_parser as add_review_parser

    add_review_parser(sub)
    from engine.reports.cli import add_parsers as add_report_parsers

    add_report_parsers(sub)
    return p


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command: bad input is one line on stderr naming what is wrong, exit 2."""
    try:
        return int(args.func(args))
    except (InvalidInput, ModelLoadError, ValueError) as exc:
        print(f"ordersight {args.command}: error: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    return run_command(parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
