"""`ordersight report accuracy`: how well the engine's decisions matched the outcomes, per
day, channel and model version, from the decision log and the outcomes.

Per group of orders (a "flag" is a REVIEW or a DECLINE; F the frauds, L the legitimate
orders, both among the orders whose label is known at as-of, `engine.reports.logdata`):

- catch rate = |F flagged| / |F|
- decline precision = |declined and in F| / |declined and labelled|
- false-decline rate = |L declined| / |L|
- review rate = |reviewed| / |orders| (every order: it needs no label)
- label coverage = |labelled| / |orders| (an outcome, or older than the label horizon)

Immature orders (no outcome yet, younger than the horizon) are left out of the
label-dependent rates; a day holding any is marked immature in the table and shaded in the
figures, since its rates rest on the outcomes that arrived first (chargebacks come early,
so a young day's catch rate looks better than it will).

Every decision counts, whichever arm: the control group's (decided by the rules) are their
own row of the per-version table.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from engine.errors import InvalidInput
from engine.reports import logdata
from engine.reports.logdata import FRAUD, IMMATURE, LEGITIMATE, rate

if TYPE_CHECKING:
    import pandas as pd

HEADERS = ("orders", "label coverage", "immature", "frauds", "catch rate",
           "decline precision", "false-decline rate", "review rate")  # fmt: skip


def add_arguments(p: argparse.ArgumentParser) -> None:
    logdata.add_log_arguments(p, "required")
    p.add_argument("--from", dest="start", help="orders created at or after this date/time")
    p.add_argument("--to", dest="end", help="orders created before this date/time")
    p.add_argument("--out", default="reports/accuracy", help="report folder (default %(default)s)")


def counts(frame: pd.DataFrame, by: str | None) -> pd.DataFrame:
    """Per group of `by` (one row "all" when None): the counts the rates are made of."""
    import pandas as pd

    label, action = frame["label"], frame["action"]
    declined, reviewed = action == "DECLINE", action == "REVIEW"
    fraud, legit = label == FRAUD, label == LEGITIMATE
    parts = pd.DataFrame(
        {
            "orders": 1,
            "labelled": label != IMMATURE,
            "immature": label == IMMATURE,
            "frauds": fraud,
            "caught": fraud & (declined | reviewed),
            "declined_labelled": declined & (label != IMMATURE),
            "declined_fraud": declined & fraud,
            "legit": legit,
            "false_declines": legit & declined,
            "reviewed": reviewed,
        }
    ).astype("int64")
    key = frame[by] if by is not None else pd.Series("all", index=frame.index)
    return parts.groupby(key.to_numpy()).sum()


def rates(c: Any) -> list[Any]:
    """One table row (HEADERS) from a row of `counts`."""
    return [
        int(c["orders"]), rate(c["labelled"], c["orders"]), int(c["immature"]),
        int(c["frauds"]), rate(c["caught"], c["frauds"]),
        rate(c["declined_fraud"], c["declined_labelled"]), rate(c["false_declines"], c["legit"]),
        rate(c["reviewed"], c["orders"]),
    ]  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from engine.reports.render import Report

    data = logdata.read_log(args.log)
    start, end = logdata.parse_time(args.start, "--from"), logdata.parse_time(args.end, "--to")
    if start is not None and end is not None and end <= start:
        raise InvalidInput(f"--to ({args.end}) must come after --from ({args.start})", "--to")
    frame = logdata.within(data.decisions, start, end)
    frame, outcomes, as_of = logdata.read_labels(args, data, frame)
    if frame.empty:
        raise InvalidInput(
            f"--from/--to: no decisions in the log created in [{args.start or 'start'}, "
            f"{args.end or 'end'}) by as-of {as_of:%Y-%m-%d %H:%M}",
            "--from",
        )
    frame["version"] = frame["model_version"].where(
        frame["arm"] == "model", "control group (rules)"
    )
    rep = Report(args.out, "Accuracy: decisions against outcomes")
    rep.para(
        f"Log `{data.folder}`; outcomes `{args.outcomes}`; as-of {as_of:%Y-%m-%d %H:%M} UTC; "
        f"label horizon {args.label_horizon_days:g} days; orders created "
        f"{frame['created_at'].min():%Y-%m-%d %H:%M} to {frame['created_at'].max():%Y-%m-%d %H:%M}."
    )
    rep.bullets(
        [
            "catch rate = frauds declined or reviewed / frauds",
            "decline precision = declined that were fraud / declined (labelled)",
            "false-decline rate = legitimate declined / legitimate",
            "review rate = reviewed / all orders; label coverage = labelled / all orders",
            "labelled: an outcome known by as-of, or no outcome and older than the horizon "
            "(legitimate); immature orders are left out of the label-dependent rates",
            "a declined order ships nothing, so its fraud is known only when an outcome says "
            "so (censoring): unlabelled declines count as legitimate once past the horizon, "
            "so precision is a lower bound and the false-decline rate an upper bound",
        ]
    )
    overall = counts(frame, None)
    rep.heading("Overall")
    rep.table(HEADERS, [rates(overall.iloc[0])])
    days = counts(frame, "day")
    rep.heading("Per day")
    rep.table(
        ("day", *HEADERS, "mature"),
        [(f"{d:%Y-%m-%d}", *rates(c), "immature" if c["immature"] else "yes")
         for d, c in days.iterrows()],
    )  # fmt: skip
    _figures(rep, days)
    for by, title in (("channel", "Per channel"), ("version", "Per model version")):
        rep.heading(title)
        rep.table((by, *HEADERS), [(g, *rates(c)) for g, c in counts(frame, by).iterrows()])
    rep.heading("Outcomes")
    rep.bullets(outcomes.lines())
    if data.repeated:
        rep.para(f"{data.repeated:,} repeated decisions of an order id: the first one counts.")
    path = rep.write()
    print(f"accuracy report: {path}")
    return 0


def _figures(rep: Any, days: pd.DataFrame) -> None:
    from engine.reports.render import figure

    rows = [rates(c) for _, c in days.iterrows()]
    x = [d + _one_day() / 2 for d in days.index]  # a day's point at its middle
    for name, series, top, title in (
        ("rates-per-day", ((4, "catch rate"), (5, "decline precision"), (1, "label coverage")),
         1.05, "Catch rate, decline precision and label coverage per day"),
        ("reviews-and-false-declines", ((7, "review rate"), (6, "false-decline rate")),
         None, "Review and false-decline rates per day"),
    ):  # fmt: skip
        fig, ax = figure()
        for col, label in series:
            ax.plot(x, [r[col] for r in rows], marker="o", ms=3, label=label)
        for d, c in days.iterrows():
            if c["immature"]:
                ax.axvspan(d, d + _one_day(), color="0.85", lw=0)
        ax.set_title(title + " (grey: immature days)", fontsize=10)
        ax.set_ylim(0, top)
        ax.legend(fontsize=8)
        fig.autofmt_xdate()
        rep.figure(name, fig, title)


def _one_day() -> Any:
    import pandas as pd

    return pd.Timedelta(days=1)
