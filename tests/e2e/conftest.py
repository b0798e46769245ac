"""Servers shared by several e2e modules: the static-keys server of the client, vision
chain and status page modules, the JWT server of the A1111 and round-trip
modules (JWTs signed with `auth_helpers.SECRET`, over the demo models plus ControlNets and
an IP-Adapter laid out as A1111's ControlNet extension keeps them), and the server over
the LoRA/manifest tree of the diffusion and OpenAI FastFusion modules."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pixelpool.testing.server import ServerProcess
from pixelpool.testing.tiny_controlnet import write_tiny_controlnet, write_tiny_union_controlnet
from pixelpool.testing.tiny_ip_adapter import write_tiny_ip_adapter

from .auth_helpers import CHAIN_KEYS, CLIENT_KEY, SECRET, VIEWER_KEY
from .diffusion_server import write_models


@pytest.fixture(scope="session")
def a1111_dir(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("a1111") / "models"
    shutil.copytree(models_dir, root)
    write_tiny_controlnet(root / "sd15/demo-sd", root / "ControlNet/cn-sd", seed=1)
    write_tiny_union_controlnet(root / "sdxl/demo-sdxl", root / "ControlNet/cn-union", seed=2)
    write_tiny_ip_adapter(root / "sd15/demo-sd", root / "ip-adapter/ipa-sd15.safetensors",
                          "sd15", seed=3)  # fmt: skip
    return root


@pytest.fixture(scope="session")
def jwt_server(
    a1111_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    env = {"PIXELPOOL_AUTH__JWT_SECRET": SECRET}
    with ServerProcess(a1111_dir, tmp_path_factory.mktemp("data"), env=env) as proc:
        yield proc


@pytest.fixture(scope="session")
def tuned_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo models, tiny LoRAs and a manifest-tuned copy of the SD model."""
    return write_models(tmp_path_factory.mktemp("diffusion-models"))


@pytest.fixture(scope="session")
def tuned_server(
    tuned_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A server over `tuned_dir` whose upload limits are low enough to test (1024 px)."""
    env = {
        "PIXELPOOL_LIMITS__MAX_SIZE": "1024",
        "PIXELPOOL_LIMITS__MAX_INPUT_PIXELS": str(4 * 1024**2),
    }
    with ServerProcess(tuned_dir, tmp_path_factory.mktemp("data"), env=env) as proc:
        yield proc


@pytest.fixture(scope="session")
def keyed_server(
    extras_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A server over `extras_dir` with static keys on and every progress step sent."""
    keys = [CLIENT_KEY, *CHAIN_KEYS, VIEWER_KEY]
    env = {"PIXELPOOL_AUTH__KEYS": json.dumps(keys),
           "PIXELPOOL_SCHEDULER__PROGRESS_INTERVAL_MS": "0"}  # fmt: skip
    with ServerProcess(extras_dir, tmp_path_factory.mktemp("data"), env=env) as proc:
        yield proc
