"""The benchmarks' processes: start one with its log, stop it, find its descendants, read its CPU.

Shared by `bench.py`, `bench_stream.py` and `soak.py` (through `bench_stream`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.procs import descendants  # noqa: E402


def proc_cpu(pid: int) -> float:
    """utime + stime of one process, seconds (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError):
        return 0.0


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes, seconds (the ones gone count 0)."""
    return sum(proc_cpu(pid) for pid in pids)




__all__ = ["ROOT", "cpu_seconds", "descendants", "proc_cpu", "start", "stop"]


def start(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`argv` in a session of its own (so `stop` can kill what it started), run from the repository
    root, stdout and stderr to `log`."""
    return subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                            start_new_session=True)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    """Send `sig` and wait `timeout` seconds; then SIGKILL its whole session."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
