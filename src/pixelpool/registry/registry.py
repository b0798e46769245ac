"""The registry: which models exist, their ids, and lookup by name or fingerprint."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pixelpool.registry.controlnets import ControlNetEntry, ControlNetNotFound, scan_controlnets
from pixelpool.registry.entry import ModelEntry
from pixelpool.registry.fingerprint import FingerprintCache, hash_model
from pixelpool.registry.ip_adapters import (
    IPAdapterEntry,
    IPAdapterNotFound,
    scan_ip_adapters,
)
from pixelpool.registry.ip_adapters import pick as pick_ip_adapter
from pixelpool.registry.loras import LoraEntry, LoraNotFound, scan_loras
from pixelpool.registry.preview_decoders import PreviewDecoderEntry, pick, scan_preview_decoders
from pixelpool.registry.scan import scan_models

E = TypeVar("E", ControlNetEntry, IPAdapterEntry)

log = logging.getLogger(__name__)

MIN_ID_PREFIX = 10


class ModelNotFound(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"model not found: {name!r}")
        self.name = name


class WrongFamily(LookupError):
    """The model exists, but is of another family than the operation needs."""

    def __init__(self, name: str, family: str, wanted: str) -> None:
        super().__init__(f"model {name!r} is of the {family} family, not {wanted}")
        self.name, self.family, self.wanted = name, family, wanted


@dataclass(frozen=True)
class ScanResult:
    added: int
    removed: int
    unchanged: int
    total: int


class Registry:
    """Models on disk, rescanned on demand; fingerprints computed in the background."""

    def __init__(self, models_dir: Path, cache_db: Path) -> None:
        self.models_dir = models_dir
        self._cache = FingerprintCache(cache_db)
        self._entries: dict[str, ModelEntry] = {}
        self._loras: dict[str, LoraEntry] = {}
        self._preview_decoders: list[PreviewDecoderEntry] = []
        self._ip_adapters: list[IPAdapterEntry] = []
        self._controlnets: list[ControlNetEntry] = []
        self._fingerprints: dict[Path, str] = {}
        self._lock = threading.Lock()
        self._hash_thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._rehash = False  # a scan came in while hashing: go round once more

    def scan(self) -> ScanResult:
        """Rescan models (and LoRAs and preview decoders, so the periodic rescan picks
        them all up, and IP-Adapters); the counts are the models'."""
        found = {e.qualified_name: e for e in scan_models(self.models_dir)}
        self.scan_loras()
        decoders = scan_preview_decoders(self.models_dir)
        adapters = scan_ip_adapters(self.models_dir)
        controlnets = scan_controlnets(self.models_dir)
        with self._lock:
            self._preview_decoders = decoders
            self._ip_adapters = adapters
            self._controlnets = controlnets
        return self._replace("_entries", found)

    def scan_loras(self) -> ScanResult:
        return self._replace("_loras", {e.name: e for e in scan_loras(self.models_dir)})

    def _replace(
        self, attr: str, found: dict[str, ModelEntry] | dict[str, LoraEntry]
    ) -> ScanResult:
        with self._lock:
            old = getattr(self, attr)
            unchanged = sum(1 for k, e in found.items() if old.get(k) == e)
            added = sum(1 for k in found if k not in old)
            removed = sum(1 for k in old if k not in found)
            setattr(self, attr, found)
            for key, entry in found.items():
                cached = self._cache.get(entry.path, entry.size_bytes, entry.mtime_ns)
                if cached:
                    self._fingerprints[entry.path] = cached
                elif old.get(key) != entry:
                    self._fingerprints.pop(entry.path, None)
        self._start_hashing()
        return ScanResult(added, removed, unchanged, len(found))

    def loras(self) -> list[LoraEntry]:
        with self._lock:
            return sorted(self._loras.values(), key=lambda e: e.name)

    def resolve_lora(self, name: str) -> LoraEntry:
        """By name (path under loras/ without .safetensors), file name, or fingerprint."""
        key = name.strip().removesuffix(".safetensors")
        entries = self.loras()
        for by in (lambda e: e.name, lambda e: e.path.stem):
            hits = [e for e in entries if by(e) == key]
            if len(hits) == 1:
                return hits[0]
        lowered = key.lower().removeprefix("sha256:")
        if len(lowered) >= MIN_ID_PREFIX:
            hits = [e for e in entries if (self.fingerprint(e) or "").startswith(lowered)]
            if len(hits) == 1:
                return hits[0]
        raise LoraNotFound(name)

    def controlnets(self) -> list[ControlNetEntry]:
        """ControlNet directories under controlnet/ (never offered as generation models)."""
        with self._lock:
            return list(self._controlnets)

    def resolve_controlnet(self, name: str) -> ControlNetEntry:
        """By name (path under controlnet/) or by the directory's own name when unique."""
        found = _unique(self.controlnets(), name.strip().strip("/"), lambda e: e.path.name)
        if found is None:
            raise ControlNetNotFound(name)
        return found

    def preview_decoders(self) -> list[PreviewDecoderEntry]:
        """TAESD decoders found under vae_approx/ (never offered as generation models)."""
        with self._lock:
            return list(self._preview_decoders)

    def preview_decoder(self, architecture: str) -> PreviewDecoderEntry | None:
        """The TAESD decoder previews of a model of `architecture` use, if one is installed."""
        return pick(self.preview_decoders(), architecture)

    def ip_adapters(self) -> list[IPAdapterEntry]:
        """IP-Adapters found under ip-adapter/ (never offered as generation models)."""
        with self._lock:
            return list(self._ip_adapters)

    def resolve_ip_adapter(self, name: str) -> IPAdapterEntry:
        """By name (path under ip-adapter/ without .safetensors) or file name."""
        key = name.strip().removesuffix(".safetensors")
        found = _unique(self.ip_adapters(), key, lambda e: e.path.stem)
        if found is None:
            raise IPAdapterNotFound(name)
        return found

    def ip_adapter(self, architecture: str) -> IPAdapterEntry | None:
        """The IP-Adapter a request naming none uses on a model of `architecture`, if any."""
        return pick_ip_adapter(self.ip_adapters(), architecture)

    def entries(self) -> list[ModelEntry]:
        with self._lock:
            return sorted(self._entries.values(), key=lambda e: (e.folder, e.name))

    def paths(self) -> list[str]:
        """Every model file or folder a job may name: models, LoRAs, ControlNets,
        IP-Adapters and their image encoders, preview decoders (a cluster asks each node
        which it has)."""
        found = [e.path for e in self.entries()] + [e.path for e in self.loras()]
        found += [e.path for e in self.controlnets()] + [e.path for e in self.preview_decoders()]
        for adapter in self.ip_adapters():
            found += [adapter.path, adapter.image_encoder]
        return [str(p) for p in dict.fromkeys(found)]

    def fingerprint(self, entry: ModelEntry | LoraEntry) -> str | None:
        with self._lock:
            return self._fingerprints.get(entry.path)

    def resolve(self, key: str, family: str | None = None) -> ModelEntry:
        """By name, by folder/name, by fingerprint or by a unique fingerprint prefix.

        With `family`, a name is looked up among that family's models first, and a model
        found only in another family raises WrongFamily (naming both)."""
        if family is None:
            return self._resolve(key.strip(), self.entries())
        mine = [e for e in self.entries() if e.family == family]
        try:
            return self._resolve(key.strip(), mine)
        except ModelNotFound:
            other = self._resolve(key.strip(), self.entries())
            raise WrongFamily(other.name, other.family, family) from None

    def _resolve(self, key: str, entries: list[ModelEntry]) -> ModelEntry:
        by_name = [e for e in entries if e.name == key]
        if len(by_name) == 1:
            return by_name[0]
        for e in entries:
            if e.qualified_name == key:
                return e
        by_id = [e for e in entries if e.manifest is not None and e.manifest.id == key]
        if len(by_id) == 1:
            return by_id[0]
        lowered = key.lower().removeprefix("sha256:")
        if len(lowered) >= MIN_ID_PREFIX:
            with self._lock:
                hits = [
                    e for e in entries if self._fingerprints.get(e.path, "").startswith(lowered)
                ]
            if len(hits) == 1:
                return hits[0]
        raise ModelNotFound(key)

    def default_entry(self, preferred: str | None = None, family: str = "diffusion") -> ModelEntry:
        """The preferred model, else the first of `family`."""
        if preferred:
            return self.resolve(preferred, family)
        entries = [e for e in self.entries() if e.family == family]
        if not entries:
            raise ModelNotFound(f"(default: no {family} models installed)")
        return entries[0]

    def wait_for_fingerprints(self, timeout: float | None = None) -> bool:
        thread = self._hash_thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def close(self) -> None:
        """Stop hashing (a partial hash is simply redone next start) and close the cache."""
        self._closing.set()
        self.wait_for_fingerprints(timeout=5)
        self._cache.close()

    def _start_hashing(self) -> None:
        if self._hash_thread is not None and self._hash_thread.is_alive():
            self._rehash = True
            return
        self._rehash = False
        self._hash_thread = threading.Thread(
            target=self._hash_all, name="fingerprints", daemon=True
        )
        self._hash_thread.start()

    def _hash_all(self) -> None:
        while True:
            todo: list[ModelEntry | LoraEntry] = [*self.entries(), *self.loras()]
            for entry in todo:
                if self._closing.is_set():
                    return
                if self.fingerprint(entry):
                    continue
                try:
                    digest = hash_model(entry.path, self._closing)
                except OSError as exc:
                    log.warning("cannot fingerprint %s: %s", entry.path, exc)
                    continue
                if self._closing.is_set():
                    return
                self._cache.put(entry.path, entry.size_bytes, entry.mtime_ns, digest)
                with self._lock:
                    self._fingerprints[entry.path] = digest
            if not self._rehash:
                return
            self._rehash = False


def _unique(entries: list[E], key: str, file_name: Callable[[E], str]) -> E | None:
    """The entry named `key`, else the one whose file or folder is named `key` when
    exactly one is; None when neither picks one."""
    for by in (lambda e: e.name, file_name):
        hits = [e for e in entries if by(e) == key]
        if len(hits) == 1:
            return hits[0]
    return None
