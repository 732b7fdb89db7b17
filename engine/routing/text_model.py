"""The routing text model: train a model folder from labelled cases, load it, route cases.

    from engine.routing.text_model import TextRouter, train
    router, fitted = train(columns, labels, priorities, TrainOptions(), out, text_cols=...)
    router = TextRouter.load(out)             # verifies checksums and parity
    r = router.route([subjects, bodies])      # one list per text column, in text_cols order
    r.predicted    # label per row, or GENERAL below the threshold
    r.confidence   # float32: the top queue probability
    r.priority     # label per row, or None without a priority head

A folder holds:
- `manifest.json`: format, kind, version, text and label columns, labels, the GENERAL label,
  the threshold and how it was chosen, validation figures, parity, feature sizes, library
  versions, and each file's sha256;
- `model.onnx`: the graph (`engine.routing.onnx_export`);
- `parity.json`: prepared texts made of the model's own words and scikit-learn's
  probabilities for them.

`train` refuses (ModelLoadError) to write a folder whose graph differs from scikit-learn on
the validation rows or the parity sample. `TextRouter.load` refuses (ModelLoadError) a
folder without a readable manifest of this kind and format, a file missing or not matching
its checksum, a graph onnxruntime cannot open or whose outputs do not match the labels, and
a graph that does not reproduce parity.json (an onnxruntime that computes differently).
The manifest is written last, so an interrupted training leaves no loadable folder.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import onnxruntime as ort

from engine.checksums import sha256
from engine.errors import ModelLoadError
from engine.routing import text_session
from engine.routing.text_prep import CHAR_NGRAMS, GENERAL, SEPARATOR, WORD_NGRAMS, prepare

if TYPE_CHECKING:
    from engine.routing.text_fit import FittedText, TrainOptions
    from engine.routing.text_session import Parity

FORMAT = 1
KIND = "routing-text"
MANIFEST = "manifest.json"
MODEL_FILE = "model.onnx"
SPARSE_ROWS = 2
"""Calls of at most this many rows run the graph with sparse heads; larger ones the dense
graph: the sparse product's cost grows with the non-zeros of every row, the dense one's
is mostly reading the weights once, so the dense graph wins as rows are added."""
PARITY_FILE = "parity.json"


class RoutePrediction(NamedTuple):
    predicted: list[str]
    """The top label, or GENERAL where its probability is below the threshold."""
    confidence: np.ndarray
    """float32: the top label's probability."""
    priority: list[str] | None
    top: list[str]
    """The top label, whatever its probability."""
    priority_probs: np.ndarray | None = None
    """float32 (rows, priorities): each priority's probability, in priority_labels order."""


