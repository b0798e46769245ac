"""`pixelpool pull`: fetch a model from a hub repo or a direct URL into the models dir,
in the folder its family reads. The server never downloads; this command is the one
place models come from the network, and only when a user runs it."""

from __future__ import annotations

from pathlib import Path

from pixelpool.pull.plan import PullError

__all__ = ["PullError", "is_url", "pull"]


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def pull(source: str, models_dir: Path, **options: object) -> Path:
    """Pull `source` (a repo id or an http(s) URL) and return where the model now is.
    Options: to, name, quiet; repos also revision, file, token; URLs also sha256, size."""
    try:
        return _pull(source, models_dir, **options)
    except OSError as exc:  # a full disk, a read-only models dir: a sentence, not a trace
        where = f": {exc.filename}" if exc.filename else ""
        raise PullError(f"cannot write the model{where}: {exc.strerror or exc}") from exc


def _pull(source: str, models_dir: Path, **options: object) -> Path:
    if is_url(source):
        from pixelpool.pull.url import pull_url

        bad = {"revision", "file", "token"} & {k for k, v in options.items() if v is not None}
        if bad:
            raise PullError(f"--{', --'.join(sorted(bad))}: only for a repo, not a URL", 2)
        options = {k: v for k, v in options.items() if k not in ("revision", "file", "token")}
        return pull_url(source, models_dir, **options)  # type: ignore[arg-type]
    from pixelpool.pull.hub import pull_repo

    bad = {"sha256", "size"} & {k for k, v in options.items() if v is not None}
    if bad:
        raise PullError(f"--{', --'.join(sorted(bad))}: only for a direct URL", 2)
    options = {k: v for k, v in options.items() if k not in ("sha256", "size")}
    return pull_repo(source, models_dir, **options)  # type: ignore[arg-type]
