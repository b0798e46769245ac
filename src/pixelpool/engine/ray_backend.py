"""The Ray backend: one worker actor per device on every node of a Ray cluster.

Devices: each GPU of a node gets an actor (`num_gpus=1`), and CPU actors go where
`cluster.cpu_actors_per_node` says (by default one on a node without GPUs). Device ids
name their node, `<node>/cuda0`, `<node>/cpu0`, where the node is its Ray node name
(`ray start --node-name`; by default its IP address). Actors run the same worker core
as local workers (`engine/ray_actor.py`); their messages come back on a streaming
call, so the scheduler sees them exactly as it sees a local worker's.

Every node needs pixelpool installed; each reads models from its own models dir (see
`engine/ray_actor.py`), and discovery asks each node which of the registry's models it
has, so a job goes only to a node with its model. Discovery runs again every
`cluster.discover_interval_s`: a node that joins gets workers. Inputs stored in the
server's data dir travel with the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from pixelpool.config import Settings
from pixelpool.engine.backend import Backend, Options
from pixelpool.engine.devices import DeviceInfo, detect_devices
from pixelpool.engine.handle import MachineGone, OnExit, OnMessage, WorkerHandle
from pixelpool.engine.membership import Membership
from pixelpool.engine.messages import RunBatch, Stop
from pixelpool.engine.ray_actor import (
    CONCURRENCY,
    WorkerActor,
    input_files,
    models_here,
    staged_bytes,
)
from pixelpool.engine.refusals import InputsTooLarge
from pixelpool.engine.task import Task

log = logging.getLogger(__name__)

MIB = 1 << 20
SWAP_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # see loopback_only()
LOOPBACK = "127.0.0.1"
ASK_TIMEOUT_S = 30.0  # a node that does not answer a discovery round in this is left for the next


@ray.remote(concurrency_groups=CONCURRENCY, max_restarts=0)
class RemoteWorker(WorkerActor):
    @ray.method(concurrency_group="control")
    def deliver(self, message: object, files: dict[str, bytes] | None = None) -> None:
        super().deliver(message, files)

    @ray.method(concurrency_group="events")
    def events(self) -> Iterator[object]:
        yield from super().events()


@dataclass(frozen=True)
class Node:
    node_id: str
    name: str
    address: str
    cpus: float
    gpus: int


def cpu_workers(node: Node, per_node: int | None, cpus_per_actor: float) -> int:
    """How many CPU workers `node` gets: `cluster.cpu_actors_per_node` (default one on a
    node without GPUs, none beside GPUs), but only as many as its CPUs hold. A worker that
    does not fit is never placed (Ray calls its actor unschedulable), so it would only
    fail and restart; a head started with `--num-cpus=0`, as docs/deploy.md says, gets
    none."""
    wanted = per_node if per_node is not None else (0 if node.gpus else 1)
    fits = int(node.cpus / cpus_per_actor + 1e-9)
    if wanted > fits:
        log.info(
            "node %s: %g CPUs hold %d of the %d CPU workers asked for "
            "(cluster.cpus_per_actor = %g each)",
            node.name, node.cpus, fits, wanted, cpus_per_actor,
        )  # fmt: skip
    return min(wanted, fits)


@dataclass(frozen=True)
class NodeReport:
    host: str
    devices: list[DeviceInfo]
    models_dir: str  # the node's own
    models: list[str]  # which of the asked paths (relative to the models dir) it has


@ray.remote(num_cpus=0)
def _inspect(server_models_dir: str, relative: list[str]) -> NodeReport:
    """Runs on one node: its host name, devices (nvidia-smi: no CUDA here) and models."""
    root, present = models_here(server_models_dir, relative)
    return NodeReport(socket.gethostname(), detect_devices(), root, present)


@ray.remote(num_cpus=0)
def _models_on(server_models_dir: str, relative: list[str]) -> list[str]:
    """Runs on a node already known: only which of the models it has (a stat each)."""
    return models_here(server_models_dir, relative)[1]


def connect(address: str | None) -> None:
    """Join the cluster at `address` ("auto", "ray://host:10001", "host:6379"); when it
    is empty, the one Ray's own `RAY_ADDRESS` names, else start a new Ray runtime on
    this machine, listening on loopback only. Once per process."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    address = address or os.environ.get("RAY_ADDRESS", "")
    # A runtime of its own: on loopback, and named after this machine (device ids read
    # `<host>/cpu0`, not `127.0.0.1/cpu0`).
    local = {} if address else {"_node_ip_address": loopback_only(), "_node_name": _host()}
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    ray.init(address=address or "local", include_dashboard=False, **local)  # "local": a new one
    if previous is not None:  # a driver's ray.init makes SIGTERM a bare sys.exit: put the
        signal.signal(signal.SIGTERM, previous)  # server's graceful stop back
    if local and not is_loopback(ray.util.get_node_ip_address()):
        log.warning("the Ray runtime started here listens on every interface (%s=1 is set):"
                    " firewall its ports", SWAP_LOOPBACK_ENV)  # fmt: skip


