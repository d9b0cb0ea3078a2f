"""Offload a small model's Linear layers to the GEMM RTL and compare with the int8 CPU reference.

    PYTHONPATH=python /usr/bin/python3 python/examples/offload_linear.py            # boots a guest
    PYTHONPATH=python /usr/bin/python3 python/examples/offload_linear.py 127.0.0.1:P  # a running server
"""

import sys

import torch
import torch.nn as nn

import cosim
import cosim.torch as ct
from cosim.reference import Reference

with cosim.Guest(connect=sys.argv[1] if len(sys.argv) > 1 else None) as guest:
    # a GEMM of int8 tensors: int32 result and the job's record (RTL cycles, model predictions)
    a = torch.randint(-128, 128, (4, 8), dtype=torch.int8)
    b = torch.randint(-128, 128, (8, 16), dtype=torch.int8)
    c, rec = ct.gemm(a, b)  # the innermost open Guest's client
    assert torch.equal(c, a.int() @ b.int())
    print(f"gemm 4x8 by 8x16: {rec.cycles} RTL cycles, predicted {rec.predictions}")

    # every nn.Linear of a model on the RTL (strict: a device error raises cosim.DeviceError)
    model = ct.offload(nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 10)))
    x = torch.randn(32, 128)
    y = model(x)
    y_ref = ct.with_client(model, Reference())(x)  # the same quantised layers on the CPU
    print("identical to the int8 CPU reference:", torch.equal(y, y_ref))
    print(ct.records_table(model))
