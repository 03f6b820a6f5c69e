"""A reference A6 codec on the ``flatbuffers`` runtime, independent of ours.

Builders use ``flatbuffers.Builder`` calls and readers use ``flatbuffers.table.Table``, with the
field ids written out from PROTOCOL.md (vtable slot of field ``i`` = ``4 + 2 * i``). The tests
check our codec against this one in both directions, and bench/codec_bench.py measures against
it. Not collected by pytest (no ``test_`` prefix); conftest.py makes it importable.
"""

from __future__ import annotations

from typing import Any, Optional

import flatbuffers
from flatbuffers import encode
from flatbuffers import number_types as N
from flatbuffers.table import Table

from apisix_openai_triton.runner.protocol import messages as m

HTTP = "surrogateescape"


# --- building ------------------------------------------------------------------------------


def _string(b: flatbuffers.Builder, text: str) -> int:
    return int(b.CreateString(text, "utf-8", HTTP))


def _entries(b: flatbuffers.Builder, entries: list[m.Entry]) -> int:
    tables = []
    for name, value in entries:
        name_off = _string(b, name)
        value_off = _string(b, value) if value is not None else None
        b.StartObject(2)
        b.PrependUOffsetTRelativeSlot(0, name_off, 0)
        if value_off is not None:
            b.PrependUOffsetTRelativeSlot(1, value_off, 0)
        tables.append(b.EndObject())
    b.StartVector(4, len(tables), 4)
    for table in reversed(tables):
        b.PrependUOffsetTRelative(table)
    return int(b.EndVector())


def _finish(b: flatbuffers.Builder, root: int) -> bytes:
    b.Finish(root)
    return bytes(b.Output())


def build_to_runner(msg: m.ToRunner) -> bytes:
    """The payload of a gateway -> runner message, built with the ``flatbuffers`` Builder."""
    b = flatbuffers.Builder(256)
    if isinstance(msg, m.PrepareConfRequest):
        conf = _entries(b, list(msg.conf))
        key = _string(b, msg.key) if msg.key is not None else None
        b.StartObject(2)
        b.PrependUOffsetTRelativeSlot(0, conf, 0)
        if key is not None:
            b.PrependUOffsetTRelativeSlot(1, key, 0)
    elif isinstance(msg, m.HTTPReqCallRequest):
        src_ip = b.CreateByteVector(msg.src_ip)
        path = _string(b, msg.path)
        args = _entries(b, msg.args)
        headers = _entries(b, msg.headers)
        b.StartObject(7)
        b.PrependUint32Slot(0, msg.id, 0)
        b.PrependUOffsetTRelativeSlot(1, src_ip, 0)
        b.PrependUint8Slot(2, msg.method, 0)
        b.PrependUOffsetTRelativeSlot(3, path, 0)
        b.PrependUOffsetTRelativeSlot(4, args, 0)
        b.PrependUOffsetTRelativeSlot(5, headers, 0)
        b.PrependUint32Slot(6, msg.conf_token, 0)
    elif isinstance(msg, m.ExtraInfoResponse):
        result = b.CreateByteVector(msg.result) if msg.result is not None else None
        b.StartObject(1)
        if result is not None:
            b.PrependUOffsetTRelativeSlot(0, result, 0)
    else:
        headers = _entries(b, msg.headers)
        b.StartObject(4)
        b.PrependUint32Slot(0, msg.id, 0)
        b.PrependUint16Slot(1, msg.status, 0)
        b.PrependUOffsetTRelativeSlot(2, headers, 0)
        b.PrependUint32Slot(3, msg.conf_token, 0)
    return _finish(b, b.EndObject())


