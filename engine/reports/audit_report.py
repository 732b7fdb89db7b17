"""The data audit's report: an `AuditResult` as Markdown sections and two figures, written
with the one report writer (`engine.reports.render`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engine.reports import audit_checks as checks
from engine.reports import audit_groups as groups
from engine.reports.render import Report, figure

if TYPE_CHECKING:
    from engine.reports.audit import AuditResult

SHOWN_DAYS = 20
"""Flagged days listed in a table; the rest are counted."""


def _pct(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:.1f}%"


def _ids(n: int) -> str:
    return "1 order id appears" if n == 1 else f"{n:,} order ids appear"


def render(r: AuditResult, folder: Path) -> Report:
    rep = Report(folder, f"Data audit: {r.path.name}")
    days = r.volume.per_day.size
    rep.para(
        f"`{r.path.name}` ({'CSV' if r.csv else 'Parquet'}): {r.rows:,} orders from "
        f"{r.first} to {r.last} ({days} days), {len(r.columns)} columns. Label horizon: "
        f"{r.horizon_days:g} days. Written by `ordersight audit data`; each section says how "
        "it decides, the thresholds are listed at the end."
    )
    _summary(rep, r)
    _columns(rep, r)
    _labels(rep, r)
    _duplicates(rep, r)
    _volume(rep, r)
    _entities(rep, r)
    _balance(rep, r)
    _leaks(rep, r)
    _groups(rep, r)
    _rules(rep)
    return rep


def _summary(rep: Report, r: AuditResult) -> None:
    rep.heading("Summary")
    counts = {
        v: sum(g.verdict == v for g in r.groups)
        for v in (groups.USABLE, groups.DEGRADED, groups.UNUSABLE)
    }
    items = [
        f"Feature groups: {counts['usable']} usable, {counts['degraded']} degraded, "
        f"{counts['unusable']} unusable ([Feature groups](#feature-groups))."
    ]
    if r.blockers:
        items.append("`ordersight train` refuses this file as it is: " + "; ".join(r.blockers))
    else:
        items.append(
            "`ordersight train` can read the columns as they are (types and required "
            "columns; its own order rules, such as currency and country codes, are not run "
            "here)."
        )
    lab = r.labels
    if lab.labelled:
        items.append(
            f"Labels on {_pct(lab.coverage)} of orders; {lab.frauds:,} frauds "
            f"({_pct(lab.frauds / lab.labelled)} of labelled orders)."
        )
        if lab.after_end:
            items.append(
                f"{lab.after_end:,} labels ({_pct(lab.after_end / lab.labelled)}) became known "
                "only after the last order: an export from a live system cannot hold them (a "
                "simulated history does); `ordersight train --as-of` trains on the labels "
                "known then."
            )
    else:
        items.append("No labels: the label-dependent checks and features are unusable.")
    for k in r.leaks:
        if k.flagged:
            read = next(c.expected is not None for c in r.columns if c.name == k.column)
            items.append(
                f"`{k.column}` leaks the label ({k.method} {k.auc:.3f}): "
                + (
                    "the engine reads it, so the export must be fixed at its source."
                    if read
                    else "the engine does not read it; keep it out of any model."
                )
            )
    if not r.leaking:
        items.append("No column separates the labels on its own.")
    d = r.duplicates
    items.append(
        f"{_ids(d.ids)} more than once ({d.extra_rows:,} extra rows)."
        if d.ids
        else "Every order id is unique."
    )
    v = r.volume
    if v.missing or v.low:
        items.append(
            f"{len(v.missing)} day(s) without orders, {len(v.low)} day(s) far below the "
            "typical volume."
        )
    else:
        items.append("Orders on every day, none far below the typical volume.")
    for e in r.entities:
        if e.placeholder:
            items.append(
                f"`{e.column}`: the value {e.top!r} is on {_pct(e.top_share)} of orders "
                "(a placeholder?)."
            )
    rep.bullets(items)


def _columns(rep: Report, r: AuditResult) -> None:
    rep.heading("Columns")
    rep.para(
        "Completeness is the share of rows with a value (not null, NaN, blank text or an "
        "empty list); card columns are also measured over card payments only. *Engine "
        "type* is what `ordersight train` reads; a CSV's text is parsed as it would parse it."
    )
    rows = []
    for c in r.columns:
        ok = "not read" if c.expected is None else ("yes" if not c.problem else "no: " + c.problem)
        complete = _pct(c.present) + (f" ({_pct(c.scoped)} of {c.scope})" if c.scope else "")
        rows.append(
            [
                c.name,
                _short(c.file_type),
                _short(c.expected or "–"),
                ok,
                _pct(c.non_null),
                complete,
                c.note,
            ]
        )
    for name in r.missing_columns:
        rows.append([name, "–", _expected(name), "missing from the file", "–", "–", ""])
    rep.table(
        ["column", "file type", "engine type", "engine reads it", "non-null", "complete", "note"],
        rows,
    )


def _expected(name: str) -> str:
    from engine.orders.schema import HISTORY_SCHEMA

    return _short(str(HISTORY_SCHEMA.field(name).type))


def _short(type_name: str) -> str:
    """A nested type by its field names only (list<struct<sku, category, ...>>)."""
    if not type_name.startswith(("list<", "large_list<")) or "struct<" not in type_name:
        return type_name
    inner = type_name.split("struct<", 1)[1]
    names = [p.split(":")[0].strip() for p in inner.split(",")]
    return type_name.split("<", 1)[0] + "<struct<" + ", ".join(names) + ">>"


def _labels(rep: Report, r: AuditResult) -> None:
    rep.heading("Labels")
    lab = r.labels
    if not lab.has_column:
        rep.para("No labels: the file has no `is_fraud` column.")
        return
    if not lab.labelled:
        rep.para("No labels: `is_fraud` is empty on every row.")
        return
    settled = (
        f"{_pct(lab.settled_coverage)} of the {lab.settled:,} orders placed at least "
        f"{lab.horizon_days:g} days before the last order (their labels should be in)"
        if lab.settled
        else f"no order is older than the {lab.horizon_days:g}-day horizon, so coverage is "
        "judged on all orders"
    )
    rep.bullets(
        [
            f"Coverage: {lab.labelled:,} of {lab.rows:,} orders have a label "
            f"({_pct(lab.coverage)}); {settled}.",
            f"`label_known_at` on {_pct(lab.time_share)} of labelled orders."
            if lab.has_time
            else "No `label_known_at` column: the trainer assumes each label became known "
            "`--label-delay` days after its order.",
        ]
    )
    if not lab.delays:
        return
    rep.para("Label delay (label_known_at − created_at), in days:")
    head = ["labels", *(f"p{round(100 * q)}" for q in checks.QUANTILES), "min", "max"]
    rep.table(head, [[k, *v] for k, v in lab.delays.items()], digits=1)
    notes = [
        f"Fraud labels known within the {lab.horizon_days:g}-day horizon: "
        f"{_pct(lab.fraud_in_horizon)}."
    ]
    if lab.negative:
        notes.append(f"{lab.negative:,} labels are known before their order was placed.")
    if lab.after_end:
        notes.append(
            f"{lab.after_end:,} labels are known after the last order in the file. A history "
            "exported from a live system cannot hold these (a simulated one does); the "
            "trainer cuts labels at its own `--as-of`."
        )
    if not math.isnan(lab.delay_auc):
        notes.append(
            "The delay alone separates fraud from legitimate labels (max(AUC, 1 − AUC) "
            f"{max(lab.delay_auc, 1 - lab.delay_auc):.3f}) when chargebacks come back sooner "
            "than the window for legitimate orders closes. That is why `label_known_at` is "
            "label metadata: the engine reads it only as the time a label may be seen, never "
            "as a feature."
        )
    rep.bullets(notes)
    fig, ax = figure()
    d, fraud = lab.delay_days, lab.delay_fraud
    bins = np.linspace(min(0.0, float(d.min())), float(d.max()) + 1e-9, 50)
    for mask, name in ((~fraud, "legitimate"), (fraud, "fraud")):
        if mask.any():
            w = np.full(int(mask.sum()), 1.0 / mask.sum())
            ax.hist(d[mask], bins=bins, weights=w, histtype="step", linewidth=1.5, label=name)
    ax.axvline(lab.horizon_days, color="grey", linestyle="--", linewidth=1, label="horizon")
    ax.set_xlabel("days from order to label")
    ax.set_ylabel("share of the class's labels")
    ax.legend()
    rep.figure("label-delay", fig, "Label delay per class")


def _duplicates(rep: Report, r: AuditResult) -> None:
    rep.heading("Duplicate order ids")
    d = r.duplicates
    text = (
        f"{_ids(d.ids)} more than once: {d.extra_rows:,} rows repeat an id seen on an earlier row."
        if d.ids
        else "Every order id is unique."
    )
    if d.empty:
        text += f" {d.empty:,} rows have no order id."
    rep.para(text)
    if d.examples:
        rep.table(
            ["order_id", "rows (first three)"],
            [[i, ", ".join(map(str, rows))] for i, rows in d.examples],
        )


def _volume(rep: Report, r: AuditResult) -> None:
    rep.heading("Volume per day")
    v = r.volume
    rep.para(
        f"Orders per UTC day: median {v.median:,.0f}, fewest {int(v.per_day.min()):,}, most "
        f"{int(v.per_day.max()):,}. Longest gap between two orders: {v.gap_hours:.1f} hours, "
        f"from {v.gap_from}. Rows older than the row before them: {v.out_of_order:,}."
    )
    flagged = [(d, 0, "no orders") for d in v.missing] + [
        (d, n, "far below the typical volume") for d, n in v.low
    ]
    flagged.sort()
    if flagged:
        rep.table(["day", "orders", "finding"], [list(f) for f in flagged[:SHOWN_DAYS]])
        if len(flagged) > SHOWN_DAYS:
            rep.para(f"… and {len(flagged) - SHOWN_DAYS} more.")
    fig, ax = figure()
    x = np.arange(v.per_day.size)
    bad = np.zeros(x.size, np.bool_)
    first = np.datetime64(v.first_day)
    for d, *_ in flagged:
        bad[int((np.datetime64(d) - first).astype(int))] = True
    ax.bar(x, v.per_day, color=np.where(bad, "tab:red", "tab:blue"), width=0.9)
    ax.axhline(
        checks.LOW_DAY_FRACTION * v.median,
        color="grey",
        linestyle="--",
        linewidth=1,
        label=f"{checks.LOW_DAY_FRACTION:g} × median",
    )
    ticks = x[:: max(1, x.size // 8)]
    ax.set_xticks(ticks, [v.day(int(k)) for k in ticks], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("orders")
    ax.legend()
    rep.figure("volume-per-day", fig, "Orders per day (flagged days in red)")


def _entities(rep: Report, r: AuditResult) -> None:
    rep.heading("Entities")
    rep.para(
        "The identifiers the engine keeps velocity for. *Top value* is the most frequent "
        f"one; on {_pct(checks.PLACEHOLDER_SHARE)} of all orders or more it is probably a "
        "placeholder (e-mail domains excepted)."
    )
    head = [
        "column",
        "orders with one",
        "distinct",
        "seen once",
        *(f"p{round(100 * q)}" for q in checks.QUANTILES),
        "max",
        "top value",
        "top share",
    ]
    rows = [
        [e.column, e.rows, e.distinct, _pct(e.once), *e.quantiles, e.top, _pct(e.top_share)]
        for e in r.entities
    ]
    rep.para("Orders per entity at the quantiles:")
    rep.table(head, rows, digits=0)


def _balance(rep: Report, r: AuditResult) -> None:
    rep.heading("Class balance")
    lab = r.labels
    if not lab.labelled:
        rep.para("No labels.")
        return
    rep.para(
        f"Fraud share of labelled orders: {_pct(lab.frauds / lab.labelled)} "
        f"({lab.frauds:,} of {lab.labelled:,}). Per week (Monday to Sunday, UTC):"
    )
    rows = [[w.start, w.orders, w.labelled, w.frauds, _pct(w.fraud_share)] for w in r.weeks]
    rep.table(["week from", "orders", "labelled", "frauds", "fraud share"], rows)


def _leaks(rep: Report, r: AuditResult) -> None:
    rep.heading("Columns that leak the label")
    rep.para(
        "Each column alone, over labelled rows: numbers and times by rank AUC (or by whether "
        "they have a value at all, when that separates better), text by an out-of-fold "
        f"target encoding ({checks.TE_FOLDS} folds). Flagged when max(AUC, 1 − AUC) ≥ "
        f"{checks.LEAK_AUC:g}: no order-time signal separates fraud that well, so such a "
        "column was almost surely written once the outcome was known."
    )
    rep.para(
        "Identifiers (device, customer, address, card) score high when fraud repeats on the "
        "same one: that is the signal the engine's label windows read, from labels as they "
        "became known, not a leak."
    )
    if r.leaks:
        rep.table(
            ["column", "method", "AUC", "max(AUC, 1 − AUC)", "rows", "leaks"],
            [
                [k.column, k.method, k.auc, k.strength, k.rows, "**yes**" if k.flagged else ""]
                for k in r.leaks
            ],
        )
    if r.not_checked:
        rep.para(
            "Not checked: "
            + "; ".join(f"`{n}` ({why})" for n, why in r.not_checked)
            + ". `is_fraud` and `label_known_at` are the label and when it became known: what "
            "the engine learns and when it may see it, never a feature."
        )


def _groups(rep: Report, r: AuditResult) -> None:
    rep.heading("Feature groups")
    rep.para(
        "The engine's features (`engine.features.matrix.FEATURE_NAMES`) by the input they "
        "need. *Complete* is the least complete input column (label coverage for the "
        "label windows)."
    )
    rows = [
        [
            v.group.name,
            len(v.group.features),
            v.group.gives,
            ", ".join(v.group.needs),
            _pct(v.complete),
            f"**{v.verdict}**",
            v.reason,
        ]
        for v in r.groups
    ]
    rep.table(
        ["group", "features", "gives the model", "needs", "complete", "verdict", "reason"], rows
    )


def _rules(rep: Report) -> None:
    rep.heading("How this audit decides")
    g = groups
    rep.bullets(
        [
            f"Usable: every input column complete on ≥ {_pct(g.USABLE_COMPLETENESS)} of the "
            f"orders it applies to; degraded down to {_pct(g.DEGRADED_COMPLETENESS)}; "
            "unusable below, or when a column is missing, of a type the engine does not "
            "read, or leaks the label.",
            f"Label windows: degraded when under {_pct(g.MIN_LABEL_COVERAGE)} of settled "
            f"orders are labelled, under {_pct(g.MIN_LABEL_TIME_SHARE)} of labels have "
            f"`label_known_at`, fewer than {g.MIN_FRAUD_LABELS} fraud labels known by the "
            "last order, any label known "
            f"before its order, or under {_pct(g.MIN_FRAUD_IN_HORIZON)} of fraud labels "
            "known within the horizon.",
            f"A day is far below the typical volume under {checks.LOW_DAY_FRACTION:g} × the "
            "median day (first and last day not judged).",
            f"An identifier on ≥ {_pct(checks.PLACEHOLDER_SHARE)} of orders (and at least "
            f"{checks.PLACEHOLDER_MIN_ORDERS}) is probably a placeholder.",
            f"A column leaks the label at max(AUC, 1 − AUC) ≥ {checks.LEAK_AUC:g}, given "
            f"≥ {checks.LEAK_MIN_CLASS_ROWS} labelled rows of each class.",
        ]
    )
