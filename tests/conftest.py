"""Shared fixtures: tiny demo models written once per session, real servers on demand."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pixelpool.testing import write_demo_models
from pixelpool.testing.server import ServerProcess

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo models (tiny SD 1.x and SDXL) saved to disk, as `pixelpool demo` writes them."""
    root = tmp_path_factory.mktemp("models")
    write_demo_models(root)
    return root


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real server (uvicorn subprocess + worker process) shared by a test module."""
    data = tmp_path_factory.mktemp("data")
    proc = ServerProcess(models_dir, data)
    proc.start()
    yield proc
    proc.stop()
