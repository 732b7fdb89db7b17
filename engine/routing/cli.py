"""`ordersight route train | predict | simulate`: the routing text model from files.

Bad input raises `InvalidInput` naming the column and row (rules in
`engine.routing.cases`); a model folder that does not verify raises `ModelLoadError`.
`engine.cli.main` (or `main` here, for `python -m engine.routing.cli`) prints either as
`ordersight route: error: ...` and exits with 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from engine.errors import InvalidInput

OUTPUT_COLUMNS = ("predicted", "confidence", "predicted_priority")


def _columns(text: str, flag: str) -> tuple[str, ...]:
    cols = tuple(c.strip() for c in text.split(","))
    if not cols or any(not c for c in cols):
        raise InvalidInput(f"{flag}: comma-separated column names, is {text!r}", flag)
    if len(set(cols)) != len(cols):
        raise InvalidInput(f"{flag}: a column is named twice in {text!r}", flag)
    return cols


def _train(args: argparse.Namespace) -> int:
    from engine.routing import cases
    from engine.routing.text_fit import TrainOptions
    from engine.routing.text_model import train

    text_cols = _columns(args.text_cols, "--text-cols")
    for flag, col in (("--label-col", args.label_col), ("--priority-col", args.priority_col)):
        if col is not None and col in text_cols:
            raise InvalidInput(f"{flag} {col}: is also one of --text-cols", col)
    if args.priority_col is not None and args.priority_col == args.label_col:
        raise InvalidInput("--priority-col must differ from --label-col", args.priority_col)
    options = TrainOptions(
        min_confidence=args.min_confidence, target_precision=args.target_precision, seed=args.seed
    )
    options.check()
    t0 = time.perf_counter()
    table = cases.read_cases(args.cases)
    where = str(args.cases)
    columns = cases.texts(table, text_cols, where)
    labels = cases.labels(table, args.label_col, where)
    priorities = cases.labels(table, args.priority_col, where) if args.priority_col else None
    router, fitted = train(
        columns,
        labels,
        priorities,
        options,
        args.out,
        text_cols=text_cols,
        label_col=args.label_col,
        priority_col=args.priority_col,
    )
    v, th = fitted.validation, router.manifest["threshold"]
    how = (
        f"target precision {th['target_precision']:.2f} on validation"
        if th["chosen_by"] == "validation"
        else "--min-confidence"
    )
    print(
        f"trained {router.version} on {table.num_rows} cases, {len(router.labels)} labels, in "
        f"{time.perf_counter() - t0:.1f}s -> {args.out}\n"
        f"validation ({v['rows']} held-out cases): macro-F1 {v['macro_f1']:.3f}, accuracy "
        f"{v['accuracy']:.3f}; below confidence {router.threshold:.3f} ({how}) a case goes to "
        f"GENERAL: {1 - v['routed_share']:.1%} of validation"
    )
    if th.get("reached") is False:
        print(
            f"warning: no threshold keeps precision {th['target_precision']} on the validation "
            "cases, so every case goes to GENERAL; give --min-confidence, a lower "
            "--target-precision, or more labelled cases",
            file=sys.stderr,
        )
    return 0


def _predict(args: argparse.Namespace) -> int:
    import pyarrow as pa

    from engine.routing import cases
    from engine.routing.text_model import TextRouter
    from engine.routing.text_prep import GENERAL

    if args.threads < 1:
        raise InvalidInput(f"--threads must be >= 1, is {args.threads}", "threads")
    router = TextRouter.load(args.models, threads=args.threads)
    schema, batches = cases.read_batches(args.cases)
    taken = [c for c in OUTPUT_COLUMNS if c in schema.names]
    if taken:
        raise InvalidInput(
            f"{args.cases}: already has a column '{taken[0]}', which route predict writes", taken[0]
        )
    where = f"{args.cases} (the model reads these)"
    cases.require(schema.names, router.text_cols, where)
    added = [("predicted", pa.string()), ("confidence", pa.float32())]
    if router.priority_labels:
        added.append(("predicted_priority", pa.string()))
    out_schema = pa.schema([*schema, *(pa.field(n, t) for n, t in added)])
    rows = general = 0
    took = 0.0
    with cases.CaseWriter(args.out, out_schema) as writer:
        for batch in batches:
            table = pa.Table.from_batches([batch], schema)
            columns = cases.texts(table, router.text_cols, where)
            t0 = time.perf_counter()
            r = router.route(columns)
            took += time.perf_counter() - t0
            values = [r.predicted, r.confidence, r.priority]
            for (name, kind), v in zip(added, values, strict=False):
                table = table.append_column(pa.field(name, kind), pa.array(v, kind))
            writer.write(table)
            rows += table.num_rows
            general += r.predicted.count(GENERAL)
    rate = f"{rows / took:,.0f} cases/s" if took > 0 and rows else "-"
    print(
        f"routed {rows} cases with {router.version} ({general} to GENERAL) in {took:.2f}s "
        f"of model time ({rate}) -> {args.out}"
    )
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from engine.routing import cases
    from engine.routing.case_sim import simulate_cases

    table = simulate_cases(args.cases, config=args.config, seed=args.seed)
    path = cases.write_cases(table, args.out)
    print(f"wrote {table.num_rows} simulated cases ({args.config}, seed {args.seed}) to {path}")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "route",
        help="route cases: train and run the text model, simulate cases, and the Routing "
        "service of a running engine (agents, cases, backlog)",
    )
    verbs = p.add_subparsers(dest="route_command", required=True)
    from engine.routing.service_cli import add_verbs

    add_verbs(verbs)

    s = verbs.add_parser(
        "train", help="train a text model folder (ONNX) from labelled cases (CSV or Parquet)"
    )
    s.add_argument("--cases", required=True, help="labelled cases, .csv or .parquet")
    s.add_argument(
        "--text-cols", required=True, help="comma-separated text columns, e.g. subject,body"
    )
    s.add_argument("--label-col", required=True, help="the queue or skill label column")
    s.add_argument("--priority-col", help="a priority label column: also learn priority")
    s.add_argument(
        "--min-confidence",
        type=float,
        help="route a case to GENERAL below this top probability (default: the lowest "
        "threshold that keeps --target-precision on a held-out validation share)",
    )
    s.add_argument(
        "--target-precision",
        type=float,
        default=0.9,
        help="share of routed validation cases that must be right (default 0.9)",
    )
    s.add_argument("--seed", type=int, default=7, help="validation split")
    s.add_argument("--out", required=True, help="model folder to write")
    s.set_defaults(func=_train)

    s = verbs.add_parser(
        "predict",
        help="the input rows plus predicted (a label or GENERAL), confidence and, with a "
        "priority head, predicted_priority",
    )
    s.add_argument("--models", required=True, help="a folder written by route train")
    s.add_argument("--cases", required=True, help=".csv or .parquet with the model's text columns")
    s.add_argument("--out", required=True, help=".csv or .parquet")
    s.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    s.set_defaults(func=_predict)

    s = verbs.add_parser("simulate", help="write simulated support and exception cases")
    s.add_argument("--cases", type=int, required=True, help="number of cases")
    s.add_argument("--out", required=True, help=".csv or .parquet")
    s.add_argument(
        "--config",
        choices=("default", "shifted"),
        default="default",
        help="default, or shifted (other wordings favoured, more noise and German, another "
        "queue mix), which the model was not designed on",
    )
    s.add_argument("--seed", type=int, default=7)
    s.set_defaults(func=_simulate)


def main(argv: list[str] | None = None) -> int:
    """`ordersight route ...` on its own, with engine.cli's error convention."""
    p = argparse.ArgumentParser(prog="ordersight")
    add_parser(p.add_subparsers(dest="command", required=True))
    from engine.cli import run_command

    return run_command(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
