"""PyTorch on the RTL: `gemm` for int8 tensors, `CosimLinear` (a drop-in `nn.Linear`), `offload`.

Quantisation (docs/ml.md): weights int8 symmetric per output channel, activations int8 symmetric per
tensor, with the scale taken from each batch (dynamic, the default) or fixed by `calibrate` (the
largest |input| each layer saw on calibration data). The RTL computes the int32 accumulator
acc = x_q W_q^T; the host dequantises y = acc * s_x * s_w[j] and adds the float bias
(`bias_on="host"`, the default), or the bias is sent as int32 round(b[j] / (s_x s_w[j])) in a LINEAR
request and added to the accumulator by the server (`bias_on="device"`). The CPU reference
(`cosim.reference.Reference`) runs the very same code with numpy's integer GEMM in place of the RTL.

Strict by default: a device error raises `cosim.DeviceError` with the device's reason. With
`fallback="cpu"` a failed job is computed by the CPU reference instead, and every such fallback is
recorded (`LayerRecord.fallback`) and reported (a `FallbackWarning`, and the records' table).
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn as nn

from . import quant
from .guest import current_client
from .protocol import MODELS, DeviceError, GemmResult, ProtocolError
from .reference import Reference

__all__ = [
    "CosimLinear",
    "FallbackWarning",
    "LayerRecord",
    "LayerSummary",
    "Measured",
    "calibrate",
    "fallbacks",
    "gemm",
    "offload",
    "records",
    "records_table",
    "summarize",
    "with_client",
]

# What a failed job on the RTL may raise; with fallback="cpu" these are caught, recorded, reported.
DEVICE_FAILURES = (DeviceError, ProtocolError, ConnectionError, TimeoutError)


class FallbackWarning(UserWarning):
    """A job ran on the CPU reference because the RTL failed it (fallback="cpu")."""


@dataclass(kw_only=True)
class Measured:
    """What the RTL measured (`cycles`, `dma_wait`: RTL clock cycles; `device_ns`: guest time, START
    to interrupt) and the models predicted (`predictions`, cycles) over `jobs` jobs, with each
    model's error (predicted - RTL) / RTL; `host_s` is the wall time on the host. None without RTL."""

    jobs: int = 0
    cycles: Optional[int] = None
    dma_wait: Optional[int] = None
    device_ns: Optional[int] = None
    predictions: Optional[Dict[str, int]] = None
    model_errors: Optional[Dict[str, float]] = None
    host_s: float = 0.0


@dataclass(kw_only=True)
class LayerRecord(Measured):
    """One call of a layer (or of `gemm`): C is m x n, the inner dimension k.

    `backend` is "rtl", "cpu-reference" (no RTL asked) or "cpu-fallback" (the RTL failed: `fallback`
    holds the reason). RTL figures (`cycles`, `dma_wait`: RTL clock cycles; `device_ns`: guest time,
    START to interrupt) and the models' `predictions` (cycles) are summed over the call's `jobs`;
    `model_errors` is (predicted - RTL) / RTL per model. `host_s` is the call's wall time on the host.
    """

    layer: str
    m: int
    n: int
    k: int
    backend: str
    fallback: Optional[str] = None

    @classmethod
    def from_result(cls, layer: str, k: int, backend: str, r: GemmResult, host_s: float) -> "LayerRecord":
        return cls(
            layer=layer,
            m=r.m,
            n=r.n,
            k=k,
            backend=backend,
            jobs=r.jobs if backend == "rtl" else 0,
            cycles=r.cycles,
            dma_wait=r.dma_wait,
            device_ns=r.device_ns,
            predictions=dict(r.predictions) if r.predictions else None,
            model_errors=r.model_errors(),
            host_s=host_s,
        )


def _executor(client):
    return client if client is not None else current_client()


