"""Result encodings the client chooses: masks as dense arrays, COCO RLE or polygons;
arrays (depth, embeddings, patch features) as base64 `.npy` or nested lists.

Pure functions of numpy arrays, so a route (or a test) calls them without a model.
A bad choice is a 422 naming the request field it came from.

- `rle` is exactly what `pycocotools.mask.encode` gives for the mask as a
  Fortran-ordered uint8 array, with `counts` as a string (the library's own
  bytes, decoded as ASCII), so `pycocotools.mask.decode` reads it back.
- `polygons` are OpenCV's external contours (`findContours`, `RETR_EXTERNAL`),
  simplified with `approxPolyDP(tolerance)`; tolerance 0 keeps the exact contour,
  and `cv2.fillPoly` of the polygons then gives the mask back pixel for pixel.
  Holes are not represented (COCO polygons cannot carry them): the filled polygons
  cover the mask's holes too. A region one pixel wide comes out as a polygon of one
  or two points (2 or 4 numbers), which some COCO tools skip. Use `rle` or `dense`
  when holes or thin parts matter.
"""

from __future__ import annotations

import base64
import io
import math
from functools import cache
from types import ModuleType
from typing import Any, Literal

import numpy as np

from pixelpool.api.errors import field_error


# OpenCV and pycocotools are imported on first use: together they add ~17 MB to the
# HTTP process, which a server that never answers a vision request does not need.
@cache
def cv2() -> ModuleType:
    import cv2 as module

    return module


@cache
def coco_mask() -> ModuleType:
    from pycocotools import mask as module

    return module


MaskFormat = Literal["dense", "rle", "polygons"]
ArrayFormat = Literal["npy", "list"]
MASK_FORMATS: tuple[str, ...] = ("dense", "rle", "polygons")
ARRAY_FORMATS: tuple[str, ...] = ("npy", "list")
MAX_TOLERANCE = 1000.0  # pixels; beyond any image this server accepts


def check_choice(value: Any, choices: tuple[str, ...], field: str) -> str:
    """`value` if it is one of `choices`, else a 422 naming `field` and the choices."""
    if not isinstance(value, str) or value not in choices:
        raise field_error(field, f"must be one of {', '.join(choices)}; got {value!r}")
    return value


def check_tolerance(value: Any, field: str = "tolerance") -> float:
    """A polygon simplification tolerance in pixels: finite, 0 to MAX_TOLERANCE."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise field_error(field, f"must be a number of pixels; got {value!r}")
    if not math.isfinite(value) or not 0 <= value <= MAX_TOLERANCE:
        raise field_error(field, f"must be between 0 and {MAX_TOLERANCE:g} pixels; got {value}")
    return float(value)


def _as_masks(masks: np.ndarray) -> np.ndarray:
    """An HxW mask or an NxHxW stack, as an NxHxW uint8 stack of 0/1."""
    array = np.asarray(masks)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"masks must be HxW or NxHxW, not shape {array.shape}")
    return (array != 0).astype(np.uint8)


# --- arrays -------------------------------------------------------------------------


def array_to_npy(array: np.ndarray) -> dict[str, Any]:
    """`{"dtype", "shape", "npy"}`: the `numpy.save` bytes, base64. Exact for any dtype."""
    array = np.asarray(array)
    if array.dtype.hasobject:
        raise ValueError("object arrays cannot be encoded")
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return {
        "dtype": str(array.dtype),
        "shape": list(array.shape),
        "npy": base64.b64encode(buf.getvalue()).decode("ascii"),
    }


def npy_to_array(encoded: dict[str, Any]) -> np.ndarray:
    """The array back from `array_to_npy` (never unpickles)."""
    return np.load(io.BytesIO(base64.b64decode(encoded["npy"])), allow_pickle=False)


def array_to_list(array: np.ndarray) -> Any:
    """Nested lists, as `ndarray.tolist()`; NaN and infinities become null (JSON has none)."""
    array = np.asarray(array)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        array = np.where(np.isfinite(array), array, None).astype(object)
    return array.tolist()


def encode_array(array: np.ndarray, fmt: str, field: str = "array_format") -> Any:
    """An array in the client's format: `npy` (dict) or `list` (nested lists)."""
    fmt = check_choice(fmt, ARRAY_FORMATS, field)
    return array_to_npy(array) if fmt == "npy" else array_to_list(array)


# --- masks --------------------------------------------------------------------------


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE of one HxW mask: `{"size": [h, w], "counts": str}`."""
    (one,) = _as_masks(mask)
    rle = coco_mask().encode(np.asfortranarray(one))
    return {"size": [int(n) for n in rle["size"]], "counts": rle["counts"].decode("ascii")}


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """The HxW uint8 mask of a COCO RLE (`counts` as a string or bytes)."""
    counts = rle["counts"]
    data = {
        "size": list(rle["size"]),
        "counts": counts.encode() if isinstance(counts, str) else counts,
    }
    return coco_mask().decode(data)


def mask_to_polygons(mask: np.ndarray, tolerance: float = 0.0) -> list[list[int]]:
    """External contours of one HxW mask as COCO polygons `[x1, y1, x2, y2, ...]`.

    tolerance: the largest distance in pixels a simplified outline may stray from
    the exact one (`cv2.approxPolyDP`'s epsilon); 0 keeps it exact."""
    (one,) = _as_masks(mask)
    cv = cv2()
    contours, _ = cv.findContours(one, cv.RETR_EXTERNAL, cv.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        if tolerance > 0:
            contour = cv.approxPolyDP(contour, tolerance, closed=True)
        polygons.append([int(v) for v in contour.reshape(-1)])
    return polygons


def polygons_to_mask(polygons: list[list[int]], height: int, width: int) -> np.ndarray:
    """The HxW uint8 mask the polygons cover (`cv2.fillPoly`): the inverse at tolerance 0."""
    out = np.zeros((height, width), np.uint8)
    points = [np.asarray(p, np.int32).reshape(-1, 1, 2) for p in polygons if p]
    if points:
        cv2().fillPoly(out, points, 1)
    return out


def encode_masks(
    masks: np.ndarray,
    fmt: str,
    *,
    tolerance: float = 0.0,
    dense_format: str = "list",
    field: str = "output_format",
) -> list[Any]:
    """Each mask of an HxW mask or NxHxW stack in the client's format, one item per mask.

    dense: 0/1 nested lists, or (dense_format="npy") a bool `.npy` dict;
    rle: COCO RLE dicts; polygons: a list of polygons per mask."""
    fmt = check_choice(fmt, MASK_FORMATS, field)
    stack = _as_masks(masks)
    if fmt == "rle":
        return [mask_to_rle(m) for m in stack]
    if fmt == "polygons":
        tolerance = check_tolerance(tolerance)
        return [mask_to_polygons(m, tolerance) for m in stack]
    dense_format = check_choice(dense_format, ARRAY_FORMATS, "array_format")
    if dense_format == "npy":
        return [array_to_npy(m.astype(bool)) for m in stack]
    return [m.tolist() for m in stack]
