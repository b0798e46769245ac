"""FoxBurrow's client round-trip caches, torch-free: text embeddings and latents as JSON.

A client that kept a job's `clip_embeddings` (from the WebSocket) sends them back with a
later request to skip the text encoders. An entry is one tensor of one encoder and one
polarity, batch dimension squeezed: `{encoder_type, polarity, data (base64 of the raw
bytes), dtype, dim0, dim1}` (dim1 null for the pooled vector). SDXL sends six
(`clip_l`, `clip_g`, `clip_g_pooled` x `positive`, `negative`); SD 1.x two (`clip_l`).

The API checks entries here (a 422 names the entry's field) and stores them as one
safetensors file (`<encoder_type>.<polarity>` tensors); the worker checks that they
fit its model's encoders and falls back to encoding the prompt when they do not.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
from safetensors.numpy import save

ENCODERS = ("clip_l", "clip_g", "clip_g_pooled")
POLARITIES = ("positive", "negative")
TOKENS_PER_CHUNK = 77
MAX_TOKENS = TOKENS_PER_CHUNK * 16
MAX_WIDTH = 8192
MAX_ENTRIES = len(ENCODERS) * len(POLARITIES)
DTYPES: dict[str, str] = {"fp16": "<f2", "float16": "<f2", "fp32": "<f4", "float32": "<f4",
                          "bf16": "<u2", "bfloat16": "<u2"}  # fmt: skip
SDXL_FORM = frozenset(f"{e}.{p}" for e in ENCODERS for p in POLARITIES)
SD1_FORM = frozenset(f"clip_l.{p}" for p in POLARITIES)
# The `cached_latents` FoxBurrow's enhance reads: 4-channel latents of one image.
LATENT_CHANNELS = 4
MAX_LATENT_SIDE = 1024  # latent pixels: 8192 image pixels


class CacheError(ValueError):
    """A malformed entry; `field` names it (`clip_embeddings[2].data`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _int(field: str, value: Any, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise CacheError(field, f"must be an integer between {low} and {high}")
    return value


def raw_array(field: str, data: bytes, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Raw little-endian tensor bytes -> float array (fp16 kept, bf16 widened exactly)."""
    code = DTYPES[dtype]
    expected = int(np.prod(shape)) * np.dtype(code).itemsize
    if len(data) != expected:
        raise CacheError(field, f"has {len(data)} bytes; {dtype} of shape "
                         f"{list(shape)} takes {expected}")  # fmt: skip
    array = np.frombuffer(data, code).reshape(shape)
    if code == "<u2":  # bfloat16: the top half of a float32
        array = (array.astype(np.uint32) << 16).view(np.float32)
    if not np.isfinite(array).all():
        raise CacheError(field, "holds values that are not finite")
    return np.ascontiguousarray(array)


def _entry(where: str, entry: Any) -> tuple[str, np.ndarray]:
    if not isinstance(entry, dict):
        raise CacheError(where, "must be an object with encoder_type, polarity, data, "
                         "dtype, dim0, dim1")  # fmt: skip
    unknown = set(entry) - {"encoder_type", "polarity", "data", "dtype", "dim0", "dim1"}
    if unknown:
        raise CacheError(f"{where}.{sorted(unknown)[0]}", "unknown field")
    encoder, polarity = entry.get("encoder_type"), entry.get("polarity")
    if encoder not in ENCODERS:
        raise CacheError(f"{where}.encoder_type", f"must be one of {', '.join(ENCODERS)}")
    if polarity not in POLARITIES:
        raise CacheError(f"{where}.polarity", f"must be one of {', '.join(POLARITIES)}")
    dtype = entry.get("dtype")
    if dtype not in DTYPES:
        raise CacheError(f"{where}.dtype", "must be fp16, bf16 or fp32")
    pooled = encoder == "clip_g_pooled"
    dim0 = _int(f"{where}.dim0", entry.get("dim0"), 1, MAX_WIDTH if pooled else MAX_TOKENS)
    if pooled:
        if entry.get("dim1") is not None:
            raise CacheError(f"{where}.dim1", "must be null for a pooled embedding")
        shape: tuple[int, ...] = (dim0,)
    else:
        if dim0 % TOKENS_PER_CHUNK:
            raise CacheError(f"{where}.dim0", f"must be a multiple of {TOKENS_PER_CHUNK} tokens")
        shape = (dim0, _int(f"{where}.dim1", entry.get("dim1"), 1, MAX_WIDTH))
    data = entry.get("data")
    if not isinstance(data, str):
        raise CacheError(f"{where}.data", "must be a base64 string")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CacheError(f"{where}.data", f"is not valid base64: {exc}") from exc
    return f"{encoder}.{polarity}", raw_array(f"{where}.data", raw, dtype, shape)


def parse_entries(entries: Any, field: str = "clip_embeddings") -> dict[str, np.ndarray]:
    """Checked entries -> {"clip_l.positive": array, ...}; CacheError names what is wrong.

    Complete forms only (SDXL's six, or SD 1.x's two), every token sequence one length."""
    if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_ENTRIES:
        raise CacheError(field, f"must be a list of 2 (SD 1.x) or {MAX_ENTRIES} (SDXL) entries")
    arrays: dict[str, np.ndarray] = {}
    for i, entry in enumerate(entries):
        name, array = _entry(f"{field}[{i}]", entry)
        if name in arrays:
            raise CacheError(f"{field}[{i}]", f"a second {name.replace('.', ' ')} entry")
        arrays[name] = array
    if set(arrays) not in (SDXL_FORM, SD1_FORM):
        raise CacheError(field, "send clip_l, clip_g and clip_g_pooled (SDXL) or clip_l (SD 1.x),"
                         " each positive and negative")  # fmt: skip
    lengths = {a.shape[0] for n, a in arrays.items() if not n.startswith("clip_g_pooled")}
    if len(lengths) > 1:
        raise CacheError(field, f"the entries' token counts (dim0) differ: {sorted(lengths)}")
    widths = {n: a.shape[-1] for n, a in arrays.items()}
    for encoder in ENCODERS:
        if widths.get(f"{encoder}.positive") != widths.get(f"{encoder}.negative"):
            raise CacheError(field, f"{encoder}: positive and negative widths differ")
    return arrays


def token_count(arrays: dict[str, np.ndarray]) -> int:
    return int(arrays["clip_l.positive"].shape[0])


def to_safetensors(arrays: dict[str, np.ndarray]) -> bytes:
    return save(arrays)


def parse_cached_latents(meta: Any, data: bytes, field: str = "cached_latents") -> np.ndarray:
    """FoxBurrow's enhance input: `{dtype, shape: [1, 4, h, w]}` and raw `latent_data` bytes
    -> a float array of that shape."""
    if not isinstance(meta, dict) or set(meta) - {"dtype", "shape", "data"}:
        raise CacheError(field, "must be an object {dtype, shape}")
    shape = meta.get("shape")
    if (not isinstance(shape, list) or len(shape) != 4 or shape[:2] != [1, LATENT_CHANNELS]
            or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
            or not all(1 <= d <= MAX_LATENT_SIDE for d in shape[2:])):  # fmt: skip
        raise CacheError(f"{field}.shape", f"must be [1, {LATENT_CHANNELS}, height/8, width/8]"
                         f" with sides up to {MAX_LATENT_SIDE}")  # fmt: skip
    dtype = meta.get("dtype", "float16")
    if dtype not in DTYPES:
        raise CacheError(f"{field}.dtype", "must be fp16, bf16 or fp32")
    if "data" in meta:  # the bytes inline (base64), as the WebSocket message carries them
        try:
            data = base64.b64decode(str(meta["data"]), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise CacheError(f"{field}.data", f"is not valid base64: {exc}") from exc
    return raw_array("latent_data", data, dtype, tuple(shape)).astype(np.float32)
