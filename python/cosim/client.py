"""A client for `accel-tool serve` (docs/serve-protocol.md) over TCP or a Unix-domain socket.

Pipelined: `submit_*` sends a request and returns a `concurrent.futures.Future` at once, so many
requests can be outstanding; one reader thread owned by the client receives the replies and
resolves each future by the reply's id (replies may come in any order). The blocking calls
(`info`, `gemm`, `linear`, `batch`, `matmul`) are `submit_*(...).result(timeout)`.

An ERROR reply raises `cosim.DeviceError` with the server's reason (its code, the device's ERROR
code and message). If the connection breaks or the server sends bytes that do not follow the
protocol, every outstanding request fails with `ConnectionError` or `ProtocolError`, and so do
later calls. Every wait is bounded (`timeout`, seconds).
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import os
import socket
import threading
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import protocol as p
from .protocol import BatchItem, DeviceConfig, DeviceError, GemmResult, Job, ProtocolError, make_job
from .reference import wrap_int32

Address = Union[Tuple[str, int], str]

# Which reply kinds answer which request kind (an ERROR answers any).
_EXPECTED = {p.INFO: p.INFO_REPLY, p.GEMM: p.GEMM_REPLY, p.LINEAR: p.GEMM_REPLY, p.BATCH: p.BATCH_REPLY}


def parse_address(spec: Union[str, dict, Tuple[str, int]]) -> Address:
    """An address from `host:port`, `unix:PATH` or a path, a (host, port) pair, or the JSON object
    of the launcher's `COSIM-SERVE` line (`{"host": ..., "port": ...}` or `{"path": ...}`)."""
    if isinstance(spec, tuple):
        return (str(spec[0]), int(spec[1]))
    if isinstance(spec, dict):
        if "path" in spec:
            return str(spec["path"])
        if "host" in spec and "port" in spec:
            return (str(spec["host"]), int(spec["port"]))
        raise ValueError(f"address object {spec!r} has neither path nor host and port")
    if spec.startswith("unix:"):
        return spec[len("unix:") :]
    if spec.startswith("/") or spec.startswith("."):
        return spec
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address {spec!r} is neither HOST:PORT nor unix:PATH")
    return (host or "127.0.0.1", int(port))


