"""Imported once by the fork server that starts workers (never by the HTTP process).

A worker forks from that server with torch and the diffusion family already imported,
so starting or restarting one costs a fork instead of ~10 s of CPU importing them
again: a worker that crashed serves again in about a second. Only CPU workers fork
from it: on a GPU machine, GPU workers forked from it could not use CUDA, so they are
spawned (`engine/local.py`).
"""

from __future__ import annotations

import torch  # noqa: F401

import pixelpool.pipelines.diffusion.family  # noqa: F401
