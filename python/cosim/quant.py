"""int8 symmetric quantisation (numpy, no torch), as `cosim.torch.CosimLinear` uses it.

A real value x is represented by q = clip(round(x / s), -127, 127) (round half to even), so x ~ q * s,
with s = max|x| / 127 (a scale of 1.0 stands in when max|x| is 0: every q is then 0). -128 is never
used, so the range is symmetric. Weights get one scale per output channel (a row of W, shape
out_features x in_features); activations one scale per tensor. Everything is computed in float64,
so the same float inputs always give the same integers.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

QMAX = 127
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def scale_for(absmax) -> np.ndarray:
    """s = absmax / 127, and 1.0 where absmax is 0 (or not finite)."""
    absmax = np.asarray(absmax, dtype=np.float64)
    ok = np.isfinite(absmax) & (absmax > 0)
    return np.where(ok, absmax / QMAX, 1.0)


def quantize(x, scale) -> np.ndarray:
    """int8 q = clip(round(x / scale), -127, 127); scale broadcasts against x."""
    x = np.asarray(x, dtype=np.float64)
    return np.clip(np.rint(x / np.asarray(scale, dtype=np.float64)), -QMAX, QMAX).astype(np.int8)


def quantize_weight(w) -> tuple:
    """Per output channel: W (out x in) -> (int8 W_q, float64 scales of shape (out,))."""
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"a weight must be 2-D (out_features x in_features), got shape {w.shape}")
    scales = scale_for(np.abs(w).max(axis=1) if w.shape[1] else np.zeros(w.shape[0]))
    return quantize(w, scales[:, None]), scales


def activation_scale(x) -> float:
    """Per tensor: s_x = max|x| / 127 of this batch."""
    x = np.asarray(x, dtype=np.float64)
    return float(scale_for(np.abs(x).max() if x.size else 0.0))


def quantize_bias(bias, s_x: float, s_w) -> np.ndarray:
    """int32 bias on the accumulator's scale: round(bias[j] / (s_x * s_w[j])), saturated to int32."""
    b = np.rint(np.asarray(bias, dtype=np.float64) / (s_x * np.asarray(s_w, dtype=np.float64)))
    return np.clip(b, INT32_MIN, INT32_MAX).astype(np.int32)


def dequantize(acc, s_x: float, s_w, bias: Optional[np.ndarray] = None) -> np.ndarray:
    """float32 y[i][j] = acc[i][j] * s_x * s_w[j] (+ bias[j], in float64 before the cast)."""
    y = np.asarray(acc, dtype=np.float64) * (s_x * np.asarray(s_w, dtype=np.float64))[None, :]
    if bias is not None:
        y = y + np.asarray(bias, dtype=np.float64)[None, :]
    return y.astype(np.float32)
