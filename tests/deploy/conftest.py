"""Fixtures for the static deploy tests: paths, the pbtxt reader, and the demo Triton model
loaded against the stand-in for ``triton_python_backend_utils``."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEPLOY = ROOT / "deploy"
DEMO_MODEL = DEPLOY / "triton" / "models" / "demo"


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def pbtxt() -> ModuleType:
    return _load("deploy_tests_pbtxt", HERE / "pbtxt.py")


@pytest.fixture(scope="session")
def pb_utils() -> ModuleType:
    return _load("deploy_tests_fake_pb_utils", HERE / "fake_pb_utils.py")


@pytest.fixture()
def demo_model(pb_utils: ModuleType) -> Iterator[ModuleType]:
    """deploy/triton/models/demo/1/model.py, importing the stand-in as the real module name."""
    saved = sys.modules.get("triton_python_backend_utils")
    sys.modules["triton_python_backend_utils"] = pb_utils
    try:
        yield _load("deploy_demo_model", DEMO_MODEL / "1" / "model.py")
    finally:
        if saved is None:
            sys.modules.pop("triton_python_backend_utils", None)
        else:
            sys.modules["triton_python_backend_utils"] = saved
