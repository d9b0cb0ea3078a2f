"""The real tier: a guest booted by `cosim-launch --serve` against the GEMM RTL (one guest for the
session, conftest.py's `guest` fixture). Run with --guest (make test-ml); a missing launcher or
artefact fails these tests, it does not skip them."""

import numpy as np
import pytest
import torch

import cosim
import cosim.torch as ct
from cosim import protocol as p
from cosim import reference
from cosim.reference import Reference

pytestmark = pytest.mark.guest

rng = np.random.default_rng(12)


def rand_i8(*shape):
    return rng.integers(-128, 128, shape, dtype=np.int8)


def check_measured(rec_or_result):
    assert rec_or_result.cycles > 0 and rec_or_result.device_ns > 0
    assert 0 <= rec_or_result.dma_wait <= rec_or_result.cycles
    assert set(rec_or_result.predictions) == set(p.MODELS) and all(v > 0 for v in rec_or_result.predictions.values())


def test_info_reports_the_engine(guest):
    devices = guest.client.info()
    assert len(devices) == guest.serve_info["devices"] >= 1
    for d in devices:
        assert d.rows >= 1 and d.cols >= 1 and d.max_dim >= 256 and d.clock_hz > 0 and d.dma_bytes_per_cycle > 0


def test_gemm_4x8_by_8x16_is_bit_exact(guest):
    a = torch.from_numpy(rand_i8(4, 8))
    b = torch.from_numpy(rand_i8(8, 16))
    c, rec = ct.gemm(a, b, client=guest.client)
    assert torch.equal(c, torch.from_numpy(reference.gemm(a.numpy(), b.numpy())))
    assert (rec.m, rec.k, rec.n, rec.backend, rec.jobs) == (4, 8, 16, "rtl", 1)
    check_measured(rec)


def test_linear_32x128_by_128x256_with_bias_is_bit_exact(guest):
    x, w_t = rand_i8(32, 128), rand_i8(128, 256)
    bias = rng.integers(-(2**31), 2**31, 256, dtype=np.int64).astype(np.int32)  # wraps in int32
    r = guest.client.linear(x, w_t, bias)
    assert np.array_equal(r.c, reference.linear(x, w_t, bias)) and (r.m, r.n, r.k) == (32, 256, 128)
    check_measured(r)


@pytest.mark.parametrize("bias_on", ["host", "device"])
def test_cosim_linear_32x128_to_256_equals_the_int8_reference(guest, bias_on):
    torch.manual_seed(1)
    layer = ct.CosimLinear(128, 256, client=guest.client, bias_on=bias_on)
    twin = ct.with_client(layer, Reference())
    x = torch.randn(32, 128)
    y, y_ref = layer(x), twin(x)
    assert np.array_equal(layer.last_int32, twin.last_int32) and torch.equal(y, y_ref)
    assert (y - torch.nn.functional.linear(x, layer.weight, layer.bias)).abs().max() < 0.1
    check_measured(layer.records[-1])


def test_many_small_gemms_pipelined(guest):
    jobs = [p.make_job(rand_i8(8, 16), rand_i8(16, 8)) for _ in range(24)]
    futures = [guest.client.submit_job(j) for j in jobs]
    for job, f in zip(jobs, futures):
        assert np.array_equal(f.result(timeout=120).c, reference.gemm(job.a, job.b))


def test_matmul_above_max_dim_is_tiled_and_exact(guest):
    k = guest.client.max_dim() + 7  # two k slices: summed on the host, the bias added once
    a, b = rand_i8(3, k), rand_i8(k, 5)
    bias = rng.integers(-(2**31), 2**31, 5, dtype=np.int64).astype(np.int32)
    r = guest.client.matmul(a, b, bias)
    assert r.jobs == 2 and np.array_equal(r.c, reference.linear(a, b, bias))
    check_measured(r)


def test_batch_with_a_bad_entry_and_the_server_keeps_serving(guest):
    max_dim = guest.client.max_dim()
    good = [p.make_job(rand_i8(5, 7), rand_i8(7, 3)), p.make_job(rand_i8(2, 9), rand_i8(9, 4), np.arange(4, dtype=np.int32))]
    bad = p.make_job(np.zeros((max_dim + 1, 1), np.int8), np.zeros((1, 1), np.int8))
    items = guest.client.batch([good[0], bad, good[1]])
    assert np.array_equal(items[0].c, reference.gemm(good[0].a, good[0].b))
    assert isinstance(items[1], cosim.DeviceError) and items[1].code == p.BAD_SIZE
    assert np.array_equal(items[2].c, reference.linear(good[1].a, good[1].b, good[1].bias))


def test_error_replies_carry_the_reason_and_the_server_keeps_serving(guest):
    c = guest.client
    with pytest.raises(cosim.DeviceError) as e:
        c.gemm(np.zeros((c.max_dim() + 1, 2), np.int8), np.zeros((2, 2), np.int8))
    assert e.value.code == p.BAD_SIZE and e.value.message
    with pytest.raises(cosim.DeviceError) as e:
        c.submit_raw(p.INFO, b"", version=2).result(timeout=60)
    assert e.value.code == p.VERSION_ERR
    with pytest.raises(cosim.DeviceError) as e:
        c.submit_raw(p.GEMM, p.DIMS.pack(2, 2, 2, 0) + bytes(3)).result(timeout=60)
    assert e.value.code == p.BAD_FRAME
    a, b = rand_i8(3, 3), rand_i8(3, 3)
    assert np.array_equal(c.gemm(a, b).c, reference.gemm(a, b))


def test_strict_raises_the_device_reason_and_fallback_is_recorded(guest):
    # k = 0 is a job the server refuses (BAD_SIZE): strict raises, fallback="cpu" computes and records
    a, b = torch.zeros((2, 0), dtype=torch.int8), torch.zeros((0, 3), dtype=torch.int8)
    with pytest.raises(cosim.DeviceError) as e:
        ct.gemm(a, b, client=guest.client)
    assert e.value.code == p.BAD_SIZE and e.value.message
    with pytest.warns(ct.FallbackWarning, match="ran on the CPU: DeviceError: BAD_SIZE"):
        c, rec = ct.gemm(a, b, client=guest.client, fallback="cpu")
    assert torch.equal(c, torch.zeros((2, 3), dtype=torch.int32))
    assert rec.backend == "cpu-fallback" and "BAD_SIZE" in rec.fallback and rec.cycles is None


def test_digits_mlp_on_the_rtl_equals_the_int8_reference(guest):
    from cosim import demo

    lines = []
    res = demo.run(guest.client, batch=120, out=lines.append)
    print("\n".join(lines))
    assert res.samples == 360 and res.batches == 3
    assert res.int32_identical, res.mismatches
    assert res.predictions_identical
    assert not ct.fallbacks(res.records)
    assert res.rtl_accuracy == res.reference_accuracy and res.rtl_accuracy > 0.9
    assert abs(res.rtl_accuracy - res.float_accuracy) < 0.03
    assert {r.layer for r in res.records} == {"fc1", "fc2", "fc3"} and all(r.backend == "rtl" for r in res.records)
    for r in res.records:
        check_measured(r)
