"""Simulated support and exception cases for complex orders, labelled with a queue and a priority.

`simulate_cases(n, config=..., seed=...)` returns a table, one row per case:
case_id, language, subject, body, queue, priority, order_id, sku, category, quantity, amount
(EUR), customer_tier. Seeded and deterministic.

How a case is written:
- its queue (`QUEUES`, one per case type) is drawn from the configuration's mix, its language
  (English or German) from its German share;
- the order facts (SKU, category, quantity, amount, order id, dates, sites) are drawn per
  queue and written in the language's formats (12,500.00 EUR / 12.500,00 EUR);
- the subject is one of the queue's paraphrases (sometimes a generic one that says nothing);
  the body is a greeting, an order-facts sentence, one to three of the queue's sentence slots
  (each a paraphrase), sometimes a passing mention of another queue's topic, sometimes an
  urgency cue matching the priority, and a closing;
- noise: typos (swapped, dropped, doubled or replaced letters), bodies in lower case,
  umlauts written as ae/oe/ue/ss;
- the priority depends on the queue and the amount; a share of labels is wrong (another
  queue, or an adjacent priority), as in hand-labelled history.

Two configurations: `default`, which the text model's choices were made on, and `shifted`
(other paraphrases favoured, more noise, more German, another queue mix, fewer urgency
cues), so a model is also judged on text it was not designed against.
"""

from __future__ import annotations

import math
import random
import string
from dataclasses import dataclass
from types import ModuleType

import pyarrow as pa

from engine.errors import InvalidInput
from engine.routing.order_features import TIERS
from engine.routing.phrases import de, en
from engine.routing.team import PRIORITIES

QUEUES = tuple(en.SUBJECT)
LANGUAGES: dict[str, ModuleType] = {"en": en, "de": de}

# Priority shares (low, normal, high, urgent) by queue, before the amount moves them.
_PRIORITY_MIX = {
    "hardware_config": (0.15, 0.55, 0.25, 0.05),
    "installation": (0.10, 0.50, 0.30, 0.10),
    "payment_terms": (0.30, 0.50, 0.15, 0.05),
    "service_agreement": (0.35, 0.45, 0.15, 0.05),
    "volume_discount": (0.40, 0.45, 0.12, 0.03),
    "delivery_exception": (0.05, 0.40, 0.35, 0.20),
    "returns_rma": (0.20, 0.50, 0.25, 0.05),
    "fraud_review": (0.02, 0.28, 0.45, 0.25),
}
# Categories a queue's orders are in, with weights (server, storage, network, client).
_CATEGORY_MIX = {
    "hardware_config": (0.6, 0.3, 0.1, 0.0),
    "installation": (0.45, 0.25, 0.3, 0.0),
    "volume_discount": (0.1, 0.05, 0.25, 0.6),
}
_CATEGORIES = ("server", "storage", "network", "client")
_SKU_PREFIX = {"server": "SRV", "storage": "STO", "network": "NET", "client": "CLT"}
_UNIT_PRICE = {"server": (3000, 15000), "storage": (4000, 30000), "network": (400, 5000),
               "client": (700, 3000)}  # fmt: skip
_SITES = {"en": ("Chicago", "Leeds", "Dublin", "Austin", "Toronto"),
          "de": ("München", "Hamburg", "Köln", "Düsseldorf", "Nürnberg")}  # fmt: skip
_COUNTRIES = {"en": ("Brazil", "Nigeria", "Romania", "Vietnam"),
              "de": ("Brasilien", "Nigeria", "Rumänien", "Vietnam")}  # fmt: skip
_NAMES = ("A. Novak", "J. Smith", "M. Keller", "S. Yilmaz", "L. Fischer", "P. Brown")
_COMPANIES = ("Nordwerk GmbH", "Acme Logistics", "Helix AG", "Bluefin Ltd", "Kraft & Co. KG")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")  # fmt: skip
_TRANSLIT = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "Ä": "Ae", "Ö": "Oe",
                           "Ü": "Ue"})  # fmt: skip


@dataclass(frozen=True)
class CaseSimConfig:
    """One simulated world. Shares are probabilities per case unless said otherwise."""

    german_share: float
    paraphrase_skew: float
    """Weight of paraphrase i is exp(-skew * i): > 0 favours a slot's first wordings."""
    typo_rate: float
    """Per word of four letters or more."""
    lowercase_share: float
    translit_share: float
    """Of German cases: umlauts and ß written as ae, oe, ue, ss."""
    mention_share: float
    """A passing mention of another queue's topic."""
    cue_share: float
    """An urgency cue matching the priority (none for `normal` with half this chance)."""
    generic_subject_share: float
    label_noise: float
    queue_mix: tuple[float, ...]


