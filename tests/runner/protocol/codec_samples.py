"""Sample messages covering every table, edge values and the recorded frames, for codec tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from apisix_openai_triton.runner.protocol import messages as m

FRAMES_DIR = Path(__file__).resolve().parents[3].parent / "shared" / "frames"
"""``<repo>/../shared/frames``: golden frames recorded from a real APISIX (beside the clone in CI)."""

LATIN1 = b"caf\xe9".decode("utf-8", "surrogateescape")
"""A header value a client sent in Latin-1: not UTF-8, must still pass through unchanged."""

TO_RUNNER: list[m.ToRunner] = [
    m.PrepareConfRequest([("openai-to-triton", '{"model":"m"}'), ("triton-to-openai", "{}")],
                         key="route#1#ext-plugin-pre-req#3"),
    m.PrepareConfRequest([]),
    m.PrepareConfRequest([("ünïcode", '{"emoji":"\U0001f600"}')], key=""),
    m.HTTPReqCallRequest(
        id=2**32 - 1, conf_token=2**32 - 1, method=14, path="/v1/chat/completions/ü",
        src_ip=bytes(range(16)),
        args=[("a", "1"), ("a", "2"), ("flag", None), ("empty", ""), ("q", LATIN1)],
        headers=[("host", "example.test"), ("x-latin1", LATIN1), ("x-multi", "one"), ("x-multi", "two"),
                 ("x-empty", "")],
    ),
    m.HTTPReqCallRequest(id=0, conf_token=0),
    m.HTTPReqCallRequest(id=1, conf_token=2, method=2, path="/x", src_ip=b"\x7f\x00\x00\x01",
                         headers=[(f"x-h{i}", "v" * i) for i in range(40)]),
    m.ExtraInfoResponse(None),
    m.ExtraInfoResponse(b""),
    m.ExtraInfoResponse(bytes(range(256)) * 40),
    m.HTTPRespCallRequest(id=5, conf_token=6, status=502,
                          headers=[("Content-Type", "application/json"), ("x-latin1", LATIN1)]),
    m.HTTPRespCallRequest(id=0, conf_token=0),
]

TO_GATEWAY: list[m.ToGateway] = [
    *(m.ErrorResponse(code) for code in m.ErrorCode),
    m.PrepareConfResponse(0),
    m.PrepareConfResponse(2**32 - 1),
    m.HTTPReqCallResponse(0),
    m.HTTPReqCallResponse(2**32 - 1),
    m.HTTPReqCallResponse(7, m.Stop()),
    m.HTTPReqCallResponse(8, m.Stop(status=400, headers=[("content-type", "application/json"), ("x", LATIN1)],
                                    body=b'{"error":{}}')),
    m.HTTPReqCallResponse(9, m.Rewrite()),
    m.HTTPReqCallResponse(10, m.Rewrite(
        path="/v2/models/ü/generate", headers=[("content-type", "application/json"), ("x-drop", None)],
        args=[("a6", "1"), ("gone", None)], resp_headers=[("x-runner", LATIN1)], body=b"",
    )),
    m.HTTPReqCallResponse(11, m.Rewrite(body=b"x" * 5001)),
    m.ExtraInfoRequest(m.Var("remote_addr")),
    m.ExtraInfoRequest(m.Var("")),
    m.ExtraInfoRequest(m.Var("http_x_ünïcode")),
    m.ExtraInfoRequest(m.ReqBody()),
    m.ExtraInfoRequest(m.RespBody()),
    m.HTTPRespCallResponse(1),
    m.HTTPRespCallResponse(2, 200, [("content-type", "application/json"), ("x", LATIN1)], b"{}" * 1024),
]


def type_of(msg: object) -> int:
    """The frame type byte of a message."""
    return {
        m.ErrorResponse: 0, m.PrepareConfRequest: 1, m.PrepareConfResponse: 1,
        m.HTTPReqCallRequest: 2, m.HTTPReqCallResponse: 2, m.ExtraInfoRequest: 3, m.ExtraInfoResponse: 3,
        m.HTTPRespCallRequest: 4, m.HTTPRespCallResponse: 4,
    }[type(msg)]


# --- recorded frames -----------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    """One golden frame and the message its manifest entry describes."""

    file: str
    direction: str
    msg_type: int
    frame: bytes
    expected: Any


def _bytes(value: Optional[dict[str, str]]) -> Optional[bytes]:
    if value is None:
        return None
    if "utf8" in value:
        return value["utf8"].encode()
    return bytes.fromhex(value["hex"])


def _entries(items: list[list[Optional[str]]]) -> list[m.Entry]:
    out: list[m.Entry] = []
    for name, value in items:
        assert name is not None
        out.append((name, value))
    return out


def expected_message(decoded: dict[str, Any]) -> Any:
    """The typed message a manifest's ``decoded`` fields stand for."""
    kind = decoded["msg"]
    if kind == "PrepareConf.Req":
        return m.PrepareConfRequest([(n, v) for n, v in decoded["conf"]], decoded.get("key"))
    if kind == "PrepareConf.Resp":
        return m.PrepareConfResponse(decoded["conf_token"])
    if kind == "HTTPReqCall.Req":
        return m.HTTPReqCallRequest(
            id=decoded["id"], conf_token=decoded["conf_token"], method=m.METHODS.index(decoded["method"]),
            path=decoded["path"], src_ip=bytes(decoded["src_ip_raw"]),
            args=_entries(decoded["args"]), headers=_entries(decoded["headers"]),
        )
    if kind == "HTTPReqCall.Resp":
        action: m.Action = None
        if decoded["action"] == "stop":
            stop = decoded["stop"]
            action = m.Stop(stop["status"], _entries(stop["headers"]), _bytes(stop["body"]) or b"")
        elif decoded["action"] == "rewrite":
            rw = decoded["rewrite"]
            action = m.Rewrite(rw["path"], _entries(rw["headers"]), _entries(rw["args"]),
                               _entries(rw["resp_headers"]), _bytes(rw["body"]))
        else:
            assert decoded["action"] is None and decoded["action_type"] == 0
        return m.HTTPReqCallResponse(decoded["id"], action)
    if kind == "ExtraInfo.Req":
        info: m.Info
        if decoded["info"] == "var":
            info = m.Var(decoded["name"])
        elif decoded["info"] == "reqbody":
            info = m.ReqBody()
        else:
            assert decoded["info"] == "respbody", decoded
            info = m.RespBody()
        return m.ExtraInfoRequest(info)
    if kind == "ExtraInfo.Resp":
        return m.ExtraInfoResponse(_bytes(decoded["result"]))
    if kind == "HTTPRespCall.Req":
        return m.HTTPRespCallRequest(decoded["id"], decoded["conf_token"], decoded["status"],
                                     _entries(decoded["headers"]))
    if kind == "HTTPRespCall.Resp":
        return m.HTTPRespCallResponse(decoded["id"], decoded["status"], _entries(decoded["headers"]),
                                      _bytes(decoded["body"]) or b"")
    assert kind == "Err.Resp", kind
    return m.ErrorResponse(m.ErrorCode(decoded["code"]))


def recorded() -> list[Recorded]:
    """Every frame listed in the manifest (empty when the frames folder is absent)."""
    manifest = FRAMES_DIR / "manifest.json"
    if not manifest.is_file():
        return []
    out = []
    for entry in json.loads(manifest.read_text())["frames"]:
        frame = (FRAMES_DIR / entry["file"]).read_bytes()
        out.append(Recorded(entry["file"], entry["direction"], entry["type"], frame,
                            expected_message(entry["decoded"])))
    return out
