"""cosim.Guest with a fake launcher (tests/fakeserver.py in launcher mode): the COSIM-SERVE line,
bounded waits, and the launcher stopped on exit, also after an exception."""

import os
import sys
import time

import numpy as np
import pytest

import cosim
from cosim import reference

FAKE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fakeserver.py")


def fake_launcher(tmp_path, *flags):
    script = tmp_path / "fake-launch"
    script.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE} {' '.join(flags)} \"$@\"\n")
    script.chmod(0o755)
    return script


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0): look at its state
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def test_launches_connects_and_stops(tmp_path):
    with cosim.Guest(launcher=fake_launcher(tmp_path), boot_timeout=20) as g:
        assert g.serve_info["host"] == "127.0.0.1" and g.serve_info["devices"] == 2
        assert "--serve" in g.command() and g.command()[-2:] == ["--devices", "1"]
        a = np.ones((2, 3), np.int8)
        assert np.array_equal(g.client.gemm(a, a.T.copy()).c, reference.gemm(a, a.T.copy()))
        assert cosim.guest.current_client() is g.client
        pid = g.proc.pid
    assert not alive(pid) and g.exit_status == 0
    assert "fake launcher: stopped" in g.output_tail()
    assert g not in cosim.guest._current  # (the session's real guest may be open: make test-ml)


def test_no_guest_open_is_an_error(monkeypatch):
    monkeypatch.setattr(cosim.guest, "_current", [])
    with pytest.raises(RuntimeError, match="no cosim guest is open"):
        cosim.guest.current_client()


def test_stops_the_launcher_when_the_body_raises(tmp_path):
    with pytest.raises(KeyError):
        with cosim.Guest(launcher=fake_launcher(tmp_path), boot_timeout=20) as g:
            pid = g.proc.pid
            raise KeyError("boom")
    assert not alive(pid)


def test_launcher_exiting_early_fails_with_its_output(tmp_path):
    with pytest.raises(cosim.LaunchError, match=r"exited with status 3 before printing COSIM-SERVE(.|\n)*failing on purpose"):
        with cosim.Guest(launcher=fake_launcher(tmp_path, "--exit-early"), boot_timeout=20):
            pass


def test_no_serve_line_in_time_fails_and_stops_the_launcher(tmp_path):
    start = time.monotonic()
    with pytest.raises(cosim.LaunchError, match="printed no COSIM-SERVE line within 1 s"):
        with cosim.Guest(launcher=fake_launcher(tmp_path, "--silent"), boot_timeout=1):
            pass
    assert time.monotonic() - start < 10


def test_a_launcher_ignoring_sigterm_is_killed_after_stop_timeout(tmp_path):
    with cosim.Guest(launcher=fake_launcher(tmp_path, "--ignore-term"), boot_timeout=20, stop_timeout=1) as g:
        pid = g.proc.pid
    assert not alive(pid) and g.exit_status == -9


def test_missing_launcher_is_an_error_not_a_skip(tmp_path):
    with pytest.raises(cosim.LaunchError, match="not found or not executable"):
        with cosim.Guest(launcher=tmp_path / "nope"):
            pass


def test_default_launcher_is_next_to_the_build_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("COSIM_LAUNCH", raising=False)
    monkeypatch.setenv("COSIM_BUILD", str(tmp_path / "build"))
    assert cosim.guest.default_launcher() == tmp_path / "target" / "release" / "cosim-launch"


def test_connects_to_a_running_server_without_launching(tmp_path):
    from fakeserver import FakeServer

    with FakeServer() as server:
        with cosim.Guest(connect=f"127.0.0.1:{server.address['port']}") as g:
            assert g.proc is None and len(g.client.info()) == 2
