"""Static checks of the compose demo stack, the APISIX configs and the Dockerfile.

No Docker engine runs here, so these read the files the way compose, APISIX and Docker would
and check what would otherwise only fail at `docker compose up`: files that are mounted or
copied but missing (or excluded by .dockerignore), dependencies on services that do not
exist, unpinned images, a config that does not start the runner or hides its environment,
and route files that name a model no Triton in the stack serves.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

import pytest
import yaml

from apisix_openai_triton.runner import config as runner_config
from apisix_openai_triton.tools import routes as route_file

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
RUNNER_CMD = ["apisix-openai-triton", "run"]
EXT_PLUGINS = {"ext-plugin-pre-req", "ext-plugin-post-req", "ext-plugin-post-resp"}
VARIABLE = re.compile(r"\$\{(\w+)(?::?[-?]([^}]*))?\}")
VOLUME = re.compile(r"^((?:\$\{[^}]*\}|[^:])+):([^:]+)(?::(ro|rw))?$")


def runner_env_vars() -> set[str]:
    """Environment variables the runner reads that APISIX does not set for it itself."""
    names = {runner_config.ENV_CONFIG}
    for source in (ROOT / "runner").rglob("*.py"):
        names |= set(re.findall(r"\bAPISIX_OPENAI_TRITON_[A-Z0-9_]+\b", source.read_text("utf-8")))
    return names | {"LANG", "LC_ALL"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def dotenv() -> dict[str, str]:
    values = {}
    for line in (DEPLOY / ".env").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def interpolate(text: str, env: dict[str, str]) -> tuple[str, list[str]]:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR-default}; also the variable names used."""
    used: list[str] = []

    def sub(match: re.Match[str]) -> str:
        used.append(match.group(1))
        return env.get(match.group(1)) or (match.group(2) or "")
    return VARIABLE.sub(sub, text), used


def profiles(service: dict[str, Any]) -> set[str]:
    return set(service.get("profiles", []))


def active(services: dict[str, dict[str, Any]], profile: str) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in services.items() if not profiles(s) or profile in profiles(s)}


def depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on", {})
    return {d: {} for d in deps} if isinstance(deps, list) else dict(deps)


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    mounts = []
    for volume in service.get("volumes", []):
        match = VOLUME.match(volume)
        assert match is not None, f"unreadable volume {volume!r}"
        if match.group(1).startswith((".", "/", "$")):
            mounts.append((match.group(1), match.group(2)))
    return mounts


def image_is_pinned(image: str) -> bool:
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag not in ("", "latest")


# --- compose --------------------------------------------------------------------------------

def test_compose_names_the_expected_services(services: dict[str, dict[str, Any]]) -> None:
    assert {"etcd", "apisix", "triton", "triton-vllm", "routes", "routes-gpu", "ready"} <= set(services)


def test_every_image_is_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        if "image" in service:
            assert image_is_pinned(service["image"]), f"{name}: {service['image']} is not pinned"


def test_build_context_and_dockerfile_exist(services: dict[str, dict[str, Any]]) -> None:
    built = {n: s["build"] for n, s in services.items() if "build" in s}
    assert "apisix" in built
    for name, build in built.items():
        context = (DEPLOY / build["context"]).resolve()
        assert context == ROOT, f"{name}: the build context must be the repository root"
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE


def test_every_mounted_file_exists(services: dict[str, dict[str, Any]]) -> None:
    env = dotenv()
    documented = (DEPLOY / ".env").read_text(encoding="utf-8")
    for name, service in services.items():
        for source, target in bind_mounts(service):
            resolved, used = interpolate(source, env)
            if used:  # the user points it at their own files: it must be documented
                for variable in used:
                    assert variable in documented, f"{name}: {variable} is not described in deploy/.env"
                continue
            assert (DEPLOY / resolved).exists(), f"{name}: {source} -> {target} does not exist"


