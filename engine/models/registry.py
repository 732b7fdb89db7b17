"""The model registry: a directory whose sub-folders are model versions.

Each version is an artifact folder (`engine.models.artifacts`: a manifest naming its files
with their checksums, the feature schema, thresholds, training metrics and the training
data). `ordersight train --out REGISTRY/NAME` adds one. Listing reads only the manifests;
`artifacts.load` verifies a version when it is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.errors import ModelLoadError, NotFound
from engine.models.artifacts import MANIFEST, read_manifest


@dataclass(frozen=True)
class VersionEntry:
    version: str  # the manifest's version ("" when the manifest does not read)
    path: Path
    created_at: str  # ISO 8601, as the manifest records it ("" when unknown)
    tier2_auc: float
    tier2_average_precision: float
    problem: str  # why the manifest is unusable ("" when it reads)


def list_versions(root: str | Path) -> list[VersionEntry]:
    """Every folder under `root` that holds a manifest, oldest first; links (a
    `current` that points at one of them) are not versions of their own."""
    root = Path(root)
    if not root.is_dir():
        raise NotFound(f"model registry {root} is not a directory")
    out = []
    for path in sorted(
        p for p in root.iterdir() if not p.is_symlink() and (p / MANIFEST).is_file()
    ):
        try:
            m = read_manifest(path)
            tier2 = m.get("metrics", {}).get("tier2", {})
            entry = VersionEntry(
                str(m["version"]),
                path,
                str(m.get("created_at", "")),
                float(tier2.get("auc", 0.0)),
                float(tier2.get("average_precision", 0.0)),
                "",
            )
        except (ModelLoadError, KeyError, TypeError, ValueError, AttributeError) as exc:
            why = f"manifest lacks {exc}" if isinstance(exc, KeyError) else str(exc)
            entry = VersionEntry("", path, "", 0.0, 0.0, why)
        out.append(entry)
    out.sort(key=lambda e: (e.created_at, e.path.name))
    return out


def resolve(root: str | Path, name: str) -> Path:
    """The folder of version `name`: a folder name under `root`, or a manifest version."""
    root = Path(root)
    if name and "/" not in name and name not in (".", "..") and (root / name / MANIFEST).is_file():
        return root / name
    matches = [e.path for e in list_versions(root) if e.version == name]
    if not matches:
        raise NotFound(f"no model version {name!r} in {root}")
    if len(matches) > 1:
        raise ModelLoadError(
            f"version {name!r} is in several folders ({', '.join(p.name for p in matches)}): "
            "load one by its folder name"
        )
    return matches[0]
