"""The bytes of the `accel-tool serve` protocol, version 1 (docs/serve-protocol.md).

Pure codec: functions that turn requests and replies into bytes and back, no sockets. The client
(`cosim.client`) and the test-double server of the tests both use it. Decoding any byte string
either returns a value or raises `ProtocolError`; it never reads past what it was given.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

MAGIC = 0x56525343  # the bytes "CSRV"
VERSION = 1
MAX_PAYLOAD = 64 << 20

# Request kinds
INFO = 1
GEMM = 2
LINEAR = 3
BATCH = 4
# Reply kinds
INFO_REPLY = 0x81
GEMM_REPLY = 0x82
BATCH_REPLY = 0x84
ERROR = 0xFF

REQUEST_KINDS = {INFO: "INFO", GEMM: "GEMM", LINEAR: "LINEAR", BATCH: "BATCH"}
REPLY_KINDS = {INFO_REPLY: "INFO_REPLY", GEMM_REPLY: "GEMM_REPLY", BATCH_REPLY: "BATCH_REPLY", ERROR: "ERROR"}

# Error codes of an error body
BAD_FRAME = 1
VERSION_ERR = 2
BAD_SIZE = 3
DEVICE = 4
NO_DEVICE = 5
INTERNAL = 6
ERROR_NAMES = {
    BAD_FRAME: "BAD_FRAME",
    VERSION_ERR: "VERSION",
    BAD_SIZE: "BAD_SIZE",
    DEVICE: "DEVICE",
    NO_DEVICE: "NO_DEVICE",
    INTERNAL: "INTERNAL",
}

HEADER = struct.Struct("<IHHII")  # magic, version, kind, id, length
DIMS = struct.Struct("<IIII")  # m, n, k, flags
BATCH_ENTRY = struct.Struct("<HHI")  # kind, reserved, length
BATCH_REPLY_ENTRY = struct.Struct("<II")  # status, length
RESULT = struct.Struct("<IIIIQQQQQQ")  # m, n, device, reserved, cycles, dma_wait, device_ns, roofline, tiled, systolic
DEVICE_CONFIG = struct.Struct("<IIIIIIQII")
ERROR_BODY = struct.Struct("<III")  # code, device_error, message_len
U32 = struct.Struct("<I")

MODELS = ("roofline", "tiled", "systolic")


class ProtocolError(Exception):
    """Bytes that do not follow docs/serve-protocol.md (from the server, or a request we refuse to send)."""


class DeviceError(Exception):
    """The server answered with an ERROR (or a failed BATCH entry): the device's or the server's reason.

    `code` is the error body's code (`name` its name, e.g. "DEVICE"), `device_error` the device's ERROR
    register code (0 if none), `message` the server's text, `request_id` the id of the request.
    """

    def __init__(self, code: int, device_error: int, message: str, request_id: Optional[int] = None):
        self.code = code
        self.device_error = device_error
        self.message = message
        self.request_id = request_id
        self.name = ERROR_NAMES.get(code, f"code {code}")
        text = f"{self.name}: {message}"
        if device_error:
            text += f" (device ERROR code {device_error})"
        if request_id is not None:
            text += f" [request id {request_id}]"
        super().__init__(text)


@dataclass(frozen=True)
class Header:
    kind: int
    id: int
    length: int
    version: int = VERSION


@dataclass(frozen=True)
class DeviceConfig:
    """One `/dev/accelN`'s configuration from INFO_REPLY."""

    rows: int
    cols: int
    max_dim: int
    nb: int
    am: int
    rd_out: int
    clock_hz: int
    dma_bytes_per_cycle: int
    read_latency_cycles: int


