"""The registry recognises every family's models from their files, and refuses a
model of the wrong family with an error naming both."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pixelpool import families
from pixelpool.families.files import read_pickle_keys
from pixelpool.registry.registry import ModelNotFound, Registry, WrongFamily
from pixelpool.testing.tiny_families import FAMILY_MODELS, write_family_models
from pixelpool.testing.tiny_upscale import tiny_upscale_state


@pytest.fixture(scope="module")
def tree(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("all-families") / "models"
    shutil.copytree(models_dir, root)
    write_family_models(root)
    (root / "tagger" / "no-labels").mkdir()
    shutil.copy(root / "tagger" / "wd-tiny" / "model.onnx", root / "tagger" / "no-labels")
    (root / "upscale" / "broken.pth").write_bytes(b"not a zip")
    return root


@pytest.fixture
def registry(tree: Path, tmp_path: Path) -> Registry:
    reg = Registry(tree, tmp_path / "reg.db")
    reg.scan()
    yield reg
    reg.close()


def test_every_family_is_detected(registry: Registry) -> None:
    found = {e.name: (e.family, e.architecture) for e in registry.entries()}
    assert found == {
        **FAMILY_MODELS,
        "demo-sd": ("diffusion", "sd15"),
        "demo-sdxl": ("diffusion", "sdxl"),
    }  # no labels beside it, or unreadable: skipped


def test_pth_keys_are_read_without_torch(tree: Path) -> None:
    keys = read_pickle_keys(tree / "upscale" / "tiny-compact.pth")
    assert keys == list(tiny_upscale_state("Compact"))


def test_wrong_family_names_both(registry: Registry) -> None:
    assert registry.resolve("tiny-esrgan", "upscale").family == "upscale"
    with pytest.raises(WrongFamily, match="'tiny-esrgan' is of the upscale family, not diffusion"):
        registry.resolve("tiny-esrgan", "diffusion")
    with pytest.raises(WrongFamily, match="of the tag family, not bgremove"):
        registry.resolve("wd-tiny/model", "bgremove")
    with pytest.raises(ModelNotFound):
        registry.resolve("nothing-like-it", "tag")
    assert registry.default_entry(None, "tag").family == "tag"


def test_folder_claims() -> None:
    assert families.for_folder("upscale") is families.get("upscale")
    assert families.for_folder("tagger") is families.get("tag")
    assert families.for_folder("my-checkpoints") is families.get("diffusion")
    assert families.for_folder("loras") is None
    assert families.for_folder("vision") is families.get("vision")
    with pytest.raises(ValueError, match="unknown task family"):
        families.get("no-such-family")


@pytest.mark.parametrize("name", ["diffusion", "upscale", "bgremove", "tag", "vision"])
def test_every_operation_has_params_with_a_batch_key(name: str) -> None:
    for op in families.get(name).operations.values():
        assert op.result in ("image", "json", "array", "latents")
        assert op.params.batch_key is not families.base.OpParams.batch_key