def test_depends_on_names_existing_services_with_valid_conditions(
        services: dict[str, dict[str, Any]]) -> None:
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, service in services.items():
        for dep, spec in depends_on(service).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert spec.get("condition", "service_started") in conditions
            if spec.get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}, which has no healthcheck"
            # a dependency that is off in a profile where the dependent is on must be optional
            if profiles(services[dep]) and not profiles(services[dep]) >= profiles(service):
                assert spec.get("required") is False, f"{name} -> {dep} must be required: false"


def test_startup_order_reaches_ready_in_each_profile(services: dict[str, dict[str, Any]]) -> None:
    for profile, triton in (("cpu", "triton"), ("gpu", "triton-vllm")):
        on = active(services, profile)
        waits: set[str] = set()
        todo = ["ready"]
        while todo:
            current = todo.pop()
            for dep in depends_on(on[current]):
                if dep in on and dep not in waits:
                    waits.add(dep)
                    todo.append(dep)
        assert {"etcd", "apisix", triton} <= waits, profile
        assert {n for n, s in on.items() if "healthcheck" in s} >= {"etcd", "apisix", triton}


def test_default_profile_is_cpu_and_each_profile_has_one_triton(
        services: dict[str, dict[str, Any]]) -> None:
    assert dotenv()["COMPOSE_PROFILES"] == "cpu"
    for profile in ("cpu", "gpu"):
        reachable = [n for n, s in active(services, profile).items()
                     if n == "triton" or "triton" in (s.get("networks", {}) or {}).get(
                         "default", {}).get("aliases", [])]
        assert len(reachable) == 1, f"profile {profile}: `triton` resolves to {reachable}"


