"""Child processes that die with their parent and stop cleanly."""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: orphans are then stopped by our signal handlers only
        pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    """A server listens on ``host:port``. A connection to a free ephemeral port can connect
    to itself (TCP self-connect) while nothing listens: that does not count."""
    with socket.socket() as sock:
        sock.settimeout(0.2)
        if sock.connect_ex((host, port)) != 0:
            return False
        try:
            return bool(sock.getsockname() != sock.getpeername())
        except OSError:
            return False


class Child:
    """A server process we started; ``stop`` sends ``stop_signal`` then waits, then kills."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        stop_signal: int = signal.SIGTERM,
        **popen: Any,
    ) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")  # closed in stop()
        self.stop_signal = stop_signal
        self.proc = subprocess.Popen(
            list(argv),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            **popen,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_until(self, ready: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with code {self.proc.returncode}; see {self.log_path}"
                )
            if ready():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"{self.name} did not become ready in {timeout:.0f}s; see {self.log_path}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(self.stop_signal)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
