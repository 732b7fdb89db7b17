"""One report folder: `README.md` (Markdown) and the PNG figures it links, written at once.

Every report (`ordersight report ...`, `ordersight audit data`) builds a `Report`, adds
headings, paragraphs, tables and matplotlib figures in reading order, then `write()`s it, so
a folder never holds half a report: the Markdown is written to a temporary name and renamed.
Figures use matplotlib's Agg backend (no screen needed).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

INDEX = "README.md"


def cell(value: Any, digits: int = 3) -> str:
    """A table cell: floats to `digits` significant places, NaN/None as an en dash, other
    values as text with pipes escaped (a cell is user data: a segment name, a column)."""
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if value != 0 and (abs(value) >= 1e7 or abs(value) < 10.0**-digits):
            return f"{value:.{digits}g}"
        return f"{value:,.{digits}f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value).replace("|", "\\|").replace("\n", " ")


class Report:
    """A report being built; `write()` puts it in `folder` (created if missing)."""

    def __init__(self, folder: str | Path, title: str) -> None:
        self.folder = Path(folder)
        self.parts: list[str] = [f"# {title}", ""]
        self.figures: list[tuple[str, Any]] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.parts += ["#" * level + " " + text, ""]

    def para(self, text: str) -> None:
        self.parts += [text, ""]

    def bullets(self, items: Sequence[str]) -> None:
        self.parts += [f"- {i}" for i in items] + [""]

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 3) -> None:
        self.parts.append("| " + " | ".join(cell(h) for h in headers) + " |")
        self.parts.append("|" + "|".join("---" for _ in headers) + "|")
        for r in rows:
            self.parts.append("| " + " | ".join(cell(v, digits) for v in r) + " |")
        self.parts.append("")

    def figure(self, name: str, fig: Any, caption: str = "") -> None:
        """A matplotlib figure saved as `name`.png beside the Markdown, linked here."""
        if not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"figure name {name!r}: letters, digits, '-' and '_' only")
        self.figures.append((f"{name}.png", fig))
        self.parts += [f"![{caption or name}]({name}.png)", ""]

    @property
    def text(self) -> str:
        return "\n".join(self.parts).rstrip() + "\n"

    def write(self) -> Path:
        """Write the figures, then the Markdown (renamed into place); the Markdown's path."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.folder.mkdir(parents=True, exist_ok=True)
        for name, fig in self.figures:
            fig.savefig(self.folder / name, dpi=110, bbox_inches="tight")
            plt.close(fig)
        out = self.folder / INDEX
        tmp = out.with_suffix(".md.tmp")
        tmp.write_text(self.text)
        os.replace(tmp, out)
        return out


def figure(width: float = 7.0, height: float = 3.2) -> tuple[Any, Any]:
    """A new (figure, axes) on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))
