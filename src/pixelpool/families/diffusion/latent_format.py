"""Latents as bytes: safetensors (one tensor `latents` plus metadata) or FoxBurrow's FXLT.

Torch-free (numpy), so the API can check uploaded latents before a job exists.
Latents are always in the denoiser's space: the VAE's latents times its scaling
factor (after its shift, for SD3/FLUX), which the metadata records.

FXLT, little-endian: b"FXLT", u16 version (1), u16 ndims (<= 8), ndims x i32 shape
(each 1..32768), u32 meta_len (<= 65536), UTF-8 JSON metadata, float32 data in C order.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

LATENT_ARCHITECTURES = frozenset({"sd15", "sdxl"})  # 4-channel latents, no packing
FXLT_MAGIC = b"FXLT"
FXLT_VERSION = 1
FXLT_MEDIA_TYPE = "application/x-fox-latent"
SAFETENSORS_MEDIA_TYPE = "application/x-safetensors"
MEDIA_TYPES = {"fxlt": FXLT_MEDIA_TYPE, "safetensors": SAFETENSORS_MEDIA_TYPE}
MAX_NDIMS = 8
MAX_DIM = 32768
MAX_META = 65536
MAX_META_KEYS = 64
MAX_JSON_DEPTH = 8
MAX_ELEMENTS = 1 << 28  # 1 GiB of float32; the body limit is usually far lower
TENSOR_NAME = "latents"
_NUMERIC = ("width", "height", "seed", "steps")
_FLOATS = ("cfg_scale", "scaling_factor", "shift_factor")
_TEXT = ("model", "architecture", "format", "prompt", "negative_prompt", "sampler", "scheduler")
MAX_INT = 2**64 - 1


class LatentFormatError(ValueError):
    """The bytes are not valid latents; the message says what is wrong."""


def format_for(media_type: str | None) -> str:
    """'fxlt' when the client asks for FoxBurrow's media type, else 'safetensors'."""
    return "fxlt" if media_type and FXLT_MEDIA_TYPE in media_type else "safetensors"


def encode_fxlt(array: np.ndarray, meta: dict[str, Any]) -> bytes:
    data = np.ascontiguousarray(array, dtype="<f4")
    meta_bytes = json.dumps(meta).encode()
    if data.ndim > MAX_NDIMS or len(meta_bytes) > MAX_META:
        raise LatentFormatError("latents have too many dimensions or too much metadata")
    header = FXLT_MAGIC + struct.pack("<HH", FXLT_VERSION, data.ndim)
    header += struct.pack(f"<{data.ndim}i", *data.shape) + struct.pack("<I", len(meta_bytes))
    return header + meta_bytes + data.tobytes()


def decode_fxlt(blob: bytes) -> tuple[np.ndarray, dict[str, Any]]:
    def need(n: int, at: int, what: str) -> None:
        if len(blob) < at + n:
            raise LatentFormatError(f"FXLT data is truncated (in the {what})")

    need(8, 0, "header")
    version, ndims = struct.unpack_from("<HH", blob, 4)
    if version != FXLT_VERSION:
        raise LatentFormatError(f"unsupported FXLT version {version}")
    if not 1 <= ndims <= MAX_NDIMS:
        raise LatentFormatError(f"FXLT ndims must be 1..{MAX_NDIMS}, got {ndims}")
    need(4 * ndims + 4, 8, "shape")
    shape = struct.unpack_from(f"<{ndims}i", blob, 8)
    if any(not 1 <= d <= MAX_DIM for d in shape):
        raise LatentFormatError(f"FXLT shape {list(shape)}: each dimension must be 1..{MAX_DIM}")
    elements = math.prod(shape)  # Python ints: no overflow
    if elements > MAX_ELEMENTS or 4 * elements > len(blob):
        raise LatentFormatError(
            f"FXLT shape {list(shape)} needs {4 * elements} bytes of data; the body is {len(blob)}"
        )
    offset = 8 + 4 * ndims
    (meta_len,) = struct.unpack_from("<I", blob, offset)
    if meta_len > MAX_META:
        raise LatentFormatError(f"FXLT metadata is {meta_len} bytes, over {MAX_META}")
    offset += 4
    need(meta_len, offset, "metadata")
    meta = _parse_meta(blob[offset : offset + meta_len]) if meta_len else {}
    if not isinstance(meta, dict):
        raise LatentFormatError("FXLT metadata must be a JSON object")
    offset += meta_len
    expected = 4 * elements
    if len(blob) - offset != expected:
        raise LatentFormatError(f"FXLT data has {len(blob) - offset} bytes, expected {expected}")
    array = np.frombuffer(blob, dtype="<f4", offset=offset).reshape(shape)
    return array.astype(np.float32), clean_meta(meta)


