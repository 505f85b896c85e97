"""One BLAS/OpenMP thread around small array work, without re-scanning the process's libraries on every call.

`threadpoolctl.threadpool_limits` finds the loaded BLAS/OpenMP libraries anew on each call (4-5 ms: a run of the
neural engine made eight such calls, 36 ms of a 1.2 s run). The controller found here is kept until another
library that brings its own thread pool is imported (the scan would then find more)."""

from __future__ import annotations

import functools
import sys

from threadpoolctl import ThreadpoolController


# top-level packages whose import loads another BLAS or OpenMP runtime
_POOL_PACKAGES = ("numpy", "scipy", "sklearn", "torch", "onnxruntime", "cv2")


def one_thread():
    """A context manager: every loaded BLAS/OpenMP pool limited to one thread inside, restored on exit."""
    return _controller(tuple(name in sys.modules for name in _POOL_PACKAGES)).limit(limits=1)


@functools.lru_cache(maxsize=8)
def _controller(loaded: tuple[bool, ...]) -> ThreadpoolController:
    return ThreadpoolController()
