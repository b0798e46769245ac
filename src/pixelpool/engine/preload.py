"""Imported once by the fork server that starts workers (never by the HTTP process).

A worker forks from that server with torch and the diffusion family already imported,
so starting or restarting one costs a fork instead of ~10 s of CPU importing them
again: a worker that crashed serves again in about a second. Importing them does
not initialise CUDA, so forking afterwards is safe; each worker picks its device
(and `CUDA_VISIBLE_DEVICES`) after the fork.
"""

from __future__ import annotations

import torch  # noqa: F401

import pixelpool.pipelines.diffusion.family  # noqa: F401
