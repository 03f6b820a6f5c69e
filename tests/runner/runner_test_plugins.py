"""Small plugins that exercise one runner behaviour each (used by the tests/runner suite)."""

from __future__ import annotations

import asyncio
from typing import Any, Optional

from apisix_openai_triton.runner import Plugin, Request, Response, Stop


class Noop(Plugin[Any]):
    name = "noop"

    async def request_filter(self, conf: Any, request: Request) -> Optional[Stop]:
        return None


class Halt(Plugin[Any]):
    """Stops with the conf's status, headers (list of pairs) and body."""

    name = "halt"

    async def request_filter(self, conf: Any, request: Request) -> Optional[Stop]:
        return Stop(conf.get("status", 200), [tuple(h) for h in conf.get("headers", [])],
                    conf.get("body", ""))


class Edit(Plugin[Any]):
    """Applies the conf's edits: path, set/delete headers, set/add/delete args, body, resp headers."""

    name = "edit"

    async def request_filter(self, conf: Any, request: Request) -> Optional[Stop]:
        if "path" in conf:
            request.path = conf["path"]
        for name, value in conf.get("set_headers", []):
            request.headers[name] = value
        for name in conf.get("del_headers", []):
            request.headers.delete(name)
        for name, value in conf.get("set_args", []):
            request.args[name] = value
        for name, value in conf.get("add_args", []):
            request.args.add(name, value)
        for name in conf.get("del_args", []):
            request.args.delete(name)
        if "body" in conf:
            request.set_body(conf["body"])
        for name, value in conf.get("resp_headers", []):
            request.resp_headers.add(name, value)
        return None


class Inspect(Plugin[Any]):
    """Reads the conf's vars (and the body if asked) through ExtraInfo; reports them in headers."""

    name = "inspect"

    async def request_filter(self, conf: Any, request: Request) -> Optional[Stop]:
        for var in conf.get("vars", []):
            value = await request.var(var)
            request.headers[f"x-var-{var}"] = "<absent>" if value is None else value
        if conf.get("body"):
            body = await request.body()
            request.headers["x-body-len"] = str(len(body))
            if body:
                request.set_body(body.upper())
        return None


class Prefetcher(Plugin[Any]):
    """Declares what it needs, so the runner asks for all of it before the filter runs."""

    name = "prefetcher"
    prefetch_body = True
    prefetch_vars = ("remote_addr", "http_x_a", "no_such_var")

    async def request_filter(self, conf: Any, request: Request) -> Optional[Stop]:
        request.headers["x-seen"] = "|".join([
            await request.var("remote_addr") or "-",
            await request.var("http_x_a") or "-",
            await request.var("no_such_var") or "-",
            (await request.body()).decode(),
        ])
        return None


class Boom(Plugin[Any]):
    name = "boom"

    async def request_filter(self, conf: Any, request: Request) -> Optional[Stop]:
        raise RuntimeError("boom in a plugin")

    async def response_filter(self, conf: Any, response: Response) -> None:
        raise RuntimeError("boom in a response plugin")


class Huge(Plugin[Any]):
    """An answer over the 16 MiB frame limit."""

    name = "huge"

    async def request_filter(self, conf: Any, request: Request) -> Optional[Stop]:
        return Stop(200, (), b"x" * (1 << 24))


class Strict(Plugin[Any]):
    """Refuses any conf without ``ok: true``."""

    name = "strict"

    def parse_conf(self, raw: str) -> Any:
        conf = super().parse_conf(raw)
        if not isinstance(conf, dict) or conf.get("ok") is not True:
            from apisix_openai_triton.runner import ConfError
            raise ConfError("ok must be true")
        return conf

    async def request_filter(self, conf: Any, request: Request) -> Optional[Stop]:
        return None


class Mirror(Plugin[Any]):
    """Each answer depends on its own input: ``x-out`` = ``x-in`` + path (concurrency test)."""

    name = "mirror"

    async def request_filter(self, conf: Any, request: Request) -> Optional[Stop]:
        request.headers["x-out"] = f"{request.headers.get('x-in')}@{request.path}"
        return None


class Gate(Plugin[Any]):
    """Signals ``entered``, then waits on ``release`` before finishing; records a cancellation.

    Create one per test: ``Gate()`` makes fresh events in the running loop.
    """

    name = "gate"

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def request_filter(self, conf: Any, request: Request) -> Optional[Stop]:
        self.entered.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        request.headers["x-gate"] = "passed"
        return None


class Reshape(Plugin[Any]):
    """Response phase: reads a var and the upstream body, replaces body, headers and status."""

    name = "reshape"
    prefetch_vars = ("http_x_req",)

    async def response_filter(self, conf: Any, response: Response) -> None:
        body = await response.body()
        seen = await response.var("http_x_req")
        response.headers.clear()
        response.headers["content-type"] = "application/json"
        response.headers["x-seen"] = seen or "-"
        response.set_body(b'{"wrapped":' + body + b"}")
        if conf and conf.get("status"):
            response.status = conf["status"]
