"""Command line: prepare models and servers in a temp dir, run the suites, print and save.

Everything a run writes (models, server data, logs) lives under one temp dir that is
removed at the end (--keep keeps it, for reading server logs), never in the repo.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import CpuMonitor, log, machine_info, render_table
from bench.context import BATCHED, UNBATCHED, Context
from bench.plan import Plan, cpu_plan, gpu_plan
from bench.servers import Servers, device_env, scheduler_env
from bench.suites import GPU_DEFAULT, GPU_ONLY, OPT_IN, SUITES
from bench.suites.compiled import COMPILED
from bench.suites.stream import STREAMED, UNSTREAMED

REPO = Path(__file__).resolve().parent.parent
STDOUT = "-"  # `--json` with no file: the report goes to stdout
NEEDS = {  # servers each suite uses, started together up front
    "overhead": {BATCHED},
    "throughput": {BATCHED, UNBATCHED},
    "liveness": {BATCHED},
    "compile": {BATCHED, COMPILED},
    "stream": {STREAMED, UNSTREAMED},
}
CHECKS = {  # the acceptance numbers (CPU targets)
    "overhead.ratio <= 1.05": ("overhead", "ratio", lambda v: v <= 1.05),
    "throughput.ratio >= 1.15": ("throughput", "ratio", lambda v: v >= 1.15),
    "throughput.ratio_to_direct_batch >= 0.95": (
        "throughput", "ratio_to_direct_batch", lambda v: v >= 0.95),
    "throughput.one_client_time_ratio <= 1.03": (
        "throughput", "one_client_time_ratio", lambda v: v is not None and v <= 1.03),
    "liveness.p99_ms < 50": ("liveness", "p99_ms", lambda v: v < 50.0),
}  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Benchmark pixelpool against raw diffusers and under load "
        "(suites and results: docs/benchmarks.md).",
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer repetitions (< 3 min on 2 CPU cores)"
    )
    parser.add_argument("--gpu", action="store_true", help="CUDA, real-size random-weight models")
    parser.add_argument(
        "--json", nargs="?", const=STDOUT, default=None, metavar="FILE",
        help="write the results as JSON to FILE; with no FILE, to stdout (the table then "
             "goes to stderr)",
    )  # fmt: skip
    parser.add_argument(
        "--suites", default=None,
        help=f"comma-separated subset (opt-in, not run by default: {', '.join(sorted(OPT_IN))}; "
             f"with --gpu only: {', '.join(sorted(GPU_DEFAULT))})",
    )  # fmt: skip
    parser.add_argument(
        "--threads", type=int, default=None,
        help="torch threads, direct and worker alike (default: all cores)",
    )  # fmt: skip
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                        help="before each suite, wait up to S seconds for other processes "
                             "to go quiet")  # fmt: skip
    parser.add_argument(
        "--batch-window-ms", default=None, metavar="MS",
        help="the batching server's scheduler.batch_window_ms (default auto, the server's)",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (server logs)")
    parser.add_argument(
        "--models-dir", type=Path, default=None,
        help="build the models here and keep them: a later run with the same dir skips "
             "building them (GPU models take a minute and ~13 GB)",
    )  # fmt: skip
    return parser.parse_args(argv)


def prepare_torch(args: argparse.Namespace) -> int:
    """Fix the thread count for the direct pipeline; fail early and clearly without CUDA."""
    import torch

    if args.gpu and not torch.cuda.is_available():
        raise SystemExit(
            "--gpu: CUDA is not available to torch here "
            f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}); "
            "run on a machine with an NVIDIA GPU and a CUDA build of torch"
        )
    if args.gpu and shutil.which("nvidia-smi") is None:
        raise SystemExit("--gpu: nvidia-smi is not on PATH; pixelpool uses it to find GPUs")
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    return threads


def _clean(value: Any) -> Any:
    """JSON without NaN (not valid JSON): NaN -> null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def run_suites(
    ctx: Context,
    names: list[str],
    wait_quiet: float,
    after_each: Callable[[dict[str, Any]], None] = lambda _results: None,
) -> dict[str, Any]:
    """Run the suites in order; `after_each` gets the results so far after every suite
    (a long GPU run that is cut short still leaves the suites it finished)."""
    results: dict[str, Any] = {}
    for i, name in enumerate(names):
        if wait_quiet:
            waited = ctx.monitor.wait_quiet(wait_quiet)
            if waited > 1:
                log(f"waited {waited:.0f}s for other processes to go quiet")
        started = time.monotonic()
        log(f"suite {name} ...")
        try:
            result = SUITES[name].run(ctx)
        except Exception as exc:
            traceback.print_exc()
            for server in list(ctx.servers.running):
                log(f"server {server} log tail:\n{ctx.servers.log_tail(server)[-2000:]}")
            result = {"error": f"{type(exc).__name__}: {exc}"}
        result["wall_s"] = round(time.monotonic() - started, 1)
        result["foreign_cores"] = ctx.monitor.foreign_cores(started)
        results[name] = result
        log(f"suite {name} done in {result['wall_s']}s")
        after_each(results)
        # Free what later suites do not need: CPU, RAM and (GPU) memory.
        later = set().union(*(NEEDS.get(n, set()) for n in names[i + 1 :]))
        ctx.servers.stop(*(s for s in list(ctx.servers.running) if s not in later))
        if not ({"overhead", "throughput", "batch", "compile"} & set(names[i + 1 :])):
            ctx.drop_direct()
    return results


