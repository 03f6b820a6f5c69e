"""A small client for the APISIX Admin API's routes: PUT, GET and DELETE by id.

Synchronous on purpose: the CLI sends a handful of requests one after another, and a blocking
client is the simplest thing to test and to read. Each failure the user can fix (the gateway
is not there, the key is wrong, the gateway refuses the object) is its own exception class with
a message saying what to do, and with the exit code the CLI returns for it.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any, Optional

DEFAULT_ADMIN_URL = "http://127.0.0.1:9180"
ROUTES_PATH = "/apisix/admin/routes/"
MAX_RESPONSE_BYTES = 4 << 20


class AdminError(Exception):
    """The Admin API could not do what was asked; ``str()`` is the message for the user."""

    exit_code = 5


class GatewayUnreachable(AdminError):
    """No HTTP answer at all: connection refused, name not found, timeout."""

    exit_code = 3


class AuthRefused(AdminError):
    """401 or 403: the key is missing or wrong, or this address may not use the Admin API."""

    exit_code = 4


class AdminRefused(AdminError):
    """The Admin API answered, but refused (400 with its ``error_msg``, or another status)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def admin_base(url: str) -> str:
    """``url`` without a trailing slash or an ``/apisix/admin`` suffix the user may have added."""
    base = url.rstrip("/")
    if base.endswith("/apisix/admin"):
        base = base[: -len("/apisix/admin")]
    return base


class AdminClient:
    """Routes by id on one Admin API. ``key`` goes in ``X-API-KEY``; ``None`` sends no key."""

    def __init__(self, url: str = DEFAULT_ADMIN_URL, key: Optional[str] = None,
                 timeout: float = 10.0) -> None:
        self.base = admin_base(url)
        self._key = key
        self.timeout = timeout
        # The Admin API is reached directly: a proxy from the environment would see the key.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def route_url(self, route_id: str) -> str:
        return self.base + ROUTES_PATH + route_id

    def put_route(self, route_id: str, body: Mapping[str, Any]) -> int:
        """Create or replace the route; the status says which (201 created, 200 replaced)."""
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        status, _ = self._request("PUT", route_id, data)
        return status

    def get_route(self, route_id: str) -> Optional[dict[str, Any]]:
        """The stored route object, or ``None`` when there is no route with this id."""
        status, answer = self._request("GET", route_id, None, absent_ok=True)
        if status == 404:
            return None
        # APISIX 3 answers {"key", "value", ...}; APISIX 2 wrapped that in "node".
        node = answer.get("node", answer) if isinstance(answer, dict) else None
        value = node.get("value") if isinstance(node, dict) else None
        if not isinstance(value, dict):
            raise AdminRefused(f"the Admin API answered GET {self.route_url(route_id)} without "
                               "a route object; is --admin-url the Admin API?", status)
        return value

    def delete_route(self, route_id: str) -> bool:
        """Delete the route; ``False`` when it was already absent."""
        status, _ = self._request("DELETE", route_id, None, absent_ok=True)
        return status != 404

    def _request(self, method: str, route_id: str, data: Optional[bytes],
                 absent_ok: bool = False) -> tuple[int, Any]:
        url = self.route_url(route_id)
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self._key:
            headers["X-API-KEY"] = self._key
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return response.status, _decode(response.read(MAX_RESPONSE_BYTES))
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read(MAX_RESPONSE_BYTES)
            exc.close()
        except urllib.error.URLError as exc:
            raise GatewayUnreachable(self._unreachable(exc.reason)) from None
        except (TimeoutError, socket.timeout, ConnectionError, OSError) as exc:
            raise GatewayUnreachable(self._unreachable(exc)) from None
        if status == 404 and absent_ok and _looks_like_admin_404(raw):
            return status, None
        raise self._refusal(method, url, status, raw)

    def _unreachable(self, reason: object) -> str:
        if isinstance(reason, (TimeoutError, socket.timeout)):
            why = f"no answer within {self.timeout:g} s"
        elif isinstance(reason, ConnectionRefusedError):
            why = "connection refused"
        elif isinstance(reason, socket.gaierror):
            why = f"host name not found ({reason.strerror})"
        else:
            why = str(reason)
        return (f"cannot reach the APISIX Admin API at {self.base}: {why}. Is APISIX running, "
                "with the Admin API enabled and listening there (deployment.admin.admin_listen, "
                "port 9180 by default)? Set --admin-url or APISIX_ADMIN_URL.")

    def _refusal(self, method: str, url: str, status: int, raw: bytes) -> AdminError:
        detail = _message(raw)
        if status == 401:
            given = "the key given was refused" if self._key else "no key was given"
            return AuthRefused(
                f"the Admin API at {self.base} answered 401 Unauthorized ({given}"
                f"{': ' + detail if detail else ''}). Pass the admin key from the gateway's "
                "config.yaml (deployment.admin.admin_key) with --admin-key or APISIX_ADMIN_KEY.")
        if status == 403:
            return AuthRefused(
                f"the Admin API at {self.base} answered 403 Forbidden"
                f"{' (' + detail + ')' if detail else ''}: this address is not in "
                "deployment.admin.allow_admin, or the key has the viewer role (read only).")
        if status == 404:
            return AdminRefused(
                f"{method} {url} answered 404{' (' + detail + ')' if detail else ''}: is "
                "--admin-url the Admin API (port 9180 by default), not the gateway's proxy "
                "port?", status)
        return AdminRefused(f"the Admin API refused {method} {url} ({status}): "
                            f"{detail or 'no error message'}", status)


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _message(raw: bytes) -> str:
    """The Admin API's own explanation: ``error_msg`` (or ``message``), else the text itself."""
    answer = _decode(raw)
    if isinstance(answer, dict):
        for field in ("error_msg", "message"):
            if isinstance(answer.get(field), str):
                return str(answer[field])
    text = raw.decode("utf-8", "replace").strip()
    return text[:300]


def _looks_like_admin_404(raw: bytes) -> bool:
    """The Admin API's 404 for a missing key (``{"message": "Key not found"}``), not the
    gateway's proxy port (``404 Route Not Found``) nor some other server's page."""
    if not raw.strip():
        return True
    text = _message(raw).lower() if isinstance(_decode(raw), dict) else ""
    return "not found" in text and "route not found" not in text
