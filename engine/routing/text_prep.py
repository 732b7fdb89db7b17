"""The one rule for the text a routing model reads; training, `route predict`, the parity
check and the benchmarks all call `prepare`.

Per row: each text column is case-folded the Unicode way (NFKC, casefold, NFKC), every
run of characters that are not letters or digits (in any script; `_` too) becomes one
space, the columns are joined with `SEPARATOR`, and the result is padded with a space on
each side. Nothing is specific to a language: no stop words, no stemming. The padding and
the single spaces are what let the character n-grams run in ONNX exactly as scikit-learn's
`char_wb` analyzer counts them (see `engine.routing.onnx_export`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

GENERAL = "GENERAL"
"""The queue a case goes to when the model is not confident enough to name one."""
SEPARATOR = " | "
WORD_TOKEN = r"[^ ]+"
"""Words of prepared text are what lies between single spaces (the same rule in ONNX)."""
WORD_NGRAMS = (1, 2)
CHAR_NGRAMS = (2, 5)
_NON_WORD = re.compile(r"[\W_]+")


def prepare(columns: Sequence[Sequence[str]]) -> list[str]:
    """The text the model reads for each row of `columns` (one sequence per text column)."""

    def one(text: str) -> str:
        folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
        return _NON_WORD.sub(" ", folded).strip()

    return [" " + SEPARATOR.join(one(t) for t in row) + " " for row in zip(*columns, strict=True)]
