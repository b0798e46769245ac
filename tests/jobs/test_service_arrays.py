"""A result's named arrays (vision masks, depth, features) become .npy artifacts that
load back equal, listed after the images with their name, shape and dtype."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from pixelpool.engine.messages import ItemResult
from pixelpool.jobs.spec import JobStatus
from pixelpool.testing.fakes import fake_result, fake_spec

from .test_service_fake import Life, lifetime


def test_arrays_are_stored_as_npy_artifacts(tmp_path: Path) -> None:
    mask = np.zeros((2, 5, 7), dtype=bool)
    mask[1, 2:4, 3:6] = True
    depth = np.linspace(0, 1, 35, dtype=np.float32).reshape(5, 7)

    async def body(life: Life) -> None:
        record = await life.jobs.submit(fake_spec(seed=1), "a")
        await life.step()
        result = fake_result(1)
        result.arrays = {"masks/0/0": mask, "depth/0": depth}
        worker = life.worker()
        worker._emit(ItemResult(record.id, result))
        worker.done()
        await life.step()
        done = await life.jobs.wait(record.id)
        assert done.status is JobStatus.completed
        image, *arrays = done.result["artifacts"]
        assert image["media_type"] == "image/png"
        assert [(a["name"], a["shape"], a["dtype"]) for a in arrays] == [
            ("masks/0/0", [2, 5, 7], "bool"), ("depth/0", [5, 7], "float32"),
        ]  # fmt: skip
        for entry, expected in zip(arrays, (mask, depth), strict=True):
            art = await life.jobs.artifacts.get(entry["id"])
            assert art is not None and art.media_type == "application/x-npy"
            loaded = np.load(io.BytesIO(art.path.read_bytes()), allow_pickle=False)
            np.testing.assert_array_equal(loaded, expected)

    lifetime(tmp_path, body)
