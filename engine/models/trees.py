"""LightGBM trees compiled to flat arrays and evaluated by a Numba kernel.

Tier one is a handful of shallow trees over the whole micro-batch. The decision rule
reproduces LightGBM's `NumericalDecision` exactly, including its missing-value handling and
the way `Booster.predict` reads dense rows (|x| <= kZeroThreshold becomes 0.0), so
`predict_raw` equals `Booster.predict(raw_score=True)` (tested with NaN, inf, +-0.0 and
values on and beside every threshold).

Two kernels, both exact:

- `_predict_padded`, for float32 rows and trees of depth <= `MAX_PADDED_DEPTH` (tier one).
  A data-dependent walk spends most of its time on branch mispredictions with real rows
  (over twice its time on one repeated row), so every tree is padded to a complete binary
  tree (`PaddedTrees`) and each split becomes one integer comparison on keys computed once
  per row: no branch depends on the data, and eight rows are walked side by side so the CPU
  overlaps their independent chains of loads.
- `_predict_raw`, the generic walk, for float64 rows, deeper trees and very wide rows.

Tier two (hundreds of trees) stays on onnxruntime, which a naive Numba walk lost to.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.jit import njit, njit_inline

_MISSING = {"None": 0, "Zero": 1, "NaN": 2}
_ZERO = float(np.float32(1e-35))  # LightGBM's kZeroThreshold: the float literal 1e-35f
_DUMPED_INF = 1e300

MAX_PADDED_DEPTH = 8  # deeper trees would pad to 2**depth slots each: generic walk instead
_ROWS = 8  # rows walked side by side: eight chains already fill x86-64's 16 registers
_KEY_STRIDE = 512  # int32 keys per row; a constant, so row r's keys sit at a fixed offset
_INDEX = 0x7FFFFFFF  # masking an index with it tells LLVM it is >= 0: no wraparound code
_F32_INF_BITS = 0x7F800000  # float32 magnitudes above it are NaN
_ZERO_BITS = int(np.float32(_ZERO).view(np.int32))  # float32 magnitudes up to it read as 0.0
_NAN_LEFT_KEY = -(2**31)  # below every threshold key: goes left at every node
_NAN_RIGHT_KEY = 2**31 - 1  # above every threshold key: goes right


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
        (-1 where zero is an ordinary value). `Booster.predict` also reads every
        |x| <= kZeroThreshold (`_ZERO`) of a dense row as 0.0, whatever the missing type."""
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

    @functools.cached_property
    def padded(self) -> PaddedTrees | None:
        """The layout of the fast kernel, or None when a tree is deeper than
        `MAX_PADDED_DEPTH` or the rows' keys would not fit `_KEY_STRIDE`."""
        return _pad(self)

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


@dataclass(frozen=True)
class PaddedTrees:
    """All trees padded to complete binary trees of one depth, splits as integer comparisons.

    Slot `s` of a tree has children `2s + 1` and `2s + 2`; where a tree ends above `depth`,
    dummy slots lead to copies of the same leaf, so every row takes exactly `depth` steps
    per tree. Before the walk each float32 value becomes an int32 key that orders as the
    value does (|x| <= kZeroThreshold, -0.0 included, reads as 0.0: key 0), so
    `x <= t32  <=>  key(x) <= key(t32)`. Some values go to a side fixed per node instead:
    NaN (missing type NaN: the default side; None: where 0.0 goes) and, for missing type
    Zero, NaN and zero (the default side). Nodes are grouped into up to four variants by
    that side and by whether zero is special, a row gets one block of `n_features` keys per
    variant used, and special values get a key below or above every threshold's. A node
    then goes right iff `row_keys[col] > key`.
    """

    depth: int
    nan_key: np.ndarray  # int32 per variant: the key of special values
    band: np.ndarray  # int32 per variant: float32 magnitude bits up to which x is special, or -1
    col: np.ndarray  # uint32 per slot: variant * n_features + feature
    key: np.ndarray  # int32 per slot: key of the threshold rounded down to float32
    leaf_value: np.ndarray  # float64, 2**depth per tree


def _order_keys(x: np.ndarray) -> np.ndarray:
    """int32 keys of float32 values, ordered as the values (-0.0 and 0.0 share key 0)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.int32).astype(np.int64)
    magnitude = bits & _INDEX
    return np.where(bits < 0, -magnitude, magnitude).astype(np.int32)


def _depth(trees: CompiledTrees, root: int) -> int:
    """Splits on the longest path from `root` (0 for a single-leaf tree)."""
    deepest, stack = 0, [(root, 0)]
    while stack:
        node, d = stack.pop()
        if node < 0:
            deepest = max(deepest, d)
        else:
            stack += [(int(trees.left[node]), d + 1), (int(trees.right[node]), d + 1)]
    return deepest


def _pad(trees: CompiledTrees) -> PaddedTrees | None:
    """The padded layout of `trees` (see `PaddedTrees`), if within the kernel's bounds."""
    depth = max((_depth(trees, int(r)) for r in trees.root), default=0)
    nan_left, zero_default, t32 = trees.routing
    zero_type = zero_default >= 0
    special_right = np.where(zero_type, zero_default == 0, ~nan_left)
    variant = special_right.astype(np.int64) + 2 * zero_type  # 0..3: bit 0 right, bit 1 zero
    used = np.unique(variant)
    if depth > MAX_PADDED_DEPTH or used.size * trees.n_features > _KEY_STRIDE:
        return None
    node_col = np.searchsorted(used, variant) * trees.n_features + trees.feature
    node_key = _order_keys(t32)

    n_slots = (1 << depth) - 1
    col = np.zeros((trees.root.size, n_slots), np.uint32)
    key = np.zeros((trees.root.size, n_slots), np.int32)
    leaf_value = np.zeros((trees.root.size, n_slots + 1), np.float64)
    for t, root in enumerate(trees.root):
        stack = [(int(root), 0)]
        while stack:
            node, slot = stack.pop()
            if node < 0:  # the leaf fills every bottom slot under `slot`
                width = 1 << (depth - ((slot + 1).bit_length() - 1))
                first = (slot + 1) * width - 1 - n_slots
                leaf_value[t, first : first + width] = trees.leaf_value[~node]
                continue
            col[t, slot] = node_col[node]
            key[t, slot] = node_key[node]
            stack += [(int(trees.left[node]), 2 * slot + 1), (int(trees.right[node]), 2 * slot + 2)]
    return PaddedTrees(
        depth=depth,
        nan_key=np.where(used % 2 == 1, _NAN_RIGHT_KEY, _NAN_LEFT_KEY).astype(np.int32),
        band=np.where(used >= 2, _ZERO_BITS, -1).astype(np.int32),
        col=col.ravel(),
        key=key.ravel(),
        leaf_value=leaf_value.ravel(),
    )


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
                elif -_ZERO <= x <= _ZERO:  # LightGBM reads these as 0.0 (see `routing`)
                    if zero_default[node] >= 0:
                        go_left = zero_default[node] == 1
                    else:
                        go_left = threshold[node] >= 0.0
                else:
                    go_left = x <= threshold[node]
                node = left[node] if go_left else right[node]
            out[i] += leaf_value[~node]


