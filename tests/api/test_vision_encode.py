"""Vision result encodings: COCO RLE equal to pycocotools', polygons that fill back to
the mask, `.npy` and lists exact, bad choices a 422 naming the field; large results
stored as artifacts and fetched by their URL from the real app."""

from __future__ import annotations

import io
import json
import math

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from pycocotools import mask as coco_mask

from pixelpool.api.app import create_app
from pixelpool.api.errors import ApiError
from pixelpool.api.vision import artifacts
from pixelpool.api.vision.encode import (
    array_to_list,
    encode_array,
    encode_masks,
    mask_to_polygons,
    mask_to_rle,
    npy_to_array,
    polygons_to_mask,
    rle_to_mask,
)
from pixelpool.config import Settings

RNG = np.random.default_rng(1234)


def _random_masks() -> list[np.ndarray]:
    shapes = [(1, 1), (1, 9), (9, 1), (1, 64), (64, 1), (7, 13), (32, 32), (33, 65)]
    masks = [(RNG.random(s) > p) for s in shapes for p in (0.2, 0.5, 0.9)]
    blobs = [cv2.GaussianBlur(RNG.random((48, 40)), (9, 9), 0) > 0.5 for _ in range(4)]
    return masks + blobs


@pytest.mark.parametrize("mask", _random_masks(), ids=lambda m: "x".join(map(str, m.shape)))
def test_rle_is_pycocotools_own_and_decodes_to_the_mask(mask: np.ndarray) -> None:
    rle = mask_to_rle(mask)
    theirs = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert rle == {"size": list(theirs["size"]), "counts": theirs["counts"].decode()}
    json.dumps(rle)  # plain JSON
    decoded = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    assert np.array_equal(decoded, mask.astype(np.uint8))
    assert np.array_equal(rle_to_mask(rle), mask.astype(np.uint8))


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (5, 6), (31, 17)])
@pytest.mark.parametrize("fill", [0, 1])
def test_rle_empty_and_full_masks(shape: tuple[int, int], fill: int) -> None:
    mask = np.full(shape, fill, np.uint8)
    rle = mask_to_rle(mask)
    assert rle["size"] == list(shape)
    assert np.array_equal(rle_to_mask(rle), mask)
    assert int(coco_mask.area({**rle, "counts": rle["counts"].encode()})) == mask.sum()


def test_rle_of_a_stack_is_one_per_mask() -> None:
    stack = RNG.random((3, 10, 12)) > 0.5
    rles = encode_masks(stack, "rle")
    assert [rle_to_mask(r).astype(bool).tolist() for r in rles] == stack.tolist()


def _shapes() -> dict[str, np.ndarray]:
    rect = np.zeros((20, 30), np.uint8)
    rect[4:15, 6:25] = 1
    disc = np.zeros((40, 50), np.uint8)
    cv2.circle(disc, (20, 22), 12, 1, -1)
    ell = np.zeros((30, 30), np.uint8)  # concave: an L
    ell[5:25, 5:10] = 1
    ell[20:25, 5:25] = 1
    star = np.zeros((64, 64), np.uint8)
    angles = [i * math.pi / 5 for i in range(10)]
    radii = [25 if i % 2 == 0 else 10 for i in range(10)]
    points = [
        (32 + r * math.cos(a), 32 + r * math.sin(a)) for r, a in zip(radii, angles, strict=True)
    ]
    cv2.fillPoly(star, [np.array(points, np.int32)], 1)
    two = rect.copy()  # two separate regions, one touching the border
    two[17:20, 0:4] = 1
    thin = np.zeros((10, 10), np.uint8)  # one-pixel-wide parts: a point, lines
    thin[3, 3] = 1
    thin[6, 2:8] = 1
    thin[0:5, 9] = 1
    return {"rect": rect, "disc": disc, "ell": ell, "star": star, "two": two, "thin": thin}


