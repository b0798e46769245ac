"""sd-webui-controlnet's units (`alwayson_scripts.controlnet.args`) -> our ControlNets and
IP-Adapter, for /sdapi/v1/txt2img and /img2img.

Each enabled unit is a ControlNet (module none, canny or a depth module; `weight` is the
conditioning scale, `threshold_a`/`threshold_b` canny's thresholds, `union_control_type`
a union ControlNet's control type) or, with an
IP-Adapter module, the request's reference image (`weight` its scale). A control image
of another size than the output is fitted as the extension fits it (`resize.py`); in
img2img a unit without an image takes the init image, as in the extension. Errors name
the unit's own field: `alwayson_scripts.controlnet.args[0].module`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from pixelpool.api import ops
from pixelpool.api.a1111 import resize
from pixelpool.api.diffusion import controlnet, references
from pixelpool.api.diffusion.controlnet import ControlNetRequest
from pixelpool.api.errors import ApiError, field_error
from pixelpool.api.runs import renamed
from pixelpool.api.state import AppState
from pixelpool.api.uploads import CheckedImage
from pixelpool.api.validation import validation_error
from pixelpool.jobs.spec import JobSpec

FIELD = "alwayson_scripts.controlnet.args"
CONTROL_MODULES = {"none": "none", "canny": "canny", "depth": "depth", "depth_midas": "depth",
                   "depth_anything": "depth", "depth_anything_v2": "depth"}  # fmt: skip
IP_MODULES = ("ip-adapter_clip_sd15", "ip-adapter_clip_h", "ip-adapter_clip_sdxl",
              "ip-adapter_clip_g", "ip-adapter_clip_sdxl_plus_vith", "ip-adapter-auto")  # fmt: skip
CANNY = {"canny_low": ("threshold_a", 100), "canny_high": ("threshold_b", 200)}
OURS = {"conditioning_scale": "weight", "preprocessor": "module", "canny_low": "threshold_a",
        "canny_high": "threshold_b", "model": "model", "image": "image",
        "guidance_start": "guidance_start", "guidance_end": "guidance_end",
        "control_mode": "union_control_type"}  # fmt: skip
CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")
_HASH = re.compile(r"\s*\[[0-9a-fA-F]+\]$")


class Unit(BaseModel):
    """One unit as the extension reads it; its other fields (processor_res, pixel_perfect,
    low_vram, hr_option...) are accepted and ignored."""

    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)

    enabled: bool = True  # the extension's API default until v1.1.447 (now False)
    module: str = "none"
    model: str = "None"
    weight: float = 1.0
    image: str | dict[str, Any] | list[Any] | None = None
    input_image: str | dict[str, Any] | list[Any] | None = None  # the older name of `image`
    mask: str | None = None
    resize_mode: str | int = resize.CROP
    threshold_a: float = -1
    threshold_b: float = -1
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    control_mode: str | int = "Balanced"
    union_control_type: str = "Unknown"  # a union ControlNet's type ("Hard Edge", "Depth"...)


@dataclass
class Units:
    """A request's enabled units, as our ControlNets and (at most one) IP-Adapter."""

    controlnets: list[ControlNetRequest] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)  # the unit index of each ControlNet
    modes: list[str] = field(default_factory=list)  # its resize mode
    ip_index: int | None = None
    ip_model: str = ""
    ip_image: str = ""
    ip_weight: float = 1.0

    def __bool__(self) -> bool:
        return bool(self.controlnets) or self.ip_index is not None

    def names(self) -> dict[str, str]:
        """Our field names -> the units' (controlnets[0].preprocessor -> args[2].module)."""
        out = {"controlnets": FIELD}
        for i, j in enumerate(self.indexes):
            out |= {f"controlnets[{i}].{k}": f"{FIELD}[{j}].{v}" for k, v in OURS.items()}
        return out

    def fit(self, i: int, image: CheckedImage, size: tuple[int, int]) -> CheckedImage:
        return resize.fit_image(image, size, self.modes[i])


def _scripts(body: dict[str, Any] | None) -> Any:
    """The controlnet script's entry (A1111 matches script names case-insensitively)."""
    for name, value in (body or {}).items():
        if isinstance(name, str) and name.lower() == "controlnet":
            return value
    return None


