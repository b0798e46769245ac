"""`pixelpool generate`, `upscale`, `remove-background`, `tag`: the native API from a
shell, over `pixelpool.client`, with a progress bar fed by the job's events.

Exit codes (scripts rely on them): 0 done; 2 usage (bad option, unreadable input);
3 the server refused the request (4xx; the field on stderr); 4 auth (401/403);
5 server or connection error (5xx, 429, unreachable, the job failed);
130 interrupted (Ctrl-C; the job is cancelled on the server first).
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pixelpool.client import (
    DEFAULT_SERVER,
    BadRequest,
    Client,
    Forbidden,
    ImageResult,
    PixelpoolError,
    Unauthorized,
)
from pixelpool.client import Progress as JobProgress

OK, USAGE, REFUSED, AUTH, SERVER, INTERRUPTED = 0, 2, 3, 4, 5, 130

ServerOpt = Annotated[str, typer.Option("--server", envvar="PIXELPOOL_SERVER", help="server URL")]
KeyOpt = Annotated[
    str | None,
    typer.Option("--key", envvar="PIXELPOOL_KEY", show_default=False, help="API key"),
]
OutOpt = Annotated[Path, typer.Option("-o", "--output", help="file to write")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="model name or id")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")]
ShowOpt = Annotated[
    bool | None,
    typer.Option("--show/--no-show", help="show the image inline (default: when the "
                 "terminal can: kitty, iTerm2, WezTerm)"),
]  # fmt: skip

FORMATS = {".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}


def exit_code(exc: PixelpoolError) -> int:
    if isinstance(exc, Unauthorized | Forbidden):
        return AUTH
    if isinstance(exc, BadRequest):
        return REFUSED
    return SERVER


def _fail(exc: PixelpoolError) -> typer.Exit:
    where = f" (field: {exc.field})" if exc.field else ""
    status = f"{exc.status} " if exc.status else ""
    typer.echo(f"error: {status}{exc.message}{where}", err=True)
    return typer.Exit(exit_code(exc))


def image_protocol() -> str | None:
    """The inline-image protocol the terminal on stderr speaks, if any."""
    if not sys.stderr.isatty():
        return None
    if os.environ.get("KITTY_WINDOW_ID") or os.environ.get("TERM") == "xterm-kitty":
        return "kitty"
    term = os.environ.get("TERM_PROGRAM", "")
    if term in ("iTerm.app", "WezTerm") or os.environ.get("LC_TERMINAL") == "iTerm2":
        return "iterm"
    return None


def inline_image(data: bytes, protocol: str, columns: int = 32) -> str:
    """The escape sequence that draws a PNG in the terminal, `columns` cells wide."""
    encoded = base64.b64encode(data).decode()
    if protocol == "iterm":
        return f"\x1b]1337;File=inline=1;width={columns};size={len(data)}:{encoded}\x07\n"
    chunks = [encoded[i : i + 4096] for i in range(0, len(encoded), 4096)]
    out = []
    for i, chunk in enumerate(chunks):
        more = int(i < len(chunks) - 1)
        head = f"a=T,f=100,c={columns},m={more}" if i == 0 else f"m={more}"
        out.append(f"\x1b_G{head};{chunk}\x1b\\")
    return "".join(out) + "\n"


def _run_job(client: Client, job_id: str, quiet: bool, label: str) -> None:
    """Wait for the job with a progress bar on stderr; on Ctrl-C cancel it first."""
    try:
        if quiet:
            client.wait(job_id)
            return
        console = Console(stderr=True)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, transient=True) as bar:  # fmt: skip
            task = bar.add_task(f"{label}: queued", total=None)

            def update(p: JobProgress) -> None:
                stage = f"{label}: {p.stage}" if p.stage else label
                bar.update(task, completed=p.step, total=p.total or None, description=stage)

            client.wait(job_id, on_progress=update)
    except KeyboardInterrupt:
        try:
            client.cancel(job_id)
            typer.echo(f"cancelled job {job_id}", err=True)
        except PixelpoolError as exc:
            typer.echo(f"interrupted; cancelling job {job_id} failed: {exc.message}", err=True)
        raise typer.Exit(INTERRUPTED) from None


def _job(
    server: str, key: str | None, quiet: bool, label: str,
    submit: Callable[[Client], str],
) -> Any:  # fmt: skip
    """Submit, follow, fetch the result; errors become the documented exit codes."""
    try:
        with Client(server, key or "") as client:
            job_id = submit(client)
            _run_job(client, job_id, quiet, label)
            return client.result(job_id)
    except PixelpoolError as exc:
        raise _fail(exc) from None
    except OSError as exc:  # an input file
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(USAGE) from None


def _write(result: ImageResult, output: Path, show: bool | None) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(result.data)
    seed = f", seed {result.seed}" if result.seed is not None else ""
    typer.echo(f"wrote {output}{seed}")
    protocol = image_protocol()
    if show is not False and protocol and result.media_type == "image/png":
        sys.stderr.write(inline_image(result.data, protocol))
        sys.stderr.flush()


def _input(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(USAGE) from None


def generate(
    prompt: Annotated[str, typer.Argument(help="what to draw")],
    output: OutOpt,
    model: ModelOpt = None,
    width: Annotated[int | None, typer.Option(help="default: the model's")] = None,
    height: Annotated[int | None, typer.Option()] = None,
    steps: Annotated[int | None, typer.Option()] = None,
    cfg: Annotated[float | None, typer.Option("--cfg", help="cfg scale")] = None,
    seed: Annotated[int | None, typer.Option(help="absent: random (printed)")] = None,
    negative: Annotated[str | None, typer.Option("--negative", help="negative prompt")] = None,
    sampler: Annotated[str | None, typer.Option(help="Euler, DPM++ 2M Karras, ...")] = None,
    server: ServerOpt = DEFAULT_SERVER,
    key: KeyOpt = None,
    quiet: QuietOpt = False,
    show: ShowOpt = None,
) -> None:
    """Generate an image (txt2img) and write it to -o (PNG, or JPEG/WebP by suffix)."""
    fields = {"model": model, "width": width, "height": height, "steps": steps,
              "cfg_scale": cfg, "seed": seed, "negative_prompt": negative,
              "sampler": sampler,
              "output_format": FORMATS.get(output.suffix.lower(), "png")}  # fmt: skip
    result = _job(server, key, quiet, "generate",
                  lambda c: c.enqueue("generate", prompt=prompt, **fields))  # fmt: skip
    _write(result, output, show)


def upscale(
    image: Annotated[Path, typer.Argument(help="the image to upscale")],
    output: OutOpt,
    model: ModelOpt = None,
    scale: Annotated[float | None, typer.Option(help="e.g. 2; default: the model's")] = None,
    server: ServerOpt = DEFAULT_SERVER,
    key: KeyOpt = None,
    quiet: QuietOpt = False,
    show: ShowOpt = None,
) -> None:
    """Upscale an image with an upscale model and write it to -o (PNG)."""
    data = _input(image)
    result = _job(server, key, quiet, "upscale",
                  lambda c: c.enqueue("upscale", image=data, model=model, scale=scale))  # fmt: skip
    _write(result, output, show)


def remove_background(
    image: Annotated[Path, typer.Argument(help="the image")],
    output: OutOpt,
    model: ModelOpt = None,
    mask_only: Annotated[bool, typer.Option("--mask-only", help="the mask alone")] = False,
    server: ServerOpt = DEFAULT_SERVER,
    key: KeyOpt = None,
    quiet: QuietOpt = False,
    show: ShowOpt = None,
) -> None:
    """Remove an image's background and write the RGBA PNG (or the mask) to -o."""
    data = _input(image)
    fields = {"model": model, "mask_only": mask_only or None}
    result = _job(server, key, quiet, "remove-background",
                  lambda c: c.enqueue("bgremove", image=data, **fields))  # fmt: skip
    _write(result, output, show)


def tag(
    image: Annotated[Path, typer.Argument(help="the image")],
    model: ModelOpt = None,
    threshold: Annotated[
        float | None, typer.Option("--threshold", help="general tags' score threshold")
    ] = None,
    server: ServerOpt = DEFAULT_SERVER,
    key: KeyOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Tag an image; prints `{"tags", "characters", "rating"}` as JSON on stdout."""
    data = _input(image)
    fields = {"model": model, "general_threshold": threshold}
    result = _job(server, key, quiet, "tag", lambda c: c.enqueue("tag", image=data, **fields))
    typer.echo(json.dumps(result, indent=2))


def register(app: typer.Typer) -> None:
    """Add the client commands to the `pixelpool` command."""
    for command in (generate, upscale, tag):
        app.command()(command)
    app.command("remove-background")(remove_background)