def _run(client, fallback: Optional[str], layer: str, a: np.ndarray, b: np.ndarray, bias: Optional[np.ndarray]) -> Tuple[GemmResult, LayerRecord]:
    """A x B (+ bias) on `client` (the RTL, or the reference); on a device failure with
    fallback="cpu", on the CPU reference, recorded and warned about."""
    if fallback not in (None, "cpu"):
        raise ValueError(f'fallback must be None (strict) or "cpu", not {fallback!r}')
    executor = _executor(client)
    k = a.shape[1]
    start = time.perf_counter()
    if isinstance(executor, Reference):
        r = executor.matmul(a, b, bias)
        return r, LayerRecord.from_result(layer, k, "cpu-reference", r, time.perf_counter() - start)
    try:
        r = executor.matmul(a, b, bias)
        return r, LayerRecord.from_result(layer, k, "rtl", r, time.perf_counter() - start)
    except DEVICE_FAILURES as e:
        if fallback != "cpu":
            raise
        reason = f"{type(e).__name__}: {e}"
        warnings.warn(FallbackWarning(f"{layer}: {a.shape[0]}x{b.shape[1]}x{k} ran on the CPU: {reason}"), stacklevel=3)
        r = Reference().matmul(a, b, bias)
        rec = LayerRecord.from_result(layer, k, "cpu-fallback", r, time.perf_counter() - start)
        rec.fallback = reason
        return r, rec


def gemm(a: torch.Tensor, b: torch.Tensor, *, client=None, fallback: Optional[str] = None, name: str = "gemm") -> Tuple[torch.Tensor, LayerRecord]:
    """C = A x B for int8 tensors A (m x k) and B (k x n) on the RTL -> (int32 tensor C, its record).

    `client`: a `cosim.Client`, `cosim.reference.Reference()`, or None for the innermost open
    `cosim.Guest`. Matrices above MAX_DIM are split into tiles (`Client.matmul`)."""
    for t, what in ((a, "a"), (b, "b")):
        if not isinstance(t, torch.Tensor) or t.dtype != torch.int8:
            raise TypeError(f"{what} must be an int8 torch tensor, got {getattr(t, 'dtype', type(t))}")
    r, rec = _run(client, fallback, name, a.detach().cpu().numpy(), b.detach().cpu().numpy(), None)
    return torch.from_numpy(np.array(r.c, dtype=np.int32)), rec


