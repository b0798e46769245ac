"""A module of bench/ loaded by path: the bench is a script folder, not an installed
package, and its stdlib-only modules (the arithmetic) are tested directly."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


def load_bench_module(name: str) -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