def _action(b: flatbuffers.Builder, action: m.Stop | m.Rewrite) -> int:
    if isinstance(action, m.Stop):
        headers = _entries(b, action.headers)
        body = b.CreateByteVector(action.body) if action.body else None
        b.StartObject(3)
        b.PrependUint16Slot(0, action.status, 0)
        b.PrependUOffsetTRelativeSlot(1, headers, 0)
        if body is not None:
            b.PrependUOffsetTRelativeSlot(2, body, 0)
        return int(b.EndObject())
    path = _string(b, action.path) if action.path is not None else None
    lists = [_entries(b, action.headers), _entries(b, action.args), _entries(b, action.resp_headers)]
    body = b.CreateByteVector(action.body) if action.body is not None else None
    b.StartObject(5)
    if path is not None:
        b.PrependUOffsetTRelativeSlot(0, path, 0)
    for field_id, vector in enumerate(lists, 1):
        b.PrependUOffsetTRelativeSlot(field_id, vector, 0)
    if body is not None:
        b.PrependUOffsetTRelativeSlot(4, body, 0)
    return int(b.EndObject())


def build_to_gateway(msg: m.ToGateway) -> bytes:
    """The payload of a runner -> gateway message, built with the ``flatbuffers`` Builder."""
    b = flatbuffers.Builder(256)
    if isinstance(msg, m.ErrorResponse):
        b.StartObject(1)
        b.PrependUint8Slot(0, int(msg.code), 0)
    elif isinstance(msg, m.PrepareConfResponse):
        b.StartObject(1)
        b.PrependUint32Slot(0, msg.conf_token, 0)
    elif isinstance(msg, m.HTTPReqCallResponse):
        action = _action(b, msg.action) if msg.action is not None else None
        b.StartObject(3)
        b.PrependUint32Slot(0, msg.id, 0)
        if action is not None:
            b.PrependUint8Slot(1, 1 if isinstance(msg.action, m.Stop) else 2, 0)
            b.PrependUOffsetTRelativeSlot(2, action, 0)
    elif isinstance(msg, m.ExtraInfoRequest):
        if isinstance(msg.info, m.Var):
            name = _string(b, msg.info.name)
            b.StartObject(1)
            b.PrependUOffsetTRelativeSlot(0, name, 0)
            info_type = 1
        else:
            b.StartObject(0)
            info_type = 2 if isinstance(msg.info, m.ReqBody) else 3
        info = b.EndObject()
        b.StartObject(2)
        b.PrependUint8Slot(0, info_type, 0)
        b.PrependUOffsetTRelativeSlot(1, info, 0)
    else:
        headers = _entries(b, msg.headers)
        body = b.CreateByteVector(msg.body) if msg.body else None
        b.StartObject(4)
        b.PrependUint32Slot(0, msg.id, 0)
        b.PrependUint16Slot(1, msg.status, 0)
        b.PrependUOffsetTRelativeSlot(2, headers, 0)
        if body is not None:
            b.PrependUOffsetTRelativeSlot(3, body, 0)
    return _finish(b, b.EndObject())


# --- reading -------------------------------------------------------------------------------


def _root(buf: bytes) -> Table:
    return Table(buf, encode.Get(N.UOffsetTFlags.packer_type, buf, 0))


def _slot(t: Table, field_id: int) -> int:
    return int(t.Offset(4 + 2 * field_id))


def _scalar(t: Table, field_id: int, flags: Any) -> int:
    o = _slot(t, field_id)
    return int(t.Get(flags, t.Pos + o)) if o else 0


def _str(t: Table, field_id: int, errors: str = HTTP) -> Optional[str]:
    o = _slot(t, field_id)
    return bytes(t.String(t.Pos + o)).decode("utf-8", errors) if o else None


def _bytes(t: Table, field_id: int) -> Optional[bytes]:
    o = _slot(t, field_id)
    if not o:
        return None
    start = t.Vector(o)
    return bytes(t.Bytes[start:start + t.VectorLen(o)])


def _table(t: Table, field_id: int) -> Optional[Table]:
    o = _slot(t, field_id)
    return Table(t.Bytes, t.Indirect(t.Pos + o)) if o else None


