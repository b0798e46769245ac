"""Per-request LoRAs on the tiny models: weight 0 is the base image, weight 1 is not."""

from pathlib import Path

import numpy as np
import pytest

from pixelpool.pipelines.base import Loaded
from pixelpool.pipelines.diffusion import lora as lora_mod
from pixelpool.registry.loras import scan_loras
from pixelpool.testing.lora import write_tiny_lora

from .diffusion_helpers import BASE, MODELS, load, max_diff, run


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def setup(
    request: pytest.FixtureRequest, models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Loaded, list[dict]]:
    arch = request.param
    root = tmp_path_factory.mktemp(f"loras-{arch}")
    for seed in (1, 2):
        write_tiny_lora(models_dir / MODELS[arch], root / "loras" / f"style{seed}.safetensors",
                        arch, seed=seed)  # fmt: skip
    refs = [{"name": e.name, "path": str(e.path), "key": e.key} for e in scan_loras(root)]
    assert [e.architecture for e in scan_loras(root)] == [arch, arch]
    return load(models_dir / MODELS[arch], arch), refs


def _image(model: Loaded, loras: list[dict]) -> np.ndarray:
    return run(model, "txt2img", {**BASE, "loras": loras})[0].images[0]


def test_weight_zero_is_base_weight_one_differs(setup: tuple[Loaded, list[dict]]) -> None:
    model, (style1, style2) = setup
    base = _image(model, [])
    zero = _image(model, [{**style1, "weight": 0.0}])
    one = _image(model, [{**style1, "weight": 1.0}])
    assert max_diff(zero, base) <= 1
    assert max_diff(one, base) > 10
    # Switching back to no LoRA gives the base image again: the base model is untouched.
    assert np.array_equal(_image(model, []), base)
    both = _image(model, [{**style1, "weight": 1.0}, {**style2, "weight": 0.7}])
    assert max_diff(both, one) > 10
    assert np.array_equal(_image(model, [{**style1, "weight": 1.0}]), one)


def test_adapters_are_cached_and_evicted(setup: tuple[Loaded, list[dict]], monkeypatch) -> None:
    model, (style1, style2) = setup
    _image(model, [{**style1, "weight": 0.5}])
    before = lora_mod.loaded_adapters(model.obj)
    _image(model, [{**style1, "weight": 0.8}])
    assert lora_mod.loaded_adapters(model.obj) == before  # no reload for another weight
    monkeypatch.setattr(lora_mod, "MAX_ADAPTERS", 1)
    _image(model, [{**style2, "weight": 1.0}])
    assert lora_mod.loaded_adapters(model.obj) == [lora_mod.adapter_name(
        lora_mod.LoraRef(**style2))]  # fmt: skip
