"""The diffusion family's API: request -> JobSpec for its ops (specs.py) and its native
routes beyond /api/generate (native.py). Dialect modules build on `api/ops.py`."""
