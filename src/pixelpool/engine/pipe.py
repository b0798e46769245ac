"""The pipe transport: a worker core in a local subprocess, talking over a Pipe.

A reader thread takes the engine's messages off the pipe (so a cancel arrives while a
batch runs), a heartbeat thread says the process is alive, and the main thread serves.
"""

from __future__ import annotations

import signal
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from pixelpool.engine.messages import Heartbeat, Stop
from pixelpool.engine.worker import WorkerCore, prepare_process

HEARTBEAT_S = 2.0


class PipeWorker:
    def __init__(self, device: dict[str, Any], options: dict[str, Any], conn: Connection) -> None:
        self.conn = conn
        self._send_lock = threading.Lock()
        self._broken = False
        self.core = WorkerCore(device, options, self.send)

    def send(self, message: object) -> None:
        """Once the pipe is broken (the server is gone) messages are dropped and the
        core stops: a worker whose server stopped must not die with a traceback."""
        with self._send_lock:
            if self._broken:
                return
            try:
                self.conn.send(message)
            except OSError:  # BrokenPipeError
                self._broken = True
        if self._broken:
            self.core.engine_gone()

    def serve(self) -> None:
        self.core.open()
        threading.Thread(target=self._read, name="reader", daemon=True).start()
        threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True).start()
        self.core.serve()

    def _read(self) -> None:
        while not self.core.stopping.is_set():
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                message = Stop()  # the engine is gone: finish up
            self.core.deliver(message)

    def _heartbeat(self) -> None:
        while not self.core.stopping.wait(HEARTBEAT_S):
            try:
                self.send(Heartbeat(time.time()))
            except OSError:
                return


def worker_main(device: dict[str, Any], options: dict[str, Any], conn: Connection) -> None:
    """Process entry point (forked from the fork server: a clean process per device)."""
    ignore_stop_signals()
    prepare_process(device, options)
    PipeWorker(device, options, conn).serve()


def ignore_stop_signals() -> None:
    """The server stops its workers (a Stop message, then a kill if need be). A SIGTERM
    or SIGINT sent to the whole process group (systemd's default KillMode, Ctrl+C in a
    terminal) used to reach the worker too: it died mid-job before the server could stop
    it, the job counted a lost run (`scheduler.max_retries`), and the server logged a
    crash while stopping. A worker still ends with its server: the pipe closes."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
