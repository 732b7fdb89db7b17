"""TreeSHAP's Numba kernels: Algorithm 2's path-weight recurrences (to fill the tables at
load) and the per-row evaluation over the precomputed tables (`engine.models.treeshap`
plans the tables and is the public side)."""

from __future__ import annotations

import numpy as np

from engine.jit import njit, njit_inline
from engine.models.trees import _INDEX, _ZERO

_MAX_BITS = 10  # index bits of a merged table: 2^bits rows (chosen by trial, as below)

# Reciprocals of small integers: the path-weight recurrences below are serial dependency
# chains, and a division in the chain costs several times a multiplication.
_RECIP = np.array([0.0] + [1.0 / k for k in range(1, 256)])

# Tuning constants, chosen by trial on the default tier two (no committed benchmark repeats
# the trials): rows that walk one tree together, and the batch below which rows go one by one.
_BLOCK = 32
_MIN_BLOCK = 5


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


@njit
def _leaf_tables(leaf_value, n_unique, unique_zero, offsets, table):
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


@njit_inline
def _row_values(X, r, variant_side, xs, c):
    """Row `r` of `X` once per routing variant (see `TreeExplainer`) into column `c` of
    `xs`, as float64 values that go left at a node iff `value <= threshold`: values LightGBM
    reads as 0.0 become 0.0, special values -inf (left everywhere) or NaN (right)."""
    n_features = X.shape[1]
    for v in range(variant_side.shape[0]):
        special = np.nan if variant_side[v, 0] else -np.inf
        zero_special = variant_side[v, 1]
        for f in range(n_features):
            x = np.float64(X[r, f])
            if -_ZERO <= x <= _ZERO:
                x = special if zero_special else 0.0
            if np.isnan(x):
                x = special
            xs[v * n_features + f, c] = x


@njit_inline
def _add_table_row(out, r, tab, q, idx, tab_feat, table):
    width = tab[q, 3]
    f = tab[q, 4]
    base = tab[q, 5] + idx * width
    for j in range(width):
        out[r, tab_feat[(f + j) & _INDEX]] += table[(base + j) & _INDEX]


@njit_inline
def _one_row(r, xs, node_col, node_threshold, tab, tab_feat, table, w, out):
    """Row `r` (column 0 of `xs`) through all trees, for small batches: every node's
    decision in one pass over the nodes, then `w[i]` holds the decisions of nodes i, i + 1,
    ... as bits 0, 1, ... (1: left), after log2(`_MAX_BITS`) vectorised doubling passes."""
    n_nodes = node_col.shape[0]
    n_lits = (tab.shape[1] - 6) // 3
    for i in range(n_nodes):
        w[i] = xs[node_col[i] & _INDEX, 0] <= node_threshold[i]
    s = 1
    while s < _MAX_BITS:
        for i in range(n_nodes):  # reads w[i + s] before this pass overwrites it
            w[i] |= w[i + s] << s
        s *= 2
    for q in range(tab.shape[0]):
        k = tab[q, 0]
        idx = ((w[tab[q, 1] & _INDEX] & tab[q, 2]) << k) | ((1 << k) - 1)
        for m in range(6, 6 + 3 * n_lits, 3):
            idx &= ~(((w[tab[q, m] & _INDEX] & 1) ^ tab[q, m + 1]) << tab[q, m + 2])
        _add_table_row(out, r, tab, q, idx, tab_feat, table)


@njit_inline
def _tree_rows(t, n, r0, xs, node_col, node_threshold, tree_ptr, tab, tab_feat, table, win, out):
    """Tree `t` for rows `r0 .. r0 + n` (columns 0 .. n of `xs`), every step a loop over the
    rows, which vectorises: `win[i - first node, r]` holds the decisions of nodes i, i + 1,
    ... of the tree as bits 0, 1, ... (1: left)."""
    n_lits = (tab.shape[1] - 6) // 3
    n_lo, n_hi = tree_ptr[t, 0], tree_ptr[t + 1, 0]
    bits = win[-1]  # the last two rows of `win` are scratch
    idx = win[-2]
    bits[:n] = 0
    for i in range(n_hi - 1, n_lo - 1, -1):
        col = node_col[i]
        threshold = node_threshold[i]
        for r in range(n):
            bits[r] = (bits[r] << 1) | (xs[col, r] <= threshold)
            win[i - n_lo, r] = bits[r]
    for q in range(tree_ptr[t, 1], tree_ptr[t + 1, 1]):
        k = tab[q, 0]
        sub, mask = tab[q, 1] - n_lo, tab[q, 2]
        for r in range(n):
            idx[r] = ((win[sub, r] & mask) << k) | ((1 << k) - 1)
        for m in range(6, 6 + 3 * n_lits, 3):
            node, want, slot = tab[q, m] - n_lo, tab[q, m + 1], tab[q, m + 2]
            for r in range(n):
                idx[r] &= ~(((win[node, r] & 1) ^ want) << slot)
        for r in range(n):
            _add_table_row(out, r0 + r, tab, q, idx[r], tab_feat, table)


@njit
def _shap(X, node_col, node_threshold, variant_side, tree_ptr, tab, tab_feat, table, expected, out):
    """Blocks of up to `_BLOCK` rows, tree-major: the loops over a block's rows vectorise
    and each tree's nodes and table entries are read once per block. A batch of fewer than
    `_MIN_BLOCK` rows goes row by row. Per row and tree: every node's decision once, then
    one index and one table row per merged table (see `TreeExplainer`)."""
    n_rows, n_features = X.shape
    n_trees = tree_ptr.shape[0] - 1
    max_nodes = 1
    for t in range(n_trees):
        max_nodes = max(max_nodes, tree_ptr[t + 1, 0] - tree_ptr[t, 0])
    xs = np.empty((variant_side.shape[0] * n_features, _BLOCK))
    if n_rows < _MIN_BLOCK:
        w = np.zeros(node_col.shape[0] + _MAX_BITS, np.int64)
        for r in range(n_rows):
            _row_values(X, r, variant_side, xs, 0)
            for j in range(n_features):
                out[r, j] = 0.0
            out[r, n_features] = expected
            _one_row(r, xs, node_col, node_threshold, tab, tab_feat, table, w, out)
        return
    win = np.empty((max_nodes + 2, _BLOCK), np.int64)
    for r0 in range(0, n_rows, _BLOCK):
        n = min(_BLOCK, n_rows - r0)
        for r in range(n):
            _row_values(X, r0 + r, variant_side, xs, r)
            for j in range(n_features):
                out[r0 + r, j] = 0.0
            out[r0 + r, n_features] = expected
        for t in range(n_trees):
            _tree_rows(
                t, n, r0, xs, node_col, node_threshold, tree_ptr, tab, tab_feat, table, win, out
            )
