"""The backend seam and the Ray transport's pure parts, without a cluster."""

from pathlib import Path

import pytest

from pixelpool.api.auth import Principal
from pixelpool.api.visibility import nodes
from pixelpool.cli import with_cluster
from pixelpool.config import ConfigError, Settings
from pixelpool.engine.backend import LocalBackend, make_backend
from pixelpool.engine.messages import Ready, RunBatch
from pixelpool.engine.ray_actor import NODE_MODELS_ENV, PathMap, input_files, localize, models_here
from pixelpool.pipelines.base import WorkItem


def test_local_backend_keeps_local_ids() -> None:
    backend = make_backend(Settings(), lambda device: {})
    assert isinstance(backend, LocalBackend)
    assert backend.devices() and all("/" not in d.id for d in backend.devices())
    assert backend.nodes() == []
    handle = backend.make(backend.devices()[0])
    assert handle.on_this_host and handle.describe() == {"pid": None}


def test_serve_flags_choose_the_cluster() -> None:
    settings = with_cluster(Settings(), None, "ray://head:10001")
    assert settings.cluster.backend == "ray" and settings.cluster.ray_address == "ray://head:10001"
    assert with_cluster(Settings(), "local", None).cluster.backend == "local"
    with pytest.raises(ConfigError, match="--cluster"):
        with_cluster(Settings(), "k8s", None)


def test_node_addresses_are_for_admins_only() -> None:
    described = [{"name": "n1", "address": "10.0.0.5", "alive": True, "devices": ["n1/cpu0"]}]
    admin = Principal("admin", frozenset({"admin"}))
    user = Principal("user", frozenset({"generate"}))
    assert nodes(described, admin) == described
    assert nodes(described, user) == [{"name": "n1", "alive": True, "devices": ["n1/cpu0"]}]


def test_inputs_in_the_data_dir_travel_with_the_batch(tmp_path: Path) -> None:
    data, models, stage = tmp_path / "data", tmp_path / "models", tmp_path / "stage"
    for folder in (data / "uploads", models, stage):
        folder.mkdir(parents=True)
    upload = data / "uploads" / "in.png"
    upload.write_bytes(b"png bytes")
    lora = models / "style.safetensors"
    lora.write_bytes(b"weights")
    params = {"images": [str(upload)], "loras": [{"path": str(lora)}], "prompt": "a cat"}
    run = RunBatch("b", "diffusion", {"path": str(models)}, [WorkItem("j", "img2img", params)])

    files = input_files(run, data)
    assert files == {str(upload): b"png bytes"}  # models: every node has its own
    local = localize(run, files, stage)
    staged = Path(local.items[0].params["images"][0])
    assert staged.parent == stage and staged.suffix == ".png"
    assert staged.read_bytes() == b"png bytes"
    assert local.items[0].params["loras"] == [{"path": str(lora)}]
    assert local.items[0].params["prompt"] == "a cat"


def test_model_paths_move_to_the_nodes_models_dir_and_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, node = tmp_path / "server", (tmp_path / "node").resolve()
    (node / "sd15" / "a").mkdir(parents=True)
    monkeypatch.setenv(NODE_MODELS_ENV, str(node))
    root, present = models_here(str(server), ["sd15/a", "sd15/b"])
    assert root == str(node) and present == ["sd15/a"]

    paths = PathMap(str(server), root)
    lora = str(server / "loras" / "x.safetensors")
    params = {"loras": [{"path": lora}], "prompt": f"{server}x", "size": (64, 64)}
    run = RunBatch("b", "diffusion", {"path": str(server / "sd15/a")}, [WorkItem("j", "t", params)])
    moved = paths.inward(run)
    assert isinstance(moved, RunBatch) and moved.model["path"] == str(node / "sd15/a")
    node_lora = str(node / "loras" / "x.safetensors")
    assert moved.items[0].params == {**params, "loras": [{"path": node_lora}]}
    cache = {"models": [{"key": str(node / "sd15/a"), "tier": "device"}]}
    back = paths.outward(Ready({}, 1, 0, cache))
    assert isinstance(back, Ready) and back.cache["models"][0]["key"] == str(server / "sd15/a")
