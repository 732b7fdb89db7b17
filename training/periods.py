"""Training's periods in time: point-in-time labels, the last mature day, and the split into
training, validation and held-out orders."""

from __future__ import annotations

import datetime as dt

import numpy as np

from engine.codec.history import DAY_S
from engine.errors import InvalidInput

MATURE_SHARE = 0.9  # with --as-of: a day trains once this share of its orders is labelled


def parse_moment(s: str | None, end: bool, field: str) -> float | None:
    """Epoch seconds of YYYY-MM-DD (its start, or its end with `end`) or of an ISO
    datetime (UTC unless it names its offset)."""
    if s is None:
        return None
    try:
        if len(s) == 10:
            d = dt.date.fromisoformat(s)
            start = dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp()
            return start + DAY_S if end else start
        moment = dt.datetime.fromisoformat(s)
    except ValueError as exc:
        raise InvalidInput(
            f"--{field.replace('_', '-')} must be YYYY-MM-DD or an ISO datetime, is {s!r}", field
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def point_in_time(labels: np.ndarray, known_at: np.ndarray, as_of: float | None) -> np.ndarray:
    """The labels as they stood at `as_of`: a label known later is unknown (-1)."""
    if as_of is None:
        return labels
    with np.errstate(invalid="ignore"):
        return np.where(known_at <= as_of, labels, np.int8(-1)).astype(np.int8)


def mature_until(t: np.ndarray, labels_then: np.ndarray, lo: float, as_of: float) -> float:
    """End of the last whole day before `as_of` (from `lo`) of which at least MATURE_SHARE
    of the orders had a known label at `as_of`: later orders' legitimate labels are mostly
    still to come, and training on them would over-represent the early-labelled frauds."""
    day = np.floor((t - lo) / DAY_S).astype(np.int64)
    inside = (t >= lo) & (t < as_of)
    if not inside.any():
        raise InvalidInput("no order lies between --train-from and --as-of", "as_of")
    n = np.bincount(day[inside])
    known = np.bincount(day[inside], weights=(labels_then[inside] >= 0).astype(float))
    share = np.divide(known, n, out=np.zeros_like(known), where=n > 0)
    ok = np.flatnonzero((share >= MATURE_SHARE) & (lo + (np.arange(n.size) + 1) * DAY_S <= as_of))
    if not ok.size:
        raise InvalidInput(
            f"no day before --as-of has {MATURE_SHARE:.0%} of its orders labelled by then "
            "(labels mature later): give an earlier --train-to or a later --as-of",
            "as_of",
        )
    return lo + (int(ok[-1]) + 1) * DAY_S


def split(
    t: np.ndarray,
    labels: np.ndarray,
    train_from: float | None,
    train_to: float | None,
    *,
    labels_then: np.ndarray | None = None,
    as_of: float | None = None,
):
    """Masks (train, valid, test) over the history's rows. Training and validation take the
    labels known at `as_of` (`labels_then`); the held-out period starts at `as_of` when
    given (else at train_to) and is scored with the final `labels`."""
    labels_then = labels if labels_then is None else labels_then
    lo = t.min() if train_from is None else train_from
    if as_of is not None and train_to is not None and train_to > as_of:
        raise InvalidInput("--train-to must not be after --as-of", "train_to")
    if train_to is not None:
        hi = train_to
    elif as_of is not None:
        hi = mature_until(t, labels_then, lo, as_of)
    else:  # without train_to, the last fifth of the history is held out
        hi = t.min() + 0.8 * (t.max() - t.min())
    known = labels_then >= 0
    in_range = (t >= lo) & (t < hi) & known
    cut = lo + 0.8 * (hi - lo)
    train = in_range & (t < cut)
    valid = in_range & (t >= cut)
    test = (t >= (hi if as_of is None else as_of)) & (labels >= 0)
    for name, m, y in (
        ("training", train, labels_then),
        ("validation", valid, labels_then),
        ("held-out", test, labels),
    ):
        if y[m].sum() < 5 or (y[m] == 0).sum() < 5:
            raise InvalidInput(
                f"the {name} period has too few labelled orders of each class "
                f"({int(y[m].sum())} fraud, {int((y[m] == 0).sum())} legitimate); "
                "widen --train-from/--train-to, move --as-of or supply a longer history",
                "train_to",
            )
    return train, valid, test