def _entries_of(t: Table, field_id: int, errors: str = HTTP) -> list[m.Entry]:
    o = _slot(t, field_id)
    if not o:
        return []
    start = t.Vector(o)
    out: list[m.Entry] = []
    for j in range(t.VectorLen(o)):
        entry = Table(t.Bytes, t.Indirect(start + 4 * j))
        name = _str(entry, 0, errors)
        assert name is not None
        out.append((name, _str(entry, 1, errors)))
    return out


def read_http_req_call_req(buf: bytes) -> m.HTTPReqCallRequest:
    """The hand-written reader a ``flatbuffers`` user would write for the hot message."""
    t = _root(buf)
    return m.HTTPReqCallRequest(
        id=_scalar(t, 0, N.Uint32Flags),
        conf_token=_scalar(t, 6, N.Uint32Flags),
        method=_scalar(t, 2, N.Uint8Flags),
        path=_str(t, 3) or "",
        src_ip=_bytes(t, 1) or b"",
        args=_entries_of(t, 4),
        headers=_entries_of(t, 5),
    )


def read_to_runner(msg_type: int, buf: bytes) -> m.ToRunner:
    """Decode a gateway -> runner payload with ``flatbuffers.table.Table``."""
    t = _root(buf)
    if msg_type == 1:
        conf = []
        for name, value in _entries_of(t, 0, "strict"):
            assert value is not None
            conf.append((name, value))
        return m.PrepareConfRequest(conf=conf, key=_str(t, 1, "strict"))
    if msg_type == 2:
        return read_http_req_call_req(buf)
    if msg_type == 3:
        return m.ExtraInfoResponse(result=_bytes(t, 0))
    assert msg_type == 4
    return m.HTTPRespCallRequest(
        id=_scalar(t, 0, N.Uint32Flags),
        status=_scalar(t, 1, N.Uint16Flags),
        headers=_entries_of(t, 2),
        conf_token=_scalar(t, 3, N.Uint32Flags),
    )


def read_to_gateway(msg_type: int, buf: bytes) -> m.ToGateway:
    """Decode a runner -> gateway payload with ``flatbuffers.table.Table``."""
    t = _root(buf)
    if msg_type == 0:
        return m.ErrorResponse(m.ErrorCode(_scalar(t, 0, N.Uint8Flags)))
    if msg_type == 1:
        return m.PrepareConfResponse(_scalar(t, 0, N.Uint32Flags))
    if msg_type == 2:
        action_type = _scalar(t, 1, N.Uint8Flags)
        msg_id = _scalar(t, 0, N.Uint32Flags)
        if action_type == 0:
            return m.HTTPReqCallResponse(msg_id)
        a = _table(t, 2)
        assert a is not None
        if action_type == 1:
            return m.HTTPReqCallResponse(msg_id, m.Stop(
                status=_scalar(a, 0, N.Uint16Flags), headers=_entries_of(a, 1), body=_bytes(a, 2) or b"",
            ))
        assert action_type == 2
        return m.HTTPReqCallResponse(msg_id, m.Rewrite(
            path=_str(a, 0), headers=_entries_of(a, 1), args=_entries_of(a, 2),
            resp_headers=_entries_of(a, 3), body=_bytes(a, 4),
        ))
    if msg_type == 3:
        info_type = _scalar(t, 0, N.Uint8Flags)
        info = _table(t, 1)
        assert info is not None
        if info_type == 1:
            name = _str(info, 0, "strict")
            assert name is not None
            return m.ExtraInfoRequest(m.Var(name))
        assert info_type in (2, 3)
        return m.ExtraInfoRequest(m.ReqBody() if info_type == 2 else m.RespBody())
    assert msg_type == 4
    return m.HTTPRespCallResponse(
        id=_scalar(t, 0, N.Uint32Flags),
        status=_scalar(t, 1, N.Uint16Flags),
        headers=_entries_of(t, 2),
        body=_bytes(t, 3) or b"",
    )
