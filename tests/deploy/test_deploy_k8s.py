"""Static checks of the Kubernetes files: every manifest parses, every name one object uses
(ConfigMap, Secret and key, Service, port name, image) exists and agrees with the Helm
values, the kustomization and the compose stack."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from apisix_openai_triton.runner import config as runner_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
VALUES = K8S / "apisix-values.yaml"
RELEASE = "apisix"  # the Helm release name the docs use: services apisix-admin, apisix-gateway


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    (doc,) = load(DEPLOY / "kustomization.yaml")
    return doc


@pytest.fixture(scope="module")
def manifests(kustomization: dict[str, Any]) -> list[dict[str, Any]]:
    docs = [d for r in kustomization["resources"] for d in load(DEPLOY / r)]
    for generator in kustomization["configMapGenerator"]:  # what kustomize will generate
        data = {Path(f).name: (DEPLOY / f).read_text(encoding="utf-8") for f in generator["files"]}
        docs.append({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": generator["name"]}, "data": data})
    return docs


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    (doc,) = load(VALUES)
    return doc


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(workload name, pod spec); a StatefulSet's claim templates count as pod volumes."""
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            spec = dict(doc["spec"]["template"]["spec"])
            claims = [{"name": t["metadata"]["name"], "persistentVolumeClaim": {}}
                      for t in doc["spec"].get("volumeClaimTemplates", [])]
            spec["volumes"] = list(spec.get("volumes", [])) + claims
            yield doc["metadata"]["name"], spec


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def compose_images() -> dict[str, str]:
    services = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text(encoding="utf-8"))["services"]
    return {name: s["image"] for name, s in services.items() if "image" in s}


def test_every_k8s_file_parses_and_every_manifest_is_named(kustomization: dict[str, Any]) -> None:
    files = sorted(K8S.glob("*.yaml"))
    assert files
    listed = {DEPLOY / r for r in kustomization["resources"]}
    for path in files:
        docs = load(path)
        assert docs, path.name
        if path == VALUES:
            continue
        assert path in listed, f"{path.name} is not in deploy/kustomization.yaml"
        for doc in docs:
            assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], path.name


def test_kustomization_files_exist(kustomization: dict[str, Any]) -> None:
    for resource in kustomization["resources"]:
        assert (DEPLOY / resource).is_file(), resource
    for generator in kustomization["configMapGenerator"]:
        for name in generator["files"]:
            assert (DEPLOY / name).is_file(), name
    assert kustomization["generatorOptions"]["disableNameSuffixHash"] is True


def test_configmaps_and_secrets_that_pods_use_exist(manifests: list[dict[str, Any]]) -> None:
    configmaps = of_kind(manifests, "ConfigMap")
    secrets = of_kind(manifests, "Secret")
    for name, spec in pod_specs(manifests):
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for volume in volumes.values():
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps, name
        for container in containers(spec):
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{name}: no volume {mount['name']}"
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] in secrets, name
                    assert ref["key"] in secrets[ref["name"]]["stringData"], name