def test_gpu_triton_reserves_a_gpu(services: dict[str, dict[str, Any]]) -> None:
    devices = services["triton-vllm"]["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] and d["driver"] == "nvidia" for d in devices)
    assert "vllm" in services["triton-vllm"]["image"]


def test_admin_key_is_shared_by_apisix_and_the_routes_services(
        services: dict[str, dict[str, Any]], apisix_config: dict[str, Any]) -> None:
    key = apisix_config["deployment"]["admin"]["admin_key"][0]["key"]
    assert key == "${{APISIX_ADMIN_KEY}}"
    values = {services[n]["environment"]["APISIX_ADMIN_KEY"] for n in ("apisix", "routes", "routes-gpu")}
    assert len(values) == 1
    assert "APISIX_ADMIN_KEY" in dotenv()


def test_admin_api_is_published_on_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    ports = services["apisix"]["ports"]
    assert "9080:9080" in ports
    assert [p for p in ports if p.endswith(":9180")] == ["127.0.0.1:9180:9180"]


# --- the routes one-shots, against the route files and the model repositories ----------------

def route_service_file(service: dict[str, Any]) -> Path:
    command = service["command"]
    assert service["entrypoint"] == ["apisix-openai-triton"]
    assert command[:2] == ["routes", "apply"]
    assert command[command.index("--admin-url") + 1] == "http://apisix:9180"
    assert "--admin-key" not in command, "the key comes from APISIX_ADMIN_KEY, not argv"
    mounts = {target: source for source, target in bind_mounts(service)}
    return DEPLOY / mounts[command[2]]


def model_repository(service: dict[str, Any]) -> Path:
    mounts = {target: source for source, target in bind_mounts(service)}
    return DEPLOY / mounts["/models"]


@pytest.mark.parametrize(("routes", "triton"), [("routes", "triton"), ("routes-gpu", "triton-vllm")])
def test_route_files_parse_and_name_models_their_triton_serves(
        services: dict[str, dict[str, Any]], pbtxt: ModuleType, routes: str, triton: str) -> None:
    path = route_service_file(services[routes])
    parsed = route_file.load_route_file(str(path))
    repository = model_repository(services[triton])
    served = {pbtxt.one(pbtxt.parse(p.read_text("utf-8")), "name") for p in repository.glob("*/config.pbtxt")}
    for route in parsed:
        for upstream_node in route.body.get("upstream", {}).get("nodes", []):
            host = upstream_node["host"] if isinstance(upstream_node, dict) else str(upstream_node).split(":")[0]
            assert host == "triton", f"{path.name}: {route.id} sends to {host}"
        for entry in [e for phase in ("ext-plugin-pre-req", "ext-plugin-post-req")
                      for e in route.body["plugins"].get(phase, {}).get("conf", [])]:
            if entry["name"] == "openai-to-triton":
                conf = yaml.safe_load(entry["value"])
                models = set(conf.get("models", {}).values()) or {conf["model"]}
                assert models <= served, f"{path.name}: {route.id} names {models}, Triton serves {served}"
                assert conf.get("backend") == "vllm"


def test_every_model_folder_has_its_config_and_version(pbtxt: ModuleType) -> None:
    for config in (DEPLOY / "triton").glob("models*/*/config.pbtxt"):
        parsed = pbtxt.parse(config.read_text("utf-8"))
        assert pbtxt.one(parsed, "name") == config.parent.name
        assert (config.parent / "1").is_dir()
        backend = pbtxt.one(parsed, "backend")
        assert (config.parent / "1" / ("model.py" if backend == "python" else "model.json")).is_file()


# --- APISIX configs ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def apisix_config(services: dict[str, dict[str, Any]]) -> dict[str, Any]:
    mounts = {target: source for source, target in bind_mounts(services["apisix"])}
    path = DEPLOY / mounts["/usr/local/apisix/conf/config.yaml"]
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def test_demo_config_runs_the_runner_and_passes_its_environment(apisix_config: dict[str, Any]) -> None:
    assert apisix_config["ext-plugin"]["cmd"] == RUNNER_CMD
    assert "path_for_test" not in apisix_config["ext-plugin"]
    assert runner_env_vars() <= set(apisix_config["nginx_config"]["envs"])


def test_demo_config_enables_the_ext_plugins_and_every_plugin_the_routes_use(
        apisix_config: dict[str, Any]) -> None:
    enabled = set(apisix_config["plugins"])
    assert EXT_PLUGINS <= enabled
    for name in ("routes.yaml", "routes-gpu.yaml"):
        for route in route_file.load_route_file(str(DEPLOY / name)):
            assert set(route.body["plugins"]) <= enabled, f"{name}: {route.id}"


def test_demo_config_points_at_the_compose_etcd(apisix_config: dict[str, Any],
                                                services: dict[str, dict[str, Any]]) -> None:
    deployment = apisix_config["deployment"]
    assert deployment["role"] == "traditional"
    assert deployment["etcd"]["host"] == ["http://etcd:2379"]
    assert "--advertise-client-urls=http://etcd:2379" in services["etcd"]["command"]
    assert deployment["admin"]["admin_listen"]["port"] == 9180


def test_apisix_healthcheck_reads_the_status_api_the_config_enables(
        apisix_config: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    status = apisix_config["apisix"]["status"]
    healthcheck = (DEPLOY / "apisix" / "healthcheck.py").read_text(encoding="utf-8")
    assert f'"http://{status["ip"]}:{status["port"]}/status/ready"' in healthcheck
    assert services["apisix"]["healthcheck"]["test"] == ["CMD", "apisix-healthcheck"]


def test_config_fragment_for_an_existing_apisix() -> None:
    text = (ROOT / "conf" / "apisix-config.yaml").read_text(encoding="utf-8")
    fragment = yaml.safe_load(text)
    assert fragment["ext-plugin"]["cmd"] == RUNNER_CMD
    assert "path_for_test" not in fragment["ext-plugin"], "cmd and path_for_test exclude each other"
    assert "# path_for_test: /tmp/runner.sock" in text
    assert runner_env_vars() <= set(fragment["nginx_config"]["envs"])
    assert "plugins" not in fragment, "an active plugins list would replace the user's defaults"
    assert "REPLACES" in text and all(f"#   - {p}" in text for p in EXT_PLUGINS)


# --- Dockerfile -------------------------------------------------------------------------------

def instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def build_args(steps: list[tuple[str, str]]) -> dict[str, str]:
    return dict(arg.split("=", 1) for kw, arg in steps if kw == "ARG" and "=" in arg)


def dockerignored(relative: str) -> bool:
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text("utf-8").splitlines()
                if p.strip() and not p.startswith("#")]
    parts = Path(relative).parts
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for pattern in patterns:
        bare = pattern.removeprefix("**/")
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern) or (
                    pattern.startswith("**/") and fnmatch.fnmatchcase(Path(prefix).name, bare)):
                return True
    return False


