"""`python -m benchmarks.routing_text`: the routing text model against the routers a user would
otherwise pick, and `route predict`'s speed beside scikit-learn's, in one run.

Data: `engine.routing.case_sim`. The model trains on `default` cases and is scored on held-out
`default` cases and on `shifted` cases (other wordings favoured, more typos and German,
another queue mix), which nothing was designed on. Baselines, each fitted on the same
training cases: the majority queue; a keyword router (English and German keywords per
queue, most distinct hits wins, no hit goes to GENERAL, as a rules engine is set up);
scikit-learn's MultinomialNB on word counts (CountVectorizer defaults); and the model's own
word TF-IDF with logistic regression but no character n-grams (what the character grams add).

Speed: one process pinned to one CPU, onnxruntime with one intra-op thread and scikit-learn
with one BLAS thread, in alternating rounds over the same shifted cases; both include
`prepare`. `route predict` end to end (load and verify the folder, read Parquet, route,
write Parquet) is timed in the same process.

Writes benchmarks/results/routing/text.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.naive_bayes import MultinomialNB
from threadpoolctl import threadpool_limits

from engine.routing import cases as case_files
from engine.routing.case_sim import simulate_cases
from engine.routing.cli import main as route_main
from engine.routing.text_fit import FittedText, TrainOptions
from engine.routing.text_model import TextRouter, train
from engine.routing.text_prep import GENERAL, WORD_NGRAMS, WORD_TOKEN, prepare

ROOT = Path(__file__).resolve().parent.parent
TEXT_COLS = ("subject", "body")
KEYWORDS = {
    "hardware_config": ("raid", "configur", "konfigur", "bios", "firmware", "ram ", "cpu",
                        "memory", "arbeitsspeicher", "image", "build", "ausstattung"),
    "installation": ("install", "technician", "techniker", "onsite", "on site", "vor ort",
                     "rack", "mount", "montage", "monteur", "einricht", "set up"),
    "payment_terms": ("payment", "zahlung", "invoice", "rechnung", "net ", "prepay", "vorkasse",
                      "installment", "rate", "credit", "kredit", "billing"),
    "service_agreement": ("sla", "service", "support", "warranty", "garantie", "maintenance",
                          "wartung", "contract", "vertrag", "response", "reaktion"),
    "volume_discount": ("discount", "rabatt", "volume", "bulk", "mengen", "unit price",
                        "stückpreis", "quote", "angebot", "tiered", "staffel", "framework"),
    "delivery_exception": ("deliver", "liefer", "shipment", "sendung", "tracking", "parcel",
                           "paket", "carrier", "spediteur", "damaged", "beschädigt", "late",
                           "verspätet"),
    "returns_rma": ("return", "rück", "rma", "refund", "erstatt", "defect", "defekt",
                    "replacement", "austausch", "faulty", "dead on arrival"),
    "fraud_review": ("fraud", "betrug", "risk", "risiko", "verify", "identit", "suspicious",
                     "verdächtig", "hold", "gesperrt", "angehalten", "card", "karte"),
}  # fmt: skip


def keyword_router(texts: list[str]) -> list[str]:
    out = []
    for t in texts:
        hits = {q: sum(k in t for k in words) for q, words in KEYWORDS.items()}
        best = max(hits, key=lambda q: hits[q])
        out.append(best if hits[best] else GENERAL)
    return out


def _scores(y: list[str], pred: list[str]) -> dict[str, float]:
    labels = sorted(set(y))  # GENERAL is never right: it lowers recall, is no class of its own
    return {
        "macro_f1": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "accuracy": float(accuracy_score(y, pred)),
    }


def _macro_f1(y: np.ndarray, pred: np.ndarray, k: int) -> float:
    """Macro-F1 over classes 0..k-1 of integer labels (a prediction of k or more is never
    right), as scikit-learn's f1_score(labels=range(k), average="macro", zero_division=0)."""
    tp = np.bincount(y[pred == y], minlength=k)[:k]
    denom = np.bincount(pred, minlength=k)[:k] + np.bincount(y, minlength=k)[:k]
    return float(np.mean(np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)))


def _paired_interval(
    y: list[str], ours: list[str], other: list[str], seed: int, n: int = 1000
) -> list[float]:
    """2.5% and 97.5% quantiles of macro-F1(ours) - macro-F1(other) over paired bootstrap
    resamples of the cases (the same cases for both in each resample)."""
    labels = sorted(set(y))
    code = {v: i for i, v in enumerate(labels)}
    k = len(labels)
    yy, a, b = (np.array([code.get(v, k) for v in x]) for x in (y, ours, other))
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n):
        i = rng.integers(0, len(yy), len(yy))
        diffs.append(_macro_f1(yy[i], a[i], k) - _macro_f1(yy[i], b[i], k))
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    return [float(lo), float(hi)]


