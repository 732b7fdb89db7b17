"""Exact TreeSHAP for the hot path: per-leaf tables precomputed at load, O(leaves x depth)
per row.

Reason codes need exact per-feature contributions for every reviewed or declined order.
Path-dependent TreeSHAP (Lundberg et al., Algorithm 2) costs O(leaves x depth^2) per row:
LightGBM's own `pred_contrib` takes about 0.35 ms per row on the default tier two
(`make bench`, "Reason codes"). But a leaf's contribution depends on the row only through
which of the features on its path the row satisfies: a bit pattern of at most `depth` bits.
So, as in Fast TreeSHAP v2 (Yang 2021), each leaf's contributions are computed once per
pattern when the model loads (with Algorithm 2's own path-weight recurrences, below); a row
then costs one decision per node plus a table look-up per leaf (about 35 µs a row in the
same benchmark). Tests check the values against LightGBM's `pred_contrib`.
Memory: leaves x 2^depth x depth floats (about 2 MB for the default tier two).
"""

from __future__ import annotations

import numpy as np

from engine.jit import njit, njit_inline
from engine.trees import _ZERO, CompiledTrees

# Reciprocals of small integers: the path-weight recurrences below are serial dependency
# chains, and a division in the chain costs several times a multiplication.
_RECIP = np.array([0.0] + [1.0 / k for k in range(1, 256)])


@njit_inline
def _extend(feat, zero, one, pw, base, depth, zf, of, fi):
    feat[base + depth] = fi
    zero[base + depth] = zf
    one[base + depth] = of
    pw[base + depth] = 1.0 if depth == 0 else 0.0
    inv = _RECIP[depth + 1]
    for i in range(depth - 1, -1, -1):
        pw[base + i + 1] += of * pw[base + i] * (i + 1) * inv
        pw[base + i] = zf * pw[base + i] * (depth - i) * inv


@njit_inline
def _unwound_sum(zero, one, pw, base, depth, k):
    of = one[base + k]
    zf = zero[base + k]
    nxt = pw[base + depth]
    total = 0.0
    d1 = float(depth + 1)
    inv_d1 = _RECIP[depth + 1]
    if of != 0.0:
        scale = d1 / of
        for i in range(depth - 1, -1, -1):
            tmp = nxt * scale * _RECIP[i + 1]
            total += tmp
            nxt = pw[base + i] - tmp * zf * (depth - i) * inv_d1
    elif zf != 0.0:
        scale = d1 / zf
        for i in range(depth - 1, -1, -1):
            total += pw[base + i] * scale * _RECIP[depth - i]
    return total


@njit_inline
def _goes_left(x, node, threshold, default_left, missing):
    m = missing[node]
    if np.isnan(x) and m != 2:
        x = 0.0
    if (m == 1 and -_ZERO <= x <= _ZERO) or (m == 2 and np.isnan(x)):
        return default_left[node]
    return x <= threshold[node]


@njit
def _leaf_tables(leaf_value, path_len, path_slot, n_unique, unique_zero, offsets, table):
    """For every leaf and every pattern of satisfied path features, the SHAP contribution
    of that leaf to each of its unique path features."""
    max_d = unique_zero.shape[1]
    size = (max_d + 2) * (max_d + 3) // 2 + max_d + 2
    feat = np.empty(size, np.int64)
    zero = np.empty(size)
    one = np.empty(size)
    pw = np.empty(size)
    for leaf in range(leaf_value.shape[0]):
        d = n_unique[leaf]
        for pattern in range(1 << d):
            _extend(feat, zero, one, pw, 0, 0, 1.0, 1.0, -1)
            for j in range(d):
                of = 1.0 if (pattern >> j) & 1 else 0.0
                _extend(feat, zero, one, pw, 0, j + 1, unique_zero[leaf, j], of, j)
            base = offsets[leaf] + pattern * d
            for j in range(d):
                w = _unwound_sum(zero, one, pw, 0, d, j + 1)
                table[base + j] = w * (one[j + 1] - zero[j + 1]) * leaf_value[leaf]


@njit
def _shap(
    X,
    feature,
    threshold,
    default_left,
    missing,
    left,
    right,
    root,
    node_slot,
    n_unique,
    unique_feat,
    offsets,
    table,
    expected,
    out,
    stack_node,
    stack_mask,
):
    """Walk each tree once per row, carrying the bit pattern of satisfied path features.

    A node's feature has the same slot on every path through it (slots number a path's
    distinct features in order of first use), so the pattern can be built top-down: the
    child the row does not take clears that slot's bit. Each leaf then costs one table row.
    """
    n_features = X.shape[1]
    for r in range(X.shape[0]):
        for j in range(n_features):
            out[r, j] = 0.0
        out[r, n_features] = expected
        for t in range(root.shape[0]):
            if root[t] < 0:
                continue  # a single-leaf tree only moves the base value
            top = 0
            stack_node[0] = root[t]
            stack_mask[0] = -1
            while top >= 0:
                node = stack_node[top]
                mask = stack_mask[top]
                top -= 1
                if node < 0:
                    leaf = ~node
                    d = n_unique[leaf]
                    base = offsets[leaf] + (mask & ((1 << d) - 1)) * d
                    for j in range(d):
                        out[r, unique_feat[leaf, j]] += table[base + j]
                    continue
                bit = np.int64(1) << node_slot[node]
                if _goes_left(
                    np.float64(X[r, feature[node]]), node, threshold, default_left, missing
                ):
                    hot, cold = left[node], right[node]
                else:
                    hot, cold = right[node], left[node]
                stack_node[top + 1] = cold
                stack_mask[top + 1] = mask & ~bit
                stack_node[top + 2] = hot
                stack_mask[top + 2] = mask
                top += 2


