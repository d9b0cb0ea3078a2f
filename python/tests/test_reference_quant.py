"""The integer CPU reference and the int8 quantisation (no server)."""

import numpy as np
import pytest

from cosim import quant, reference


def test_reference_gemm_matches_exact_sum():
    rng = np.random.default_rng(2)
    a = rng.integers(-128, 128, (4, 8), dtype=np.int8)
    b = rng.integers(-128, 128, (8, 16), dtype=np.int8)
    c = reference.gemm(a, b)
    assert c.dtype == np.int32 and c.shape == (4, 16)
    want = [[sum(int(a[i, k]) * int(b[k, j]) for k in range(8)) for j in range(16)] for i in range(4)]
    assert c.tolist() == want


def test_reference_extremes_do_not_overflow_int8_or_int16():
    a = np.full((1, 1024), -128, np.int8)
    b = np.full((1024, 1), -128, np.int8)
    assert reference.gemm(a, b)[0, 0] == 1024 * 16384


def test_reference_linear_wraps_like_int32():
    a = np.ones((1, 2), np.int8)
    b = np.full((2, 2), 100, np.int8)
    bias = np.array([2**31 - 100, -(2**31)], np.int32)
    c = reference.linear(a, b, bias)
    assert c.tolist() == [[-(2**31) + 100, -(2**31) + 200]]


def test_wrap_int32():
    assert reference.wrap_int32(np.array([2**31, -(2**31) - 1, 2**32 + 5])).tolist() == [-(2**31), 2**31 - 1, 5]


def test_weight_quantisation_is_per_output_channel():
    w = np.array([[0.5, -1.0, 0.25], [10.0, 5.0, -2.5], [0.0, 0.0, 0.0]])
    q, s = quant.quantize_weight(w)
    assert q.dtype == np.int8
    assert s.tolist() == pytest.approx([1.0 / 127, 10.0 / 127, 1.0])
    assert q[0].tolist() == [64, -127, 32]  # 63.5 rounds half to even: 64
    assert q[1].tolist() == [127, 64, -32]  # 63.5 -> 64, -31.75 -> -32
    assert q[2].tolist() == [0, 0, 0]
    assert np.abs(q.astype(int)).max() <= 127
    # every channel uses the full range, and the error is at most half a step
    assert np.all(np.abs(q[:2]).max(axis=1) == 127)
    assert np.all(np.abs(q * s[:, None] - w) <= s[:, None] / 2 + 1e-12)


def test_activation_quantisation_saturates_beyond_calibrated_range():
    x = np.array([[0.1, -0.3, 0.4, -3.0]])
    s = quant.activation_scale(x[:, :3])
    assert s == pytest.approx(0.4 / 127)
    assert quant.quantize(x, s).tolist() == [[32, -95, 127, -127]]


def test_bias_and_dequantisation():
    acc = np.array([[100, -50]], np.int32)
    s_x, s_w = 0.5, np.array([0.1, 0.2])
    bias = np.array([1.0, -1.0])
    assert quant.dequantize(acc, s_x, s_w)[0].tolist() == pytest.approx([5.0, -5.0])
    assert quant.dequantize(acc, s_x, s_w, bias)[0].tolist() == pytest.approx([6.0, -6.0])
    b32 = quant.quantize_bias(bias, s_x, s_w)
    assert b32.dtype == np.int32 and b32.tolist() == [20, -10]
    assert quant.quantize_bias(np.array([1e12]), 1e-3, np.array([1e-3])).tolist() == [2**31 - 1]
