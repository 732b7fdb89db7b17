"""Exact TreeSHAP for the hot path: tables precomputed at load, one look-up per subtree.

Reason codes need exact per-feature contributions for every reviewed or declined order.
Path-dependent TreeSHAP (Lundberg et al., Algorithm 2) costs O(leaves x depth^2) per row,
too slow for the hot path (`make bench`, "Reason codes", sets it beside this module). But a
leaf's contribution depends on the row only through
which of the features on its path the row satisfies: a bit pattern of at most `depth` bits.
So, as in Fast TreeSHAP v2 (Yang 2021), each leaf's contributions are computed once per
pattern when the model loads (with Algorithm 2's own path-weight recurrences, below).

Per-leaf tables still cost one look-up per leaf and one addition per leaf and path feature.
So the leaves under a small subtree
share one table: its index is the pattern of the distinct features above the subtree plus
the decision of each split inside it, and its row is the sum of those leaves' rows over the
union of their features. Sibling leaves have the same features, so their shared table is
no larger than their two. `_plan` picks the subtrees of each tree by a cost model (lookups
and additions per row against table memory). A row then costs one decision per node and one
table row per subtree. Tests check the values against LightGBM's `pred_contrib`.
"""

from __future__ import annotations

import numpy as np

from engine.jit import njit
from engine.models.trees import CompiledTrees
from engine.models.treeshap_kernels import _MAX_BITS, _leaf_tables, _shap

# Tuning constants of the table planner, chosen by trial on the default tier two (no
# committed benchmark repeats the trials).
# `_plan`'s weights, in added values: a look-up, a stored value.
_LOOKUP_COST = 4.0
_MEMORY_COST = 1e-3
_UNUSED_BIT = 62  # index bit that padding literals clear: never set


def _leaf_paths(trees: CompiledTrees):
    """Each leaf's path (split nodes, direction, the slot of the node's feature among the
    path's distinct features in order of first use) and its unique features with their zero
    fractions (product of cover ratios over the feature's splits)."""
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
    path_left = np.zeros((n_leaves, depth), np.int64)
    path_slot = np.zeros((n_leaves, depth), np.int64)
    n_unique = np.zeros(n_leaves, np.int64)
    unique_feat = np.zeros((n_leaves, depth), np.int64)
    unique_zero = np.ones((n_leaves, depth), np.float64)
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
        n_unique[leaf] = len(slots)
    return path_len, path_node, path_left, path_slot, n_unique, unique_feat, unique_zero


def _plan(trees: CompiledTrees, root: int) -> list[tuple[int, list[tuple[int, bool]]]]:
    """The subtrees of one tree that get a merged table each, with the path to each: the
    cheapest cover of its leaves by `_LOOKUP_COST` per look-up, one per value added and
    `_MEMORY_COST` per value stored, with at most `_MAX_BITS` index bits per table."""
    n_sub: dict[int, int] = {}  # splits under (and including) each node
    feats: dict[int, set[int]] = {}  # their features
    order: list[int] = []
    stack = [root]
    while stack:
        node = stack.pop()
        order.append(node)
        if node >= 0:
            stack += [int(trees.left[node]), int(trees.right[node])]
    for node in reversed(order):  # children before parents
        if node < 0:
            n_sub[node], feats[node] = 0, set()
        else:
            a, b = int(trees.left[node]), int(trees.right[node])
            n_sub[node] = n_sub[a] + n_sub[b] + 1
            feats[node] = feats[a] | feats[b] | {int(trees.feature[node])}

    def best(node: int, path: list[tuple[int, bool]]) -> tuple[float, list]:
        above = {int(trees.feature[m]) for m, _ in path}
        bits = len(above) + n_sub[node]
        width = len(above | feats[node])
        own = _LOOKUP_COST + width + _MEMORY_COST * width * (1 << bits)
        if node < 0:
            return own, [(node, path)]
        left = best(int(trees.left[node]), path + [(node, True)])
        right = best(int(trees.right[node]), path + [(node, False)])
        if bits <= _MAX_BITS and own <= left[0] + right[0]:
            return own, [(node, path)]
        return left[0] + right[0], left[1] + right[1]

    return best(root, [])[1]


def _subtree(trees: CompiledTrees, node: int) -> tuple[int, list[int]]:
    """The number of splits under `node` (itself included) and its leaves, in preorder."""
    splits, leaves, stack = 0, [], [node]
    while stack:
        node = stack.pop()
        if node < 0:
            leaves.append(~node)
        else:
            splits += 1
            stack += [int(trees.right[node]), int(trees.left[node])]
    return splits, leaves


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


