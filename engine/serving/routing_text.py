"""The routing text model's reading of Route calls' texts, one model run per group of calls
(`engine.serving.routing` reads a group's texts on its thread before the group's
transaction begins, so the store is not locked while the model runs). One call alone runs
the model's sparse heads; several at once its dense heads, cheaper per case."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from engine.routing.text_model import TextRouter


class TextRead(NamedTuple):
    category: str  # the label, or GENERAL below the model's threshold
    confidence: float
    top: str  # the label, whatever its probability
    priority: str | None  # None: a model without a priority head
    priority_probs: dict[str, float] | None


def read_texts(text: TextRouter, cases: Sequence[tuple[str, str]]) -> list[TextRead]:
    """Each (subject, body)'s reading, in order."""
    if not cases:
        return []
    columns = [[s for s, _ in cases], [b for _, b in cases]][: len(text.text_cols)]
    got = text.route(columns)
    out = []
    for i, category in enumerate(got.predicted):
        probs = None
        if got.priority_probs is not None:
            row = map(float, got.priority_probs[i])
            probs = dict(zip(text.priority_labels, row, strict=True))
        priority = got.priority[i] if got.priority is not None else None
        out.append(TextRead(category, float(got.confidence[i]), got.top[i], priority, probs))
    return out
