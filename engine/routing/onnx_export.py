"""The routing text model as one ONNX graph, and the check that it agrees with scikit-learn.

Graph: `text` (string [N, 1], prepared by `engine.routing.text_prep.prepare`) -> word TF-IDF
and character TF-IDF (skl2onnx's converters for the fitted vectorizers) -> one head per
target, outputs `queue_probabilities` and, when trained with priority, `priority_probabilities`
(float [N, labels]). A head is softmax(word @ W_word + char @ W_char + b), the fitted
LogisticRegression's predict_proba, written here rather than by skl2onnx's converter: that
converter reads one tensor, so the two TF-IDF blocks would be copied into a concatenation
first, the largest single cost of a case (the TF-IDF stage is dense). The heads share the
features, so the priority costs one more pair of matrix products, not a second pass over
the text.

What the converters need, and why each step keeps the graph equal to scikit-learn:
- skl2onnx has no converter for `analyzer="char_wb"`. Its `analyzer="char"` converter splits
  the string into characters (the Tokenizer's re2 `.`, which reads UTF-8 characters) and
  counts n-grams over the whole string. On prepared text (words between single spaces, a
  space at each end, no other whitespace) that count equals char_wb's for every char_wb
  gram: such a gram is a substring of " word " with spaces only at its ends, and each of its
  occurrences in the padded text lies inside exactly one padded word. So the exported copy
  of the fitted vectorizer is switched to `analyzer="char"` with the fitted vocabulary and
  idf unchanged; grams across a word boundary are in no vocabulary and count nothing.
- The vocabularies are made convertible at fitting (`engine.routing.text_fit._exportable`:
  a kept bigram's words are kept, gram lengths have no gap).
- Words: skl2onnx would replace scikit-learn's token pattern by an ASCII-only one, so the
  Tokenizer is given `WORD_TOKEN` (`tokenexp`), which Python's re and re2 read alike.
- Case folding happens in `prepare` (Python, Unicode), not in the graph's StringNormalizer,
  whose result depends on the process's locale.
- skl2onnx normalises each TF-IDF block with ai.onnx.ml `Normalizer`, which onnxruntime
  runs element by element; `_core_l2` replaces it with the core `LpNormalization(p=2)`,
  which onnxruntime vectorises and which leaves an all-zero row zero, as scikit-learn does
  (the parity sample holds an empty text, so a NaN there fails the check).

`check_parity` applies `engine.routing.text_session.compare` to the graph and the fitted
model on the same texts.
"""

from __future__ import annotations

import copy
import random
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import helper, numpy_helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import StringTensorType

from engine.routing.text_prep import SEPARATOR, WORD_TOKEN
from engine.routing.text_session import INPUT, Parity, compare, output_name, run

if TYPE_CHECKING:
    from engine.routing.text_fit import FittedText

OPSET = 17
"""ai.onnx opset of the graph."""


def _core_l2(model: onnx.ModelProto) -> None:
    """Replace every ai.onnx.ml Normalizer(norm=L2) with core LpNormalization(p=2)."""
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        norm = next((a.s for a in node.attribute if a.name == "norm"), b"")
        if node.op_type == "Normalizer" and norm == b"L2":
            node = helper.make_node(
                "LpNormalization", [node.input[0]], [node.output[0]], name=node.name, axis=1, p=2
            )
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _blocks(model: onnx.ModelProto) -> list[str]:
    """Drop the FeatureUnion's final Concat; the names of the blocks it joined, in order."""
    out = model.graph.output[0].name
    concat = [n for n in model.graph.node if out in n.output]
    if len(concat) != 1 or concat[0].op_type != "Concat":
        raise ValueError(f"expected the features graph to end in Concat, it ends in {concat}")
    model.graph.node.remove(concat[0])
    del model.graph.output[:]
    return list(concat[0].input)


def _head(
    model: onnx.ModelProto, name: str, clf: Any, blocks: list[str], widths: list[int]
) -> None:
    """Append softmax(sum_i block_i @ W_i + b), scikit-learn's predict_proba for a fitted
    LogisticRegression: multinomial, or binary as softmax([-z/2, z/2]) = [1 - s(z), s(z)]."""
    coef = np.asarray(clf.coef_, np.float64)
    bias = np.asarray(clf.intercept_, np.float64)
    if coef.shape[0] == 1:
        coef, bias = np.vstack([-coef / 2, coef / 2]), np.r_[-bias / 2, bias / 2]
    terms, start = [], 0
    for i, (block, width) in enumerate(zip(blocks, widths, strict=True)):
        w = f"{name}_w{i}"
        model.graph.initializer.append(
            numpy_helper.from_array(coef[:, start : start + width].T.astype(np.float32), w)
        )
        terms.append(f"{name}_z{i}")
        model.graph.node.append(helper.make_node("MatMul", [block, w], [terms[-1]]))
        start += width
    model.graph.initializer.append(numpy_helper.from_array(bias.astype(np.float32), f"{name}_b"))
    total = terms[0]
    for k, term in enumerate(terms[1:]):
        model.graph.node.append(helper.make_node("Add", [total, term], [f"{name}_sum{k}"]))
        total = f"{name}_sum{k}"
    model.graph.node.extend(
        [
            helper.make_node("Add", [total, f"{name}_b"], [f"{name}_logits"]),
            helper.make_node("Softmax", [f"{name}_logits"], [output_name(name)], axis=1),
        ]
    )
    model.graph.output.append(
        helper.make_tensor_value_info(output_name(name), onnx.TensorProto.FLOAT, ["N", len(bias)])
    )


