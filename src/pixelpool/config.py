"""Settings: one TOML file, every key overridable by PIXELPOOL_<SECTION>__<KEY>.

Validation happens once at start; a bad value stops start-up with an error that
names the key, never later in the middle of a request.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from pixelpool.families import FAMILIES

CONFIG_CANDIDATES = (Path("pixelpool.toml"), Path("conf/pixelpool.toml"))


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8800, ge=1, le=65535)
    data_dir: Path = Path("data")
    models_dir: Path = Path("models")
    cors_origins: list[str] = []
    default_model: str | None = None
    max_body_bytes: int = Field(50 * 1024 * 1024, ge=1024)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # text: for a terminal; json: one JSON object a line (server, workers, access log).
    log_format: Literal["text", "json"] = "text"
    # A bearer token that may read /metrics only (besides admin keys); a secret.
    metrics_token: str | None = Field(None, min_length=16)


class AuthSettings(_Section):
    """Auth is on when `keys` or `jwt_secret` is set, or a key was made with `pixelpool keys`."""

    keys: list[str] = []
    jwt_secret: str | None = Field(None, min_length=32, description="HS256 secret for JWTs")
    rate_limit_per_minute: float = Field(0, ge=0, description="requests per key; 0: no limit")
    rate_limit_burst: int = Field(0, ge=0, description="bucket size; 0: one minute's worth")


class LimitsSettings(_Section):
    """Bounds on request fields, enforced before a job is accepted."""

    min_size: int = Field(64, ge=8)
    max_size: int = Field(2048, ge=64)
    max_steps: int = Field(150, ge=1)
    max_cfg: float = Field(30.0, gt=0)
    max_prompt_chars: int = Field(10_000, ge=1)
    max_negative_prompt_chars: int = Field(10_000, ge=1)
    max_input_pixels: int = Field(4 * 2048 * 2048, ge=64 * 64)  # uploaded images
    max_images: int = Field(4, ge=1, le=64, description="images per request (OpenAI `n`)")
    # Image inputs given as http(s) URLs: off unless enabled (the server would make
    # requests on a client's behalf; see docs/security.md). A fetch is capped at
    # server.max_body_bytes, like an upload, and at fetch_timeout_s in all.
    fetch_urls: bool = False
    fetch_timeout_s: float = Field(10.0, gt=0, le=300)
    # A result (masks, arrays) whose encoding is larger than this is stored as an
    # artifact and returned by id and URL, unless the client asks for it inline.
    inline_result_bytes: int = Field(8 * 1024 * 1024, ge=1024)

    @model_validator(mode="after")
    def _ordered(self) -> LimitsSettings:
        if self.min_size > self.max_size:
            raise ValueError("min_size must not exceed max_size")
        return self


class SchedulerSettings(_Section):
    """max_batch "auto": as many images as the device's memory budget fits (the cost
    estimate), up to 16. batch_window_ms "auto": a batch shorter than the device's last
    one of the same kind waits briefly for companions (see engine/policy.py); a number
    holds every short batch that long after its first job arrived."""

    batching: bool = True
    max_batch: Annotated[int, Field(ge=1, le=64)] | Literal["auto"] = "auto"
    batch_window_ms: Annotated[int, Field(ge=0, le=10_000)] | Literal["auto"] = "auto"
    # A worker sends a batch's progress at most this often (previews and the last step
    # of a stage always go out); 0: every step.
    progress_interval_ms: int = Field(100, ge=0, le=10_000)
    # A seed gives the same image, bit for bit, in any batch (small matmuls padded, the
    # VAE one image at a time). false: the whole batch goes through the VAE at once and
    # small matmuls run as they are: images then differ from the solo image by rounding.
    batch_invariant: bool = True
    max_queue: int = Field(1000, ge=1)
    max_queue_per_key: int = Field(200, ge=1)
    max_retries: int = Field(2, ge=0)
    heartbeat_timeout_s: float = Field(30.0, ge=2.0)


class StorageSettings(_Section):
    ttl_s: int = Field(24 * 3600, ge=1)
    sweep_interval_s: float = Field(60.0, ge=0.1)
    job_store: str | None = None  # sqlite file path; default <data_dir>/jobs.db
    events_retain_s: float = Field(900.0, ge=0)  # job events kept after the job ends
    events_flush_s: float = Field(0.05, gt=0)  # buffered job events are written this often
    # New jobs are refused (503) while the disk of the data dir or the job store has less
    # free space than this (jobs/diskspace.py); 0: never refuse.
    min_free_mb: int = Field(256, ge=0)


WarmupSide = Annotated[int, Field(ge=64, le=4096, multiple_of=8)]
WarmupBatch = Annotated[int, Field(ge=1, le=64)]


class DeviceSettings(_Section):
    """One device's worker. vram_budget_gb: its model cache's device tier (default: the
    device's memory less a margin; half the RAM for the CPU). ram_budget_gb: the RAM tier
    that keeps models evicted from the device (default: a quarter of the system RAM for
    a GPU, none for the CPU); 0 turns it off. families: the task families (diffusion,
    upscale, bgremove, tag) this device runs; absent: every family."""

    enabled: bool = True
    capabilities: list[str] = ["*"]
    families: list[str] | None = None
    vram_budget_gb: float | None = Field(None, gt=0)
    ram_budget_gb: float | None = Field(None, ge=0)
    threads: int | None = Field(None, ge=1)
    # CPU workers: a hard cap on the worker's private memory. A batch that needs more
    # fails with out-of-memory, and is retried smaller or on another device, instead
    # of swapping the host or waking the kernel's OOM killer.
    memory_limit_gb: float | None = Field(None, gt=0)
    onload: list[str] = []
    pinned: list[str] = []
    # The GPU path (README, "Devices"). dtype auto: float16 on CUDA (bfloat16 for SD3 and
    # FLUX where the GPU has it), float32 on the CPU and MPS.
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    # NHWC UNet/VAE weights; unset: on for CUDA, off elsewhere.
    channels_last: bool | None = None
    # torch.compile of the UNet/transformer with static shapes: false, true ("default"),
    # "default", "max-autotune" or "reduce-overhead" (CUDA graphs).
    compile: bool | Literal["default", "max-autotune", "reduce-overhead"] = False
    # [width, height, batch] compiled when a model loads, before its first request.
    compile_warmup: list[tuple[WarmupSide, WarmupSide, WarmupBatch]] = []
    # Compiled shapes kept per model; new shapes past it run uncompiled.
    compile_cache_size: int = Field(8, ge=1, le=256)
    # Decode a batch (VAE, post-processing) in a second thread (CUDA: a second stream)
    # while the next batch denoises. auto: on for CUDA, off elsewhere (on the CPU the
    # two compete for the same cores; measured in docs/benchmarks.md).
    overlap_decode: bool | Literal["auto"] = "auto"
    # Send each job's result as soon as its image is decoded, so the server stores and
    # returns it while the rest of the batch decodes. auto: on for CUDA, off elsewhere
    # (on a CPU with few cores the storing slows the decode more than it saves;
    # measured in docs/benchmarks.md).
    stream_results: bool | Literal["auto"] = "auto"

    @field_validator("families")
    @classmethod
    def _known_families(cls, value: list[str] | None) -> list[str] | None:
        """A typo would leave a family with no device; say so at start-up instead."""
        if value is not None:
            unknown = [name for name in value if name not in FAMILIES]
            if unknown:
                known = ", ".join(sorted(FAMILIES))
                raise ValueError(f"unknown family {unknown[0]!r} (known: {known})")
        return value


class ClusterSettings(_Section):
    """Where workers run. local: one process per device of this machine. ray: one actor per
    device on every node of a Ray cluster; ray_address is "auto" (the cluster this
    machine is a node of), "ray://host:10001" (Ray Client), "host:6379", or empty:
    RAY_ADDRESS if set, else a new Ray runtime on this machine (loopback only).
    cpu_actors_per_node: CPU workers on each node (default: one on a node without GPUs,
    none beside GPUs; never more than the node's CPUs hold at cpus_per_actor each);
    cpus_per_actor: the Ray CPUs each CPU worker reserves;
    discover_interval_s: how often to look for nodes that joined and ask every node
    which models it has (0: only at start and on a model rescan); node_gone_after_s: how
    long the devices of a node that left stay listed (as gone) before they leave the
    status and the scheduler; wait_for_node_s: how long a queued job whose every node
    able to run it left waits for one to come back (a restart) before it fails (0: fails
    at once; new jobs for it get 503 meanwhile); max_inputs_mib: the most input files
    (uploads, latents) one job may send to a node (over it: 413 at submit)."""

    backend: Literal["local", "ray"] = "local"
    # `address` is accepted too (Ray's own word for it); use one of the two names.
    ray_address: str | None = Field(None, validation_alias=AliasChoices("ray_address", "address"))
    cpu_actors_per_node: int | None = Field(None, ge=0, le=64)
    cpus_per_actor: float = Field(1.0, gt=0)
    discover_interval_s: float = Field(10.0, ge=0)
    node_gone_after_s: float = Field(300.0, ge=0)
    wait_for_node_s: float = Field(60.0, ge=0)
    max_inputs_mib: float = Field(256.0, gt=0)


class Settings(BaseSettings):
    """The whole configuration. Device sections are keyed by device id (cpu, cuda0, mps)."""

    model_config = SettingsConfigDict(
        env_prefix="PIXELPOOL_", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    server: ServerSettings = ServerSettings()
    auth: AuthSettings = AuthSettings()
    limits: LimitsSettings = LimitsSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    storage: StorageSettings = StorageSettings()
    devices: dict[str, DeviceSettings] = {}
    cluster: ClusterSettings = ClusterSettings()

    _toml_file: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = settings_cls.model_config.get("toml_file")
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    @property
    def job_store_path(self) -> Path:
        return Path(self.storage.job_store or self.server.data_dir / "jobs.db")


def find_config_file(explicit: Path | None = None) -> Path | None:
    """The first config file that exists: --config, ./pixelpool.toml, ./conf/pixelpool.toml."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"config file not found: {explicit}")
        return explicit
    return next((p for p in CONFIG_CANDIDATES if p.is_file()), None)


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"])
    env = "PIXELPOOL_" + "__".join(str(p).upper() for p in error["loc"])
    return f"{key}: {error['msg']} (set in the config file or {env})"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Read the config file (if any), the environment and explicit overrides, in that order."""
    path = find_config_file(config_file)

    class _FileSettings(Settings):
        model_config = SettingsConfigDict(**{**Settings.model_config, "toml_file": path})

    try:
        settings = _FileSettings(**overrides)
    except ValidationError as exc:
        details = "; ".join(_describe(e) for e in exc.errors())
        raise ConfigError(f"invalid configuration: {details}") from exc
    except (OSError, ValueError) as exc:  # unreadable or malformed TOML
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    return Settings.model_validate(settings.model_dump())


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in {"1", "true", "yes", "on"}
