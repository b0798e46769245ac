"""Turn a dialect's request into a JobSpec: model lookup, defaults, limits, seeds, LoRAs.

Every dialect calls these, so each operation is validated and built once. Defaults
come from, in order: the request, the chosen preset (`quality`), the model's
manifest, the server. Operations other than txt2img are in `diffusion/specs.py`.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import ValidationError

from pixelpool import families
from pixelpool.api.errors import ApiError, field_error
from pixelpool.api.state import AppState
from pixelpool.api.validation import check_name, check_prompts, clean_prompt, validation_error
from pixelpool.families.base import OpParams
from pixelpool.families.diffusion.describe import BUILTIN_PRESETS, model_defaults
from pixelpool.families.diffusion.params import (
    LatentFormat,
    Txt2ImgParams,
    resolve_seed,
)
from pixelpool.families.diffusion.prompts import extract_lora_tags
from pixelpool.families.diffusion.samplers import (
    check_combination,
    resolve_sampler,
)
from pixelpool.jobs.service import (
    InputsTooLarge,
    NoDeviceFits,
    NoDeviceServes,
    QueueFull,
    StorageFull,
)
from pixelpool.jobs.spec import JobRecord, JobSpec
from pixelpool.registry.entry import ModelEntry
from pixelpool.registry.loras import LoraNotFound
from pixelpool.registry.registry import ModelNotFound, WrongFamily


def resolve_model(
    state: AppState, name: str | None, field: str = "model", family: str | None = "diffusion"
) -> ModelEntry:
    """The model an operation of `family` names (None: any family, as admin ops take):
    404 when unknown, 422 when it is another family's model."""
    try:
        if name:
            check_text_field(field, name)
            return state.registry.resolve(name, family)
        return state.registry.default_entry(state.default_model(), family or "diffusion")
    except ModelNotFound as exc:
        raise ApiError(404, f"{field}: model not found: {exc.name}", field) from exc
    except WrongFamily as exc:
        raise field_error(field, str(exc)) from exc


def infotext_model(state: AppState, name: str | None, model_hash: str | None) -> str | None:
    """The model an infotext names: by name when installed, else by its A1111 hash."""
    if not model_hash or not name:
        return name
    try:
        state.registry.resolve(name, "diffusion")
        return name
    except (ModelNotFound, WrongFamily):
        try:
            return state.registry.resolve(model_hash, "diffusion").qualified_name
        except (ModelNotFound, WrongFamily):
            return name  # the 404 then names the model the text gave


def check_text_field(field: str, value: Any) -> None:
    """A name from any dialect: a string, printable, no path outside its folder (422)."""
    if not isinstance(value, str):
        raise field_error(field, "must be a string")
    try:
        check_name(value)
    except ValueError as exc:
        raise field_error(field, str(exc)) from exc


_INTS = ("width", "height", "steps", "seed", "subseed")
_NUMBERS = ("cfg_scale", "subseed_strength")
_NAMES = ("sampler", "scheduler", "quality")


