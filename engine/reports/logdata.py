"""What the governance reports read: a decision log folder's decisions as one pandas frame,
the outcomes as one label per order (label-delay aware), and the segments of each order.

Decisions are the log's `decision` rows (the champion's, one per order: a repeated order id
keeps its first decision, the one that was acted on). Their arm is `control` when the
pilot's control group decided them (fallback cause CONTROL_GROUP: the rules alone), else
`model`. Challenger rows are kept apart; they join a decision on seq and order_id.

Labels (`attach_labels`): at `as_of`, only outcomes known by then exist. An order is fraud if
any of its outcomes says fraud, else legitimate if one says legitimate. With no outcome:

- a DECLINE (the champion's action, the one acted on) is *censored*, whatever its age: a
  declined order never ships, so no chargeback can ever come; its silence says nothing, and
  neither fraud nor legitimate is known. Every label-dependent figure counts known labels
  only and shows the censored beside them (as a count, and as bounds: what the figure would
  be if every censored order were fraud, or every one legitimate);
- a REVIEW or APPROVE counts as legitimate once it is older than the label horizon, and is
  *immature* before (left out of every label-dependent rate: chargebacks arrive weeks after
  the order, so a young order without one says nothing yet).

Outcomes naming no logged order are counted and listed, never dropped silently.

Segments (`segment_columns`): whether the engine had seen the customer before (the velocity
features are read *before* the order is added, so `customer_id.age_days` is NaN exactly when
the engine's state held no earlier order of this customer: its first order since the state
began, or since the customer's slot was evicted; the decayed `cnt_30d` is not used, it is
near zero for a customer back after months), the account's age, channel, amount band (major
units of the order's own currency, no FX conversion, as the policy's `high_value` is) and
billing country. The log keeps countries only as keys, but country keys are the unkeyed
FNV-1a of the ISO 3166 code (`engine.orders.hashing`: not personal data, so not keyed by the
hash secret), so hashing every ISO 3166-1 alpha-2 code with the same function reverses them;
no secret is needed.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import InvalidInput

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

FRAUD, LEGITIMATE, IMMATURE, CENSORED = 1, 0, -1, -2
"""Values of the `label` column (KNOWN: fraud or legitimate)."""
KNOWN = (FRAUD, LEGITIMATE)
CONTROL_CAUSE = "CONTROL_GROUP"
FIRST_ORDER_FEATURE = "customer_id.age_days"
ACCOUNT_AGE_FEATURE = "account_age_days"
AMOUNT_BANDS = ((50.0, "<50"), (200.0, "50–200"), (1000.0, "200–1000"), (np.inf, "≥1000"))
ACCOUNT_AGE_BANDS = ((1.0, "<1 day"), (30.0, "1–30 days"), (365.0, "30–365 days"),
                     (np.inf, "≥365 days"))  # fmt: skip
NONE = "(none)"
_LOG_COLUMNS = ("seq", "order_id", "customer_id", "created_at", "amount", "currency",
                "channel", "score", "action", "path", "fallback_cause", "model_version",
                "champion_version", "challenger_version")  # fmt: skip
_MANY_VALUES = 20  # a numeric segment column with more distinct values is cut into quartiles


@dataclass
class LogData:
    """One log folder: `decisions` (a row per order), `challenger` (the shadow rows), the
    latest time in the log, and how many repeated decisions were set aside."""

    folder: Path
    decisions: pd.DataFrame
    challenger: pd.DataFrame
    latest: pd.Timestamp
    repeated: int


@dataclass
class OutcomeSummary:
    outcomes: int  # rows in the source
    after_as_of: int  # known after as-of: not counted
    unmatched: int  # known by as-of, naming no logged order
    unmatched_ids: list[str]

    def lines(self) -> list[str]:
        ids = ", ".join(f"`{i}`" for i in self.unmatched_ids)
        more = " …" if self.unmatched > len(self.unmatched_ids) else ""
        return [
            f"{self.outcomes:,} outcomes read; {self.after_as_of:,} known after as-of (not "
            "counted)",
            f"unmatched outcomes (no logged order): {self.unmatched:,}"
            + (f" — first: {ids}{more}" if self.unmatched else ""),
        ]


def parse_time(text: str | None, flag: str) -> pd.Timestamp | None:
    """A date or ISO 8601 time (UTC when no zone is given); InvalidInput naming `flag`."""
    import datetime as dt

    import pandas as pd

    if text is None:
        return None
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidInput(
            f"{flag}: {text!r} is not a date (YYYY-MM-DD) or an ISO 8601 time", flag
        ) from exc
    return pd.Timestamp(t if t.tzinfo else t.replace(tzinfo=dt.UTC)).tz_convert("UTC")


def add_log_arguments(p: argparse.ArgumentParser, outcomes: str) -> None:
    """--log, --outcomes (`outcomes`: "required", "optional"), --as-of, --label-horizon-days."""
    p.add_argument("--log", required=True, help="the decision log folder (log_dir)")
    p.add_argument(
        "--outcomes", required=outcomes == "required",
        help="outcomes: a Parquet or CSV file (order_id, kind, is_fraud, known_at, ...) "
        "or a store DSN" + ("" if outcomes == "required" else " (optional)"),
    )  # fmt: skip
    p.add_argument(
        "--as-of", help="count only outcomes known by this date/time (default: the latest time "
        "in the log)",
    )  # fmt: skip
    p.add_argument(
        "--label-horizon-days", type=float, default=60.0,
        help="an approved or reviewed order with no outcome counts as legitimate once this "
        "old at as-of; younger ones are immature (a declined one without an outcome is "
        "censored at any age) (default 60)",
    )  # fmt: skip


def read_log(folder_arg: str, features: tuple[str, ...] = ()) -> LogData:
    """The log folder's decisions and challenger rows, with the feature columns the
    segments need (FIRST_ORDER_FEATURE, ACCOUNT_AGE_FEATURE) and any of `features` the log
    has, read batch by batch so the full feature vectors are never all held at once
    (InvalidInput naming --log when it is not a folder or holds no decisions)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    from engine.decision_log import segments

    folder = Path(folder_arg)
    if not folder.is_dir():
        raise InvalidInput(f"--log: {folder} is not a folder", "--log")
    decisions, challenger, latest, any_batch = [], [], None, False
    wanted = (FIRST_ORDER_FEATURE, ACCOUNT_AGE_FEATURE, *features)
    for batch in segments.read_folder(folder):
        any_batch = True
        t = pc.max(batch.column("created_at")).as_py()
        latest = t if latest is None or (t is not None and t > latest) else latest
        kind = batch.column("kind")
        dec = batch.filter(pc.equal(kind, "decision"))
        if dec.num_rows:
            decisions.append(_decision_columns(dec, wanted))
        ch = batch.filter(pc.equal(kind, "challenger"))
        if ch.num_rows:
            challenger.append(ch.select(["seq", "order_id", "action", "score", "model_version"]))
    if not any_batch:
        raise InvalidInput(f"--log: {folder} holds no decision log segments", "--log")
    if not decisions:
        raise InvalidInput(f"--log: {folder} holds no decisions (kind 'decision')", "--log")
    frame = _decisions(pa.concat_tables(decisions, promote_options="permissive"))
    repeated = int(frame.duplicated("order_id").sum())
    frame = frame.drop_duplicates("order_id", keep="first").reset_index(drop=True)
    shadow = (
        pa.Table.from_batches(challenger).to_pandas()
        if challenger
        else pd.DataFrame(columns=["seq", "order_id", "action", "score", "model_version"])
    )
    return LogData(folder, frame, shadow, pd.Timestamp(latest), repeated)


