"""The Ray transport, worker side: an actor that runs the worker core on its node.

The engine's messages arrive as `deliver` calls (a concurrency group of their own, so
a cancel lands while a batch runs); everything the core sends, and a heartbeat while
it is quiet, goes back on one long-lived streaming call, `events`, that the server
iterates. The actor's death ends that stream with an error: that is how the server
learns a node or a worker is gone.

Models: each node reads them from its own models dir, `PIXELPOOL_NODE_MODELS_DIR` in
the environment of its `ray start` (by default the server's `server.models_dir` path),
with the server's layout. Paths under the server's models dir are rewritten to this
node's on the way in, and back on the way out (cache reports), so the server only ever
sees its own paths.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from pixelpool.engine.messages import Admin, AdminDone, BatchDone, Heartbeat, Ready, RunBatch
from pixelpool.engine.worker import WorkerCore, prepare_process

log = logging.getLogger("pixelpool.worker")

HEARTBEAT_S = 2.0
# Ray concurrency groups: the event stream holds one thread for the actor's life;
# deliveries (runs, cache commands, cancels) take another, so they are never stuck
# behind a running batch.
CONCURRENCY = {"events": 1, "control": 1}
NODE_MODELS_ENV = "PIXELPOOL_NODE_MODELS_DIR"


def node_models_dir(server_models_dir: str) -> str:
    """This node's models dir: its own setting, else the server's path."""
    return str(Path(os.environ.get(NODE_MODELS_ENV) or server_models_dir).resolve())


def models_here(server_models_dir: str, relative: list[str]) -> tuple[str, list[str]]:
    """This node's models dir and which of the server's models (paths relative to its
    models dir) exist in it: a stat each."""
    root = Path(node_models_dir(server_models_dir))
    return str(root), [r for r in relative if (root / r).exists()]


class PathMap:
    """Rewrites paths under one models dir to another (the server's and a node's)."""

    def __init__(self, server_root: str, node_root: str) -> None:
        self.server_root = server_root.rstrip("/")
        self.node_root = node_root.rstrip("/")

    def inward(self, message: object) -> object:
        return _rewrite(message, lambda v: _move(v, self.server_root, self.node_root))

    def outward(self, message: object) -> object:
        return _rewrite(message, lambda v: _move(v, self.node_root, self.server_root))

    @property
    def identity(self) -> bool:
        return self.server_root == self.node_root


def _move(value: str, old: str, new: str) -> str:
    if value == old or value.startswith(old + "/"):
        return new + value[len(old) :]
    return value


def _rewrite(value: Any, change: Callable[[str], str]) -> Any:
    """`value` with `change` applied to every string in it (dataclasses, dicts, lists)."""
    if isinstance(value, str):
        return change(value)
    if isinstance(value, dict):
        return {k: _rewrite(v, change) for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite(v, change) for v in value]
    if type(value) is tuple:
        return tuple(_rewrite(v, change) for v in value)
    if is_dataclass(value) and not isinstance(value, type):
        return replace(value, **{f.name: _rewrite(getattr(value, f.name), change)
                                 for f in fields(value) if f.init})  # fmt: skip
    return value


class WorkerActor:
    """Made a Ray actor class by `engine/ray_backend.py` (so this module needs no ray)."""

    def __init__(
        self, device: dict[str, Any], options: dict[str, Any], server_models_dir: str = ""
    ) -> None:
        prepare_process(device, options)
        paths = PathMap(server_models_dir, node_models_dir(server_models_dir or "."))
        self.paths = paths if server_models_dir and not paths.identity else None
        self._outbox: queue.Queue[object] = queue.Queue()
        self._stage = Path(tempfile.mkdtemp(prefix="pixelpool-inputs-"))
        self.core = WorkerCore(device, options, self._outbox.put)
        threading.Thread(target=self._serve, name="serve", daemon=True).start()

    def _serve(self) -> None:
        try:
            self.core.open()
            self.core.serve()
        except Exception:
            log.exception("worker %s failed", self.core.device["id"])
        finally:
            self._outbox.put(None)  # ends the event stream: the server sees the exit
            shutil.rmtree(self._stage, ignore_errors=True)

    def deliver(self, message: object, files: dict[str, bytes] | None = None) -> None:
        if files and isinstance(message, RunBatch):
            message = localize(message, files, self._stage)
        if self.paths is not None and isinstance(message, RunBatch | Admin):
            message = self.paths.inward(message)
        self.core.deliver(message)

    def events(self) -> Iterator[object]:
        while True:
            try:
                message = self._outbox.get(timeout=HEARTBEAT_S)
            except queue.Empty:
                yield Heartbeat(time.time())
                continue
            if message is None:
                return
            if self.paths is not None and isinstance(message, Ready | BatchDone | AdminDone):
                message = self.paths.outward(message)  # their cache reports name paths
            yield message


def localize(run: RunBatch, files: dict[str, bytes], stage: Path) -> RunBatch:
    """Write the batch's input files here and point its params at these copies."""
    local: dict[str, str] = {}
    for original, data in files.items():
        name = hashlib.sha256(data).hexdigest()[:32] + Path(original).suffix
        target = stage / name
        if not target.exists():
            partial = target.with_suffix(target.suffix + ".part")
            partial.write_bytes(data)
            partial.rename(target)
        local[original] = str(target)
    items = [replace(item, params=_swap(item.params, local)) for item in run.items]
    return replace(run, items=items)


def _swap(value: Any, paths: dict[str, str]) -> Any:
    if isinstance(value, str):
        return paths.get(value, value)
    if isinstance(value, dict):
        return {k: _swap(v, paths) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_swap(v, paths) for v in value)
    return value


def input_files(run: RunBatch, data_dir: Path) -> dict[str, bytes]:
    """The files under the server's data dir that the batch's params name (uploads,
    latents, control images, embeddings): a remote node has no such directory."""
    root = data_dir.resolve()
    found: dict[str, bytes] = {}
    for item in run.items:
        for _, named, path in data_files(item.params, root):
            if named not in found:
                found[named] = path.read_bytes()
    return found


def staged_bytes(params: dict[str, Any], data_dir: Path) -> dict[str, int]:
    """How many bytes of input files each top-level param would send to a node (a stat
    each): what `cluster.max_inputs_mib` caps."""
    sizes: dict[str, int] = {}
    seen: set[str] = set()
    for field, named, path in data_files(params, data_dir.resolve()):
        if named not in seen:
            seen.add(named)
            sizes[field] = sizes.get(field, 0) + path.stat().st_size
    return sizes


def data_files(params: dict[str, Any], root: Path) -> Iterator[tuple[str, str, Path]]:
    """(top-level param, the string naming it, the file) for each string in `params`
    that names a file under `root`."""

    def walk(value: Any) -> Iterator[tuple[str, Path]]:
        if isinstance(value, str):
            if len(value) > 4096 or "\n" in value:
                return
            try:
                path = Path(value).resolve()
                if path.is_relative_to(root) and path.is_file():
                    yield value, path
            except (OSError, ValueError):
                return
        elif isinstance(value, dict):
            for v in value.values():
                yield from walk(v)
        elif isinstance(value, list | tuple):
            for v in value:
                yield from walk(v)

    for field, value in params.items():
        for named, path in walk(value):
            yield field, named, path
