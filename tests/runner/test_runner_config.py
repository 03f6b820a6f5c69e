"""Runner settings: precedence CLI > env > file > defaults, and strict validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from apisix_openai_triton.runner.config import ConfigError, parse_listen, parse_mode, resolve


def test_defaults_without_file_env_or_flags(tmp_path: Path) -> None:
    config = resolve({}, env={})
    assert config.listen is None and config.socket_mode == 0o766 and config.read_timeout == 60.0
    assert config.conf_expire_time == 3600.0 and config.log_level == "warning"
    assert config.config_file is None and config.uvloop and not config.log_bodies


def test_precedence_cli_over_env_over_file(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("listen: unix:/file.sock\nread_timeout: 5\nsocket_mode: '0700'\nplugins: ['a:B']\n")
    env = {"APISIX_LISTEN_ADDRESS": "unix:/env.sock", "APISIX_CONF_EXPIRE_TIME": "60",
           "APISIX_OPENAI_TRITON_CONFIG": str(file)}
    config = resolve({"read_timeout": 7.0, "plugins": ["c:D"]}, env=env)
    assert config.listen == "/env.sock"
    assert config.read_timeout == 7.0 and config.socket_mode == 0o700
    assert config.conf_expire_time == 60.0
    assert config.plugins == ("a:B", "c:D") and config.config_file == str(file)
    assert resolve({"listen": "/cli.sock"}, env=env).listen == "/cli.sock"


@pytest.mark.parametrize("text, message", [
    ("socket_mode: 766\n", "out of range"),
    ("read_timeout: -1\n", "positive"),
    ("log_level: loud\n", "unknown log level"),
    ("plugins: a:B\n", "list"),
    ("- a\n", "mapping"),
    ("listen: 'tcp:1.2.3.4:80'\n", "only unix"),
])
def test_bad_values_name_the_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    file = tmp_path / "c.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        resolve({"config": str(file)}, env={})
    assert str(file) in str(info.value)


def test_bad_env_values_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="APISIX_CONF_EXPIRE_TIME"):
        resolve({}, env={"APISIX_CONF_EXPIRE_TIME": "soon"})
    with pytest.raises(ConfigError, match="APISIX_LISTEN_ADDRESS"):
        resolve({}, env={"APISIX_LISTEN_ADDRESS": "unix:"})
    with pytest.raises(ConfigError, match="cannot read"):
        resolve({}, env={"APISIX_OPENAI_TRITON_CONFIG": str(tmp_path / "missing.yaml")})


def test_socket_mode_spellings() -> None:
    assert parse_mode("0766") == parse_mode("0o766") == parse_mode(0o766) == 0o766
    with pytest.raises(ValueError):
        parse_mode("rwx")
    with pytest.raises(ValueError):
        parse_mode(True)


def test_listen_spellings() -> None:
    assert parse_listen("unix:/a/b.sock") == parse_listen("/a/b.sock") == "/a/b.sock"


def test_gateway_config_in_working_directory_is_never_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """APISIX starts the runner in its own directory, where conf/config.yaml is APISIX's."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text("apisix:\n  node_listen: 9080\n")
    config = resolve({}, env={"APISIX_LISTEN_ADDRESS": "unix:/x.sock"})
    assert config.config_file is None and config.listen == "/x.sock"