def _columns(t: pa.Table) -> list[list[str]]:
    return [t.column(c).to_pylist() for c in TEXT_COLS]


def _raw(t: pa.Table) -> list[str]:
    return [f"{s}\n{b}" for s, b in zip(*_columns(t), strict=True)]


def _rate(fn: Any, n: int) -> tuple[float, float]:
    """(cases per second of wall time, cases per second of this process's CPU time): on a
    shared machine the second leaves out the time other work held the CPU."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def _baselines(tr: pa.Table, c: float) -> dict[str, Any]:
    """Each baseline fitted on the training cases, as a function of (prepared texts, table)."""
    y_tr = tr.column("queue").to_pylist()
    nb_vec = CountVectorizer()
    nb = MultinomialNB().fit(nb_vec.fit_transform(_raw(tr)), y_tr)
    words = TfidfVectorizer(
        analyzer="word", token_pattern=WORD_TOKEN, ngram_range=WORD_NGRAMS, lowercase=False,
        min_df=2, max_features=20_000, dtype=np.float32,
    )  # fmt: skip
    with threadpool_limits(limits=1):  # the model's own C, so the row shows what chars add
        words_lr = LogisticRegression(C=c, max_iter=2000, class_weight="balanced").fit(
            words.fit_transform(prepare(_columns(tr))), y_tr
        )
    majority = Counter(y_tr).most_common(1)[0][0]
    return {
        "tf-idf words + LR (no char n-grams)": lambda x, t: words_lr.predict(
            words.transform(x)
        ).tolist(),
        "MultinomialNB on word counts": lambda x, t: nb.predict(nb_vec.transform(_raw(t))).tolist(),
        "keyword rules (en + de)": lambda x, t: keyword_router(x),
        "majority queue": lambda x, t: [majority] * len(x),
    }


def _quality(
    router: TextRouter, fitted: FittedText, tr: pa.Table, sets: dict[str, pa.Table]
) -> dict[str, Any]:
    baselines = _baselines(tr, fitted.c)
    p_majority = Counter(tr.column("priority").to_pylist()).most_common(1)[0][0]
    quality: dict[str, Any] = {}
    for name, t in sets.items():
        y, texts = t.column("queue").to_pylist(), prepare(_columns(t))
        r = router.route_texts(texts)
        preds = {
            "text model (ONNX), top label": r.top,
            "text model (scikit-learn), top label": [
                fitted.labels[i] for i in fitted.predict_proba(texts)[0].argmax(axis=1)
            ],
            "text model (ONNX), with GENERAL": r.predicted,
            **{k: f(texts, t) for k, f in baselines.items()},
        }
        routed = np.asarray(r.predicted) != GENERAL
        lang, yy = np.asarray(t.column("language").to_pylist()), np.asarray(y)
        prio = t.column("priority").to_pylist()
        quality[name] = {
            "cases": t.num_rows,
            "german_share": float((lang == "de").mean()),
            "methods": {k: _scores(y, v) for k, v in preds.items()},
            "model_minus_baseline_macro_f1_95ci": {
                k: _paired_interval(y, r.top, preds[k], seed=len(y))
                for k in (
                    "MultinomialNB on word counts",
                    "keyword rules (en + de)",
                    "tf-idf words + LR (no char n-grams)",
                )
            },  # fmt: skip
            "model_by_language": {
                lg: _scores(yy[lang == lg].tolist(), np.asarray(r.top)[lang == lg].tolist())
                for lg in ("en", "de")
            },
            "general": {
                "threshold": router.threshold,
                "share": float(1 - routed.mean()),
                "routed_precision": float((yy[routed] == np.asarray(r.predicted)[routed]).mean()),
            },
            "priority": {
                "model": _scores(prio, r.priority or []),
                "majority": _scores(prio, [p_majority] * len(prio)),
            },
        }
    return quality


def _speed(
    router: TextRouter, fitted: FittedText, folder: Path, n: int, rounds: int
) -> dict[str, Any]:
    """One CPU, one thread each, alternating rounds over the same cases."""
    cases = simulate_cases(n, config="shifted", seed=29)
    cols = _columns(cases)
    cpu = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    ours: list[tuple[float, float]] = []
    theirs: list[tuple[float, float]] = []
    with threadpool_limits(limits=1):
        router.route([c[:256] for c in cols])  # warm-up
        for _ in range(rounds):
            ours.append(_rate(lambda: router.route(cols), n))
            theirs.append(_rate(lambda: fitted.predict_proba(prepare(cols)), n))
        texts = prepare(cols)
        diff = np.abs(router.route_texts(texts).confidence - fitted.predict_proba(texts)[0].max(1))
        infile, outfile = folder / "cases.parquet", folder / "routed.parquet"
        case_files.write_cases(cases, infile)
        t0 = time.perf_counter()
        route_main(["route", "predict", "--models", str(folder / "model"), "--cases",
                    str(infile), "--out", str(outfile)])  # fmt: skip
        e2e = n / (time.perf_counter() - t0)
    return {
        "cases": n,
        "cpu": cpu,
        "rounds": rounds,
        "onnx_cases_per_s": [w for w, _ in ours],
        "sklearn_cases_per_s": [w for w, _ in theirs],
        "onnx_cases_per_cpu_s": [c for _, c in ours],
        "sklearn_cases_per_cpu_s": [c for _, c in theirs],
        "onnx_median": statistics.median(w for w, _ in ours),
        "sklearn_median": statistics.median(w for w, _ in theirs),
        "onnx_cpu_median": statistics.median(c for _, c in ours),
        "sklearn_cpu_median": statistics.median(c for _, c in theirs),
        "route_predict_end_to_end_cases_per_s": e2e,
        "max_confidence_difference_vs_sklearn": float(diff.max()),
        "target_cases_per_s": 5000,
    }


def run(
    train_sizes: tuple[int, ...], n_test: int, n_shifted: int, n_speed: int, rounds: int
) -> dict[str, Any]:
    t_start = time.perf_counter()
    largest = max(train_sizes)
    data = simulate_cases(largest + n_test, config="default", seed=11)
    sets = {
        "default (held out)": data.slice(largest),
        "shifted": simulate_cases(n_shifted, config="shifted", seed=23),
    }
    work = Path(tempfile.mkdtemp(prefix="routing-bench-"))
    runs: dict[str, Any] = {}
    for size in sorted(train_sizes):
        tr = data.slice(0, size)
        folder = work / f"train-{size}"
        t0 = time.perf_counter()
        router, fitted = train(
            _columns(tr), tr.column("queue").to_pylist(), tr.column("priority").to_pylist(),
            TrainOptions(), folder / "model",
            text_cols=TEXT_COLS, label_col="queue", priority_col="priority",
        )  # fmt: skip
        runs[str(size)] = {
            "train_seconds": time.perf_counter() - t0,
            "model": {
                "version": router.version,
                "c": fitted.c,
                "features": router.manifest["features"],
                "threshold": router.manifest["threshold"],
                "validation": router.manifest["validation"],
                "parity_at_training": router.manifest["parity"],
            },
            "quality": _quality(router, fitted, tr, sets),
        }
    speed = _speed(router, fitted, folder, n_speed, rounds)  # the largest model
    return {
        "command": "python -m benchmarks.routing_text",
        "sizes": {"train": list(train_sizes), "test": n_test, "shifted": n_shifted},
        "runs": runs,
        "speed": speed,
        "seconds": time.perf_counter() - t_start,
    }


def _quality_tables(q: dict[str, Any]) -> list[str]:
    sets = list(q)
    head = " | ".join(f"{k} ({q[k]['cases']:,} cases, {q[k]['german_share']:.0%} German)"
                      for k in sets)  # fmt: skip
    out = [f"| method | {head} |", "|---|" + "---|" * len(sets)]
    for n in q[sets[0]]["methods"]:
        cells = [q[k]["methods"][n] for k in sets]
        out.append(
            f"| {n} | " + " | ".join(f"{c['macro_f1']:.3f} / {c['accuracy']:.3f}" for c in cells)
            + " |"
        )  # fmt: skip
    out += ["", "Macro-F1 of the text model minus a baseline's, 95% paired bootstrap interval "
            "(1,000 resamples of the cases):", "",
            "| baseline | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]  # fmt: skip
    for n in q[sets[0]]["model_minus_baseline_macro_f1_95ci"]:
        cells = [q[k]["model_minus_baseline_macro_f1_95ci"][n] for k in sets]
        out.append(f"| {n} | " + " | ".join(f"{lo:+.3f} to {hi:+.3f}" for lo, hi in cells) + " |")

    def row(label: str, cell: Any) -> str:
        return f"| {label} | " + " | ".join(cell(q[k]) for k in sets) + " |"

    out += ["", "| text model | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    for lg in ("en", "de"):
        out.append(
            row(
                f"macro-F1 on {lg} cases",
                lambda x, g=lg: f"{x['model_by_language'][g]['macro_f1']:.3f}",
            )
        )
    out.append(row("sent to GENERAL", lambda x: f"{x['general']['share']:.1%}"))
    out.append(
        row("accuracy of the cases routed", lambda x: f"{x['general']['routed_precision']:.3f}")
    )
    out.append(row("priority macro-F1 / accuracy (majority's accuracy)", lambda x: (
        f"{x['priority']['model']['macro_f1']:.3f} / {x['priority']['model']['accuracy']:.3f} "
        f"({x['priority']['majority']['accuracy']:.3f})")))  # fmt: skip
    return out


def _list(xs: list[float]) -> str:
    return ", ".join(f"{x:,.0f}" for x in xs)


def markdown(r: dict[str, Any], machine: dict[str, Any]) -> str:
    s = r["speed"]
    out = [
        "# Routing text model: quality and `route predict` speed",
        "",
        f"`{r['command']}` on {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores "
        f"(shared with other work; timings are indicative), {machine.get('date', '')}; "
        f"{r['seconds']:.0f} s in all.",
        "",
        "Simulated cases (`engine.routing.case_sim`: subject + body, 8 queues, English and "
        "German, 2% wrong labels): the model and the baselines train on `default` cases and are "
        "scored on held-out `default` cases and on `shifted` ones (other wordings favoured, more "
        "typos and German, another queue mix). Cells are macro-F1 / accuracy; GENERAL (low "
        "confidence, or no keyword hit) is never right and counts against the method giving it.",
    ]
    for size, run_ in r["runs"].items():
        m = run_["model"]
        f, th, par = m["features"], m["threshold"], m["parity_at_training"]
        out += [
            "",
            f"## Trained on {int(size):,} cases",
            "",
            f"{run_['train_seconds']:.1f} s to train: {f['word_features']:,} word 1-2-grams + "
            f"{f['char_features']:,} char_wb 2-5-grams, logistic regression with C = "
            f"{m['c']:g} (chosen on the validation share), ONNX. Confidence threshold "
            f"{th['min_confidence']:.3f} (the lowest keeping precision "
            f"{th.get('target_precision', '-')} on the validation share). Parity at training: "
            f"max |ONNX - scikit-learn| = {par['max_abs_error']:.1e} on {par['rows']:,} rows.",
            "",
            *_quality_tables(run_["quality"]),
        ]
    out += [
        "",
        "## Speed (one CPU, one thread)",
        "",
        f"The {int(max(r['runs'], key=int)):,}-case model (queue and priority heads) on "
        f"{s['cases']:,} shifted cases, {s['rounds']} alternating rounds, both including "
        "`prepare`.",
        "",
        "| | cases/s, wall (median; rounds) | cases per CPU-second (median; rounds) |",
        "|---|---|---|",
        f"| `route predict` model (onnxruntime, intra_op_num_threads=1) | "
        f"{s['onnx_median']:,.0f}; {_list(s['onnx_cases_per_s'])} | "
        f"{s['onnx_cpu_median']:,.0f}; {_list(s['onnx_cases_per_cpu_s'])} |",
        f"| scikit-learn `predict_proba`, same model | {s['sklearn_median']:,.0f}; "
        f"{_list(s['sklearn_cases_per_s'])} | {s['sklearn_cpu_median']:,.0f}; "
        f"{_list(s['sklearn_cases_per_cpu_s'])} |",
        f"| `route predict` end to end (load + verify, read Parquet, route, write) | "
        f"{s['route_predict_end_to_end_cases_per_s']:,.0f} | |",
        "",
        "Wall time counts the moments other work on this shared machine held the CPU; CPU "
        "time does not, so it is the closer measure of what one core does.",
        "",
        f"Target: at least {s['target_cases_per_s']:,} cases/s. Largest confidence difference "
        f"between the two on these cases: {s['max_confidence_difference_vs_sklearn']:.1e}.",
    ]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    import sklearn

    from benchmarks.run import machine

    p = argparse.ArgumentParser(prog="python -m benchmarks.routing_text", description=__doc__)
    p.add_argument(
        "--train",
        default="500,1500,6000",
        help="training sizes, comma-separated (a learning curve)",
    )
    p.add_argument("--test", type=int, default=2000)
    p.add_argument("--shifted", type=int, default=4000)
    p.add_argument("--speed-cases", type=int, default=8000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/routing"))
    args = p.parse_args(argv)
    sizes = tuple(int(x) for x in args.train.split(","))
    r = run(sizes, args.test, args.shifted, args.speed_cases, args.rounds)
    defaults = p.parse_args([])
    extra = [f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
             if k != "out" and v != getattr(defaults, k)]  # fmt: skip
    r["command"] = " ".join([r["command"], *extra])
    m = machine()
    m["packages"]["scikit-learn"] = sklearn.__version__
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "text.json").write_text(json.dumps({"machine": m, **r}, indent=2) + "\n")
    (out / "text.md").write_text(markdown(r, m))
    print((out / "text.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
