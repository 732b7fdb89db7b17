"""Model artifact folders: manifest, checksums, verification.

A folder holds `manifest.json` and the files it names (tier-one trees, the tier-two ONNX
graph and LightGBM text, a parity sample). Loading verifies checksums and the feature
schema, then re-scores the parity sample with onnxruntime and checks it against the
scores recorded at export.

What a broken folder does (each case has a test in tests/models/test_broken_artifacts.py):
- the manifest missing, not JSON, of another format or feature schema: `ModelLoadError`,
  which stops start-up (unless `allow_rules_only`) and refuses a ModelAdmin load;
- a tier's file missing, truncated, corrupt or not matching its checksum (tier one's trees;
  tier two's ONNX graph, LightGBM text or parity sample), or tier two failing its parity
  check: that tier is left out and named in `problems`; without tier one every order goes
  to tier two, without tier two the rule fallback decides for escalated orders (path
  FALLBACK, MODEL_MISSING). `engine.serving.health` serves each tier's state. A folder where
  neither tier loads stops start-up like a bad manifest (unless `allow_rules_only`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from engine.checksums import sha256
from engine.decision.policy import PolicyConfig
from engine.errors import ModelLoadError
from engine.features.matrix import FEATURE_NAMES
from engine.models.scorers import RuleFallback, TierOne, TierTwo
from engine.models.trees import CompiledTrees

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = 1
PARITY_TOLERANCE = 1e-5


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


def _npz(path: Path) -> Any:
    """An opened .npz archive (a context manager), or ModelLoadError saying why not."""
    try:
        return np.load(path)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelLoadError(f"{path} is not a readable .npz archive ({exc})") from exc


def _array(data: Any, path: Path, key: str) -> np.ndarray:
    try:
        return np.asarray(data[key])
    except KeyError as exc:
        raise ModelLoadError(f"{path} lacks the array '{key}'") from exc
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:  # a damaged member
        raise ModelLoadError(f"{path}: array '{key}' does not read ({exc})") from exc


def read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not path.is_file():
        raise ModelLoadError(f"no {MANIFEST} in {root}")
    try:
        manifest: dict[str, Any] = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise ModelLoadError(f"{path} is not a JSON object")
    if manifest.get("format") != FORMAT:
        raise ModelLoadError(f"{path}: format must be {FORMAT}, is {manifest.get('format')}")
    if list(manifest.get("feature_names", [])) != list(FEATURE_NAMES):
        raise ModelLoadError(
            f"{path}: feature schema differs from this engine's ({len(FEATURE_NAMES)} features); "
            "retrain the models with this version"
        )
    return manifest


_PARSED: set[str] = set()
"""Checksums of LightGBM texts that parsed in a child process (the same bytes parse again)."""
_PARSE = "import sys, lightgbm; lightgbm.Booster(model_str=sys.stdin.read())"


def _booster(path: Path) -> lgb.Booster:
    """The LightGBM model in `path`. LightGBM's parser aborts the whole process on some
    damaged texts (std::terminate inside its parallel tree parsing), so a text is parsed in
    a child process first: a damaged one is refused with the reason, never a crash. The
    bytes are read once, so the text checked is the text loaded."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"{path}: {exc.strerror}") from exc
    digest = hashlib.sha256(text).hexdigest()
    if digest not in _PARSED:
        try:
            done = subprocess.run(
                [sys.executable, "-c", _PARSE], input=text, capture_output=True, timeout=300
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ModelLoadError(f"{path}: could not check the LightGBM text ({exc})") from exc
        if done.returncode != 0:
            lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
            said = next((x for x in reversed(lines) if "LightGBM" in x), lines[-1] if lines else "")
            how = "aborted" if done.returncode < 0 else "failed"
            raise ModelLoadError(f"{path} is not a LightGBM model (its parser {how}: {said})")
        _PARSED.add(digest)
    try:
        return lgb.Booster(model_str=text.decode("utf-8"))
    except (lgb.basic.LightGBMError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path} is not a LightGBM model ({exc})") from exc


def _entry(manifest: dict[str, Any], key: str) -> dict[str, Any]:
    entry = manifest.get(key)
    if not isinstance(entry, dict):
        raise ModelLoadError(f"the manifest has no '{key}' table")
    return entry


def _why(exc: BaseException) -> str:
    """A problem's text: the message of our own errors, the type too for anything else."""
    if isinstance(exc, ModelLoadError):
        return str(exc)
    if isinstance(exc, KeyError):
        return f"the manifest lacks {exc}"
    return f"{type(exc).__name__}: {exc}"


def load(root: str | Path, policy_overrides: dict[str, Any] | None = None) -> ModelSet:
    """Load and verify an artifact folder. Raises ModelLoadError if the manifest is unusable."""
    root = Path(root)
    manifest = read_manifest(root)
    if "version" not in manifest:
        raise ModelLoadError(f"{root / MANIFEST} lacks 'version'")
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
        t1 = _entry(manifest, "tier1")
        path = _file(root, t1, "file")
        with _npz(path) as data:
            try:
                trees = CompiledTrees.from_npz(data)
            except (KeyError, ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
                raise ModelLoadError(f"{path} does not hold tier one's trees ({exc})") from exc
        cal = t1["calibration"]
        tier1 = TierOne(
            trees, float(t1["threshold"]), (cal["x"], cal["y"]), version=f"{version}/tier1"
        )
    except Exception as exc:  # a broken tier one must not stop the engine either
        problems.append(f"tier one unavailable: {_why(exc)}")

    tier2: TierTwo | None = None
    err = 0.0
    try:
        t2 = _entry(manifest, "tier2")
        onnx_path, booster_path = _file(root, t2, "onnx"), _file(root, t2, "booster")
        try:
            session = TierTwo.open_session(onnx_path.read_bytes())
        except Exception as exc:  # onnxruntime's own errors: a truncated or corrupt graph
            raise ModelLoadError(f"{onnx_path} is not a loadable ONNX graph ({exc})") from exc
        booster = _booster(booster_path)
        tier2 = TierTwo(session, booster, version=f"{version}/tier2")
        parity = _file(root, t2, "parity")
        with _npz(parity) as data:
            X, expected = _array(data, parity, "X"), _array(data, parity, "expected")
        got = tier2.score(X)
        err = float(np.max(np.abs(got - expected))) if len(X) else 0.0
        if not err <= PARITY_TOLERANCE:
            raise ModelLoadError(f"tier two parity check failed: max error {err:.2e}")
        # The LightGBM text explains what the graph decides: the two must be one model.
        gap = float(np.max(np.abs(booster.predict(X) - got))) if len(X) else 0.0
        if not gap <= PARITY_TOLERANCE:
            raise ModelLoadError(
                f"{booster_path} disagrees with {onnx_path} on the parity sample "
                f"(max difference {gap:.2e}): not the same model"
            )
    except Exception as exc:  # a broken tier two must never stop the engine
        tier2 = None
        problems.append(f"tier two unavailable: {_why(exc)}")
    for p in problems:
        log.error("model %s: %s", version, p)
    return ModelSet(version, tier1, tier2, fallback, policy, manifest, problems, err)