@dataclass
class GemmResult:
    """One job's result: C (int32, m x n) and what the server measured and predicted for it.

    `cycles`, `dma_wait` (RTL cycles), `device_ns` (guest time, START to interrupt) and `predictions`
    (model name -> predicted cycles) are None for results computed on the CPU (the reference).
    `k` is known only from the request (the reply does not carry it); the client fills it in.
    """

    c: np.ndarray
    m: int
    n: int
    device: int
    cycles: Optional[int]
    dma_wait: Optional[int]
    device_ns: Optional[int]
    predictions: Optional[dict] = None
    k: Optional[int] = None
    jobs: int = 1  # jobs summed into this result (a large matrix split into tiles of at most MAX_DIM)

    def model_errors(self) -> Optional[dict]:
        """(predicted - RTL) / RTL for every model, or None without RTL cycles."""
        if self.cycles is None or not self.predictions:
            return None
        return {name: (p - self.cycles) / self.cycles for name, p in self.predictions.items()}


@dataclass(frozen=True)
class Job:
    """A GEMM (bias None) or LINEAR request's operands: A (m x k int8), B (k x n int8), bias (n int32)."""

    a: np.ndarray
    b: np.ndarray
    bias: Optional[np.ndarray] = None

    @property
    def kind(self) -> int:
        return GEMM if self.bias is None else LINEAR

    @property
    def dims(self) -> Tuple[int, int, int]:
        m, k = self.a.shape
        return m, self.b.shape[1], k


BatchItem = Union[GemmResult, DeviceError]


# ---- frames -------------------------------------------------------------------------------------


def encode_header(kind: int, request_id: int, length: int, version: int = VERSION) -> bytes:
    return HEADER.pack(MAGIC, version, kind, request_id & 0xFFFFFFFF, length)


def decode_header(data: bytes) -> Header:
    """The 16-byte header; raises ProtocolError for a wrong magic or a length above the limit."""
    if len(data) != HEADER.size:
        raise ProtocolError(f"header is {len(data)} bytes, not {HEADER.size}")
    magic, version, kind, rid, length = HEADER.unpack(data)
    if magic != MAGIC:
        raise ProtocolError(f"wrong magic 0x{magic:08x} (expected 0x{MAGIC:08x})")
    if length > MAX_PAYLOAD:
        raise ProtocolError(f"payload length {length} above the limit {MAX_PAYLOAD}")
    return Header(kind=kind, id=rid, length=length, version=version)


def frame(kind: int, request_id: int, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(payload)} bytes above the limit {MAX_PAYLOAD}")
    return encode_header(kind, request_id, len(payload)) + payload


# ---- requests -----------------------------------------------------------------------------------


def _int8_matrix(x, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {arr.shape}")
    if arr.dtype != np.int8:
        raise TypeError(f"{name} must be int8, got {arr.dtype}")
    return np.ascontiguousarray(arr)


def make_job(a, b, bias=None) -> Job:
    """Checks shapes and dtypes (int8 A m x k, int8 B k x n, int32 bias of n) and packs the arrays."""
    a = _int8_matrix(a, "A")
    b = _int8_matrix(b, "B")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"inner dimensions differ: A is {a.shape[0]}x{a.shape[1]}, B is {b.shape[0]}x{b.shape[1]}")
    if bias is not None:
        bias = np.asarray(bias)
        if bias.dtype != np.int32:
            raise TypeError(f"bias must be int32, got {bias.dtype}")
        if bias.shape != (b.shape[1],):
            raise ValueError(f"bias must have shape ({b.shape[1]},), got {bias.shape}")
        bias = np.ascontiguousarray(bias)
    return Job(a, b, bias)


def job_payload(job: Job) -> bytes:
    m, n, k = job.dims
    parts = [DIMS.pack(m, n, k, 0), job.a.astype("<i1", copy=False).tobytes(), job.b.astype("<i1", copy=False).tobytes()]
    if job.bias is not None:
        parts.append(job.bias.astype("<i4", copy=False).tobytes())
    return b"".join(parts)


def encode_info(request_id: int) -> bytes:
    return frame(INFO, request_id)


def encode_job(request_id: int, job: Job) -> bytes:
    return frame(job.kind, request_id, job_payload(job))


def encode_batch(request_id: int, jobs: Sequence[Job]) -> bytes:
    parts = [U32.pack(len(jobs))]
    for job in jobs:
        payload = job_payload(job)
        parts.append(BATCH_ENTRY.pack(job.kind, 0, len(payload)))
        parts.append(payload)
    return frame(BATCH, request_id, b"".join(parts))