def to_onnx(fitted: FittedText) -> onnx.ModelProto:
    """The fitted model as one graph (see the module docstring)."""
    features = copy.deepcopy(fitted.features)
    word, char = (t for _, t in features.transformer_list)
    char.analyzer = "char"
    with warnings.catch_warnings():  # the char converter warns it "may not work": parity checks
        warnings.filterwarnings("ignore", "The conversion of CountVectorizer", UserWarning)
        model = convert_sklearn(
            features,
            initial_types=[(INPUT, StringTensorType([None, 1]))],
            options={id(word): {"tokenexp": WORD_TOKEN}},
            target_opset={"": OPSET, "ai.onnx.ml": 1},
        )
    _core_l2(model)
    blocks = _blocks(model)
    widths = [len(word.vocabulary_), len(char.vocabulary_)]
    for name, clf in (("queue", fitted.queue), ("priority", fitted.priority)):
        if clf is not None:
            _head(model, name, clf, blocks, widths)
    model.producer_name = "ordersight.routing"
    onnx.checker.check_model(model)
    return model


def check_parity(sess: Any, fitted: FittedText, texts: list[str]) -> Parity:
    heads = ("queue", "priority") if fitted.priority is not None else ("queue",)
    queue, priority = fitted.predict_proba(texts)
    reference = [queue] if priority is None else [queue, priority]
    return compare(run(sess, texts, heads), reference)


def parity_sample(fitted: FittedText, n: int = 128, seed: int = 0) -> list[str]:
    """Prepared texts made of the model's own words in random order (the folder keeps these
    rather than any case's text), plus the empty text, for the check at load."""
    word = fitted.features.transformer_list[0][1]
    words = sorted(g for g in word.vocabulary_ if " " not in g and g != SEPARATOR.strip())
    words = words or ["x"]
    rng = random.Random(seed)
    texts = [" " + SEPARATOR.join(["", ""]) + " "]
    for _ in range(n - 1):
        parts = [" ".join(rng.choices(words, k=rng.randint(1, 30))) for _ in range(2)]
        texts.append(" " + SEPARATOR.join(parts) + " ")
    return texts


def sparse_heads(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose heads multiply only the non-zero TF-IDF entries: a case's
    row has a few hundred non-zeros among tens of thousands of columns, so for one or two
    rows gathering their weight rows costs far less than the dense MatMul; for more rows the
    dense product is cheaper (`engine.routing.text_model.SPARSE_ROWS`). Same weights, same
    sums in another order: within the parity tolerance, and checked like the dense graph."""
    out = copy.deepcopy(model)
    widths = {i.name: int(i.dims[1]) for i in out.graph.initializer if len(i.dims) == 2}
    nodes: list[onnx.NodeProto] = []
    blocks: set[str] = set()
    for node in out.graph.node:
        if node.op_type != "MatMul" or node.input[1] not in widths:
            nodes.append(node)
            continue
        block, w = node.input
        p, q = f"{block}_sparse", f"{w}_sparse"
        if block not in blocks:  # the block's non-zeros, once for every head reading it
            blocks.add(block)
            nodes += [
                helper.make_node("NonZero", [block], [f"{p}_nz"]),  # [2, nnz]: rows, columns
                helper.make_node("Transpose", [f"{p}_nz"], [f"{p}_at"], perm=[1, 0]),
                helper.make_node("GatherND", [block, f"{p}_at"], [f"{p}_values"]),
                helper.make_node("Unsqueeze", [f"{p}_values", "sparse_1d"], [f"{p}_v"]),
                helper.make_node("Gather", [f"{p}_nz", "sparse_one"], [f"{p}_cols"], axis=0),
                helper.make_node("Gather", [f"{p}_nz", "sparse_zero"], [f"{p}_r"], axis=0),
                helper.make_node("Unsqueeze", [f"{p}_r", "sparse_1d"], [f"{p}_rows"]),
                helper.make_node("Shape", [block], [f"{p}_shape"]),
                helper.make_node("Slice", [f"{p}_shape", "sparse_0d", "sparse_1d"], [f"{p}_n"]),
            ]
        out.graph.initializer.append(
            numpy_helper.from_array(np.array([widths[w]], np.int64), f"{q}_width")
        )
        zero = helper.make_tensor(f"{q}_zero", onnx.TensorProto.FLOAT, [1], [0.0])
        nodes += [
            helper.make_node("Gather", [w, f"{p}_cols"], [f"{q}_rows"], axis=0),
            helper.make_node("Mul", [f"{q}_rows", f"{p}_v"], [f"{q}_terms"]),
            helper.make_node("Concat", [f"{p}_n", f"{q}_width"], [f"{q}_shape"], axis=0),
            helper.make_node("ConstantOfShape", [f"{q}_shape"], [f"{q}_zeros"], value=zero),
            helper.make_node(
                "ScatterND", [f"{q}_zeros", f"{p}_rows", f"{q}_terms"], [node.output[0]],
                reduction="add",
            ),
        ]  # fmt: skip
    for name, value in (("sparse_0d", [0]), ("sparse_1d", [1]), ("sparse_zero", 0),
                        ("sparse_one", 1)):  # fmt: skip
        out.graph.initializer.append(numpy_helper.from_array(np.array(value, np.int64), name))
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    onnx.checker.check_model(out)
    return out
