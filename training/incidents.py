"""A multi-week order stream with injected operational incidents, for the anomaly detector.

`simulate_stream` draws per-bucket counts for four channels: orders with a daily cycle
(quiet nights, lunch and evening peaks; the phone channel keeps office hours), a weekly
cycle (busier weekends; weekend mornings start an hour later, a shape the detector's
daily-times-weekly baseline does not model exactly), a slow trend, day-to-day level swings
and per-bucket overdispersion. Declines, escalations and fallbacks are binomial shares of
the orders, higher at night; checkout error events per code are Poisson in proportion to
traffic.

Incidents carry ground-truth windows and the series that legitimately show them:

- `outage`: the web integration fails, web orders fall to ~2% for 90 min.
- `partial_drop`: web orders fall to ~50% for 3 h.
- `error_storm`: app `PAYMENT_TIMEOUT` errors at 25 times their rate for 1 h.
- `fraud_burst`: card-testing orders on web for 2 h at night, most declined or escalated.
- `holiday`: a whole day at 60% volume on every channel. Not an incident: an alert during
  it is a false alarm.

`iter_events` expands the counts to the per-order and per-error rows `StreamMonitor`
consumes, with times spread over each bucket.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

CHANNELS = ("web", "app", "marketplace", "phone")
CHANNEL_SHARE = np.array([0.50, 0.30, 0.15, 0.05])
WEEKEND_FACTOR = np.array([1.20, 1.25, 1.10, 0.30])  # Saturday and Sunday volume
CODES = (
    "PAYMENT_TIMEOUT",
    "CARD_DECLINED_BY_PSP",
    "ADDRESS_INVALID",
    "THREE_DS_FAILED",
    "INVENTORY_UNAVAILABLE",
)
CODE_RATE = np.array([0.003, 0.008, 0.002, 0.005, 0.001])  # error events per order
DAY = 86400.0
HOUR = 3600.0


@dataclass(frozen=True)
class Incident:
    name: str
    start: float  # epoch seconds
    end: float
    series: tuple[str, ...]  # series that legitimately show it; empty: every series
    kind: str  # "drop" or "spike": how those series show it
    is_incident: bool = True  # False for the holiday


@dataclass(frozen=True)
class Stream:
    """Per-bucket counts; arrays are (buckets, channels) or (buckets, channels, codes)."""

    t0: float
    bucket_s: float
    orders: np.ndarray
    declines: np.ndarray
    escalations: np.ndarray
    fallbacks: np.ndarray
    errors: np.ndarray
    clean_orders: np.ndarray  # expected orders without incidents or the holiday
    incidents: tuple[Incident, ...]

    @property
    def n_buckets(self) -> int:
        return int(self.orders.shape[0])

    @property
    def bucket_start(self) -> np.ndarray:
        return self.t0 + self.bucket_s * np.arange(self.n_buckets)

    def series(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Every series as `StreamMonitor` names it: (value, exposure) per bucket."""
        one = np.ones(self.n_buckets)
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for c, ch in enumerate(CHANNELS):
            n = self.orders[:, c].astype(np.float64)
            out[f"orders{{channel={ch}}}"] = (n, one)
            out[f"decline_rate{{channel={ch}}}"] = (self.declines[:, c].astype(np.float64), n)
            out[f"escalation_rate{{channel={ch}}}"] = (self.escalations[:, c].astype(np.float64), n)
            out[f"fallbacks{{channel={ch}}}"] = (self.fallbacks[:, c].astype(np.float64), one)
            for k, code in enumerate(CODES):
                key = f"errors{{channel={ch},code={code}}}"
                out[key] = (self.errors[:, c, k].astype(np.float64), one)
        return out


def _daily_shape(hour: np.ndarray, channel: int) -> np.ndarray:
    """Relative order rate by local hour (mean about 1 over a day)."""

    def bump(center: float, width: float) -> np.ndarray:
        d = (hour - center + 12.0) % 24.0 - 12.0
        return np.exp(-0.5 * (d / width) ** 2)

    if channel == 3:  # phone: office hours
        return 0.05 + 2.6 * bump(11.0, 2.0) + 2.2 * bump(15.5, 1.8)
    evening = (1.0, 1.6, 0.8)[channel]
    return 0.12 + 1.0 * bump(12.5, 2.2) + evening * bump(20.5, 2.0) + 0.5 * bump(9.5, 1.5)


