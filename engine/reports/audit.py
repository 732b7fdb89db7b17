"""`ordersight audit data`: is an order history ready for the engine? A report folder
(Markdown + PNG) for the data owner, read before a rollout.

`audit` reads the history column by column (`engine.reports.audit_input`), runs the checks
(`engine.reports.audit_checks`), judges each feature group (`engine.reports.audit_groups`)
and writes the report (`engine.reports.audit_report`); it returns an `AuditResult`, so a
caller (or a test) reads the findings without parsing the Markdown.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import InvalidInput
from engine.features.velocity import LABEL_WINDOWS_S
from engine.orders.schema import ENTITY_COLUMNS, HISTORY_SCHEMA, ORDER_FIELDS
from engine.reports import audit_checks as checks
from engine.reports.audit_groups import CARD_ONLY, Facts, Verdict, verdicts
from engine.reports.audit_input import (
    CSV_PASS_BYTES,
    LABEL,
    LABEL_TIME,
    Column,
    HistoryFile,
    column,
    labels_of,
    present_mask,
)

DEFAULT_OUT = "reports/audit"
DEFAULT_HORIZON_DAYS = float(LABEL_WINDOWS_S[-1] / checks.DAY_S)
"""The engine's longest label window: labels are expected within it unless the data owner
says their chargeback window is longer (`--label-horizon-days`)."""
LABEL_METADATA = (LABEL, LABEL_TIME)
"""The label and the time it became known: what is learnt and when it may be seen, so not
candidates for the leak check (the engine never reads them as features)."""


@dataclass
class ColumnReport:
    name: str
    file_type: str
    expected: str | None
    problem: str | None
    non_null: float
    present: float
    """Share of all rows with a value (not null, NaN, blank text nor an empty list)."""
    scope: str = ""
    scoped: float = math.nan
    """Share of the rows in `scope` with a value, when the column applies to some only."""
    note: str = ""


@dataclass
class AuditResult:
    path: Path
    csv: bool
    rows: int
    horizon_days: float
    columns: list[ColumnReport]
    labels: checks.Labels
    duplicates: checks.Duplicates
    volume: checks.Volume
    entities: list[checks.Entity]
    weeks: list[checks.Week]
    leaks: list[checks.Leak]
    """Every column checked, the strongest first."""
    not_checked: list[tuple[str, str]]
    """Columns left out of the leak check, with the reason."""
    groups: list[Verdict]
    blockers: list[str]
    """What makes `ordersight train` refuse the file as it is."""
    first: str = ""
    last: str = ""
    report: Path | None = None
    missing_columns: list[str] = field(default_factory=list)
    """Engine columns the file does not have."""

    @property
    def leaking(self) -> list[str]:
        return [k.column for k in self.leaks if k.flagged]

    def verdict(self, group: str) -> Verdict:
        return next(v for v in self.groups if v.group.name == group)


class _Scan:
    """Per-column results, gathered as the columns are read (one pass each)."""

    def __init__(self, y: np.ndarray | None, card: np.ndarray | None) -> None:
        self.leak = checks.LeakScan(y) if y is not None else None
        self.card = card
        self.reports: list[ColumnReport] = []
        self.facts: dict[str, Facts] = {}
        self.entities: dict[str, checks.Entity] = {}
        self.leaks: list[checks.Leak] = []
        self.not_checked: list[tuple[str, str]] = []
        self.duplicates: checks.Duplicates | None = None

    def add(self, col: Column, raw: pa.ChunkedArray) -> None:
        n = col.present.size
        rep = ColumnReport(
            col.name,
            col.file_type,
            col.expected,
            col.problem,
            (n - col.null_count) / n,
            float(col.present.mean()),
            note=col.note,
        )
        complete = rep.present
        if col.name in CARD_ONLY and self.card is not None and self.card.any():
            rep.scope, rep.scoped = "card payments", float(col.present[self.card].mean())
            complete = rep.scoped
        self.reports.append(rep)
        text = col.text
        if text is None and col.name in ENTITY_COLUMNS + ("order_id",):
            text = _as_text(raw)
        if col.name == "order_id" and text is not None:
            self.duplicates = checks.duplicates(text, col.present)
        ent = None
        if col.name in ENTITY_COLUMNS and text is not None:
            ent = self.entities[col.name] = checks.entity(col.name, text, col.present)
        leak = self._leak(col)
        if col.expected is not None:
            f = Facts(True, complete, col.problem, rep.scope, leak=leak)
            if ent is not None and ent.placeholder:
                f.placeholder = (
                    f"the value {ent.top!r} is on {100 * ent.top_share:.1f}% of orders: "
                    "probably a placeholder for a missing value, which the engine would "
                    "count as one busy entity"
                )
            if col.items is not None:
                cats = col.items.flatten().field("category")
                f.lines_complete = float(present_mask(cats).mean()) if len(cats) else 0.0
            self.facts[col.name] = f

    def _leak(self, col: Column) -> checks.Leak | None:
        if col.name in LABEL_METADATA:
            self.not_checked.append((col.name, "label metadata, not a candidate"))
            return None
        if self.leak is None or not self.leak.ok:
            self.not_checked.append((col.name, "needs labels of both classes"))
            return None
        if col.numbers is not None:
            found = self.leak.numeric(col.name, col.numbers)
        elif col.text is not None:
            found = self.leak.text(col.name, col.text, col.present)
        elif col.items is not None:
            lines = pc.fill_null(pc.list_value_length(col.items), 0).to_numpy()
            found = self.leak.numeric(col.name, np.asarray(lines, np.float64))
            if found is not None:
                found.method += " (lines per order)"
        else:
            found = None
        if found is None:
            why = (
                "too few labelled rows with a value"
                if col.kind != "other"
                else "a type the audit does not read"
            )
            self.not_checked.append((col.name, why))
            return None
        self.leaks.append(found)
        return found


def _as_text(raw: pa.ChunkedArray) -> pa.Array | None:
    """Identifiers stored as numbers, as text; None for a type that has no text form."""
    try:
        return raw.combine_chunks().cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _blockers(scan: _Scan, names: list[str]) -> list[str]:
    out = []
    for f in ORDER_FIELDS:
        if f.required and f.column not in names:
            out.append(f"required column '{f.column}' is missing")
    for rep in scan.reports:
        if rep.expected is None:
            continue
        if rep.problem:
            out.append(f"'{rep.name}': {rep.problem}")
        required = next((f.required for f in ORDER_FIELDS if f.column == rep.name), False)
        if required and rep.present < 1.0:
            out.append(f"required column '{rep.name}' is empty on {1 - rep.present:.2%} of rows")
    return out


def audit(
    orders: str | Path,
    out: str | Path | None = DEFAULT_OUT,
    horizon_days: float = DEFAULT_HORIZON_DAYS,
    csv_pass_bytes: int = CSV_PASS_BYTES,
) -> AuditResult:
    """Audit the history at `orders`; write the report to `out` unless it is None.
    `csv_pass_bytes` bounds the CSV text read per pass (`HistoryFile.passes`)."""
    src = HistoryFile(orders, csv_pass_bytes)
    where = str(src.path)
    core = ["created_at"] + [n for n in (LABEL, LABEL_TIME, "payment_method") if n in src.names]
    raw = src.read(core)
    cols = {n: column(n, raw[n], src.is_csv, where) for n in core}
    t = cols["created_at"].numbers
    assert t is not None  # column() refuses a created_at that is not a time
    y = labels_of(cols[LABEL], where) if LABEL in cols else None
    known = cols[LABEL_TIME].numbers if LABEL_TIME in cols else None
    card = None
    pay = cols.get("payment_method")
    if pay is not None and pay.text is not None and pay.present.mean() >= 0.5:
        card = np.asarray(pc.fill_null(pc.equal(pay.text, "card"), False), np.bool_)
    scan = _Scan(y, card)
    for name in core:
        scan.add(cols.pop(name), raw.pop(name))
    rest = [n for n in src.names if n not in core]
    for names in src.passes(rest):
        raw = src.read(names)
        for n in names:
            scan.add(column(n, raw[n], src.is_csv, where), raw.pop(n))
    order = {n: k for k, n in enumerate(src.names)}
    scan.reports.sort(key=lambda r: order[r.name])
    missing = [f.name for f in HISTORY_SCHEMA if f.name not in src.names]
    for n in missing:
        scan.facts[n] = Facts(False, 0.0)
    lab = checks.labels(t, y, known, horizon_days)
    assert scan.duplicates is not None  # order_id is a required column
    result = AuditResult(
        path=src.path,
        csv=src.is_csv,
        rows=int(t.size),
        horizon_days=horizon_days,
        columns=scan.reports,
        labels=lab,
        duplicates=scan.duplicates,
        volume=checks.volume(t),
        entities=[scan.entities[c] for c in ENTITY_COLUMNS if c in scan.entities],
        weeks=checks.weeks(t, y),
        leaks=sorted(scan.leaks, key=lambda k: -k.strength),
        not_checked=scan.not_checked,
        groups=verdicts(scan.facts, lab, src.is_csv),
        blockers=_blockers(scan, src.names),
        first=checks.iso_time(float(t.min())),
        last=checks.iso_time(float(t.max())),
        missing_columns=missing,
    )
    if out is not None:
        write(result, out)
    return result


def write(result: AuditResult, out: str | Path) -> Path:
    """Write the report folder for `result`; the Markdown's path (also `result.report`)."""
    from engine.reports.audit_report import render

    result.report = render(result, Path(out)).write()
    return result.report


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--orders",
        required=True,
        metavar="FILE",
        help="order history, Parquet or CSV by suffix (what `ordersight train` reads)",
    )
    p.add_argument(
        "--out", default=DEFAULT_OUT, metavar="DIR", help=f"report folder (default {DEFAULT_OUT})"
    )
    p.add_argument(
        "--label-horizon-days",
        default=str(DEFAULT_HORIZON_DAYS),
        metavar="N",
        help="days after an order by which its label should be known (default "
        f"{DEFAULT_HORIZON_DAYS:g}, the engine's longest label window); label coverage is "
        "judged on orders older than this",
    )


def run(args: argparse.Namespace) -> int:
    try:
        horizon = float(args.label_horizon_days)
    except ValueError:
        horizon = math.nan
    if not (math.isfinite(horizon) and horizon > 0):
        raise InvalidInput(
            f"--label-horizon-days must be a number of days > 0, is {args.label_horizon_days!r}",
            "label_horizon_days",
        )
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InvalidInput(f"--out {out}: exists and is not a folder", "out")
    result = audit(args.orders, None, horizon)
    try:
        path = write(result, out)
    except OSError as exc:
        raise InvalidInput(f"--out {out}: cannot write the report: {exc}", "out") from exc
    print(path)
    return 0
