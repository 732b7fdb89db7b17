"""The three scorers: tier one (Numba trees), tier two (ONNX via onnxruntime), rule fallback.

They share one interface, `Scorer`: `score(X) -> probability of fraud per row`, with a
`name` and a `version`; one contract test (tests/models/test_scorers.py) runs over all three.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Protocol

import lightgbm as lgb
import numpy as np
import onnxruntime as ort

from engine.features.matrix import FEATURE_NAMES, N_FEATURES
from engine.models.trees import CompiledTrees, compile_booster, predict_raw
from engine.models.treeshap import TreeExplainer, expected_value


class Scorer(Protocol):
    name: str
    version: str

    def score(self, X: np.ndarray) -> np.ndarray: ...


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _check(X: np.ndarray) -> np.ndarray:
    if X.ndim != 2 or X.shape[1] != N_FEATURES:
        raise ValueError(f"Data must be of dimension (N, {N_FEATURES}), is {X.shape}")
    return np.ascontiguousarray(X, dtype=np.float32)


class TierOne:
    """A few shallow trees that predict whether tier two would flag an order.

    `screen` is that prediction; rows reaching `threshold` are escalated. `score` maps it to
    a probability of fraud with an isotonic calibration fitted on the validation period's
    screened-out orders (`calibration` = its knots), which is what a screened-out order's
    decision reports.
    """

    name = "tier1"

    def __init__(
        self,
        trees: CompiledTrees,
        threshold: float,
        calibration: tuple[np.ndarray, np.ndarray],
        version: str,
    ) -> None:
        if trees.n_features != N_FEATURES:
            raise ValueError(
                f"tier one expects {trees.n_features} features, engine has {N_FEATURES}"
            )
        x, y = (np.asarray(a, dtype=np.float64) for a in calibration)
        if x.ndim != 1 or x.shape != y.shape or x.size < 1 or np.any(np.diff(x) < 0):
            raise ValueError("tier one calibration must be increasing knots x with values y")
        self.trees = trees
        self.threshold = float(threshold)
        self.calibration = (x, y)
        self.version = version

    def screen(self, X: np.ndarray) -> np.ndarray:
        """Probability that tier two would flag each row."""
        return sigmoid(predict_raw(self.trees, _check(X)))

    def calibrate(self, p_flag: np.ndarray) -> np.ndarray:
        return np.interp(p_flag, *self.calibration)

    def score(self, X: np.ndarray) -> np.ndarray:
        return self.calibrate(self.screen(X))


class TierTwo:
    """LightGBM exported to ONNX, run by onnxruntime on one intra-op thread.

    One intra-op thread: the machine's other core runs the gRPC event loop, and the
    escalated rows of a micro-batch are few. The LightGBM text model is kept beside the ONNX
    graph only for explanations: its trees are compiled for `engine.models.treeshap`, which
    runs on the few rows that are reviewed or declined.
    """

    name = "tier2"

    def __init__(
        self,
        onnx: bytes | ort.InferenceSession,
        booster: str | lgb.Booster,
        version: str,
    ) -> None:
        self.session = onnx if isinstance(onnx, ort.InferenceSession) else self.open_session(onnx)
        self._input = self.session.get_inputs()[0].name
        self._output = "probabilities"
        shape = self.session.get_inputs()[0].shape
        if shape[-1] != N_FEATURES:
            raise ValueError(f"tier two expects {shape[-1]} features, engine has {N_FEATURES}")
        self.booster = (
            booster if isinstance(booster, lgb.Booster) else lgb.Booster(model_str=booster)
        )
        self.trees = compile_booster(self.booster.dump_model())
        self.expected = expected_value(self.trees)  # the SHAP base value
        self.version = version

    @staticmethod
    def open_session(onnx_bytes: bytes) -> ort.InferenceSession:
        """The graph's session: one intra-op thread, sequential, quiet."""
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        return ort.InferenceSession(
            onnx_bytes, sess_options=opts, providers=["CPUExecutionProvider"]
        )

    @functools.cached_property
    def explainer(self) -> TreeExplainer:
        """Built on first use (its tables take ~0.1 s): a replay without reasons never
        needs it, and `Engine.warm` builds it for a server."""
        return TreeExplainer(self.trees)

    def score(self, X: np.ndarray) -> np.ndarray:
        X = _check(X)
        if X.shape[0] == 0:
            return np.empty(0, dtype=np.float64)
        probs = self.session.run([self._output], {self._input: X})[0]
        return np.asarray(probs[:, 1], dtype=np.float64)

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """TreeSHAP values (N, n_features + 1); the last column is the base value."""
        return self.explainer.shap_values(_check(X))


@dataclass(frozen=True)
class Rule:
    code: str
    feature: str
    op: str  # ">=", "<", "==", "isnan"
    value: float
    message: str

    def fires(self, X: np.ndarray) -> np.ndarray:
        v = X[:, FEATURE_NAMES.index(self.feature)]
        with np.errstate(invalid="ignore"):
            if self.op == ">=":
                return v >= self.value
            if self.op == "<":
                return v < self.value
            if self.op == "==":
                return v == self.value
        raise ValueError(f"unknown rule operator {self.op!r}")