def simulate_stream(
    weeks: int = 5,
    *,
    seed: int = 7,
    bucket_s: float = 300.0,
    orders_per_day: float = 40_000.0,
    start: datetime = datetime(2024, 3, 4, tzinfo=UTC),  # a Monday
) -> Stream:
    """Counts for `weeks` weeks from `start`, with the five scheduled incidents.

    Incidents are placed from the second week on, so a detector has a week to learn the
    weekly cycle first: Wednesday of week 2, Tuesday and Friday of week 3, Thursday (the
    holiday) and Saturday of week 4; a fifth week stays clean. Needs `weeks >= 4`.
    """
    if weeks < 4:
        raise ValueError(f"weeks must be >= 4 to hold every incident, is {weeks}")
    rng = np.random.default_rng(seed)
    t0 = start.timestamp()
    B = int(round(weeks * 7 * DAY / bucket_s))
    t = t0 + bucket_s * (np.arange(B) + 0.5)
    days = (t - t0) // DAY
    dow = (days % 7).astype(np.int64)
    weekend = dow >= 5
    hour = ((t - t0) % DAY) / HOUR
    per_bucket = orders_per_day * bucket_s / DAY
    # Day-to-day level swings and a slow trend, shared by the channels of a day.
    day_level = np.exp(rng.normal(0.0, 0.04, int(days.max()) + 1))[days.astype(np.int64)]
    trend = 1.0 + 0.01 * (t - t0) / (7 * DAY)
    mean = np.empty((B, len(CHANNELS)))
    for c in range(len(CHANNELS)):
        # Weekend mornings start later: the shape is delayed by up to an hour around 9:30,
        # not at night, so the week stays continuous across midnight.
        late = np.exp(-0.5 * (((hour - 9.5 + 12.0) % 24.0 - 12.0) / 2.5) ** 2)
        shape = _daily_shape(hour - np.where(weekend, late, 0.0), c)
        norm = _daily_shape(np.linspace(0, 24, 289)[:-1], c).mean()
        week = np.where(weekend, WEEKEND_FACTOR[c], 1.0)
        mean[:, c] = per_bucket * CHANNEL_SHARE[c] * shape / norm * week * day_level * trend
    clean = mean.copy()

    def window(day: int, h0: float, h1: float) -> tuple[float, float, np.ndarray]:
        a, b = t0 + day * DAY + h0 * HOUR, t0 + day * DAY + h1 * HOUR
        return a, b, (t >= a) & (t < b)

    incidents = []
    factor = np.ones_like(mean)
    a, b, m = window(9, 14.0, 15.5)
    factor[m, 0] = 0.02
    incidents.append(Incident("outage", a, b, ("orders{channel=web}",), "drop"))
    a, b, m = window(15, 10.0, 13.0)
    factor[m, 0] = 0.5
    incidents.append(Incident("partial_drop", a, b, ("orders{channel=web}",), "drop"))
    a, b, m = window(24, 0.0, 24.0)
    factor[m] *= 0.6
    incidents.append(Incident("holiday", a, b, (), "drop", is_incident=False))
    mean *= factor
    overdispersion = rng.gamma(400.0, 1.0 / 400.0, mean.shape)  # 5% extra noise per bucket
    orders = rng.poisson(mean * overdispersion)
    night = (hour < 6.0) | (hour >= 23.0)
    p_decline = np.where(night, 0.04, 0.025)[:, None] * np.ones(len(CHANNELS))
    p_escalate = np.where(night, 0.12, 0.09)[:, None] * np.ones(len(CHANNELS))
    declines = rng.binomial(orders, p_decline)
    escalations = rng.binomial(orders, p_escalate)
    fallbacks = rng.binomial(orders, 0.004)
    err_mean = clean[:, :, None] * factor[:, :, None] * CODE_RATE[None, None, :]

    a, b, m = window(18, 19.0, 20.0)
    err_mean[m, 1, 0] *= 25.0
    storm = ("errors{channel=app,code=PAYMENT_TIMEOUT}",)
    incidents.append(Incident("error_storm", a, b, storm, "spike"))
    errors = rng.poisson(err_mean)

    a, b, m = window(26, 1.0, 3.0)
    fraud = rng.poisson(0.6 * clean[m, 0])  # card testing: 60% more web orders at night
    orders[m, 0] += fraud
    declines[m, 0] += rng.binomial(fraud, 0.6)
    escalations[m, 0] += rng.binomial(fraud, 0.95)
    fraud_series = ("orders", "decline_rate", "escalation_rate")
    incidents.append(
        Incident("fraud_burst", a, b, tuple(f"{s}{{channel=web}}" for s in fraud_series), "spike")
    )
    incidents.sort(key=lambda i: i.start)
    return Stream(
        t0, bucket_s, orders, declines, escalations, fallbacks, errors, clean, tuple(incidents)
    )


@dataclass(frozen=True)
class BucketEvents:
    """The rows of one bucket, as `StreamMonitor.observe_orders/observe_events` take them."""

    end: float
    order_t: np.ndarray
    order_channel: np.ndarray
    declined: np.ndarray
    escalated: np.ndarray
    fallback: np.ndarray
    error_t: np.ndarray
    error_channel: np.ndarray
    error_code: np.ndarray


def iter_events(stream: Stream, seed: int = 0) -> Iterator[BucketEvents]:
    """Each bucket's counts as individual rows at uniform random times within the bucket."""
    rng = np.random.default_rng(seed)
    channels = np.array(CHANNELS)
    codes = np.array(CODES)
    C, K = len(CHANNELS), len(CODES)
    for b in range(stream.n_buckets):
        t0 = stream.t0 + b * stream.bucket_s
        n = stream.orders[b]
        ch = np.repeat(np.arange(C), n)
        rank = np.arange(ch.size) - np.repeat(np.cumsum(n) - n, n)  # position within channel
        err = stream.errors[b].ravel()
        pair = np.repeat(np.arange(C * K), err)
        yield BucketEvents(
            end=t0 + stream.bucket_s,
            order_t=t0 + stream.bucket_s * rng.random(ch.size),
            order_channel=channels[ch],
            declined=rank < stream.declines[b][ch],
            escalated=rank < stream.escalations[b][ch],
            fallback=rank >= n[ch] - stream.fallbacks[b][ch],
            error_t=t0 + stream.bucket_s * rng.random(pair.size),
            error_channel=channels[pair // K],
            error_code=codes[pair % K],
        )