def table_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []
    for name, result in results.items():
        if "error" in result:
            rows.append((name, "FAILED", "-", result["error"][:120]))
            continue
        rows += SUITES[name].rows(result)
        foreign = result.get("foreign_cores")
        if foreign is not None and foreign >= 0.1:
            rows.append((name, "other processes on this machine", f"{foreign:.2f} cores",
                         "busy elsewhere while the suite ran: timings are disturbed"))  # fmt: skip
    return rows


def checks(results: dict[str, Any]) -> dict[str, bool | None]:
    out: dict[str, bool | None] = {}
    for label, (suite, key, ok) in CHECKS.items():
        value = results.get(suite, {}).get(key)
        out[label] = None if value is None or math.isnan(value) else bool(ok(value))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    default = [n for n in SUITES if n not in OPT_IN and (args.gpu or n not in GPU_DEFAULT)]
    names = [n.strip() for n in (args.suites or ",".join(default)).split(",") if n.strip()]
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise SystemExit(f"unknown suite(s) {unknown}; valid: {', '.join(SUITES)}")
    if not args.gpu:
        names = [n for n in names if n not in GPU_ONLY]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    threads = prepare_torch(args)
    plan: Plan = (gpu_plan if args.gpu else cpu_plan)(args.quick, threads)
    if args.batch_window_ms is not None:
        plan.batch_window_ms = args.batch_window_ms
    monitor = CpuMonitor().start()

    def partial(results: dict[str, Any]) -> None:
        if args.json and args.json != STDOUT:
            report = {
                "suites": results,
                "plan": plan.to_dict(),
                "partial": True,
                "mode": ("gpu" if args.gpu else "cpu") + (" quick" if args.quick else ""),
            }
            Path(args.json).write_text(json.dumps(_clean(report), indent=2) + "\n")

    tmp = Path(tempfile.mkdtemp(prefix="pixelpool-bench-"))
    os.environ.setdefault("XDG_CACHE_HOME", str(tmp / "cache"))  # bundled-config cache
    models_dir = args.models_dir.resolve() if args.models_dir else tmp / "models"
    servers = Servers(models_dir, tmp / "data", plan)
    try:
        from bench.models import prepare_cpu_models, prepare_gpu_models

        log(f"temp dir {tmp}; preparing models")
        if args.gpu:
            paths = prepare_gpu_models(models_dir, switch="switch" in names)
        else:
            paths = prepare_cpu_models(models_dir)
        servers.define(
            BATCHED, device_env(plan) | scheduler_env(True, plan.max_batch, plan.batch_window_ms)
        )
        servers.define(UNBATCHED, device_env(plan) | scheduler_env(False, 1, 0))
        for name, on in ((STREAMED, "true"), (UNSTREAMED, "false")):
            servers.define(
                name,
                device_env(plan, stream_results=on)
                | scheduler_env(True, plan.max_batch, plan.batch_window_ms),
            )
        if plan.compile_workloads:
            shapes = [[w.width, w.height, 1] for w in plan.compile_workloads]
            servers.define(
                COMPILED,
                device_env(plan, compile=plan.compile_mode, compile_warmup=json.dumps(shapes))
                | scheduler_env(True, plan.max_batch, plan.batch_window_ms),
            )
        ctx = Context(plan, servers, monitor, paths)
        servers.start(*sorted(set().union(*(NEEDS.get(n, set()) for n in names))))
        results = run_suites(ctx, names, args.wait_quiet, partial)
    finally:
        servers.stop_all()
        monitor.stop()
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    wall = time.monotonic() - started
    machine = machine_info(REPO, args.gpu)
    machine["foreign_cores_during_run"] = monitor.foreign_cores(started)
    verdicts = checks(results)
    report = {
        "suites": results,
        "machine": machine,
        "plan": plan.to_dict(),
        "checks": verdicts,
        "wall_s": round(wall, 1),
        "mode": ("gpu" if args.gpu else "cpu") + (" quick" if args.quick else " full"),
    }
    _report(report, args.json)
    return 1 if any("error" in r for r in results.values()) else 0


def _report(report: dict[str, Any], json_to: str | None) -> None:
    """The table and its summary lines on stdout; with `--json` and no file, the JSON
    there instead (the table on stderr), so `run.py --json | jq` reads it."""
    out = sys.stderr if json_to == STDOUT else sys.stdout
    machine, plan = report["machine"], report["plan"]
    print(render_table(table_rows(report["suites"])), file=out)
    print(file=out)
    gpu = f", GPU {machine['gpu']}" if report["mode"].startswith("gpu") else ""
    print(
        f"mode: {report['mode']}; machine: {machine['cpu']}, {machine['nproc']} cores, "
        f"torch {machine['torch']} ({plan['threads']} threads){gpu}; other processes used "
        f"{machine['foreign_cores_during_run']} cores on average",
        file=out,
    )
    print("checks: " + ", ".join(f"{k}: {v}" for k, v in report["checks"].items()), file=out)
    print(f"wall time: {report['wall_s']:.1f}s", file=out)
    text = json.dumps(_clean(report), indent=2) + "\n"
    if json_to == STDOUT:
        sys.stdout.write(text)
    elif json_to:
        Path(json_to).write_text(text)
        log(f"wrote {json_to}")


if __name__ == "__main__":
    sys.exit(main())
