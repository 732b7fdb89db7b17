"""LightGBM trees compiled to flat arrays and evaluated by a Numba kernel.

Tier one is a handful of shallow trees over the whole micro-batch; a generic tree walk is
the cheapest exact evaluation for so few nodes (a naive Numba walk loses to onnxruntime
on a 300-tree model, which is why tier two stays on onnxruntime). The decision rule
reproduces LightGBM's `NumericalDecision` exactly, including its missing-value handling,
so `predict_raw` equals `Booster.predict(raw_score=True)` (tested with NaN and inf).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.jit import njit

_MISSING = {"None": 0, "Zero": 1, "NaN": 2}
_ZERO = 1e-35  # LightGBM's kZeroThreshold
_DUMPED_INF = 1e300


@dataclass(frozen=True)
class CompiledTrees:
    """Nodes of all trees; a child index < 0 is leaf `~child` of the same tree's leaves."""

    feature: np.ndarray  # int32 per node
    threshold: np.ndarray  # float64 per node
    left: np.ndarray  # int32 per node
    right: np.ndarray  # int32 per node
    default_left: np.ndarray  # bool per node
    missing: np.ndarray  # int8 per node: 0 none, 1 zero, 2 NaN
    leaf_value: np.ndarray  # float64, all leaves
    root: np.ndarray  # int32 per tree: node index, or ~leaf for a single-leaf tree
    node_cover: np.ndarray  # float64 per node: training rows through it (for TreeSHAP)
    leaf_cover: np.ndarray  # float64 per leaf
    n_features: int

    @functools.cached_property
    def routing(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """LightGBM's missing-value rules folded per node: where NaN goes (missing type NaN:
        the default side; otherwise NaN counts as 0.0, which goes by the threshold, or to the
        default side for missing type Zero), and for missing type Zero where 0.0 goes
        (-1 where zero is an ordinary value)."""
        zero_type = self.missing == 1
        nan_left = np.where(self.missing == 0, self.threshold >= 0.0, self.default_left)
        zero_default = np.where(zero_type, self.default_left.astype(np.int8), -1).astype(np.int8)
        # float32 features compare exactly with thresholds rounded down to float32:
        # x <= t32  <=>  x <= t for every float32 x (as in the ONNX export).
        t32 = self.threshold.astype(np.float32)
        t32 = np.where(
            t32.astype(np.float64) > self.threshold, np.nextafter(t32, np.float32(-np.inf)), t32
        ).astype(np.float32)
        return nan_left.astype(np.bool_), zero_default, t32

    def to_npz(self) -> dict[str, np.ndarray]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "n_features"}
        d["n_features"] = np.array(self.n_features)
        return d

    @classmethod
    def from_npz(cls, data: Any) -> CompiledTrees:
        fields = {
            k: np.ascontiguousarray(data[k]) for k in cls.__dataclass_fields__ if k != "n_features"
        }
        return cls(n_features=int(data["n_features"]), **fields)


def _threshold(t: float) -> float:
    """LightGBM writes an infinite threshold (its last bin's bound) as +-1e300 in dumps."""
    if t >= _DUMPED_INF:
        return np.inf
    if t <= -_DUMPED_INF:
        return -np.inf
    return t


def compile_booster(dump: dict[str, Any]) -> CompiledTrees:
    """Compile `Booster.dump_model()` (binary objective, numerical splits only)."""
    feature: list[int] = []
    threshold: list[float] = []
    left: list[int] = []
    right: list[int] = []
    default_left: list[bool] = []
    missing: list[int] = []
    leaves: list[float] = []
    roots: list[int] = []
    node_cover: list[float] = []
    leaf_cover: list[float] = []

    def walk(node: dict[str, Any]) -> int:
        if "leaf_value" in node:
            leaves.append(float(node["leaf_value"]))
            leaf_cover.append(float(node.get("leaf_count", 0)))
            return ~(len(leaves) - 1)
        if node.get("decision_type", "<=") != "<=":
            raise ValueError(
                f"only numerical '<=' splits are supported, got {node['decision_type']}"
            )
        i = len(feature)
        feature.append(int(node["split_feature"]))
        threshold.append(_threshold(float(node["threshold"])))
        default_left.append(bool(node["default_left"]))
        missing.append(_MISSING[node["missing_type"]])
        node_cover.append(float(node.get("internal_count", 0)))
        left.append(0)
        right.append(0)
        left[i] = walk(node["left_child"])
        right[i] = walk(node["right_child"])
        return i

    for tree in dump["tree_info"]:
        roots.append(walk(tree["tree_structure"]))
    return CompiledTrees(
        feature=np.array(feature, np.int32),
        threshold=np.array(threshold, np.float64),
        left=np.array(left, np.int32),
        right=np.array(right, np.int32),
        default_left=np.array(default_left, np.bool_),
        missing=np.array(missing, np.int8),
        leaf_value=np.array(leaves, np.float64),
        root=np.array(roots, np.int32),
        node_cover=np.array(node_cover, np.float64),
        leaf_cover=np.array(leaf_cover, np.float64),
        n_features=int(dump["max_feature_idx"]) + 1,
    )


@njit
def _predict_raw(X, feature, threshold, left, right, nan_left, zero_default, leaf_value, root, out):
    # Tree-major: one tree's few nodes stay in L1 while every row walks it, and the child is
    # chosen by a select rather than a branch on data (fewer mispredictions).
    for i in range(X.shape[0]):
        out[i] = 0.0
    for t in range(root.shape[0]):
        r = root[t]
        if r < 0:
            for i in range(X.shape[0]):
                out[i] += leaf_value[~r]
            continue
        for i in range(X.shape[0]):
            node = r
            while node >= 0:
                x = X[i, feature[node]]
                if np.isnan(x):
                    go_left = nan_left[node]
                elif zero_default[node] >= 0 and -_ZERO <= x <= _ZERO:
                    go_left = zero_default[node] == 1
                else:
                    go_left = x <= threshold[node]
                node = left[node] if go_left else right[node]
            out[i] += leaf_value[~node]


def predict_raw(trees: CompiledTrees, X: np.ndarray) -> np.ndarray:
    """Raw score (log-odds) of each row of `X` (N, n_features)."""
    if X.ndim != 2 or X.shape[1] != trees.n_features:
        raise ValueError(f"Data must be of dimension (N, {trees.n_features}), is {X.shape}")
    out = np.empty(X.shape[0], dtype=np.float64)
    nan_left, zero_default, t32 = trees.routing
    _predict_raw(
        X,
        trees.feature,
        t32 if X.dtype == np.float32 else trees.threshold,
        trees.left,
        trees.right,
        nan_left,
        zero_default,
        trees.leaf_value,
        trees.root,
        out,
    )
    return out