def decode_job(kind: int, payload: bytes) -> Job:
    """A GEMM or LINEAR payload (used by the test-double server); ProtocolError if malformed."""
    if kind not in (GEMM, LINEAR):
        raise ProtocolError(f"kind {kind} is not GEMM or LINEAR")
    if len(payload) < DIMS.size:
        raise ProtocolError(f"payload of {len(payload)} bytes is shorter than the dimensions")
    m, n, k, flags = DIMS.unpack_from(payload)
    if flags != 0:
        raise ProtocolError(f"flags {flags} are not 0")
    want = DIMS.size + m * k + k * n + (4 * n if kind == LINEAR else 0)
    if len(payload) != want:
        raise ProtocolError(f"payload is {len(payload)} bytes, {m}x{n}x{k} needs {want}")
    off = DIMS.size
    a = np.frombuffer(payload, dtype="<i1", count=m * k, offset=off).reshape(m, k)
    off += m * k
    b = np.frombuffer(payload, dtype="<i1", count=k * n, offset=off).reshape(k, n)
    off += k * n
    bias = np.frombuffer(payload, dtype="<i4", count=n, offset=off).astype(np.int32) if kind == LINEAR else None
    return Job(a.astype(np.int8), b.astype(np.int8), bias)


def decode_batch(payload: bytes) -> List[Tuple[int, bytes]]:
    """A BATCH payload as (kind, entry payload) pairs; ProtocolError if malformed."""
    if len(payload) < U32.size:
        raise ProtocolError("BATCH payload has no count")
    (count,) = U32.unpack_from(payload)
    off = U32.size
    entries = []
    for i in range(count):
        if off + BATCH_ENTRY.size > len(payload):
            raise ProtocolError(f"BATCH entry {i} header runs past the payload")
        kind, _reserved, length = BATCH_ENTRY.unpack_from(payload, off)
        off += BATCH_ENTRY.size
        if off + length > len(payload):
            raise ProtocolError(f"BATCH entry {i} runs past the payload")
        entries.append((kind, payload[off : off + length]))
        off += length
    if off != len(payload):
        raise ProtocolError(f"{len(payload) - off} bytes after the last BATCH entry")
    return entries


# ---- replies ------------------------------------------------------------------------------------


def encode_error_body(code: int, device_error: int, message: str) -> bytes:
    text = message.encode("utf-8")
    return ERROR_BODY.pack(code, device_error, len(text)) + text


def encode_error(request_id: int, code: int, device_error: int, message: str) -> bytes:
    return frame(ERROR, request_id, encode_error_body(code, device_error, message))


def encode_result_body(r: GemmResult) -> bytes:
    preds = r.predictions or {}
    head = RESULT.pack(
        r.m, r.n, r.device, 0, r.cycles or 0, r.dma_wait or 0, r.device_ns or 0, *(preds.get(name, 0) for name in MODELS)
    )
    return head + np.ascontiguousarray(r.c, dtype="<i4").tobytes()


def encode_info_reply(request_id: int, devices: Sequence[DeviceConfig]) -> bytes:
    body = U32.pack(len(devices)) + b"".join(
        DEVICE_CONFIG.pack(
            d.rows, d.cols, d.max_dim, d.nb, d.am, d.rd_out, d.clock_hz, d.dma_bytes_per_cycle, d.read_latency_cycles
        )
        for d in devices
    )
    return frame(INFO_REPLY, request_id, body)


def encode_batch_reply(request_id: int, items: Sequence[BatchItem]) -> bytes:
    parts = [U32.pack(len(items))]
    for item in items:
        if isinstance(item, DeviceError):
            body, status = encode_error_body(item.code, item.device_error, item.message), item.code
        else:
            body, status = encode_result_body(item), 0
        parts.append(BATCH_REPLY_ENTRY.pack(status, len(body)) + body)
    return frame(BATCH_REPLY, request_id, b"".join(parts))


