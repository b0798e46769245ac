"""Read a weights file's table of contents without loading a tensor (no torch here).

The registry runs in the HTTP process, which never imports torch: a .safetensors
header is JSON, and a torch zip checkpoint (.pth/.pt) holds a pickle whose tensors
are only references to other zip members, so both list their keys cheaply.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

# A header larger than this is not a plausible safetensors table of contents.
_MAX_HEADER_BYTES = 100 * 1024 * 1024
_MAX_PICKLE_BYTES = 64 * 1024 * 1024


def read_header(path: Path) -> dict[str, Any]:
    """The JSON table of contents of a .safetensors file (tensor name -> dtype, shape,
    offsets, plus ``__metadata__``), read without loading any tensor.

    Raises OSError when the file cannot be read and ValueError when it is not safetensors.
    """
    with Path(path).open("rb") as fh:
        raw_len = fh.read(8)
        if len(raw_len) != 8:
            raise ValueError(f"{path}: too short to be a safetensors file")
        (length,) = struct.unpack("<Q", raw_len)
        if length == 0 or length > _MAX_HEADER_BYTES:
            raise ValueError(f"{path}: implausible safetensors header length {length}")
        raw = fh.read(length)
    if len(raw) != length:
        raise ValueError(f"{path}: truncated safetensors header")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: safetensors header is not valid JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise ValueError(f"{path}: safetensors header is not a JSON object")
    return header


def read_tensor_names(path: Path) -> list[str]:
    """Tensor names of a .safetensors file, read from its header without loading data."""
    return [name for name in read_header(path) if name != "__metadata__"]


class _Stub:
    """Stands for any class the pickle names (torch's tensor rebuilders, OrderedDict...)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _Stub:
        return _Stub()

    def __setstate__(self, state: Any) -> None:
        pass


class _KeysUnpickler(pickle.Unpickler):
    """Builds nothing real: every global is a stub, every storage reference None."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        return _Stub

    def persistent_load(self, pid: Any) -> None:
        return None


def read_pickle_keys(path: Path) -> list[str]:
    """Top-level state-dict keys of a torch zip checkpoint (a `params`/`params_ema` or
    `state_dict` wrapper is looked through), without torch and without running code."""
    try:
        with zipfile.ZipFile(path) as zf:
            member = next((n for n in zf.namelist() if n.endswith("/data.pkl")), None)
            if member is None:
                raise ValueError(f"{path}: not a torch zip checkpoint (no data.pkl)")
            if zf.getinfo(member).file_size > _MAX_PICKLE_BYTES:
                raise ValueError(f"{path}: implausibly large pickle")
            raw = zf.read(member)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{path}: not a torch zip checkpoint: {exc}") from exc
    try:
        obj = _KeysUnpickler(io.BytesIO(raw)).load()
    except Exception as exc:  # any malformed pickle is an unreadable file, not a crash
        raise ValueError(f"{path}: unreadable checkpoint pickle: {exc}") from exc
    if isinstance(obj, dict):
        for wrapper in ("params_ema", "params", "state_dict", "model"):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: holds no state dict")
    return [k for k in obj if isinstance(k, str)]


def read_keys(path: Path) -> list[str]:
    """State-dict keys of a .safetensors, .pth or .pt file."""
    if path.suffix == ".safetensors":
        return read_tensor_names(path)
    return read_pickle_keys(path)
