"""Confs shared between worker processes: an append-only log each worker reads on a miss.

The gateway sends PrepareConf on one connection and uses the token on others, which may land
on another worker. Each worker appends every token it mints (token, worker index, time, key,
raw conf entries) to one file in the runner's private directory before it answers, so the token
is in the log before the gateway can use it. A worker that meets a token it does not hold reads
the records added since its last read, parses that conf with its own plugins (once per worker)
and serves the call: the hot path (a token the worker holds) never touches the file, and no
process ever waits for another.

Records are ``<u32 length><JSON [token, index, writer id, time, key, [[name, value], ...]]>``, each written
by one ``write`` on an ``O_APPEND`` descriptor, so records never interleave; a reader that finds
a record still being written stops before it and reads it next time.

Expiry: a record older than the conf store's TTL is ignored (the gateway re-sends PrepareConf
long before that). The file is not compacted: it grows by one record per PrepareConf that
mints a token (a few hundred bytes; the gateway sends one per route conf per worker and per
hour) and is deleted with the directory when the runner stops.
"""

from __future__ import annotations

import logging
import os
import secrets
import struct
import time
from collections.abc import Callable
from typing import Optional

import orjson

from .conf_store import RawConf

log = logging.getLogger("apisix_openai_triton.runner.conf")

FILE_NAME = "confs.log"
_HEAD = struct.Struct("<I")

Record = tuple[float, RawConf, Optional[str]]


class SharedConfLog:
    """This worker's view of the shared log: appends its own tokens, finds the others'."""

    def __init__(self, directory: str, *, index: int, ttl: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = os.path.join(directory, FILE_NAME)
        self.index = index
        self.ttl = ttl
        self.clock = clock
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._offset = 0
        self._writer = secrets.randbits(63)  # tells this log's own records from others'
        #: token -> record, for records read but not yet asked for (other workers' tokens)
        self._known: dict[int, Record] = {}
        #: the last token each worker index appended (a replacement worker continues after it)
        self.last_token: dict[int, int] = {}

    def close(self) -> None:
        os.close(self._fd)

    def append(self, token: int, raw: RawConf, key: Optional[str]) -> None:
        """Record a token this worker minted (the conf store's ``on_prepare`` hook)."""
        body = orjson.dumps([token, self.index, self._writer, self.clock(), key, [list(e) for e in raw]])
        os.write(self._fd, _HEAD.pack(len(body)) + body)

    async def lookup(self, token: int) -> Optional[tuple[RawConf, Optional[str]]]:
        """The raw conf and key of another worker's ``token`` (the store's ``on_miss`` hook)."""
        record = self._known.pop(token, None)
        if record is None:
            self.read_new()
            record = self._known.pop(token, None)
        if record is None:
            return None
        stamp, raw, key = record
        if self.clock() - stamp > self.ttl:
            return None
        return raw, key

    def read_new(self) -> int:
        """Read the records appended since the last read; returns how many were complete."""
        size = os.fstat(self._fd).st_size
        found = 0
        if self._offset < size:
            data = os.pread(self._fd, size - self._offset, self._offset)
            pos = 0
            while pos + 4 <= len(data):
                end = pos + 4 + _HEAD.unpack_from(data, pos)[0]
                if end > len(data):
                    break  # a record still being written: read it next time
                self._record(data[pos + 4:end])
                found += 1
                pos = end
            self._offset += pos
        self._expire()
        return found

    def _record(self, body: bytes) -> None:
        try:
            token, index, writer, stamp, key, entries = orjson.loads(body)
            raw: RawConf = tuple((str(name), str(value)) for name, value in entries)
            record: Record = (float(stamp), raw, None if key is None else str(key))
            self.last_token[int(index)] = int(token)
            if writer != self._writer:  # a predecessor at this index counts as another worker
                self._known[int(token)] = record
        except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
            log.error("skipping a corrupt record in the shared conf log %s: %s", self.path, exc)

    def _expire(self) -> None:
        limit = self.clock() - self.ttl
        stale = [token for token, (stamp, _, _) in self._known.items() if stamp < limit]
        for token in stale:
            del self._known[token]
