"""The digits MLP on the RTL: `python -m cosim.demo` (what `make ml-demo` runs).

Trains a small MLP (64 -> 64 -> 32 -> 10) on the CPU on scikit-learn's bundled digits data set
(8x8 images, no download), quantises it (int8 weights per output channel, int8 activations with
scales calibrated on the training set), and infers the whole test set with every Linear on the
RTL, in batches. The same quantised model runs on the integer CPU reference; the demo checks that
every layer's int32 accumulators and every prediction are identical, prints the accuracy of the
float model next to the RTL's and the reference's, and a per-layer table of RTL cycles and the
analytic models' predictions and errors. Exit status 1 if anything differs.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import torch
import torch.nn as nn

from . import torch as ct
from .guest import Guest
from .reference import Reference

HIDDEN = (64, 32)


def load_data(seed: int = 0):
    """Digits, pixel values scaled to [0, 1]; a stratified 80/20 split (360 test samples)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
    return torch.from_numpy(x_tr), torch.from_numpy(y_tr), torch.from_numpy(x_te), torch.from_numpy(y_te)


def make_mlp() -> nn.Sequential:
    """fc1, relu1, fc2, relu2, fc3 (the layer names in the records)."""
    layers: List[tuple] = []
    width = 64
    for i, h in enumerate(HIDDEN, start=1):
        layers += [(f"fc{i}", nn.Linear(width, h)), (f"relu{i}", nn.ReLU())]
        width = h
    layers.append((f"fc{len(HIDDEN) + 1}", nn.Linear(width, 10)))
    return nn.Sequential(OrderedDict(layers))


def train(x: torch.Tensor, y: torch.Tensor, epochs: int = 300, seed: int = 0) -> nn.Sequential:
    """Full-batch Adam on the CPU (about a second)."""
    torch.manual_seed(seed)
    model = make_mlp()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    return model.eval()


@dataclass
class DemoResult:
    samples: int
    batches: int
    float_accuracy: float
    rtl_accuracy: float
    reference_accuracy: float
    predictions_identical: bool
    int32_identical: bool
    mismatches: List[str] = field(default_factory=list)
    records: List[ct.LayerRecord] = field(default_factory=list)
    seconds_per_batch: float = 0.0

    @property
    def ok(self) -> bool:
        return self.predictions_identical and self.int32_identical and not ct.fallbacks(self.records)


def run(client, batch: int = 120, epochs: int = 300, out=print) -> DemoResult:
    """Trains, quantises and infers the test set on `client` (and on the CPU reference)."""
    x_tr, y_tr, x_te, y_te = load_data()
    t0 = time.perf_counter()
    model = train(x_tr, y_tr, epochs)
    out(f"trained a {' -> '.join(str(w) for w in (64, *HIDDEN, 10))} MLP on {len(x_tr)} digits in {time.perf_counter() - t0:.1f} s")
    with torch.no_grad():
        float_pred = model(x_te).argmax(dim=1)

    rtl = ct.offload(make_mlp(), client)  # strict: a device error raises
    rtl.load_state_dict(model.state_dict())
    rtl.eval()
    scales = ct.calibrate(rtl, [x_tr])
    ref = ct.with_client(rtl, Reference())
    out("activation scales (calibrated on the training set): " + ", ".join(f"{k} {v:.5f}" for k, v in scales.items()))

    layers = [(name, m) for name, m in rtl.named_modules() if isinstance(m, ct.CosimLinear)]
    ref_layers = dict((name, m) for name, m in ref.named_modules() if isinstance(m, ct.CosimLinear))
    rtl_pred, ref_pred, mismatches = [], [], []
    rtl_time = 0.0
    n_batches = 0
    with torch.no_grad():
        for start in range(0, len(x_te), batch):
            xb = x_te[start : start + batch]
            t = time.perf_counter()
            rtl_pred.append(rtl(xb).argmax(dim=1))
            rtl_time += time.perf_counter() - t
            n_batches += 1
            ref_pred.append(ref(xb).argmax(dim=1))
            for name, layer in layers:
                if not np.array_equal(layer.last_int32, ref_layers[name].last_int32):
                    diff = int(np.count_nonzero(layer.last_int32 != ref_layers[name].last_int32))
                    mismatches.append(f"layer {name}, rows {start}..{start + len(xb) - 1}: {diff} int32 outputs differ")
    rtl_pred_t, ref_pred_t = torch.cat(rtl_pred), torch.cat(ref_pred)
    res = DemoResult(
        samples=len(x_te),
        batches=n_batches,
        float_accuracy=(float_pred == y_te).float().mean().item(),
        rtl_accuracy=(rtl_pred_t == y_te).float().mean().item(),
        reference_accuracy=(ref_pred_t == y_te).float().mean().item(),
        predictions_identical=bool(torch.equal(rtl_pred_t, ref_pred_t)),
        int32_identical=not mismatches,
        mismatches=mismatches,
        records=ct.records(rtl),
        seconds_per_batch=rtl_time / max(n_batches, 1),
    )
    out("")
    out(f"test set: {res.samples} digits in {res.batches} batches of up to {batch}, every Linear on the RTL")
    out(f"  accuracy  float (CPU) {100 * res.float_accuracy:.2f} %   int8 on the RTL {100 * res.rtl_accuracy:.2f} %   "
        f"int8 CPU reference {100 * res.reference_accuracy:.2f} %")
    out(f"  int32 outputs of every layer identical to the CPU reference: {'yes' if res.int32_identical else 'NO'}")
    out(f"  predictions identical to the CPU reference: {'yes' if res.predictions_identical else 'NO'}")
    out(f"  end-to-end time per batch (host -> guest -> RTL -> host, 3 layers): {1000 * res.seconds_per_batch:.0f} ms")
    for line in mismatches:
        out("  MISMATCH " + line)
    out("")
    out("per layer (all batches; RTL cycles summed; err = (model - RTL) / RTL):")
    out(ct.records_table(res.records))
    return res


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cosim.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--connect", metavar="ADDR", help="use a running server (HOST:PORT or unix:PATH) instead of launching a guest")
    ap.add_argument("--launcher", help="cosim-launch binary [default: $COSIM_BUILD/../target/release/cosim-launch]")
    ap.add_argument("--devices", type=int, default=1, help="accelerators in the guest (one simulation each)")
    ap.add_argument("--launcher-arg", action="append", default=[], metavar="ARG",
                    help="extra cosim-launch option (repeatable), e.g. --launcher-arg=--sim-arg=+cosim_dma_latency=0 (free-running)")
    ap.add_argument("--batch", type=int, default=120, help="test samples per batch (rows of each layer's GEMM)")
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--boot-timeout", type=float, default=300.0)
    ap.add_argument("-v", "--verbose", action="store_true", help="echo the launcher's output")
    args = ap.parse_args(argv)
    guest = Guest(connect=args.connect, launcher=args.launcher, devices=args.devices, launcher_args=args.launcher_arg,
                  boot_timeout=args.boot_timeout, echo=args.verbose)
    with guest as g:
        if g.proc is not None:
            print(f"guest serving at {g.serve_info} (cosim-launch pid {g.proc.pid})")
        res = run(g.client, batch=args.batch, epochs=args.epochs)
    if not res.ok:
        print("cosim demo: FAILED: the RTL's results differ from the int8 CPU reference", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
