"""The wire protocol between robots and the policy server (specified in the cogvla
repository's docs/protocol.md).

One request or reply is one msgpack map. numpy arrays travel as a map
``{"__ndarray__": true, "dtype": "<f4", "shape": [8], "data": <bin>}`` holding the raw
little-endian C-order bytes, so a client in any language can build or read them without
numpy; pickle is never used. A large array may instead name an *attachment*, a transport
frame sent after the message (``"attachment": 0`` in place of ``data``): ``encode_frames``
and ``decode(..., attachments)`` handle that form, which spares both ends a copy of
every image. Every message carries the protocol version ``"v"``, and the
envelope keys ``v``, ``id``, ``endpoint``, ``status`` and ``error`` keep their meaning in
every future version, so a client can always read the reply that refuses its version.

This module imports only numpy and msgpack: robot-side code can use it without torch.
"""

from __future__ import annotations

import contextlib
import enum
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, BinaryIO, Union

import msgpack
import numpy as np

__all__ = [
    "ARRAY_FORMATS",
    "ARRAY_MARKER",
    "ATTACH_MIN_BYTES",
    "ENDPOINTS",
    "MAX_ATTACHMENTS",
    "PROTOCOL_VERSION",
    "SUPPORTED_DTYPES",
    "SUPPORTED_VERSIONS",
    "Buffer",
    "DecodeError",
    "ErrorCode",
    "RequestError",
    "decode",
    "decode_stream",
    "encode",
    "encode_frames",
    "error_reply",
    "ok_reply",
    "request",
]

# Bump only for changes an old peer would misread; adding an optional field is not one.
PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (1,)
ENDPOINTS = ("infer", "metadata", "ping", "reset")
ARRAY_MARKER = "__ndarray__"
# How replies write arrays: this protocol's maps, or openpi-client's msgpack_numpy maps.
ARRAY_FORMATS = ("cogvla", "openpi")
# openpi-client's msgpack_numpy marks arrays and numpy scalars with byte-string keys.
_OPENPI_ARRAY = b"__ndarray__"
_OPENPI_SCALAR = b"__npgeneric__"

# One byte order on the wire (little-endian, what every current robot CPU uses) keeps
# foreign clients to a memcpy; object/void/complex/str dtypes are never accepted.
SUPPORTED_DTYPES = (
    "|b1",
    "|u1",
    "|i1",
    "<u2",
    "<i2",
    "<f2",
    "<u4",
    "<i4",
    "<f4",
    "<u8",
    "<i8",
    "<f8",
)
_MAX_NDIM = 32
# Lookup tables for the request path: dtype objects hash, a dtype's ``.str`` is rebuilt on
# every access.
_NUMPY_DTYPES = {name: np.dtype(name) for name in SUPPORTED_DTYPES}
_WIRE_NAMES = {dtype: name for name, dtype in _NUMPY_DTYPES.items()}
# What a message or an attachment may arrive as (a zmq.Frame's buffer is a memoryview).
Buffer = Union[bytes, memoryview]  # noqa: UP007  (a runtime alias: `|` needs Python 3.10)
# encode_frames sends arrays of at least this many bytes as attachments: below it a copy
# costs less than one more frame.
ATTACH_MIN_BYTES = 16 * 1024
# Attachments one message may carry (an observation has one per camera).
MAX_ATTACHMENTS = 64


class ErrorCode(str, enum.Enum):
    """The ``error.code`` values a server may send; docs/protocol.md says when each is used."""

    DECODE_ERROR = "decode_error"
    VERSION_MISMATCH = "version_mismatch"
    UNKNOWN_ENDPOINT = "unknown_endpoint"
    BAD_REQUEST = "bad_request"
    OVERLOADED = "overloaded"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    INTERNAL_ERROR = "internal_error"
    SHUTTING_DOWN = "shutting_down"
    LOADING = "loading"