def test_services_select_pods_and_name_their_ports(manifests: list[dict[str, Any]]) -> None:
    workloads = [d for d in manifests if d["kind"] in ("Deployment", "StatefulSet")]
    for name, service in of_kind(manifests, "Service").items():
        selector = service["spec"]["selector"]
        matches = [w for w in workloads
                   if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(matches) == 1, f"Service {name} selects {len(matches)} workloads"
        ports = {p["name"] for c in matches[0]["spec"]["template"]["spec"]["containers"]
                 for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, name
    for workload in workloads:
        assert workload["spec"]["selector"]["matchLabels"].items() <= \
            workload["spec"]["template"]["metadata"]["labels"].items()
        for container in workload["spec"]["template"]["spec"]["containers"]:
            ports = {p["name"] for p in container.get("ports", [])}
            for probe in ("readinessProbe", "livenessProbe"):
                http = container.get(probe, {}).get("httpGet")
                if http:
                    assert http["port"] in ports, workload["metadata"]["name"]


def test_images_are_pinned_and_agree_with_compose_and_the_values(
        manifests: list[dict[str, Any]], values: dict[str, Any], kustomization: dict[str, Any]) -> None:
    compose = compose_images()
    gateway = f"{values['image']['repository']}:{values['image']['tag']}"
    (override,) = kustomization["images"]
    assert override["name"] == values["image"]["repository"]
    assert override["newTag"] == values["image"]["tag"]
    for name, spec in pod_specs(manifests):
        for container in containers(spec):
            image = container["image"]
            tag = image.rpartition(":")[2]
            assert tag and tag != "latest" and "/" not in tag, f"{name}: {image}"
            if "tritonserver" in image:
                assert image == compose["triton"], name
            elif "etcd" in image:
                assert image == compose["etcd"], name
            else:
                assert image == gateway, f"{name} runs {image}, APISIX pods run {gateway}"


def test_values_run_the_runner_in_every_apisix_pod(values: dict[str, Any]) -> None:
    apisix = values["apisix"]
    assert apisix["extPlugin"] == {"enabled": True, "cmd": ["apisix-openai-triton", "run"]}
    assert {runner_config.ENV_CONFIG, "LANG", "LC_ALL"} <= set(apisix["nginx"]["envs"])
    assert apisix["plugins"] == [], "an explicit list would replace the defaults with the ext-plugins"
    assert values["replicaCount"] >= 2


def test_values_use_the_admin_secret_and_the_etcd_service(
        values: dict[str, Any], manifests: list[dict[str, Any]]) -> None:
    credentials = values["apisix"]["admin"]["credentials"]
    secret = of_kind(manifests, "Secret")[credentials["secretName"]]
    assert {credentials["secretAdminKey"], credentials["secretViewerKey"]} <= set(secret["stringData"])
    assert values["etcd"]["enabled"] is False
    services = of_kind(manifests, "Service")
    for host in values["externalEtcd"]["host"]:
        match = re.fullmatch(r"http://([\w-]+):(\d+)", host)
        assert match, host
        ports = [p["port"] for p in services[match.group(1)]["spec"]["ports"]]
        assert int(match.group(2)) in ports


def test_routes_job_applies_the_route_file_through_the_admin_service(
        manifests: list[dict[str, Any]], values: dict[str, Any]) -> None:
    job = of_kind(manifests, "Job")["apisix-openai-triton-routes"]
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "OnFailure" and job["spec"]["backoffLimit"] >= 5
    (container,) = spec["containers"]
    command = container["command"]
    assert command[:3] == ["apisix-openai-triton", "routes", "apply"]
    port = values["apisix"]["admin"].get("servicePort", 9180)
    assert command[command.index("--admin-url") + 1] == f"http://{RELEASE}-admin:{port}"
    assert "--admin-key" not in command
    (mount,) = container["volumeMounts"]
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    configmap = of_kind(manifests, "ConfigMap")[volume["configMap"]["name"]]
    route_path = Path(command[3])
    assert str(route_path.parent) == mount["mountPath"]
    assert configmap["data"][route_path.name] == (DEPLOY / "routes.yaml").read_text(encoding="utf-8")
    assert f"helm install {RELEASE} " in VALUES.read_text(encoding="utf-8")


def test_triton_pod_lays_out_the_demo_model_repository(manifests: list[dict[str, Any]]) -> None:
    deployment = of_kind(manifests, "Deployment")["triton"]
    spec = deployment["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    script = init["command"][-1]
    assert "/models/demo/1/" in script and "/models/demo/" in script
    source = next(v for v in spec["volumes"] if "configMap" in v)
    configmap = of_kind(manifests, "ConfigMap")[source["configMap"]["name"]]
    assert set(configmap["data"]) == {"config.pbtxt", "model.py"}
    for name in configmap["data"]:
        assert f"/model-src/{name}" in script
    (triton,) = spec["containers"]
    assert "--model-repository=/models" in triton["args"]
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
