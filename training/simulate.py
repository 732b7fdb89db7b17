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

Labels: fraud rows become known at a chargeback 3-45 days later (skewed early), legitimate
rows 30-60 days later, once the chargeback window closes; 0.5% of rows are never labelled.
Label times may lie after the simulated period: training must cut labels at its own as-of time.
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from engine.schema import HISTORY_SCHEMA, ITEM_TYPE, TS

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
)
COUNTRIES = (
    "US",
    "GB",
    "DE",
    "FR",
    "NL",
    "ES",
    "IT",
    "CA",
    "MX",
    "PL",
    "TR",
    "TH",
    "BR",
    "RO",
    "NG",
    "VN",
    "ID",
    "UA",
)
CURRENCIES = (
    "USD",
    "GBP",
    "EUR",
    "EUR",
    "EUR",
    "EUR",
    "EUR",
    "CAD",
    "MXN",
    "PLN",
    "TRY",
    "THB",
    "BRL",
    "RON",
    "NGN",
    "VND",
    "IDR",
    "UAH",
)
N_HOME = 8  # customers and card issuers live in the first eight countries
HOME_P = np.array([0.34, 0.16, 0.14, 0.10, 0.06, 0.07, 0.07, 0.06])
TRAVEL_P = np.array([10, 8, 6, 8, 3, 9, 8, 4, 5, 2, 3, 4, 2, 1, 0.5, 1, 1, 0.5])
SHIP_P = np.array([10, 6, 5, 5, 3, 4, 4, 3, 2, 3, 2, 1, 2, 3, 3, 1, 1, 3])
RISKY_P = np.array([6, 3, 2, 2, 3, 1, 1, 1, 2, 3, 4, 3, 6, 8, 9, 7, 6, 8])
CHANNELS = ("web", "app", "marketplace", "phone")
CHANNEL_P = np.array([0.50, 0.30, 0.15, 0.05])
FRAUD_CHANNEL_P = np.array([0.60, 0.30, 0.10, 0.0])
PAYMENTS = ("card", "wallet", "bank_transfer")
DOMAINS = (
    "gmail.com",
    "outlook.com",
    "yahoo.com",
    "icloud.com",
    "hotmail.com",
    "gmx.de",
    "orange.fr",
    "btinternet.com",
    "acme-corp.com",
    "northwind.co.uk",
    "globex.de",
    "initech.com",
    "protonmail.com",
    "mail.com",
    "yandex.com",
    "tutanota.com",
    "guerrillamail.com",
)
LEGIT_DOMAIN_P = np.array([30, 13, 9, 7, 6, 4, 3, 3, 4, 3, 3, 4, 1.5, 0.5, 0.3, 0.2, 0.05])
FRAUD_DOMAIN_P = np.array([25, 8, 9, 3, 6, 1, 1, 1, 0, 0, 0, 0, 14, 10, 9, 5, 8])
CATEGORIES = ("apparel", "home", "books", "electronics", "gift_card", "grocery", "beauty")
GIFT_CARD = CATEGORIES.index("gift_card")
LEGIT_CAT_P = np.array([0.26, 0.18, 0.12, 0.12, 0.04, 0.15, 0.13])
FRAUD_CAT_P = np.array([0.14, 0.05, 0.03, 0.45, 0.26, 0.02, 0.05])
TESTING_CAT_P = np.array([0.0, 0.0, 0.4, 0.0, 0.0, 0.35, 0.25])
FIRST_ORDER_CAT_P = np.array([0.10, 0.05, 0.0, 0.60, 0.20, 0.0, 0.05])
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
    [
        1.0,
        0.6,
        0.4,
        0.3,
        0.3,
        0.5,
        1,
        2,
        3,
        3.5,
        4,
        4.2,
        4.5,
        4.3,
        4.2,
        4.4,
        4.8,
        5.5,
        6.5,
        7,
        6.8,
        5.5,
        3.5,
        2,
    ]
)
FRAUD_HOURS = LEGIT_HOURS + 3.0
WEEK = np.array([1, 1, 1, 1, 1, 1.2, 1.2]) * 7 / 7.4  # Monday first, mean 1

