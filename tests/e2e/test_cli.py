"""The `pixelpool` command as a user runs it."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pixelpool.config import load_settings
from pixelpool.testing.taesd import write_tiny_taesd_file


def pixelpool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pixelpool.cli", *args],
        capture_output=True, text=True, cwd=cwd, timeout=300,
    )  # fmt: skip


def test_init_writes_a_valid_commented_config(tmp_path: Path) -> None:
    target = tmp_path / "conf" / "pixelpool.toml"
    result = pixelpool("init", "--path", str(target))
    assert result.returncode == 0, result.stderr
    text = target.read_text()
    assert text.startswith("#") and "[devices.cpu]" in text
    data = tomllib.loads(text)
    assert len(data["auth"]["keys"][0]) >= 32
    settings = load_settings(target)
    assert settings.devices["cpu"].enabled
    again = pixelpool("init", "--path", str(target))
    assert again.returncode == 1 and "exists" in again.stderr
    other = tmp_path / "other.toml"
    pixelpool("init", "--path", str(other))
    assert tomllib.loads(other.read_text())["auth"]["keys"] != data["auth"]["keys"]


def test_demo_is_idempotent_and_models_list(tmp_path: Path) -> None:
    models = tmp_path / "models"
    first = pixelpool("demo", "--models-dir", str(models))
    assert first.returncode == 0, first.stderr
    index = models / "sd15/demo-sd/model_index.json"
    stamp = index.stat().st_mtime_ns
    assert pixelpool("demo", "--models-dir", str(models)).returncode == 0
    assert index.stat().st_mtime_ns == stamp
    write_tiny_taesd_file(models / "vae_approx" / "taesd_decoder.safetensors")
    listing = pixelpool("models", "list", "--models-dir", str(models), "--data-dir", str(tmp_path))
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "FAMILY", "ARCHITECTURE", "SIZE"]
    rows = {line.split()[1]: line.split() for line in lines[1:]}
    assert rows["demo-sd"][2:4] == ["diffusion", "sd15"]
    assert rows["demo-sdxl"][2:4] == ["diffusion", "sdxl"]
    assert len(rows["demo-sd"][0]) == 16  # fingerprint prefix
    taesd = rows["vae_approx/taesd_decoder"]  # a TAESD preview decoder, not a model
    assert taesd[0] == "-" and taesd[2:4] == ["preview", "sd15"]


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10"])
def test_serve_refuses_public_bind_without_auth(tmp_path: Path, host: str) -> None:
    result = pixelpool("serve", "--host", host, "--data-dir", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert "without auth" in result.stderr and "--insecure" in result.stderr


def test_serve_reports_bad_config_by_key(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[scheduler]\nmax_batch = -3\n")
    result = pixelpool("serve", "--config", str(cfg))
    assert result.returncode == 2 and "scheduler.max_batch" in result.stderr


@pytest.mark.parametrize("damaged", ["jobs.db", "keys.db"])
def test_serve_names_a_damaged_store_instead_of_a_traceback(tmp_path: Path, damaged: str) -> None:
    (tmp_path / damaged).write_bytes(b"not a database" * 300)
    result = pixelpool("serve", "--data-dir", str(tmp_path), "--models-dir", str(tmp_path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: the {'job' if damaged == 'jobs.db' else 'key'} store")
    assert "restore it from a backup" in result.stderr


def test_serve_names_a_data_dir_it_cannot_use(tmp_path: Path) -> None:
    in_the_way = tmp_path / "data"
    in_the_way.write_text("a file where the data dir should be")
    result = pixelpool("serve", "--data-dir", str(in_the_way), "--models-dir", str(tmp_path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: cannot use the data dir {in_the_way}: ")
    assert "must be a writable directory" in result.stderr
    result = pixelpool("keys", "list", "--data-dir", str(in_the_way))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: cannot open the key store {in_the_way}/keys.db: ")


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_serve_names_a_ray_address_where_nothing_listens(tmp_path: Path, scheme: str) -> None:
    """Ray would retry for minutes; the server says which address at once."""
    import socket

    with socket.socket() as s:  # a port nothing listens on (bound, never listened)
        s.bind(("127.0.0.1", 0))
        address = f"{scheme}127.0.0.1:{s.getsockname()[1]}"
        result = pixelpool(
            "serve", "--data-dir", str(tmp_path / "data"), "--models-dir", str(tmp_path),
            "--cluster", "ray", "--ray-address", address,
        )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(
        f"error: cannot reach the Ray cluster at {address} (cluster.ray_address): "
    ), result.stderr


def test_serve_names_a_ray_address_that_is_not_one(tmp_path: Path) -> None:
    result = pixelpool(
        "serve", "--data-dir", str(tmp_path), "--cluster", "ray", "--ray-address", "head-6379"
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "cluster.ray_address 'head-6379' is not host:port" in result.stderr