def decode_error_body(body: bytes, request_id: Optional[int] = None) -> DeviceError:
    if len(body) < ERROR_BODY.size:
        raise ProtocolError(f"error body of {len(body)} bytes is shorter than {ERROR_BODY.size}")
    code, device_error, mlen = ERROR_BODY.unpack_from(body)
    if len(body) != ERROR_BODY.size + mlen:
        raise ProtocolError(f"error body is {len(body)} bytes, its message_len says {ERROR_BODY.size + mlen}")
    message = body[ERROR_BODY.size :].decode("utf-8", errors="replace")
    return DeviceError(code, device_error, message, request_id)


def decode_result(body: bytes) -> GemmResult:
    if len(body) < RESULT.size:
        raise ProtocolError(f"result of {len(body)} bytes is shorter than its {RESULT.size}-byte head")
    m, n, device, _reserved, cycles, dma_wait, device_ns, roof, tiled, syst = RESULT.unpack_from(body)
    if len(body) != RESULT.size + 4 * m * n:
        raise ProtocolError(f"result is {len(body)} bytes, {m}x{n} needs {RESULT.size + 4 * m * n}")
    c = np.frombuffer(body, dtype="<i4", offset=RESULT.size).astype(np.int32).reshape(m, n)
    return GemmResult(
        c=c,
        m=m,
        n=n,
        device=device,
        cycles=cycles,
        dma_wait=dma_wait,
        device_ns=device_ns,
        predictions=dict(zip(MODELS, (roof, tiled, syst))),
    )


def decode_info(body: bytes) -> List[DeviceConfig]:
    if len(body) < U32.size:
        raise ProtocolError("INFO_REPLY has no device count")
    (count,) = U32.unpack_from(body)
    if len(body) != U32.size + count * DEVICE_CONFIG.size:
        raise ProtocolError(f"INFO_REPLY is {len(body)} bytes, {count} devices need {U32.size + count * DEVICE_CONFIG.size}")
    return [DeviceConfig(*DEVICE_CONFIG.unpack_from(body, U32.size + i * DEVICE_CONFIG.size)) for i in range(count)]


def decode_batch_reply(body: bytes, request_id: Optional[int] = None) -> List[BatchItem]:
    if len(body) < U32.size:
        raise ProtocolError("BATCH_REPLY has no count")
    (count,) = U32.unpack_from(body)
    off = U32.size
    items: List[BatchItem] = []
    for i in range(count):
        if off + BATCH_REPLY_ENTRY.size > len(body):
            raise ProtocolError(f"BATCH_REPLY entry {i} header runs past the payload")
        status, length = BATCH_REPLY_ENTRY.unpack_from(body, off)
        off += BATCH_REPLY_ENTRY.size
        if off + length > len(body):
            raise ProtocolError(f"BATCH_REPLY entry {i} runs past the payload")
        entry = body[off : off + length]
        off += length
        items.append(decode_result(entry) if status == 0 else decode_error_body(entry, request_id))
    if off != len(body):
        raise ProtocolError(f"{len(body) - off} bytes after the last BATCH_REPLY entry")
    return items


@dataclass
class Reply:
    """A decoded reply frame: `value` is a list of DeviceConfig (INFO), a GemmResult, a list of
    BatchItem (BATCH) or a DeviceError (ERROR)."""

    kind: int
    id: int
    value: object = field(default=None)


def decode_reply(header: Header, payload: bytes) -> Reply:
    if header.version != VERSION:
        raise ProtocolError(f"reply of protocol version {header.version}, this client speaks {VERSION}")
    if len(payload) != header.length:
        raise ProtocolError(f"payload is {len(payload)} bytes, the header says {header.length}")
    if header.kind == INFO_REPLY:
        value: object = decode_info(payload)
    elif header.kind == GEMM_REPLY:
        value = decode_result(payload)
    elif header.kind == BATCH_REPLY:
        value = decode_batch_reply(payload, header.id)
    elif header.kind == ERROR:
        value = decode_error_body(payload, header.id)
    else:
        raise ProtocolError(f"unknown reply kind 0x{header.kind:02x}")
    return Reply(header.kind, header.id, value)
