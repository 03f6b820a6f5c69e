"""The runner's own settings: defaults, then the config file, then the environment, then the CLI.

One dataclass holds the result; ``resolve`` layers the sources. The config file is small and
strict: an unknown key is an error naming the file and line, because a misspelt key silently
ignored is a setting the operator believes is applied.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import yaml

from .logs import parse_level
from .metrics_http import parse_host_port
from .workers import resolve_workers

ENV_LISTEN = "APISIX_LISTEN_ADDRESS"
ENV_EXPIRE = "APISIX_CONF_EXPIRE_TIME"
ENV_CONFIG = "APISIX_OPENAI_TRITON_CONFIG"


class ConfigError(Exception):
    """A setting that cannot be used; the message names where it came from."""


@dataclass(frozen=True)
class RunnerConfig:
    """Everything ``run`` needs. Field names match the config-file keys."""

    listen: Optional[str] = None
    socket_mode: int = 0o766
    log_level: str = "warning"
    log_file: Optional[str] = None
    plugins: tuple[str, ...] = ()
    read_timeout: float = 60.0
    uvloop: bool = True
    log_bodies: bool = False
    conf_expire_time: float = 3600.0
    shutdown_grace: float = 0.8
    #: worker processes (``run --workers N|auto``); 1 serves in the starting process, no fork
    workers: int = 1
    #: ``HOST:PORT`` of the Prometheus endpoint; ``None`` (the default) turns metrics off
    metrics_listen: Optional[str] = None
    #: where the file settings came from (``None``: built-in defaults only)
    config_file: Optional[str] = field(default=None, compare=False)


def parse_listen(value: str) -> str:
    """``unix:/path`` or ``/path`` -> ``/path`` (the gateway's variable carries the prefix)."""
    path = value.strip()
    if path.startswith("unix:"):
        path = path[len("unix:"):]
    if not path:
        raise ValueError("empty socket address")
    if ":" in path.split("/", 1)[0]:
        raise ValueError(f"only unix: socket addresses are supported, got {value!r}")
    return path


def parse_mode(value: object) -> int:
    """A permission mode: an octal string (``"0766"``, ``"0o766"``) or a YAML octal integer."""
    if isinstance(value, bool):
        raise ValueError(f"socket mode must be octal like \"0766\", got {value!r}")
    if isinstance(value, int):
        mode = value
    elif isinstance(value, str):
        text = value.strip().lower().removeprefix("0o")
        try:
            mode = int(text, 8)
        except ValueError:
            raise ValueError(f"socket mode must be octal like \"0766\", got {value!r}") from None
    else:
        raise ValueError(f"socket mode must be octal like \"0766\", got {value!r}")
    if not 0 <= mode <= 0o777:
        raise ValueError(f"socket mode {value!r} is out of range (write it quoted in octal: \"0766\")")
    return mode


def _positive_float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a number of seconds, got {value!r}")
    number = float(value)
    if not number > 0:
        raise ValueError(f"expected a positive number of seconds, got {value!r}")
    return number


def _level(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a log level name, got {value!r}")
    parse_level(value)
    return value


def _optional_str(value: object) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value or None
    raise ValueError(f"expected a string, got {value!r}")


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _specs(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of \"module:attr\" strings, got {value!r}")
    return tuple(value)


def _metrics_listen(value: object) -> Optional[str]:
    text = _optional_str(value)
    if text is not None:
        parse_host_port(text)
    return text


def _listen(value: object) -> Optional[str]:
    text = _optional_str(value)
    return None if text is None else parse_listen(text)


FILE_KEYS: dict[str, Callable[[object], Any]] = {
    "listen": _listen,
    "socket_mode": parse_mode,
    "log_level": _level,
    "log_file": _optional_str,
    "plugins": _specs,
    "read_timeout": _positive_float,
    "uvloop": _bool,
    "log_bodies": _bool,
    "workers": resolve_workers,
    "metrics_listen": _metrics_listen,
}
"""Config-file key -> validator returning the ``RunnerConfig`` value."""


def load_file(path: str) -> dict[str, Any]:
    """Read and validate a config file; raises ``ConfigError`` naming the file and line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict) or not isinstance(root, yaml.MappingNode):
        raise ConfigError(f"{path}: the config file must be a mapping of keys to values")
    lines = {
        str(key.value): key.start_mark.line + 1 for key, _ in root.value if isinstance(key, yaml.ScalarNode)
    }
    values: dict[str, Any] = {}
    for key, raw in data.items():
        where = f"{path}:{lines.get(str(key), '?')}"
        validate = FILE_KEYS.get(str(key))
        if validate is None:
            known = ", ".join(FILE_KEYS)
            raise ConfigError(f"{where}: unknown key {key!r} (known keys: {known})")
        try:
            values[str(key)] = validate(raw)
        except ValueError as exc:
            raise ConfigError(f"{where}: {key}: {exc}") from None
    return values


def find_config_file(cli_path: Optional[str], env: Mapping[str, str]) -> Optional[str]:
    """``--config``, else ``$APISIX_OPENAI_TRITON_CONFIG``, else none (built-in defaults).

    There is deliberately no lookup in the working directory: the gateway starts the runner in
    its own directory, where ``conf/config.yaml`` is the gateway's config file, not ours.
    """
    return cli_path or env.get(ENV_CONFIG) or None


def resolve(
    cli: Mapping[str, Any],
    env: Optional[Mapping[str, str]] = None,
) -> RunnerConfig:
    """Layer defaults < file < environment < CLI. ``cli`` holds only the flags given.

    ``plugins`` accumulate instead: the file's specs, then the CLI's (a later spec wins a
    name clash, see the registry).
    """
    env = os.environ if env is None else env
    config = RunnerConfig()
    path = find_config_file(cli.get("config"), env)
    if path is not None:
        config = replace(config, config_file=path, **load_file(path))
    if env.get(ENV_LISTEN):
        try:
            config = replace(config, listen=parse_listen(env[ENV_LISTEN]))
        except ValueError as exc:
            raise ConfigError(f"{ENV_LISTEN}: {exc}") from None
    if env.get(ENV_EXPIRE):
        try:
            config = replace(config, conf_expire_time=_positive_float(env[ENV_EXPIRE]))
        except ValueError as exc:
            raise ConfigError(f"{ENV_EXPIRE}: {exc}") from None
    overrides = {k: v for k, v in cli.items() if v is not None and k != "config"}
    if "plugins" in overrides:
        overrides["plugins"] = config.plugins + tuple(overrides["plugins"])
    for key, value in overrides.items():
        validate = FILE_KEYS.get(key)
        try:
            overrides[key] = validate(value) if validate is not None else value
        except ValueError as exc:
            raise ConfigError(f"--{key.replace('_', '-')}: {exc}") from None
    return replace(config, **overrides)
