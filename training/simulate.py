"""Synthetic labelled order history for training the screener and the scorer.

`simulate` draws a customer population and lets it order for a number of days, then mixes in
five fraud scenarios whose intensity changes over the period. Every row carries the label
columns of `HISTORY_SCHEMA` plus a trailing `scenario` column naming what produced it.

Legitimate customers have a home country, an account age, 1-3 devices, 1-2 cards, 1-2
addresses, an email domain, a usual IP and a personal order rate and basket size. Orders follow
a daily cycle (quiet nights, evening peak) and a weekly cycle (busier weekends). Legitimate
noise keeps single features ambiguous: travel (IP country differs), gifts (new address, now
and then abroad), expats (card billed in another country), new devices and cards, occasional
big baskets, and first orders placed minutes to hours after sign-up.

Fraud scenarios and their signatures:

- `stolen_card`: a card never seen before, on a fresh or sleeper account (or, 30%, on an
  existing customer's account); billing is the victim's country, shipping and IP country
  sometimes elsewhere; electronics and gift cards, higher amounts; active around the clock.
- `card_testing`: bursts of 10-40 small one-line orders within minutes, one device and one
  hosting IP, 1-3 accounts (new or aged), a different new card on every order.
- `account_takeover`: an established customer (account older than 90 days) suddenly orders
  1-3 times from a new device, usually a foreign IP, a new shipping address, high value,
  paying with the saved card or wallet. Ramps up over the period.
- `drop_address`: a ring of 3-8 accounts without history sharing a few devices, each paying
  with its own new card, ships to one shared address over days. Starts after the first tenth
  of the period.
- `high_value_first_order`: an account opened minutes to hours before its first order, a new
  card, a high-value expedited basket, often an "urgent" note.
- `compromised_terminal`: a shared terminal (an in-store kiosk or a call-centre desk through
  which a share of customers order; its `device_id`) is compromised for two to five weeks.
  Orders are injected through it on its own customers' accounts and saved cards, sometimes
  to a new address, at ordinary amounts: nothing about one order gives it away, only the
  terminal's history once its first chargebacks have come back.
- `spending_jump`: a customer's payment credentials are stolen; for two weeks orders on the
  account (its own card, mostly its own device and address) spend several times what the
  customer usually does.

Labels: fraud rows become known at a chargeback days to weeks later (skewed early),
legitimate rows weeks later, once the chargeback window closes; a small share is never
labelled. Label times may lie after the simulated period: training must cut labels at its
own as-of time (`train --as-of`).

Every rate, population size and delay above is a field of `SimConfig`: `DEFAULT` is what the
engine is developed on; `SHIFTED` (`simulate --config shifted`) changes the fraud mix,
entity counts and label delays, and training is not tuned on it.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from engine.orders.schema import HISTORY_SCHEMA, ITEM_TYPE, TS

MINUTE = 60_000_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR

SCENARIOS = (
    "legit",
    "stolen_card",
    "card_testing",
    "account_takeover",
    "drop_address",
    "high_value_first_order",
    "compromised_terminal",
    "spending_jump",
)
HOME = ("US", "GB", "DE", "FR", "NL", "ES", "IT", "CA")  # customers and card issuers live here
COUNTRIES = HOME + ("MX", "PL", "TR", "TH", "BR", "RO", "NG", "VN", "ID", "UA")
CURRENCIES = ("USD", "GBP", "EUR", "EUR", "EUR", "EUR", "EUR", "CAD")  # by billing country
HOME_P = np.array([0.34, 0.16, 0.14, 0.10, 0.06, 0.07, 0.07, 0.06])
TRAVEL_P = np.array([10, 8, 6, 8, 3, 9, 8, 4, 5, 2, 3, 4, 2, 1, 0.5, 1, 1, 0.5])
SHIP_P = np.array([10, 6, 5, 5, 3, 4, 4, 3, 2, 3, 2, 1, 2, 3, 3, 1, 1, 3])
RISKY_P = np.array([6, 3, 2, 2, 3, 1, 1, 1, 2, 3, 4, 3, 6, 8, 9, 7, 6, 8])
CHANNELS = ("web", "app", "marketplace", "phone")
CHANNEL_P = np.array([0.50, 0.30, 0.15, 0.05])
FRAUD_CHANNEL_P = np.array([0.60, 0.30, 0.10, 0.0])
PAYMENTS = ("card", "wallet", "bank_transfer")
PAY_P = np.array([0.80, 0.14, 0.06])
DOMAINS = (
    ("gmail.com", "outlook.com", "yahoo.com", "icloud.com", "hotmail.com")
    + ("gmx.de", "orange.fr", "btinternet.com")
    + ("acme-corp.com", "northwind.co.uk", "globex.de", "initech.com")
    + ("protonmail.com", "mail.com", "yandex.com", "tutanota.com", "guerrillamail.com")
)
LEGIT_DOMAIN_P = np.array([30, 13, 9, 7, 6, 4, 3, 3, 4, 3, 3, 4, 1.5, 0.5, 0.3, 0.2, 0.05])
FRAUD_DOMAIN_P = np.array([25, 8, 9, 3, 6, 1, 1, 1, 0, 0, 0, 0, 14, 10, 9, 5, 8])
CATEGORIES = ("apparel", "home", "books", "electronics", "gift_card", "grocery", "beauty")
GIFT_CARD = CATEGORIES.index("gift_card")
NOTES = (
    "leave at door",
    "gift",
    "urgent please ship today",
    "ring the bell",
    "call on arrival",
    "deliver to reception",
)
LEGIT_NOTE_P = np.array([0.30, 0.20, 0.05, 0.20, 0.15, 0.10])
FRAUD_NOTE_P = np.array([0.15, 0.25, 0.45, 0.05, 0.10, 0.0])
LEGIT_HOURS = np.array(
    [1.0, 0.6, 0.4, 0.3, 0.3, 0.5, 1, 2, 3, 3.5, 4, 4.2, 4.5, 4.3, 4.2, 4.4, 4.8, 5.5, 6.5, 7, 6.8]
    + [5.5, 3.5, 2]
)
FRAUD_HOURS = LEGIT_HOURS + 3.0
WEEK = np.array([1, 1, 1, 1, 1, 1.2, 1.2]) * 7 / 7.4  # Monday first, mean 1
# Per scenario: category weights, basket size (1-4 lines) weights, note probability.
BASKETS = (
    (np.array([0.26, 0.18, 0.12, 0.12, 0.04, 0.15, 0.13]), np.array([0.45, 0.3, 0.15, 0.1]), 0.06),
    (np.array([0.14, 0.05, 0.03, 0.45, 0.26, 0.02, 0.05]), np.array([0.55, 0.3, 0.1, 0.05]), 0.15),
    (np.array([0.0, 0.0, 0.4, 0.0, 0.0, 0.35, 0.25]), np.array([1.0, 0.0, 0.0, 0.0]), 0.0),
    (np.array([0.14, 0.05, 0.03, 0.45, 0.26, 0.02, 0.05]), np.array([0.5, 0.3, 0.15, 0.05]), 0.1),
    (np.array([0.20, 0.05, 0.03, 0.40, 0.25, 0.02, 0.05]), np.array([0.5, 0.3, 0.15, 0.05]), 0.2),
    (np.array([0.10, 0.05, 0.0, 0.60, 0.20, 0.0, 0.05]), np.array([0.7, 0.2, 0.07, 0.03]), 0.3),
    (np.array([0.24, 0.18, 0.10, 0.18, 0.08, 0.12, 0.10]), np.array([0.45, 0.3, 0.15, 0.1]), 0.06),
    (np.array([0.18, 0.10, 0.05, 0.35, 0.17, 0.05, 0.10]), np.array([0.5, 0.3, 0.15, 0.05]), 0.1),
)


@dataclass(frozen=True)
class SimConfig:
    """Every knob of the simulated world. `fraud` scales each fraud scenario's rate."""

    name: str = "default"
    fraud: dict[str, float] = field(default_factory=dict)
    customers_per_daily_order: float = 8.0  # population size over orders per day
    max_devices: int = 3  # a customer's own devices: 1..max_devices
    travel_share: float = 0.07
    terminals_per_daily_order: float = 0.01  # shared terminals
    terminal_share: float = 0.12  # legitimate orders placed through a shared terminal
    fraud_delay_days: tuple[float, float, float, float] = (3.0, 42.0, 1.2, 4.0)  # lo+span*beta
    legit_delay_days: tuple[float, float] = (30.0, 60.0)
    unlabelled_share: float = 0.005

    def rate(self, scenario: str) -> float:
        return self.fraud.get(scenario, 1.0)


