"""What would change on the gateway: a stored route against the route the file describes.

The gateway stores more than it was sent: ids and timestamps, and the defaults its schemas fill
in (``priority: 0``, ``hash_on: "vars"``, a plugin's own defaults...). Showing those as changes
would make every diff noisy, so the stored object is first cut down to what the file manages.
Plugins and labels added on the gateway but absent from the file are kept: ``apply`` replaces
the whole route, so it would remove them, and the diff must say so.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from typing import Any, Optional

from .routes import REQUEST_PHASES, RESPONSE_GATEWAY_PLUGIN

SERVER_FIELDS = frozenset({"id", "create_time", "update_time"})
# Values the Admin API fills in when a field is absent (APISIX route and upstream schemas,
# and the ext-plugin-* schema).
GATEWAY_DEFAULTS: Mapping[str, Any] = {
    "priority": 0, "status": 1, "scheme": "http", "pass_host": "pass", "hash_on": "vars",
    "allow_degradation": False,
}
_OWN_GATEWAY_PLUGINS = frozenset(REQUEST_PHASES.values()) | {RESPONSE_GATEWAY_PLUGIN}
_MISSING = object()


def managed_view(stored: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """``stored`` without what the gateway added on its own (see the module docstring)."""
    trimmed = {k: v for k, v in stored.items() if k not in SERVER_FIELDS}
    result = _project(trimmed, desired, ())
    assert isinstance(result, dict)
    return result


def _project(stored: Any, desired: Any, path: tuple[str, ...]) -> Any:
    if isinstance(stored, dict) and isinstance(desired, dict):
        # Inside a plugin the file passes through, the gateway may have added that plugin's
        # defaults, which this tool cannot know: compare only the keys the file sets.
        foreign = len(path) >= 2 and path[0] == "plugins" and path[1] not in _OWN_GATEWAY_PLUGINS
        out = {k: _project(stored[k], v, path + (k,)) for k, v in desired.items() if k in stored}
        for k, v in stored.items():
            if k in desired or foreign:
                continue
            default = GATEWAY_DEFAULTS.get(k, _MISSING)
            if default is not _MISSING and type(default) is type(v) and default == v:
                continue
            out[k] = v
        return out
    if isinstance(stored, list) and isinstance(desired, list) and len(stored) == len(desired):
        return [_project(s, d, path) for s, d in zip(stored, desired)]
    return stored


def _readable(body: Mapping[str, Any]) -> dict[str, Any]:
    """A copy with the runner plugins' conf strings decoded, so a diff shows the changed key."""
    copy: dict[str, Any] = json.loads(json.dumps(body))
    plugins = copy.get("plugins")
    if isinstance(plugins, dict):
        for name in _OWN_GATEWAY_PLUGINS:
            entries = plugins.get(name, {}).get("conf") if isinstance(plugins.get(name), dict) \
                else None
            for entry in entries if isinstance(entries, list) else ():
                if isinstance(entry, dict) and isinstance(entry.get("value"), str):
                    try:
                        entry["value"] = json.loads(entry["value"])
                    except ValueError:
                        pass
    return copy


def route_diff(route_id: str, stored: Optional[Mapping[str, Any]], desired: Mapping[str, Any],
               source: str) -> list[str]:
    """Unified diff lines from the gateway's route to the file's; empty when they agree."""
    after = json.dumps(_readable(desired), indent=2, sort_keys=True, ensure_ascii=False)
    if stored is None:
        before_lines: list[str] = []
        label = f"gateway: routes/{route_id} (absent)"
    else:
        before = json.dumps(_readable(managed_view(stored, desired)), indent=2, sort_keys=True,
                            ensure_ascii=False)
        if before == after:
            return []
        before_lines = before.splitlines()
        label = f"gateway: routes/{route_id}"
    return list(difflib.unified_diff(before_lines, after.splitlines(), fromfile=label,
                                     tofile=f"{source}: routes/{route_id}", lineterm=""))
