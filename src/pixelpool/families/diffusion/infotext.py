"""A1111's `parameters` text (what pixelpool writes into its PNGs): parsed, and turned
back into request fields so that pasting it reproduces the image (torch-free; the
A1111 dialect's png-info and the native `infotext` field share it)."""

from __future__ import annotations

import re
from typing import Any

_FIELD = re.compile(r'\s*([\w .\-/+]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_LORA = re.compile(r"(\S+):\s*(-?[\d.]+)")
_SIZE = re.compile(r"^(\d+)x(\d+)$")
MAX_CHARS = 32768
MAX_FIELDS_LINE = 4096  # the field pattern is quadratic in a line's length: bounded


class InfotextError(Exception):
    """The text is not A1111 parameters, or a value in it is not what its key says."""


def parse_infotext(text: str) -> dict[str, Any]:
    """A1111's `parameters` text -> {Prompt, Negative prompt, Steps, Sampler, ...}."""
    lines = text.strip().split("\n")
    last = lines[-1] if lines else ""
    fields: dict[str, Any] = {}
    if len(last) <= MAX_FIELDS_LINE and len(_FIELD.findall(last)) >= 3:
        for key, value in _FIELD.findall(last):
            fields[key.strip()] = value.strip()
        lines = lines[:-1]
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative, line = True, line.removeprefix("Negative prompt:").strip()
        (negative if in_negative else prompt).append(line)
    parsed = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative), **fields}
    if "Size" in fields and "x" in fields["Size"]:
        width, _, height = fields["Size"].partition("x")
        parsed["Size-1"], parsed["Size-2"] = width, height
    return parsed


def _number(parsed: dict[str, Any], key: str, kind: type) -> Any:
    value = parsed[key]
    try:
        return kind(value) if kind is float else int(str(value))
    except ValueError as exc:
        raise InfotextError(f"{key}: {value!r} is not a number") from exc


def _size(parsed: dict[str, Any], key: str) -> tuple[int, int]:
    match = _SIZE.match(str(parsed[key]).strip())
    if match is None:
        raise InfotextError(f"{key}: {parsed[key]!r} is not WIDTHxHEIGHT")
    return int(match.group(1)), int(match.group(2))


_NUMBERS = {"Steps": ("steps", int), "CFG scale": ("cfg_scale", float), "Seed": ("seed", int),
            "Variation seed": ("subseed", int),
            "Variation seed strength": ("subseed_strength", float),
            "Hires steps": ("hires_steps", int)}  # fmt: skip


def request_fields(text: str) -> dict[str, Any]:
    """The native request fields the text gives (prompt, negative_prompt, steps, sampler,
    scheduler, cfg_scale, seed, width/height, model, loras, variation seed, and the hi-res
    fix's base size, steps, upscaler and denoising strength as `hires_*`/`base_*`)."""
    if len(text) > MAX_CHARS:
        raise InfotextError(f"longer than {MAX_CHARS} characters")
    parsed = parse_infotext(text)
    if "Steps" not in parsed:
        raise InfotextError("no A1111 parameters line (Steps: ..., Sampler: ..., Seed: ...)")
    out: dict[str, Any] = {"prompt": parsed["Prompt"], "negative_prompt": parsed["Negative prompt"]}
    for key, (name, kind) in _NUMBERS.items():
        if key in parsed:
            out[name] = _number(parsed, key, kind)
    sampler = parsed.get("Sampler")
    if sampler and sampler != "model default":
        out["sampler"] = sampler
    if parsed.get("Schedule type"):
        out["scheduler"] = parsed["Schedule type"]
    if parsed.get("Model"):
        out["model"] = parsed["Model"]
    if parsed.get("Model hash"):
        out["model_hash"] = parsed["Model hash"]
    if "Size" in parsed:
        out["width"], out["height"] = _size(parsed, "Size")
    if "Hires resize" in parsed or "Hires upscale" in parsed:
        out["base_width"], out["base_height"] = out.pop("width", None), out.pop("height", None)
        if "Hires resize" in parsed:
            out["width"], out["height"] = _size(parsed, "Hires resize")
        elif out["base_width"]:
            factor = _number(parsed, "Hires upscale", float)
            out["width"] = int(out["base_width"] * factor) // 8 * 8
            out["height"] = int(out["base_height"] * factor) // 8 * 8
        if "Denoising strength" in parsed:
            out["hires_denoising_strength"] = _number(parsed, "Denoising strength", float)
        upscaler = str(parsed.get("Hires upscaler", "")).lower()
        if upscaler in ("latent", "pixel"):
            out["hires_upscaler"] = upscaler
    elif "Denoising strength" in parsed:
        out["strength"] = _number(parsed, "Denoising strength", float)
    if parsed.get("Lora weights"):
        out["loras"] = [{"name": n, "weight": float(w)}
                        for n, w in _LORA.findall(str(parsed["Lora weights"]))]  # fmt: skip
    return out
