"""Tier two to ONNX with onnxmltools, made exact for float32 inputs.

Two fixes over the converter's raw output:
- Thresholds. onnxruntime compares float32 features with float32 thresholds; rounding
  LightGBM's float64 threshold to the *nearest* float32 can flip `x <= t` for an x equal to
  the rounded value. Rounding each threshold *down* to a float32 keeps
  `x <= t32  <=>  x <= t64` for every float32 x, so ONNX and LightGBM agree exactly on
  the float32 features the engine computes.
- Output shape. The converter declares `label` with a fixed shape of 1, which makes
  onnxruntime warn on every batch; it is declared with a symbolic batch dimension instead.
"""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
import onnx
import onnxmltools
from onnx import helper
from onnxmltools.convert.common.data_types import FloatTensorType

from engine.models.trees import compile_booster

TARGET_OPSET = 15  # onnxmltools' LightGBM converter supports up to 15


def _round_down_f32(t: float) -> float:
    f = np.float32(t)
    if float(f) > t:
        f = np.nextafter(f, np.float32(-np.inf), dtype=np.float32)
    return float(f)


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _set_floats(node: onnx.NodeProto, name: str, values: list[float]) -> None:
    for a in node.attribute:
        if a.name == name:
            del a.floats[:]
            a.floats.extend(values)
            return
    raise KeyError(name)


def _fix_thresholds(node: onnx.NodeProto, booster: lgb.Booster) -> None:
    """Walk each ONNX tree beside the same LightGBM tree and set rounded-down thresholds."""
    a = _attrs(node)
    trees = compile_booster(booster.dump_model())
    index = {
        (t, n): k
        for k, (t, n) in enumerate(zip(a["nodes_treeids"], a["nodes_nodeids"], strict=True))
    }
    values = list(a["nodes_values"])
    for tree_id, root in enumerate(trees.root):
        stack = [(int(root), 0)]
        while stack:
            lgb_node, onnx_id = stack.pop()
            k = index[(tree_id, onnx_id)]
            mode = a["nodes_modes"][k]
            if lgb_node < 0:
                if mode != b"LEAF":
                    raise ValueError(f"tree {tree_id}: ONNX node {onnx_id} should be a leaf")
                continue
            if mode != b"BRANCH_LEQ" or a["nodes_featureids"][k] != trees.feature[lgb_node]:
                raise ValueError(f"tree {tree_id}: ONNX node {onnx_id} does not match LightGBM")
            values[k] = _round_down_f32(float(trees.threshold[lgb_node]))
            stack.append((int(trees.left[lgb_node]), a["nodes_truenodeids"][k]))
            stack.append((int(trees.right[lgb_node]), a["nodes_falsenodeids"][k]))
    _set_floats(node, "nodes_values", values)


def to_onnx(booster: lgb.Booster) -> bytes:
    n = booster.num_feature()
    model = onnxmltools.convert_lightgbm(
        booster,
        initial_types=[("features", FloatTensorType([None, n]))],
        target_opset=TARGET_OPSET,
        zipmap=False,
    )
    ensembles = [nd for nd in model.graph.node if nd.op_type == "TreeEnsembleClassifier"]
    if len(ensembles) != 1:
        raise ValueError(f"expected one TreeEnsembleClassifier, found {len(ensembles)}")
    _fix_thresholds(ensembles[0], booster)
    for out in model.graph.output:
        dims = out.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = "N"
    onnx.checker.check_model(model)
    return model.SerializeToString()
