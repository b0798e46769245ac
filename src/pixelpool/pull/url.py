"""Pull one .safetensors file from a direct http(s) URL: resumed with a Range request
when a partial file is there, checked against --size and --sha256 when given, and
placed by what its header says it is."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

from pixelpool.pull import place
from pixelpool.pull.plan import PullError
from pixelpool.pull.progress import bar

CHUNK = 1 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def file_name(url: str) -> str:
    name = Path(unquote(urlsplit(url).path)).name
    if not name.endswith(".safetensors"):
        raise PullError(f"{url} does not name a .safetensors file (pixelpool pulls no others)", 2)
    return name


def _download(url: str, part: Path, quiet: bool) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with httpx.stream("GET", url, headers=headers, follow_redirects=True, timeout=30) as resp:
        if resp.status_code == 416:  # the partial file is already whole
            return
        if resp.status_code >= 400:
            raise PullError(f"{url}: HTTP {resp.status_code}")
        resumed = resp.status_code == 206
        length = int(resp.headers.get("content-length") or 0)
        with part.open("ab" if resumed else "wb") as fh, bar(quiet) as progress:
            start = have if resumed else 0
            task = progress.add_task(part.name, total=start + length or None, completed=start)
            for chunk in resp.iter_bytes(CHUNK):
                fh.write(chunk)
                progress.advance(task, len(chunk))


def _check(path: Path, size: int | None, sha256: str | None) -> None:
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise PullError(f"size mismatch: expected {size} bytes, got {actual}")
    if sha256 is not None:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != sha256:
            raise PullError(f"SHA-256 mismatch: expected {sha256}, got {digest.hexdigest()}")


def pull_url(
    url: str,
    models_dir: Path,
    *,
    to: str | None = None,
    name: str | None = None,
    sha256: str | None = None,
    size: int | None = None,
    quiet: bool = False,
) -> Path:
    """Place the file at `url` under models_dir and return its path. A file that fails
    its checks is deleted: nothing is left behind."""
    if sha256 is not None and not _SHA256.match(sha256.lower()):
        raise PullError("--sha256: 64 hexadecimal digits", 2)
    filename = file_name(url)
    staging = place.staging_dir(models_dir, url)
    staging.mkdir(parents=True, exist_ok=True)
    part = staging / filename
    try:
        try:
            _download(url, part, quiet)
        except httpx.HTTPError as exc:
            raise PullError(f"cannot fetch {url}: {type(exc).__name__}: {exc}") from exc
        except OSError as exc:  # a full disk, most likely: the part is kept, to resume
            raise PullError(
                f"writing {part} failed: {exc.strerror or exc}; the partial download stays "
                "there and the next pull of this URL resumes it"
            ) from exc
        _check(part, size, sha256.lower() if sha256 else None)
        folder = to or place.classify_file(part)
        target = place.place_file(
            part, models_dir, folder, name or filename.removesuffix(".safetensors")
        )
    except PullError as exc:
        # A broken connection or a full disk: the partial file stays, to resume.
        if not isinstance(exc.__cause__, httpx.TransportError | OSError):
            place.clean_staging(staging)
        raise
    place.clean_staging(staging)
    return target
