"""The route file -> APISIX route objects: golden files, merging rules, and every refusal with
its line and key."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any, Optional

import pytest

from apisix_openai_triton.runner.plugin import ConfError, Plugin
from apisix_openai_triton.tools.routes import (
    MAX_FILE_BYTES, Route, RouteFileError, load_route_file, parse_route_file, route_json,
)

GOLDEN = Path(__file__).parent / "golden"


def parse(text: str, **kwargs: Any) -> list[Route]:
    return parse_route_file(textwrap.dedent(text), "routes.yaml", **kwargs)


def refusal(text: str, **kwargs: Any) -> RouteFileError:
    with pytest.raises(RouteFileError) as info:
        parse(textwrap.dedent(text), **kwargs)
    return info.value


MINIMAL = """\
defaults:
  upstream: {nodes: [triton:8000]}
  openai-to-triton: {model: m}
routes:
  - id: chat
    uri: /v1/chat/completions
"""


def test_full_file_matches_the_hand_checked_golden_files() -> None:
    routes = load_route_file(str(GOLDEN / "routes-full.yaml"))
    assert [r.id for r in routes] == ["chat", "v1-completions", "models"]
    assert [r.line for r in routes] == [22, 30, 48]
    for route in routes:
        expected = (GOLDEN / f"routes-{route.id}.json").read_text(encoding="utf-8")
        assert route_json(route) == expected, route.id
    assert {p.name for p in GOLDEN.glob("routes-*.json")} == {
        f"routes-{r.id}.json" for r in routes}


def test_plugin_conf_values_are_json_strings_of_the_merged_mapping() -> None:
    (route,) = parse(MINIMAL)
    pre = route.body["plugins"]["ext-plugin-pre-req"]
    assert pre == {"conf": [{"name": "openai-to-triton", "value": '{"model":"m"}'}],
                   "allow_degradation": False}
    post = route.body["plugins"]["ext-plugin-post-resp"]
    assert post["conf"] == [{"name": "triton-to-openai", "value": "{}"}]
    assert route.body["upstream"] == {"nodes": {"triton:8000": 1}, "type": "roundrobin",
                                      "scheme": "http"}
    assert route.body["labels"] == {"managed-by": "apisix-openai-triton"}


def test_same_file_gives_the_same_bytes_every_time() -> None:
    first = [route_json(r) for r in parse(MINIMAL)]
    assert first == [route_json(r) for r in parse(MINIMAL)]


def test_derived_ids_are_stable_and_depend_on_hosts() -> None:
    text = """\
        defaults: {upstream: {nodes: [t:1]}, openai-to-triton: {model: m}}
        routes:
          - uri: /v1/chat/completions
          - uri: /v1/chat/completions
            hosts: a.example.com
          - uri: /v1/chat/completions
            hosts: [b.example.com]
        """
    ids = [r.id for r in parse(text)]
    assert ids[0] == "v1-chat-completions"
    assert ids[1].startswith("v1-chat-completions-") and ids[2].startswith("v1-chat-completions-")
    assert len(set(ids)) == 3
    assert ids == [r.id for r in parse(text)]


def test_long_uri_gives_an_id_within_the_gateway_limit() -> None:
    text = f"""\
        defaults: {{upstream: {{nodes: [t:1]}}, openai-to-triton: {{model: m}}}}
        routes:
          - uri: /{'x' * 200}
        """
    (route,) = parse(text)
    assert len(route.id) <= 64


def test_upstream_override_replaces_every_upstream_but_models_routes_keep_none() -> None:
    text = MINIMAL + "  - {id: models, uri: /v1/models}\n"
    chat, models = parse(text, upstream={"nodes": ["127.0.0.1:18000"]})
    assert chat.body["upstream"]["nodes"] == {"127.0.0.1:18000": 1}
    assert "upstream" not in models.body
    assert "ext-plugin-post-resp" not in models.body["plugins"]


def test_models_route_keeps_what_it_sets_itself() -> None:
    text = MINIMAL + """\
  - id: models
    uri: /v1/models
    upstream: {nodes: [other:9000]}
    triton-to-openai: {}
