"""Model artifact folders: manifest, checksums, verification.

A folder holds `manifest.json` and the files it names (tier-one trees, the tier-two ONNX
graph and LightGBM text, a parity sample). Loading verifies checksums and the feature
schema, then re-scores the parity sample with onnxruntime and checks it against the
scores recorded at export. A broken tier two does not stop the engine: it loads without
it and the rule fallback decides for escalated orders (path FALLBACK, MODEL_UNAVAILABLE).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.decision.policy import PolicyConfig
from engine.errors import ModelLoadError
from engine.features.matrix import FEATURE_NAMES
from engine.models.scorers import RuleFallback, TierOne, TierTwo
from engine.models.trees import CompiledTrees

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = 1
PARITY_TOLERANCE = 1e-5


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class ModelSet:
    version: str
    tier1: TierOne | None
    tier2: TierTwo | None
    fallback: RuleFallback
    policy: PolicyConfig
    manifest: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    parity_max_error: float = 0.0  # tier two against the scores recorded at export

    @classmethod
    def rules_only(cls, policy: PolicyConfig | None = None) -> ModelSet:
        return cls(
            "rules-only",
            None,
            None,
            RuleFallback(),
            policy or PolicyConfig(),
            problems=["no model artifact loaded"],
        )


def _file(root: Path, entry: dict[str, Any], key: str) -> Path:
    name = entry.get(key)
    if not isinstance(name, str):
        raise ModelLoadError(f"manifest entry lacks '{key}'")
    path = root / name
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing")
    want = entry.get(f"{key}_sha256")
    if want and sha256(path) != want:
        raise ModelLoadError(f"{path} does not match its checksum in the manifest")
    return path


def read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not path.is_file():
        raise ModelLoadError(f"no {MANIFEST} in {root}")
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path} is not valid JSON: {exc}") from exc
    if manifest.get("format") != FORMAT:
        raise ModelLoadError(f"{path}: format must be {FORMAT}, is {manifest.get('format')}")
    if list(manifest.get("feature_names", [])) != list(FEATURE_NAMES):
        raise ModelLoadError(
            f"{path}: feature schema differs from this engine's ({len(FEATURE_NAMES)} features); "
            "retrain the models with this version"
        )
    return manifest


def load(root: str | Path, policy_overrides: dict[str, Any] | None = None) -> ModelSet:
    """Load and verify an artifact folder. Raises ModelLoadError if the manifest is unusable."""
    root = Path(root)
    manifest = read_manifest(root)
    version = str(manifest["version"])
    try:
        policy = PolicyConfig.from_dict(manifest.get("policy", {}))
        if policy_overrides:
            policy = PolicyConfig.from_dict(policy_overrides, base=policy)
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"policy: {exc}") from exc
    fb = manifest.get("fallback", {})
    fallback = RuleFallback(fb.get("weights"), fb.get("bias", -5.0), version=f"{version}/rules")
    problems: list[str] = []

    tier1: TierOne | None = None
    try:
        t1 = manifest["tier1"]
        with np.load(_file(root, t1, "file")) as data:
            trees = CompiledTrees.from_npz(data)
        cal = t1["calibration"]
        tier1 = TierOne(
            trees, float(t1["threshold"]), (cal["x"], cal["y"]), version=f"{version}/tier1"
        )
    except (KeyError, ModelLoadError, ValueError, OSError) as exc:
        problems.append(f"tier one unavailable: {exc}")

    tier2: TierTwo | None = None
    err = 0.0
    try:
        t2 = manifest["tier2"]
        onnx_bytes = _file(root, t2, "onnx").read_bytes()
        booster = _file(root, t2, "booster").read_text()
        tier2 = TierTwo(onnx_bytes, booster, version=f"{version}/tier2")
        with np.load(_file(root, t2, "parity")) as data:
            X, expected = data["X"], data["expected"]
        got = tier2.score(X)
        err = float(np.max(np.abs(got - expected))) if len(X) else 0.0
        if not err <= PARITY_TOLERANCE:
            raise ModelLoadError(f"tier two parity check failed: max error {err:.2e}")
    except Exception as exc:  # a broken tier two must never stop the engine
        tier2 = None
        problems.append(f"tier two unavailable: {exc}")
    for p in problems:
        log.error("model %s: %s", version, p)
    return ModelSet(version, tier1, tier2, fallback, policy, manifest, problems, err)
