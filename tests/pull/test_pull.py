"""`pixelpool pull` against a hub on loopback (HF_ENDPOINT): a tiny diffusers model in
the hub's layout, a tiny upscaler at a direct URL; the registry then finds them."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub.constants
import pytest
from typer.testing import CliRunner

from pixelpool.cli import app
from pixelpool.pull.place import staging_dir
from pixelpool.registry.scan import scan_models
from pixelpool.testing.tiny_upscale import write_tiny_upscaler

_spec = importlib.util.spec_from_file_location("fake_hub", Path(__file__).with_name("fake_hub.py"))
assert _spec and _spec.loader
fake_hub = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fake_hub)


@pytest.fixture(scope="module")
def hub(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """acme/tiny-sd: the demo SD 1.x model as a hub repo, plus what a pull must skip
    (a pickled copy of the UNet, a README, a root checkpoint) and an fp16 UNet it must
    take; /files/tiny-esrgan.safetensors: a tiny upscaler."""
    extra = tmp_path_factory.mktemp("hub")
    source = models_dir / "sd15" / "demo-sd"
    repo = {p.relative_to(source).as_posix(): p for p in source.rglob("*") if p.is_file()}
    unet = source / "unet" / "diffusion_pytorch_model.safetensors"
    (extra / "junk").write_bytes(b"not weights")
    (extra / "README.md").write_text("# tiny")
    repo |= {
        "unet/diffusion_pytorch_model.fp16.safetensors": unet,
        "unet/diffusion_pytorch_model.bin": extra / "junk",
        "tiny-sd.ckpt": extra / "junk",
        "README.md": extra / "README.md",
    }
    with fake_hub.FakeHub() as server:
        server.repos["acme/tiny-sd"] = repo
        server.files["tiny-esrgan.safetensors"] = write_tiny_upscaler(
            extra / "tiny-esrgan.safetensors"
        )
        yield server


@pytest.fixture
def env(hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HF_ENDPOINT at the loopback hub, online for this test only; an empty models dir."""
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return tmp_path / "models"


def _pull(*args: str):
    return CliRunner().invoke(app, ["pull", *args, "-q"])


def test_pull_diffusers_repo_places_only_what_the_family_needs(hub, env: Path) -> None:
    result = _pull("acme/tiny-sd", "--models-dir", str(env))
    assert result.exit_code == 0, result.output
    target = env / "sd15" / "tiny-sd"
    assert result.stdout.strip() == str(target)
    files = {p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()}
    assert "unet/diffusion_pytorch_model.safetensors" in files  # the fp16 file, renamed
    assert not [f for f in files if f.endswith((".bin", ".ckpt", ".md")) or ".fp16." in f]
    got = {path for method, path in hub.requested if method == "GET"}
    assert (
        "/acme/tiny-sd/resolve/"
        + hub.commit("acme/tiny-sd")
        + ("/unet/diffusion_pytorch_model.fp16.safetensors")
        in got
    )
    assert not any(p.endswith("unet/diffusion_pytorch_model.safetensors") for p in got)
    assert not (env / ".pull").exists()

    (entry,) = scan_models(env)
    assert (entry.name, entry.family, entry.architecture, entry.format) == (
        "tiny-sd", "diffusion", "sd15", "diffusers",
    )  # fmt: skip
    from diffusers import StableDiffusionPipeline  # the renamed weights load as they are

    StableDiffusionPipeline.from_pretrained(target, safety_checker=None)

    again = _pull("acme/tiny-sd", "--models-dir", str(env))
    assert again.exit_code == 1 and "already exists" in again.output
    assert not (env / ".pull").exists()  # no partial download to resume: nothing kept


def test_pull_bad_repo_is_a_clear_error(env: Path) -> None:
    missing = _pull("acme/missing", "--models-dir", str(env))
    assert missing.exit_code == 1 and "repo acme/missing not found" in missing.output
    malformed = _pull("not a repo!", "--models-dir", str(env))
    assert malformed.exit_code == 2 and "is not a repo id" in malformed.output
    assert not env.exists() or not any(env.iterdir())


def test_pull_url_checks_sha256_and_places_by_header(hub, env: Path) -> None:
    url = f"{hub.url}/files/tiny-esrgan.safetensors"
    data = hub.files["tiny-esrgan.safetensors"].read_bytes()
    wrong = _pull(url, "--models-dir", str(env), "--sha256", "0" * 64)
    assert wrong.exit_code == 1 and "SHA-256 mismatch" in wrong.output
    assert not env.exists() or not any(env.iterdir())  # nothing left behind

    part = staging_dir(env, url) / "tiny-esrgan.safetensors"  # an interrupted earlier pull
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:100])
    digest = hashlib.sha256(data).hexdigest()
    ok = _pull(url, "--models-dir", str(env), "--sha256", digest, "--size", str(len(data)),
               "--server", hub.url)  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert hub.ranges[-1] == "bytes=100-"  # resumed, and the whole file still checks out
    assert "refused the rescan (HTTP 501)" in ok.output  # placed anyway; found at next rescan
    assert ok.stdout.strip() == str(env / "upscale" / "tiny-esrgan.safetensors")
    (entry,) = scan_models(env)
    assert (entry.family, entry.architecture) == ("upscale", "ESRGAN")
    shutil.rmtree(env)


def test_a_full_disk_is_named_and_the_part_kept_to_resume(hub, env: Path) -> None:
    """The partial file's place is /dev/full, whose writes fail with the kernel's own
    ENOSPC: one line says so (no traceback) and the part stays for the next pull."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    url = f"{hub.url}/files/tiny-esrgan.safetensors"
    part = staging_dir(env, url) / "tiny-esrgan.safetensors"
    part.parent.mkdir(parents=True)
    part.symlink_to("/dev/full")
    full = _pull(url, "--models-dir", str(env))
    assert full.exit_code == 1 and isinstance(full.exception, SystemExit), full.output
    assert f"error: writing {part} failed: No space left on device" in full.output
    assert "the next pull of this URL resumes it" in full.output
    assert part.is_symlink()  # kept
    shutil.rmtree(env)
