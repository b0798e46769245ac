"""The layer rules of DESIGN.md, checked on the source."""

import ast
import subprocess
import sys
from pathlib import Path

import pixelpool

PKG = Path(pixelpool.__file__).parent
ORDER = ["api", "jobs", "engine", "pipelines", "registry", "families"]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_imports_point_down_only() -> None:
    bad = []
    for i, layer in enumerate(ORDER):
        above = ORDER[:i]
        for path in (PKG / layer).rglob("*.py"):
            for name in _imports(path):
                parts = name.split(".")
                if parts[0] == "pixelpool" and len(parts) > 1 and parts[1] in above:
                    bad.append(f"{path.relative_to(PKG)} imports {name}")
    assert not bad, bad


def test_http_process_modules_do_not_import_torch() -> None:
    code = (
        "import sys, pixelpool.api.app, pixelpool.cli, pixelpool.registry.registry,"
        " pixelpool.families;"
        "mods = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules];"
        "assert not mods, mods"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_api_and_jobs_consult_families_not_pipeline_internals() -> None:
    """Above the engine, a family is its description: only `pipelines.base` (the Result
    the engine hands back) may be imported from `pipelines/`."""
    bad = []
    for layer in ("api", "jobs"):
        for path in (PKG / layer).rglob("*.py"):
            for name in _imports(path):
                if name.startswith("pixelpool.pipelines") and name != "pixelpool.pipelines.base":
                    bad.append(f"{path.relative_to(PKG)} imports {name}")
    assert not bad, bad
