"""A typed client for pixelpool's native API, blocking (`Client`) and asyncio
(`AsyncClient`) from one implementation (see flow.py).

    from pixelpool.client import Client
    with Client("http://127.0.0.1:8800", key="...") as c:
        job_id = c.enqueue("generate", prompt="a fox", seed=1)
        c.wait(job_id, on_progress=lambda p: print(p.step, p.total))
        c.result(job_id).save("fox.png")
"""

from pixelpool.client.aio import AsyncClient
from pixelpool.client.errors import (
    BadRequest,
    Conflict,
    ConnectionFailed,
    Forbidden,
    Gone,
    JobCancelled,
    JobFailed,
    NotFound,
    PixelpoolError,
    RateLimited,
    ServerBusy,
    ServerError,
    Unauthorized,
)
from pixelpool.client.sync import DEFAULT_SERVER, Client
from pixelpool.client.types import ImageResult, Job, JobEvent, Listed, Progress

__all__ = [
    "DEFAULT_SERVER", "AsyncClient", "BadRequest", "Client", "Conflict", "ConnectionFailed",
    "Forbidden", "Gone", "ImageResult", "Job", "JobCancelled", "JobEvent", "JobFailed",
    "Listed", "NotFound", "PixelpoolError", "Progress", "RateLimited", "ServerBusy",
    "ServerError", "Unauthorized",
]  # fmt: skip
