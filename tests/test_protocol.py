"""Wire codec: round trips of every allowed dtype and shape, and refusals of everything else."""

from __future__ import annotations

import io
from pathlib import Path

import msgpack
import numpy as np
import pytest

from deploy.handler import RequestHandler
from deploy.protocol import (
    ARRAY_MARKER,
    ATTACH_MIN_BYTES,
    MAX_ATTACHMENTS,
    PROTOCOL_VERSION,
    SUPPORTED_DTYPES,
    DecodeError,
    ErrorCode,
    RequestError,
    decode,
    decode_stream,
    encode,
    encode_frames,
    error_reply,
    ok_reply,
    request,
)

SHAPES = [(), (0,), (3,), (2, 0, 4), (2, 3), (2, 3, 4)]


@pytest.mark.parametrize("dtype", SUPPORTED_DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_round_trip_every_dtype_and_shape(dtype: str, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    array = np.asarray(rng.standard_normal(shape) * 100).astype(np.dtype(dtype))
    out = decode(encode({"a": array}))["a"]
    assert out.dtype == np.dtype(dtype)
    assert out.shape == shape
    np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize("dtype", SUPPORTED_DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_round_trip_every_dtype_and_shape_as_attachments(dtype: str, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    array = np.asarray(rng.standard_normal(shape) * 100).astype(np.dtype(dtype))
    frames = encode_frames({"a": array, "b": [array, 3]}, min_bytes=0)
    assert len(frames) == 3
    out = decode(frames[0], frames[1:])
    for got in (out["a"], out["b"][0]):
        assert got.dtype == np.dtype(dtype) and got.shape == shape
        np.testing.assert_array_equal(got, array)
    assert out["b"][1] == 3


def test_only_large_arrays_become_attachments_and_are_not_copied() -> None:
    image = np.arange(224 * 224 * 3, dtype=np.uint8).reshape(224, 224, 3)
    state = np.arange(8, dtype=np.float32)
    frames = encode_frames({"image": image, "state": state, "prompt": "pick"})
    assert len(frames) == 2 and memoryview(frames[1]).nbytes == image.nbytes
    assert np.shares_memory(np.frombuffer(frames[1], np.uint8), image), "a C-order array is sent as is"
    out = decode(frames[0], frames[1:])
    np.testing.assert_array_equal(out["image"], image)
    np.testing.assert_array_equal(out["state"], state)
    assert np.shares_memory(out["image"], np.frombuffer(frames[1], np.uint8)), "decoded without a copy"
    # Big-endian and strided arrays are converted first, as in encode().
    frames = encode_frames({"a": np.arange(10, dtype=">i4")[::2]}, min_bytes=0)
    np.testing.assert_array_equal(decode(frames[0], frames[1:])["a"], [0, 2, 4, 6, 8])


def _array_map(**fields: object) -> dict:
    return {ARRAY_MARKER: True, "dtype": "<f4", "shape": [2], **fields}


@pytest.mark.parametrize(
    ("message", "attachments", "field", "match"),
    [
        ({"a": _array_map(attachment=1)}, [b"\0" * 8], "a.attachment", "does not name a frame"),
        ({"a": _array_map(attachment=0)}, [], "a.attachment", "does not name a frame"),
        ({"a": _array_map(attachment="0")}, [b"\0" * 8], "a.attachment", "does not name a frame"),
        ({"a": _array_map(attachment=0, data=b"\0" * 8)}, [b"\0" * 8], "a.attachment", "not both"),
        ({"a": _array_map(attachment=0)}, [b"\0" * 7], "a.data", "length does not match"),
        ({"a": _array_map(data=b"\0" * 8)}, [b"\0" * 8], "frames", "must be an array's attachment"),
        ({"a": 1}, [b""] * 65, "frames", "too many frames"),
    ],
)
def test_decode_refuses_bad_attachments(message: dict, attachments: list, field: str, match: str) -> None:
    with pytest.raises(DecodeError, match=match) as info:
        decode(msgpack.packb(message), attachments)
    assert info.value.field == field and info.value.code is ErrorCode.DECODE_ERROR


def test_the_largest_allowed_rank_and_attachment_count_round_trip() -> None:
    deep = np.zeros([1] * 32, np.float32)
    assert decode(encode(deep)).shape == deep.shape
    arrays = [np.full(4, k, np.float32) for k in range(MAX_ATTACHMENTS)]
    frames = encode_frames(arrays, min_bytes=0)
    assert len(frames) == 1 + MAX_ATTACHMENTS
    assert [float(a[0]) for a in decode(frames[0], frames[1:])] == list(range(MAX_ATTACHMENTS))
    with pytest.raises(TypeError, match=f"at most {MAX_ATTACHMENTS} large arrays, got {MAX_ATTACHMENTS + 1}"):
        encode_frames([*arrays, arrays[0]], min_bytes=0)


def test_arrays_from_the_attachment_threshold_up_are_attached() -> None:
    at = np.zeros(ATTACH_MIN_BYTES, np.uint8)
    assert len(encode_frames({"a": at})) == 2
    assert len(encode_frames({"a": at[:-1]})) == 1


def test_round_trip_nan_inf_bit_exact() -> None:
    array = np.array([np.nan, np.inf, -np.inf, -0.0, 1e-45], np.float32)
    out = decode(encode(array))
    assert out.tobytes() == array.tobytes()


def test_non_contiguous_and_fortran_arrays_are_sent_in_c_order() -> None:
    base = np.arange(48, dtype=np.int32).reshape(6, 8)
    for view in (base[::2, 1::3], base.T, np.asfortranarray(base)):
        out = decode(encode(view))
        assert out.flags.c_contiguous
        np.testing.assert_array_equal(out, view)


def test_big_endian_arrays_are_converted_to_little_endian() -> None:
    array = np.arange(5, dtype=">f8")
    out = decode(encode(array))
    assert out.dtype.str == "<f8"
    np.testing.assert_array_equal(out, array)


def test_numpy_scalars_become_0d_arrays() -> None:
    out = decode(encode({"x": np.float32(2.5), "y": np.int64(-3), "z": np.float64(0.25)}))
    assert out["x"].shape == () and out["x"].dtype == np.float32 and float(out["x"]) == 2.5
    assert out["y"].dtype == np.int64 and int(out["y"]) == -3
    assert out["z"] == 0.25  # np.float64 is a Python float, so it travels as a msgpack float


def test_nested_plain_values_round_trip() -> None:
    message = {"s": "héllo", "b": b"\x00\x01", "n": None, "t": True, "f": 1.5, "l": [1, [2, {"k": -1}]]}
    assert decode(encode(message)) == message


def test_decoded_arrays_are_zero_copy_read_only_views() -> None:
    out = decode(encode(np.zeros((4, 4), np.uint8)))
    assert not out.flags.writeable


@pytest.mark.parametrize("value", [np.zeros(2, np.complex64), np.array(["a"]), np.array([{}], dtype=object)])
def test_encode_refuses_unsupported_dtypes(value: np.ndarray) -> None:
    with pytest.raises(TypeError, match="array dtype: expected one of"):
        encode(value)


def test_encode_refuses_unknown_objects() -> None:
    with pytest.raises(TypeError, match="cannot encode set"):
        encode({1, 2})


def _raw_array(**fields: object) -> bytes:
    return msgpack.packb({ARRAY_MARKER: True, **fields}, use_bin_type=True)


@pytest.mark.parametrize(
    ("payload", "field", "match"),
    [
        (_raw_array(dtype=">f4", shape=[1], data=b"\0" * 4), "dtype", "not allowed \\(send little-endian\\)"),
        (_raw_array(dtype="|O", shape=[1], data=b"\0" * 8), "dtype", "'\\|O' is not allowed"),
        (_raw_array(dtype="<c8", shape=[1], data=b"\0" * 8), "dtype", "not allowed"),
        (_raw_array(dtype="<f4", shape=[-1], data=b""), "shape", "non-negative"),
        (_raw_array(dtype="<f4", shape="3", data=b""), "shape", "non-negative"),
        (_raw_array(dtype="<f4", shape=3, data=b"\0" * 12), "shape", "non-negative"),
        (_raw_array(dtype="<f4", shape=[1] * 33, data=b"\0" * 4), "shape", "non-negative"),
        (_raw_array(dtype="<f4", shape=[3], data=b"\0" * 8), "data", "does not match"),
        (_raw_array(dtype="<f4", shape=[2], data="text"), "data", "must be msgpack bin"),
    ],
)
def test_decode_refuses_malformed_arrays(payload: bytes, field: str, match: str) -> None:
    with pytest.raises(DecodeError, match=match) as info:
        decode(payload)
    assert info.value.code is ErrorCode.DECODE_ERROR
    assert info.value.field == field


@pytest.mark.parametrize(
    "payload",
    [
        encode({"v": 1, "endpoint": "ping"})[:-3],  # truncated
        encode({"v": 1}) + b"\x01",  # trailing bytes
        b"\xc1",  # reserved msgpack byte
        msgpack.packb({1: 2}),  # non-string key
        b"\xa2\xff\xfe",  # invalid UTF-8 string
        b"",
    ],
    ids=["truncated", "trailing", "reserved", "int-key", "bad-utf8", "empty"],
)
def test_decode_refuses_invalid_msgpack(payload: bytes) -> None:
    with pytest.raises(DecodeError, match="payload is not a valid msgpack message"):
        decode(payload)


def test_decode_survives_deep_nesting() -> None:
    payload = b"\x91" * 100_000 + b"\x00"
    with pytest.raises(DecodeError, match="not a valid msgpack message: nested too deep") as err:
        decode(payload)
    assert err.value.field == "payload"


def test_request_and_replies_carry_the_protocol_version() -> None:
    message = request("infer", request_id=3, session="s", obs={"state": np.zeros(8, np.float32)})
    assert message["v"] == PROTOCOL_VERSION and "deadline_ms" not in message
    assert ok_reply("ping", 3, {})["v"] == PROTOCOL_VERSION
    err = RequestError(ErrorCode.BAD_REQUEST, "m", field="f", expected="e", actual="a")
    reply = error_reply("infer", 3, err)
    assert reply["status"] == "error"
    assert reply["error"] == {
        "code": "bad_request",
        "message": "m",
        "field": "f",
        "expected": "e",
        "actual": "a",
    }


def test_decode_stream_reads_back_to_back_messages() -> None:
    stream = io.BytesIO(b"".join(encode({"i": i, "a": np.full(3, i, np.int16)}) for i in range(4)))
    items = list(decode_stream(stream))
    assert [item["i"] for item in items] == [0, 1, 2, 3]
    np.testing.assert_array_equal(items[3]["a"], [3, 3, 3])


@pytest.mark.parametrize("marker", [False, 1, 0, "true", None, [True]])
def test_array_marker_must_be_exactly_true(marker: object) -> None:
    payload = msgpack.packb({"x": {ARRAY_MARKER: marker, "dtype": "<f4", "shape": [1], "data": b"\0" * 4}})
    with pytest.raises(DecodeError, match="only when it is true") as info:
        decode(payload)
    assert info.value.field == f"x.{ARRAY_MARKER}" and info.value.expected == "true"


def test_decode_error_names_the_array_path_and_keeps_the_envelope() -> None:
    good = {ARRAY_MARKER: True, "dtype": "<f4", "shape": [1], "data": b"\0" * 4}
    bad = {**good, "dtype": ">f4"}
    message = {"v": 1, "endpoint": "infer", "id": 9, "obs": {"state": good, "image": bad, "l": [good, bad]}}
    with pytest.raises(DecodeError, match="send little-endian") as info:
        decode(msgpack.packb(message))
    assert info.value.field == "obs.image.dtype"
    assert info.value.request["endpoint"] == "infer" and info.value.request["id"] == 9
    with pytest.raises(DecodeError) as info:
        decode(msgpack.packb({"v": 1, "obs": {"cams": [good, {**good, "shape": [2]}]}}))
    assert info.value.field == "obs.cams.1.data"


def _documented_error_reply() -> bytes:
    text = (Path(__file__).parents[1] / "docs" / "protocol.md").read_text()
    section = text[text.index("### An error reply") :]
    dump = section[section.index("```") + 3 :]
    return bytes.fromhex(dump[: dump.index("```")].replace("\n", " "))


def test_the_documented_error_reply_is_what_the_server_sends() -> None:
    replies: list[bytes] = []
    RequestHandler(None).handle(
        encode({"v": 1, "endpoint": "act", "id": 7}), peer="doc", received=0.0, reply=replies.append
    )
    assert replies == [_documented_error_reply()]


def test_openpi_arrays_and_scalars_decode_and_are_checked_like_ours() -> None:
    from openpi_client import msgpack_numpy

    message = {"a": np.arange(6, dtype=np.int16).reshape(2, 3), "s": np.float32(2.5), "b": np.bool_(True)}
    out = decode(msgpack_numpy.packb(message))
    np.testing.assert_array_equal(out["a"], message["a"])
    assert out["s"].shape == () and out["s"].dtype == np.float32 and float(out["s"]) == 2.5
    assert out["b"].dtype == np.bool_ and bool(out["b"])
    with pytest.raises(DecodeError, match="not allowed") as info:
        decode(msgpack_numpy.packb({"obs": {"x": np.zeros(2, ">f4")}}))
    assert info.value.field == "obs.x.dtype"
    assert (
        msgpack_numpy.unpackb(encode(message, array_format="openpi"))["a"].tolist() == message["a"].tolist()
    )
    with pytest.raises(ValueError, match="array_format: expected one of cogvla, openpi"):
        encode(message, array_format="json")
