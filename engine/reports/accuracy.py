"""`ordersight report accuracy`: how well the engine's decisions matched the outcomes, per
day, channel and model version, from the decision log and the outcomes.

Per group of orders (a "flag" is a REVIEW or a DECLINE; F the frauds, L the legitimate
orders, both among the orders whose label is known at as-of, `engine.reports.logdata`;
C the censored: declines without an outcome, whose label no outcome can ever give):

- catch rate = |F flagged| / |F|; bounds [|F flagged| / |F|, (|F flagged| + |C|) / (|F| +
  |C|)] (every censored decline legitimate, every one fraud)
- decline precision = |declined and in F| / |declined and in F or L|; bounds
  [|declined in F| / (|declined in F or L| + |C|), (|declined in F| + |C|) / (… + |C|)]
- false-decline rate = |L declined| / |L|; bounds [|L declined| / |L|, (|L declined| + |C|)
  / (|L| + |C|)]
- review rate = |reviewed| / |orders| (every order: it needs no label)
- label coverage = |F or L| / |orders|

The point values count known labels only; the bounds are the two extremes over the labels
the censored declines could have, so the true rate of these orders lies within them (they
are not confidence intervals: no sampling error is in them). Immature orders (no outcome yet,
approved or reviewed, younger than the horizon) are left out of the label-dependent rates
and of the bounds; a day holding any is marked immature in the table and shaded in the
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
from engine.reports.logdata import CENSORED, FRAUD, IMMATURE, LEGITIMATE, rate
from engine.reports.render import cell

if TYPE_CHECKING:
    import pandas as pd

HEADERS = ("orders", "label coverage", "immature", "censored", "frauds", "catch rate",
           "catch rate bounds", "decline precision", "precision bounds", "false-decline rate",
           "false-decline bounds", "review rate")  # fmt: skip


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
            "labelled": fraud | legit,
            "immature": label == IMMATURE,
            "censored": label == CENSORED,
            "frauds": fraud,
            "caught": fraud & (declined | reviewed),
            "declined_labelled": declined & (fraud | legit),
            "declined_fraud": declined & fraud,
            "legit": legit,
            "false_declines": legit & declined,
            "reviewed": reviewed,
        }
    ).astype("int64")
    key = frame[by] if by is not None else pd.Series("all", index=frame.index)
    return parts.groupby(key.to_numpy()).sum()


def values(c: Any) -> dict[str, float]:
    """The rates and their bounds over the censored (the module's docstring) of a row of
    `counts`."""
    k, f, caught, df = (float(c[n]) for n in ("censored", "frauds", "caught", "declined_fraud"))
    dl, legit, fd = float(c["declined_labelled"]), float(c["legit"]), float(c["false_declines"])
    return {
        "catch": rate(caught, f), "catch_hi": rate(caught + k, f + k),
        "precision": rate(df, dl), "precision_lo": rate(df, dl + k),
        "precision_hi": rate(df + k, dl + k),
        "fdr": rate(fd, legit), "fdr_hi": rate(fd + k, legit + k),
        "review": rate(c["reviewed"], c["orders"]), "coverage": rate(c["labelled"], c["orders"]),
    }  # fmt: skip


def _range(lo: float, hi: float) -> str:
    return "–" if lo != lo and hi != hi else f"{cell(lo)} – {cell(hi)}"


def rates(c: Any) -> list[Any]:
    """One table row (HEADERS) from a row of `counts`."""
    v = values(c)
    return [
        int(c["orders"]), v["coverage"], int(c["immature"]), int(c["censored"]),
        int(c["frauds"]), v["catch"], _range(v["catch"], v["catch_hi"]), v["precision"],
        _range(v["precision_lo"], v["precision_hi"]), v["fdr"], _range(v["fdr"], v["fdr_hi"]),
        v["review"],
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
            "decline precision = declined that were fraud / declined with a known label",
            "false-decline rate = legitimate declined / legitimate",
            "review rate = reviewed / all orders; label coverage = orders with a known label "
            "/ all orders",
            "known label: an outcome known by as-of; or, for an approved or reviewed order, "
            "none and older than the horizon (legitimate). Approved or reviewed orders "
            "younger than that without an outcome are immature: left out of the "
            "label-dependent rates",
            "censored: a declined order without an outcome, whatever its age. A declined "
            "order ships nothing, so no chargeback can come: it may be fraud (stopped) or a "
            "false decline, and no outcome will tell. It is left out of every rate's point "
            "value and counted in the column censored",
            "bounds: each rate if every censored decline were legitimate and if every one "
            "were fraud, the two extremes: the true rate of these orders lies within them "
            "(the point values are the lower end of the catch rate and of the false-decline "
            "rate, the precision of the declines whose label is known). They are not "
            "confidence intervals",
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

    rows = [values(c) for _, c in days.iterrows()]
    x = [d + _one_day() / 2 for d in days.index]  # a day's point at its middle
    for name, series, top, title in (
        ("rates-per-day", (("catch", "catch_hi", "catch rate"),
                           ("precision", ("precision_lo", "precision_hi"), "decline precision"),
                           ("coverage", None, "label coverage")),
         1.05, "Catch rate, decline precision and label coverage per day"),
        ("reviews-and-false-declines", (("review", None, "review rate"),
                                        ("fdr", "fdr_hi", "false-decline rate")),
         None, "Review and false-decline rates per day"),
    ):  # fmt: skip
        fig, ax = figure()
        for key, bounds, label in series:
            line = ax.plot(x, [r[key] for r in rows], marker="o", ms=3, label=label)[0]
            if bounds is not None:
                lo, hi = bounds if isinstance(bounds, tuple) else (key, bounds)
                ax.fill_between(x, [r[lo] for r in rows], [r[hi] for r in rows],
                                color=line.get_color(), alpha=0.2, lw=0)  # fmt: skip
        for d, c in days.iterrows():
            if c["immature"]:
                ax.axvspan(d, d + _one_day(), color="0.85", lw=0)
        ax.set_title(title + " (bands: bounds over censored declines; grey: immature days)",
                     fontsize=9)  # fmt: skip
        ax.set_ylim(0, top)
        ax.legend(fontsize=8)
        fig.autofmt_xdate()
        rep.figure(name, fig, title)


def _one_day() -> Any:
    import pandas as pd

    return pd.Timedelta(days=1)