class Client:
    """One connection to `accel-tool serve`. Use as a context manager, or call `close()`."""

    def __init__(self, address: Union[str, dict, Tuple[str, int]], *, timeout: float = 120.0, connect_timeout: float = 10.0):
        self.address = parse_address(address)
        self.timeout = timeout
        if isinstance(self.address, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(connect_timeout)
        try:
            sock.connect(self.address)
        except OSError as e:
            sock.close()
            raise ConnectionError(f"cannot connect to the cosim server at {self._where()}: {e}") from e
        sock.settimeout(None)  # the reader blocks; waits are bounded by the futures' timeouts
        if not isinstance(self.address, str):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._send_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._pending: Dict[int, Tuple[int, cf.Future, Optional[List[int]]]] = {}
        self._ids = itertools.count(1)  # id 0 is what the server uses when it cannot read a header
        self._failure: Optional[BaseException] = None
        self._devices: Optional[List[DeviceConfig]] = None
        self._reader = threading.Thread(target=self._read_loop, name=f"cosim-client-{self._where()}", daemon=True)
        self._reader.start()

    # ---- lifecycle ------------------------------------------------------------------------------

    def _where(self) -> str:
        return self.address if isinstance(self.address, str) else f"{self.address[0]}:{self.address[1]}"

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection; outstanding requests fail with ConnectionError."""
        self._fail(ConnectionError("client closed"))
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        if self._reader is not threading.current_thread():
            self._reader.join(timeout=5.0)

    @property
    def outstanding(self) -> int:
        with self._state_lock:
            return len(self._pending)

    # ---- the reader -----------------------------------------------------------------------------

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self._sock.recv(min(n - len(buf), 1 << 20))
            if not chunk:
                raise ConnectionError(f"the cosim server at {self._where()} closed the connection")
            buf += chunk
        return bytes(buf)

    def _read_loop(self) -> None:
        try:
            while True:
                header = p.decode_header(self._recv_exact(p.HEADER.size))
                payload = self._recv_exact(header.length)
                reply = p.decode_reply(header, payload)
                self._deliver(reply)
        except (OSError, ConnectionError, ProtocolError) as e:
            self._fail(e)

    def _deliver(self, reply: p.Reply) -> None:
        with self._state_lock:
            entry = self._pending.pop(reply.id, None)
        if entry is None:
            if reply.kind == p.ERROR:
                # id 0 (or an unknown id): the server could not attribute the error to a request.
                raise ProtocolError(f"the server reported an error for no outstanding request: {reply.value}")
            raise ProtocolError(f"reply 0x{reply.kind:02x} with id {reply.id}, which no outstanding request has")
        kind, fut, ks = entry
        if reply.kind == p.ERROR:
            fut.set_exception(reply.value)
            return
        if reply.kind != _EXPECTED[kind]:
            fut.set_exception(ProtocolError(f"request {reply.id} ({p.REQUEST_KINDS[kind]}) answered by 0x{reply.kind:02x}"))
            return
        value = reply.value
        try:
            if ks is None:  # a raw frame (submit_raw, INFO): nothing to fill in
                pass
            elif isinstance(value, GemmResult):
                value.k = ks[0]
            elif kind == p.BATCH:
                if len(value) != len(ks):
                    raise ProtocolError(f"BATCH {reply.id} of {len(ks)} entries answered with {len(value)}")
                for item, k in zip(value, ks):
                    if isinstance(item, GemmResult):
                        item.k = k
        except ProtocolError as e:
            fut.set_exception(e)
            return
        fut.set_result(value)

    def _fail(self, error: BaseException) -> None:
        with self._state_lock:
            if self._failure is None:
                self._failure = error
            pending, self._pending = self._pending, {}
        for _kind, fut, _ks in pending.values():
            if not fut.done():
                fut.set_exception(error)

    # ---- sending --------------------------------------------------------------------------------

    def _submit(self, kind: int, build, ks: Optional[List[int]] = None) -> cf.Future:
        fut: cf.Future = cf.Future()
        with self._state_lock:
            if self._failure is not None:
                raise ConnectionError(f"the connection to {self._where()} is down: {self._failure}")
            rid = next(self._ids) & 0xFFFFFFFF
            self._pending[rid] = (kind, fut, ks)
        data = build(rid)
        try:
            with self._send_lock:
                self._sock.sendall(data)
        except OSError as e:
            self._fail(ConnectionError(f"sending to {self._where()} failed: {e}"))
        return fut

    def _wait(self, fut: cf.Future, what: str, timeout: Optional[float]):
        t = self.timeout if timeout is None else timeout
        try:
            return fut.result(timeout=t)
        except cf.TimeoutError:
            raise TimeoutError(f"no reply to {what} from {self._where()} within {t:g} s") from None

    def submit_info(self) -> cf.Future:
        return self._submit(p.INFO, p.encode_info)

    def submit_job(self, job: Job) -> cf.Future:
        """Sends a GEMM (job.bias None) or LINEAR request; the future gives a GemmResult."""
        return self._submit(job.kind, lambda rid: p.encode_job(rid, job), [job.dims[2]])

    def submit_gemm(self, a, b) -> cf.Future:
        return self.submit_job(make_job(a, b))

    def submit_linear(self, a, b, bias) -> cf.Future:
        return self.submit_job(make_job(a, b, bias))

    def submit_batch(self, jobs: Sequence[Job]) -> cf.Future:
        """Sends one BATCH; the future gives a list with a GemmResult or a DeviceError per entry."""
        jobs = list(jobs)
        return self._submit(p.BATCH, lambda rid: p.encode_batch(rid, jobs), [j.dims[2] for j in jobs])

    def submit_raw(self, kind: int, payload: bytes, version: int = p.VERSION) -> cf.Future:
        """Sends a frame as given (for tests of the server's error handling)."""
        expected = kind if kind in _EXPECTED else p.GEMM
        return self._submit(expected, lambda rid: p.encode_header(kind, rid, len(payload), version) + payload)

    # ---- blocking calls -------------------------------------------------------------------------

    def info(self, timeout: Optional[float] = None) -> List[DeviceConfig]:
        """The devices' configurations (cached after the first call)."""
        if self._devices is None:
            self._devices = self._wait(self.submit_info(), "INFO", timeout)
        return self._devices

    def gemm(self, a, b, timeout: Optional[float] = None) -> GemmResult:
        """C = A x B on the RTL: int8 A (m x k), int8 B (k x n) -> GemmResult with int32 C."""
        return self._wait(self.submit_gemm(a, b), "GEMM", timeout)

    def linear(self, a, b, bias, timeout: Optional[float] = None) -> GemmResult:
        """C = A x B + bias on the RTL (bias int32, one per column of B)."""
        return self._wait(self.submit_linear(a, b, bias), "LINEAR", timeout)

    def batch(self, jobs: Sequence[Job], timeout: Optional[float] = None) -> List[BatchItem]:
        return self._wait(self.submit_batch(jobs), "BATCH", timeout)

    def max_dim(self) -> int:
        devices = self.info()
        if not devices:
            raise DeviceError(p.NO_DEVICE, 0, "the server reports no device")
        return min(d.max_dim for d in devices)

    def matmul(self, a, b, bias=None, timeout: Optional[float] = None) -> GemmResult:
        """Like `gemm`/`linear`, for any size: a matrix above the devices' MAX_DIM is split into tiles
        of at most MAX_DIM in m, n and k, all sent at once (pipelined), and put back together (k
        slices summed with int32 wrapping, the bias added once). The result's cycles, dma_wait,
        device_ns and predictions are the sums over its `jobs` tiles."""
        job = make_job(a, b, bias)
        m, n, k = job.dims
        limit = self.max_dim()
        if m <= limit and n <= limit and k <= limit:
            return self._wait(self.submit_job(job), p.REQUEST_KINDS[job.kind], timeout)
        tiles = []
        for i0 in range(0, m, limit):
            for j0 in range(0, n, limit):
                for k0 in range(0, k, limit):
                    tile_bias = None if job.bias is None or k0 > 0 else job.bias[j0 : j0 + limit]
                    tile = make_job(job.a[i0 : i0 + limit, k0 : k0 + limit], job.b[k0 : k0 + limit, j0 : j0 + limit], tile_bias)
                    tiles.append((i0, j0, self.submit_job(tile)))
        acc = np.zeros((m, n), dtype=np.int64)
        results = []
        for i0, j0, fut in tiles:
            r = self._wait(fut, f"a {m}x{n}x{k} tile", timeout)
            acc[i0 : i0 + r.m, j0 : j0 + r.n] += r.c
            results.append(r)
        return combine(wrap_int32(acc), k, results)


def combine(c: np.ndarray, k: int, parts: Sequence[GemmResult]) -> GemmResult:
    """One result from several jobs' results: C given, measurements and predictions summed."""

    def total(field: str) -> Optional[int]:
        values = [getattr(r, field) for r in parts]
        return None if any(v is None for v in values) else int(sum(values))

    preds = None
    if all(r.predictions for r in parts):
        preds = {name: int(sum(r.predictions[name] for r in parts)) for name in p.MODELS}
    return GemmResult(
        c=c,
        m=c.shape[0],
        n=c.shape[1],
        device=parts[0].device,
        cycles=total("cycles"),
        dma_wait=total("dma_wait"),
        device_ns=total("device_ns"),
        predictions=preds,
        k=k,
        jobs=sum(r.jobs for r in parts),
    )


def connect(spec: Union[str, dict, Tuple[str, int], None] = None, **kwargs) -> Client:
    """A Client for `spec`, or for $COSIM_SERVE (HOST:PORT or unix:PATH) when spec is None."""
    if spec is None:
        spec = os.environ.get("COSIM_SERVE")
        if not spec:
            raise ValueError("no address given and COSIM_SERVE is not set (HOST:PORT or unix:PATH)")
    return Client(spec, **kwargs)