CONFIGS = {
    "default": CaseSimConfig(
        german_share=0.3, paraphrase_skew=0.8, typo_rate=0.02, lowercase_share=0.1,
        translit_share=0.2, mention_share=0.25, cue_share=0.6, generic_subject_share=0.1,
        label_noise=0.02, queue_mix=(0.14, 0.12, 0.12, 0.10, 0.10, 0.16, 0.14, 0.12),
    ),
    "shifted": CaseSimConfig(
        german_share=0.5, paraphrase_skew=-0.8, typo_rate=0.06, lowercase_share=0.3,
        translit_share=0.5, mention_share=0.4, cue_share=0.4, generic_subject_share=0.25,
        label_noise=0.02, queue_mix=(0.08, 0.10, 0.16, 0.14, 0.08, 0.12, 0.12, 0.20),
    ),
}  # fmt: skip


class _Writer:
    """Draws the wording and noise of cases for one configuration from one generator."""

    def __init__(self, config: CaseSimConfig, rng: random.Random) -> None:
        self.cfg = config
        self.rng = rng
        self._weights = {
            k: [math.exp(-config.paraphrase_skew * i) for i in range(k)] for k in range(1, 9)
        }

    def pick(self, options: tuple[str, ...]) -> str:
        return self.rng.choices(options, weights=self._weights[len(options)])[0]

    def any(self, options: tuple[str, ...]) -> str:
        return self.rng.choice(options)

    def typos(self, text: str, rate: float) -> str:
        words = text.split(" ")
        for i, w in enumerate(words):
            if len(w) < 4 or not w.isalpha() or self.rng.random() >= rate:
                continue
            k = self.rng.randint(1, len(w) - 2)
            kind = self.rng.randrange(4)
            if kind == 0:
                w = w[:k] + w[k + 1] + w[k] + w[k + 2 :]
            elif kind == 1:
                w = w[:k] + w[k + 1 :]
            elif kind == 2:
                w = w[:k] + w[k] + w[k:]
            else:
                w = w[:k] + self.rng.choice(string.ascii_lowercase) + w[k + 1 :]
            words[i] = w
        return " ".join(words)


def _amount(value: float, lang: str, rng: random.Random) -> str:
    text = f"{value:,.2f}"
    if lang == "de":
        text = text.replace(",", "_").replace(".", ",").replace("_", ".")
        return f"{text} €" if rng.random() < 0.5 else f"{text} EUR"
    return f"EUR {text}" if rng.random() < 0.5 else f"{text} EUR"


def _date(lang: str, rng: random.Random) -> str:
    month, day = rng.randint(1, 12), rng.randint(1, 28)
    if lang == "de":
        return f"{day:02d}.{month:02d}."
    return f"{_MONTHS[month - 1]} {day}" if rng.random() < 0.6 else f"2025-{month:02d}-{day:02d}"


def facts(queue: str, lang: str, rng: random.Random) -> dict[str, object]:
    """The order facts of one case: the placeholders of the phrases, and the table's columns."""
    mix = _CATEGORY_MIX.get(queue, (0.3, 0.2, 0.2, 0.3))
    category = rng.choices(_CATEGORIES, weights=mix)[0]
    if queue == "volume_discount":
        qty = rng.randint(50, 2000)
    elif queue == "hardware_config":
        qty = rng.randint(2, 40)
    else:
        qty = rng.randint(1, 20)
    lo, hi = _UNIT_PRICE[category]
    amount = round(qty * rng.uniform(lo, hi), 2)
    module = LANGUAGES[lang]
    sku = f"{_SKU_PREFIX[category]}-{rng.randint(1000, 9999)}-{rng.choice('ABCRX')}"
    return {
        "order": f"SO-{rng.randint(100000, 999999)}",
        "sku": sku,
        "category": category,
        "qty": qty,
        "amount_value": amount,
        "amount": _amount(amount, lang, rng),
        "product": rng.choice(module.PRODUCTS[category]),
        "raid": rng.choice((1, 5, 6, 10)),
        "ram": rng.choice((64, 128, 256, 512, 1024)),
        "site": rng.choice(_SITES[lang]),
        "date": _date(lang, rng),
        "days": rng.choice((30, 45, 60, 90, 120)),
        "hours": rng.choice((4, 8, 24)),
        "years": rng.choice((3, 4, 5)),
        "pct": rng.randint(5, 25),
        "tracking": f"1Z{rng.randint(10**9, 10**10 - 1)}",
        "rma": f"E{rng.randint(100, 999)}",
        "country": rng.choice(_COUNTRIES[lang]),
        "name": rng.choice(_NAMES),
        "company": rng.choice(_COMPANIES),
    }


