import shutil
from pathlib import Path

import pytest

from pixelpool.registry.fingerprint import hash_file
from pixelpool.registry.registry import ModelNotFound, Registry


@pytest.fixture
def tree(models_dir: Path, tmp_path: Path) -> Path:
    root = tmp_path / "models"
    shutil.copytree(models_dir, root)
    (root / "loras").mkdir()
    (root / "sd15" / "notes.txt").write_text("not a model")
    (root / "sdxl" / "broken.safetensors").write_bytes(b"garbage")
    return root


def test_scan_names_family_and_architecture(tree: Path, tmp_path: Path) -> None:
    reg = Registry(tree, tmp_path / "reg.db")
    result = reg.scan()
    assert (result.added, result.total) == (2, 2)
    by_name = {e.name: e for e in reg.entries()}
    assert set(by_name) == {"demo-sd", "demo-sdxl"}
    assert by_name["demo-sd"].architecture == "sd15"
    assert by_name["demo-sdxl"].architecture == "sdxl"
    assert by_name["demo-sd"].format == "diffusers"
    assert by_name["demo-sd"].size_bytes > 100_000
    again = reg.scan()
    assert (again.added, again.removed, again.unchanged) == (0, 0, 2)
    reg.close()


def test_nested_names_are_relative_to_family_folder(tree: Path, tmp_path: Path) -> None:
    shutil.copytree(tree / "sd15" / "demo-sd", tree / "sd15" / "anime" / "other")
    reg = Registry(tree, tmp_path / "reg.db")
    reg.scan()
    assert reg.resolve("anime/other").path == (tree / "sd15/anime/other").resolve()
    reg.close()


def test_fingerprints_in_background_cached_and_resolvable(tree: Path, tmp_path: Path) -> None:
    reg = Registry(tree, tmp_path / "reg.db")
    reg.scan()
    assert reg.wait_for_fingerprints(timeout=60)
    entry = reg.resolve("demo-sd")
    fp = reg.fingerprint(entry)
    assert fp is not None and len(fp) == 64
    assert reg.resolve(fp) == entry
    assert reg.resolve(fp[:12]) == entry
    assert reg.resolve("sd15/demo-sd") == entry
    reg.close()

    # A new registry reads the cache instead of hashing again.
    reg2 = Registry(tree, tmp_path / "reg.db")
    reg2.scan()
    assert reg2.fingerprint(reg2.resolve("demo-sd")) == fp
    reg2.close()


def test_changed_file_gets_a_new_fingerprint(tree: Path, tmp_path: Path) -> None:
    reg = Registry(tree, tmp_path / "reg.db")
    reg.scan()
    reg.wait_for_fingerprints(60)
    before = reg.fingerprint(reg.resolve("demo-sd"))
    cfg = tree / "sd15/demo-sd/scheduler/scheduler_config.json"
    cfg.write_text(cfg.read_text().replace("1000", "999"))
    reg.scan()
    reg.wait_for_fingerprints(60)
    after = reg.fingerprint(reg.resolve("demo-sd"))
    assert after and after != before
    reg.close()


def test_unknown_model_raises(tree: Path, tmp_path: Path) -> None:
    reg = Registry(tree, tmp_path / "reg.db")
    reg.scan()
    with pytest.raises(ModelNotFound, match="nope"):
        reg.resolve("nope")
    with pytest.raises(ModelNotFound):
        reg.resolve("0123456789")  # a prefix that matches nothing
    reg.close()


def test_removed_model_disappears(tree: Path, tmp_path: Path) -> None:
    reg = Registry(tree, tmp_path / "reg.db")
    reg.scan()
    shutil.rmtree(tree / "sdxl" / "demo-sdxl")
    result = reg.scan()
    assert (result.removed, result.total) == (1, 1)
    reg.close()


def test_hash_file_is_plain_sha256(tmp_path: Path) -> None:
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    assert hash_file(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
