"""A small stand-in for Triton's ``triton_python_backend_utils``, for testing the demo model.

Only what a decoupled Python-backend model touches, with the real module's names and the
checks that would make Triton fail the model: tensors must be numpy arrays, nothing may be
sent after a response flagged FINAL. It also records what the model does (the inputs it asked
for, every response and flag it sent) so tests can compare that with config.pbtxt.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import numpy as np

TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1


class TritonModelException(Exception):
    """Raised by a model whose configuration cannot work (Triton then fails to load it)."""


class TritonError:
    """An error attached to a response; the code decides the HTTP status Triton answers."""

    UNKNOWN = 0
    INTERNAL = 1
    NOT_FOUND = 2
    INVALID_ARG = 3
    UNAVAILABLE = 4
    UNSUPPORTED = 5
    ALREADY_EXISTS = 6
    CANCELLED = 7

    def __init__(self, message: str, code: int = INTERNAL) -> None:
        self._message = message
        self._code = code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code


class Tensor:
    def __init__(self, name: str, array: Any) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError("a tensor needs a name")
        if not isinstance(array, np.ndarray):
            raise TypeError(f"tensor '{name}' must be a numpy array, got {type(array).__name__}")
        if array.dtype == np.object_ and not all(isinstance(v, (bytes, str)) for v in array.flat):
            raise TypeError(f"BYTES tensor '{name}' must hold bytes or str")
        self._name = name
        self._array = array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> Any:
        return self._array


class InferenceResponse:
    def __init__(self, output_tensors: Optional[list[Tensor]] = None,
                 error: Optional[TritonError] = None) -> None:
        self._outputs = list(output_tensors or [])
        names = [t.name() for t in self._outputs]
        if len(names) != len(set(names)):
            raise ValueError(f"duplicate output tensors: {names}")
        self._error = error

    def output_tensors(self) -> list[Tensor]:
        return self._outputs

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> Optional[TritonError]:
        return self._error


class ResponseSender:
    """Decoupled response sender: any number of responses, then exactly one FINAL flag."""

    def __init__(self) -> None:
        self.sent: list[tuple[Optional[InferenceResponse], int]] = []
        self.closed = False

    def send(self, response: Optional[InferenceResponse] = None, flags: int = 0) -> None:
        if self.closed:
            raise RuntimeError("response sent after the FINAL flag")
        if response is not None and not isinstance(response, InferenceResponse):
            raise TypeError("send() takes an InferenceResponse")
        if response is None and flags != TRITONSERVER_RESPONSE_COMPLETE_FINAL:
            raise ValueError("an empty send must carry the FINAL flag")
        self.sent.append((response, flags))
        if flags & TRITONSERVER_RESPONSE_COMPLETE_FINAL:
            self.closed = True

    @property
    def responses(self) -> list[InferenceResponse]:
        return [r for r, _ in self.sent if r is not None]


class InferenceRequest:
    def __init__(self, inputs: list[Tensor], parameters: Optional[dict[str, Any]] = None,
                 cancel_after: Optional[int] = None) -> None:
        self._inputs = {t.name(): t for t in inputs}
        self._parameters = json.dumps(parameters or {})
        self._sender = ResponseSender()
        self._cancel_after = cancel_after
        self.asked: set[str] = set()

    def inputs(self) -> list[Tensor]:
        return list(self._inputs.values())

    def parameters(self) -> str:
        return self._parameters

    def get_response_sender(self) -> ResponseSender:
        return self._sender

    def is_cancelled(self) -> bool:
        return self._cancel_after is not None and len(self._sender.sent) >= self._cancel_after


def get_input_tensor_by_name(request: InferenceRequest, name: str) -> Optional[Tensor]:
    request.asked.add(name)
    return {t.name(): t for t in request.inputs()}.get(name)


def using_decoupled_model_transaction_policy(model_config: dict[str, Any]) -> bool:
    return bool(model_config.get("model_transaction_policy", {}).get("decoupled", False))
