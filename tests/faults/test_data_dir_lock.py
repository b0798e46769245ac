"""One server per data dir: a second one refuses to start, naming the dir and the holder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pixelpool.jobs import datalock
from pixelpool.testing.server import ServerProcess, free_port


def _serve(models_dir: Path, data_dir: Path) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable, "-m", "pixelpool.cli", "serve", "--port", str(free_port()),
        "--models-dir", str(models_dir), "--data-dir", str(data_dir),
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_lock_is_per_process_and_names_the_holder(tmp_path: Path) -> None:
    lock = datalock.acquire(tmp_path)
    assert datalock.acquire(tmp_path) is lock  # the CLI and the app's lifespan share it
    probe = (
        "import sys; from pathlib import Path; from pixelpool.jobs import datalock\n"
        "try:\n    datalock.acquire(Path(sys.argv[1]))\n"
        "except datalock.DataDirBusy as exc:\n    print(exc.pid); sys.exit(3)\n"
    )
    other = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True)
    assert other.returncode == 3 and int(other.stdout) == os.getpid()
    lock.release()
    lock.release()
    free = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True)
    assert free.returncode == 0, free.stderr


def test_second_server_refuses_and_a_killed_one_frees_the_dir(
    models_dir: Path, tmp_path: Path
) -> None:
    first = ServerProcess(models_dir, tmp_path).start()
    try:
        assert first.process is not None
        second = _serve(models_dir, tmp_path)
        assert second.returncode != 0
        assert str(tmp_path.resolve()) in second.stderr
        assert f"process {first.process.pid}" in second.stderr
        assert "Traceback" not in second.stderr + second.stdout
    finally:
        first.kill()  # kill -9: the OS drops the lock with the process
    # Free at once: the OS dropped the lock with the process (no stale-lock clean-up).
    datalock.acquire(tmp_path).release()


def test_lock_file_survives_but_does_not_block(tmp_path: Path) -> None:
    """The lock file stays on disk after release; only a live holder blocks."""
    for _ in range(2):
        datalock.acquire(tmp_path).release()
    assert (tmp_path / datalock.LOCK_NAME).exists()
