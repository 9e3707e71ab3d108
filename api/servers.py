"""The ASGI servers the API runs on (``DECISIONS_API_SERVER``), each in a thread of its own.

- ``uvicorn`` (default): HTTP/1.1 with uvloop and httptools (the API served on its own
  is best served by granian, a command of its own: docs/operations.md, "HTTP/2";
  figures in ``benchmarks/RESULTS.md``);
- ``hypercorn``: HTTP/1.1 and HTTP/2 — h2c on a plain port (prior knowledge or
  ``Upgrade``), h2 over TLS by ALPN.

Both serve HTTPS when ``DECISIONS_API_TLS_CERTFILE`` and ``..._KEYFILE`` are set.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

from decisions.core.errors import ConfigError, DecisionsError
from decisions.core.settings import Settings

SERVERS = ("uvicorn", "hypercorn")


def check(settings: Settings) -> None:
    if settings.api_server not in SERVERS:
        raise ConfigError(f"DECISIONS_API_SERVER={settings.api_server!r}: expected one of "
                          + ", ".join(SERVERS))
    if bool(settings.api_tls_certfile) != bool(settings.api_tls_keyfile):
        raise ConfigError("set both DECISIONS_API_TLS_CERTFILE and DECISIONS_API_TLS_KEYFILE "
                          "(or neither)")


def scheme(settings: Settings) -> str:
    return "https" if settings.api_tls_certfile else "http"


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class ServerThread:
    """``start()`` returns once the port accepts connections; ``stop()`` drains and joins."""

    def __init__(self, app: Any, settings: Settings, host: str, port: int) -> None:
        check(settings)
        self.app, self.settings, self.host, self.port = app, settings, host, port
        self._uvicorn: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        target = self._run_uvicorn if settings.api_server == "uvicorn" else self._run_hypercorn
        self.thread = threading.Thread(target=target, name="api", daemon=True)

    def start(self, timeout: float = 20.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not port_open(self.host, self.port):
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise DecisionsError(f"the API did not start on {self.host}:{self.port}")
            time.sleep(0.05)
        return self

    def is_alive(self) -> bool:
        return self.thread.is_alive()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self.thread.join(timeout)

    def _run_uvicorn(self) -> None:
        import uvicorn

        config = uvicorn.Config(self.app, host=self.host, port=self.port, log_level="warning",
                                access_log=False,
                                ssl_certfile=self.settings.api_tls_certfile or None,
                                ssl_keyfile=self.settings.api_tls_keyfile or None)
        self._uvicorn = uvicorn.Server(config)
        self._uvicorn.run()

    def _run_hypercorn(self) -> None:
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        config = Config()
        config.bind = [f"{self.host}:{self.port}"]
        config.accesslog = None
        config.loglevel = "WARNING"
        if self.settings.api_tls_certfile:
            config.certfile = self.settings.api_tls_certfile
            config.keyfile = self.settings.api_tls_keyfile
        loop = asyncio.new_event_loop()
        self._loop = loop
        stopping = self._stopping = asyncio.Event()
        try:
            loop.run_until_complete(serve(self.app, config, shutdown_trigger=stopping.wait))
        finally:
            loop.close()
