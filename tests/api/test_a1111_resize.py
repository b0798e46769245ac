"""The ControlNet extension's fitting of control images (`resize_mode`), in-process."""

import cv2
import numpy as np
import pytest

from pixelpool.api.a1111.resize import CROP, FILL, STRETCH, fit_array, resize_mode
from pixelpool.api.errors import ApiError


def _gradient(width: int, height: int) -> np.ndarray:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    return np.broadcast_to((x + y) / 2, (height, width, 3)).round().astype(np.uint8).copy()


def test_fill_pads_with_the_border_median_centred() -> None:
    image = np.full((32, 64, 3), 40, np.uint8)
    image[8:24, 16:48] = 200  # an inner square: the border stays 40
    out = fit_array(image, (64, 64), FILL)
    assert out.shape == (64, 64, 3)
    assert (out[:16] == 40).all() and (out[48:] == 40).all()
    assert np.array_equal(out[16:48], image)  # scale 1, 16 rows of padding above


def test_crop_scales_to_cover_and_crops_the_centre() -> None:
    image = _gradient(64, 32)
    out = fit_array(image, (32, 32), CROP)  # k = max(1, 0.5) = 1: a crop only
    assert np.array_equal(out, image[:, 16:48])
    enlarged = fit_array(image, (128, 128), CROP)  # k = 4: 256x128, centre 128 columns
    big = cv2.resize(image, (256, 128), interpolation=cv2.INTER_CUBIC)
    assert np.array_equal(enlarged, big[:, 64:192])


def test_stretch_and_binary_maps_stay_binary() -> None:
    edges = np.zeros((48, 48, 3), np.uint8)
    edges[10:38, 20:24] = 255
    out = fit_array(edges, (64, 32), STRETCH)
    assert out.shape == (32, 64, 3) and set(np.unique(out)) <= {0, 255}


@pytest.mark.parametrize(("value", "mode"), [(0, STRETCH), (1, CROP), (2, FILL),
                                             ("Scale to Fit (Inner Fit)", CROP)])  # fmt: skip
def test_modes_by_number_and_alias(value: object, mode: str) -> None:
    assert resize_mode(value, "f") == mode


def test_unknown_mode_names_the_field() -> None:
    with pytest.raises(ApiError) as info:
        resize_mode("Stretch", "args[0].resize_mode")
    assert info.value.status == 422 and info.value.field == "args[0].resize_mode"