def check_types(request: dict[str, Any]) -> None:
    """Strict types whatever the dialect: `true` is not a number, NaN is not a value."""
    for field in (*_INTS, *_NUMBERS):
        value = request.get(field)
        if value is None:
            continue
        kinds = int if field in _INTS else int | float
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise field_error(
                field, "must be a number" if field in _NUMBERS else "must be an integer"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise field_error(field, "must be a finite number")
    for field in _NAMES:
        if request.get(field) is not None:
            check_text_field(field, request[field])
    loras = request.get("loras")
    if loras is not None and (
        not isinstance(loras, list) or not all(isinstance(x, dict) and "name" in x for x in loras)
    ):
        raise field_error("loras", "must be a list of {name, weight}")


def presets(entry: ModelEntry) -> dict[str, dict[str, Any]]:
    named = dict(BUILTIN_PRESETS)
    if entry.manifest is not None:
        named.update({k: v.set_fields() for k, v in entry.manifest.presets.items()})
    return named


def check_size(state: AppState, field: str, value: int, max_size: int | None = None) -> None:
    limits = state.settings.limits
    upper = max_size or limits.max_size
    if value % 8:
        raise field_error(field, f"must be a multiple of 8, got {value}")
    if not limits.min_size <= value <= upper:
        raise field_error(field, f"must be between {limits.min_size} and {upper}")


def resolve_loras(
    state: AppState, entry: ModelEntry, requested: list[tuple[str, float]]
) -> list[dict[str, Any]]:
    """Registry LoRAs for (name, weight) pairs: 404 when unknown, 422 for another architecture.

    A name given twice keeps its last weight (a prompt tag overrides the `loras` field).
    """
    by_name: dict[str, dict[str, Any]] = {}
    for name, weight in requested:
        check_text_field("loras", name)
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise field_error("loras", f"weight of {name!r} must be a number")
        try:
            lora = state.registry.resolve_lora(name)
        except LoraNotFound as exc:
            raise ApiError(404, f"loras: LoRA not found: {exc.name}", "loras") from exc
        if lora.architecture not in (None, entry.architecture):
            raise field_error(
                "loras",
                f"LoRA {lora.name!r} is for {lora.architecture}, but model {entry.name!r} "
                f"is {entry.architecture}",
            )
        if not -10 <= weight <= 10:  # also refuses NaN
            raise field_error("loras", f"weight of {name!r} must be between -10 and 10")
        by_name[lora.name] = {"name": lora.name, "path": str(lora.path), "key": lora.key,
                              "weight": float(weight)}  # fmt: skip
    return list(by_name.values())


def _resolve_sampler(sampler: Any, scheduler: Any) -> tuple[str | None, str | None]:
    """Canonical names; an A1111 name such as 'DPM++ 2M Karras' names the schedule too."""
    if not isinstance(sampler, str | None) or not isinstance(scheduler, str | None):
        check_types({"sampler": sampler, "scheduler": scheduler})
    try:
        return resolve_sampler(sampler, scheduler)
    except ValueError as exc:
        field, _, message = str(exc).partition(": ")
        raise field_error(field, message) from exc


def _given_sampler(given: dict[str, Any]) -> dict[str, Any]:
    """One layer's (defaults, preset, request) sampler and schedule, split before the
    layers merge, so a schedule in the request's sampler name replaces the model's
    default schedule, and a request's scheduler replaces one in a default's name."""
    if not given.get("sampler"):
        return given
    sampler, schedule = _resolve_sampler(given["sampler"], given.get("scheduler"))
    return {**given, "sampler": sampler, **({"scheduler": schedule} if schedule else {})}


def _sampler_fields(entry: ModelEntry, sampler: str | None, scheduler: str | None) -> dict:
    sampler, schedule = _resolve_sampler(sampler or None, scheduler or None)
    problem = check_combination(entry.architecture, sampler, schedule, entry.zero_snr)
    if problem:
        field, _, message = problem.partition(": ")
        raise field_error(field, message)
    return {"sampler": sampler, "scheduler": schedule}


def sampling_fields(
    state: AppState,
    entry: ModelEntry,
    request: dict[str, Any],
    *,
    max_size: int | None = None,
) -> dict[str, Any]:
    """Resolve the fields every sampling op shares: defaults, limits, seeds, sampler, LoRAs.

    `request` holds what the client sent (None: not given): prompt, negative_prompt,
    width, height, steps, cfg_scale, seed, sampler, scheduler, loras, subseed,
    subseed_strength, quality.
    """
    limits = state.settings.limits
    quality = request.get("quality")
    named = presets(entry)
    if quality and quality not in named:
        raise field_error("quality", f"unknown preset {quality!r}; valid: {', '.join(named)}")
    # An empty negative prompt counts as "not given", so a manifest's default applies.
    given = {
        k: v for k, v in request.items() if v is not None and (k, v) != ("negative_prompt", "")
    }
    layers = (model_defaults(entry), named.get(quality or "", {}), given)
    merged = {k: v for layer in layers for k, v in _given_sampler(layer).items()}
    check_prompts(limits, request.get("prompt"), request.get("negative_prompt"))
    check_types(merged)
    prompt = clean_prompt(merged.get("prompt") or "")
    prompt, tags = extract_lora_tags(prompt)
    for field in ("width", "height"):
        check_size(state, field, merged[field], max_size)
    if not 1 <= merged["steps"] <= limits.max_steps:
        raise field_error("steps", f"must be between 1 and {limits.max_steps}")
    if not 1 <= merged["cfg_scale"] <= limits.max_cfg:
        raise field_error("cfg_scale", f"must be between 1 and {limits.max_cfg}")
    requested = [(lora["name"], lora.get("weight", 1.0)) for lora in merged.get("loras", [])]
    strength = float(merged.get("subseed_strength") or 0.0)
    fields = {
        "prompt": prompt,
        "negative_prompt": clean_prompt(merged.get("negative_prompt") or ""),
        "width": merged["width"],
        "height": merged["height"],
        "steps": merged["steps"],
        "cfg_scale": merged["cfg_scale"],
        "seed": resolve_seed(merged.get("seed")),
        "loras": resolve_loras(state, entry, requested + [(t.name, t.weight) for t in tags]),
        "subseed": resolve_seed(merged.get("subseed")) if strength else None,
        "subseed_strength": strength,
        **_sampler_fields(entry, merged.get("sampler"), merged.get("scheduler")),
    }
    return fields


def build_spec(
    op: str,
    entry: ModelEntry,
    params_cls: type[OpParams],
    fields: dict[str, Any],
    priority: int = 100,
    output_format: str = "png",
) -> JobSpec:
    """Validate resolved fields into the op's params; errors name the field."""
    try:
        params = params_cls(**fields)
    except ValidationError as exc:
        raise validation_error(exc) from exc
    return JobSpec(
        op=op,
        family=entry.family,
        model=entry.to_wire(),
        params=params.model_dump(),
        batch_key=list(params.batch_key()),
        priority=priority,
        output_format=output_format,
    )


def txt2img_spec(
    state: AppState,
    *,
    prompt: str,
    negative_prompt: str | None = None,
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
    loras: list[dict[str, Any]] | None = None,
    subseed: int | None = None,
    subseed_strength: float | None = None,
    quality: str | None = None,
    latent_format: LatentFormat | None = None,
) -> JobSpec:
    entry = resolve_model(state, model)
    request = {
        "prompt": prompt, "negative_prompt": negative_prompt, "width": width, "height": height,
        "steps": steps, "cfg_scale": cfg_scale, "seed": seed, "sampler": sampler,
        "scheduler": scheduler, "loras": loras, "subseed": subseed,
        "subseed_strength": subseed_strength, "quality": quality,
    }  # fmt: skip
    fields = sampling_fields(state, entry, request)
    if latent_format is not None:
        fields["latent_format"] = latent_format
    return build_spec("txt2img", entry, Txt2ImgParams, fields, priority, output_format)


def enable_previews(state: AppState, spec: JobSpec, every: int) -> None:
    """Ask for a preview every `every` steps (0: none). With a TAESD decoder installed for
    the model's architecture, the worker decodes previews with it (full size); else
    it uses a latent-to-RGB approximation (1/8 size). The path goes in the params so
    that the worker, not this process, loads it."""
    spec.params["preview_every"] = every
    decoder = state.registry.preview_decoder(spec.model["architecture"]) if every else None
    spec.params["preview_decoder"] = decoder.to_wire() if decoder is not None else None


async def submit(
    state: AppState, spec: JobSpec, owner: str | None = None, idempotency_key: str | None = None
) -> JobRecord:
    if "emit_caches" in spec.params and owner in state.cache_listeners:
        spec.params["emit_caches"] = True  # its owner has a WebSocket asking for caches
    try:
        return await state.jobs.submit(spec, owner, idempotency_key)
    except QueueFull as exc:
        raise ApiError(429, str(exc), headers={"Retry-After": str(exc.retry_after_s)}) from exc
    except StorageFull as exc:  # the server's disk, not the request: 503, come back later
        raise ApiError(503, str(exc), headers={"Retry-After": str(exc.retry_after_s)}) from exc
    except NoDeviceServes as exc:  # the server's configuration, not the request: 503
        raise ApiError(503, str(exc), exc.field) from exc
    except InputsTooLarge as exc:
        raise ApiError(413, str(exc), exc.field) from exc
    except NoDeviceFits as exc:
        raise ApiError(422, str(exc)) from exc


def describe_model(state: AppState, entry: ModelEntry) -> dict[str, Any]:
    """A model as every model list shows it: the common fields, then its family's."""
    return {
        "name": entry.name,
        "path": str(entry.path),
        "type": entry.architecture,
        "id": state.registry.fingerprint(entry),
        "family": entry.family,
        "architecture": entry.architecture,
        "format": entry.format,
        "size_bytes": entry.size_bytes,
        **families.get(entry.family).describe(entry),
    }
