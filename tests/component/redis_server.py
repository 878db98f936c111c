"""A private redis-server for component tests (Debian package `redis-server`; `make system-deps`)."""

from __future__ import annotations

import shutil
import subprocess
import threading

import pytest


class RedisServer:
    """A private redis-server on a loopback port, no persistence; stopped by its PID. Starting one
    fails the test if redis-server is missing or not ready within 10 s."""

    def __init__(self, port: int) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed (Debian: apt-get install -y redis-server)")
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc = subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.log: list[str] = []
        ready = threading.Event()
        threading.Thread(target=self._drain, args=(ready,), daemon=True).start()
        if not ready.wait(10) or self.proc.poll() is not None:
            self.stop()
            pytest.fail(f"redis-server did not start on port {port}: {''.join(self.log)[-2000:]}")

    def _drain(self, ready: threading.Event) -> None:
        assert self.proc.stdout is not None
        for line in iter(self.proc.stdout.readline, b""):
            self.log.append(line.decode(errors="replace"))
            if b"Ready to accept connections" in line:
                ready.set()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
