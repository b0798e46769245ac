"""upscale: one client, POST /api/upscale vs spandrel called directly; and batching.

The model is a random-weight ESRGAN built from spandrel's own class (a modest one on
the CPU, the real 64-filter, 23-block size with --gpu), saved as `.safetensors` in
`models/upscale/` of two servers started for this suite (batching on and off).

Direct is what a user writes with spandrel: `ModelLoader().load_from_file(path)`,
then the descriptor on a [0, 1] tensor (float16 on CUDA, as the server runs it);
tiled, a plain loop over the same tile positions the server uses, pasting each
tile's output (no blending). The server's time includes the upload, PNG decode,
the worker, PNG encode and HTTP; tiles/s counts tile forwards (one per tile
position per image).

The batching row sends N same-size requests at once from N threads: the batching
server runs them as one job batch (each tile position one forward for all N), the
other one by one.
"""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.common import Row, fmt_ms, fmt_num, log, ratio, summary
from bench.context import Context
from bench.servers import compare, decode, device_env, job_view, scheduler_env, wait_idle

MODEL = "bench-esrgan"
ON, OFF = "upscale-batched", "upscale-unbatched"
SETTINGS = {  # device -> model size, input side, tile, overlap, concurrent requests
    "cpu": {"filters": 32, "blocks": 2, "side": 128, "tile": 64, "overlap": 16, "n": 4},
    "cuda": {"filters": 64, "blocks": 23, "side": 512, "tile": 256, "overlap": 32, "n": 8},
}


def write_model(models_dir: Path, filters: int, blocks: int) -> Path:
    import torch
    from safetensors.torch import save_file
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    net = ESRGAN(num_filters=filters, num_blocks=blocks, scale=4)
    target = models_dir / "upscale" / f"{MODEL}.safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(target))
    return target


def photo(side: int) -> np.ndarray:
    from bench.suites.encode import test_image

    return test_image(side, seed=3)


class Direct:
    """spandrel in this process, as its README shows."""

    def __init__(self, path: Path, device: str) -> None:
        import torch
        from spandrel import ModelLoader

        self.torch = torch
        self.device = device
        self.model = ModelLoader(device).load_from_file(str(path)).eval()
        self.dtype = torch.float32  # as the server picks: float16 on CUDA where supported
        if device.startswith("cuda") and self.model.supports_half:
            self.dtype = torch.float16
            self.model.half()

    def _run(self, rgb: np.ndarray) -> np.ndarray:
        torch = self.torch
        x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].to(self.device, self.dtype) / 255
        with torch.inference_mode():
            y = self.model(x)
        return y[0].permute(1, 2, 0).float().cpu().numpy()

    def untiled(self, rgb: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(self._run(rgb) * 255), 0, 255).astype(np.uint8)

    def tiled(self, rgb: np.ndarray, tiles: list[Any]) -> np.ndarray:
        s = int(self.model.scale)
        out = np.zeros((rgb.shape[0] * s, rgb.shape[1] * s, 3), np.float32)
        for t in tiles:
            out[t.y0 * s : t.y1 * s, t.x0 * s : t.x1 * s] = self._run(rgb[t.y0 : t.y1, t.x0 : t.x1])
        return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)

    def sync(self) -> None:
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()


def post(client: Any, png: bytes, **params: Any) -> tuple[float, bytes, str]:
    start = time.perf_counter()
    resp = client.post("/api/upscale", content=png, params={"model": MODEL, **params})
    elapsed = time.perf_counter() - start
    if resp.status_code != 200:
        raise RuntimeError(f"/api/upscale -> {resp.status_code}: {resp.text[:500]}")
    return elapsed, resp.content, resp.headers.get("x-job-id", "")


def _mode(ctx: Context, direct: Direct, rgb: np.ndarray, png: bytes, tiled: bool,
          cfg: dict[str, Any], reps: int) -> dict[str, Any]:  # fmt: skip
    from pixelpool.pipelines.upscale.tiling import plan_tiles

    side = cfg["side"]
    tile = cfg["tile"] if tiled else side
    tiles = plan_tiles(side, side, tile, cfg["overlap"])  # ESRGAN: no window grid
    params = {"tile": tile, "overlap": cfg["overlap"]}
    server_s: list[float] = []
    direct_s: list[float] = []
    with ctx.client(ON) as client:
        post(client, png, **params)  # warm: the worker loads the model
        for rep in range(reps):
            order = ("server", "direct") if rep % 4 in (0, 3) else ("direct", "server")
            for which in order:
                if which == "server":
                    seconds, out_png, _ = post(client, png, **params)
                    server_s.append(seconds)
                else:
                    start = time.perf_counter()
                    out = direct.tiled(rgb, tiles) if tiled else direct.untiled(rgb)
                    direct.sync()
                    direct_s.append(time.perf_counter() - start)
                ctx.settle()
    server, direct_sum = summary(server_s), summary(direct_s)
    return {
        "mode": f"tiled {tile}/{cfg['overlap']}" if tiled else "untiled",
        "tiles": len(tiles),
        "server_s": server,
        "direct_s": direct_sum,
        "ratio": ratio(server["median"], direct_sum["median"]),
        "server_tiles_per_s": ratio(len(tiles), server["median"]),
        "direct_tiles_per_s": ratio(len(tiles), direct_sum["median"]),
        "vs_direct": compare(decode(out_png), out),
        "server_vs_direct_untiled": compare(decode(out_png), direct.untiled(rgb)),
    }


