"""Numba options for every kernel, decided once.

`cache=True` keeps compiled machine code on disk so a restart does not recompile;
`nogil=True` lets other threads (gRPC's own pollers, a caller's thread pool) run while a
kernel works; `error_model="numpy"` keeps division semantics identical to the NumPy
reference implementations in the tests. Kernels are warmed when a model is loaded
(`engine.decision.cascade.Engine.warm`), so no request pays for compilation.

Numba's cache checks only the source file of the function it compiled, while kernels inline
helpers from other modules (the encoder inlines the validator): an edit there would leave a
stale compiled kernel in use. So the cache lives in a directory named by a digest of every
engine source file: any change to the engine starts a fresh cache. A cache directory that
cannot be written (a read-only install, a full disk) turns caching off with a warning: the
engine still serves, compiling its kernels at every start.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
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


def _writable(folder: str) -> bool:
    try:
        os.makedirs(folder, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        logging.getLogger(__name__).warning(
            "Numba cache %s is not writable (%s): kernels compile at every start", folder, exc
        )
        return False
    return True


CACHE = _writable(_settings.CACHE_DIR)
"""Whether compiled kernels are kept on disk (numba's own fallbacks would otherwise put
them beside the sources, where the digest above does not guard them)."""

njit = numba.njit(cache=CACHE, nogil=True, error_model="numpy")

# Small helpers called from inside hot loops: inlined at the Numba IR level, so LLVM sees
# one function and can keep the path arrays in registers.
njit_inline = numba.njit(cache=CACHE, nogil=True, error_model="numpy", inline="always")