def _image(value: Any, at: str, init: str | None) -> str:
    """A unit's image: base64, or `{"image": ..., "mask": ...}`/`[image, mask]` as the
    extension also takes; in img2img, the init image when absent."""
    if isinstance(value, dict):
        value = value.get("image")
    elif isinstance(value, list):
        value = value[0] if value else None
    if value in (None, "") and init is not None:
        return init
    if not isinstance(value, str) or not value:
        raise field_error(f"{at}.image", "is required: send the control image as base64")
    return value


def _threshold(value: float, default: int) -> int:
    """The extension resets a slider value outside its range (1-255 for canny) to the default."""
    return int(value) if 1 <= value <= 255 else default


def _model(name: str, at: str) -> str:
    name = _HASH.sub("", name.strip())
    if name in ("", "None"):
        raise field_error(f"{at}.model", "is required: name one from /controlnet/model_list")
    return name


def _control_mode(value: str | int, at: str) -> None:
    """Accepted and ignored: every unit is applied as "Balanced"."""
    if isinstance(value, bool) or value not in (*CONTROL_MODES, 0, 1, 2):
        raise field_error(f"{at}.control_mode", f"must be one of {', '.join(CONTROL_MODES)}")


def _add(units: Units, j: int, unit: Unit, at: str, init: str | None) -> None:
    image = _image(unit.image if unit.image is not None else unit.input_image, at, init)
    if unit.mask:
        raise field_error(f"{at}.mask", "masks of ControlNet units are not supported")
    _control_mode(unit.control_mode, at)
    if unit.module in IP_MODULES:
        if units.ip_index is not None:
            raise field_error(f"{at}.module", "only one IP-Adapter unit per request")
        units.ip_index, units.ip_model = j, _model(unit.model, at)
        units.ip_image, units.ip_weight = image, unit.weight
        return
    preprocessor = CONTROL_MODULES.get(unit.module)
    if preprocessor is None:
        valid = ", ".join([*CONTROL_MODULES, *IP_MODULES])
        raise field_error(f"{at}.module", f"unsupported module {unit.module!r}; valid: {valid}")
    extra: dict[str, Any] = {}
    if preprocessor == "canny":
        extra = {k: _threshold(getattr(unit, a), d) for k, (a, d) in CANNY.items()}
    if unit.union_control_type.lower() != "unknown":
        extra["control_mode"] = unit.union_control_type
    units.controlnets.append(
        ControlNetRequest(
            model=_model(unit.model, at), image=image, conditioning_scale=unit.weight,
            guidance_start=unit.guidance_start, guidance_end=unit.guidance_end,
            preprocessor=preprocessor, **extra,
        )
    )  # fmt: skip
    units.indexes.append(j)
    units.modes.append(resize.resize_mode(unit.resize_mode, f"{at}.resize_mode"))


def parse(scripts: dict[str, Any] | None, init: str | None = None) -> Units:
    """The enabled units of a request's `alwayson_scripts` (`init`: img2img's image)."""
    entry = _scripts(scripts)
    units = Units()
    if entry is None:
        return units
    args = entry.get("args") if isinstance(entry, dict) else None
    if not isinstance(args, list):
        raise field_error(FIELD, "must be a list of ControlNet units")
    for j, raw in enumerate(args):
        at = f"{FIELD}[{j}]"
        if not isinstance(raw, dict):
            raise field_error(at, "must be an object (a ControlNet unit)")
        try:
            unit = Unit.model_validate(raw)
        except ValidationError as exc:
            err = validation_error(exc)
            raise field_error(f"{at}.{err.field}", err.detail) from exc
        if unit.enabled:
            _add(units, j, unit, at, init)
    return units


async def attach(
    state: AppState, specs: list[JobSpec], units: Units, model: str | None, owner: str | None
) -> list[JobSpec]:
    """Each spec with the units' ControlNets and reference image (the images stored once
    per spec; a batch of one is the common case)."""
    if not units:
        return specs
    entry = ops.resolve_model(state, model)
    out = []
    for spec in specs:
        try:
            spec = await controlnet.attach(state, entry, spec, units.controlnets, owner, units.fit)
        except ApiError as exc:
            raise renamed(exc, units.names()) from exc
        if units.ip_index is not None:
            at = f"{FIELD}[{units.ip_index}]"
            spec = await references.from_encoded(
                state, spec, owner, [units.ip_image], name=units.ip_model,
                scale=units.ip_weight, field=f"{at}.image", name_field=f"{at}.model",
                scale_field=f"{at}.weight",
            )  # fmt: skip
        out.append(spec)
    return out