Block = dict[str, np.ndarray]
LINE_KEYS = ("cat", "sku", "qty", "unit")  # one value per basket line, the rest one per order


def _p(weights: np.ndarray) -> np.ndarray:
    return weights / weights.sum()


def _mix(ids: np.ndarray) -> np.ndarray:
    """A stable pseudo-random 31-bit value per id."""
    return (ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(33)


def _ip(rng: np.random.Generator, country: np.ndarray) -> np.ndarray:
    """Random addresses geolocated in `country` (each country owns three /8 blocks)."""
    first = 20 + 12 * country + rng.integers(0, 3, country.size)
    return (first.astype(np.int64) << 24) | rng.integers(0, 1 << 24, country.size)


def _hour_times(rng: np.random.Generator, hours: np.ndarray, n: int) -> np.ndarray:
    """Offsets into a day following the hourly profile `hours`."""
    return rng.choice(24, n, p=_p(hours)) * HOUR + rng.integers(0, HOUR, n)


def _items(
    rng: np.random.Generator, target: np.ndarray, cat_p: np.ndarray, lines_p: list[float]
) -> Block:
    """Baskets of 1-4 lines near `target`; `amount` is the exact sum of the lines."""
    n = target.size
    lines = rng.choice(4, n, p=lines_p) + 1
    owner = np.repeat(np.arange(n), lines)
    weight = rng.gamma(2.0, size=owner.size)
    share = weight / np.bincount(owner, weights=weight, minlength=n)[owner]
    cat = rng.choice(len(CATEGORIES), owner.size, p=_p(cat_p))
    qty = np.where(rng.random(owner.size) < 0.2, rng.integers(2, 5, owner.size), 1)
    each = target[owner] * share / qty
    unit = np.where(
        cat == GIFT_CARD,
        np.maximum(1, np.round(each / 2500)) * 2500,
        np.maximum(1, np.round(each / 100)) * 100 - 1,
    ).astype(np.int64)
    sku = (3000 * rng.random(owner.size) ** 2).astype(np.int64)
    amount = np.add.reduceat(unit * qty, np.cumsum(lines) - lines)
    return {"lines": lines, "amount": amount, "cat": cat, "sku": sku, "qty": qty, "unit": unit}


class _World:
    """The customer population, the id counters and one generator per scenario."""

    def __init__(self, days: int, seed: int, orders_per_day: int, start: datetime) -> None:
        self.rng = np.random.default_rng(seed)
        self.days = days
        self.per_day = orders_per_day
        self.scale = orders_per_day / 6000
        self.t0 = (start - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        self.end = self.t0 + days * DAY
        self.weekday0 = start.weekday()
        self.counters = {"cust": 0, "dev": 0, "card": 0, "addr": 0}
        self._population(orders_per_day * 8)

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
        self.home = rng.choice(N_HOME, c, p=HOME_P)
        self.bill = np.where(rng.random(c) < 0.06, rng.choice(N_HOME, c, p=HOME_P), self.home)
        opened_during = rng.random(c) < 0.3
        self.acct = np.where(
            opened_during,
            self.t0 + rng.integers(0, self.end - self.t0, c),
            self.t0 - ((rng.exponential(730, c) + 1) * DAY).astype(np.int64),
        )
        self.key = rng.random(c) < 0.01
        self.email = rng.choice(len(DOMAINS), c, p=_p(LEGIT_DOMAIN_P))
        self.rate = rng.gamma(0.6, size=c) * np.where(self.key, 5.0, 1.0)
        self.mu = rng.normal(np.log(5000), 0.7, c) + np.where(self.key, 1.2, 0.0)
        self.channel = rng.choice(len(CHANNELS), c, p=CHANNEL_P)
        self.ip = _ip(rng, self.home)
        self.devs, self.n_devs = self.new("dev", 3 * c).reshape(c, 3), rng.choice(3, c) + 1
        self.cards, self.n_cards = self.new("card", 2 * c).reshape(c, 2), rng.choice(2, c) + 1
        self.addrs, self.n_addrs = self.new("addr", 2 * c).reshape(c, 2), rng.choice(2, c) + 1
        self.new("cust", c)

    def pick(self, table: np.ndarray, counts: np.ndarray, cust: np.ndarray) -> np.ndarray:
        slot = (self.rng.random(cust.size) * counts[cust]).astype(np.int64)
        return table[cust, slot]

    def block(
        self,
        scen: int,
        target: np.ndarray,
        cat_p: np.ndarray,
        lines_p: list[float],
        note_p: float,
        **cols: np.ndarray | int,
    ) -> Block:
        """One block of rows; scalar columns are broadcast, `note` and items are drawn here."""
        rng, n = self.rng, target.size
        fraud = scen > 0
        row: Block = {k: np.broadcast_to(np.asarray(v), n).copy() for k, v in cols.items()}
        row.setdefault("key", np.zeros(n, dtype=bool))
        row["scen"] = np.full(n, scen)
        row["note"] = np.where(
            rng.random(n) < note_p,
            rng.choice(len(NOTES), n, p=FRAUD_NOTE_P if fraud else LEGIT_NOTE_P),
            -1,
        )
        return row | _items(rng, target, cat_p, lines_p)

    def fraud_emails(self, n: int) -> np.ndarray:
        return self.rng.choice(len(DOMAINS), n, p=_p(FRAUD_DOMAIN_P))

    def day(self, day: int) -> list[Block]:
        d0 = self.t0 + day * DAY
        f = day / self.days
        return [
            b
            for b in (
                self.legit(d0, day),
                *self.stolen_card(d0, f),
                *self.card_testing(d0),
                *self.account_takeover(d0, f),
                *self.drop_address(d0, f),
                *self.high_value_first_order(d0, f),
            )
            if b["ts"].size
        ]

    def legit(self, d0: int, day: int) -> Block:
        rng = self.rng
        n = int(self.per_day * WEEK[(self.weekday0 + day) % 7] * rng.normal(1, 0.03))
        signups = np.flatnonzero(
            (self.acct >= d0) & (self.acct < d0 + DAY) & (rng.random(self.home.size) < 0.8)
        )
        weights = self.rate * (self.acct < d0) * np.where(self.acct > d0 - 21 * DAY, 4.0, 1.0)
        regular = rng.choice(weights.size, max(n - signups.size, 0), p=weights / weights.sum())
        cust = np.concatenate([signups, regular])
        ts = np.concatenate(
            [
                self.acct[signups]
                + np.exp(rng.uniform(np.log(MINUTE), np.log(12 * HOUR), signups.size)).astype(int),
                d0 + _hour_times(rng, LEGIT_HOURS, regular.size),
            ]
        )
        n, home, key = cust.size, self.home[cust], self.key[cust]
        pay = rng.choice(len(PAYMENTS), n, p=[0.8, 0.14, 0.06])
        pay[key & (rng.random(n) < 0.3)] = 2
        card = self.renew("card", self.pick(self.cards, self.n_cards, cust), 0.015)
        gift = rng.random(n) < 0.06
        abroad = rng.choice(len(COUNTRIES), n, p=_p(TRAVEL_P))
        addr = self.pick(self.addrs, self.n_addrs, cust)
        addr[gift] = self.new("addr", int(gift.sum()))
        travel = rng.random(n) < 0.07
        ipc = np.where(travel, rng.choice(len(COUNTRIES), n, p=_p(TRAVEL_P)), home)
        roaming = travel | (rng.random(n) < 0.35)
        splurge_p = np.where(np.arange(n) < signups.size, 0.25, 0.05)
        splurge = np.where(rng.random(n) < splurge_p, rng.uniform(3, 12, n), 1.0)
        return self.block(
            0,
            np.exp(rng.normal(self.mu[cust], 0.75)) * splurge,
            LEGIT_CAT_P,
            [0.45, 0.3, 0.15, 0.1],
            0.06,
            cust=cust,
            ts=ts,
            acct=self.acct[cust],
            key=key,
            email=self.email[cust],
            channel=np.where(
                rng.random(n) < 0.7, self.channel[cust], rng.choice(len(CHANNELS), n, p=CHANNEL_P)
            ),
            pay=pay,
            card=np.where(pay == 0, card, -1),
            bill=self.bill[cust],
            ship=np.where(gift & (rng.random(n) < 0.4), abroad, home),
            addr=addr,
            ip=np.where(roaming, _ip(rng, ipc), self.ip[cust]),
            ipc=ipc,
            dev=self.renew("dev", self.pick(self.devs, self.n_devs, cust), 0.03),
        )

    def stolen_card(self, d0: int, f: float) -> list[Block]:
        rng = self.rng
        n = rng.poisson(30 * self.scale * (0.8 + 0.4 * f))
        ts = d0 + _hour_times(rng, FRAUD_HOURS, n)
        own = rng.random(n) < 0.3
        victims = rng.choice(np.flatnonzero(self.acct < d0), int(own.sum()))
        fresh = rng.random(n) < 0.35
        age = np.where(
            fresh, 2 * MINUTE + rng.exponential(3 * HOUR, n), rng.uniform(1, 400, n) * DAY
        ).astype(np.int64)
        bill = rng.choice(N_HOME, n, p=HOME_P)
        ship = np.where(rng.random(n) < 0.35, rng.choice(len(COUNTRIES), n, p=_p(SHIP_P)), bill)
        r = rng.random(n)
        ipc = np.where(
            r < 0.6, bill, np.where(r < 0.75, ship, rng.choice(len(COUNTRIES), n, p=_p(RISKY_P)))
        )
        cust, acct, email = self.new("cust", n), ts - age, self.fraud_emails(n)
        dev, addr, ip, key = self.new("dev", n), self.new("addr", n), _ip(rng, ipc), own.copy()
        cust[own], acct[own], email[own] = victims, self.acct[victims], self.email[victims]
        key[own] = self.key[victims]
        dev[own], addr[own] = self.devs[victims, 0], self.addrs[victims, 0]
        ip[own] = self.ip[victims]
        ship[own] = ipc[own] = self.home[victims]
        return [
            self.block(
                1,
                np.exp(rng.normal(np.log(11000), 0.9, n)),
                FRAUD_CAT_P,
                [0.55, 0.3, 0.1, 0.05],
                0.15,
                cust=cust,
                ts=ts,
                acct=acct,
                key=key,
                email=email,
                channel=rng.choice(len(CHANNELS), n, p=FRAUD_CHANNEL_P),
                pay=0,
                card=self.new("card", n),
                bill=bill,
                ship=ship,
                addr=addr,
                ip=ip,
                ipc=ipc,
                dev=dev,
            )
        ]

    def card_testing(self, d0: int) -> list[Block]:
        rng = self.rng
        blocks = []
        for _ in range(rng.poisson(0.35 * self.scale)):
            n, m = int(rng.integers(10, 41)), int(rng.integers(1, 4))
            t = d0 + _hour_times(rng, FRAUD_HOURS, 1)[0]
            accounts = self.new("cust", m)
            aged = rng.random(m) < 0.4
            age = np.where(aged, rng.integers(DAY, 300 * DAY, m), rng.integers(MINUTE, 2 * DAY, m))
            opened = t - age
            country = rng.choice(N_HOME, p=HOME_P)
            ipc = country if rng.random() < 0.6 else rng.choice(len(COUNTRIES), p=_p(RISKY_P))
            who = rng.integers(0, m, n)
            ts = t + np.sort(rng.integers(0, rng.integers(2, 25) * MINUTE, n))
            blocks.append(
                self.block(
                    2,
                    rng.uniform(100, 1500, n),
                    TESTING_CAT_P,
                    [1.0, 0, 0, 0],
                    0.0,
                    cust=accounts[who],
                    ts=ts,
                    acct=opened[who],
                    email=self.fraud_emails(m)[who],
                    channel=rng.choice(2),
                    pay=0,
                    card=self.new("card", n),
                    bill=np.where(rng.random(n) < 0.6, country, rng.choice(N_HOME, n, p=HOME_P)),
                    ship=country,
                    addr=self.new("addr", m)[who],
                    ip=(185 << 24) | int(rng.integers(0, 1 << 24)),
                    ipc=ipc,
                    dev=self.new("dev", 1)[0],
                )
            )
        return blocks

    def account_takeover(self, d0: int, f: float) -> list[Block]:
        rng = self.rng
        k = rng.poisson(14 * self.scale * min(1.0, 0.3 + 1.4 * f))
        victims = rng.choice(np.flatnonzero(self.acct < d0 - 90 * DAY), k)
        incident = np.repeat(np.arange(k), rng.integers(1, 4, k))
        cust, n = victims[incident], incident.size
        home = self.home[victims]
        ipc = np.where(rng.random(k) < 0.35, home, rng.choice(len(COUNTRIES), k, p=_p(RISKY_P)))
        ship = np.where(rng.random(k) < 0.7, home, rng.choice(len(COUNTRIES), k, p=_p(SHIP_P)))
        pay = np.where(rng.random(n) < 0.75, 0, 1)
        t = d0 + _hour_times(rng, FRAUD_HOURS, k)
        return [
            self.block(
                3,
                np.exp(rng.normal(np.log(16000), 0.9, n)),
                FRAUD_CAT_P,
                [0.5, 0.3, 0.15, 0.05],
                0.1,
                cust=cust,
                ts=t[incident] + rng.integers(0, 3 * HOUR, n),
                acct=self.acct[cust],
                key=self.key[cust],
                email=self.email[cust],
                channel=rng.choice(len(CHANNELS), n, p=FRAUD_CHANNEL_P),
                pay=pay,
                card=np.where(pay == 0, self.cards[cust, 0], -1),
                bill=self.bill[cust],
                ship=ship[incident],
                addr=self.new("addr", k)[incident],
                ip=_ip(rng, ipc)[incident],
                ipc=ipc[incident],
                dev=self.new("dev", k)[incident],
            )
        ]

    def drop_address(self, d0: int, f: float) -> list[Block]:
        rng = self.rng
        blocks = []
        for _ in range(rng.poisson(0.9 * self.scale) if f >= 0.1 else 0):
            m = int(rng.integers(3, 9))
            country = rng.choice(N_HOME, p=HOME_P)
            opened = d0 + rng.integers(-45 * DAY, 10 * DAY, m)
            who = np.repeat(np.arange(m), rng.integers(1, 4, m))
            n = who.size
            devices = self.new("dev", int(rng.integers(1, 4)))
            ipc = np.where(
                rng.random(n) < 0.7, country, rng.choice(len(COUNTRIES), n, p=_p(RISKY_P))
            )
            blocks.append(
                self.block(
                    4,
                    np.exp(rng.normal(np.log(10000), 0.8, n)),
                    FRAUD_CAT_P,
                    [0.5, 0.3, 0.15, 0.05],
                    0.2,
                    cust=self.new("cust", m)[who],
                    ts=np.maximum(opened, d0)[who] + rng.integers(10 * MINUTE, 4 * DAY, n),
                    acct=opened[who],
                    email=self.fraud_emails(m)[who],
                    channel=rng.choice(len(CHANNELS), n, p=FRAUD_CHANNEL_P),
                    pay=0,
                    card=self.new("card", m)[who],
                    bill=np.where(rng.random(m) < 0.7, country, rng.choice(N_HOME, m, p=HOME_P))[
                        who
                    ],
                    ship=country,
                    addr=self.new("addr", 1)[0],
                    ip=_ip(rng, ipc),
                    ipc=ipc,
                    dev=devices[rng.integers(0, devices.size, m)][who],
                )
            )
        return blocks

    def high_value_first_order(self, d0: int, f: float) -> list[Block]:
        rng = self.rng
        n = rng.poisson(13 * self.scale * (0.5 + f))
        ts = d0 + _hour_times(rng, FRAUD_HOURS, n)
        age = np.exp(rng.uniform(np.log(5 * MINUTE), np.log(6 * HOUR), n)).astype(np.int64)
        bill = rng.choice(N_HOME, n, p=HOME_P)
        ipc = np.where(rng.random(n) < 0.65, bill, rng.choice(len(COUNTRIES), n, p=_p(RISKY_P)))
        return [
            self.block(
                5,
                np.exp(rng.normal(np.log(15000), 0.8, n)),
                FIRST_ORDER_CAT_P,
                [0.7, 0.2, 0.07, 0.03],
                0.3,
                cust=self.new("cust", n),
                ts=ts,
                acct=ts - age,
                email=self.fraud_emails(n),
                channel=rng.choice(len(CHANNELS), n, p=FRAUD_CHANNEL_P),
                pay=0,
                card=self.new("card", n),
                bill=bill,
                ship=np.where(
                    rng.random(n) < 0.2, rng.choice(len(COUNTRIES), n, p=_p(SHIP_P)), bill
                ),
                addr=self.new("addr", n),
                ip=_ip(rng, ipc),
                ipc=ipc,
                dev=self.new("dev", n),
            )
        ]


def _token(prefix: str, ids: np.ndarray) -> pa.Array:
    """Opaque identifiers: ids are scrambled (salted by kind) so their order tells nothing."""
    salted = ids.astype(np.uint64) + np.uint64(zlib.crc32(prefix.encode()))
    scrambled = (salted * np.uint64(2654435761)) % np.uint64(10**10)
    digits = pc.utf8_lpad(pa.array(scrambled, mask=ids < 0).cast(pa.string()), 10, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _lookup(values: tuple[str, ...], index: np.ndarray) -> pa.Array:
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
    sku = pc.utf8_lpad(pa.array(col["sku"]).cast(pa.string()), 4, "0")
    lines = pa.StructArray.from_arrays(
        [
            pc.binary_join_element_wise(category, sku, "-"),
            category,
            pa.array(col["qty"], pa.int64()),
            pa.array(col["unit"], pa.int64()),
        ],
        fields=list(ITEM_TYPE),
    )
    inside = np.flatnonzero(col["ts"] < world.end)
    order = inside[np.argsort(col["ts"][inside], kind="stable")]
    items = pa.ListArray.from_arrays(offsets, lines, type=pa.list_(ITEM_TYPE)).take(order)
    c = {k: v[order] for k, v in col.items() if k not in LINE_KEYS}
    n = order.size
    fraud = c["scen"] > 0
    unknown = rng.random(n) < 0.005
    delay = np.where(fraud, 3 + 42 * rng.beta(1.2, 4.0, n), rng.uniform(30, 60, n)) * DAY
    card_bin = 100_000 * np.where(c["bill"] % 2, 5, 4) + 100 * ((c["bill"] * 137) % 1000)
    card_bin = card_bin + _mix(np.maximum(c["card"], 0)).astype(np.int64) % 100
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
        pa.array(fraud.astype(np.int8), mask=unknown),
        pa.array(c["ts"] + delay.astype(np.int64), TS, mask=unknown),
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
    progress: bool = False,
) -> pa.Table:
    """Labelled order history over `days` days from `start`, sorted by `created_at`.

    The columns are `HISTORY_SCHEMA`'s plus a trailing string `scenario` ("legit" or a fraud
    scenario name, see the module docstring). The same arguments give the same table.
    """
    if days < 1 or orders_per_day < 1:
        raise ValueError("days and orders_per_day must be positive")
    world = _World(days, seed, orders_per_day, start)
    blocks = [
        b
        for day in tqdm(range(days), desc="simulate", unit="day", disable=not progress)
        for b in world.day(day)
    ]
    return _table(world, blocks)


def main_simulate(days: int, out: str, seed: int = 7, orders_per_day: int = 6000) -> int:
    """Write a simulated history to `out` as zstd Parquet; return the number of rows."""
    table = simulate(days, seed=seed, orders_per_day=orders_per_day, progress=True)
    pq.write_table(table, out, compression="zstd")
    return table.num_rows