@pytest.mark.parametrize("name", list(_shapes()))
def test_polygons_at_tolerance_0_fill_back_to_the_mask(name: str) -> None:
    mask = _shapes()[name]
    polygons = mask_to_polygons(mask, 0)
    assert all(isinstance(v, int) for p in polygons for v in p)
    assert all(len(p) % 2 == 0 for p in polygons)
    assert np.array_equal(polygons_to_mask(polygons, *mask.shape), mask)


def test_polygons_fill_holes() -> None:
    """COCO polygons have no holes: the outline of a ring fills its hole too (documented)."""
    ring = np.zeros((30, 30), np.uint8)
    ring[5:25, 5:25] = 1
    ring[10:20, 10:20] = 0
    filled = polygons_to_mask(mask_to_polygons(ring, 0), 30, 30)
    expected = ring.copy()
    expected[10:20, 10:20] = 1
    assert np.array_equal(filled, expected)
    assert len(mask_to_polygons(ring, 0)) == 1


def test_tolerance_simplifies_within_the_outline() -> None:
    disc = _shapes()["disc"]
    exact = mask_to_polygons(disc, 0)
    rough = mask_to_polygons(disc, 2.0)
    assert len(rough[0]) < len(exact[0])
    filled = polygons_to_mask(rough, *disc.shape)
    iou = (filled & disc).sum() / (filled | disc).sum()
    assert iou > 0.85
    # Every pixel that changed lies within the tolerance (plus one pixel) of the edge.
    edge = cv2.morphologyEx(disc, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    distance = cv2.distanceTransform(1 - edge, cv2.DIST_L2, 5)
    assert distance[filled != disc].max(initial=0) <= 3.0


def test_empty_mask_has_no_polygons() -> None:
    assert mask_to_polygons(np.zeros((4, 5), bool), 0) == []
    assert encode_masks(np.zeros((2, 4, 5), bool), "polygons") == [[], []]


def test_dense_masks_as_lists_or_npy() -> None:
    stack = RNG.random((2, 5, 7)) > 0.5
    assert encode_masks(stack, "dense") == stack.astype(np.uint8).tolist()
    as_npy = encode_masks(stack, "dense", dense_format="npy")
    assert [npy_to_array(m).tolist() for m in as_npy] == stack.tolist()
    assert as_npy[0]["dtype"] == "bool" and as_npy[0]["shape"] == [5, 7]
    assert encode_masks(stack[0], "dense") == [stack[0].astype(np.uint8).tolist()]


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.bool_, np.uint16, np.int64])
def test_npy_round_trip_is_exact(dtype: type) -> None:
    array = (RNG.standard_normal((3, 4, 5)) * 100).astype(dtype)
    encoded = encode_array(array, "npy")
    assert encoded["dtype"] == str(array.dtype) and encoded["shape"] == [3, 4, 5]
    back = npy_to_array(json.loads(json.dumps(encoded)))
    assert back.dtype == array.dtype
    assert np.array_equal(back, array)
    assert back.tobytes() == array.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.bool_, np.int32])
def test_lists_equal_tolist(dtype: type) -> None:
    array = (RNG.standard_normal((2, 3, 4)) * 10).astype(dtype)
    assert encode_array(array, "list") == array.tolist()


