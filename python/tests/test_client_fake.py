"""The client against the test-double server (fakeserver.py): pipelining, ids, batches, errors,
tiling, both socket kinds. The real server is tested in test_guest.py."""

import socket
import threading

import numpy as np
import pytest

import cosim
from cosim import protocol as p
from cosim import reference
from fakeserver import FakeServer

rng = np.random.default_rng(3)


def rand_job(m, n, k, bias=False):
    a = rng.integers(-128, 128, (m, k), dtype=np.int8)
    b = rng.integers(-128, 128, (k, n), dtype=np.int8)
    bb = rng.integers(-(2**31), 2**31, n, dtype=np.int64).astype(np.int32) if bias else None
    return p.make_job(a, b, bb)


def expected(job):
    return reference.gemm(job.a, job.b) if job.bias is None else reference.linear(job.a, job.b, job.bias)


@pytest.fixture
def server():
    with FakeServer() as s:
        yield s


def test_info_and_gemm(server):
    with cosim.Client(server.address, timeout=10) as c:
        devices = c.info()
        assert len(devices) == 2 and devices[0].rows == 4 and devices[0].max_dim == 1024
        job = rand_job(4, 16, 8)
        r = c.gemm(job.a, job.b)
        assert np.array_equal(r.c, expected(job)) and r.c.dtype == np.int32
        assert (r.m, r.n, r.k, r.jobs) == (4, 16, 8, 1)
        assert r.cycles == 4 * 16 * 8 // 16 + 100 and set(r.predictions) == {"roofline", "tiled", "systolic"}


def test_unix_socket(tmp_path):
    with FakeServer(unix_path=str(tmp_path / "serve.sock")) as server, cosim.connect(f"unix:{tmp_path}/serve.sock", timeout=10) as c:
        job = rand_job(3, 5, 7, bias=True)
        assert np.array_equal(c.linear(job.a, job.b, job.bias).c, expected(job))


def test_pipelined_replies_in_reverse_order_are_matched_by_id():
    window = 8
    with FakeServer(window=window) as server, cosim.Client(server.address, timeout=10) as c:
        jobs = [rand_job(i + 1, 2 * i + 1, 3, bias=i % 2 == 1) for i in range(window)]
        futures = [c.submit_job(j) for j in jobs]
        # the server answers only once all 8 have arrived, so all 8 were outstanding at once
        results = [f.result(timeout=10) for f in futures]
        for job, r in zip(jobs, results):
            assert np.array_equal(r.c, expected(job))
        ids = [h.id for h in server.requests]
        assert len(set(ids)) == window and c.outstanding == 0


def test_batch_with_a_failed_entry():
    fail = lambda job: 6 if job.dims == (2, 2, 2) else 0  # noqa: E731
    with FakeServer(fail=fail) as server, cosim.Client(server.address, timeout=10) as c:
        jobs = [rand_job(3, 4, 5), rand_job(2, 2, 2), rand_job(1, 9, 2, bias=True)]
        items = c.batch(jobs)
        assert np.array_equal(items[0].c, expected(jobs[0])) and items[0].k == 5
        assert isinstance(items[1], cosim.DeviceError) and items[1].device_error == 6
        assert np.array_equal(items[2].c, expected(jobs[2]))


def test_error_reply_raises_the_reason_and_the_connection_keeps_serving(server):
    with cosim.Client(server.address, timeout=10) as c:
        big = np.zeros((1025, 1), np.int8)
        with pytest.raises(cosim.DeviceError, match="BAD_SIZE: 1025x1x1: dimensions must be 1 to 1024") as e:
            c.gemm(big, np.zeros((1, 1), np.int8))
        assert e.value.code == p.BAD_SIZE
        with pytest.raises(cosim.DeviceError, match="VERSION: v1"):
            c.submit_raw(p.INFO, b"", version=2).result(timeout=10)
        with pytest.raises(cosim.DeviceError, match="BAD_FRAME"):
            c.submit_raw(p.GEMM, b"\x01\x00").result(timeout=10)
        assert c.submit_raw(p.BATCH, (0).to_bytes(4, "little")).result(timeout=10) == []
        job = rand_job(2, 3, 4)
        assert np.array_equal(c.gemm(job.a, job.b).c, expected(job))


def test_device_refusal_names_the_device_error():
    with FakeServer(fail=lambda job: 6) as server, cosim.Client(server.address, timeout=10) as c:
        with pytest.raises(cosim.DeviceError, match=r"DEVICE: /dev/accel0 refused the job \(ERROR 6\) \(device ERROR code 6\)") as e:
            c.gemm(np.ones((1, 1), np.int8), np.ones((1, 1), np.int8))
        assert (e.value.code, e.value.device_error) == (p.DEVICE, 6)


def test_matmul_splits_into_tiles_of_max_dim():
    with FakeServer(max_dim=8, window=1) as server, cosim.Client(server.address, timeout=10) as c:
        job = rand_job(20, 17, 19, bias=True)
        r = c.matmul(job.a, job.b, job.bias)
        assert np.array_equal(r.c, expected(job))
        assert r.jobs == 3 * 3 * 3 == server.jobs_run
        kinds = [h.kind for h in server.requests if h.kind in (p.GEMM, p.LINEAR)]
        assert kinds.count(p.LINEAR) == 3 * 3  # the bias once per (m, n) tile, with the first k slice
        assert r.cycles == sum(
            __import__("fakeserver").fake_cycles(m, n, k) for m in (8, 8, 4) for n in (8, 8, 1) for k in (8, 8, 3)
        )


def test_server_closing_fails_outstanding_requests_and_later_calls():
    with FakeServer(close_after=2, window=4) as server, cosim.Client(server.address, timeout=10) as c:
        f1 = c.submit_gemm(np.ones((1, 1), np.int8), np.ones((1, 1), np.int8))
        f2 = c.submit_gemm(np.ones((1, 1), np.int8), np.ones((1, 1), np.int8))
        for f in (f1, f2):
            with pytest.raises(ConnectionError, match="closed the connection"):
                f.result(timeout=10)
        with pytest.raises(ConnectionError, match="is down"):
            c.gemm(np.ones((1, 1), np.int8), np.ones((1, 1), np.int8))


def test_garbage_from_the_server_is_a_protocol_error():
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)

    def garbage():
        conn, _ = lsock.accept()
        conn.recv(64)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        conn.close()

    t = threading.Thread(target=garbage, daemon=True)
    t.start()
    with cosim.Client(("127.0.0.1", lsock.getsockname()[1]), timeout=10) as c:
        with pytest.raises(p.ProtocolError, match="wrong magic"):
            c.info()
    t.join(timeout=5)
    lsock.close()


def test_no_reply_times_out_with_a_message():
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    with cosim.Client(("127.0.0.1", lsock.getsockname()[1])) as c:
        with pytest.raises(TimeoutError, match="no reply to INFO from 127.0.0.1:.* within 0.2 s"):
            c.info(timeout=0.2)
    lsock.close()


def test_connect_refused_names_the_address():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}"):
        cosim.Client(f"127.0.0.1:{port}")


def test_parse_address():
    from cosim.client import parse_address

    assert parse_address({"host": "127.0.0.1", "port": 5, "devices": 1}) == ("127.0.0.1", 5)
    assert parse_address({"path": "/run/x.sock"}) == "/run/x.sock"
    assert parse_address("unix:/a/b") == "/a/b"
    assert parse_address(":7") == ("127.0.0.1", 7)
    with pytest.raises(ValueError):
        parse_address("nonsense")