class RequestError(ValueError):
    """A request the server refuses; becomes an ``error`` reply with these fields."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        field: str | None = None,
        expected: str | None = None,
        actual: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message
        self.field = field
        self.expected = expected
        self.actual = actual

    def to_wire(self) -> dict[str, Any]:
        """The ``error`` map of an error reply."""
        return {
            "code": self.code.value,
            "message": self.message,
            "field": self.field,
            "expected": self.expected,
            "actual": self.actual,
        }


class DecodeError(RequestError):
    """Bytes that are not a valid protocol message (truncated msgpack, malformed array, ...).

    ``request`` is the message read with its arrays left as maps, when the msgpack itself was
    valid, so that a reply can still echo the request's ``id`` and ``endpoint``.
    """

    def __init__(self, message: str, **details: str | None) -> None:
        super().__init__(ErrorCode.DECODE_ERROR, message, **details)
        self.request: Any = None


def _wire_data(array: np.ndarray) -> tuple[Buffer, str]:
    """The raw little-endian C-order bytes of ``array`` (no copy when already so) and its wire dtype."""
    dtype = _WIRE_NAMES.get(array.dtype)
    if dtype is None:
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
            dtype = _WIRE_NAMES.get(array.dtype)
        if dtype is None:
            raise TypeError(
                f"array dtype: expected one of {', '.join(SUPPORTED_DTYPES)}, got {array.dtype} ({array.dtype.str})"
            )
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    # A memoryview lets msgpack (or ZeroMQ) copy the bytes at most once, where they go.
    return (memoryview(array).cast("B") if array.size else b""), dtype


def _array_map(array: np.ndarray, dtype: str, where: str, value: Any) -> dict[str, Any]:
    """The wire map of ``array``; ``where`` is ``"data"`` (its bytes) or ``"attachment"`` (a frame index)."""
    return {ARRAY_MARKER: True, "dtype": dtype, "shape": list(array.shape), where: value}


def _encode_array(array: np.ndarray) -> dict[str, Any]:
    data, dtype = _wire_data(array)
    return _array_map(array, dtype, "data", data)


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return _encode_array(obj)
    if isinstance(obj, np.generic):
        return _encode_array(np.asarray(obj))
    raise TypeError(
        f"cannot encode {type(obj).__name__}: expected dict, list, str, bytes, number, bool, None or ndarray"
    )


def _openpi_default(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)):
        array = np.asarray(obj)
        data, dtype = _wire_data(array)
        return {_OPENPI_ARRAY: True, b"data": data, b"dtype": dtype, b"shape": list(array.shape)}
    return _default(obj)


def _decode_array(obj: dict[str, Any], attachments: Sequence[Buffer], used: set[int]) -> np.ndarray:
    dtype, shape, data = obj.get("dtype"), obj.get("shape"), obj.get("data")
    np_dtype = _NUMPY_DTYPES.get(dtype) if type(dtype) is str else None
    if np_dtype is None:
        hint = " (send little-endian)" if isinstance(dtype, str) and dtype.startswith(">") else ""
        raise DecodeError(
            f"array dtype {dtype!r} is not allowed{hint}",
            field="dtype",
            expected=f"one of {', '.join(SUPPORTED_DTYPES)}",
            actual=repr(dtype),
        )
    if type(shape) is not list or len(shape) > _MAX_NDIM:
        raise _bad_shape(shape)
    for n in shape:  # a plain loop: all() over a generator costs twice as much here
        if type(n) is not int or n < 0:
            raise _bad_shape(shape)
    if "attachment" in obj:
        data = _attachment(obj, attachments, used)
        actual_bytes = memoryview(data).nbytes
    elif type(data) is bytes:
        actual_bytes = len(data)
    else:
        raise DecodeError(
            "array data must be msgpack bin", field="data", expected="bin", actual=type(data).__name__
        )
    expected_bytes = math.prod(shape) * np_dtype.itemsize
    if actual_bytes != expected_bytes:
        raise DecodeError(
            "array data length does not match dtype and shape",
            field="data",
            expected=f"{expected_bytes} bytes for {dtype} {shape}",
            actual=f"{actual_bytes} bytes",
        )
    # Zero-copy view on the message bytes or the attachment frame; such arrays are read-only.
    return np.ndarray(shape, np_dtype, data)


def _bad_shape(shape: Any) -> DecodeError:
    return DecodeError(
        "array shape must be a list of non-negative integers",
        field="shape",
        expected=f"list of at most {_MAX_NDIM} non-negative ints",
        actual=repr(shape)[:80],
    )


def _attachment(obj: dict[str, Any], attachments: Sequence[Buffer], used: set[int]) -> Buffer:
    index = obj["attachment"]
    if "data" in obj:
        raise DecodeError(
            "an array has either data or an attachment, not both",
            field="attachment",
            expected="data or attachment",
            actual="both",
        )
    if type(index) is not int or not 0 <= index < len(attachments):
        raise DecodeError(
            "array attachment index does not name a frame sent with the message",
            field="attachment",
            expected=f"int in [0, {len(attachments)})" if attachments else "no attachment (none were sent)",
            actual=repr(index)[:40],
        )
    used.add(index)
    return attachments[index]


def _array_hook(attachments: Sequence[Buffer], used: set[int]) -> Callable[[dict[str, Any]], Any]:
    """msgpack ``object_hook`` turning array maps into arrays; records the attachments they name."""

    def hook(obj: dict[str, Any]) -> Any:
        if ARRAY_MARKER not in obj:
            if _OPENPI_ARRAY in obj or _OPENPI_SCALAR in obj:
                return hook(_from_openpi(obj))
            return obj
        if obj[ARRAY_MARKER] is not True:
            raise DecodeError(
                f"{ARRAY_MARKER} marks an array only when it is true",
                field=ARRAY_MARKER,
                expected="true",
                actual=repr(obj[ARRAY_MARKER])[:40],
            )
        return _decode_array(obj, attachments, used)

    return hook


def _from_openpi(obj: dict[Any, Any]) -> dict[str, Any]:
    """An array or numpy scalar as openpi-client's ``msgpack_numpy`` packs it (byte keys), as
    this protocol's array map, so that one validation serves both."""
    marker = _OPENPI_ARRAY if _OPENPI_ARRAY in obj else _OPENPI_SCALAR
    dtype = obj.get(b"dtype")
    array = {ARRAY_MARKER: obj[marker], "dtype": dtype, "shape": obj.get(b"shape"), "data": obj.get(b"data")}
    if marker == _OPENPI_SCALAR:
        # A scalar travels as its Python value; as a 0-d array it is checked like any other.
        array["shape"] = []
        np_dtype = _NUMPY_DTYPES.get(dtype) if type(dtype) is str else None
        if np_dtype is not None:
            with contextlib.suppress(TypeError, ValueError, OverflowError):
                array["data"] = np.asarray(array["data"], np_dtype).tobytes()
    return array