def test_lists_turn_non_finite_values_into_null() -> None:
    array = np.array([1.5, np.nan, np.inf, -np.inf], np.float32)
    assert array_to_list(array) == [1.5, None, None, None]
    json.dumps(array_to_list(array), allow_nan=False)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: encode_masks(np.zeros((2, 2)), "png"), "output_format"),
        (lambda: encode_masks(np.zeros((2, 2)), None), "output_format"),
        (lambda: encode_masks(np.zeros((2, 2)), "polygons", tolerance=-1), "tolerance"),
        (lambda: encode_masks(np.zeros((2, 2)), "polygons", tolerance=math.nan), "tolerance"),
        (lambda: encode_masks(np.zeros((2, 2)), "polygons", tolerance="1"), "tolerance"),
        (lambda: encode_masks(np.zeros((2, 2)), "polygons", tolerance=True), "tolerance"),
        (lambda: encode_masks(np.zeros((2, 2)), "dense", dense_format="csv"), "array_format"),
        (lambda: encode_array(np.zeros(2), "json"), "array_format"),
        (lambda: encode_array(np.zeros(2), "npy", field="features_format"), None),
        (lambda: artifacts.check_return_mode("url"), "return"),
    ],
)
def test_bad_choices_are_a_422_naming_the_field(call, field: str | None) -> None:
    if field is None:  # a good choice, with the field named by the caller
        call()
        with pytest.raises(ApiError) as err:
            encode_array(np.zeros(2), "bin", field="features_format")
        field = "features_format"
    else:
        with pytest.raises(ApiError) as err:
            call()
    assert err.value.status == 422
    assert err.value.field == field
    assert err.value.message.startswith(f"{field}: ")


def test_should_store() -> None:
    assert artifacts.should_store(10, "artifact", 1000)
    assert not artifacts.should_store(10_000, "inline", 1000)
    assert artifacts.should_store(1001, "auto", 1000)
    assert not artifacts.should_store(1000, "auto", 1000)


# --- artifacts through the real app -------------------------------------------------


@pytest.fixture(scope="module")
def app_client(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("vision_artifacts")
    (root / "models").mkdir()
    settings = Settings.model_validate(
        {
            "server": {"models_dir": str(root / "models"), "data_dir": str(root / "data")},
            "limits": {"inline_result_bytes": 1024},
        }
    )
    app = create_app(settings)
    if not any(getattr(r, "name", None) == artifacts.ROUTE_NAME for r in app.routes):
        app.include_router(artifacts.router)  # until app.py includes it
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _fetch(client: TestClient, url: str) -> bytes:
    resp = client.get(url)
    assert resp.status_code == 200, resp.text
    return resp.content


def test_large_results_are_stored_and_fetched_by_url(app_client: TestClient) -> None:
    state = app_client.app.state.pixelpool
    request = _request(app_client)
    depth = RNG.random((40, 50)).astype(np.float32)

    ref = app_client.portal.call(artifacts.store_array, state, request, None, depth)
    assert ref["media_type"] == artifacts.NPY_MEDIA_TYPE
    assert ref["dtype"] == "float32" and ref["shape"] == [40, 50]
    assert ref["url"].endswith(f"/api/artifacts/{ref['artifact_id']}")
    back = np.load(io.BytesIO(_fetch(app_client, ref["url"])), allow_pickle=False)
    assert np.array_equal(back, depth)

    small = {"masks": [[0, 1]]}
    big = {"masks": encode_masks(RNG.random((2, 40, 40)) > 0.5, "dense")}
    call = app_client.portal.call
    assert call(artifacts.inline_or_artifact, state, request, None, small, "auto") == small
    assert call(artifacts.inline_or_artifact, state, request, None, big, "inline") == big
    for result, mode in ((big, "auto"), (small, "artifact")):
        ref = call(artifacts.inline_or_artifact, state, request, None, result, mode)
        assert set(ref) == {"artifact_id", "url", "media_type", "size"}
        assert json.loads(_fetch(app_client, ref["url"])) == result


def test_unknown_or_malformed_artifact_ids_are_404(app_client: TestClient) -> None:
    for artifact_id in ("0" * 32, "no.such"):
        resp = app_client.get(f"/api/artifacts/{artifact_id}")
        assert resp.status_code == 404
        assert "artifact_id" in resp.json()["error"]


def _request(client: TestClient):
    """A request of this app, for `url_for` (what a route passes in)."""
    from starlette.requests import Request

    scope = {"type": "http", "app": client.app, "router": client.app.router,
             "scheme": "http", "server": ("testserver", 80), "path": "/", "headers": [],
             "root_path": "", "query_string": b"", "method": "GET"}  # fmt: skip
    return Request(scope)
