"""The pipe transport: a worker core in a local subprocess, talking over a Pipe.

A reader thread takes the engine's messages off the pipe (so a cancel arrives while a
batch runs), a heartbeat thread says the process is alive, and the main thread serves.
"""

from __future__ import annotations

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
        self.core = WorkerCore(device, options, self.send)

    def send(self, message: object) -> None:
        with self._send_lock:
            self.conn.send(message)

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
    prepare_process(device, options)
    PipeWorker(device, options, conn).serve()