def loopback_only() -> str:
    """Make the Ray nodes this process starts listen on 127.0.0.1 alone, and return it.

    Ray's servers (GCS, raylet, workers) bind 127.0.0.1 when their node's address is
    exactly 127.0.0.1 and every interface otherwise; but on Linux Ray swaps 127.0.0.1
    for the machine's outward address, unless `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER` is
    off (then it also refuses `ray start --address` joins, which no local runtime needs).
    Off for the processes Ray starts (the environment) and for this one (which read it
    when ray was imported). An explicit setting of the variable is left as it is.
    """
    if SWAP_LOOPBACK_ENV not in os.environ:
        os.environ[SWAP_LOOPBACK_ENV] = "0"
        from ray._private import ray_constants  # where Ray keeps what it read

        ray_constants.ENABLE_RAY_CLUSTER = False
    return LOOPBACK


def _host() -> str:
    return socket.gethostname().split(".")[0] or LOOPBACK


def is_loopback(host: str) -> bool:
    return ipaddress.ip_address(host.removeprefix("::ffff:")).is_loopback


def alive_nodes() -> list[Node]:
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    names = [n.get("NodeName") or n["NodeManagerAddress"] for n in nodes]
    found = []
    for node, name in zip(nodes, names, strict=True):
        if names.count(name) > 1:  # two nodes of one host: tell them apart
            name = f"{name}-{node['NodeID'][:6]}"
        resources = node.get("Resources", {})
        found.append(
            Node(
                node["NodeID"],
                name,
                node["NodeManagerAddress"],
                float(resources.get("CPU", 0)),
                int(resources.get("GPU", 0)),
            )
        )
    return sorted(found, key=lambda n: n.name)