class CosimLinear(nn.Linear):
    """`nn.Linear` whose matrix product runs on the RTL in int8 x int8 -> int32 (inference only:
    the output carries no gradient).

    Same constructor and parameters as `nn.Linear`, plus (keyword only):
      client:   a `cosim.Client`, `cosim.reference.Reference()` (the CPU reference), or None for the
                innermost open `cosim.Guest`, looked up at each call;
      fallback: None (strict: a device error raises) or "cpu";
      bias_on:  "host" (float bias after dequantisation) or "device" (int32 bias in a LINEAR request);
      act_scale: a fixed activation scale (set by `calibrate`), or None for one from each batch.
    After each call, `last_int32` holds the int32 accumulator (with the int32 bias if bias_on is
    "device") and `records` the call's `LayerRecord`.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None, *,
                 client=None, fallback: Optional[str] = None, bias_on: str = "host", act_scale: Optional[float] = None,
                 name: str = ""):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        if bias_on not in ("host", "device"):
            raise ValueError(f'bias_on must be "host" or "device", not {bias_on!r}')
        if fallback not in (None, "cpu"):
            raise ValueError(f'fallback must be None (strict) or "cpu", not {fallback!r}')
        self.client = client
        self.fallback = fallback
        self.bias_on = bias_on
        self.act_scale = act_scale
        self.name = name or f"linear{in_features}x{out_features}"
        self.records: List[LayerRecord] = []
        self.last_int32: Optional[np.ndarray] = None
        self._observed_absmax: Optional[float] = None  # set while calibrating

    @classmethod
    def from_linear(cls, linear: nn.Linear, **kwargs) -> "CosimLinear":
        """A CosimLinear sharing `linear`'s weight and bias Parameters."""
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                    device=linear.weight.device, dtype=linear.weight.dtype, **kwargs)
        layer.weight = linear.weight
        layer.bias = linear.bias
        layer.train(linear.training)
        return layer

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bias_on={self.bias_on}, fallback={self.fallback}, act_scale={self.act_scale}"

    def quantized_weight(self) -> Tuple[np.ndarray, np.ndarray]:
        """(int8 W_q, out x in; float64 per-output-channel scales)."""
        return quant.quantize_weight(self.weight.detach().cpu().numpy())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"{self.name}: input has {x.shape[-1]} features, the layer {self.in_features}")
        lead = x.shape[:-1]
        xs = x.detach().cpu().reshape(-1, self.in_features).numpy()
        if self._observed_absmax is not None:  # calibrating: float forward, remember the range
            self._observed_absmax = max(self._observed_absmax, float(np.abs(xs).max()) if xs.size else 0.0)
            return nn.functional.linear(x, self.weight, self.bias)
        s_x = float(self.act_scale) if self.act_scale is not None else quant.activation_scale(xs)
        x_q = quant.quantize(xs, s_x)
        w_q, s_w = self.quantized_weight()
        b_np = None if self.bias is None else self.bias.detach().cpu().numpy()
        bias_i32 = quant.quantize_bias(b_np, s_x, s_w) if (b_np is not None and self.bias_on == "device") else None
        r, rec = _run(self.client, self.fallback, self.name, x_q, np.ascontiguousarray(w_q.T), bias_i32)
        self.records.append(rec)
        self.last_int32 = r.c
        host_bias = b_np if self.bias_on == "host" else None
        y = quant.dequantize(r.c, s_x, s_w, host_bias)
        return torch.from_numpy(y).to(dtype=x.dtype if x.is_floating_point() else torch.float32).reshape(*lead, self.out_features)


def _cosim_layers(model: nn.Module) -> Iterable[Tuple[str, CosimLinear]]:
    return ((name, m) for name, m in model.named_modules() if isinstance(m, CosimLinear))


def offload(model: nn.Module, client=None, *, fallback: Optional[str] = None, bias_on: str = "host") -> nn.Module:
    """Replaces every `nn.Linear` in `model` (in place; also returned) by a `CosimLinear` that shares
    its parameters and is named after its path in the model. Already offloaded layers are given
    the new client/fallback/bias_on settings."""
    if isinstance(model, nn.Linear) and not isinstance(model, CosimLinear):
        return CosimLinear.from_linear(model, client=client, fallback=fallback, bias_on=bias_on, name="linear")
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            path = f"{parent_name}.{child_name}" if parent_name else child_name
            if isinstance(child, CosimLinear):
                child.client, child.fallback, child.bias_on = client, fallback, bias_on
            elif isinstance(child, nn.Linear):
                setattr(parent, child_name, CosimLinear.from_linear(child, client=client, fallback=fallback, bias_on=bias_on, name=path))
    return model


def with_client(model: nn.Module, client) -> nn.Module:
    """A deep copy of an offloaded model whose layers use `client` (e.g. `Reference()`), records cleared."""
    twin = copy.deepcopy(_without_clients(model))
    for _name, layer in _cosim_layers(twin):
        layer.client = client
    return twin


def _without_clients(model: nn.Module) -> nn.Module:
    # A Client holds a socket and a thread, which deepcopy cannot copy: copy the model without them.
    saved = [(layer, layer.client, layer.records, layer.last_int32) for _n, layer in _cosim_layers(model)]
    for layer, _c, _r, _l in saved:
        layer.client, layer.records, layer.last_int32 = None, [], None
    twin = copy.deepcopy(model)
    for layer, c, r, last in saved:
        layer.client, layer.records, layer.last_int32 = c, r, last
    return twin


