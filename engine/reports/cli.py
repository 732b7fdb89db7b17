"""`ordersight report accuracy|drift|bias|pilot` and `ordersight audit data`.

Each report lives in its own module (named in REPORTS), which provides
`add_arguments(parser)` and `run(args) -> int`; those modules import their heavy
dependencies (pandas, fairlearn, matplotlib) inside functions, so building the command line
stays cheap. Bad input raises `engine.errors.InvalidInput` naming the flag or column and
row, which `ordersight` prints as one error line (exit status 2).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util

REPORTS = {
    "accuracy": ("engine.reports.accuracy", "catch rate, precision, false declines over time"),
    "drift": ("engine.reports.drift", "PSI of the score and top features per hour"),
    "bias": ("engine.reports.bias", "review, decline, false-positive rates per segment"),
    "pilot": ("engine.reports.pilot", "champion against the control group and the challenger"),
    "routing": (
        "engine.reports.routing",
        "time to resolution, SLA breaches and agent experience per customer segment",
    ),
}
AUDITS = {
    "data": ("engine.reports.audit", "is an order history ready for the engine"),
}


def _group(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    name: str,
    help_: str,
    verbs: dict[str, tuple[str, str]],
) -> None:
    p = sub.add_parser(name, help=help_)
    inner = p.add_subparsers(dest="verb", required=True, metavar="KIND")
    for verb, (module, text) in verbs.items():
        if importlib.util.find_spec(module) is None:  # a report not built yet
            continue
        mod = importlib.import_module(module)
        s = inner.add_parser(verb, help=text, description=text)
        mod.add_arguments(s)
        s.set_defaults(func=mod.run)


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    _group(sub, "report", "governance reports (Markdown + PNG): log and outcomes", REPORTS)
    _group(sub, "audit", "audit data before a rollout", AUDITS)
