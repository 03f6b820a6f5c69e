"""A fast asyncio external plugin runner for Apache APISIX, and its plugin API."""

from .http import Args, Headers
from .plugin import ConfError, Plugin, Request, Response, Stop

__all__ = ["Args", "ConfError", "Headers", "Plugin", "Request", "Response", "Stop"]
