"""The scikit-learn side of the routing text model: fitting and the confidence threshold.

The model reads text prepared by `engine.routing.text_prep.prepare`: TF-IDF over word
1-2-grams and over `char_wb` 2-5-grams (the character grams carry typos, inflections and
compounds, in any language), the two concatenated, and a multinomial `LogisticRegression`
per head (queue, optionally priority). Logistic regression because its softmax is a
probability the low-confidence rule can threshold directly (a LinearSVC would need a
calibration wrapper, cross-validated fits and a larger graph), and in the graph it is two
matrix products and a softmax (`engine.routing.onnx_export`). `sublinear_tf` stays off:
skl2onnx writes log(1 + tf) where scikit-learn computes 1 + log(tf), so the two would
disagree. The vocabularies are capped (`TrainOptions.max_*_features`): the ONNX TF-IDF is
dense, so a case costs time in proportion to the vocabulary, and the cap bounds it.

`fit` holds out a stratified validation share and fits the features on the rest. On the
validation share it picks logistic regression's C from `TrainOptions.c_grid` (by macro-F1;
both heads use it) and then the confidence threshold: the lowest at which the cases routed
(top probability at or above it) keep `target_precision`; a case below it goes to
`GENERAL`. It then refits on every row, as scikit-learn's TunedThresholdClassifierCV does by
default, and keeps C and the threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import FeatureUnion
from threadpoolctl import threadpool_limits

from engine.errors import InvalidInput
from engine.routing.text_prep import CHAR_NGRAMS, SEPARATOR, WORD_NGRAMS, WORD_TOKEN, prepare


@dataclass(frozen=True)
class TrainOptions:
    min_confidence: float | None = None
    """A fixed threshold instead of one chosen on the validation split."""
    target_precision: float = 0.9
    validation_share: float = 0.2
    c_grid: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0)
    """LogisticRegression's C is chosen from these on the validation split (`_choose_c`)."""
    min_df: int = 2
    """A gram in fewer cases than this is left out (it cannot generalise)."""
    max_word_features: int = 20_000
    max_char_features: int = 30_000
    seed: int = 7

    def check(self) -> None:
        if self.min_confidence is not None and not 0.0 <= self.min_confidence <= 1.0:
            raise InvalidInput(
                f"--min-confidence must be in [0, 1], is {self.min_confidence}", "min_confidence"
            )
        if not self.c_grid or any(not c > 0 for c in self.c_grid):
            raise ValueError(f"c_grid must be positive numbers, is {self.c_grid}")
        if not 0.0 < self.target_precision <= 1.0:
            raise InvalidInput(
                f"--target-precision must be in (0, 1], is {self.target_precision}",
                "target_precision",
            )