class RayBackend(Backend):
    def __init__(self, settings: Settings, options: Options) -> None:
        self.settings = settings
        self.options = options
        self.cluster = settings.cluster
        self.models_dir = Path(settings.server.models_dir).resolve()
        connect(self.cluster.ray_address)
        self._nodes: dict[str, Node] = {}  # device id -> its node
        self._models: dict[str, frozenset[str]] = {}  # node name -> the model paths it has
        self._found: dict[str, list[DeviceInfo]] = {}  # node id -> its devices, once asked
        self._asked: frozenset[str] = frozenset()  # the model paths last asked about

    @property
    def discover_interval_s(self) -> float | None:
        return self.cluster.discover_interval_s

    def devices(self, models: Sequence[str] = (), refresh: bool = True) -> list[DeviceInfo]:
        """Every live node's devices. A new node is asked (a zero-CPU task on it) for its
        devices and which of `models` (the server's paths) it has; a known one, on
        `refresh` or when `models` changed, only which models it has (a stat each); else
        its answer from before stands. A node that does not answer in time is left for
        the next round."""
        changed = refresh or frozenset(models) != self._asked
        self._asked = frozenset(models)
        relative = self._relative(models)
        server_path = dict(zip(relative, models, strict=True))
        nodes = alive_nodes()
        alive = {n.node_id for n in nodes}
        self._found = {k: v for k, v in self._found.items() if k in alive}
        root = str(self.models_dir)
        calls = {
            node: (_models_on if node.node_id in self._found else _inspect)
            .options(scheduling_strategy=_on(node))
            .remote(root, relative)
            for node in nodes
            if changed or node.node_id not in self._found
        }
        ready: list[Any] = []
        if calls:
            ready, _ = ray.wait(list(calls.values()), num_returns=len(calls), timeout=ASK_TIMEOUT_S)
        for node, call in calls.items():
            try:
                if call not in ready:
                    raise TimeoutError(f"no answer in {ASK_TIMEOUT_S:.0f}s")
                answer = ray.get(call)
            except Exception as exc:  # the node left meanwhile, or is too busy to answer
                log.warning("node %s did not report its devices or models: %s", node.name, exc)
                continue
            present = answer.models if isinstance(answer, NodeReport) else answer
            self._models[node.name] = frozenset(server_path[r] for r in present if r in server_path)
            if isinstance(answer, NodeReport):
                self._found[node.node_id] = self._node_devices(node, answer.devices)
        devices: list[DeviceInfo] = []
        for node in nodes:
            for device in self._found.get(node.node_id, []):
                config = self.settings.devices.get(device.id)
                if config is None or config.enabled:
                    self._nodes[device.id] = node
                    devices.append(device)
        return devices

    def membership(self) -> Membership:
        return Membership(
            known_models=lambda: self._asked,
            vet=self._vet,
            forget=lambda device: self._nodes.pop(device.id, None),
            gone_after_s=self.cluster.node_gone_after_s,
            wait_for_node_s=self.cluster.wait_for_node_s,
        )

    def _vet(self, task: Task) -> None:
        """Refuse a job whose input files are more than `cluster.max_inputs_mib`: they
        travel to its node with the batch, through Ray's object store."""
        sizes = staged_bytes(task.params, self.settings.server.data_dir)
        limit = self.cluster.max_inputs_mib
        if sum(sizes.values()) > limit * MIB:
            field = max(sizes, key=lambda f: sizes[f])
            raise InputsTooLarge(
                f"{field}: the job's input files are {sum(sizes.values()) / MIB:.1f} MiB; "
                f"at most {limit:g} MiB go to a cluster node (cluster.max_inputs_mib)",
                field,
            )

    def _relative(self, models: Sequence[str]) -> list[str]:
        """Paths relative to the models dir; one outside it (a symlinked model) stays
        absolute, so a node looks for it at that same path."""
        relative = []
        for path in models:
            try:
                relative.append(str(Path(path).relative_to(self.models_dir)))
            except ValueError:
                relative.append(path)
        return relative

    def models_on(self, device: DeviceInfo) -> frozenset[str] | None:
        """Also the LoRAs, ControlNets ... it has, when the registry listed them."""
        node = self._nodes.get(device.id)
        return self._models.get(node.name, frozenset()) if node is not None else frozenset()

    def _node_devices(self, node: Node, local: list[DeviceInfo]) -> list[DeviceInfo]:
        gpus = [d for d in local if d.kind == "cuda"][: node.gpus]
        cpu = next(d for d in local if d.kind == "cpu")
        cpus = cpu_workers(node, self.cluster.cpu_actors_per_node, self.cluster.cpus_per_actor)
        made = [
            DeviceInfo(f"{node.name}/{d.id}", "cuda", d.index, d.name, d.total_memory_bytes)
            for d in gpus
        ]
        made += [
            DeviceInfo(f"{node.name}/cpu{i}", "cpu", i, cpu.name, cpu.total_memory_bytes)
            for i in range(cpus)
        ]
        return made

    def make(self, device: DeviceInfo) -> WorkerHandle:
        options = self.options(device)
        if device.kind == "cpu" and not options.get("threads"):
            # As many threads as the CPUs Ray reserved for it (Ray's own default too).
            options["threads"] = max(1, int(self.cluster.cpus_per_actor))
        return RayWorker(
            device, options, self._nodes[device.id], self.settings.server.data_dir,
            self.cluster.cpus_per_actor, self.models_dir,
        )  # fmt: skip

    def nodes(self) -> list[dict[str, Any]]:
        """Every node with devices (a gone one until they are forgotten), and every live
        node without any (a head with no CPUs, a node whose devices are all disabled)."""
        devices = dict(self._nodes)  # discovery may add to it meanwhile, on its thread
        by_node: dict[str, list[str]] = {}
        for device_id, node in devices.items():
            by_node.setdefault(node.node_id, []).append(device_id)
        live = alive_nodes()
        alive = {n.node_id for n in live}
        seen = {n.node_id: n for n in devices.values()}
        for node in live:
            seen.setdefault(node.node_id, node)
        return [
            {
                "name": node.name,
                "address": node.address,
                "alive": node.node_id in alive,
                "cpus": node.cpus,
                "gpus": node.gpus,
                "devices": sorted(by_node.get(node.node_id, [])),
                "models": len(self._models.get(node.name, ())),
            }
            for node in sorted(seen.values(), key=lambda n: n.name)
        ]