def _parse_meta(raw: bytes) -> Any:
    """Metadata JSON, shallow (deep nesting is refused before the parser recurses)."""
    depth = max_depth = 0
    for byte in raw.replace(b'\\"', b"").split(b'"')[::2]:  # outside strings
        for char in byte:
            depth += char in b"[{"
            depth -= char in b"]}"
            max_depth = max(max_depth, depth)
    if max_depth > MAX_JSON_DEPTH:
        raise LatentFormatError(f"latent metadata is nested deeper than {MAX_JSON_DEPTH}")
    try:
        return json.loads(raw.decode())
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise LatentFormatError("latent metadata is not valid UTF-8 JSON") from exc


def _number(key: str, value: Any, kind: type) -> int | float:
    """A metadata number: a JSON number or (safetensors metadata is text) numeric text."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise LatentFormatError(f"latent metadata {key!r} must be a number")
    try:
        number = float(value) if isinstance(value, str) else value
    except ValueError as exc:
        raise LatentFormatError(f"latent metadata {key!r} must be a number") from exc
    if not math.isfinite(number):
        raise LatentFormatError(f"latent metadata {key!r} must be a finite number")
    if kind is int:
        if number != int(number) or not -MAX_INT <= number <= MAX_INT:
            raise LatentFormatError(f"latent metadata {key!r} must be a whole number in range")
        return int(number)
    return float(number)


def clean_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """Metadata with known keys of the right type; a wrong one is an error, not a crash."""
    if len(meta) > MAX_META_KEYS:
        raise LatentFormatError(f"latent metadata has {len(meta)} keys, over {MAX_META_KEYS}")
    meta = dict(meta)
    for key in _NUMERIC:
        if meta.get(key) is not None:
            meta[key] = _number(key, meta[key], int)
    for key in _FLOATS:
        if meta.get(key) is not None:
            meta[key] = _number(key, meta[key], float)
    for key in _TEXT:
        value = meta.get(key)
        if value is not None and not isinstance(value, str):
            raise LatentFormatError(f"latent metadata {key!r} must be text")
        if isinstance(value, str):
            try:
                value.encode()
            except UnicodeEncodeError as exc:
                raise LatentFormatError(f"latent metadata {key!r} is not valid Unicode") from exc
    return meta


def encode_safetensors(array: np.ndarray, meta: dict[str, Any]) -> bytes:
    strings = {k: str(v) for k, v in meta.items() if v is not None}
    tensor = np.ascontiguousarray(array, dtype=np.float32)
    return st_save({TENSOR_NAME: tensor}, metadata={**strings, "format": "pixelpool-latents"})


def decode_safetensors(blob: bytes) -> tuple[np.ndarray, dict[str, Any]]:
    header_len = struct.unpack_from("<Q", blob, 0)[0]
    if header_len > MAX_META:
        raise LatentFormatError(f"safetensors header is {header_len} bytes, over {MAX_META}")
    header = _parse_meta(blob[8 : 8 + header_len])
    try:
        tensors = st_load(blob)
    except Exception as exc:  # safetensors raises its own error types
        raise LatentFormatError(f"not a valid safetensors file ({type(exc).__name__})") from exc
    if TENSOR_NAME not in tensors:
        raise LatentFormatError(f"safetensors latents need a tensor named {TENSOR_NAME!r}")
    raw_meta = header.get("__metadata__") if isinstance(header, dict) else None
    meta = clean_meta(raw_meta if isinstance(raw_meta, dict) else {})
    return tensors[TENSOR_NAME].astype(np.float32), meta


def encode_latents(array: np.ndarray, meta: dict[str, Any], fmt: str) -> bytes:
    return encode_fxlt(array, meta) if fmt == "fxlt" else encode_safetensors(array, meta)


def decode_latents(blob: bytes) -> tuple[np.ndarray, dict[str, Any]]:
    """Either format, told apart by the FXLT magic; the array is float32."""
    if blob[:4] == FXLT_MAGIC:
        return decode_fxlt(blob)
    if len(blob) < 8:
        raise LatentFormatError("latents are empty or truncated")
    return decode_safetensors(blob)


def as_batch(array: np.ndarray, channels: int) -> np.ndarray:
    """Latents as (batch, channels, h, w); a single (channels, h, w) gets a batch axis."""
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[1] != channels:
        raise LatentFormatError(
            f"latents of shape {tuple(array.shape)} do not fit this model: "
            f"expected (batch, {channels}, height/8, width/8)"
        )
    if not np.isfinite(array).all():
        raise LatentFormatError("latents contain NaN or infinite values")
    return array
