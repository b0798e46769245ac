"""The OpenAI Images API dialect (`/v1/images/*`) and its error envelope for all of /v1."""

from __future__ import annotations

from fastapi import FastAPI

from pixelpool.api.errors import add_error_format
from pixelpool.api.openai.errors import is_openai_path, openai_error
from pixelpool.api.openai.images import router


def install(app: FastAPI) -> None:
    """Mount the routes and shape every error under /v1 as OpenAI does."""
    add_error_format(app, is_openai_path, openai_error)
    app.include_router(router)