def _burst(ctx: Context, server: str, png: bytes, n: int, params: dict[str, Any]) -> dict[str, Any]:
    """N requests at once; seconds until the last answer, and the batch sizes they ran in."""
    with ctx.client(server) as client:
        post(client, png, **params)  # warm
        wait_idle(client)
        with ThreadPoolExecutor(n) as pool:
            start = time.perf_counter()
            answers = list(pool.map(lambda _: post(client, png, **params), range(n)))
            wall = time.perf_counter() - start
        sizes = [job_view(client, job_id).get("batch_size") for _, _, job_id in answers]
    return {"wall_s": wall, "images_per_s": ratio(n, wall), "batch_sizes": sizes}


def run(ctx: Context) -> dict[str, Any]:
    plan = ctx.plan
    cfg = SETTINGS["cuda" if plan.device.startswith("cuda") else "cpu"]
    reps = 3 if plan.quick else 7
    path = write_model(ctx.servers.models_dir, cfg["filters"], cfg["blocks"])
    for name, batching in ((ON, True), (OFF, False)):
        env = device_env(plan) | scheduler_env(batching, max(cfg["n"], 2), 0)
        ctx.servers.define(name, env)
    ctx.servers.start(ON, OFF)  # started after the model is written: their registries see it
    direct = Direct(path, "cuda" if plan.device.startswith("cuda") else "cpu")
    rgb = photo(cfg["side"])
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    png = buf.getvalue()
    direct.untiled(rgb)  # warm
    modes = [_mode(ctx, direct, rgb, png, tiled, cfg, reps) for tiled in (False, True)]
    log("upscale: batching burst")
    params = {"tile": cfg["tile"], "overlap": cfg["overlap"]}
    bursts = {name: _burst(ctx, name, png, cfg["n"], params) for name in (ON, OFF)}
    return {
        "model": f"ESRGAN {cfg['filters']} filters x {cfg['blocks']} blocks, 4x, random weights",
        "input": f"{cfg['side']}x{cfg['side']} RGB",
        "modes": modes,
        "batching": {"n": cfg["n"], **bursts},
        "batching_speedup": ratio(bursts[ON]["images_per_s"], bursts[OFF]["images_per_s"]),
        "medians": {
            f"upscale {m['mode']} {side} s": m[f"{side}_s"]["median"]
            for m in modes
            for side in ("server", "direct")
        },
    }


def rows(result: dict[str, Any]) -> list[Row]:
    out: list[Row] = [("upscale", f"model {result['model']}", result["input"], "")]
    for m in result["modes"]:
        n, vs = m["server_s"]["n"], m["vs_direct"]
        out += [
            ("upscale", f"server /api/upscale, {m['mode']}", fmt_ms(m["server_s"]["median"]),
             f"n={n}, {fmt_num(m['server_tiles_per_s'], 2)} tiles/s ({m['tiles']} tiles)"),
            ("upscale", f"direct spandrel, {m['mode']}", fmt_ms(m["direct_s"]["median"]),
             f"n={n}, {fmt_num(m['direct_tiles_per_s'], 2)} tiles/s"),
            ("upscale", f"ratio server / direct, {m['mode']}", fmt_num(m["ratio"]),
             f"max diff vs direct {vs.get('max_abs_diff')} levels, vs direct untiled "
             f"{m['server_vs_direct_untiled'].get('max_abs_diff')}"),
        ]  # fmt: skip
    b = result["batching"]
    for name, label in ((ON, "on"), (OFF, "off")):
        r = b[name]
        note = f"all done in {fmt_ms(r['wall_s'])}; batch sizes {r['batch_sizes']}"
        rate = f"{fmt_num(r['images_per_s'], 2)} img/s"
        out.append(("upscale", f"{b['n']} concurrent requests, batching {label}", rate, note))
    out.append(("upscale", "batching on / off", fmt_num(result["batching_speedup"], 2), "img/s"))
    return out
