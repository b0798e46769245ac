"""FoxBurrow's /api/bgremove: background removal to RGBA (or the mask alone)."""

from fastapi import APIRouter

from pixelpool.api.image_ops import add_image_op

router = APIRouter(prefix="/api", tags=["bgremove"])
add_image_op(router, "bgremove", "bgremove",
             "remove the background: RGBA PNG, or the mask (`mask_only`)")  # fmt: skip
