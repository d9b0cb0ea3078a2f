"""A test double of `accel-tool serve` for the pure test tier: the protocol of docs/serve-protocol.md
on loopback TCP or a Unix socket, GEMMs computed by the CPU reference, made-up cycle counts.

Not a model of the RTL: the real tier (test_guest.py) runs against `cosim-launch --serve`.
Knobs for the tests: `window` (answer every `window` requests in reverse order, to check that the
client matches replies by id), `max_dim`, `devices`, `fail` (a job predicate -> device error code)
and `close_after` (close the connection after reading that many requests).

Run as a script it plays the launcher: prints `COSIM-SERVE {...}` on stdout and serves until
SIGTERM (used by the Guest tests with a fake launcher).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from typing import Callable, List, Optional

if __name__ == "__main__":
    # launcher mode: block SIGTERM and SIGINT before numpy starts its BLAS threads, so that every
    # thread inherits the mask and main()'s sigwait receives them (else they kill the process)
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM, signal.SIGINT])

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ""))

from cosim import protocol as p  # noqa: E402
from cosim.reference import Reference  # noqa: E402


def fake_cycles(m: int, n: int, k: int) -> int:
    return m * n * k // 16 + 100


class FakeServer:
    def __init__(self, *, unix_path: Optional[str] = None, window: int = 1, max_dim: int = 1024, devices: int = 2,
                 fail: Optional[Callable[[p.Job], int]] = None, close_after: Optional[int] = None):
        self.window = window
        self.max_dim = max_dim
        self.devices = devices
        self.fail = fail
        self.close_after = close_after
        self.requests: List[p.Header] = []  # every request header read, in order
        self.jobs_run = 0
        if unix_path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(unix_path)
            self.address = {"path": unix_path}
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.bind(("127.0.0.1", 0))
            self.address = {"host": "127.0.0.1", "port": self.sock.getsockname()[1]}
        self.sock.listen(4)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def configs(self) -> List[p.DeviceConfig]:
        return [p.DeviceConfig(4, 4, self.max_dim, 64, 32, 32, 100_000_000, 8, 0) for _ in range(self.devices)]

    # ---- serving ----------------------------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self._connection(conn)

    @staticmethod
    def _recv(conn, n: int) -> Optional[bytes]:
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def _connection(self, conn) -> None:
        held: List[bytes] = []
        count = 0
        while True:
            raw = self._recv(conn, p.HEADER.size)
            if raw is None:
                return
            magic, version, kind, rid, length = p.HEADER.unpack(raw)
            if magic != p.MAGIC or length > p.MAX_PAYLOAD:
                conn.sendall(p.encode_error(0 if magic != p.MAGIC else rid, p.BAD_FRAME, 0, "unreadable header"))
                return
            payload = self._recv(conn, length)
            if payload is None:
                return
            self.requests.append(p.Header(kind, rid, length, version))
            count += 1
            if self.close_after is not None and count >= self.close_after:
                return
            held.append(self._answer(version, kind, rid, payload))
            if len(held) >= self.window:
                for reply in reversed(held):
                    conn.sendall(reply)
                held = []

    def _answer(self, version: int, kind: int, rid: int, payload: bytes) -> bytes:
        if version != p.VERSION:
            return p.encode_error(rid, p.VERSION_ERR, 0, f"v{p.VERSION}")
        try:
            if kind == p.INFO:
                if payload:
                    raise p.ProtocolError("INFO has a payload")
                return p.encode_info_reply(rid, self.configs())
            if kind in (p.GEMM, p.LINEAR):
                item = self._job(p.decode_job(kind, payload))
                if isinstance(item, p.DeviceError):
                    return p.encode_error(rid, item.code, item.device_error, item.message)
                return p.frame(p.GEMM_REPLY, rid, p.encode_result_body(item))
            if kind == p.BATCH:
                items = []
                for ekind, epayload in p.decode_batch(payload):
                    try:
                        items.append(self._job(p.decode_job(ekind, epayload)))
                    except p.ProtocolError as e:
                        items.append(p.DeviceError(p.BAD_FRAME, 0, str(e)))
                return p.encode_batch_reply(rid, items)
            return p.encode_error(rid, p.BAD_FRAME, 0, f"unknown kind {kind}")
        except p.ProtocolError as e:
            return p.encode_error(rid, p.BAD_FRAME, 0, str(e))

    def _job(self, job: p.Job):
        m, n, k = job.dims
        if min(m, n, k) == 0 or max(m, n, k) > self.max_dim:
            return p.DeviceError(p.BAD_SIZE, 0, f"{m}x{n}x{k}: dimensions must be 1 to {self.max_dim}")
        if self.fail is not None:
            code = self.fail(job)
            if code:
                return p.DeviceError(p.DEVICE, code, f"/dev/accel0 refused the job (ERROR {code})")
        r = Reference().matmul(job.a, job.b, job.bias)
        cyc = fake_cycles(m, n, k)
        r.device = self.jobs_run % self.devices
        r.cycles, r.dma_wait, r.device_ns = cyc, cyc // 10, cyc * 10
        r.predictions = {"roofline": cyc // 2, "tiled": cyc + 5, "systolic": cyc * 2}
        self.jobs_run += 1
        return r


def main() -> None:
    """Launcher mode: `fakeserver.py [--exit-early | --silent | --ignore-term]`; args after them are ignored (the
    Guest passes --serve --devices N)."""
    if "--exit-early" in sys.argv:
        print("fake launcher: failing on purpose", file=sys.stderr, flush=True)
        sys.exit(3)
    if "--silent" in sys.argv:  # never prints COSIM-SERVE
        signal.sigwait([signal.SIGTERM])
        return
    if "--ignore-term" in sys.argv:  # serves, but only SIGKILL stops it
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        server = FakeServer()
        print("COSIM-SERVE " + json.dumps(dict(server.address, devices=server.devices)), flush=True)
        signal.sigwait([signal.SIGINT])
        return
    server = FakeServer()
    print("booting (fake)", flush=True)
    print("COSIM-SERVE " + json.dumps(dict(server.address, devices=server.devices)), flush=True)
    signal.sigwait([signal.SIGTERM, signal.SIGINT])
    server.close()
    print("fake launcher: stopped", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
