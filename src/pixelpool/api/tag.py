"""FoxBurrow's /api/tag: {"tags": {tag: score}, "characters": ..., "rating": ...}."""

from fastapi import APIRouter

from pixelpool.api.image_ops import add_image_op

router = APIRouter(prefix="/api", tags=["tag"])
add_image_op(router, "tag", "tag", "tag an image (WD or JTP tagger): JSON scores")