def _on(node: Node) -> NodeAffinitySchedulingStrategy:
    return NodeAffinitySchedulingStrategy(node.node_id, soft=False)


class RayWorker(WorkerHandle):
    """The server's side of one worker actor."""

    on_this_host = False

    def __init__(
        self,
        device: DeviceInfo,
        options: dict[str, Any],
        node: Node,
        data_dir: Path,
        cpus_per_actor: float = 1.0,
        models_dir: Path | None = None,
    ) -> None:
        self.device = device
        self.options = options
        self.node = node
        self.data_dir = Path(data_dir)
        self.cpus_per_actor = cpus_per_actor
        self.models_dir = str(models_dir) if models_dir is not None else ""
        self._actor: Any = None
        self._alive = False
        self._pump: asyncio.Task[None] | None = None

    def describe(self) -> dict[str, Any]:
        return {"node": self.node.name, "node_address": self.node.address}

    async def start(self, on_message: OnMessage, on_exit: OnExit) -> None:
        # By name: a node that left and joined again has a new Ray node id.
        alive = await asyncio.to_thread(alive_nodes)
        node = next((n for n in alive if n.name == self.node.name), None)
        if node is None:  # the scheduler tries again later, backing off
            raise MachineGone(f"node {self.node.name} is not in the Ray cluster")
        self.node = node
        gpu = self.device.kind == "cuda"
        # Inside the actor Ray shows it only its own GPU: that one is cuda:0 there.
        wire = {
            **self.device.to_dict(),
            "index": 0 if gpu else self.device.index,
            "torch_device": "cuda:0" if gpu else "cpu",
        }
        self._actor = RemoteWorker.options(
            num_gpus=1 if gpu else 0,
            num_cpus=0 if gpu else self.cpus_per_actor,
            scheduling_strategy=_on(self.node),
            name=None,
        ).remote(wire, self.options, self.models_dir)
        self._alive = True
        stream = self._actor.events.remote()
        self._pump = asyncio.create_task(
            self._read(stream, on_message, on_exit), name=f"ray-{self.device.id}"
        )

    async def _read(self, stream: Any, on_message: OnMessage, on_exit: OnExit) -> None:
        reason = f"worker actor on node {self.node.name} stopped"
        try:
            async for ref in stream:
                on_message(self, await ref)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # ActorDiedError, node loss, a message it cannot decode
            reason = f"worker actor on node {self.node.name} lost: {type(exc).__name__}"
            log.warning("%s: %s", reason, exc)
        self._alive = False
        self._kill_actor()
        on_exit(self, reason)

    def send(self, message: object) -> None:
        if self._actor is None or not self._alive:
            raise RuntimeError("worker actor not running")
        files = input_files(message, self.data_dir) if isinstance(message, RunBatch) else {}
        self._actor.deliver.remote(message, files or None)

    def is_alive(self) -> bool:
        return self._alive

    def kill(self) -> None:
        self._kill_actor()

    def _kill_actor(self) -> None:
        if self._actor is not None:
            with contextlib.suppress(Exception):
                ray.kill(self._actor, no_restart=True)

    async def stop(self, timeout: float = 10.0) -> None:
        if self._actor is None:
            return
        if self._alive:
            with contextlib.suppress(Exception):
                self.send(Stop())
        if self._pump is not None and not self._pump.done():
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._pump), timeout)
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()
        self._alive = False
        self._kill_actor()