def copies(steps: list[tuple[str, str]]) -> list[tuple[list[str], str, Optional[str]]]:
    found = []
    for keyword, rest in steps:
        if keyword == "COPY":
            words = shlex.split(rest)
            flags = [w for w in words if w.startswith("--")]
            args = [w for w in words if not w.startswith("--")]
            stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
            found.append((args[:-1], args[-1], stage))
    return found


def test_dockerfile_bases_are_the_official_apisix_image_pinned() -> None:
    steps = instructions(DOCKERFILE)
    args = build_args(steps)
    bases = [rest.split()[0] for kw, rest in steps if kw == "FROM"]
    assert len(bases) == 2
    for base in bases:
        image, _ = interpolate(base, args)
        assert image.startswith("apache/apisix:") and image_is_pinned(image), image


def test_dockerfile_copy_sources_exist_and_are_in_the_build_context() -> None:
    for sources, _, stage in copies(instructions(DOCKERFILE)):
        if stage is not None:
            continue
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: missing"
            assert not dockerignored(source), f"COPY {source}: excluded by .dockerignore"


def test_dockerfile_installs_this_package_with_every_package_folder() -> None:
    steps = instructions(DOCKERFILE)
    copied = {s.rstrip("/") for sources, _, stage in copies(steps) if stage is None for s in sources}
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    package_dirs = set(re.findall(r'^"apisix_openai_triton\.\w+" = "(\w+)"', pyproject, re.M))
    assert package_dirs and package_dirs <= copied
    assert {"pyproject.toml", "README.md"} <= copied  # pyproject's `readme` must exist to build
    installs = [rest for kw, rest in steps if kw == "RUN" and "pip install" in rest]
    assert any(re.search(r"""pip install [^&]*["']?\.(\[\w+\])?["']?""", r) for r in installs)
    venv = re.search(r"python3 -m venv (\S+)", " ".join(installs))
    assert venv is not None
    env = " ".join(rest for kw, rest in steps if kw == "ENV")
    assert f"PATH={venv.group(1)}/bin:" in env


def test_dockerfile_ships_a_valid_runner_config_where_the_env_var_points() -> None:
    steps = instructions(DOCKERFILE)
    targets = {dest: sources for sources, dest, stage in copies(steps) if stage is None}
    env = " ".join(rest for kw, rest in steps if kw == "ENV")
    configured = re.search(rf"{runner_config.ENV_CONFIG}=(\S+)", env)
    assert configured is not None
    (source,) = targets[configured.group(1)]
    assert runner_config.load_file(str(ROOT / source)) is not None  # the runner's own loader
    assert re.search(r"LANG=C\.UTF-8", env) and re.search(r"LC_ALL=C\.UTF-8", env)


def test_dockerfile_runs_as_apisix_and_installs_the_healthcheck() -> None:
    steps = instructions(DOCKERFILE)
    users = [rest for kw, rest in steps if kw == "USER"]
    assert users[-1] == "apisix"
    targets = {dest for _, dest, stage in copies(steps) if stage is None}
    assert "/usr/local/bin/apisix-healthcheck" in targets