@dataclass
class TextRouter:
    """A loaded model folder; `route` is safe to call from several threads."""

    version: str
    text_cols: tuple[str, ...]
    labels: tuple[str, ...]
    priority_labels: tuple[str, ...]
    threshold: float
    manifest: dict[str, Any] = field(repr=False)
    session: ort.InferenceSession = field(repr=False)
    small: ort.InferenceSession | None = field(default=None, repr=False)
    """The same graph with sparse heads (`onnx_export.sparse_heads`), for a call of at most
    SPARSE_ROWS rows."""

    @property
    def heads(self) -> tuple[str, ...]:
        return ("queue", "priority") if self.priority_labels else ("queue",)

    @classmethod
    def load(cls, path: str | Path, threads: int = 1) -> TextRouter:
        root = Path(path)
        manifest = _read_manifest(root)
        try:
            files = manifest["files"]
            model_path = _verified(root, files, MODEL_FILE)
            parity_path = _verified(root, files, PARITY_FILE)
            labels = tuple(str(v) for v in manifest["labels"])
            priority_labels = tuple(str(v) for v in manifest.get("priority_labels") or ())
            router = cls(
                version=str(manifest["version"]),
                text_cols=tuple(str(c) for c in manifest["text_cols"]),
                labels=labels,
                priority_labels=priority_labels,
                threshold=float(manifest["threshold"]["min_confidence"]),
                manifest=manifest,
                session=_open(model_path, threads),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"{root / MANIFEST}: incomplete ({exc!r})") from exc
        router._check_outputs(root)
        router._check_parity(parity_path)
        router.small = _sparse_session(model_path, threads)
        router._check_parity(parity_path, router.small)
        return router

    def _check_outputs(self, root: Path) -> None:
        shapes = {o.name: o.shape for o in self.session.get_outputs()}
        for head, labels in (("queue", self.labels), ("priority", self.priority_labels)):
            if head not in self.heads:
                continue
            shape = shapes.get(text_session.output_name(head))
            if shape is None or shape[1] != len(labels):
                raise ModelLoadError(
                    f"{root / MODEL_FILE}: output {text_session.output_name(head)} should have "
                    f"{len(labels)} columns (the manifest's labels), has shape {shape}"
                )

    def _check_parity(self, path: Path, sess: ort.InferenceSession | None = None) -> None:
        try:
            sample = json.loads(path.read_bytes())
            texts = [str(t) for t in sample["texts"]]
            want = [np.asarray(sample[h], np.float64) for h in self.heads]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
            raise ModelLoadError(f"{path}: not a parity sample ({e!r})") from e
        got = text_session.run(sess or self.session, texts, self.heads)
        parity = text_session.compare(got, want)
        if not parity.ok:
            raise ModelLoadError(text_session.describe(parity, str(path)))

    def route_texts(self, texts: list[str]) -> RoutePrediction:
        """Route prepared texts (`engine.routing.text_prep.prepare`)."""
        sess = self.small if self.small is not None and len(texts) <= SPARSE_ROWS else self.session
        probs = text_session.run(sess, texts, self.heads)
        queue = probs[0]
        best = queue.argmax(axis=1)
        confidence = queue[np.arange(len(texts)), best]
        top = np.asarray(self.labels, dtype=object)[best]
        names = top.copy()
        names[confidence < self.threshold] = GENERAL
        priority = None
        if len(probs) > 1:
            priority = np.asarray(self.priority_labels, dtype=object)[probs[1].argmax(axis=1)]
        return RoutePrediction(
            names.tolist(),
            confidence,
            None if priority is None else priority.tolist(),
            top.tolist(),
            probs[1] if len(probs) > 1 else None,
        )

    def route(self, columns: Sequence[Sequence[str]]) -> RoutePrediction:
        """Route rows given as one sequence of text per column of `text_cols`, in order."""
        if len(columns) != len(self.text_cols):
            raise ValueError(
                f"expected {len(self.text_cols)} text columns {self.text_cols}, got {len(columns)}"
            )
        return self.route_texts(prepare(columns))


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not path.is_file():
        raise ModelLoadError(f"no {MANIFEST} in {root} (a folder written by route train)")
    try:
        manifest = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("kind") != KIND:
        raise ModelLoadError(f"{path}: kind must be {KIND!r}, is {_get(manifest, 'kind')!r}")
    if manifest.get("format") != FORMAT:
        raise ModelLoadError(f"{path}: format must be {FORMAT}, is {manifest.get('format')!r}")
    return manifest


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else None


def _verified(root: Path, files: Any, name: str) -> Path:
    path = root / name
    want = _get(_get(files, name), "sha256")
    if not want:
        raise ModelLoadError(f"{root / MANIFEST}: no checksum for {name}")
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing")
    if sha256(path) != want:
        raise ModelLoadError(f"{path} does not match its checksum in the manifest")
    return path


def _sparse_session(path: Path, threads: int) -> ort.InferenceSession:
    """The verified graph at `path` with sparse heads."""
    import onnx

    from engine.routing.onnx_export import sparse_heads

    try:
        model = sparse_heads(onnx.load_model_from_string(path.read_bytes()))
        return text_session.session(model.SerializeToString(), threads)
    except Exception as exc:  # a graph of another shape: refused like any unusable graph
        raise ModelLoadError(f"{path}: its heads cannot be made sparse ({exc})") from exc


