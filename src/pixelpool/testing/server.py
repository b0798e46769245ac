"""Run a real pixelpool server in a subprocess, for end-to-end tests and benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import httpx


def _die_with_parent() -> None:
    """In the child: on Linux, get SIGTERM when the test or benchmark process dies, so a
    crashed or killed run leaves no server behind (it runs in its own session).

    Linux ties this to the forking *thread*, so it is only armed from the main thread."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """`pixelpool serve` on a free loopback port; waits for /ready; stops on exit."""

    def __init__(
        self,
        models_dir: Path,
        data_dir: Path,
        env: dict[str, str] | None = None,
        port: int | None = None,
        config: Path | None = None,
        log_path: Path | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.models_dir = models_dir
        self.data_dir = data_dir
        self.port = port or free_port()
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
        self.config = config
        self.log_path = log_path or data_dir / "server.log"
        self.args = list(args)  # more `serve` options (e.g. --cluster ray)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable, "-m", "pixelpool.cli", "serve",
            "--port", str(self.port),
            "--models-dir", str(self.models_dir),
            "--data-dir", str(self.data_dir),
        ]  # fmt: skip
        if self.config is not None:
            cmd += ["--config", str(self.config)]
        cmd += self.args
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
            preexec_fn=_die_with_parent
            if threading.current_thread() is threading.main_thread()
            else None,
        )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        """Stop the server and its workers (the whole process group)."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """A crash: SIGKILL to the server and its workers at once."""
        self.stop(signal.SIGKILL)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
