"""The integer CPU reference: what the RTL computes, in numpy.

`gemm(a, b)` is `C = A x B` for int8 A and B with int32 wrapping accumulation (accumulated exactly in
int64, then wrapped to int32), `linear(a, b, bias)` adds an int32 bias with wrapping addition, as
the server does (docs/serve-protocol.md). `Reference` has the client's `gemm`/`linear` methods, so
the same quantised layer code runs against the RTL or against this reference.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .protocol import GemmResult, make_job


def wrap_int32(x: np.ndarray) -> np.ndarray:
    """Two's-complement wrap of integers to int32 (x mod 2^32, as signed)."""
    x = np.asarray(x, dtype=np.int64)
    return ((x + (1 << 31)) % (1 << 32) - (1 << 31)).astype(np.int32)


def gemm(a, b) -> np.ndarray:
    """int8 (m x k) x int8 (k x n) -> int32 (m x n), wrapping."""
    job = make_job(a, b)
    return wrap_int32(job.a.astype(np.int64) @ job.b.astype(np.int64))


def linear(a, b, bias) -> np.ndarray:
    """gemm(a, b) + bias (int32 per column), wrapping."""
    job = make_job(a, b, bias)
    return wrap_int32(job.a.astype(np.int64) @ job.b.astype(np.int64) + job.bias.astype(np.int64))


class Reference:
    """A stand-in for `cosim.Client` that computes on the CPU: results carry no cycles."""

    name = "cpu-reference"

    def gemm(self, a, b) -> GemmResult:
        return self._result(a, b, None)

    def linear(self, a, b, bias) -> GemmResult:
        return self._result(a, b, bias)

    def matmul(self, a, b, bias=None) -> GemmResult:
        """Any size (the Client's `matmul` splits large matrices into tiles; the CPU needs not)."""
        return self._result(a, b, bias)

    def _result(self, a, b, bias: Optional[np.ndarray]) -> GemmResult:
        c = gemm(a, b) if bias is None else linear(a, b, bias)
        m, n = c.shape
        return GemmResult(c=c, m=m, n=n, device=-1, cycles=None, dma_wait=None, device_ns=None, predictions=None, k=np.shape(a)[1])
