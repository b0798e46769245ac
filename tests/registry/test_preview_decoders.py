"""TAESD preview decoders under vae_approx/: found in both layouts, mapped to an
architecture by name, never offered as generation models."""

import shutil
from pathlib import Path

from pixelpool.registry.registry import Registry
from pixelpool.registry.scan import scan_models
from pixelpool.testing.taesd import write_tiny_taesd_dir, write_tiny_taesd_file


def test_both_layouts_found_and_mapped(tmp_path: Path) -> None:
    models = tmp_path / "models"
    approx = models / "vae_approx"
    write_tiny_taesd_file(approx / "taesd_decoder.safetensors")
    write_tiny_taesd_file(approx / "taesdxl_decoder.pth")
    write_tiny_taesd_file(approx / "taesd3_decoder.safetensors", latent_channels=16)
    write_tiny_taesd_dir(approx / "taef1")
    write_tiny_taesd_file(models / "VAE-approx" / "taesd_decoder.pt")  # A1111's folder and name
    write_tiny_taesd_file(approx / "taesd_encoder.safetensors")  # not a decoder
    (approx / "taesd_decoder.txt").write_text("not a model")
    (approx / "taesdxl_decoder.safetensors").write_bytes(b"garbage")  # unreadable: skipped

    reg = Registry(models, tmp_path / "reg.db")
    reg.scan()
    found = {(d.folder, d.name): d for d in reg.preview_decoders()}
    assert set(found) == {
        ("vae_approx", "taesd_decoder"), ("vae_approx", "taesdxl_decoder"),
        ("vae_approx", "taesd3_decoder"), ("vae_approx", "taef1"),
        ("VAE-approx", "taesd_decoder"),
    }  # fmt: skip
    arch = {key: d.architecture for key, d in found.items()}
    assert arch[("vae_approx", "taesd_decoder")] == "sd15"
    assert arch[("vae_approx", "taesdxl_decoder")] == "sdxl"
    assert arch[("vae_approx", "taesd3_decoder")] == "sd3"
    assert arch[("vae_approx", "taef1")] == "flux"
    taef1 = found[("vae_approx", "taef1")]
    assert taef1.format == "diffusers" and taef1.latent_channels == 4 and taef1.size_bytes > 0
    assert found[("vae_approx", "taesd3_decoder")].latent_channels == 16  # from the header
    assert found[("vae_approx", "taesdxl_decoder")].latent_channels is None  # .pth: unread

    # Not generation models: no entry, nothing to resolve.
    assert reg.entries() == [] and scan_models(models) == []
    # A safetensors file wins over a .pt for the same architecture.
    sd15 = reg.preview_decoder("sd15")
    assert sd15 is not None and sd15.path.name == "taesd_decoder.safetensors"
    assert sd15.to_wire() == {"path": str(sd15.path), "format": "single_file", "key": sd15.key}
    assert reg.preview_decoder("flux") == taef1
    reg.close()


def test_diffusers_dir_needs_a_telling_name_and_rescan_sees_changes(
    tmp_path: Path, models_dir: Path
) -> None:
    models = tmp_path / "models"
    shutil.copytree(models_dir / "sd15", models / "sd15")
    write_tiny_taesd_dir(models / "vae_approx" / "my-tiny-vae")  # cannot tell sd15 from sdxl
    write_tiny_taesd_dir(models / "vae_approx" / "madebyollin--TAESDXL")
    reg = Registry(models, tmp_path / "reg.db")
    reg.scan()
    assert [(d.name, d.architecture) for d in reg.preview_decoders()] == [
        ("madebyollin--TAESDXL", "sdxl")
    ]
    assert [e.name for e in reg.entries()] == ["demo-sd"]
    assert reg.preview_decoder("sd15") is None
    write_tiny_taesd_file(models / "vae_approx" / "taesd_decoder.safetensors")
    result = reg.scan()
    assert (result.added, result.total) == (0, 1)  # the counts are the models'
    assert reg.preview_decoder("sd15") is not None
    reg.close()
