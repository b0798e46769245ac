"""One rich progress bar for a pull, fed by huggingface_hub's downloads (which report
through a tqdm-shaped class) and by the direct URL download."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


def bar(quiet: bool) -> Progress:
    """A byte-counting bar on stderr (stdout carries the placed path alone)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=quiet,
        transient=False,
    )


def tqdm_for(progress: Progress, task: TaskID) -> type:
    """A class huggingface_hub accepts as `tqdm_class`: each file's bar advances `task`."""

    class _Bar:
        def __init__(self, *args: Any, initial: int = 0, **kwargs: Any) -> None:
            self.n = initial
            if initial:
                progress.advance(task, initial)

        def update(self, n: float | None = 1) -> None:
            self.n += int(n or 0)
            progress.advance(task, int(n or 0))

        def __enter__(self) -> _Bar:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def __getattr__(self, name: str) -> Any:
            """close, refresh, set_postfix_str...: nothing to do for a shared bar."""
            return lambda *args, **kwargs: None

    return _Bar
