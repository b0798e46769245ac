"""`pixelpool keys create|list|revoke`: API keys in `<data_dir>/keys.db`.

A running server on the same data dir picks changes up on its next request.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import Annotated

import typer

from pixelpool.config import ConfigError, load_settings
from pixelpool.jobs.keys import SCOPES, KeyStore, KeyStoreError, keys_path
from pixelpool.sqlite_files import UnreadableStore, check_key_store

keys_app = typer.Typer(help="Manage API keys (stored hashed).", no_args_is_help=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML config file")]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="data directory (default: from the config)")
]


def _store(config: Path | None, data_dir: Path | None) -> KeyStore:
    if data_dir is None:
        try:
            data_dir = load_settings(config).server.data_dir
        except ConfigError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
    try:
        check_key_store(keys_path(data_dir))
    except UnreadableStore as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    try:
        return KeyStore(keys_path(data_dir))
    except (OSError, sqlite3.Error) as exc:  # read-only, no permission, a file in the way
        typer.echo(f"error: cannot open the key store {keys_path(data_dir)}: {exc}", err=True)
        raise typer.Exit(1) from None


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", help="who the key is for; never reused")],
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help=f"repeatable: {', '.join(SCOPES)} (default generate)"),
    ] = None,
    rate_limit: Annotated[
        float | None, typer.Option("--rate-limit", help="requests per minute for this key")
    ] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Create a key and print it, alone, on stdout. It cannot be shown again."""
    store = _store(config, data_dir)
    try:
        token, record = store.create(name, scope or [], rate_limit)
    except KeyStoreError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        store.close()
    typer.echo(
        f"created key {record.name!r} with scopes {', '.join(sorted(record.scopes))}", err=True
    )
    typer.echo(token)


@keys_app.command("list")
def list_keys(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Name, scopes, rate limit, creation time and state of every key (never the key)."""
    store = _store(config, data_dir)
    records = store.all()
    store.close()
    rows = [("NAME", "SCOPES", "RATE/MIN", "CREATED", "STATE", "HASH")]
    for r in records:
        created = dt.datetime.fromtimestamp(r.created).isoformat(" ", "seconds")
        rate = "-" if r.rate_per_min is None else f"{r.rate_per_min:g}"
        state = "active" if r.active else "revoked"
        rows.append((r.name, ",".join(sorted(r.scopes)), rate, created, state, r.hint))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


@keys_app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="the key's name")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Revoke a key: requests with it fail from the next one on. Its name stays taken."""
    store = _store(config, data_dir)
    done = store.revoke(name)
    store.close()
    if not done:
        typer.echo(f"error: no active key named {name!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {name!r}", err=True)