def _locate(err: DecodeError, buffer: Buffer, attachments: Sequence[Buffer]) -> DecodeError:
    """Prefix ``err.field`` with the path of the array it is about (``obs.image.dtype``) and keep
    the message as a plain map in ``err.request``; runs only on the error path."""
    try:
        plain = msgpack.unpackb(buffer, raw=False, use_list=True)
    except Exception:  # the array was not the only fault; the field stays as it is
        return err
    err.request = plain
    path = _failing_array(plain, _array_hook(attachments, set()), "")
    if path:
        err.field = f"{path}.{err.field}"
    return err


def _failing_array(node: Any, hook: Callable[[dict[str, Any]], Any], path: str) -> str | None:
    """The dotted path of the first array map in ``node`` that ``hook`` refuses, in decode order."""
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        found = _failing_array(child, hook, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    if isinstance(node, dict) and (ARRAY_MARKER in node or _OPENPI_ARRAY in node or _OPENPI_SCALAR in node):
        try:
            hook(node)
        except DecodeError:
            return path
    return None


def encode(obj: Any, array_format: str = "cogvla") -> bytes:
    """Pack a message (nested dicts/lists of scalars, strings, bytes and arrays) into msgpack bytes.

    numpy scalars become 0-d arrays (except ``np.float64``, a ``float`` subclass, which
    travels as a msgpack float); non-contiguous arrays are copied to C order and big-endian
    arrays are converted to little-endian. Unsupported dtypes raise TypeError.
    ``array_format="openpi"`` writes arrays as openpi-client's ``msgpack_numpy`` does (byte
    keys), so that its ``unpackb`` reads them.
    """
    if array_format not in ARRAY_FORMATS:
        raise ValueError(f"array_format: expected one of {', '.join(ARRAY_FORMATS)}, got {array_format!r}")
    default = _default if array_format == "cogvla" else _openpi_default
    # A fresh Packer per call keeps encode() safe to call from several threads.
    return msgpack.Packer(default=default, use_bin_type=True).pack(obj)


def encode_frames(obj: Any, min_bytes: int = ATTACH_MIN_BYTES) -> list[Buffer]:
    """Pack a message as ``[message, *attachments]``: arrays of ``min_bytes`` or more become
    attachments (their own buffers, not copied), the rest is what ``encode`` makes."""
    attachments: list[Buffer] = []

    def default(item: Any) -> Any:
        if isinstance(item, np.ndarray) and item.nbytes >= min_bytes:
            data, dtype = _wire_data(item)
            attachments.append(data)
            return _array_map(item, dtype, "attachment", len(attachments) - 1)
        return _default(item)

    message = msgpack.Packer(default=default, use_bin_type=True).pack(obj)
    if len(attachments) > MAX_ATTACHMENTS:
        raise TypeError(f"message: expected at most {MAX_ATTACHMENTS} large arrays, got {len(attachments)}")
    return [message, *attachments]


def decode(buffer: Buffer, attachments: Sequence[Buffer] = ()) -> Any:
    """Unpack one msgpack message whose arrays may name ``attachments`` (the frames sent after
    it); raises ``DecodeError`` on anything malformed, including an attachment no array names."""
    if len(attachments) > MAX_ATTACHMENTS:
        raise DecodeError(
            "too many frames after the message",
            field="frames",
            expected=f"at most {MAX_ATTACHMENTS} attachments",
            actual=str(len(attachments)),
        )
    used: set[int] = set()
    try:
        message = msgpack.unpackb(
            buffer, object_hook=_array_hook(attachments, used), raw=False, use_list=True
        )
    except DecodeError as err:
        raise _locate(err, buffer, attachments) from None
    except Exception as exc:  # msgpack signals truncation, bad UTF-8, deep nesting... with several types
        raise DecodeError(f"payload is not a valid msgpack message: {_reason(exc)}", field="payload") from exc
    if len(used) != len(attachments):
        err = DecodeError(
            "every frame after the message must be an array's attachment",
            field="frames",
            expected=f"{len(attachments)} attachments named by arrays",
            actual=f"{len(used)} named",
        )
        err.request = message
        raise err
    return message


def _reason(exc: Exception) -> str:
    """Why msgpack refused a message; its nesting limit raises with no text of its own."""
    if isinstance(exc, msgpack.StackError):
        return "nested too deep"
    return str(exc) or type(exc).__name__


def decode_stream(stream: BinaryIO) -> Iterator[Any]:
    """Messages written back to back into a file (the ``--record`` format), one at a time."""
    hook = _array_hook((), set())
    unpacker = msgpack.Unpacker(stream, object_hook=hook, raw=False, use_list=True, max_buffer_size=0)
    try:
        yield from unpacker
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(
            f"stream holds an invalid msgpack message: {_reason(exc)}", field="payload"
        ) from exc


def request(
    endpoint: str,
    *,
    request_id: int | str | None = None,
    session: str | None = None,
    deadline_ms: float | None = None,
    obs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A request map; optional fields that are None are left out."""
    message: dict[str, Any] = {"v": PROTOCOL_VERSION, "endpoint": endpoint}
    for key, value in (("id", request_id), ("session", session), ("deadline_ms", deadline_ms), ("obs", obs)):
        if value is not None:
            message[key] = value
    return message


def ok_reply(endpoint: str | None, request_id: Any, result: Mapping[str, Any]) -> dict[str, Any]:
    """A successful reply to ``endpoint``."""
    return {"v": PROTOCOL_VERSION, "id": request_id, "endpoint": endpoint, "status": "ok", "result": result}


def error_reply(endpoint: str | None, request_id: Any, error: RequestError) -> dict[str, Any]:
    """An error reply; ``endpoint``/``id`` are None when the request could not be read."""
    return {
        "v": PROTOCOL_VERSION,
        "id": request_id,
        "endpoint": endpoint,
        "status": "error",
        "error": error.to_wire(),
    }