def _decision_columns(dec: pa.RecordBatch, wanted: tuple[str, ...]) -> pa.Table:
    """One batch's decision rows: the report columns, the wanted features the batch's
    schema names, and the billing country key (from the replay record)."""
    import pyarrow as pa

    from engine.decision_log.records import replay_arrays

    names = json.loads((dec.schema.metadata or {}).get(b"ordersight.features", b"[]"))
    cols = {c: dec.column(c) for c in _LOG_COLUMNS}
    flat = dec.column("features").flatten().to_numpy(zero_copy_only=False)
    values = flat.reshape(dec.num_rows, -1)
    for name in wanted:
        if name in names and name not in cols:
            cols[name] = pa.array(values[:, names.index(name)])
    enc, _ = replay_arrays(dec.column("replay"))
    cols["billing_country_key"] = pa.array(enc.billing_country)
    return pa.table(cols)


def _decisions(table: pa.Table) -> pd.DataFrame:
    frame = table.to_pandas()
    frame["channel"] = frame["channel"].fillna(NONE).replace("", NONE)
    frame["arm"] = np.where(frame["fallback_cause"] == CONTROL_CAUSE, "control", "model")
    if FIRST_ORDER_FEATURE in frame:
        frame["first_seen"] = frame[FIRST_ORDER_FEATURE].isna()
    frame["billing_country"] = country_names(frame.pop("billing_country_key").to_numpy())
    frame["day"] = frame["created_at"].dt.floor("D")
    return frame


