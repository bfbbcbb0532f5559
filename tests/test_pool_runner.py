"""The process-pool runner's workers do not outlive the sweep that started them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

DRIVER = textwrap.dedent(
    """
    import os, time
    from splitrl.sweeps.pool_runner import worker_pool

    if __name__ == "__main__":
        pool = worker_pool(1)  # the pool run_in_pool runs its trials in
        print(pool.submit(os.getpid).result(), flush=True)
        pool.submit(time.sleep, 120)  # a long trial, still running when the driver is killed
        time.sleep(120)
    """
)


def _running(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        text = status.read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in text  # a zombie has exited and only waits to be reaped


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
def test_workers_exit_when_the_driver_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    driver = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    worker = None
    try:
        assert driver.stdout is not None
        worker = int(driver.stdout.readline())
        assert _running(worker)
        driver.send_signal(signal.SIGKILL)  # no clean-up runs in the driver
        driver.wait(timeout=10)
        deadline = time.monotonic() + 30
        while _running(worker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _running(worker), "the worker outlived its driver"
    finally:
        driver.kill()
        if worker is not None and _running(worker):
            os.kill(worker, signal.SIGKILL)
