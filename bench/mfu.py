"""Model FLOPs utilisation: the denoiser's FLOPs per image times images/s, over the GPU's
dense fp16/bf16 tensor peak.

Only the denoiser (UNet or transformer) is counted: it is more than 95% of the work at
20+ steps; the text encoders and the VAE decode are left out, so MFU is a slight
underestimate. FLOPs are measured with torch's FlopCounterMode on one denoiser call
(matmuls, convolutions and attention, 2 FLOPs per multiply-add).
"""

from __future__ import annotations

import re
from typing import Any

# Dense (no sparsity) fp16/bf16 tensor-core peaks, TFLOPS, from the vendors' data sheets.
PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,  # SXM; the PCIe card is matched first by its longer name
    "A100": 312.0,
    "L4": 121.0,
    "RTX 4090": 165.0,  # fp32 accumulate, as torch's fp16 matmuls use
}


def peak_tflops(device_name: str) -> float | None:
    """The peak for a `torch.cuda.get_device_name()`; None for a GPU not in the table.
    Names match as whole words ("L4" is not "L40S"), the longest match first."""
    matches = [k for k in PEAK_TFLOPS if re.search(rf"\b{re.escape(k)}\b", device_name, re.I)]
    return PEAK_TFLOPS[max(matches, key=len)] if matches else None


def flops_per_image(call_flops: float, batch: int, steps: int) -> float:
    """One denoiser call for a batch of `batch` images (both halves of classifier-free
    guidance included) costs `call_flops`; an image takes `steps` such calls."""
    return call_flops * steps / batch


def mfu(flops_per_image: float, images_per_s: float, peak: float | None) -> float | None:
    """Achieved FLOP/s over the peak (a fraction, 0..1); None without a known peak."""
    if not peak:
        return None
    return flops_per_image * images_per_s / (peak * 1e12)


def measure_call_flops(pipe: Any, workload: Any, batch: int) -> float:
    """FLOPs of the one denoiser call in a one-step run of `batch` images."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    denoiser = pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer
    counter = FlopCounterMode(display=False)
    seen: list[float] = []

    def before(*_: Any) -> None:
        counter.__enter__()

    def after(*_: Any) -> None:
        counter.__exit__(None, None, None)
        seen.append(float(counter.get_total_flops()))

    hooks = [denoiser.register_forward_pre_hook(before), denoiser.register_forward_hook(after)]
    try:
        with torch.inference_mode():
            pipe(
                prompt=[workload.prompt] * batch,
                negative_prompt=[workload.negative_prompt] * batch,
                width=workload.width,
                height=workload.height,
                num_inference_steps=1,
                guidance_scale=workload.cfg_scale,
                output_type="latent",
            )
    finally:
        for hook in hooks:
            hook.remove()
    return seen[0]