def country_names(keys: np.ndarray) -> np.ndarray:
    """ISO 3166 alpha-2 codes of country keys: every code hashed by the encoder's own
    function; 0 (no country given) is NONE, a key matching no code "other"."""
    import iso3166

    from engine.orders.hashing import COUNTRY_SALT, fnv

    table = {}
    for code in iso3166.countries_by_alpha2:
        buf = np.frombuffer(code.encode(), np.uint8)
        table[int(fnv(buf, 0, len(buf), COUNTRY_SALT))] = code
    uniq, inverse = np.unique(keys, return_inverse=True)
    names = np.array([NONE if k == 0 else table.get(int(k), "other") for k in uniq], object)
    return names[inverse]


def within(
    frame: pd.DataFrame, start: pd.Timestamp | None, end: pd.Timestamp | None
) -> pd.DataFrame:
    """Orders created in [start, end)."""
    keep = np.ones(len(frame), bool)
    if start is not None:
        keep &= (frame["created_at"] >= start).to_numpy()
    if end is not None:
        keep &= (frame["created_at"] < end).to_numpy()
    return frame.loc[keep].reset_index(drop=True)


def attach_labels(
    frame: pd.DataFrame, outcomes: pa.Table, logged_ids: Any, as_of: pd.Timestamp,
    horizon_days: float,
) -> tuple[pd.DataFrame, OutcomeSummary]:  # fmt: skip
    """`frame` with `label` (FRAUD, LEGITIMATE, IMMATURE, CENSORED: the module's rule),
    `has_outcome` and `label_at` (the known_at of the outcome that decided the label), and
    what happened to the outcomes.
    `logged_ids`: every order id of the log (an outcome is unmatched when it names none)."""
    import pandas as pd

    if not horizon_days > 0:
        raise InvalidInput(
            f"--label-horizon-days must be > 0, is {horizon_days}", "--label-horizon-days"
        )
    out = outcomes.select(["order_id", "is_fraud", "known_at"]).to_pandas()
    n_all = len(out)
    out = out[out["known_at"] <= as_of]
    matched = out["order_id"].isin(pd.Index(logged_ids))
    unmatched = out.loc[~matched, "order_id"].drop_duplicates()
    summary = OutcomeSummary(n_all, n_all - len(out), len(unmatched), unmatched.head(5).tolist())
    fraud_at = out[out["is_fraud"]].groupby("order_id")["known_at"].min()
    legit_at = out[~out["is_fraud"]].groupby("order_id")["known_at"].min()
    f = frame["order_id"].map(fraud_at)
    g = frame["order_id"].map(legit_at)
    frame = frame.copy()
    frame["has_outcome"] = f.notna() | g.notna()
    frame["label_at"] = f.where(f.notna(), g)
    old = frame["created_at"] + pd.Timedelta(days=horizon_days) <= as_of
    declined = frame["action"] == "DECLINE"
    frame["label"] = np.select(
        [f.notna(), g.notna(), declined, old],
        [FRAUD, LEGITIMATE, CENSORED, LEGITIMATE],
        IMMATURE,
    ).astype(np.int8)
    return frame, summary


def read_labels(
    args: argparse.Namespace, data: LogData, frame: pd.DataFrame
) -> tuple[pd.DataFrame, OutcomeSummary, pd.Timestamp]:
    """`attach_labels` with the command line's --outcomes, --as-of, --label-horizon-days.
    Orders created after as-of are left out (they did not exist then)."""
    from engine.store.tables import read_outcomes

    as_of = parse_time(args.as_of, "--as-of") or data.latest
    frame = frame.loc[(frame["created_at"] <= as_of).to_numpy()].reset_index(drop=True)
    outcomes = read_outcomes(args.outcomes)
    labelled, summary = attach_labels(
        frame, outcomes, data.decisions["order_id"], as_of, args.label_horizon_days
    )
    return labelled, summary, as_of


