"""Find models under the models dir and tell what each one is, without loading it.

Each folder belongs to one family (`families.for_folder`); the family says which
files there are models (`detect`), the scan only walks, names and stats them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from pixelpool import families
from pixelpool.families.base import FamilyDescription
from pixelpool.registry.entry import ModelEntry
from pixelpool.registry.manifests import Manifest, read_manifest, root_manifests, sibling_manifest

log = logging.getLogger(__name__)


def _dir_stats(path: Path) -> tuple[int, int]:
    size, mtime = 0, 0
    for f in path.rglob("*"):
        if f.is_file():
            st = f.stat()
            size += st.st_size
            mtime = max(mtime, st.st_mtime_ns)
    return size, mtime


def _walk(folder: Path, family: FamilyDescription) -> Iterator[Path]:
    """Model dirs (stop descending into them) and files of the family's types."""
    for child in sorted(folder.iterdir()):
        if child.name.startswith(".") or child.name.endswith(".config"):
            continue
        if child.is_dir():
            marker = family.model_dir_marker
            if marker and (child / marker).is_file():
                yield child
            else:
                yield from _walk(child, family)
        elif child.suffix in family.suffixes:
            yield child


def _entry(
    family: FamilyDescription, folder: Path, path: Path, manifest: Manifest | None = None
) -> ModelEntry | None:
    try:
        detected = family.detect(folder, path)
    except (OSError, ValueError) as exc:
        log.warning("skipping unreadable model file %s: %s", path, exc)
        return None
    if detected is None:
        log.info("skipping %s: not a %s model this server serves", path, family.name)
        return None
    rel = path.relative_to(folder)
    if path.is_dir():
        size, mtime = _dir_stats(path)
        name = rel.as_posix()
    else:
        st = path.stat()
        size, mtime = st.st_size, st.st_mtime_ns
        name = rel.with_suffix("").as_posix()
    sibling = sibling_manifest(path)
    if sibling.is_file():
        manifest = read_manifest(sibling) or manifest
    arch = detected.architecture
    if manifest is not None and manifest.architecture not in (None, arch):
        log.warning("%s: manifest says %s, the model is %s", path, manifest.architecture, arch)
    return ModelEntry(
        name=name,
        folder=folder.name,
        family=family.name,
        architecture=arch,
        path=path.resolve(),
        format=detected.format,
        size_bytes=size,
        mtime_ns=mtime,
        manifest=manifest,
        **detected.traits,
    )


def scan_models(models_dir: Path) -> list[ModelEntry]:
    """Every model of every family under models_dir/<folder>/..."""
    if not models_dir.is_dir():
        return []
    entries: list[ModelEntry] = []
    named = root_manifests(models_dir)
    for folder in sorted(p for p in models_dir.iterdir() if p.is_dir()):
        family = families.for_folder(folder.name)
        if family is None:
            continue
        for path in _walk(folder, family):
            rel = path.relative_to(folder).with_suffix("").as_posix()
            if path.is_dir():
                rel = path.relative_to(folder).as_posix()
            manifest = named.get(rel) or named.get(f"{folder.name}/{rel}")
            entry = _entry(family, folder, path, manifest)
            if entry is not None:
                entries.append(entry)
    return entries
