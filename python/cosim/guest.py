"""A guest serving the RTL: `cosim-launch --serve` started and stopped by a context manager, or a
server that already runs.

    with cosim.Guest() as guest:            # boots a guest (one simulation per device)
        r = guest.client.gemm(a, b)

    with cosim.Guest(connect="127.0.0.1:5000") as guest:   # or COSIM_SERVE=...; nothing launched
        ...

The launcher is `launcher=`, else $COSIM_LAUNCH, else $COSIM_BUILD/../target/release/cosim-launch;
it gets COSIM_BUILD (default: the repository's build/ next to python/). Guest waits for the
launcher's one stdout line `COSIM-SERVE {"host": ..., "port": ...}` (or `{"path": ...}`) for at
most `boot_timeout` seconds, then connects. On exit (also on an exception) it closes the client,
sends the launcher SIGTERM, waits at most `stop_timeout` seconds and then kills it. The launcher's
output is kept (the last lines) and quoted when something fails.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Deque, List, Optional, Sequence

from .client import Client

SERVE_MARKER = "COSIM-SERVE "
REPO = Path(__file__).resolve().parents[2]

_current: List["Guest"] = []


class LaunchError(RuntimeError):
    """The launcher could not be started, exited early, or did not print COSIM-SERVE in time."""


def default_build_dir() -> Path:
    return Path(os.environ.get("COSIM_BUILD") or REPO / "build")


def default_launcher(build: Optional[Path] = None) -> Path:
    if os.environ.get("COSIM_LAUNCH"):
        return Path(os.environ["COSIM_LAUNCH"])
    return (build or default_build_dir()).resolve().parent / "target" / "release" / "cosim-launch"


def current_client() -> Client:
    """The client of the innermost open Guest (what cosim.torch uses when given no client)."""
    if not _current:
        raise RuntimeError("no cosim guest is open: use `with cosim.Guest() as g:` or pass client=")
    return _current[-1].client


class Guest:
    """Launches `cosim-launch --serve` (or connects to `connect`) and gives a connected `client`."""

    def __init__(
        self,
        *,
        connect: Optional[str] = None,
        launcher: Optional[os.PathLike] = None,
        build: Optional[os.PathLike] = None,
        devices: int = 1,
        launcher_args: Sequence[str] = (),
        boot_timeout: float = 300.0,
        stop_timeout: float = 30.0,
        request_timeout: float = 120.0,
        echo: bool = False,
    ):
        self.connect_to = connect if connect is not None else os.environ.get("COSIM_SERVE") or None
        self.build = Path(build) if build else default_build_dir()
        self.launcher = Path(launcher) if launcher else default_launcher(self.build)
        self.devices = devices
        self.launcher_args = list(launcher_args)
        self.boot_timeout = boot_timeout
        self.stop_timeout = stop_timeout
        self.request_timeout = request_timeout
        self.echo = echo
        self.proc: Optional[subprocess.Popen] = None
        self.exit_status: Optional[int] = None  # the launcher's, once stopped
        self.serve_info: Optional[dict] = None
        self.client: Optional[Client] = None
        self._lines: Deque[str] = collections.deque(maxlen=60)
        self._serve_line = threading.Event()
        self._drains: List[threading.Thread] = []

    # ---- context manager ------------------------------------------------------------------------

    def __enter__(self) -> "Guest":
        try:
            if self.connect_to:
                self.client = Client(self.connect_to, timeout=self.request_timeout)
            else:
                self._launch()
        except BaseException:
            self.close()
            raise
        _current.append(self)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self in _current:
            _current.remove(self)
        if self.client is not None:
            self.client.close()
            self.client = None
        self._stop()

    # ---- launching ------------------------------------------------------------------------------

    def command(self) -> List[str]:
        return [str(self.launcher), "--serve", "--devices", str(self.devices), *self.launcher_args]

    def output_tail(self) -> str:
        return "\n".join(self._lines)

    def _launch(self) -> None:
        if not self.launcher.is_file() or not os.access(self.launcher, os.X_OK):
            raise LaunchError(f"launcher {self.launcher} not found or not executable (build it: make launcher; or set COSIM_LAUNCH)")
        env = dict(os.environ, COSIM_BUILD=str(self.build))
        cmd = self.command()
        try:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True, bufsize=1
            )
        except OSError as e:
            raise LaunchError(f"cannot start {' '.join(cmd)}: {e}") from e
        self._drains = [
            threading.Thread(target=self._drain, args=(self.proc.stdout, "out"), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stderr, "err"), daemon=True),
        ]
        for t in self._drains:
            t.start()
        deadline = time.monotonic() + self.boot_timeout
        while not self._serve_line.wait(timeout=0.2):
            if self.proc.poll() is not None:
                for t in self._drains:
                    t.join(timeout=2.0)
                raise LaunchError(
                    f"{' '.join(cmd)} exited with status {self.proc.returncode} before printing COSIM-SERVE; "
                    f"its last output:\n{self.output_tail()}"
                )
            if time.monotonic() > deadline:
                raise LaunchError(
                    f"{' '.join(cmd)} printed no COSIM-SERVE line within {self.boot_timeout:.0f} s; "
                    f"its last output:\n{self.output_tail()}"
                )
        try:
            self.client = Client(self.serve_info, timeout=self.request_timeout)
        except ConnectionError as e:
            raise LaunchError(f"{e}; the launcher's last output:\n{self.output_tail()}") from e

    def _drain(self, stream, tag: str) -> None:
        for line in stream:
            line = line.rstrip("\n")
            self._lines.append(f"[{tag}] {line}")
            if self.echo:
                print(f"[cosim-launch {tag}] {line}", flush=True)
            if tag == "out" and line.startswith(SERVE_MARKER) and not self._serve_line.is_set():
                try:
                    self.serve_info = json.loads(line[len(SERVE_MARKER) :])
                except ValueError:
                    self._lines.append(f"[cosim] unparsable COSIM-SERVE line: {line}")
                    continue
                self._serve_line.set()

    def _stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10.0)
        for t in self._drains:
            t.join(timeout=5.0)
        self.exit_status = proc.returncode