@dataclass
class FittedText:
    """Fitted scikit-learn parts (what ONNX is checked against) and what training chose."""

    features: FeatureUnion
    queue: LogisticRegression
    labels: tuple[str, ...]
    priority: LogisticRegression | None = None
    priority_labels: tuple[str, ...] = ()
    c: float = 1.0
    threshold: float = 0.0
    threshold_info: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    validation_texts: list[str] = field(default_factory=list)

    def predict_proba(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """scikit-learn's probabilities (queue, priority or None) for prepared texts."""
        x = self.features.transform(texts)
        p = self.priority.predict_proba(x) if self.priority is not None else None
        return self.queue.predict_proba(x), p


def _features(options: TrainOptions) -> FeatureUnion:
    common: dict[str, Any] = {"lowercase": False, "min_df": options.min_df, "dtype": np.float32}
    word = TfidfVectorizer(
        analyzer="word",
        token_pattern=WORD_TOKEN,
        ngram_range=WORD_NGRAMS,
        max_features=options.max_word_features,
        **common,
    )
    char = TfidfVectorizer(
        analyzer="char_wb",
        ngram_range=CHAR_NGRAMS,
        max_features=options.max_char_features,
        **common,
    )
    return FeatureUnion([("word", word), ("char", char)])


def _exportable(vec: TfidfVectorizer, texts: list[str]) -> None:
    """Make a fitted vectorizer's vocabulary one that skl2onnx converts faithfully, refitting
    on a fixed vocabulary when grams must go (rare: the vocabulary cap cutting between grams
    whose counts tie, or tiny corpora):
    - every word of a kept word bigram is kept itself: the graph counts a bigram as a pair
      of kept words;
    - the gram lengths present run without a gap from the shortest, and `ngram_range` is set
      to them: the converter indexes its pool by length, and a missing length shifts it.
    Narrowing `ngram_range` to the lengths present changes no count."""

    def size(g: str) -> int:
        return len(g.split(" ")) if vec.analyzer == "word" else len(g)

    vocab: dict[str, int] = vec.vocabulary_
    keep = [g for g in vocab if size(g) == 1 or vec.analyzer != "word"
            or all(w in vocab for w in g.split(" "))]  # fmt: skip
    lengths = {size(g) for g in keep}
    lo = hi = min(lengths)
    while hi + 1 in lengths:
        hi += 1
    keep = [g for g in keep if size(g) <= hi]
    if len(keep) < len(vocab):
        vec.set_params(vocabulary=sorted(keep)).fit(texts)
    vec.set_params(ngram_range=(lo, hi))


def _fit_features(texts: list[str], options: TrainOptions) -> tuple[FeatureUnion, Any]:
    features = _features(options)
    try:
        features.fit(texts)
    except ValueError as exc:  # scikit-learn's "empty vocabulary" / "no terms remain"
        raise InvalidInput(
            f"the text columns hold no word or character gram found in {options.min_df} or "
            f"more cases ({exc})",
            "text_cols",
        ) from exc
    for _, vec in features.transformer_list:
        _exportable(vec, texts)
    return features, features.transform(texts)


def _head(x: Any, target: np.ndarray, c: float) -> LogisticRegression:
    # One BLAS thread: lbfgs's work here is sparse products and small dense vectors,
    # where more threads only add synchronisation (and contend on a shared machine).
    clf = LogisticRegression(C=c, max_iter=2000, class_weight="balanced")
    with threadpool_limits(limits=1):
        return clf.fit(x, target)


def choose_threshold(confidence: np.ndarray, correct: np.ndarray, target: float) -> float | None:
    """The lowest confidence t such that cases with confidence >= t are right at least
    `target` of the time; None when no t reaches it."""
    order = np.argsort(-confidence, kind="stable")
    conf, hit = confidence[order], correct[order].astype(np.float64)
    precision = np.cumsum(hit) / np.arange(1, len(hit) + 1)
    last_of_tie = np.r_[conf[1:] != conf[:-1], True]  # a threshold routes a whole tie
    ok = np.flatnonzero(last_of_tie & (precision >= target))
    return float(conf[ok[-1]]) if len(ok) else None


def _choose_c(
    x_fit: Any, y_fit: np.ndarray, x_val: Any, y_val: np.ndarray, grid: tuple[float, ...]
) -> tuple[float, LogisticRegression, dict[str, float]]:
    """The C of `grid` with the best validation macro-F1, its head, and every C's score.
    Scores within 0.001 count as equal and the smaller C wins: the stronger regularisation
    spreads weight over more grams, which holds up better on wordings seldom seen."""
    scores: dict[str, float] = {}
    best: tuple[float, float, LogisticRegression | None] = (-1.0, 0.0, None)
    for c in sorted(grid):
        clf = _head(x_fit, y_fit, c)
        scores[f"{c:g}"] = score = float(f1_score(y_val, clf.predict(x_val), average="macro"))
        if best[2] is None or score > best[0] + 0.001:
            best = (score, c, clf)
    _, c, clf = best
    if clf is None:
        raise ValueError("TrainOptions.c_grid is empty")
    return c, clf, scores


def _validate(
    texts: list[str], y: np.ndarray, p: np.ndarray | None, options: TrainOptions
) -> tuple[float, float, dict[str, Any], dict[str, Any], list[str]]:
    """(C, threshold, how the threshold was chosen, validation figures, validation texts)."""
    n, k = len(texts), int(y.max()) + 1
    n_val = min(max(k, round(options.validation_share * n)), n - k)
    fit_i, val_i = train_test_split(
        np.arange(n), test_size=n_val, stratify=y, random_state=options.seed, shuffle=True
    )
    val_texts = [texts[i] for i in val_i]
    features, x_fit = _fit_features([texts[i] for i in fit_i], options)
    x = features.transform(val_texts)
    c, queue, c_scores = _choose_c(x_fit, y[fit_i], x, y[val_i], options.c_grid)
    proba = queue.predict_proba(x)
    guess = queue.classes_[proba.argmax(axis=1)]
    conf, correct = proba.max(axis=1), guess == y[val_i]
    if options.min_confidence is not None:
        threshold = options.min_confidence
        info: dict[str, Any] = {"chosen_by": "--min-confidence"}
    else:
        chosen = choose_threshold(conf, correct, options.target_precision)
        threshold = 1.0 if chosen is None else chosen
        info = {
            "chosen_by": "validation",
            "target_precision": options.target_precision,
            "reached": chosen is not None,
        }
    routed = conf >= threshold
    report: dict[str, Any] = {
        "rows": len(val_i),
        "fit_rows": len(fit_i),
        "macro_f1_by_c": c_scores,
        "accuracy": float(correct.mean()),
        "macro_f1": float(f1_score(y[val_i], guess, average="macro")),
        "routed_share": float(routed.mean()),
        "routed_precision": float(correct[routed].mean()) if routed.any() else None,
    }
    if p is not None and len(np.unique(p[fit_i])) >= 2:
        priority = _head(x_fit, p[fit_i], c)
        report["priority_accuracy"] = float((priority.predict(x) == p[val_i]).mean())
    return c, threshold, info, report, val_texts


def fit(
    columns: Sequence[Sequence[str]],
    labels: Sequence[str],
    priorities: Sequence[str] | None,
    options: TrainOptions,
) -> FittedText:
    """Fit on every row after choosing the threshold on a validation split (see the module)."""
    options.check()
    texts = prepare(columns)
    if all(not t.replace(SEPARATOR.strip(), "").strip() for t in texts):
        raise InvalidInput("the text columns hold no letters or digits in any row", "text_cols")
    names, y = np.unique(np.asarray(labels, dtype=object), return_inverse=True)
    p_names: np.ndarray = np.array([], dtype=object)
    p = None
    if priorities is not None:
        p_names, p = np.unique(np.asarray(priorities, dtype=object), return_inverse=True)
    c, threshold, info, report, val_texts = _validate(texts, y, p, options)
    features, x = _fit_features(texts, options)
    return FittedText(
        features=features,
        queue=_head(x, y, c),
        labels=tuple(str(v) for v in names),
        priority=_head(x, p, c) if p is not None else None,
        priority_labels=tuple(str(v) for v in p_names),
        c=c,
        threshold=threshold,
        threshold_info=info,
        validation=report,
        validation_texts=val_texts,
    )
