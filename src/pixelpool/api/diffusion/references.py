"""Reference images (IP-Adapter) for any dialect: adapter lookup, checks, storage.

A request's references go with an IP-Adapter for its model's architecture: the one it
names, else the installed default (`Registry.ip_adapter`). The adapter is resolved
against the already-built spec's model (so an unknown model is a 404 before anything
is stored), then each reference is checked and stored like any upload, and the spec's
params gain an `ip_adapter` (an IPAdapterRef), which also enters its batch key.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from pixelpool.api.errors import ApiError, field_error
from pixelpool.api.state import AppState
from pixelpool.api.uploads import store_image
from pixelpool.api.validation import Name, RequestModel, validation_error
from pixelpool.api.vision.inputs import store_image_input
from pixelpool.families.diffusion.params import OP_PARAMS
from pixelpool.jobs.spec import JobSpec
from pixelpool.registry.ip_adapters import IPAdapterEntry, IPAdapterNotFound

DEFAULT_SCALE = 0.7
MAX_SCALE = 10.0
MAX_REFERENCES = 16
FOLDER_HINT = "install one under models/ip-adapter/ with its image_encoder/ beside it"
ARCHITECTURES = frozenset({"sd15", "sdxl"})  # UNet models: diffusers' IP-Adapter loader


class IPAdapterRequest(RequestModel):
    """Reference images for an IP-Adapter. In JSON bodies `images` holds them (base64 or
    http(s) URLs); multipart routes send them as `reference` files instead."""

    name: Name | None = Field(None, description="from /api/ip-adapter-list; default: the "
                              "installed one for the model's architecture")  # fmt: skip
    scale: float = Field(DEFAULT_SCALE, ge=0, le=MAX_SCALE, description="0: no effect")
    images: list[str] = Field([], max_length=MAX_REFERENCES, description="base64 or URLs")


def resolve(
    state: AppState, model: dict[str, Any], name: str | None, field: str, name_field: str
) -> IPAdapterEntry:
    """The adapter for `model` (a spec's model): 404 for an unknown name, 422 for another
    architecture or when none is installed (naming `field`, the references')."""
    arch = model.get("architecture")
    if arch not in ARCHITECTURES:
        raise field_error(field, f"reference images work with SD 1.x and SDXL models, not {arch}")
    if name:
        try:
            adapter = state.registry.resolve_ip_adapter(name)
        except IPAdapterNotFound as exc:
            raise ApiError(404, f"{name_field}: IP-Adapter not found: {exc.name}",
                           name_field) from exc  # fmt: skip
        if adapter.architecture not in (None, arch):
            raise field_error(
                name_field,
                f"IP-Adapter {adapter.name!r} is for {adapter.architecture}, but model "
                f"{model.get('name')!r} is {arch}",
            )
        return adapter
    adapter = state.registry.ip_adapter(arch or "")
    if adapter is None:
        raise field_error(field, f"no IP-Adapter for {arch} models is installed; {FOLDER_HINT}")
    return adapter


def check_scale(field: str, scale: Any) -> float:
    if isinstance(scale, bool) or not isinstance(scale, int | float):
        raise field_error(field, "must be a number")
    if not math.isfinite(scale) or not 0 <= scale <= MAX_SCALE:
        raise field_error(field, f"must be between 0 and {MAX_SCALE:g}")
    return float(scale)


def attach(spec: JobSpec, adapter: IPAdapterEntry, scale: float, images: list[Path]) -> JobSpec:
    """`spec` with these references: params re-validated, batch key recomputed."""
    params = {**spec.params, "ip_adapter": adapter.to_wire(scale, [str(p) for p in images])}
    try:
        checked: Any = OP_PARAMS[spec.op].model_validate(params)
    except ValidationError as exc:
        raise validation_error(exc) from exc
    return spec.model_copy(update={"params": params, "batch_key": list(checked.batch_key())})


def _count(field: str, n: int) -> None:
    if not 1 <= n <= MAX_REFERENCES:
        raise field_error(field, f"send 1 to {MAX_REFERENCES} reference images, got {n}")


async def from_encoded(
    state: AppState,
    spec: JobSpec,
    owner: str | None,
    images: list[str],
    *,
    name: str | None = None,
    scale: Any = DEFAULT_SCALE,
    field: str = "ip_adapter.images",
    name_field: str = "ip_adapter.name",
    scale_field: str = "ip_adapter.scale",
) -> JobSpec:
    """References given as base64 strings (or URLs) in a JSON body."""
    _count(field, len(images))
    value = check_scale(scale_field, scale)
    adapter = resolve(state, spec.model, name, field, name_field)
    paths = []
    for i, text in enumerate(images):
        label = f"{field}[{i}]" if len(images) > 1 or field.endswith("images") else field
        paths.append((await store_image_input(state, text, label, owner))[0])
    return attach(spec, adapter, value, paths)


async def from_uploads(
    state: AppState,
    spec: JobSpec,
    owner: str | None,
    files: list[bytes],
    *,
    name: str | None = None,
    scale: Any = DEFAULT_SCALE,
    field: str = "reference",
    name_field: str = "ip_adapter.name",
    scale_field: str = "ip_adapter.scale",
) -> JobSpec:
    """References uploaded as multipart files named `field`."""
    _count(field, len(files))
    value = check_scale(scale_field, scale)
    adapter = resolve(state, spec.model, name, field, name_field)
    return attach(spec, adapter, value, await store_uploads(state, files, field, owner))


async def store_uploads(
    state: AppState, files: list[bytes], field: str, owner: str | None, first: int = 0
) -> list[Path]:
    """Check and store uploaded references; `field[i]` names a bad one (i from `first`)."""
    paths = []
    for i, data in enumerate(files, start=first):
        label = field if len(files) == 1 and not first else f"{field}[{i}]"
        paths.append((await store_image(state, data, label, owner))[0])
    return paths


def describe(adapter: IPAdapterEntry) -> dict[str, Any]:
    """An adapter as /api/ip-adapter-list shows it."""
    return {"name": adapter.name, "architecture": adapter.architecture,
            "variant": adapter.variant, "size_bytes": adapter.size_bytes}  # fmt: skip
