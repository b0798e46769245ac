"""A vision request as a job: the model that serves the operation, the images stored as
artifacts, the options validated by the family's params. Every vision route (the
Vision Models API dialect, the native `/api/segment|detect|depth|embed`) builds its
JobSpec here, so a bad request is the same 4xx naming the same field everywhere,
before any image is stored or any job queued.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from pydantic import ValidationError

from pixelpool.api import ops
from pixelpool.api.errors import ApiError, field_error
from pixelpool.api.state import AppState
from pixelpool.api.validation import validation_error
from pixelpool.api.vision.inputs import store_image_input
from pixelpool.api.vision.types import TYPE_OF_OP
from pixelpool.families.vision import (
    POINT_MODELS,
    TEXT_MODELS,
    prompt_problem,
    task_of,
    wrong_task,
)
from pixelpool.families.vision.params import MAX_IMAGES, PARAMS
from pixelpool.jobs.spec import JobSpec
from pixelpool.registry.entry import ModelEntry

FAMILY = "vision"
SET_BY_SERVER = ("images", "image_sizes")  # from the inputs, never from the options


@dataclass(frozen=True)
class StoredImage:
    """An image already stored (an artifact's file, e.g. a chained result) and its size."""

    path: Path
    width: int
    height: int


ImageInput = str | Path | StoredImage  # base64 / URL, or a stored file


def check_op(op: str) -> str:
    if op not in PARAMS:
        raise ApiError(404, f"unknown vision operation {op!r}; valid: {', '.join(PARAMS)}")
    return op


def _takes(architecture: str, options: dict[str, Any]) -> bool:
    """Whether a segment model can take the request's kinds of prompt (text: SAM 3's
    detector; points: its tracker)."""
    if options.get("prompts") and architecture not in TEXT_MODELS:
        return False
    return not (options.get("points") and architecture not in POINT_MODELS)


def resolve_vision_model(
    state: AppState,
    op: str,
    name: str | None,
    field: str = "model",
    options: dict[str, Any] | None = None,
) -> ModelEntry:
    """The installed model that serves `op`: the named one (404 unknown, 422 when it is
    another family's or another task's), else an installed model of that task, one
    that can take the request's `options` (its kinds of prompt) first."""
    if name is not None:
        entry = ops.resolve_model(state, name, field, family=FAMILY)
        problem = wrong_task(op, entry.name, entry.architecture)
        if problem:
            raise field_error(field, problem)
        return entry
    serving = [e for e in state.registry.entries()
               if e.family == FAMILY and task_of(e.architecture) == op]  # fmt: skip
    # The model type's own architecture first: /inference/dinov3 takes a DINOv3 model
    # over a DINOv2 one when both are installed.
    named = TYPE_OF_OP[op].replace("-", "_")

    def rank(entry: ModelEntry) -> tuple[bool, bool]:
        own = entry.architecture.replace("-", "_").startswith(named)
        return not _takes(entry.architecture, options or {}), not own

    serving.sort(key=rank)
    if serving:
        return serving[0]
    raise ApiError(404, f"{field}: no installed vision model serves {op!r}", field)


def check_images(images: Any, field: str = "images") -> list[Any]:
    """1 to MAX_IMAGES inputs, each a string (or an already stored image)."""
    if not isinstance(images, list) or not images:
        raise field_error(field, "must be a non-empty list of base64 images or http(s) URLs")
    if len(images) > MAX_IMAGES:
        raise field_error(field, f"at most {MAX_IMAGES} images per request, got {len(images)}")
    for i, value in enumerate(images):
        if not isinstance(value, str | Path | StoredImage):
            raise field_error(f"{field}[{i}]", "must be a base64 image or an http(s) URL")
    return images


def _size_of(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        return img.size


async def store_inputs(
    state: AppState, owner: str | None, images: list[ImageInput], field: str = "images"
) -> list[StoredImage]:
    """Every input checked and stored (in order); the first bad one is a 4xx naming it."""
    stored = []
    for i, value in enumerate(images):
        if isinstance(value, StoredImage):
            stored.append(value)
        elif isinstance(value, Path):
            width, height = await asyncio.to_thread(_size_of, value)
            stored.append(StoredImage(value, width, height))
        else:
            path, checked = await store_image_input(state, value, f"{field}[{i}]", owner)
            stored.append(StoredImage(path, checked.width, checked.height))
    return stored


def build_vision_spec(
    op: str, entry: ModelEntry, stored: list[StoredImage], options: dict[str, Any], priority: int
) -> JobSpec:
    """The spec from stored images and the op's options (pydantic errors: 422 naming the field)."""
    for name in SET_BY_SERVER:
        if name in options:
            raise field_error(name, "is set by the server from the images sent")
    fields = {
        **options,
        "images": [str(s.path) for s in stored],
        "image_sizes": [(s.width, s.height) for s in stored],
    }
    try:
        params = PARAMS[op].model_validate(fields)
    except ValidationError as exc:
        raise validation_error(exc) from exc
    problem = prompt_problem(entry.name, entry.architecture, params)
    if problem:
        raise field_error(*problem)
    if not 1 <= priority <= 100:
        raise field_error("priority", "must be an integer between 1 and 100")
    return JobSpec(op=op, family=FAMILY, model=entry.to_wire(), params=params.model_dump(),
                   batch_key=list(params.batch_key()), priority=priority)  # fmt: skip


def precheck_options(op: str, options: dict[str, Any], count: int) -> None:
    """Validate the options against placeholder images before anything is stored, so a
    bad threshold never costs an upload (or a URL fetch)."""
    placeholder = [StoredImage(Path("unchecked"), 1, 1)] * count
    entry_free = {**options, "images": [str(s.path) for s in placeholder]}
    try:
        PARAMS[op].model_validate(entry_free)
    except ValidationError as exc:
        raise validation_error(exc) from exc


async def vision_spec(
    state: AppState,
    owner: str | None,
    op: str,
    model: str | None,
    images: list[ImageInput],
    options: dict[str, Any],
    priority: int = 100,
    field: str = "images",
) -> JobSpec:
    """A vision job's spec: model resolved, options checked, then the inputs stored.

    `images`: base64 strings or http(s) URLs (fetched when `limits.fetch_urls` is on),
    or already stored files (`Path` / `StoredImage`). `options`: the op's params
    (`families.vision.params.PARAMS[op]`) without `images` / `image_sizes`."""
    check_op(op)
    entry = resolve_vision_model(state, op, model, options=options)
    check_images(images, field)
    for name in SET_BY_SERVER:
        if name in options:
            raise field_error(name, "is set by the server from the images sent")
    precheck_options(op, options, len(images))
    stored = await store_inputs(state, owner, images, field)
    return build_vision_spec(op, entry, stored, options, priority)
