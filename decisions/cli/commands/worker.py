"""``decisions worker [--processes N]``: consume events and make decisions.

One process is one consumer-group member with its own durable_rules host (the engine's C
core has no locks). ``--processes N`` runs N such members as child processes of a small
supervisor: SIGTERM/SIGINT are forwarded (each child finishes its batch, commits and
exits), children die with the supervisor (``PR_SET_PDEATHSIG``), and when one child
dies unexpectedly the others are stopped and the exit code reports it, so a process
manager (systemd, Kubernetes) restarts the whole set. More processes than partitions
leave some idle.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from types import FrameType

from decisions.cli.stack.process import _die_with_parent
from decisions.core import stackfile
from decisions.core.errors import ConfigError
from decisions.core.settings import Settings

log = logging.getLogger(__name__)
SERVICES = ("database_url", "redis_url", "kafka_bootstrap")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "worker", help="consume user events and make decisions (offers, recommendations)",
        description="Consume the events topic in a consumer group, evaluate the active "
                    "rulesets and store offers and recommendations. SIGTERM finishes the "
                    "batch, commits and exits.",
    )
    parser.add_argument("--processes", "-p", type=int, default=1, metavar="N",
                        help="worker processes to run in this group (default 1)")
    parser.set_defaults(handler=handler)


def handler(args: argparse.Namespace, settings: Settings) -> int:
    if args.processes < 1:
        raise ConfigError("--processes must be at least 1")
    settings = stackfile.resolve(settings)
    missing = [name for name in SERVICES if not getattr(settings, name)]
    if missing:
        raise ConfigError(
            "the worker needs " + ", ".join(f"DECISIONS_{m.upper()}" for m in missing)
            + " (or a running `decisions up`)")
    if args.processes == 1:
        from decisions.runtime.worker import run_worker

        return run_worker(settings)
    return supervise(settings, args.processes)


def child_env(settings: Settings, index: int) -> dict[str, str]:
    env = dict(os.environ)
    for name in SERVICES:
        env["DECISIONS_" + name.upper()] = str(getattr(settings, name))
    if settings.worker_metrics_port:
        env["DECISIONS_WORKER_METRICS_PORT"] = str(settings.worker_metrics_port + index)
    return env


def supervise(settings: Settings, processes: int) -> int:
    """Run ``processes`` single workers; forward stop signals; never leave orphans."""
    stopping = False
    children: list[subprocess.Popen[bytes]] = []

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for index in range(processes):
        children.append(subprocess.Popen(
            [sys.executable, "-m", "decisions.cli.main", "worker", "--processes", "1"],
            env=child_env(replace(settings), index), preexec_fn=_die_with_parent,
        ))
    log.info("started %d worker processes: %s", processes,
             ", ".join(str(c.pid) for c in children))
    code = 0
    while any(c.poll() is None for c in children):
        for child in children:
            rc = child.poll()
            if rc is not None and rc != 0 and not stopping:
                log.error("worker process %d exited with %d; stopping the others",
                          child.pid, rc)
                code = 1
                stop(signal.SIGTERM, None)
        time.sleep(0.2)
    if any(c.returncode not in (0, -signal.SIGTERM) for c in children) and code == 0:
        code = 1
    return code
