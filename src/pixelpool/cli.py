"""The `pixelpool` command: init, demo, serve, models list (keys: cli_keys.py; pull:
cli_pull.py; generate, upscale, tag...: cli_client.py)."""

from __future__ import annotations

import ipaddress
import secrets
import socket
from pathlib import Path
from typing import Annotated

import typer

from pixelpool import logs
from pixelpool.cli_client import register as register_client_commands
from pixelpool.cli_keys import keys_app
from pixelpool.cli_pull import register as register_pull_command
from pixelpool.config import ConfigError, Settings, load_settings
from pixelpool.fdlimit import raise_open_files_limit
from pixelpool.jobs import datalock
from pixelpool.jobs.keys import keys_exist, keys_path
from pixelpool.sqlite_files import UnreadableStore, check_job_store, check_key_store

app = typer.Typer(
    help="pixelpool: a self-hosted inference server for image models.", no_args_is_help=True
)
models_app = typer.Typer(help="Inspect the models on disk.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(keys_app, name="keys")

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML config file")]
ModelsDirOpt = Annotated[Path | None, typer.Option("--models-dir", help="models directory")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="data directory")]


def _settings(config: Path | None, **server: object) -> Settings:
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    updates = {k: v for k, v in server.items() if v is not None}
    settings.server = settings.server.model_copy(update=updates)
    return settings


def with_cluster(settings: Settings, backend: str | None, address: str | None) -> Settings:
    """`serve --cluster/--ray-address` over the config file's [cluster]."""
    updates: dict[str, object] = {}
    if backend is not None:
        if backend not in ("local", "ray"):
            raise ConfigError(f"--cluster: expected local or ray, got {backend!r}")
        updates["backend"] = backend
    if address is not None:
        updates["ray_address"] = address
        updates.setdefault("backend", "ray")
    if updates:
        settings.cluster = settings.cluster.model_copy(update=updates)
    return settings


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
        except OSError:
            return False


INIT_TEMPLATE = """# pixelpool configuration. Every key can be overridden by an environment
# variable PIXELPOOL_<SECTION>__<KEY>, e.g. PIXELPOOL_SERVER__PORT=9000.

[server]
host = "127.0.0.1"          # a non-loopback address requires auth (or --insecure)
port = 8800
data_dir = "data"           # job store, artifacts, fingerprint cache
models_dir = "models"       # <family>/... diffusers dirs or .safetensors files
cors_origins = []
# default_model = "demo-sd"
log_format = "text"         # "json": one JSON object a line (docs/operations.md)
# metrics_token = "..."      (a bearer token for /metrics only; at least 16 characters)

[auth]
# Clients send "Authorization: Bearer <key>" or "?apikey=<key>".
keys = ["{secret}"]
# jwt_secret = "..."          (HS256 bearer tokens; at least 32 characters)
# Or create named, scoped keys: pixelpool keys create --name NAME [--scope admin]
rate_limit_per_minute = 0     # per key; 0: off
rate_limit_burst = 0

[limits]
min_size = 64
max_size = 2048
max_steps = 150
max_cfg = 30.0
max_images = 4              # images per request (OpenAI n, /v1/infer num_images)
max_input_pixels = 16777216 # uploaded images
max_prompt_chars = 10000
max_negative_prompt_chars = 10000
fetch_urls = false          # image inputs as http(s) URLs (see docs/security.md first)
fetch_timeout_s = 10.0      # a whole URL fetch, redirects included
inline_result_bytes = 8388608 # larger vision results are returned as artifacts

[scheduler]
batching = true             # run compatible queued jobs as one batch
max_batch = "auto"          # "auto": what the device's memory fits, up to 16; or a number
batch_window_ms = "auto"    # "auto": wait briefly for companions when the last batch was
                            # bigger; a number: hold every short batch this long
progress_interval_ms = 100   # a batch's progress at most this often (0: every step)
batch_invariant = true      # a seed gives the same image bit for bit in any batch; false:
                            # whole-batch VAE, faster, images within 1/255 of the solo one
max_queue = 1000
max_queue_per_key = 200
max_retries = 2             # re-runs of a job whose worker died

[storage]
ttl_s = 86400               # results are kept this long
events_retain_s = 900       # job events stay replayable this long after a job ends
min_free_mb = 256           # new jobs get 503 (and /ready fails) while the disk of the
                            # data dir or job store has less free space; 0: never

[cluster]
backend = "local"           # "ray": workers on every node of a Ray cluster (docs/deploy.md)
# ray_address = "auto"      # ray: "auto" (this machine is a node), "ray://head:10001",
                            # "head:6379"; empty: RAY_ADDRESS, else a new Ray runtime
                            # on this machine (listening on 127.0.0.1 only)
# cpu_actors_per_node = 1   # ray: CPU workers per node (default: 1 on a node without GPUs;
                            # at most as many as the node's CPUs hold)
# cpus_per_actor = 1.0      # ray: CPUs each CPU worker reserves (and its torch threads)
# discover_interval_s = 10  # ray: look for new nodes, and each node's models, this often
                            # (0: at start and on a model rescan only)
# node_gone_after_s = 300   # ray: a node that left shows as gone this long, then its
                            # devices leave the status (discovery adds them back)
# wait_for_node_s = 60     # ray: queued jobs whose nodes all left wait this long for
                            # one to come back (a restart), then fail; 0: fail at once
# max_inputs_mib = 256      # ray: the most input files one job sends to a node (else 413)
# Ray device ids name their node: [devices."<node>/cuda0"], [devices."<node>/cpu0"].

# Devices detected on this machine (one worker each when enabled):
{devices}"""


