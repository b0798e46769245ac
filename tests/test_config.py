from pathlib import Path

import pytest

from pixelpool.config import ConfigError, load_settings


def test_defaults_without_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert (s.server.host, s.server.port) == ("127.0.0.1", 8800)
    assert s.job_store_path == Path("data/jobs.db")


def test_file_found_in_conf_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf/pixelpool.toml").write_text("[server]\nport = 9001\n")
    assert load_settings().server.port == 9001


def test_env_overrides_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text("[server]\nport = 9000\n[devices.cpu]\nthreads = 2\n")
    monkeypatch.setenv("PIXELPOOL_SERVER__PORT", "9100")
    monkeypatch.setenv("PIXELPOOL_SCHEDULER__MAX_BATCH", "8")
    s = load_settings(cfg)
    assert s.server.port == 9100
    assert s.scheduler.max_batch == 8
    assert s.devices["cpu"].threads == 2


@pytest.mark.parametrize(
    ("toml", "env", "key"),
    [
        ("[scheduler]\nmax_batch = 0\n", {}, "scheduler.max_batch"),
        ("[server]\nport = 'http'\n", {}, "server.port"),
        ("[scheduler]\nmax_bach = 3\n", {}, "scheduler.max_bach"),
        ("", {"PIXELPOOL_LIMITS__MAX_STEPS": "-1"}, "limits.max_steps"),
        ("[devices.cpu]\nthreads = 0\n", {}, "devices.cpu.threads"),
        ("[devices.cuda0]\nstream_results = 'sometimes'\n", {}, "devices.cuda0.stream_results"),
    ],
)
def test_invalid_value_names_the_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, toml: str, env: dict[str, str], key: str
) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text(toml)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    assert key in str(info.value)


def test_malformed_toml_and_missing_file(tmp_path: Path) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text("[server\nport = 1\n")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(cfg)
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml")


def test_device_families(tmp_path: Path) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text('[devices.cpu]\nfamilies = ["upscale", "bgremove"]\n[devices.cuda0]\n')
    s = load_settings(cfg)
    assert s.devices["cpu"].families == ["upscale", "bgremove"]
    assert s.devices["cuda0"].families is None  # absent: every family


def test_unknown_device_family_names_the_key_and_the_name(tmp_path: Path) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text('[devices.cuda0]\nfamilies = ["diffusion", "upscaler"]\n')
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    message = str(info.value)
    assert "devices.cuda0.families" in message and "'upscaler'" in message


def test_cluster_address_under_either_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`[cluster] address` (Ray's own word for it) and `ray_address` are one setting in the
    file; the environment has PIXELPOOL_CLUSTER__RAY_ADDRESS."""
    cfg = tmp_path / "p.toml"
    cfg.write_text('[cluster]\nray_address = "ray://head:10001"\n')
    assert load_settings(cfg).cluster.ray_address == "ray://head:10001"
    cfg.write_text('[cluster]\nbackend = "ray"\naddress = "auto"\n')
    assert load_settings(cfg).cluster.ray_address == "auto"
    cfg.write_text('[cluster]\nbackend = "ray"\n')
    monkeypatch.setenv("PIXELPOOL_CLUSTER__RAY_ADDRESS", "head:6379")
    assert load_settings(cfg).cluster.ray_address == "head:6379"


def test_cluster_address_under_both_names_is_refused(tmp_path: Path) -> None:
    """Both names in one file would leave one silently unused: refused, naming it."""
    cfg = tmp_path / "p.toml"
    cfg.write_text('[cluster]\nbackend = "ray"\naddress = "auto"\nray_address = "head:6379"\n')
    with pytest.raises(ConfigError, match=r"cluster\.address"):
        load_settings(cfg)
