"""cosim.torch against the test-double server and the CPU reference: the same quantised code path,
strict errors, CPU fallback recorded and reported, offload, calibration, records."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

import cosim
import cosim.torch as ct
from cosim import quant
from cosim.reference import Reference
from fakeserver import FakeServer


@pytest.fixture
def client():
    with FakeServer(max_dim=64) as server, cosim.Client(server.address, timeout=10) as c:
        yield c


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 70), nn.ReLU(), nn.Sequential(nn.Linear(70, 5, bias=False)), nn.Tanh(), nn.Linear(5, 3))


def test_gemm_int8_tensors(client):
    a = torch.randint(-128, 128, (4, 8), dtype=torch.int8)
    b = torch.randint(-128, 128, (8, 16), dtype=torch.int8)
    c, rec = ct.gemm(a, b, client=client)
    assert c.dtype == torch.int32
    assert torch.equal(c, torch.from_numpy(cosim.reference.gemm(a.numpy(), b.numpy())))
    assert (rec.m, rec.k, rec.n, rec.backend, rec.jobs) == (4, 8, 16, "rtl", 1) and rec.cycles > 0
    with pytest.raises(TypeError, match="int8"):
        ct.gemm(a.float(), b, client=client)


@pytest.mark.parametrize("bias_on", ["host", "device"])
def test_offloaded_model_equals_the_reference_bit_for_bit(client, bias_on):
    model = mlp()
    x = torch.randn(100, 20)
    with torch.no_grad():
        want_float = model(x)
    off = ct.offload(mlp(), client, bias_on=bias_on)
    ref = ct.with_client(off, Reference())
    assert [type(m).__name__ for m in off.modules()].count("CosimLinear") == 3
    assert [n for n, m in off.named_modules() if isinstance(m, ct.CosimLinear)] == ["0", "2.0", "4"]
    y_rtl, y_ref = off(x), ref(x)
    assert torch.equal(y_rtl, y_ref)
    for (_, a), (_, b) in zip(ct._cosim_layers(off), ct._cosim_layers(ref)):
        assert a.last_int32.dtype == np.int32 and np.array_equal(a.last_int32, b.last_int32)
    # quantisation error stays small against the float model
    assert (y_rtl - want_float).abs().max() < 0.05
    recs = ct.records(off)
    assert [r.layer for r in recs] == ["0", "2.0", "4"] and all(r.backend == "rtl" for r in recs)
    assert recs[0].jobs == 2 * 2  # 100 rows and 70 columns split at max_dim 64
    assert all(r.backend == "cpu-reference" and r.cycles is None for r in ct.records(ref))


def test_linear_with_device_bias_sends_linear_requests():
    with FakeServer() as server, cosim.Client(server.address, timeout=10) as c:
        layer = ct.CosimLinear(8, 4, client=c, bias_on="device")
        layer(torch.randn(3, 8))
        host = ct.CosimLinear(8, 4, client=c)
        host(torch.randn(3, 8))
        kinds = [h.kind for h in server.requests]
        assert kinds == [cosim.protocol.INFO, cosim.protocol.LINEAR, cosim.protocol.GEMM]


def test_strict_by_default_raises_the_device_reason():
    with FakeServer(fail=lambda job: 6) as server, cosim.Client(server.address, timeout=10) as c:
        model = ct.offload(mlp(), c)
        with pytest.raises(cosim.DeviceError, match=r"refused the job \(ERROR 6\)"):
            model(torch.randn(2, 20))


def test_cpu_fallback_is_recorded_and_reported():
    fail = lambda job: 6 if job.dims[2] == 70 else 0  # noqa: E731  (the second layer only)
    with FakeServer(fail=fail) as server, cosim.Client(server.address, timeout=10) as c:
        model = ct.offload(mlp(), c, fallback="cpu")
        x = torch.randn(4, 20)
        with pytest.warns(ct.FallbackWarning, match=r"2\.0: 4x5x70 ran on the CPU: DeviceError: DEVICE"):
            y = model(x)
        assert torch.equal(y, ct.with_client(model, Reference())(x))
        fb = ct.fallbacks(model)
        assert [r.layer for r in fb] == ["2.0"] and "ERROR 6" in fb[0].fallback and fb[0].cycles is None
        table = ct.records_table(model)
        assert "| 2.0 | 4 x 70 x 5 | 1 | 0 | - |" in table and "1 (DeviceError: DEVICE" in table


def test_fallback_when_the_connection_is_gone():
    with FakeServer() as server:
        c = cosim.Client(server.address, timeout=10)
        model = ct.offload(mlp(), c, fallback="cpu")
        c.close()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model(torch.randn(2, 20))
        assert len(caught) == 3 and len(ct.fallbacks(model)) == 3
        with pytest.raises(ConnectionError):
            ct.offload(model, c)(torch.randn(2, 20))  # strict again


def test_calibrated_scale_makes_results_independent_of_batching(client):
    model = ct.offload(mlp(), client)
    x = torch.randn(60, 20)
    scales = ct.calibrate(model, [x[:30], x[30:]])
    assert set(scales) == {"0", "2.0", "4"} and scales["0"] == pytest.approx(x.abs().max().item() / 127)
    whole = model(x)
    halves = torch.cat([model(x[:30]), model(x[30:])])
    assert torch.equal(whole, halves)
    # without calibration the scale comes from each batch: not the same numbers
    dyn = ct.offload(mlp(), client)
    assert not torch.equal(dyn(x[:30]), ct.offload(mlp(), client)(torch.cat([x[:30], 10 * x[30:]]))[:30])


def test_cosim_linear_is_a_drop_in_linear(client):
    lin = nn.Linear(6, 3)
    cl = ct.CosimLinear.from_linear(lin, client=client)
    assert isinstance(cl, nn.Linear) and cl.weight is lin.weight and cl.bias is lin.bias
    assert set(cl.state_dict()) == set(lin.state_dict())
    x = torch.randn(2, 5, 6)  # leading dimensions are kept
    y = cl(x)
    assert y.shape == (2, 5, 3) and y.dtype == torch.float32
    assert (y - lin(x)).abs().max() < 0.05
    w_q, s_w = cl.quantized_weight()
    assert np.array_equal(w_q, quant.quantize_weight(lin.weight.detach().numpy())[0])
    assert isinstance(ct.offload(nn.Linear(2, 2), client), ct.CosimLinear)


def test_records_table_sums_calls(client):
    model = ct.offload(mlp(), client)
    for _ in range(2):
        model(torch.randn(10, 20))
    summary = ct.summarize(ct.records(model))
    assert [(s.layer, s.rows, s.calls) for s in summary] == [("0", 20, 2), ("2.0", 20, 2), ("4", 20, 2)]
    s0 = summary[0]
    assert s0.cycles == sum(r.cycles for r in ct.records(model) if r.layer == "0")
    assert s0.model_errors["tiled"] == pytest.approx((s0.predictions["tiled"] - s0.cycles) / s0.cycles)
    table = ct.records_table(model).splitlines()
    assert table[0].startswith("| layer | m x k x n | calls | jobs | RTL cycles |") and len(table) == 2 + 3
