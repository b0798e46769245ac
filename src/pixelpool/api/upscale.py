"""FoxBurrow's /api/upscale: super-resolution with a model from models/upscale/."""

from fastapi import APIRouter

from pixelpool.api.image_ops import add_image_op

router = APIRouter(prefix="/api", tags=["upscale"])
add_image_op(router, "upscale", "upscale",
             "upscale an image (raw body or multipart `image` + `params`)")  # fmt: skip