"""
    _, models = parse(text)
    assert models.body["upstream"]["nodes"] == {"other:9000": 1}
    assert "ext-plugin-post-resp" in models.body["plugins"]


def test_auth_plugin_before_the_runner_gets_a_note_unless_reordered() -> None:
    base = MINIMAL.replace("routes:", "  plugins: {key-auth: {}}\nroutes:")
    (route,) = parse(base)
    assert len(route.notes) == 1 and "request_phase: post-req" in route.notes[0]
    (route,) = parse(base + "    request_phase: post-req\n")
    assert route.notes == ()
    assert "ext-plugin-post-req" in route.body["plugins"]
    assert "ext-plugin-pre-req" not in route.body["plugins"]
    (route,) = parse(base.replace("key-auth: {}", "key-auth: {_meta: {priority: 12001}}"))
    assert route.notes == ()


def test_yaml_anchors_and_merge_keys_work() -> None:
    text = """\
        common: &up {nodes: [t:1]}
        """
    # `common` is not a known top-level key: anchors live inside known keys instead.
    assert "unknown key" in str(refusal(text + "routes: []\n"))
    text = """\
        defaults:
          upstream: &up {nodes: [t:1], scheme: https}
          openai-to-triton: {model: m}
        routes:
          - id: a
            uri: /a
            upstream: {<<: *up, scheme: http}
        """
    (route,) = parse(text)
    assert route.body["upstream"]["scheme"] == "http"
    assert route.body["upstream"]["nodes"] == {"t:1": 1}


class StandInRequest(Plugin[dict[str, Any]]):
    """Refuses unknown keys like the real conf parser does, naming the key."""

    name = "openai-to-triton"

    def parse_conf(self, raw: str) -> dict[str, Any]:
        conf = json.loads(raw)
        for key in conf:
            if key not in ("model", "models", "template", "backend"):
                raise ConfError(f"Object contains unknown field `{key}` - at `$`")
        if not isinstance(conf.get("model", ""), str):
            raise ConfError("Expected `str`, got `int` - at `$.model`")
        return dict(conf)


class StandInResponse(Plugin[dict[str, Any]]):
    name = "triton-to-openai"

    def parse_conf(self, raw: str) -> dict[str, Any]:
        conf = json.loads(raw)
        if conf.get("usage_headers") not in (None, True, False):
            raise ConfError("usage_headers must be a boolean")
        return dict(conf)


VALIDATORS = {"openai-to-triton": StandInRequest().parse_conf,
              "triton-to-openai": StandInResponse().parse_conf}


def test_validators_receive_exactly_the_value_sent_to_the_gateway() -> None:
    seen: list[str] = []

    def record(raw: str) -> None:
        seen.append(raw)

    (route,) = parse(MINIMAL, validators={"openai-to-triton": record, "triton-to-openai": record})
    sent = [entry["value"] for name in ("ext-plugin-pre-req", "ext-plugin-post-resp")
            for entry in route.body["plugins"][name]["conf"]]
    assert seen == sent


@pytest.mark.parametrize("text, line, key, words", [
    # the unknown conf key on the route itself
    ("""\
        defaults: {upstream: {nodes: [t:1]}, openai-to-triton: {model: m}}
        routes:
          - id: chat
            uri: /v1/chat/completions
            openai-to-triton:
              tempalte: llama3
        """, 6, "openai-to-triton.tempalte", "unknown field `tempalte`"),
    # ... and one that came from defaults: the line is in `defaults`
    ("""\
        defaults:
          upstream: {nodes: [t:1]}
          openai-to-triton:
            model: 7
        routes:
          - {id: chat, uri: /v1/chat/completions}
        """, 4, "openai-to-triton.model", "Expected `str`"),
    # the response plugin's refusal, naming no key: the line of the conf block
    ("""\
        defaults: {upstream: {nodes: [t:1]}, openai-to-triton: {model: m}}
        routes:
          - id: chat
            uri: /v1/chat/completions
            triton-to-openai: {usage_headers: maybe}
        """, 5, "triton-to-openai.usage_headers", "usage_headers must be a boolean"),
])
def test_plugin_refusals_name_file_route_line_and_key(
        text: str, line: int, key: str, words: str) -> None:
    err = refusal(text, validators=VALIDATORS)
    assert (err.line, err.route, err.key) == (line, "chat", key)
    assert words in str(err)
    assert str(err).startswith(f"routes.yaml:{line}: route 'chat': key '{key}': ")


CASES: list[tuple[str, int, Optional[str], str]] = [
    ("routes: [\n  - {id: a\n", 2, None, "not valid YAML"),
    ("- just\n- a list\n", 1, None, "must be a mapping"),
    ("version: 2\nroutes: []\n", 1, "version", "unsupported version"),
    ("routes: []\n", 1, "routes", "non-empty list"),
    ("defaults: {}\ndefaults: {}\nroutes: []\n", 2, None, "duplicate key 'defaults'"),
    ("routes:\n  - id: a\n    uri: /a\n    1: x\n", 4, None, "keys must be text"),
    ("routes:\n  - id: a\n    uri: /a\n    url: /b\n", 4, "url", "unknown key"),
    ("defaults:\n  uri: /x\nroutes: [{id: a, uri: /a}]\n", 2, "defaults.uri", "unknown key"),
    ("routes:\n  - id: a\n", 2, None, "exactly one of `uri` and `uris`"),
    ("routes:\n  - id: a\n    uri: v1/chat\n", 3, "uri", "starting with '/'"),
    ("routes:\n  - id: a b\n    uri: /a\n", 2, "id", "1 to 64 characters"),
    ("routes:\n  - id: a\n    uri: /a\n", 2, "openai-to-triton", "no `openai-to-triton` conf"),
    ("defaults: {openai-to-triton: {model: m}}\nroutes:\n  - id: a\n    uri: /a\n",
     3, "upstream", "no `upstream`"),
    ("defaults: {openai-to-triton: {model: m}}\nroutes:\n  - id: a\n    uri: /a\n"
     "    upstream:\n      nodes:\n        - http://triton:8000\n", 7, "upstream.nodes",
     "without a scheme"),
    ("defaults: {openai-to-triton: {model: m}}\nroutes:\n  - id: a\n    uri: /a\n"
     "    upstream:\n      nodes: {triton:8000: -1}\n", 6, "upstream.nodes", "weight"),
    ("defaults: {openai-to-triton: {model: m}}\nroutes:\n  - id: a\n    uri: /a\n"
     "    upstream:\n      nodes: [triton:99999]\n", 6, "upstream.nodes", "not a port"),
    ("defaults: {openai-to-triton: {model: m}}\nroutes:\n  - id: a\n    uri: /a\n"
     "    upstream:\n      nodes: [t:1]\n      timeout: {read: 5}\n", 7, "upstream.timeout",
     "connect, send and read"),
    ("defaults: {openai-to-triton: {model: m}}\nroutes:\n  - id: a\n    uri: /a\n"
     "    upstream:\n      nodes: [t:1]\n      scheme: grpc\n", 7, "upstream.scheme",
     "http or https"),
    ("defaults: {openai-to-triton: {model: m}}\nroutes:\n  - id: a\n    uri: /a\n"
     "    upstream:\n      nodes: [t:1]\n      retrys: 2\n", 7, "upstream.retrys", "unknown key"),
    ("defaults: {openai-to-triton: {model: m}, upstream: {nodes: [t:1]}}\nroutes:\n"
     "  - id: a\n    uri: /a\n    plugins:\n      ext-plugin-pre-req: {}\n", 6,
     "plugins.ext-plugin-pre-req", "set by this tool"),
    ("defaults: {openai-to-triton: {model: m}, upstream: {nodes: [t:1]}}\nroutes:\n"
     "  - id: a\n    uri: /a\n    plugins:\n      key-auth: true\n", 6, "plugins.key-auth",
     "must be a mapping"),
    ("defaults: {openai-to-triton: {model: m}, upstream: {nodes: [t:1]}}\nroutes:\n"
     "  - id: a\n    uri: /a\n    methods: [FETCH]\n", 5, "methods", "HTTP methods"),
    ("defaults: {openai-to-triton: {model: m}, upstream: {nodes: [t:1]}}\nroutes:\n"
     "  - id: a\n    uri: /a\n    request_phase: access\n", 5, "request_phase", "post-req"),
    ("defaults:\n  openai-to-triton: {model: m}\n  upstream: {nodes: [t:1]}\n"
     "  allow_degradation: sometimes\nroutes:\n  - id: a\n    uri: /a\n", 4,
     "defaults.allow_degradation", "true or false"),
    ("defaults: {openai-to-triton: {model: m}, upstream: {nodes: [t:1]}}\nroutes:\n"
     "  - id: a\n    uri: /a\n    labels: {tier: two words}\n", 5, "labels.tier", "without spaces"),
    ("defaults: {openai-to-triton: {model: m}, upstream: {nodes: [t:1]}}\nroutes:\n"
     "  - id: a\n    uri: /a\n    openai-to-triton:\n      temperature: .nan\n", 6,
     "openai-to-triton.temperature", "NaN"),
    ("defaults: {openai-to-triton: {model: m}, upstream: {nodes: [t:1]}}\nroutes:\n"
     "  - id: a\n    uri: /a\n    openai-to-triton: false\n", 5, "openai-to-triton",
     "must be a mapping"),
    ("defaults: {openai-to-triton: {model: m}, upstream: {nodes: [t:1]}}\nroutes:\n"
     "  - id: a\n    uri: /a\n  - id: a\n    uri: /b\n", 5, "id", "duplicate route id"),
]


@pytest.mark.parametrize("text, line, key, words", CASES)
def test_invalid_files_are_refused_with_line_and_key(
        text: str, line: int, key: Optional[str], words: str) -> None:
    err = refusal(text)
    assert err.line == line, str(err)
    assert err.key == key, str(err)
    assert words in str(err)
    assert str(err).startswith(f"routes.yaml:{line}: ")


def test_unreadable_and_oversized_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RouteFileError, match="cannot read the file"):
        load_route_file(str(tmp_path / "missing.yaml"))
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * MAX_FILE_BYTES + "\nroutes: []\n")
    with pytest.raises(RouteFileError, match="larger than"):
        load_route_file(str(big))
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"routes: \xff\xfe\n")
    with pytest.raises(RouteFileError, match="not UTF-8"):
        load_route_file(str(binary))


def test_a_conf_shared_by_several_routes_is_parsed_once() -> None:
    calls: list[str] = []

    def record(raw: str) -> None:
        calls.append(raw)

    text = MINIMAL + "  - {id: two, uri: /v1/completions}\n  - {id: three, uri: /v1/models}\n"
    routes = parse(text, validators={"openai-to-triton": record, "triton-to-openai": record})
    assert len(routes) == 3
    assert sorted(calls) == ['{"model":"m"}', "{}"]