def _leaf_paths(trees: CompiledTrees):
    """Each leaf's path: the split nodes, the direction taken, and its unique features with
    their zero fractions (product of cover ratios over the feature's splits)."""
    n_leaves = trees.leaf_value.size
    depth = 1
    paths: list[list[tuple[int, bool]]] = [[] for _ in range(n_leaves)]
    for root in trees.root:
        stack: list[tuple[int, list[tuple[int, bool]]]] = [(int(root), [])]
        while stack:
            node, path = stack.pop()
            if node < 0:
                paths[~node] = path
                depth = max(depth, len(path))
                continue
            stack.append((int(trees.left[node]), path + [(node, True)]))
            stack.append((int(trees.right[node]), path + [(node, False)]))
    path_len = np.zeros(n_leaves, np.int64)
    path_node = np.zeros((n_leaves, depth), np.int64)
    path_left = np.zeros((n_leaves, depth), np.bool_)
    path_slot = np.zeros((n_leaves, depth), np.int64)
    n_unique = np.zeros(n_leaves, np.int64)
    unique_feat = np.zeros((n_leaves, depth), np.int64)
    unique_zero = np.ones((n_leaves, depth), np.float64)
    node_slot = np.zeros(trees.feature.size, np.int64)
    for leaf, path in enumerate(paths):
        slots: dict[int, int] = {}
        path_len[leaf] = len(path)
        for k, (node, left) in enumerate(path):
            f = int(trees.feature[node])
            slot = slots.setdefault(f, len(slots))
            child = trees.left[node] if left else trees.right[node]
            cover = trees.node_cover[child] if child >= 0 else trees.leaf_cover[~child]
            unique_feat[leaf, slot] = f
            unique_zero[leaf, slot] *= cover / trees.node_cover[node]
            path_node[leaf, k], path_left[leaf, k], path_slot[leaf, k] = node, left, slot
            node_slot[node] = slot
        n_unique[leaf] = len(slots)
    return path_len, path_slot, n_unique, unique_feat, unique_zero, node_slot


def expected_value(trees: CompiledTrees) -> float:
    """Cover-weighted mean leaf value summed over trees: the SHAP base value."""
    total = 0.0
    for r in trees.root:
        stack, leaves = [int(r)], []
        while stack:
            node = stack.pop()
            if node < 0:
                leaves.append(~node)
            else:
                stack += [int(trees.left[node]), int(trees.right[node])]
        cover = trees.leaf_cover[leaves]
        values = trees.leaf_value[leaves]
        total += float(values @ cover / cover.sum()) if cover.sum() > 0 else float(values.mean())
    return total


class TreeExplainer:
    """Exact SHAP values of a compiled tree ensemble; the last column is the base value."""

    MAX_DEPTH = 12  # 2^depth patterns per leaf: deeper trees would need too much memory

    def __init__(self, trees: CompiledTrees) -> None:
        if trees.node_cover.size != trees.feature.size or not (trees.node_cover > 0).all():
            raise ValueError("trees lack node covers: recompile from a LightGBM model dump")
        self.trees = trees
        path_len, path_slot, self.n_unique, self.unique_feat, unique_zero, self.node_slot = (
            _leaf_paths(trees)
        )
        self.max_depth = int(path_len.max(initial=0))
        if self.n_unique.max(initial=0) > self.MAX_DEPTH:
            raise ValueError(
                f"trees must have at most {self.MAX_DEPTH} distinct features on a path, "
                f"have {self.n_unique.max()}"
            )
        sizes = (1 << self.n_unique) * self.n_unique
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.table = np.zeros(int(sizes.sum()))
        _leaf_tables(
            trees.leaf_value,
            path_len,
            path_slot,
            self.n_unique,
            unique_zero,
            self.offsets,
            self.table,
        )
        self.expected = expected_value(trees)

    def shap_values(self, X: np.ndarray) -> np.ndarray:
        t = self.trees
        if X.ndim != 2 or X.shape[1] != t.n_features:
            raise ValueError(f"Data must be of dimension (N, {t.n_features}), is {X.shape}")
        out = np.empty((X.shape[0], t.n_features + 1))
        stack = 2 * self.max_depth + 3
        _shap(
            np.ascontiguousarray(X),
            t.feature,
            t.threshold,
            t.default_left,
            t.missing,
            t.left,
            t.right,
            t.root,
            self.node_slot,
            self.n_unique,
            self.unique_feat,
            self.offsets,
            self.table,
            self.expected,
            out,
            np.empty(stack, np.int64),
            np.empty(stack, np.int64),
        )
        return out
