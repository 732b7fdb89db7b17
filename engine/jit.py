"""Numba options for every kernel, decided once.

`cache=True` keeps compiled machine code on disk so a restart does not recompile;
`nogil=True` lets other threads (gRPC's own pollers, a caller's thread pool) run while a
kernel works; `error_model="numpy"` keeps division semantics identical to the NumPy
reference implementations in the tests. Kernels are warmed when a model is loaded
(`engine.decision.cascade.Engine.warm`), so no request pays for compilation.

Numba's cache checks only the source file of the function it compiled, while kernels inline
helpers from other modules (the encoder inlines the validator): an edit there would leave a
stale compiled kernel in use. So the cache lives in a directory named by a digest of every
engine source file: any change to the engine starts a fresh cache.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numba
from numba.core import config

_ENGINE = Path(__file__).resolve().parent


def _source_digest() -> str:
    h = hashlib.sha256()
    for path in sorted(_ENGINE.rglob("*.py")):
        h.update(str(path.relative_to(_ENGINE)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


_settings: Any = config  # numba.core.config sets its attributes at import time
if not _settings.CACHE_DIR:  # an explicit NUMBA_CACHE_DIR wins
    _settings.CACHE_DIR = str(_ENGINE / "__pycache__" / f"numba-{_source_digest()}")

njit = numba.njit(cache=True, nogil=True, error_model="numpy")

# Small helpers called from inside hot loops: inlined at the Numba IR level, so LLVM sees
# one function and can keep the path arrays in registers.
njit_inline = numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