def _layout(
    trees: CompiledTrees,
    path_len: np.ndarray,
    path_node: np.ndarray,
    n_unique: np.ndarray,
    unique_feat: np.ndarray,
) -> tuple[list[int], list[tuple[int, int]], list[tuple[int, ...]], list[int], int, tuple]:
    """The split nodes in kernel order and the merged tables (see `TreeExplainer`; the
    literals not yet padded), and where each leaf goes in them: its table, the depth of that
    table's subtree, the index bit of each split on its path inside the subtree and the
    table position of each of its slots (the inputs of `_merge_tables`)."""
    n_leaves = n_unique.size
    leaf_tab = np.full(n_leaves, -1, np.int64)
    leaf_depth = np.zeros(n_leaves, np.int64)
    path_bit = np.zeros_like(path_node)
    slot_pos = np.zeros_like(unique_feat)
    order: list[int] = []  # split nodes, tree after tree, each tree in preorder
    tree_ptr = [(0, 0)]
    tab: list[tuple[int, ...]] = []
    lits: list[tuple[int, ...]] = []
    tab_feat: list[int] = []
    n_values = 0
    for root in trees.root:
        if root < 0:
            continue
        pos: dict[int, int] = {}  # split node -> its position in `order`
        stack = [int(root)]
        while stack:
            node = stack.pop()
            if node >= 0:
                pos[node] = len(order)
                order.append(node)
                stack += [int(trees.right[node]), int(trees.left[node])]
        for node, path in _plan(trees, int(root)):
            slots: dict[int, int] = {}
            lit: list[int] = []
            for m, went_left in path:
                slot = slots.setdefault(int(trees.feature[m]), len(slots))
                lit += [pos[m], int(went_left), slot]
            k = len(slots)
            splits, leaves = _subtree(trees, node)
            first = pos.get(node, pos[int(root)])  # a leaf's table has no splits
            feats = list(slots)
            for leaf in leaves:
                feats += [int(f) for f in unique_feat[leaf, k : n_unique[leaf]] if f not in feats]
                leaf_tab[leaf], leaf_depth[leaf] = len(tab), len(path)
                for h in range(len(path), int(path_len[leaf])):
                    path_bit[leaf, h] = k + pos[int(path_node[leaf, h])] - first
                slot_pos[leaf, : n_unique[leaf]] = [
                    feats.index(f) for f in unique_feat[leaf, : n_unique[leaf]]
                ]
            tab.append((k, first, (1 << splits) - 1, len(feats), len(tab_feat), n_values))
            lits.append(tuple(lit))
            tab_feat += feats
            n_values += len(feats) << (k + splits)
        tree_ptr.append((len(order), len(tab)))
    tab = [row + lit for row, lit in zip(tab, lits, strict=True)]
    return order, tree_ptr, tab, tab_feat, n_values, (leaf_tab, leaf_depth, path_bit, slot_pos)


@njit
def _merge_tables(
    leaf_table,
    leaf_offset,
    n_unique,
    path_len,
    path_left,
    path_slot,
    leaf_tab,
    leaf_depth,
    path_bit,
    slot_pos,
    tab,
    table,
):
    """Fill each merged table from its leaves' tables: at every index, each leaf under the
    subtree adds its row for the pattern the index implies. Leaf slot j goes to position
    `slot_pos[leaf, j]` of the table's features; the split at depth h of the leaf's path
    (inside the subtree) is index bit `path_bit[leaf, h]`."""
    for leaf in range(n_unique.shape[0]):
        q = leaf_tab[leaf]
        if q < 0:
            continue  # a single-leaf tree
        k, width, offset = tab[q, 0], tab[q, 3], tab[q, 5]
        d = n_unique[leaf]
        for idx in range((tab[q, 2] + 1) << k):
            # slots above the subtree: as the index says; slots first met inside: satisfied
            # unless the row leaves the leaf's path at a split on that feature
            pattern = (idx & ((1 << k) - 1)) | ((1 << d) - (1 << k))
            for h in range(leaf_depth[leaf], path_len[leaf]):
                went_left = (idx >> path_bit[leaf, h]) & 1
                pattern &= ~((went_left ^ path_left[leaf, h]) << path_slot[leaf, h])
            src = leaf_offset[leaf] + pattern * d
            dst = offset + idx * width
            for j in range(d):
                table[dst + slot_pos[leaf, j]] += leaf_table[src + j]