# Plain rules a fraud analyst can read. Their weights are fitted offline (logistic
# regression on the training period) and stored in the manifest; the defaults below
# apply when no artifact is loaded at all.
RULES: tuple[Rule, ...] = (
    Rule(
        "BILLING_SHIPPING_MISMATCH",
        "billing_shipping_mismatch",
        "==",
        1,
        "Billing and shipping countries differ",
    ),
    Rule(
        "IP_COUNTRY_MISMATCH",
        "ip_billing_mismatch",
        "==",
        1,
        "IP country differs from the billing country",
    ),
    Rule("NEW_ACCOUNT", "account_age_days", "<", 1, "Account opened less than a day ago"),
    Rule(
        "FIRST_ORDER",
        "customer_id.cnt_30d",
        "<",
        0.05,
        "No earlier order from this customer in 30 days",
    ),
    Rule("HIGH_AMOUNT", "amount", ">=", 500, "Order amount of 500 or more"),
    Rule("RISKY_CATEGORIES", "risky_category_share", ">=", 0.5, "Mostly electronics or gift cards"),
    Rule(
        "CARD_VELOCITY_1H",
        "card_fingerprint.cnt_1h",
        ">=",
        3,
        "Card used 3 or more times in the last hour",
    ),
    Rule(
        "DEVICE_VELOCITY_1H",
        "device_id.cnt_1h",
        ">=",
        5,
        "Device placed 5 or more orders in the last hour",
    ),
    Rule(
        "SHARED_DEVICE",
        "device_id.customer_changes_30d",
        ">=",
        2,
        "Device used by several customers recently",
    ),
    Rule(
        "SHARED_ADDRESS",
        "address_fingerprint.customer_changes_30d",
        ">=",
        2,
        "Shipping address used by several customers recently",
    ),
    Rule(
        "KNOWN_FRAUD_CARD",
        "card_fingerprint.known_frauds_30d",
        ">=",
        0.5,
        "Card linked to confirmed fraud",
    ),
    Rule(
        "KNOWN_FRAUD_DEVICE",
        "device_id.known_frauds_30d",
        ">=",
        0.5,
        "Device linked to confirmed fraud",
    ),
    Rule(
        "KNOWN_FRAUD_ADDRESS",
        "address_fingerprint.known_frauds_30d",
        ">=",
        0.5,
        "Shipping address linked to confirmed fraud",
    ),
    Rule(
        "FRAUD_RATE_DEVICE",
        "device_id.fraud_rate_7d",
        ">=",
        0.2,
        "A fifth or more of the device's orders labelled in the last 7 days were fraud",
    ),
    Rule(
        "KNOWN_FRAUD_CUSTOMER",
        "customer_id.known_frauds_30d",
        ">=",
        0.5,
        "Customer linked to confirmed fraud",
    ),
)
DEFAULT_RULE_WEIGHTS: dict[str, float] = {
    "BILLING_SHIPPING_MISMATCH": 1.0,
    "IP_COUNTRY_MISMATCH": 1.0,
    "NEW_ACCOUNT": 1.0,
    "FIRST_ORDER": 0.5,
    "HIGH_AMOUNT": 0.5,
    "RISKY_CATEGORIES": 0.7,
    "CARD_VELOCITY_1H": 2.0,
    "DEVICE_VELOCITY_1H": 1.5,
    "SHARED_DEVICE": 1.0,
    "SHARED_ADDRESS": 1.5,
    "KNOWN_FRAUD_CARD": 3.0,
    "KNOWN_FRAUD_DEVICE": 2.5,
    "KNOWN_FRAUD_ADDRESS": 2.5,
    "FRAUD_RATE_DEVICE": 2.5,
    "KNOWN_FRAUD_CUSTOMER": 3.0,
}
DEFAULT_RULE_BIAS = -5.0


def rule_matrix(X: np.ndarray) -> np.ndarray:
    """(N, len(RULES)) 0/1 matrix of fired rules."""
    return np.column_stack([r.fires(X) for r in RULES]).astype(np.float64)


class RuleFallback:
    """Additive rules: log-odds = bias + sum of fired rules' weights."""

    name = "fallback"

    def __init__(
        self,
        weights: dict[str, float] | None = None,
        bias: float = DEFAULT_RULE_BIAS,
        version: str = "rules-default",
    ) -> None:
        weights = DEFAULT_RULE_WEIGHTS if weights is None else weights
        missing = [r.code for r in RULES if r.code not in weights]
        if missing:
            raise ValueError(f"rule weights missing for {missing}")
        self.weights = np.array([weights[r.code] for r in RULES], dtype=np.float64)
        self.bias = float(bias)
        self.version = version

    def fired(self, X: np.ndarray) -> np.ndarray:
        return rule_matrix(_check(X))

    def raw(self, fired: np.ndarray) -> np.ndarray:
        return self.bias + fired @ self.weights

    def score(self, X: np.ndarray) -> np.ndarray:
        return sigmoid(self.raw(self.fired(X)))