@njit_inline
def _row_key(bits, nan_key, band):
    """The key of one float32 (given as its int32 bits), or `nan_key` if it is special."""
    magnitude = bits & _INDEX
    key = 0 if magnitude <= _ZERO_BITS else (-magnitude if bits < 0 else magnitude)
    return nan_key if (magnitude > _F32_INF_BITS) | (magnitude <= band) else key


@njit_inline
def _child(slot, base, keys, row, col, key):
    """Slot `slot`'s child, for the row whose keys start at `keys[row]`; no branch."""
    k = (base + slot) & _INDEX
    return 2 * slot + 1 + (keys[row + col[k]] > key[k])


@njit
def _predict_padded(X, nan_key, band, col, key, leaf_value, depth, out):
    # Row-major in blocks of _ROWS: a block's keys (vectorised, contiguous) stay in L1 while
    # all trees walk it; trees are summed in order, as LightGBM does.
    n_rows, n_features = X.shape
    n_slots = (1 << depth) - 1
    n_trees = leaf_value.shape[0] // (n_slots + 1)
    bits = X.view(np.int32)
    keys = np.empty(_ROWS * _KEY_STRIDE, np.int32)
    s = _KEY_STRIDE
    for i in range(0, n_rows, _ROWS):
        m = min(_ROWS, n_rows - i)
        for r in range(m):
            for v in range(nan_key.shape[0]):
                row = r * s + v * n_features
                for f in range(n_features):
                    keys[row + f] = _row_key(bits[i + r, f], nan_key[v], band[v])
        if m < _ROWS:  # the last rows of a batch (or a batch of one): one at a time
            for r in range(m):
                acc = 0.0
                for t in range(n_trees):
                    node = 0
                    for _ in range(depth):
                        node = _child(node, t * n_slots, keys, r * s, col, key)
                    acc += leaf_value[(t * (n_slots + 1) - n_slots + node) & _INDEX]
                out[i + r] = acc
            continue
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
        for t in range(n_trees):
            base = t * n_slots
            n0 = n1 = n2 = n3 = n4 = n5 = n6 = n7 = 0
            for _ in range(depth):
                n0 = _child(n0, base, keys, 0, col, key)
                n1 = _child(n1, base, keys, s, col, key)
                n2 = _child(n2, base, keys, 2 * s, col, key)
                n3 = _child(n3, base, keys, 3 * s, col, key)
                n4 = _child(n4, base, keys, 4 * s, col, key)
                n5 = _child(n5, base, keys, 5 * s, col, key)
                n6 = _child(n6, base, keys, 6 * s, col, key)
                n7 = _child(n7, base, keys, 7 * s, col, key)
            leaf = t * (n_slots + 1) - n_slots  # bottom slot n_slots + j is leaf j
            a0 += leaf_value[(leaf + n0) & _INDEX]
            a1 += leaf_value[(leaf + n1) & _INDEX]
            a2 += leaf_value[(leaf + n2) & _INDEX]
            a3 += leaf_value[(leaf + n3) & _INDEX]
            a4 += leaf_value[(leaf + n4) & _INDEX]
            a5 += leaf_value[(leaf + n5) & _INDEX]
            a6 += leaf_value[(leaf + n6) & _INDEX]
            a7 += leaf_value[(leaf + n7) & _INDEX]
        out[i] = a0
        out[i + 1] = a1
        out[i + 2] = a2
        out[i + 3] = a3
        out[i + 4] = a4
        out[i + 5] = a5
        out[i + 6] = a6
        out[i + 7] = a7


def predict_raw(trees: CompiledTrees, X: np.ndarray) -> np.ndarray:
    """Raw score (log-odds) of each row of `X` (N, n_features)."""
    if X.ndim != 2 or X.shape[1] != trees.n_features:
        raise ValueError(f"Data must be of dimension (N, {trees.n_features}), is {X.shape}")
    out = np.empty(X.shape[0], dtype=np.float64)
    p = trees.padded
    if X.dtype == np.float32 and p is not None:
        X = np.ascontiguousarray(X)  # a no-op for the engine's rows
        _predict_padded(X, p.nan_key, p.band, p.col, p.key, p.leaf_value, p.depth, out)
        return out
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