def _priority(queue: str, amount: float, rng: random.Random) -> int:
    p = rng.choices(range(4), weights=_PRIORITY_MIX[queue])[0]
    if amount > 100_000 and rng.random() < 0.5:
        p = min(p + 1, 3)
    return p


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _case(w: _Writer, queue: str, lang: str) -> dict[str, object]:
    cfg, rng, m = w.cfg, w.rng, LANGUAGES[lang]
    f = facts(queue, lang, rng)
    priority = _priority(queue, float(f["amount_value"]), rng)  # type: ignore[arg-type]
    generic = rng.random() < cfg.generic_subject_share
    subject = w.any(m.GENERIC_SUBJECT) if generic else w.pick(m.SUBJECT[queue])
    slots = m.CORE[queue]
    k = rng.choices((1, 2, 3), weights=(0.3, 0.5, 0.2))[0]
    chosen = sorted(rng.sample(range(len(slots)), k))
    sentences = [w.pick(slots[i]) for i in chosen]
    if rng.random() < 0.8:
        at = 0 if rng.random() < 0.7 else len(sentences)
        sentences.insert(at, w.any(m.FACTS))
    if rng.random() < cfg.mention_share:
        other = rng.choice([q for q in QUEUES if q != queue])
        sentences.insert(rng.randint(0, len(sentences)), w.any(m.MENTION[other]))
    level = PRIORITIES[priority]
    if rng.random() < (cfg.cue_share / 2 if level == "normal" else cfg.cue_share):
        sentences.append(w.any(m.URGENCY[level]))
    body = ". ".join(_sentence(s.rstrip(".")) for s in sentences) + "."
    greeting, closing = w.any(m.GREETING), w.any(m.CLOSING)
    body = "\n\n".join(x for x in (f"{greeting}," if greeting else "", body, closing) if x)
    body, subject = body.format(**f), subject.format(**f)
    body, subject = w.typos(body, cfg.typo_rate), w.typos(subject, cfg.typo_rate / 2)
    if rng.random() < cfg.lowercase_share:
        body = body.lower()
    if lang == "de" and rng.random() < cfg.translit_share:
        body, subject = body.translate(_TRANSLIT), subject.translate(_TRANSLIT)
    label = queue
    if rng.random() < cfg.label_noise:
        label = rng.choice([q for q in QUEUES if q != queue])
    if rng.random() < cfg.label_noise:
        priority = min(max(priority + rng.choice((-1, 1)), 0), 3)
    return {
        "language": lang,
        "subject": subject,
        "body": body,
        "queue": label,
        "priority": PRIORITIES[priority],
        "order_id": f["order"],
        "sku": f["sku"],
        "category": f["category"],
        "quantity": f["qty"],
        "amount": f["amount_value"],
        "customer_tier": rng.choices(TIERS, weights=(0.25, 0.6, 0.15))[0],
    }


def simulate_cases(n: int, *, config: str = "default", seed: int = 7) -> pa.Table:
    """`n` simulated cases of `config` (a key of CONFIGS); equal arguments, equal tables."""
    if n < 1:
        raise InvalidInput(f"--cases must be >= 1, is {n}", "cases")
    if config not in CONFIGS:
        raise InvalidInput(f"--config must be one of {', '.join(CONFIGS)}, is {config!r}", "config")
    cfg = CONFIGS[config]
    rng = random.Random(f"{config}/{seed}")
    writer = _Writer(cfg, rng)
    queues = rng.choices(QUEUES, weights=cfg.queue_mix, k=n)
    rows = [_case(writer, q, "de" if rng.random() < cfg.german_share else "en") for q in queues]
    columns: dict[str, list[object]] = {"case_id": [f"{config}-{seed}-{i:06d}" for i in range(n)]}
    for key in rows[0]:
        columns[key] = [r[key] for r in rows]
    return pa.table(columns)
