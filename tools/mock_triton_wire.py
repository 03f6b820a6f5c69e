"""Triton's HTTP JSON formats: generate and KServe v2 infer requests in, response bodies out.

The generate mapping is the part runners get wrong, so it follows Triton's code rather than its
(provisional) spec: keys are walked in document order; a key naming a model input becomes that
tensor, any other key becomes a request parameter that must be a scalar, and ``parameters`` is an
object whose keys get the same treatment (facts sheet 1.2). An /infer body sent to /generate
therefore fails on ``inputs`` exactly as on a real server.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from .mock_triton_backends import ModelRequest, ModelResponse, TritonError
from .mock_triton_models import ModelSpec, TensorSpec

_INVALID_PARAM = "parameter '{}' has invalid type. It should be either 'int', 'bool', or 'string'."


class _Object(tuple[tuple[str, Any], ...]):
    """A JSON object kept as its key/value pairs: order and duplicate keys both matter here."""


def _pairs(pairs: list[tuple[str, Any]]) -> _Object:
    return _Object(pairs)


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


def parse_generate(body: bytes, model: ModelSpec) -> ModelRequest:
    """A generate / generate_stream body -> what the model receives (or a 400 TritonError)."""
    try:
        document = json.loads(body, object_pairs_hook=_pairs)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TritonError(f"failed to parse the request JSON buffer: {exc}") from None
    if not isinstance(document, _Object):
        raise TritonError("failed to parse the request JSON buffer: expected a JSON object")
    request = ModelRequest()
    for key, value in document:
        if key == "parameters":
            if not isinstance(value, _Object):
                raise TritonError("Expected JSON object for keyword: 'parameters'")
            for inner_key, inner_value in value:
                _map_key(model, request, inner_key, inner_value,
                         "Converting keyword: 'parameters': ")
            continue
        if key == "id":
            if not isinstance(value, str):
                raise TritonError("request 'id' field must be a string")
            request.request_id = value
        _map_key(model, request, key, value, "")
    _check_required(model, request)
    return request


def _map_key(model: ModelSpec, request: ModelRequest, key: str, value: Any, prefix: str) -> None:
    spec = model.input(key)
    if spec is None:
        if value is None or isinstance(value, (list, _Object)):
            raise TritonError(prefix + _INVALID_PARAM.format(key))
        request.parameters[key] = value
        return
    if key in request.inputs:
        raise TritonError(f"input '{key}' already exists in request")
    data = value if isinstance(value, list) else [value]
    for element in data:
        _check_element(spec, element)
    _check_count(model, spec, len(data), [len(data)])
    request.inputs[key] = data


def _check_element(spec: TensorSpec, element: Any) -> None:
    kind = spec.datatype
    if kind == "BYTES":
        ok, what = isinstance(element, str), "non-string as string"
    elif kind == "BOOL":
        ok, what = isinstance(element, bool), "non-boolean as boolean"
    elif kind.startswith("UINT"):
        ok = isinstance(element, int) and not isinstance(element, bool) and element >= 0
        what = "non-unsigned-integer as unsigned-integer"
    elif kind.startswith("INT"):
        ok = isinstance(element, int) and not isinstance(element, bool)
        what = "non-signed-integer as signed-integer"
    else:
        ok = isinstance(element, (int, float)) and not isinstance(element, bool)
        what = "non-double as double"
    if not ok:
        raise TritonError(f"attempt to access JSON {what}")


def _check_count(model: ModelSpec, spec: TensorSpec, count: int, shape: list[int]) -> None:
    fixed = 1
    for dim in spec.dims:
        fixed *= dim if dim > 0 else 1
    variable = any(dim < 0 for dim in spec.dims)
    if (variable and count % fixed) or (not variable and count != fixed):
        raise TritonError(f"unexpected shape for input '{spec.name}' for model '{model.name}'. "
                          f"Expected {_dims(model.full_dims(spec))}, got {_dims(shape)}")


def _dims(dims: list[int]) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


def _check_required(model: ModelSpec, request: ModelRequest) -> None:
    required = [spec.name for spec in model.inputs if not spec.optional]
    if all(name in request.inputs for name in required):
        return
    low, high, got = len(required), len(model.inputs), len(request.inputs)
    expected = f"{low}" if low == high else f"between {low} and {high}"
    rid = request.request_id or "<id_unknown>"
    raise TritonError(f"[request id: {rid}] expected number of inputs {expected} but got {got} "
                      f"inputs for model '{model.name}'")


def parse_infer(body: bytes, model: ModelSpec) -> tuple[ModelRequest, list[str] | None]:
    """A KServe v2 infer body -> the model request and the requested output names (None: all).

    Batch size 1 only: the stand-in answers one prompt per request.
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise TritonError(f"failed to parse the request JSON buffer: {exc}") from None
    if not isinstance(document, dict):
        raise TritonError("failed to parse the request JSON buffer: expected a JSON object")
    request = ModelRequest()
    rid = document.get("id")
    if rid is not None:
        if not isinstance(rid, str):
            raise TritonError("request 'id' field must be a string")
        request.request_id = rid
    params = document.get("parameters", {})
    if not isinstance(params, dict):
        raise TritonError("Expected JSON object for keyword: 'parameters'")
    for key, value in params.items():
        if value is None or isinstance(value, (list, dict)):
            raise TritonError(_INVALID_PARAM.format(key))
        request.parameters[key] = value
    tensors = document.get("inputs")
    if not isinstance(tensors, list):
        raise TritonError("Unable to parse 'inputs'")
    for tensor in tensors:
        _infer_input(model, request, tensor)
    _check_required(model, request)
    return request, _requested_outputs(model, document.get("outputs"))


