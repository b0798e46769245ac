"""Shared helpers: statistics, the results table, machine facts and a CPU-contention monitor.

The monitor exists because benchmarks here often share a small machine with other
work (test suites, builds): a 2-core box where a third busy thread turns a 0.4 s
OpenMP call into 3 s. Every suite reports how many cores *other* processes used
while it ran, so a reader can tell a real regression from a noisy neighbour.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    """Progress on stderr, so stdout holds only the results table."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- statistics ------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), numpy's default method."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))


def summary(values: Sequence[float]) -> dict[str, float | int]:
    """Median (the headline), min (least disturbed by noise) and max of repeated runs."""
    return {
        "median": median(values),
        "min": min(values) if values else math.nan,
        "max": max(values) if values else math.nan,
        "n": len(values),
    }


def steady_rate(finished: list[float], clients: int) -> float | None:
    """Requests/s of closed-loop `clients`, from the end of the first round of responses
    (`finished`: when each arrived) to the start of the last.

    Clients start together, but their first requests reach a server one by one: after
    a quieter phase a batching server's first batch starts short (its hold expects no
    more than its last batch had), and at the end the last requests find fewer
    companions. Both are the ramp of a burst, not the rate the clients get; a 32-image
    run of 8 clients has only four batches, so they would weigh a quarter of it. None
    when the run has no middle (fewer than three rounds): use the whole burst.
    """
    done = sorted(finished)
    first, last = clients - 1, len(done) - clients - 1
    if last - first < clients or done[last] <= done[first]:
        return None
    return (last - first) / (done[last] - done[first])


QUAD_PAUSE_S = 0.02  # before each call of a quad: the last call's idle threads stop spinning


def abba_quads(
    a: Callable[[int], Any], b: Callable[[int], Any], seeds: Sequence[int]
) -> tuple[list[float], list[float], list[float]]:
    """Time `a` and `b` image by image as A B B A quads over `seeds`, in pairs (an odd
    last seed pairs with itself), the same seed on both sides: (a's seconds per call,
    b's seconds per call, each quad's b seconds / a seconds).

    Side by side because the machine's speed drifts (on a shared 2-core machine by
    more than a server's own cost within a minute): two runs made minutes apart
    compare the drift, a quad of about a second compares the two sides.
    """
    spent: tuple[list[float], list[float]] = ([], [])
    quads: list[float] = []
    for first, second in zip(seeds[::2], [*seeds[1::2], *seeds[-1:]], strict=False):
        for side, seed in ((0, first), (1, first), (1, second), (0, second)):
            time.sleep(QUAD_PAUSE_S)
            start = time.perf_counter()
            (a, b)[side](seed)
            spent[side].append(time.perf_counter() - start)
        quads.append(sum(spent[1][-2:]) / sum(spent[0][-2:]))
    return spent[0], spent[1], quads


def abba_block(
    a: Callable[[], dict[str, Any]], b: Callable[[], dict[str, Any]], pause: Callable[[], None]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float]:
    """Two runs of `a` and two of `b` in the order a b b a (`pause` after each); each
    run returns a dict with its "images_per_s": (a's runs, b's runs, b's images/s over
    a's, from the seconds per image of both runs of each)."""
    runs: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
    for side in (0, 1, 1, 0):
        runs[side].append((a, b)[side]())
        pause()
    spent = [sum(1 / r["images_per_s"] for r in side) for side in runs]
    return runs[0], runs[1], spent[0] / spent[1]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


# --- results table ---------------------------------------------------------------------

Row = tuple[str, str, str, str]  # suite, measurement, value, note


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def fmt_num(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}"


def render_table(rows: Iterable[Row]) -> str:
    """A GitHub-flavoured Markdown table: readable in a terminal, pasteable into docs."""
    header: Row = ("suite", "measurement", "median", "note")
    rows = [header, *rows]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for n, row in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


# --- machine facts -----------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(repo: Path) -> str | None:
    """The commit benchmarked (read-only git call), so results can be traced to code."""
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info(repo: Path, gpu: bool) -> dict[str, Any]:
    import diffusers
    import PIL
    import torch

    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "pillow": PIL.__version__,
        "torch_threads_default": torch.get_num_threads(),
        "git_commit": git_commit(repo),
        "loadavg_at_start": list(os.getloadavg()),
    }
    if gpu:
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


# --- CPU contention ------------------------------------------------------------------


def _busy_jiffies() -> int:
    """Busy CPU time of the whole machine (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return user + nice + system + irq + softirq + steal


def _process_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, utime + stime in jiffies) for every live process."""
    table: dict[int, tuple[int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        rest = raw[raw.rfind(")") + 2 :].split()  # the name may contain spaces
        table[int(entry.name)] = (int(rest[1]), int(rest[11]) + int(rest[12]))
    return table


class CpuMonitor:
    """Samples how many cores processes outside this benchmark's tree keep busy.

    Ours = this process and all its descendants (servers and their workers). Others =
    machine busy time minus ours. Linux only; elsewhere it reports nothing. A sample
    scans /proc (~2 ms), so it runs once a second: each wake-up steals a core from
    whichever OpenMP thread runs there, and the suites are sensitive to exactly that.
    """

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.samples: list[tuple[float, float]] = []  # (time, foreign cores over the interval)
        self.enabled = Path("/proc/stat").is_file()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _ours(self, table: dict[int, tuple[int, int]]) -> dict[int, int]:
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        mine, todo = {}, [os.getpid()]
        while todo:
            pid = todo.pop()
            if pid in table:
                mine[pid] = table[pid][1]
            todo.extend(children.get(pid, []))
        return mine

    def _run(self) -> None:
        prev_t, prev_busy, prev_ours = (
            time.monotonic(),
            _busy_jiffies(),
            self._ours(_process_table()),
        )
        while not self._stop.wait(self.interval_s):
            now, busy, ours = time.monotonic(), _busy_jiffies(), self._ours(_process_table())
            own_delta = sum(j - prev_ours.get(pid, 0) for pid, j in ours.items())
            foreign = max(0, (busy - prev_busy) - own_delta) / CLK_TCK / (now - prev_t)
            self.samples.append((now, foreign))
            prev_t, prev_busy, prev_ours = now, busy, ours

    def start(self) -> CpuMonitor:
        if self.enabled:
            self._thread = threading.Thread(target=self._run, name="cpu-monitor", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)

    def foreign_cores(self, since: float, until: float | None = None) -> float | None:
        """Mean cores used by other processes between two time.monotonic() stamps."""
        until = until if until is not None else time.monotonic()
        window = [f for t, f in self.samples if since <= t <= until + self.interval_s]
        return round(statistics.fmean(window), 2) if window else None

    def wait_quiet(self, max_wait_s: float, threshold: float = 0.25) -> float:
        """Wait (up to max_wait_s) for other processes to go quiet; return seconds waited."""
        start = time.monotonic()
        while self.enabled and time.monotonic() - start < max_wait_s:
            recent = self.foreign_cores(time.monotonic() - 2 * self.interval_s)
            if recent is not None and recent < threshold:
                break
            time.sleep(self.interval_s)
        return time.monotonic() - start
