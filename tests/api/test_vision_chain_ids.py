"""The pure parts of chaining by id: reference parsing, detections filtering, and the
mask PNG an inpaint reads (white = repaint, binary, at the image's size)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pixelpool.api.errors import ApiError
from pixelpool.api.vision import chain


def test_mask_refs_parse_and_bad_ones_name_the_field() -> None:
    assert chain.parse_mask_ref("abc") == chain.MaskRef("abc", 0, None, None)
    assert chain.parse_mask_ref("abc:2:1:0") == chain.MaskRef("abc", 2, 1, 0)
    for bad in ("abc:x", "abc:1:2:3:4", "", ":1", 5):
        with pytest.raises(ApiError) as err:
            chain.parse_mask_ref(bad)
        assert err.value.status == 422 and err.value.field == "mask_id"


def test_boxes_from_filters_by_label_and_score() -> None:
    spec = chain.parse_boxes_from({"id": "j", "labels": ["cat"], "min_score": 0.5})
    entry = {"boxes": [[0, 0, 4, 4], [1, 1, 2, 2], [2, 2, 3, 3]], "scores": [0.9, 0.4, 0.8],
             "labels": ["cat", "cat", "dog"]}  # fmt: skip
    assert chain._filtered(entry, spec, "boxes_from") == [(0.0, 0.0, 4.0, 4.0)]
    response = {"job_id": "j", "results": [entry]}  # a stored detect response
    assert chain._per_image(response) == [entry]
    for bad in (
        3,
        {"id": "j", "extra": 1},
        {"id": "j", "min_score": 2},
        {"id": "j", "labels": "cat"},
    ):
        with pytest.raises(ApiError) as err:
            chain.parse_boxes_from(bad)
        assert err.value.field == "boxes_from"
    with pytest.raises(ApiError):
        chain._filtered({"boxes": [[0, 0, "x", 1]]}, chain.BoxesFrom("j"), "boxes_from")


def test_mask_png_is_binary_white_is_repaint_at_the_size() -> None:
    mask = np.zeros((4, 6), bool)
    mask[1:3, 2:5] = True
    img = Image.open(io.BytesIO(chain.mask_png(mask, None)))
    assert img.mode == "L" and np.array_equal(np.asarray(img) == 255, mask)
    big = np.asarray(Image.open(io.BytesIO(chain.mask_png(mask, (12, 8)))))
    assert big.shape == (8, 12) and set(np.unique(big)) == {0, 255}
    stack = np.stack([mask, np.eye(4, 6, dtype=bool)])
    assert np.array_equal(chain._mask_array(stack, "mask_id"), mask | np.eye(4, 6, dtype=bool))
    assert np.array_equal(chain._mask_array(mask.astype(np.float32) * 0.9, "mask_id"), mask)