def _infer_input(model: ModelSpec, request: ModelRequest, tensor: Any) -> None:
    if not isinstance(tensor, dict):
        raise TritonError("Unable to parse 'inputs'")
    name, datatype, shape = tensor.get("name"), tensor.get("datatype"), tensor.get("shape")
    if not isinstance(name, str) or not isinstance(datatype, str):
        raise TritonError("Unable to parse 'inputs': each input needs 'name' and 'datatype'")
    if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise TritonError(f"Unable to parse 'shape' for input '{name}'")
    spec = model.input(name)
    if spec is None:
        raise TritonError(f"unexpected inference input '{name}' for model '{model.name}'")
    if name in request.inputs:
        raise TritonError(f"input '{name}' already exists in request")
    if datatype != spec.datatype:
        raise TritonError(f"inference input '{name}' data-type is '{datatype}', but model "
                          f"'{model.name}' expects '{spec.datatype}'")
    expected = model.full_dims(spec)
    batched = model.max_batch_size > 0
    if (len(shape) != len(expected) or (batched and shape[0] != 1)
            or any(e >= 0 and e != s for e, s in zip(expected[1 if batched else 0:],
                                                     shape[1 if batched else 0:]))):
        raise TritonError(f"unexpected shape for input '{name}' for model '{model.name}'. "
                          f"Expected {_dims(expected)}, got {_dims(shape)}"
                          + ("; mock-triton serves batch size 1 only" if batched else ""))
    data = _flatten(tensor.get("data"), name)
    count = 1
    for dim in shape:
        count *= dim
    if len(data) != count:
        raise TritonError(f"Unable to parse 'data' for input '{name}': shape does not match "
                          "true shape of 'data' field")
    for element in data:
        _check_element(spec, element)
    request.inputs[name] = data


def _flatten(data: Any, name: str) -> list[Any]:
    if not isinstance(data, list):
        raise TritonError(f"Unable to parse 'data' for input '{name}'")
    flat: list[Any] = []
    for item in data:
        flat.extend(_flatten(item, name) if isinstance(item, list) else [item])
    return flat


def _requested_outputs(model: ModelSpec, outputs: Any) -> list[str] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list):
        raise TritonError("Unable to parse 'outputs'")
    names: list[str] = []
    for output in outputs:
        name = output.get("name") if isinstance(output, dict) else None
        if not isinstance(name, str):
            raise TritonError("Unable to parse 'outputs': each output needs a 'name'")
        if model.output(name) is None:
            raise TritonError(f"unexpected inference output '{name}' for model '{model.name}'")
        names.append(name)
    return names


def generate_body(model: ModelSpec, request_id: str | None, response: ModelResponse) -> bytes:
    """One generate response: a flat object; a one-element tensor becomes a bare value."""
    document: dict[str, Any] = {}
    if request_id is not None:
        document["id"] = request_id
    document["model_name"] = model.name
    document["model_version"] = model.version
    for name, data in response.items():
        document[name] = data[0] if len(data) == 1 else data
    return orjson.dumps(document)


def infer_body(model: ModelSpec, request_id: str | None, response: ModelResponse,
               wanted: list[str] | None) -> bytes:
    """The KServe v2 infer response: every (or every requested) output as a typed tensor."""
    outputs = []
    for name, data in response.items():
        spec = model.output(name)
        if spec is None or (wanted is not None and name not in wanted):
            continue
        # One prompt and one beam: every dimension is 1 except the innermost.
        shape = [1] * (len(model.full_dims(spec)) - 1) + [len(data)]
        outputs.append({"name": name, "datatype": spec.datatype, "shape": shape, "data": data})
    document: dict[str, Any] = {}
    if request_id is not None:
        document["id"] = request_id
    document.update(model_name=model.name, model_version=model.version, outputs=outputs)
    return orjson.dumps(document)

