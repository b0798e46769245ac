"""The AUTOMATIC1111 web UI's API (`/sdapi/v1/...`), over the same jobs as every dialect.

`models.py` the request bodies, `generate.py` txt2img/img2img, `info.py` listings,
options, progress, interrupt and png-info, `errors.py` A1111's error envelope;
`controlnet.py` the ControlNet extension's units, `extension.py` its /controlnet routes.
"""

from __future__ import annotations

from fastapi import FastAPI

from pixelpool.api.a1111 import errors, extension, generate, info
from pixelpool.api.errors import add_error_format


def install(app: FastAPI) -> None:
    add_error_format(app, errors.is_a1111, errors.envelope)
    app.include_router(generate.router)
    app.include_router(info.router)
    app.include_router(extension.router)
