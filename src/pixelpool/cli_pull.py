"""`pixelpool pull`: put a model from a hub repo or a direct URL into the models dir.

Exit codes: 0 placed; 1 the pull failed (not found, refused, checksum, network);
2 usage (not a repo id or URL, options that do not fit the source).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import httpx
import typer

Opt = typer.Option


def _rescan(server: str, key: str | None) -> None:
    """Ask a running server to rescan now (admin scope); it would within a minute anyway."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        resp = httpx.post(f"{server.rstrip('/')}/api/rescan-models", headers=headers, timeout=60)
    except httpx.HTTPError as exc:
        typer.echo(f"warning: {server} not reached ({exc}); it finds the model at its next "
                   "rescan (every minute)", err=True)  # fmt: skip
        return
    if resp.status_code != 200:
        typer.echo(f"warning: {server} refused the rescan (HTTP {resp.status_code}); it finds "
                   "the model at its next rescan (every minute)", err=True)  # fmt: skip
    else:
        typer.echo(
            f"registered: {server} now lists {resp.json().get('models', '?')} models", err=True
        )


def pull(
    source: Annotated[
        str, typer.Argument(help="a repo id (owner/name) or an http(s) URL of a .safetensors file")
    ],
    models_dir: Annotated[Path | None, Opt("--models-dir", help="models directory")] = None,
    config: Annotated[Path | None, Opt("--config", help="TOML config file")] = None,
    revision: Annotated[str | None, Opt("--revision", help="repo branch, tag or commit")] = None,
    file: Annotated[
        str | None, Opt("--file", help="the one .safetensors file of the repo to pull")
    ] = None,
    to: Annotated[
        str | None, Opt("--to", help="folder under the models dir (default: detected)")
    ] = None,
    name: Annotated[
        str | None, Opt("--name", help="model name (default: the repo's or file's)")
    ] = None,
    sha256: Annotated[
        str | None, Opt("--sha256", help="URL only: the file's expected SHA-256")
    ] = None,
    size: Annotated[
        int | None, Opt("--size", help="URL only: the file's expected size in bytes")
    ] = None,
    token: Annotated[
        str | None, Opt("--token", help="hub token (default: HF_TOKEN or your login)")
    ] = None,
    server: Annotated[
        str | None, Opt("--server", help="a running server to register the model with")
    ] = None,
    key: Annotated[
        str | None, Opt("--key", envvar="PIXELPOOL_KEY", help="its admin API key")
    ] = None,
    quiet: Annotated[bool, Opt("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Download a model into the models dir, in the folder its family reads; prints its path.
    A hub repo (HF_ENDPOINT picks the hub) gives only the files its family needs
    (safetensors, fp16 when there); a URL gives one .safetensors file."""
    from pixelpool.cli import _settings
    from pixelpool.pull import PullError
    from pixelpool.pull import pull as run_pull
    from pixelpool.pull.place import model_name

    target_dir = models_dir or _settings(config).server.models_dir
    try:
        if name is not None:
            model_name(name)
        if to is not None:
            model_name(to)
        path = run_pull(
            source, target_dir, revision=revision, file=file, to=to, name=name,
            sha256=sha256, size=size, token=token, quiet=quiet,
        )  # fmt: skip
    except PullError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.code) from None
    typer.echo(str(path))
    if server:
        _rescan(server, key)


def register(app: typer.Typer) -> None:
    app.command()(pull)
