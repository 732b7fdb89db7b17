"""In-process cost of each stage of the hot path, in ns per order, at batch sizes 1, 64, 4096.

Stages: decode (serialized protobuf orders to arrays, as the server does), features (with
velocity state), tier one, tier two, reasons (TreeSHAP and messages, per explained order),
policy, encode (decisions to serialized protobuf, as the server does); plus the whole
`Engine` call. Tier two is also compared with the runtimes one would use instead on the same
model: LightGBM's own `Booster.predict` and Treelite's compiler TL2cgen (the model as C
code), all on one thread.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from benchmarks.timing import per_call_s
from engine.codec import decision_encoder
from engine.codec.history import read_history
from engine.codec.order_decoder import decode_orders
from engine.codec.order_messages import orders_from_table
from engine.decision.cascade import Engine
from engine.decision.policy import MODEL, decide
from engine.decision.reasons import model_reasons
from engine.features import matrix as features
from engine.features.velocity import VelocityState
from engine.models import artifacts
from engine.orders.batch import OrderBatch, OrderRules

BATCHES = (1, 64, 4096)


def stage_costs(models_dir: Path, history: Path) -> list[dict[str, Any]]:
    """ns per order of each stage on the last orders of a history, with the velocity state
    the history built before them (as a warmed server has), so the mix of screened-out and
    explained orders is the steady state's. `reasons` is per explained order; `engine` is
    features plus `Engine.decide` (which includes tier one, tier two on the escalated rows,
    reasons on the flagged ones and the policy)."""
    m = artifacts.load(models_dir)
    if m.tier1 is None or m.tier2 is None:
        raise RuntimeError(f"{models_dir}: benchmarks need both tiers, problems: {m.problems}")
    tier1, tier2 = m.tier1, m.tier2
    hist = read_history(history)
    n_all = hist.table.num_rows
    tail = max(BATCHES)
    state = VelocityState(1 << 20)
    known = np.where(hist.known_at <= hist.t.max(), hist.labels, -1).astype(np.int8)
    head = hist.arrays.take(slice(0, n_all - tail))
    features.replay(head, known[: n_all - tail], hist.known_at[: n_all - tail], state)
    orders = [o.SerializeToString() for o in orders_from_table(hist.table.slice(n_all - tail))]
    engine = Engine(m, state)
    rules = OrderRules()

    def decode(b: list[bytes]) -> OrderBatch:
        return rules.check(decode_orders(b), np.inf)

    decode(orders[:1])
    decision_encoder.warm()
    # As the server does after start-up: what exists now is not traversed by every full
    # garbage collection (this process holds the whole history besides).
    gc.collect()
    gc.freeze()
    rows = []
    for n in BATCHES:
        batch = orders[:n]
        dec = decode(batch)
        ids, enc = dec.ids, dec.arrays
        X = features.compute(enc, state)
        d = engine.decide(ids, enc, X)
        p2 = tier2.score(X)
        contrib = tier2.contributions(X)
        path = np.full(n, MODEL, np.int8)
        latency = [0] * n
        costs = {
            "decode": per_call_s(lambda b=batch: decode(b)),
            "features": per_call_s(lambda e=enc: features.compute(e, state)),
            "tier1": per_call_s(lambda x=X: tier1.screen(x)),
            "tier2": per_call_s(lambda x=X: tier2.score(x)),
            "reasons": per_call_s(
                lambda x=X, c=contrib: (
                    tier2.contributions(x),
                    model_reasons(c, x, m.policy.max_reasons),
                )
            ),
            "policy": per_call_s(
                lambda p=p2, pa=path, e=enc: decide(m.policy, p, pa, e.amount, e.key_account)
            ),
            "encode": per_call_s(
                lambda dd=d, lat=latency: decision_encoder.decision_bytes(dd, lat)
            ),
        }
        costs["engine"] = costs["features"] + per_call_s(
            lambda i=ids, e=enc, x=X: engine.decide(i, e, x)
        )
        rows.append({"batch": n, **{k: v / n * 1e9 for k, v in costs.items()}})
    gc.unfreeze()
    return rows


def tier2_runtimes(models_dir: Path, X: np.ndarray, lib: Path) -> list[dict[str, Any]]:
    """ns per row of onnxruntime, Booster.predict and TL2cgen on the same tier-two model."""
    m = artifacts.load(models_dir)
    if m.tier2 is None:
        raise RuntimeError(f"{models_dir}: no usable tier two: {m.problems}")
    booster = lgb.Booster(model_file=str(models_dir / "tier2.lgb.txt"))
    runtimes: dict[str, Any] = {
        "onnxruntime": m.tier2.score,
        "lightgbm": lambda x: booster.predict(x, num_threads=1),
    }
    # Treelite's compiler (TL2cgen) turns the same model into C, built with gcc. (lleaves,
    # the LLVM compiler, needs an llvmlite older than the one numba requires.)
    import tl2cgen
    import treelite

    model = treelite.frontend.load_lightgbm_model(str(models_dir / "tier2.lgb.txt"))
    tl2cgen.export_lib(model, toolchain="gcc", libpath=str(lib), params={"parallel_comp": 2})
    predictor = tl2cgen.Predictor(str(lib), nthread=1)
    runtimes["tl2cgen"] = lambda x: predictor.predict(tl2cgen.DMatrix(x)).reshape(-1)
    ref = booster.predict(X)
    rows = []
    for n in BATCHES:
        Xn = np.ascontiguousarray(np.resize(X, (n, X.shape[1])))
        row: dict[str, Any] = {"batch": n}
        for name, fn in runtimes.items():
            row[name] = per_call_s(lambda f=fn, x=Xn: f(x)) / n * 1e9
        rows.append(row)
    agree = {name: float(np.max(np.abs(np.asarray(fn(X)) - ref))) for name, fn in runtimes.items()}
    return [{"max_abs_diff_vs_lightgbm": agree}, *rows]


def explain_runtimes(models_dir: Path, X: np.ndarray) -> list[dict[str, Any]]:
    """µs per row of the engine's TreeSHAP tables against LightGBM's `pred_contrib`."""
    m = artifacts.load(models_dir)
    if m.tier2 is None:
        raise RuntimeError(f"{models_dir}: no usable tier two: {m.problems}")
    explainer = m.tier2.explainer
    booster = lgb.Booster(model_file=str(models_dir / "tier2.lgb.txt"))
    diff = float(
        np.max(np.abs(explainer.shap_values(X[:256]) - booster.predict(X[:256], pred_contrib=True)))
    )
    rows = []
    for n in (1, 64):
        Xn = np.ascontiguousarray(X[:n])
        rows.append(
            {
                "batch": n,
                "engine_treeshap_us": per_call_s(lambda x=Xn: explainer.shap_values(x)) / n * 1e6,
                "lightgbm_pred_contrib_us": per_call_s(
                    lambda x=Xn: booster.predict(x, pred_contrib=True, num_threads=1)
                )
                / n
                * 1e6,
                "max_abs_diff": diff,
            }
        )
    return rows