def _routing(trees: CompiledTrees, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The routing variants in use, (special value goes right, zero is special) each, and
    each node's column in the kernel's per-variant row values (`_row_values`). As in
    `engine.models.trees.PaddedTrees`: NaN goes to a side fixed per node (missing type NaN: the
    default side; None: where 0.0 goes), and for missing type Zero so do NaN and zero."""
    nan_left, zero_default, _ = trees.routing
    zero_type = zero_default >= 0
    special_right = np.where(zero_type, zero_default == 0, ~nan_left)
    variant = special_right.astype(np.int64) + 2 * zero_type
    used = np.unique(variant[nodes])
    variant_side = np.stack([used % 2, used // 2], axis=1).astype(np.int64)
    node_col = np.searchsorted(used, variant[nodes]) * trees.n_features + trees.feature[nodes]
    return variant_side.reshape(-1, 2), node_col.astype(np.int64)


class TreeExplainer:
    """Exact SHAP values of a compiled tree ensemble; the last column is the base value.

    Layout: the split nodes of every tree with splits, tree after tree, each in preorder (so
    a subtree's splits are consecutive): `node_col`, `node_threshold`; then per tree its
    merged tables, `tree_ptr[t]` = (first node, first table). Table `q` is `tab[q]` =
    (k, first split, 2^splits - 1, width, first feature, offset, literals...): its index
    has k bits for the distinct features above the subtree, bit s set unless the row leaves
    the path at a split on that feature (literal: node, 1 if the path goes left, s), then
    one bit per split inside, in preorder; its row of `width` values adds to features
    `tab_feat[first feature:][:width]`. Single-leaf trees only move the base value.
    """

    MAX_DEPTH = 12  # 2^depth patterns per leaf: deeper trees would need too much memory

    def __init__(self, trees: CompiledTrees) -> None:
        if trees.node_cover.size != trees.feature.size or not (trees.node_cover > 0).all():
            raise ValueError("trees lack node covers: recompile from a LightGBM model dump")
        self.trees = trees
        path_len, path_node, path_left, path_slot, n_unique, unique_feat, unique_zero = _leaf_paths(
            trees
        )
        if n_unique.max(initial=0) > self.MAX_DEPTH:
            raise ValueError(
                f"trees must have at most {self.MAX_DEPTH} distinct features on a path, "
                f"have {n_unique.max()}"
            )
        sizes = (1 << n_unique) * n_unique
        leaf_offset = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        leaf_table = np.zeros(int(sizes.sum()))
        _leaf_tables(trees.leaf_value, n_unique, unique_zero, leaf_offset, leaf_table)

        order, tree_ptr, tab, tab_feat, n_values, placement = _layout(
            trees, path_len, path_node, n_unique, unique_feat
        )
        leaf_tab, leaf_depth, path_bit, slot_pos = placement
        # Pad the literals to the longest path's (a fixed trip count is predicted) with ones
        # that clear an unused bit.
        n_lits = max((len(row) - 6 for row in tab), default=0)
        tab = [row + (row[1], 0, _UNUSED_BIT) * ((6 + n_lits - len(row)) // 3) for row in tab]
        self.tab = np.array(tab, np.int64).reshape(len(tab), 6 + n_lits)
        self.table = np.zeros(n_values)
        _merge_tables(
            leaf_table,
            leaf_offset,
            n_unique,
            path_len,
            path_left,
            path_slot,
            leaf_tab,
            leaf_depth,
            path_bit,
            slot_pos,
            self.tab,
            self.table,
        )
        self.tab_feat = np.array(tab_feat, np.int64)
        self.tree_ptr = np.array(tree_ptr, np.int64)
        nodes = np.array(order, np.int64)
        self.variant_side, self.node_col = _routing(trees, nodes)
        self.node_threshold = trees.threshold[nodes].astype(np.float64)
        self.expected = expected_value(trees)

    def shap_values(self, X: np.ndarray) -> np.ndarray:
        n_features = self.trees.n_features
        if X.ndim != 2 or X.shape[1] != n_features:
            raise ValueError(f"Data must be of dimension (N, {n_features}), is {X.shape}")
        out = np.empty((X.shape[0], n_features + 1))
        _shap(
            np.ascontiguousarray(X),
            self.node_col,
            self.node_threshold,
            self.variant_side,
            self.tree_ptr,
            self.tab,
            self.tab_feat,
            self.table,
            self.expected,
            out,
        )
        return out
