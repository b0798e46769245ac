"""Single-file checkpoint identification: real safetensors headers, no torch needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from pixelpool.families.diffusion.checkpoints import detect_architecture, read_tensor_names

UNET = "model.diffusion_model.input_blocks.0.0.weight"
VAE = "first_stage_model.encoder.conv_in.weight"
SD1_CLIP = "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"
SDXL_CLIP = "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight"
SDXL_OPENCLIP = "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"


def _write(path: Path, names: list[str]) -> Path:
    save_file({name: np.zeros((2, 2), dtype=np.float32) for name in names}, str(path), {"k": "v"})
    return path


def test_read_tensor_names_lists_tensors_but_not_metadata(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.safetensors", ["b.weight", "a.bias"])
    assert sorted(read_tensor_names(path)) == ["a.bias", "b.weight"]


def test_detect_architecture_is_none_for_unrelated_tensors(tmp_path: Path) -> None:
    path = _write(tmp_path / "other.safetensors", ["encoder.layer.0.weight", "head.bias"])
    assert detect_architecture(read_tensor_names(path)) is None


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        ([UNET, VAE, SD1_CLIP], "sd15"),
        ([UNET, VAE, SDXL_CLIP, SDXL_OPENCLIP], "sdxl"),
        ([UNET, VAE, "conditioner.embedders.0.model.text_projection"], "sdxl-refiner"),
        ([UNET, VAE, "cond_stage_model.model.token_embedding.weight"], "sd2"),
        ([SD1_CLIP, VAE], None),  # no UNet: not a full model
        ([UNET, VAE], None),  # no text encoder: family unknown
        (["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"], None),
        ([], None),
    ],
)
def test_detect_architecture_from_names(names: list[str], expected: str | None) -> None:
    assert detect_architecture(iter(names)) == expected


@pytest.mark.parametrize(
    "content", [b"", b"\x01\x02", b"\xff" * 8 + b"{}", b"\x04" + b"\x00" * 7 + b"nope"]
)
def test_read_tensor_names_rejects_files_that_are_not_safetensors(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "broken.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError):
        read_tensor_names(path)


def test_checkpoints_module_does_not_import_torch() -> None:
    code = "import sys, pixelpool.families.diffusion.checkpoints; sys.exit('torch' in sys.modules)"
    src = Path(__file__).resolve().parents[2] / "src"
    result = subprocess.run(
        [sys.executable, "-c", code], env={"PYTHONPATH": str(src)}, capture_output=True
    )
    assert result.returncode == 0, result.stderr.decode()
