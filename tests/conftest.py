"""Shared fixtures: tiny demo models written once per session, and real servers shared
by every module whose configuration they fit (each start costs ~15 s of imports on a
small machine, so modules with the same settings share one server)."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pixelpool.testing import write_demo_models
from pixelpool.testing.server import ServerProcess
from pixelpool.testing.tiny_families import write_family_models
from pixelpool.testing.tiny_ip_adapter import write_tiny_ip_adapter
from pixelpool.testing.tiny_vision import write_vision_models

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# A Ray runtime started in a test (`ray.init()` with no address, a test cluster) turns on
# Ray's token auth and, with no token at hand, writes one to ~/.ray/auth_token. That file
# outlives the suite: every later `ray start --head` on the machine then requires the
# token, and nodes joining without RAY_AUTH_MODE=token are refused. A token in the
# environment (the processes the tests start inherit it) leaves the home dir alone.
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))

VISION = ["tiny-sam3", "tiny-gdino", "tiny-depth", "tiny-dinov2"]


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo models (tiny SD 1.x and SDXL) saved to disk, as `pixelpool demo` writes them."""
    root = tmp_path_factory.mktemp("models")
    write_demo_models(root)
    return root


@pytest.fixture(scope="session")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real server (uvicorn subprocess + worker process) over the demo models, with
    the default settings, shared by every module that needs no more."""
    with ServerProcess(models_dir, tmp_path_factory.mktemp("data")) as proc:
        yield proc


@pytest.fixture(scope="session")
def extras_dir(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo models plus one tiny model of every other family (upscalers, a segmenter,
    taggers), IP-Adapters in both folder layouts, and the tiny vision models."""
    root = tmp_path_factory.mktemp("extras") / "models"
    shutil.copytree(models_dir, root)
    write_family_models(root)
    write_tiny_ip_adapter(root / "sd15/demo-sd", root / "ip-adapter/models/ipa-sd15.safetensors",
                          "sd15", seed=3)  # fmt: skip
    write_tiny_ip_adapter(root / "sdxl/demo-sdxl", root / "ipadapter/ipa-sdxl.safetensors",
                          "sdxl", seed=4)  # fmt: skip
    write_vision_models(root, VISION)
    return root


@pytest.fixture(scope="session")
def extras_server(
    extras_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A server over `extras_dir` with the default settings (no auth)."""
    with ServerProcess(extras_dir, tmp_path_factory.mktemp("data")) as proc:
        yield proc