DEFAULT = SimConfig()
SHIFTED = SimConfig(
    name="shifted",
    fraud={
        "stolen_card": 0.6,
        "card_testing": 2.0,
        "account_takeover": 1.5,
        "drop_address": 0.5,
        "high_value_first_order": 0.6,
        "compromised_terminal": 2.0,
        "spending_jump": 1.5,
    },
    customers_per_daily_order=14.0,
    max_devices=4,
    travel_share=0.12,
    terminals_per_daily_order=0.005,
    terminal_share=0.2,
    fraud_delay_days=(7.0, 60.0, 1.5, 3.0),
    legit_delay_days=(20.0, 45.0),
    unlabelled_share=0.02,
)
CONFIGS = {c.name: c for c in (DEFAULT, SHIFTED)}

Block = dict[str, np.ndarray]
LINE_KEYS = ("cat", "sku", "qty", "unit")  # one value per basket line, the rest one per order


def _draw(rng: np.random.Generator, weights: np.ndarray, n: int) -> np.ndarray:
    """`n` indices drawn with the (unnormalised) `weights`."""
    return rng.choice(weights.size, n, p=weights / weights.sum())


def _mix(ids: np.ndarray) -> np.ndarray:
    """A stable pseudo-random 31-bit value per id."""
    return (ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(33)


def _ip(rng: np.random.Generator, country: np.ndarray) -> np.ndarray:
    """Random addresses geolocated in `country` (each country owns three /8 blocks)."""
    first = 20 + 12 * country + rng.integers(0, 3, country.size)
    return (first.astype(np.int64) << 24) | rng.integers(0, 1 << 24, country.size)


def _hour_times(rng: np.random.Generator, hours: np.ndarray, n: int) -> np.ndarray:
    """Offsets into a day following the hourly profile `hours`."""
    return _draw(rng, hours, n) * HOUR + rng.integers(0, HOUR, n)


def _items(rng: np.random.Generator, scen: int, target: np.ndarray) -> Block:
    """Baskets of 1-4 lines near `target`; `amount` is the exact sum of the lines."""
    cat_p, lines_p, _ = BASKETS[scen]
    n = target.size
    lines = _draw(rng, lines_p, n) + 1
    owner = np.repeat(np.arange(n), lines)
    weight = rng.gamma(2.0, size=owner.size)
    share = weight / np.bincount(owner, weights=weight, minlength=n)[owner]
    cat = _draw(rng, cat_p, owner.size)
    qty = np.where(rng.random(owner.size) < 0.2, rng.integers(2, 5, owner.size), 1)
    each = target[owner] * share / qty
    gift_card = np.maximum(1, np.round(each / 2500)) * 2500
    unit = np.where(cat == GIFT_CARD, gift_card, np.maximum(1, np.round(each / 100)) * 100 - 1)
    unit = unit.astype(np.int64)
    sku = (3000 * rng.random(owner.size) ** 2).astype(np.int64)
    amount = np.add.reduceat(unit * qty, np.cumsum(lines) - lines)
    return {"lines": lines, "amount": amount, "cat": cat, "sku": sku, "qty": qty, "unit": unit}


class _World:
    """The customer population, the id counters and one generator per scenario."""

    def __init__(
        self, days: int, seed: int, orders_per_day: int, start: datetime, config: SimConfig
    ) -> None:
        self.rng = np.random.default_rng(seed)
        self.config = config
        self.days = days
        self.per_day = orders_per_day
        self.scale = orders_per_day / 6000
        self.t0 = (start - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        self.end = self.t0 + days * DAY
        self.weekday0 = start.weekday()
        self.counters = {"cust": 0, "dev": 0, "card": 0, "addr": 0}
        self._population(int(orders_per_day * config.customers_per_daily_order))
        self.compromised: list[tuple[int, int, float]] = []  # (terminal, until, orders/day)
        self.jumped: list[tuple[int, int, float]] = []  # (customer, until, orders/day)

    def new(self, kind: str, n: int) -> np.ndarray:
        first = self.counters[kind]
        self.counters[kind] = first + n
        return np.arange(first, first + n, dtype=np.int64)

    def renew(self, kind: str, ids: np.ndarray, p: float) -> np.ndarray:
        """`ids` with a share `p` replaced by fresh ones."""
        out = ids.copy()
        mask = self.rng.random(ids.size) < p
        out[mask] = self.new(kind, int(mask.sum()))
        return out

    def _population(self, c: int) -> None:
        rng = self.rng
        self.home = _draw(rng, HOME_P, c)
        self.bill = np.where(rng.random(c) < 0.06, _draw(rng, HOME_P, c), self.home)
        opened = self.t0 + rng.integers(0, self.end - self.t0, c)
        aged = self.t0 - ((rng.exponential(730, c) + 1) * DAY).astype(np.int64)
        self.acct = np.where(rng.random(c) < 0.3, opened, aged)
        self.key = rng.random(c) < 0.01
        self.email = _draw(rng, LEGIT_DOMAIN_P, c)
        self.rate = rng.gamma(0.6, size=c) * np.where(self.key, 5.0, 1.0)
        self.mu = rng.normal(np.log(5000), 0.7, c) + np.where(self.key, 1.2, 0.0)
        self.channel = _draw(rng, CHANNEL_P, c)
        self.ip = _ip(rng, self.home)
        d = self.config.max_devices
        self.devs, self.n_devs = self.new("dev", d * c).reshape(c, d), rng.choice(d, c) + 1
        n_term = max(int(self.per_day * self.config.terminals_per_daily_order), 4)
        self.terminals = self.new("dev", n_term)
        self.home_terminal = rng.integers(0, n_term, c)
        self.cards, self.n_cards = self.new("card", 2 * c).reshape(c, 2), rng.choice(2, c) + 1
        self.addrs, self.n_addrs = self.new("addr", 2 * c).reshape(c, 2), rng.choice(2, c) + 1
        self.new("cust", c)

    def pick(self, table: np.ndarray, counts: np.ndarray, cust: np.ndarray) -> np.ndarray:
        slot = (self.rng.random(cust.size) * counts[cust]).astype(np.int64)
        return table[cust, slot]

    def profile(self, cust: np.ndarray) -> Block:
        """The account columns of existing customers."""
        acct, key, email = self.acct[cust], self.key[cust], self.email[cust]
        return {"cust": cust, "acct": acct, "key": key, "email": email}

    def accounts(self, opened: np.ndarray, who: np.ndarray) -> Block:
        """Account columns for new fraud accounts opened at `opened`, one row per `who`."""
        cust, email = self.new("cust", opened.size), _draw(self.rng, FRAUD_DOMAIN_P, opened.size)
        return {"cust": cust[who], "acct": opened[who], "email": email[who]}

    def block(self, scen: int, target: np.ndarray, **cols: np.ndarray | int) -> Block:
        """Rows of one scenario. Scalars are broadcast; a fraud row's missing account, email,
        channel, card, address, device and IP columns are new, its payment is a card."""
        rng, n = self.rng, target.size
        row = {k: np.broadcast_to(np.asarray(v), n).copy() for k, v in cols.items()}
        fresh: dict[str, Callable[[], np.ndarray]] = {
            "cust": lambda: self.new("cust", n),
            "email": lambda: _draw(rng, FRAUD_DOMAIN_P, n),
            "channel": lambda: _draw(rng, FRAUD_CHANNEL_P, n),
            "card": lambda: self.new("card", n),
            "addr": lambda: self.new("addr", n),
            "dev": lambda: self.new("dev", n),
            "ip": lambda: _ip(rng, row["ipc"]),
        }
        for k, make in fresh.items():
            if k not in row:
                row[k] = make()
        row.setdefault("key", np.zeros(n, dtype=bool))
        row.setdefault("pay", np.zeros(n, dtype=np.int64))
        row["scen"] = np.full(n, scen)
        note = _draw(rng, FRAUD_NOTE_P if scen else LEGIT_NOTE_P, n)
        row["note"] = np.where(rng.random(n) < BASKETS[scen][2], note, -1)
        return row | _items(rng, scen, target)

    def day(self, day: int) -> list[Block]:
        d0, f = self.t0 + day * DAY, day / self.days
        blocks = [self.legit(d0, day), *self.stolen_card(d0, f), *self.card_testing(d0)]
        blocks += [*self.account_takeover(d0, f), *self.drop_address(d0, f)]
        blocks += [*self.high_value_first_order(d0, f), *self.compromised_terminal(d0)]
        return [b for b in (*blocks, *self.spending_jump(d0)) if b["ts"].size]

    def legit(self, d0: int, day: int) -> Block:
        rng = self.rng
        n = int(self.per_day * WEEK[(self.weekday0 + day) % 7] * rng.normal(1, 0.03))
        today = (self.acct >= d0) & (self.acct < d0 + DAY)
        signups = np.flatnonzero(today & (rng.random(today.size) < 0.8))
        weights = self.rate * (self.acct < d0) * np.where(self.acct > d0 - 21 * DAY, 4.0, 1.0)
        regular = rng.choice(weights.size, max(n - signups.size, 0), p=weights / weights.sum())
        cust = np.concatenate([signups, regular])
        wait = np.exp(rng.uniform(np.log(MINUTE), np.log(12 * HOUR), signups.size))
        later = d0 + _hour_times(rng, LEGIT_HOURS, regular.size)
        ts = np.concatenate([self.acct[signups] + wait.astype(np.int64), later])
        n, home = cust.size, self.home[cust]
        pay = _draw(rng, PAY_P, n)
        pay[self.key[cust] & (rng.random(n) < 0.3)] = 2
        card = self.renew("card", self.pick(self.cards, self.n_cards, cust), 0.015)
        gift = rng.random(n) < 0.06
        addr = self.pick(self.addrs, self.n_addrs, cust)
        addr[gift] = self.new("addr", int(gift.sum()))
        ship = np.where(gift & (rng.random(n) < 0.4), _draw(rng, TRAVEL_P, n), home)
        travel = rng.random(n) < self.config.travel_share
        ipc = np.where(travel, _draw(rng, TRAVEL_P, n), home)
        ip = np.where(travel | (rng.random(n) < 0.35), _ip(rng, ipc), self.ip[cust])
        channel = np.where(rng.random(n) < 0.7, self.channel[cust], _draw(rng, CHANNEL_P, n))
        dev = self.renew("dev", self.pick(self.devs, self.n_devs, cust), 0.03)
        shared = rng.random(n) < self.config.terminal_share
        dev[shared] = self.terminals[self.home_terminal[cust[shared]]]
        splurge = rng.random(n) < np.where(np.arange(n) < signups.size, 0.25, 0.05)
        target = np.exp(rng.normal(self.mu[cust], 0.75))
        target *= np.where(splurge, rng.uniform(3, 12, n), 1.0)
        card = np.where(pay == 0, card, -1)
        return self.block(
            0,
            target,
            ts=ts,
            channel=channel,
            pay=pay,
            card=card,
            bill=self.bill[cust],
            ship=ship,
            addr=addr,
            ip=ip,
            ipc=ipc,
            dev=dev,
            **self.profile(cust),
        )

    def stolen_card(self, d0: int, f: float) -> list[Block]:
        rng = self.rng
        n = rng.poisson(30 * self.scale * self.config.rate("stolen_card") * (0.8 + 0.4 * f))
        ts = d0 + _hour_times(rng, FRAUD_HOURS, n)
        fresh = rng.random(n) < 0.35
        age = np.where(
            fresh, 2 * MINUTE + rng.exponential(3 * HOUR, n), rng.uniform(1, 400, n) * DAY
        )
        bill = _draw(rng, HOME_P, n)
        ship = np.where(rng.random(n) < 0.35, _draw(rng, SHIP_P, n), bill)
        r = rng.random(n)
        ipc = np.where(r < 0.6, bill, np.where(r < 0.75, ship, _draw(rng, RISKY_P, n)))
        target = np.exp(rng.normal(np.log(11000), 0.9, n))
        acct = ts - age.astype(np.int64)
        block = self.block(1, target, ts=ts, acct=acct, bill=bill, ship=ship, ipc=ipc)
        own = rng.random(n) < 0.3  # the stolen card is used on an existing customer's account
        c = rng.choice(np.flatnonzero(self.acct < d0), int(own.sum()))
        home = self.home[c]
        profile = {"dev": self.devs[c, 0], "addr": self.addrs[c, 0], "ip": self.ip[c]}
        for k, v in (self.profile(c) | profile | {"ship": home, "ipc": home}).items():
            block[k][own] = v
        return [block]

    def card_testing(self, d0: int) -> list[Block]:
        rng = self.rng
        blocks = []
        for _ in range(rng.poisson(0.35 * self.scale * self.config.rate("card_testing"))):
            n, m = int(rng.integers(10, 41)), int(rng.integers(1, 4))
            t = d0 + _hour_times(rng, FRAUD_HOURS, 1)[0]
            recent, aged = rng.integers(MINUTE, 2 * DAY, m), rng.integers(DAY, 300 * DAY, m)
            opened = t - np.where(rng.random(m) < 0.4, aged, recent)
            country = _draw(rng, HOME_P, 1)[0]
            ipc = country if rng.random() < 0.6 else _draw(rng, RISKY_P, 1)[0]
            bill = np.where(rng.random(n) < 0.6, country, _draw(rng, HOME_P, n))
            who = rng.integers(0, m, n)
            ts = t + np.sort(rng.integers(0, rng.integers(2, 25) * MINUTE, n))
            addr, dev = self.new("addr", m)[who], self.new("dev", 1)[0]
            ip = (185 << 24) | int(rng.integers(0, 1 << 24))
            blocks.append(
                self.block(
                    2,
                    rng.uniform(100, 1500, n),
                    ts=ts,
                    channel=rng.choice(2),
                    bill=bill,
                    ship=country,
                    addr=addr,
                    ip=ip,
                    ipc=ipc,
                    dev=dev,
                    **self.accounts(opened, who),
                )
            )
        return blocks

    def account_takeover(self, d0: int, f: float) -> list[Block]:
        rng = self.rng
        k = rng.poisson(
            14 * self.scale * self.config.rate("account_takeover") * min(1.0, 0.3 + 1.4 * f)
        )
        victims = rng.choice(np.flatnonzero(self.acct < d0 - 90 * DAY), k)
        home = self.home[victims]
        ipc = np.where(rng.random(k) < 0.35, home, _draw(rng, RISKY_P, k))
        ship = np.where(rng.random(k) < 0.7, home, _draw(rng, SHIP_P, k))
        ip, dev, addr = _ip(rng, ipc), self.new("dev", k), self.new("addr", k)
        i = np.repeat(np.arange(k), rng.integers(1, 4, k))  # 1-3 orders per takeover
        ts = (d0 + _hour_times(rng, FRAUD_HOURS, k))[i] + rng.integers(0, 3 * HOUR, i.size)
        cust = victims[i]
        pay = np.where(rng.random(i.size) < 0.75, 0, 1)  # the saved card or the wallet
        card = np.where(pay == 0, self.cards[cust, 0], -1)
        target = np.exp(rng.normal(np.log(16000), 0.9, i.size))
        return [
            self.block(
                3,
                target,
                ts=ts,
                pay=pay,
                card=card,
                bill=self.bill[cust],
                ship=ship[i],
                addr=addr[i],
                ip=ip[i],
                ipc=ipc[i],
                dev=dev[i],
                **self.profile(cust),
            )
        ]

    def drop_address(self, d0: int, f: float) -> list[Block]:
        rng = self.rng
        blocks = []
        for _ in range(
            rng.poisson(0.9 * self.scale * self.config.rate("drop_address")) if f >= 0.1 else 0
        ):
            m = int(rng.integers(3, 9))
            country = _draw(rng, HOME_P, 1)[0]
            opened = d0 + rng.integers(-45 * DAY, 10 * DAY, m)
            who = np.repeat(np.arange(m), rng.integers(1, 4, m))
            n = who.size
            ts = np.maximum(opened, d0)[who] + rng.integers(10 * MINUTE, 4 * DAY, n)
            devices = self.new("dev", int(rng.integers(1, 4)))
            dev = devices[rng.integers(0, devices.size, m)][who]
            card = self.new("card", m)[who]
            bill = np.where(rng.random(m) < 0.7, country, _draw(rng, HOME_P, m))[who]
            ipc = np.where(rng.random(n) < 0.7, country, _draw(rng, RISKY_P, n))
            target = np.exp(rng.normal(np.log(10000), 0.8, n))
            blocks.append(
                self.block(
                    4,
                    target,
                    ts=ts,
                    card=card,
                    bill=bill,
                    ship=country,
                    addr=self.new("addr", 1)[0],
                    ipc=ipc,
                    dev=dev,
                    **self.accounts(opened, who),
                )
            )
        return blocks

    def high_value_first_order(self, d0: int, f: float) -> list[Block]:
        rng = self.rng
        n = rng.poisson(13 * self.scale * self.config.rate("high_value_first_order") * (0.5 + f))
        ts = d0 + _hour_times(rng, FRAUD_HOURS, n)
        age = np.exp(rng.uniform(np.log(5 * MINUTE), np.log(6 * HOUR), n)).astype(np.int64)
        bill = _draw(rng, HOME_P, n)
        ship = np.where(rng.random(n) < 0.2, _draw(rng, SHIP_P, n), bill)
        ipc = np.where(rng.random(n) < 0.65, bill, _draw(rng, RISKY_P, n))
        target = np.exp(rng.normal(np.log(15000), 0.8, n))
        return [self.block(5, target, ts=ts, acct=ts - age, bill=bill, ship=ship, ipc=ipc)]

    def on_account(
        self,
        scen: int,
        target: np.ndarray,
        cust: np.ndarray,
        ts: np.ndarray,
        addr: np.ndarray,
        ip: np.ndarray,
        dev: np.ndarray,
    ) -> Block:
        """Fraud rows on existing customers' own accounts: their channel, saved card,
        billing country, shipping and IP country at home."""
        home = self.home[cust]
        return self.block(
            scen,
            target,
            ts=ts,
            channel=self.channel[cust],
            card=self.cards[cust, 0],
            bill=self.bill[cust],
            ship=home,
            addr=addr,
            ip=ip,
            ipc=home,
            dev=dev,
            **self.profile(cust),
        )

    def compromised_terminal(self, d0: int) -> list[Block]:
        rng = self.rng
        for _ in range(rng.poisson(0.25 * self.scale * self.config.rate("compromised_terminal"))):
            term = int(rng.integers(0, self.terminals.size))
            until = d0 + int(rng.uniform(14, 35) * DAY)
            self.compromised.append((term, until, float(rng.uniform(2, 6) * self.scale)))
        self.compromised = [c for c in self.compromised if c[1] > d0]
        blocks = []
        for term, until, per_day in self.compromised:
            n = rng.poisson(per_day)
            regulars = np.flatnonzero((self.home_terminal == term) & (self.acct < d0))
            if not n or not regulars.size:
                continue
            cust = rng.choice(regulars, n)
            ts = d0 + _hour_times(rng, LEGIT_HOURS, n)
            keep = ts < until
            cust, ts, n = cust[keep], ts[keep], int(keep.sum())
            home = self.home[cust]
            addr = self.pick(self.addrs, self.n_addrs, cust)
            moved = rng.random(n) < 0.4
            addr[moved] = self.new("addr", int(moved.sum()))
            target = np.exp(rng.normal(self.mu[cust], 0.75)) * rng.uniform(1.0, 2.0, n)
            dev = np.full(n, self.terminals[term])
            blocks.append(self.on_account(6, target, cust, ts, addr, _ip(rng, home), dev))
        return blocks

    def spending_jump(self, d0: int) -> list[Block]:
        rng = self.rng
        k = rng.poisson(1.5 * self.scale * self.config.rate("spending_jump"))
        for c in rng.choice(np.flatnonzero(self.acct < d0 - 30 * DAY), k):
            until = d0 + 14 * DAY
            self.jumped.append((int(c), until, float(rng.uniform(0.1, 0.4))))
        self.jumped = [j for j in self.jumped if j[1] > d0]
        if not self.jumped:
            return []
        who = np.array([j[0] for j in self.jumped])
        n_each = rng.poisson([j[2] for j in self.jumped])
        cust = np.repeat(who, n_each)
        n = cust.size
        if not n:
            return []
        ts = d0 + _hour_times(rng, FRAUD_HOURS, n)
        home = self.home[cust]
        dev = np.where(rng.random(n) < 0.6, self.devs[cust, 0], self.new("dev", n))
        addr = np.where(rng.random(n) < 0.7, self.addrs[cust, 0], self.new("addr", n))
        target = np.exp(rng.normal(self.mu[cust], 0.5)) * rng.uniform(3, 8, n)
        ip = np.where(dev == self.devs[cust, 0], self.ip[cust], _ip(rng, home))
        return [self.on_account(7, target, cust, ts, addr, ip, dev)]


def _token(prefix: str, ids: np.ndarray) -> pa.Array:
    """Opaque identifiers: ids are scrambled (salted by kind) so their order tells nothing."""
    salted = ids.astype(np.uint64) + np.uint64(zlib.crc32(prefix.encode()))
    scrambled = (salted * np.uint64(2654435761)) % np.uint64(10**10)
    digits = pc.utf8_lpad(pa.array(scrambled, mask=ids < 0).cast(pa.string()), 10, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _lookup(values: Sequence[str], index: np.ndarray) -> pa.Array:
    return pa.array(values).take(pa.array(index, mask=index < 0))


def _postal(country: str, h: int) -> str:
    letters = "ABDEFGHJLNPQRSTUWXYZ"
    a, b, c = (letters[(h >> s) % 20] for s in (3, 8, 13))
    if country == "GB":
        return f"{a}{b}{h % 20 + 1} {h % 9 + 1}{c}{a}"
    if country == "CA":
        return f"{a}{h % 10}{b} {h % 7}{c}{h % 9}"
    if country == "NL":
        return f"{1000 + h % 9000} {a}{b}"
    return f"{h % 100000:05d}"


def _postal_codes(addr: np.ndarray, ship: np.ndarray) -> pa.Array:
    unique, first, inverse = np.unique(addr, return_index=True, return_inverse=True)
    codes = [_postal(COUNTRIES[s], int(h)) for s, h in zip(ship[first], _mix(unique), strict=True)]
    return pa.array(codes).take(inverse)


def _ip_strings(ip: np.ndarray) -> pa.Array:
    octets = [pa.array((ip >> s) & 255).cast(pa.string()) for s in (24, 16, 8, 0)]
    return pc.binary_join_element_wise(*octets, ".")


def _table(world: _World, blocks: list[Block]) -> pa.Table:
    rng = world.rng
    col = {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}
    offsets = np.concatenate([[0], np.cumsum(col["lines"])]).astype(np.int32)
    category = _lookup(CATEGORIES, col["cat"])
    sku = pc.binary_join_element_wise(
        category, pc.utf8_lpad(pa.array(col["sku"]).cast(pa.string()), 4, "0"), "-"
    )
    quantity, unit = pa.array(col["qty"], pa.int64()), pa.array(col["unit"], pa.int64())
    lines = pa.StructArray.from_arrays([sku, category, quantity, unit], fields=list(ITEM_TYPE))
    inside = np.flatnonzero(col["ts"] < world.end)
    order = inside[np.argsort(col["ts"][inside], kind="stable")]
    items = pa.ListArray.from_arrays(offsets, lines, type=pa.list_(ITEM_TYPE)).take(order)
    c = {k: v[order] for k, v in col.items() if k not in LINE_KEYS}
    n = order.size
    cfg = world.config
    unknown = rng.random(n) < cfg.unlabelled_share
    lo, span, a, b = cfg.fraud_delay_days
    delay = np.where(
        c["scen"] > 0, lo + span * rng.beta(a, b, n), rng.uniform(*cfg.legit_delay_days, n)
    )
    card_bin = 100_000 * np.where(c["bill"] % 2, 5, 4) + 100 * ((c["bill"] * 137) % 1000)
    card_bin += _mix(np.maximum(c["card"], 0)).astype(np.int64) % 100
    order_ids = pc.utf8_lpad(pa.array(np.arange(1, n + 1)).cast(pa.string()), 9, "0")
    arrays = [
        pc.binary_join_element_wise("o-", order_ids, ""),
        _token("c-", c["cust"]),
        pa.array(c["ts"], TS),
        pa.array(c["amount"], pa.int64()),
        _lookup(CURRENCIES, c["bill"]),
        _lookup(CHANNELS, c["channel"]),
        pa.array(c["acct"], TS),
        pa.array(c["key"], pa.bool_()),
        _lookup(DOMAINS, c["email"]),
        _lookup(PAYMENTS, c["pay"]),
        pa.array(card_bin, mask=c["card"] < 0).cast(pa.string()),
        _token("card-", c["card"]),
        _lookup(COUNTRIES, c["bill"]),
        _lookup(COUNTRIES, c["ship"]),
        _postal_codes(c["addr"], c["ship"]),
        _token("addr-", c["addr"]),
        _ip_strings(c["ip"]),
        _lookup(COUNTRIES, c["ipc"]),
        _token("d-", c["dev"]),
        items,
        _lookup(NOTES, c["note"]),
        pa.array((c["scen"] > 0).astype(np.int8), mask=unknown),
        pa.array(c["ts"] + (delay * DAY).astype(np.int64), TS, mask=unknown),
        _lookup(SCENARIOS, c["scen"]),
    ]
    schema = HISTORY_SCHEMA.append(pa.field("scenario", pa.string()))
    return pa.Table.from_arrays(arrays, schema=schema)


def simulate(
    days: int,
    *,
    seed: int = 7,
    orders_per_day: int = 6000,
    start: datetime = datetime(2026, 1, 5, tzinfo=UTC),
    config: SimConfig = DEFAULT,
    progress: bool = False,
) -> pa.Table:
    """Labelled order history over `days` days from `start`, sorted by `created_at`.

    The columns are `HISTORY_SCHEMA`'s plus a trailing string `scenario` ("legit" or a fraud
    scenario name, see the module docstring). The same arguments give the same table.
    """
    if days < 1 or orders_per_day < 1:
        raise ValueError("days and orders_per_day must be positive")
    world = _World(days, seed, orders_per_day, start, config)
    days_bar = tqdm(range(days), desc="simulate", unit="day", disable=not progress)
    return _table(world, [b for day in days_bar for b in world.day(day)])


def main_simulate(
    days: int, out: str, seed: int = 7, orders_per_day: int = 6000, config: str = "default"
) -> int:
    """Write a simulated history to `out` as zstd Parquet; return the number of rows."""
    table = simulate(
        days, seed=seed, orders_per_day=orders_per_day, config=CONFIGS[config], progress=True
    )
    pq.write_table(table, out, compression="zstd")
    return table.num_rows
