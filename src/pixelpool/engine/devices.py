"""Detect devices without initialising CUDA in the calling process.

The HTTP process must never touch CUDA, so GPUs are read from nvidia-smi; only
worker processes import torch and open the device.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Any, Literal

DeviceKind = Literal["cpu", "cuda", "mps"]


@dataclass(frozen=True)
class DeviceInfo:
    id: str  # "cpu", "cuda0", "mps"
    kind: DeviceKind
    index: int
    name: str
    total_memory_bytes: int

    @property
    def torch_device(self) -> str:
        return f"cuda:{self.index}" if self.kind == "cuda" else self.kind

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cpu() -> DeviceInfo:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        total = 0
    name = platform.processor() or platform.machine() or "cpu"
    return DeviceInfo("cpu", "cpu", 0, f"{name} ({os.cpu_count()} cores)", total)


def _cuda_devices() -> list[DeviceInfo]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = []
    for line in out.strip().splitlines():
        index, name, mem_mib = (part.strip() for part in line.split(",", 2))
        devices.append(DeviceInfo(f"cuda{index}", "cuda", int(index), name, int(mem_mib) << 20))
    if visible is not None:
        wanted = [v.strip() for v in visible.split(",") if v.strip()]
        devices = [d for d in devices if str(d.index) in wanted]
        devices = [
            DeviceInfo(f"cuda{i}", "cuda", i, d.name, d.total_memory_bytes)
            for i, d in enumerate(devices)
        ]
    return devices


def detect_devices() -> list[DeviceInfo]:
    """Every device this machine has: GPUs first, then the CPU (and MPS on Apple silicon)."""
    devices = _cuda_devices()
    if sys.platform == "darwin" and platform.machine() == "arm64":
        devices.append(DeviceInfo("mps", "mps", 0, "Apple GPU", _cpu().total_memory_bytes))
    devices.append(_cpu())
    return devices


def select_devices(detected: list[DeviceInfo], configured: dict[str, Any]) -> list[DeviceInfo]:
    """Devices that get a worker: configured ones as told; otherwise GPUs, or the CPU if none."""
    has_accelerator = any(d.kind != "cpu" for d in detected)
    chosen = []
    for device in detected:
        cfg = configured.get(device.id)
        default = device.kind != "cpu" or not has_accelerator
        if cfg.enabled if cfg is not None else default:
            chosen.append(device)
    return chosen
