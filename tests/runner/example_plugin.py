"""The README's example plugin: reject requests that lack the route's API key."""

from __future__ import annotations

import hmac
from typing import Optional

from apisix_openai_triton.runner import ConfError, Plugin, Request, Stop


class ApiKeyCheck(Plugin[bytes]):
    """Answers 401 unless the request's ``x-api-key`` header matches the route's key."""

    name = "api-key-check"
    conf_schema = {"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"]}

    def parse_conf(self, raw: str) -> bytes:
        conf = super().parse_conf(raw)  # JSON, parsed once per route conf
        if not isinstance(conf, dict) or not isinstance(conf.get("key"), str) or not conf["key"]:
            raise ConfError('expected {"key": "<non-empty string>"}')
        return conf["key"].encode()

    async def request_filter(self, conf: bytes, request: Request) -> Optional[Stop]:
        given = request.headers.get("x-api-key", "").encode()
        if not hmac.compare_digest(given, conf):
            return Stop.json(401, {"error": {"message": "invalid API key", "type": "auth_error"}})
        del request.headers["x-api-key"]  # do not leak the key upstream
        return None