def _open(path: Path, threads: int) -> ort.InferenceSession:
    try:
        return text_session.session(path.read_bytes(), threads)
    except Exception as exc:  # onnxruntime raises its own (unexported) exception types
        raise ModelLoadError(f"{path}: onnxruntime cannot open it ({exc})") from exc


def _write(path: Path, data: bytes) -> str:
    """Write `data` to `path` through a temporary file and a rename; return its sha256."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return sha256(path)


def _manifest(
    fitted: FittedText,
    files: dict[str, str],
    parity: Parity,
    *,
    text_cols: tuple[str, ...],
    label_col: str,
    priority_col: str | None,
    options: TrainOptions,
) -> dict[str, Any]:
    import skl2onnx
    import sklearn

    from engine.routing.onnx_export import OPSET

    word, char = (t for _, t in fitted.features.transformer_list)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return {
        "format": FORMAT,
        "kind": KIND,
        "version": f"route-{stamp}-{files[MODEL_FILE][:8]}",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "text_cols": list(text_cols),
        "separator": SEPARATOR,
        "label_col": label_col,
        "priority_col": priority_col,
        "labels": list(fitted.labels),
        "priority_labels": list(fitted.priority_labels) or None,
        "general_label": GENERAL,
        "threshold": {"min_confidence": fitted.threshold, **fitted.threshold_info},
        "validation": fitted.validation,
        "parity": {
            "rows": parity.rows,
            "max_abs_error": parity.max_error,
            "tolerance": text_session.PARITY_TOLERANCE,
        },
        "features": {
            "word_ngrams": list(WORD_NGRAMS),
            "char_wb_ngrams": list(CHAR_NGRAMS),
            "word_features": len(word.vocabulary_),
            "char_features": len(char.vocabulary_),
            "min_df": options.min_df,
        },
        "classifier": {"type": "LogisticRegression", "C": fitted.c, "class_weight": "balanced"},
        "versions": {
            "scikit-learn": sklearn.__version__,
            "skl2onnx": skl2onnx.__version__,
            "onnxruntime": ort.__version__,
            "opset": OPSET,
        },
        "files": {name: {"sha256": digest} for name, digest in files.items()},
    }


def train(
    columns: Sequence[Sequence[str]],
    labels: Sequence[str],
    priorities: Sequence[str] | None,
    options: TrainOptions,
    out: str | Path,
    *,
    text_cols: tuple[str, ...],
    label_col: str,
    priority_col: str | None = None,
) -> tuple[TextRouter, FittedText]:
    """Fit, export, check parity, write the folder `out`; the loaded router and the
    scikit-learn parts (what tests and benchmarks compare with)."""
    from engine.routing import onnx_export
    from engine.routing.text_fit import fit

    fitted = fit(columns, labels, priorities, options)
    try:
        graph = onnx_export.to_onnx(fitted).SerializeToString()
        sess = text_session.session(graph)
    except Exception as exc:  # skl2onnx and onnxruntime raise their own types
        raise ModelLoadError(
            f"refusing to write the model: its ONNX graph does not convert or open ({exc})"
        ) from exc
    sample = onnx_export.parity_sample(fitted)
    parity = onnx_export.check_parity(sess, fitted, fitted.validation_texts + sample)
    if not parity.ok:
        raise ModelLoadError(
            "refusing to write the model: "
            + text_session.describe(parity, "the validation rows and the parity sample")
        )
    queue, priority = fitted.predict_proba(sample)
    record: dict[str, Any] = {"texts": sample, "queue": queue.tolist()}
    if priority is not None:
        record["priority"] = priority.tolist()
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST).unlink(missing_ok=True)  # the folder is not loadable until complete
    files = {
        MODEL_FILE: _write(root / MODEL_FILE, graph),
        PARITY_FILE: _write(root / PARITY_FILE, json.dumps(record).encode()),
    }
    manifest = _manifest(
        fitted,
        files,
        parity,
        text_cols=text_cols,
        label_col=label_col,
        priority_col=priority_col,
        options=options,
    )
    _write(root / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False).encode())
    return TextRouter.load(root), fitted