def segment_columns(
    frame: pd.DataFrame, extra: list[str], customers: str | None
) -> dict[str, pd.Series]:
    """Segment kind -> the segment of every row of `frame`: the default kinds (those the log
    can give), then each `extra` column, from the log's columns or features, or from the
    `customers` file (CSV or Parquet with customer_id) joined by customer_id."""
    out: dict[str, pd.Series] = {}
    if "first_seen" in frame:
        out["customer"] = frame["first_seen"].map({True: "first order seen", False: "returning"})
    if ACCOUNT_AGE_FEATURE in frame:
        out["account_age"] = band_of(frame[ACCOUNT_AGE_FEATURE], ACCOUNT_AGE_BANDS)
    out["channel"] = frame["channel"].astype(str)
    out["amount_band"] = band_of(frame["amount"], AMOUNT_BANDS)
    out["billing_country"] = frame["billing_country"].astype(str)
    table = read_customers(customers) if customers else None
    for col in extra:
        if col in out:
            continue
        if col in frame.columns:
            out[col] = as_categories(frame[col])
        elif table is not None and col in table.columns:
            joined = frame["customer_id"].map(table[col])
            out[col] = as_categories(joined)
        else:
            where = f"the log's columns and features, nor in {customers}" if customers else (
                "the log's columns and features (give --customers FILE for a column of yours)"
            )  # fmt: skip
            raise InvalidInput(f"--segment: no column {col!r} in {where}", "--segment")
    return out


def read_customers(path_arg: str) -> pd.DataFrame:
    """The customers file, indexed by customer_id (InvalidInput naming --customers, or the
    column and row)."""
    import pandas as pd

    path = Path(path_arg)
    if not path.is_file():
        raise InvalidInput(f"--customers: {path} is not a file", "--customers")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        table = pd.read_parquet(path)
    elif suffix == ".csv":
        table = pd.read_csv(path, dtype={"customer_id": str})
    else:
        raise InvalidInput(f"--customers: {path} is not .csv or .parquet", "--customers")
    if "customer_id" not in table.columns:
        raise InvalidInput(f"--customers: {path} has no column customer_id", "customer_id")
    ids = table["customer_id"]
    if ids.isna().any():
        row = int(np.flatnonzero(ids.isna().to_numpy())[0]) + 1
        raise InvalidInput(f"{path}: column customer_id, row {row}: empty", "customer_id")
    dup = ids.duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0]) + 1
        raise InvalidInput(
            f"{path}: column customer_id, row {row}: {ids.iloc[row - 1]!r} appears twice",
            "customer_id",
        )
    return table.set_index(ids.astype(str))


def band_of(values: pd.Series, bands: tuple[tuple[float, str], ...]) -> pd.Series:
    out = np.full(len(values), "unknown", object)
    v = values.to_numpy(np.float64)
    for upper, name in reversed(bands):
        out[v < upper] = name
    out[np.isnan(v)] = "unknown"
    import pandas as pd

    return pd.Series(out, index=values.index)


def as_categories(values: pd.Series) -> pd.Series:
    """A segment column as text: numbers with many distinct values cut into quartiles,
    missing values as "unknown"."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(values) and values.nunique() > _MANY_VALUES:
        cut = pd.qcut(values, 4, duplicates="drop")
        return cut.astype(str).where(values.notna(), "unknown")
    return values.astype(object).where(values.notna(), "unknown").astype(str)


_BAND_ORDER = {name: i for i, (_, name) in enumerate(AMOUNT_BANDS + ACCOUNT_AGE_BANDS)}


def segment_order(name: str) -> tuple[int, str]:
    """Sort key of segments: bands in their order, then by name, "unknown" last."""
    return (_BAND_ORDER.get(name, 100 if name not in ("unknown", NONE) else 101), name)


def rate(num: Any, den: Any) -> float:
    """num / den, NaN when den is 0 (a rate of nothing is not 0)."""
    return float(num) / float(den) if float(den) > 0 else float("nan")