def calibrate(model: nn.Module, batches: Iterable[torch.Tensor]) -> Dict[str, float]:
    """Fixes every CosimLinear's activation scale to max|input| / 127 over `batches` (run in float,
    nothing is sent to the RTL). Returns layer name -> scale."""
    layers = list(_cosim_layers(model))
    for _n, layer in layers:
        layer._observed_absmax = 0.0
    try:
        with torch.no_grad():
            for batch in batches:
                model(batch)
        scales = {}
        for _n, layer in layers:
            layer.act_scale = float(quant.scale_for(layer._observed_absmax))
            scales[layer.name] = layer.act_scale
        return scales
    finally:
        for _n, layer in layers:
            layer._observed_absmax = None


def records(model: nn.Module) -> List[LayerRecord]:
    """Every call's record of every CosimLinear in `model`, layer by layer (module order)."""
    return [rec for _n, layer in _cosim_layers(model) for rec in layer.records]


def clear_records(model: nn.Module) -> None:
    for _n, layer in _cosim_layers(model):
        layer.records.clear()


def fallbacks(model_or_records: Union[nn.Module, List[LayerRecord]]) -> List[LayerRecord]:
    """The records of calls that fell back to the CPU."""
    recs = records(model_or_records) if isinstance(model_or_records, nn.Module) else model_or_records
    return [r for r in recs if r.backend == "cpu-fallback"]


@dataclass(kw_only=True)
class LayerSummary(Measured):
    """A layer's calls together: `rows` (m) summed over all calls, RTL figures and predictions
    summed over the RTL calls, the model errors of the sums, CPU fallbacks counted."""

    layer: str
    k: int
    n: int
    rows: int = 0
    calls: int = 0
    fallbacks: int = 0
    last_fallback: Optional[str] = None


def summarize(recs: List[LayerRecord]) -> List[LayerSummary]:
    """One LayerSummary per layer, in first-seen order."""
    out: Dict[str, LayerSummary] = {}
    for r in recs:
        s = out.setdefault(r.layer, LayerSummary(layer=r.layer, k=r.k, n=r.n))
        s.calls += 1
        s.rows += r.m
        s.host_s += r.host_s
        if r.backend == "cpu-fallback":
            s.fallbacks += 1
            s.last_fallback = r.fallback
        if r.backend == "rtl":
            s.jobs += r.jobs
            s.cycles = (s.cycles or 0) + r.cycles
            s.dma_wait = (s.dma_wait or 0) + r.dma_wait
            s.device_ns = (s.device_ns or 0) + r.device_ns
            if r.predictions:
                s.predictions = {name: (s.predictions or {}).get(name, 0) + v for name, v in r.predictions.items()}
    for s in out.values():
        if s.cycles and s.predictions:
            s.model_errors = {name: (v - s.cycles) / s.cycles for name, v in s.predictions.items()}
    return list(out.values())


def records_table(model_or_records: Union[nn.Module, List[LayerRecord]]) -> str:
    """A markdown table, one row per layer: shape, calls, jobs, RTL cycles, DMA wait, device time,
    each model's predicted cycles and its error against the RTL, and CPU fallbacks."""
    recs = records(model_or_records) if isinstance(model_or_records, nn.Module) else model_or_records
    head = ["layer", "m x k x n", "calls", "jobs", "RTL cycles", "DMA wait", "device time"]
    for name in MODELS:
        head += [name, "err"]
    head.append("CPU fallbacks")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summarize(recs):
        row = [s.layer, f"{s.rows} x {s.k} x {s.n}", str(s.calls), str(s.jobs)]
        if s.cycles is None:
            row += ["-", "-", "-"]
        else:
            row += [f"{s.cycles:,}", f"{s.dma_wait:,} ({100 * s.dma_wait / max(s.cycles, 1):.0f} %)", f"{s.device_ns / 1e6:.1f} ms"]
        for name in MODELS:
            if s.predictions and s.model_errors:
                row += [f"{s.predictions[name]:,}", f"{100 * s.model_errors[name]:+.1f} %"]
            else:
                row += ["-", "-"]
        row.append(f"{s.fallbacks} ({s.last_fallback})" if s.fallbacks else "0")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
