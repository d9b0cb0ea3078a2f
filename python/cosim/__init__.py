"""cosim: run matrix multiplications of a PyTorch model on the GEMM RTL in a cosim guest.

- `cosim.Client` / `cosim.connect`: the `accel-tool serve` protocol (docs/serve-protocol.md), pipelined;
- `cosim.Guest`: launches `cosim-launch --serve` (or connects to a running server) as a context manager;
- `cosim.torch`: `gemm` for int8 tensors, `CosimLinear` (drop-in `nn.Linear`), `offload(model)`,
  per-layer records (imported on demand: it needs torch);
- `cosim.reference`: the integer CPU reference (int8 x int8 -> int32, wrapping);
- `cosim.quant`: int8 symmetric quantisation.

See docs/ml.md.
"""

from .client import Client, connect
from .guest import Guest, LaunchError
from .protocol import DeviceConfig, DeviceError, GemmResult, Job, ProtocolError, make_job

__all__ = [
    "Client",
    "DeviceConfig",
    "DeviceError",
    "GemmResult",
    "Guest",
    "Job",
    "LaunchError",
    "ProtocolError",
    "connect",
    "make_job",
]
