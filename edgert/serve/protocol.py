"""The Open Inference Protocol (KServe v2, as Triton speaks it) over HTTP: request bodies to arrays and back.

A request body is JSON, or JSON followed by raw tensor bytes (Triton's binary tensor extension): the header
`Inference-Header-Content-Length` says where the JSON ends, and each input with a `binary_data_size` parameter
takes that many bytes, in input order. Outputs are returned as binary when the request asks for it (per output, or
`binary_data_output` for all), as JSON lists otherwise. Pure functions, no I/O: the app and the tests share them.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field

import numpy as np

# OIP datatype names <-> numpy dtypes (BYTES, strings, has no TFLite model here to serve).
DATATYPES = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
             "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
             "FP32": np.float32, "FP64": np.float64}
_NAMES = {np.dtype(v): k for k, v in DATATYPES.items()}
HEADER_LENGTH = "inference-header-content-length"


class ProtocolError(ValueError):
    """A request the protocol does not allow: answered 400 with this message as the JSON `error`."""


class BodyTooLarge(ProtocolError):
    """Answered 413."""

    def __init__(self, limit: int):
        super().__init__(f"the request body is larger than the server's limit of {limit} bytes (--max-body)")
        self.limit = limit


def datatype(dtype) -> str:
    """The OIP datatype name of a numpy dtype."""
    try:
        return _NAMES[np.dtype(dtype)]
    except KeyError:
        raise ProtocolError(f"dtype {np.dtype(dtype).name} has no Open Inference Protocol datatype") from None


@dataclass
class InferRequest:
    """A decoded infer request: arrays by input name, in the order they came, and what to send back."""

    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: tuple[str, ...] = ()  # requested output names; empty means all
    binary: dict[str, bool] = field(default_factory=dict)  # per requested output
    binary_default: bool = False  # `binary_data_output`
    timeout_us: int | None = None  # the request's deadline, relative to its arrival


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo a request's `Content-Encoding` (gzip, deflate), never expanding past `limit` bytes."""
    if not encoding or encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise ProtocolError(f"unsupported Content-Encoding {encoding!r}; send gzip, deflate or none")
    window = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    inflater = zlib.decompressobj(window)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ProtocolError(f"the body is not valid {encoding} data ({exc})") from None
    if len(out) > limit:
        raise BodyTooLarge(limit)
    return out


def _json_part(body: bytes, header_length: str | None) -> tuple[dict, bytes]:
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise ProtocolError(f"Inference-Header-Content-Length must be an integer, got {header_length!r}") from None
        if not 0 <= n <= len(body):
            raise ProtocolError(f"Inference-Header-Content-Length {n} is outside the body's {len(body)} bytes")
        head, rest = body[:n], body[n:]
    else:
        head, rest = body, b""
    try:
        doc = json.loads(head)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"the request is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ProtocolError("the request must be a JSON object with an 'inputs' list")
    return doc, rest


def _shape(tensor: dict, name: str) -> tuple[int, ...]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise ProtocolError(f"input '{name}': 'shape' must be a list of non-negative integers, got {shape!r}")
    return tuple(shape)


def decode_infer(body: bytes, header_length: str | None = None) -> InferRequest:
    """Parse an infer request body (JSON, or JSON and binary tensors).

    Raises:
        ProtocolError: malformed JSON, a tensor whose data does not fit its shape and datatype, and so on.
    """
    doc, rest = _json_part(body, header_length)
    tensors = doc.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        raise ProtocolError("the request has no 'inputs' list")
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for tensor in tensors:
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise ProtocolError("each input needs a 'name', a 'shape', a 'datatype' and 'data'")
        name = tensor["name"]
        if name in inputs:
            raise ProtocolError(f"input '{name}' appears twice")
        shape = _shape(tensor, name)
        kind = tensor.get("datatype")
        if kind not in DATATYPES:
            raise ProtocolError(f"input '{name}': datatype {kind!r} is not one of {', '.join(DATATYPES)}")
        dtype = np.dtype(DATATYPES[kind])
        count = int(np.prod(shape, dtype=np.int64))
        params = tensor.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(rest):
                raise ProtocolError(f"input '{name}': binary_data_size {size!r} runs past the body's end")
            if size != count * dtype.itemsize:
                raise ProtocolError(f"input '{name}': {size} bytes of binary data for shape {list(shape)} {kind} "
                                    f"(needs {count * dtype.itemsize})")
            array = np.frombuffer(rest, dtype.newbyteorder("<"), count, offset).reshape(shape)
            offset += size
        else:
            if "data" not in tensor:
                raise ProtocolError(f"input '{name}' has neither 'data' nor a binary_data_size parameter")
            try:
                array = np.asarray(tensor["data"], dtype=dtype)
            except (TypeError, ValueError, OverflowError) as exc:
                raise ProtocolError(f"input '{name}': data are not {kind} values ({exc})") from None
            if array.size != count:
                raise ProtocolError(f"input '{name}': {array.size} values for shape {list(shape)} (needs {count})")
            array = array.reshape(shape)
        inputs[name] = array
    if offset != len(rest):
        raise ProtocolError(f"{len(rest) - offset} bytes of binary data after the last input's")

    parameters = doc.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ProtocolError("'parameters' must be a JSON object")
    timeout = parameters.get("timeout")
    if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0):
        raise ProtocolError(f"the 'timeout' parameter is microseconds as a non-negative integer, got {timeout!r}")
    outputs, binary = [], {}
    for out in doc.get("outputs") or ():
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            raise ProtocolError("each requested output needs a 'name'")
        outputs.append(out["name"])
        out_params = out.get("parameters") or {}
        if "classification" in out_params:
            raise ProtocolError(f"output '{out['name']}': the classification extension is not supported")
        if "binary_data" in out_params:
            binary[out["name"]] = bool(out_params["binary_data"])
    request_id = doc.get("id")
    return InferRequest(str(request_id) if request_id is not None else None, inputs, tuple(outputs), binary,
                        bool(parameters.get("binary_data_output", False)), timeout)


def encode_infer(model: str, version: str, request: InferRequest, names: list[str],
                 arrays: list[np.ndarray], aliases: dict[str, str] | None = None) -> tuple[bytes, int | None]:
    """The response body and, when it carries binary tensors, the length of its JSON part. An output asked for by
    an alias (its tensor name; `aliases` maps it to its name) is answered under the name it was asked for."""
    chosen = request.outputs or tuple(names)
    by_name = dict(zip(names, arrays))
    tensors, blobs = [], []
    for name in chosen:
        array = np.ascontiguousarray(by_name[name] if name in by_name else by_name[(aliases or {})[name]])
        tensor = {"name": name, "datatype": datatype(array.dtype), "shape": list(array.shape)}
        if request.binary.get(name, request.binary_default):
            raw = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            tensor["data"] = array.ravel().tolist()
        tensors.append(tensor)
    doc = {"model_name": model, "model_version": version, "outputs": tensors}
    if request.id is not None:
        doc["id"] = request.id
    head = json.dumps(doc, separators=(",", ":")).encode()
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)
