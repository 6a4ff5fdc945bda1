"""Triton kernels built lazily per ``TRITON_INTERPRET`` mode, shared by the kernel techniques.

A technique keeps its kernel bodies as plain functions (no ``@triton.jit``) and launches them
through :func:`kernel`, which builds the compiled or the interpreted form on first use. Ops pick
the kernels or their torch fallback per call with :func:`uses_triton`: CUDA tensors run compiled
kernels, CPU tensors run them under ``TRITON_INTERPRET=1`` (tests), anything else takes the torch
path, and so does every call where Triton is not installed.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from torch import Tensor

try:  # Triton is optional: without it every op takes its torch path.
    import triton
except ImportError:  # pragma: no cover - exercised only where triton is absent
    triton = None


def interpret_mode() -> bool:
    """``TRITON_INTERPRET`` is set to a true value (read at every call, not at import)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() not in ("", "0", "false", "off")


def uses_triton(t: Tensor) -> bool:
    """Whether a call on ``t`` runs the Triton kernels (compiled on CUDA, interpreted on CPU)."""
    if triton is None:
        return False
    return t.is_cuda or (t.device.type == "cpu" and interpret_mode())


_BUILT: dict[tuple[Callable, bool], Any] = {}


def kernel(fn: Callable) -> Any:
    """``fn`` as a Triton kernel: interpreted when ``TRITON_INTERPRET`` is set now, else compiled.

    Built lazily and cached per function and mode, because ``triton.jit`` fixes the mode when it
    decorates and the catalog imports the techniques long before a test sets the variable.
    """
    interp = interpret_mode()
    key = (fn, interp)
    if key not in _BUILT:
        if interp:
            from triton.runtime.interpreter import InterpretedFunction

            _BUILT[key] = InterpretedFunction(fn)
        else:
            _BUILT[key] = triton.runtime.jit.JITFunction(fn)
    return _BUILT[key]
