"""Turn a dialect's request into a JobSpec: model lookup, defaults, limits, seeds.

Every dialect calls these, so each operation is validated and built once.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from pixelpool.api.errors import ApiError, field_error
from pixelpool.api.state import AppState
from pixelpool.jobs.service import QueueFull
from pixelpool.jobs.spec import JobRecord, JobSpec
from pixelpool.pipelines.diffusion.params import NATIVE_SIZE, Txt2ImgParams, resolve_seed
from pixelpool.registry.entry import ModelEntry
from pixelpool.registry.registry import ModelNotFound

DEFAULT_STEPS = 25
DEFAULT_CFG = 7.0


def resolve_model(state: AppState, name: str | None, field: str = "model") -> ModelEntry:
    try:
        if name:
            return state.registry.resolve(name)
        return state.registry.default_entry(state.settings.server.default_model)
    except ModelNotFound as exc:
        raise ApiError(404, f"{field}: model not found: {exc.name}", field) from exc


def _check_size(state: AppState, field: str, value: int) -> None:
    limits = state.settings.limits
    if value % 8:
        raise field_error(field, f"must be a multiple of 8, got {value}")
    if not limits.min_size <= value <= limits.max_size:
        raise field_error(field, f"must be between {limits.min_size} and {limits.max_size}")


def txt2img_spec(
    state: AppState,
    *,
    prompt: str,
    negative_prompt: str = "",
    model: str | None = None,
    width: int | None = None,
    height: int | None = None,
    steps: int | None = None,
    cfg_scale: float | None = None,
    seed: int | None = None,
    sampler: str | None = None,
    scheduler: str | None = None,
    priority: int = 100,
    output_format: str = "png",
) -> JobSpec:
    limits = state.settings.limits
    entry = resolve_model(state, model)
    native = NATIVE_SIZE[entry.architecture]
    width = native if width is None else width
    height = native if height is None else height
    _check_size(state, "width", width)
    _check_size(state, "height", height)
    steps = DEFAULT_STEPS if steps is None else steps
    if not 1 <= steps <= limits.max_steps:
        raise field_error("steps", f"must be between 1 and {limits.max_steps}")
    cfg = DEFAULT_CFG if cfg_scale is None else cfg_scale
    if not 1 <= cfg <= limits.max_cfg:
        raise field_error("cfg_scale", f"must be between 1 and {limits.max_cfg}")
    if len(prompt) > limits.max_prompt_chars:
        raise field_error("prompt", f"is longer than {limits.max_prompt_chars} characters")
    try:
        params = Txt2ImgParams(
            prompt=prompt,
            negative_prompt=negative_prompt or "",
            width=width,
            height=height,
            steps=steps,
            cfg_scale=cfg,
            seed=resolve_seed(seed),
            sampler=sampler,
            scheduler=scheduler,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "body"
        raise field_error(field, str(err.get("ctx", {}).get("error") or err["msg"])) from exc
    return JobSpec(
        op="txt2img",
        family=entry.family,
        model=entry.to_wire(),
        params=params.model_dump(),
        batch_key=list(params.batch_key()),
        priority=priority,
        output_format=output_format,
    )


async def submit(
    state: AppState, spec: JobSpec, owner: str | None = None, idempotency_key: str | None = None
) -> JobRecord:
    try:
        return await state.jobs.submit(spec, owner, idempotency_key)
    except QueueFull as exc:
        raise ApiError(429, str(exc), headers={"Retry-After": str(exc.retry_after_s)}) from exc
    except ValueError as exc:  # no device can run it
        raise ApiError(422, str(exc)) from exc


def describe_model(state: AppState, entry: ModelEntry) -> dict[str, Any]:
    native = NATIVE_SIZE[entry.architecture]
    return {
        "name": entry.name,
        "path": str(entry.path),
        "type": entry.architecture,
        "id": state.registry.fingerprint(entry),
        "family": entry.family,
        "architecture": entry.architecture,
        "format": entry.format,
        "size_bytes": entry.size_bytes,
        "defaults": {"width": native, "height": native, "steps": DEFAULT_STEPS,
                     "cfg_scale": DEFAULT_CFG},
    }  # fmt: skip
