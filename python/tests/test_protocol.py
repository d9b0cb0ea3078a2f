"""Golden bytes of docs/serve-protocol.md's examples, and the codec's round trips and refusals."""

import numpy as np
import pytest

from cosim import protocol as p


def hexbytes(text: str) -> bytes:
    return bytes.fromhex(text.replace("\n", " "))


def test_info_request_golden():
    assert p.encode_info(7) == hexbytes("43 53 52 56 01 00 01 00 07 00 00 00 00 00 00 00")


def test_gemm_request_golden():
    job = p.make_job(np.array([[1, -1]], dtype=np.int8), np.array([[3], [4]], dtype=np.int8))
    assert p.encode_job(1, job) == hexbytes(
        "43 53 52 56 01 00 02 00 01 00 00 00 14 00 00 00"
        " 01 00 00 00 01 00 00 00 02 00 00 00 00 00 00 00 01 ff 03 04"
    )


def test_error_reply_golden():
    data = hexbytes("43 53 52 56 01 00 ff 00 09 00 00 00 0e 00 00 00 02 00 00 00 00 00 00 00 02 00 00 00 76 31")
    assert p.encode_error(9, p.VERSION_ERR, 0, "v1") == data
    header = p.decode_header(data[:16])
    assert (header.kind, header.id, header.length, header.version) == (p.ERROR, 9, 14, 1)
    reply = p.decode_reply(header, data[16:])
    err = reply.value
    assert isinstance(err, p.DeviceError)
    assert (err.code, err.name, err.device_error, err.message, err.request_id) == (2, "VERSION", 0, "v1", 9)
    assert "VERSION: v1" in str(err)


def test_linear_and_batch_round_trip():
    rng = np.random.default_rng(1)
    a = rng.integers(-128, 128, (3, 5), dtype=np.int8)
    b = rng.integers(-128, 128, (5, 2), dtype=np.int8)
    bias = np.array([7, -(1 << 31)], dtype=np.int32)
    lin = p.make_job(a, b, bias)
    data = p.encode_job(4, lin)
    header = p.decode_header(data[:16])
    assert (header.kind, header.length) == (p.LINEAR, 16 + 15 + 10 + 8)
    back = p.decode_job(header.kind, data[16:])
    assert np.array_equal(back.a, a) and np.array_equal(back.b, b) and np.array_equal(back.bias, bias)

    gem = p.make_job(a[:1], b)
    batch = p.encode_batch(5, [lin, gem])
    entries = p.decode_batch(batch[16:])
    assert [k for k, _ in entries] == [p.LINEAR, p.GEMM]
    # entry framing: kind u16, reserved u16, length u32 right after the count
    assert batch[16:20] == (2).to_bytes(4, "little")
    assert batch[20:28] == bytes([3, 0, 0, 0]) + (16 + 15 + 10 + 8).to_bytes(4, "little")


def test_result_and_batch_reply_round_trip():
    c = np.array([[1, -2, 3], [2**31 - 1, -(2**31), 0]], dtype=np.int32)
    r = p.GemmResult(c=c, m=2, n=3, device=1, cycles=1000, dma_wait=10, device_ns=5000,
                     predictions={"roofline": 900, "tiled": 1010, "systolic": 1200})
    body = p.encode_result_body(r)
    assert len(body) == 64 + 24
    back = p.decode_result(body)
    assert np.array_equal(back.c, c) and back.device == 1 and back.cycles == 1000
    assert back.predictions == {"roofline": 900, "tiled": 1010, "systolic": 1200}
    assert back.model_errors() == pytest.approx({"roofline": -0.1, "tiled": 0.01, "systolic": 0.2})

    frame = p.encode_batch_reply(3, [r, p.DeviceError(p.DEVICE, 6, "DMA error")])
    items = p.decode_reply(p.decode_header(frame[:16]), frame[16:]).value
    assert np.array_equal(items[0].c, c)
    assert isinstance(items[1], p.DeviceError) and items[1].device_error == 6 and items[1].message == "DMA error"


def test_info_reply_round_trip():
    cfg = p.DeviceConfig(4, 4, 1024, 64, 32, 32, 100_000_000, 8, 100)
    frame = p.encode_info_reply(2, [cfg, cfg])
    assert p.decode_header(frame[:16]).length == 4 + 2 * 40
    assert p.decode_reply(p.decode_header(frame[:16]), frame[16:]).value == [cfg, cfg]


@pytest.mark.parametrize(
    "data, what",
    [
        (b"XSRV" + bytes(12), "wrong magic"),
        (p.HEADER.pack(p.MAGIC, 1, p.GEMM_REPLY, 1, p.MAX_PAYLOAD + 1), "above the limit"),
        (b"CSRV", "header is 4 bytes"),
    ],
)
def test_bad_headers(data, what):
    with pytest.raises(p.ProtocolError, match=what):
        p.decode_header(data)


def test_bad_replies():
    good = p.encode_result_body(p.GemmResult(np.zeros((1, 1), np.int32), 1, 1, 0, 1, 0, 0, {"roofline": 1, "tiled": 1, "systolic": 1}))
    with pytest.raises(p.ProtocolError, match="needs"):
        p.decode_result(good[:-1])
    with pytest.raises(p.ProtocolError, match="unknown reply kind"):
        p.decode_reply(p.Header(0x83, 1, 0), b"")
    with pytest.raises(p.ProtocolError, match="version 2"):
        p.decode_reply(p.Header(p.GEMM_REPLY, 1, len(good), version=2), good)
    with pytest.raises(p.ProtocolError, match="message_len"):
        p.decode_error_body(p.ERROR_BODY.pack(1, 0, 5) + b"abc")
    with pytest.raises(p.ProtocolError, match="runs past"):
        p.decode_batch_reply((1).to_bytes(4, "little") + p.BATCH_REPLY_ENTRY.pack(0, 100))


def test_make_job_refuses_wrong_types_and_shapes():
    a = np.zeros((2, 3), np.int8)
    with pytest.raises(TypeError, match="int8"):
        p.make_job(a.astype(np.int16), np.zeros((3, 1), np.int8))
    with pytest.raises(ValueError, match="inner dimensions"):
        p.make_job(a, np.zeros((2, 1), np.int8))
    with pytest.raises(ValueError, match="bias must have shape"):
        p.make_job(a, np.zeros((3, 4), np.int8), np.zeros(3, np.int32))
