"""Coverage-guided fuzzing with atheris, for longer runs outside CI.

Two targets, each with the property the test suite checks on random input:

- ``frames``: bytes through ``FrameDecoder`` and ``decode_to_runner``, every lazily decoded field
  read; the only exception allowed is ``ProtocolError``.
- ``request``: bytes as the body of a chat or completions request through the request plugin's
  pure transform; the only exception allowed is ``OpenAIError`` with a 4xx status.

atheris is not a project dependency (it is not built for every Python); install it beside:

    pip install --target /tmp/atheris-lib atheris
    PYTHONPATH=/tmp/atheris-lib python bench/fuzz_atheris.py frames -atheris_runs=2000000
    PYTHONPATH=/tmp/atheris-lib python bench/fuzz_atheris.py request -max_total_time=600

Arguments after the target go to libFuzzer (``-runs``, ``-max_total_time``, a corpus folder...).
"""

from __future__ import annotations

import json
import sys

import atheris

with atheris.instrument_imports():
    from apisix_openai_triton.plugins.errors import OpenAIError
    from apisix_openai_triton.plugins.request_conf import parse_request_conf
    from apisix_openai_triton.plugins.request_transform import transform
    from apisix_openai_triton.runner.protocol.codec import decode_to_runner
    from apisix_openai_triton.runner.protocol.framing import FrameDecoder, ProtocolError

_FIELDS = ("id", "conf_token", "method", "path", "src_ip", "args", "headers", "status", "conf",
           "key", "result")
_CONF = parse_request_conf(json.dumps({"model": "m", "template": "llama3"}))


def fuzz_frames(data: bytes) -> None:
    decoder = FrameDecoder()
    decoder.feed(data)
    try:
        while True:
            frame = decoder.next_frame()
            if frame is None:
                return
            msg = decode_to_runner(frame[0], frame[1], True)
            for name in _FIELDS:
                getattr(msg, name, None)
    except ProtocolError:
        return


def fuzz_request(data: bytes) -> None:
    endpoint = "chat" if not data or data[0] & 1 else "completions"
    try:
        transform(_CONF, endpoint, data[1:])
    except OpenAIError as exc:
        if not 400 <= exc.status < 500:
            raise AssertionError(f"status {exc.status} for a client's body") from None


def main() -> None:
    targets = {"frames": fuzz_frames, "request": fuzz_request}
    if len(sys.argv) < 2 or sys.argv[1] not in targets:
        sys.exit(f"usage: {sys.argv[0]} frames|request [libFuzzer flags]")
    target = targets[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
