"""Numba options for every kernel, decided once.

`cache=True` keeps compiled machine code on disk so a restart does not recompile;
`nogil=True` lets other threads (gRPC's own pollers, a caller's thread pool) run while a
kernel works; `error_model="numpy"` keeps
division semantics identical to the NumPy reference implementations in the tests.
Kernels are warmed when a model is loaded (`engine.decision.cascade.Engine.warm`), so no request
pays for compilation.
"""

from __future__ import annotations

import numba

njit = numba.njit(cache=True, nogil=True, error_model="numpy")

# Small helpers called from inside hot loops: inlined at the Numba IR level, so LLVM sees
# one function and can keep the path arrays in registers.
njit_inline = numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
