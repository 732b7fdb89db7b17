"""Running a routing text graph with onnxruntime, and comparing it with scikit-learn.

Only NumPy and onnxruntime: `route predict` loads this, not scikit-learn or skl2onnx.

`compare` is the parity rule: the largest absolute difference between the graph's
probabilities and the reference's must be within `PARITY_TOLERANCE` (a float32 graph against
a float64 model), and the argmax must agree on every row whose top two reference
probabilities are further apart than twice the tolerance.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import onnxruntime as ort

INPUT = "text"
PARITY_TOLERANCE = 1e-4
CHUNK = 64
"""Rows per onnxruntime call: the TF-IDF stage is dense, so a call holds CHUNK x features
float32 values; 64 keeps that to a few MB at the vocabulary cap and the per-call overhead
small against the rows' work."""


def output_name(head: str) -> str:
    return f"{head}_probabilities"


def session(model: bytes, threads: int = 1) -> ort.InferenceSession:
    """An onnxruntime session on `threads` intra-op threads, operators run one at a time."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def run(sess: ort.InferenceSession, texts: list[str], heads: tuple[str, ...]) -> list[np.ndarray]:
    """Each head's probabilities (float32 [len(texts), labels]) for prepared texts."""
    names = [output_name(h) for h in heads]
    if not texts:
        shapes = {o.name: o.shape for o in sess.get_outputs()}
        return [np.zeros((0, int(shapes[n][1])), np.float32) for n in names]
    chunks: list[list[np.ndarray]] = [[] for _ in names]
    for start in range(0, len(texts), CHUNK):
        batch = np.asarray(texts[start : start + CHUNK], dtype=object).reshape(-1, 1)
        for i, out in enumerate(sess.run(names, {INPUT: batch})):
            chunks[i].append(out)
    return [np.concatenate(c) for c in chunks]


class Parity(NamedTuple):
    rows: int
    max_error: float
    label_mismatches: int

    @property
    def ok(self) -> bool:
        return self.max_error <= PARITY_TOLERANCE and self.label_mismatches == 0


def compare(ours: list[np.ndarray], reference: list[np.ndarray]) -> Parity:
    """Parity of the graph's probabilities with the reference's (see the module docstring)."""
    worst, mismatches, rows = 0.0, 0, 0
    for got, want in zip(ours, reference, strict=True):
        want = np.asarray(want, np.float64)
        rows = len(want)
        if got.shape != want.shape:
            return Parity(rows, float("inf"), rows)
        if not rows:
            continue
        worst = max(worst, float(np.abs(got - want).max()))
        top2 = np.sort(want, axis=1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > 2 * PARITY_TOLERANCE
        mismatches += int((got.argmax(axis=1) != want.argmax(axis=1))[clear].sum())
    return Parity(rows, worst, mismatches)


def describe(parity: Parity, what: str) -> str:
    return (
        f"{what}: onnxruntime differs from scikit-learn by up to {parity.max_error:.2e} "
        f"(tolerance {PARITY_TOLERANCE:g}) with {parity.label_mismatches} different labels "
        f"on {parity.rows} rows"
    )