def _device_block(device_id: str, name: str, memory_gb: float, enabled: bool) -> str:
    return (
        f"[devices.{device_id}]   # {name}, {memory_gb:.1f} GiB\n"
        f"enabled = {'true' if enabled else 'false'}\n"
        'capabilities = ["*"]\n'
        '# families = ["diffusion", "upscale", "bgremove", "tag"]   (absent: every family)\n'
        "# vram_budget_gb = ...   (GPU) / ram_budget_gb = ... (CPU)\n"
        "# memory_limit_gb = ...  (CPU: hard cap; a batch over it fails as out-of-memory)\n"
        '# dtype = "auto"          (auto | float16 | bfloat16 | float32)\n'
        "# channels_last = ...    (default: true on CUDA, false elsewhere)\n"
        '# compile = false         (false | "default" | "max-autotune" | "reduce-overhead")\n'
        "# compile_warmup = [[1024, 1024, 1]]   ([width, height, batch] compiled at load)\n"
        '# overlap_decode = "auto"  (decode beside the next batch; auto: CUDA only)\n'
        '# stream_results = "auto"  (each result sent as its image decodes; auto: CUDA only)\n'
        "onload = []\npinned = []\n"
    )


@app.command()
def init(
    path: Annotated[Path, typer.Option("--path", help="file to write")] = Path("pixelpool.toml"),
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing file")] = False,
) -> None:
    """Write a commented pixelpool.toml with the detected devices and a random API key."""
    from pixelpool.engine.devices import detect_devices, select_devices

    if path.exists() and not force:
        typer.echo(f"error: {path} exists (use --force to overwrite)", err=True)
        raise typer.Exit(1)
    detected = detect_devices()
    chosen = {d.id for d in select_devices(detected, {})}
    blocks = "\n".join(
        _device_block(d.id, d.name, d.total_memory_bytes / 2**30, d.id in chosen) for d in detected
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(INIT_TEMPLATE.format(secret=secrets.token_urlsafe(32), devices=blocks))
    typer.echo(f"wrote {path}")


@app.command()
def demo(models_dir: ModelsDirOpt = None, config: ConfigOpt = None) -> None:
    """Write the tiny demo models (SD 1.x and SDXL) into the models dir. Idempotent."""
    from pixelpool.testing import write_demo_models

    target = models_dir or _settings(config).server.models_dir
    for path in write_demo_models(target):
        typer.echo(str(path))


@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="port")] = None,
    models_dir: ModelsDirOpt = None,
    data_dir: DataDirOpt = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="allow no auth off loopback")
    ] = False,
    cluster: Annotated[
        str | None, typer.Option("--cluster", help="where workers run: local or ray")
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option("--ray-address", help='ray: "auto", "ray://head:10001" or "head:6379"'),
    ] = None,
) -> None:
    """Start the server (default 127.0.0.1:8800)."""
    import uvicorn

    from pixelpool.engine.devices import detect_devices, select_devices
    from pixelpool.engine.local import start_fork_server

    settings = _settings(config, host=host, port=port, models_dir=models_dir, data_dir=data_dir)
    try:
        settings = with_cluster(settings, cluster, ray_address)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if settings.cluster.backend == "ray":  # Ray itself would retry for minutes
        from pixelpool.engine.ray_address import unreachable

        if (reason := unreachable(settings.cluster.ray_address)) is not None:
            typer.echo(f"error: {reason}", err=True)
            raise typer.Exit(1)
    try:  # a damaged job or key store: a sentence, not a traceback
        check_job_store(settings.job_store_path)
        check_key_store(keys_path(settings.server.data_dir))
    except UnreadableStore as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    auth_on = bool(settings.auth.keys or settings.auth.jwt_secret) or keys_exist(
        settings.server.data_dir
    )
    if not is_loopback(settings.server.host) and not auth_on and not insecure:
        typer.echo(
            f"error: refusing to serve on {settings.server.host} without auth; create a key "
            "(pixelpool keys create --name NAME), configure [auth] keys or jwt_secret, "
            "or pass --insecure",
            err=True,
        )
        raise typer.Exit(2)
    try:  # held for the process's life; the OS drops it at exit, kill -9 included
        data_lock = datalock.acquire(settings.server.data_dir)
    except datalock.DataDirBusy as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except OSError as exc:  # read-only, a file in the way, no permission: say so plainly
        typer.echo(
            f"error: cannot use the data dir {settings.server.data_dir}: "
            f"{exc.strerror or exc} (it keeps the job store, results and keys: it must be a "
            "writable directory)",
            err=True,
        )
        raise typer.Exit(1) from None
    if settings.cluster.backend == "local":  # its imports overlap the app's from here on
        start_fork_server(select_devices(detect_devices(), settings.devices))
    # Text or JSON lines; no key, token or bearer value in any log line.
    logs.configure(settings.server.log_level, settings.server.log_format)
    raise_open_files_limit()  # a descriptor per connection: the soft limit is often 1024
    from pixelpool.api.app import create_app
    from pixelpool.api.memory import freeze_startup_objects

    server_app = create_app(settings)
    freeze_startup_objects()
    uvicorn.run(
        server_app,
        host=settings.server.host,
        port=settings.server.port,
        log_level=settings.server.log_level,
        log_config=logs.uvicorn_log_config(settings.server.log_format),
        timeout_graceful_shutdown=10,
    )
    data_lock.release()


@models_app.command("list")
def models_list(
    config: ConfigOpt = None,
    models_dir: ModelsDirOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Print id, name, family, architecture and size of every model; TAESD preview
    decoders (vae_approx/) are listed with family `preview`."""
    from pixelpool.registry.registry import Registry

    settings = _settings(config, models_dir=models_dir, data_dir=data_dir)
    registry = Registry(settings.server.models_dir, settings.server.data_dir / "registry.db")
    registry.scan()
    registry.wait_for_fingerprints()
    rows = [("ID", "NAME", "FAMILY", "ARCHITECTURE", "SIZE")]
    for e in registry.entries():
        fp = registry.fingerprint(e) or "-"
        rows.append((fp[:16], e.name, e.family, e.architecture, f"{e.size_bytes / 2**20:.1f} MiB"))
    for d in registry.preview_decoders():
        size = f"{d.size_bytes / 2**20:.1f} MiB"
        rows.append(("-", f"{d.folder}/{d.name}", "preview", d.architecture, size))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    registry.close()


register_pull_command(app)
register_client_commands(app)  # after the server commands, so --help lists them first

if __name__ == "__main__":
    app()
