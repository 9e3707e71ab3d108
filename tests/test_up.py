"""`decisions up --demo` as a user runs it: embedded services, demo offers via the API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.helpers import wait_for

pytestmark = pytest.mark.slow


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DECISIONS_")}
    env["DECISIONS_VAR_DIR"] = str(tmp_path / "var")
    env["DECISIONS_API_PORT"] = "0"
    return env


def test_up_demo_serves_offers_and_stops_cleanly(tmp_path: Path) -> None:
    env = _env(tmp_path)
    log = open(tmp_path / "up.out", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "decisions.cli.main", "up", "--demo"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    stack_file = tmp_path / "var" / "stack.json"
    try:
        wait_for(stack_file.exists, timeout=90)
        stack = json.loads(stack_file.read_text())
        for key in (
            "api_url",
            "admin_url",
            "database_url",
            "redis_url",
            "kafka_bootstrap",
            "api_key",
        ):
            assert stack[key], key
        auth = {"Authorization": f"Bearer {stack['api_key']}"}
        assert httpx.get(stack["api_url"] + "/healthz", timeout=5).status_code == 200

        def demo_offer() -> dict | None:
            for i in range(1, 31):
                r = httpx.get(
                    f"{stack['api_url']}/v1/users/demo-{i}/offers", headers=auth, timeout=5
                )
                assert r.status_code == 200, r.text
                offers = r.json()["offers"]
                if any(o["rule"] == "high-value-cart" for o in offers):
                    return r.json()
            return None

        body = wait_for(demo_offer, timeout=60, interval=0.5)
        offer = next(o for o in body["offers"] if o["rule"] == "high-value-cart")
        assert offer["discount"]["value"] == 10
        assert offer["ruleset_version"] == 1
        assert {"offer_id", "rule", "ruleset_version", "kind", "expires_at", "reason"} <= set(offer)
        # every demo shopper's product-page recommendations are personalized (once the
        # paced demo stream is all in)
        def unpersonalized() -> list[str]:
            left = []
            for i in range(1, 31):
                r = httpx.get(f"{stack['api_url']}/v1/users/demo-{i}/recommendations",
                              params={"slot": "product_page"}, headers=auth, timeout=5)
                assert r.status_code == 200, r.text
                body = r.json()
                if not (body["personalized"] and body["strategy"] == "next_click"
                        and body["products"]):
                    left.append(f"demo-{i}")
            return left

        wait_for(lambda: not unpersonalized(), timeout=30, interval=0.5)

        # a second `up` in the same folder reports the running one
        second = subprocess.run(
            [sys.executable, "-m", "decisions.cli.main", "up"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 1
        assert "already running" in second.stdout
        assert stack["api_url"] in second.stdout

        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "up starts its servers and the worker as child processes"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        log.close()
    output = (tmp_path / "up.out").read_text()
    assert code == 0, output
    assert "decisions is up." in output
    assert "offer for demo-" in output
    assert "recommended for demo-" in output and "strategy next_click" in output
    time.sleep(0.5)
    alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"orphans left behind: {alive}"
    assert not stack_file.exists()


@pytest.mark.parametrize(
    ("setting", "url", "service"),
    [
        ("DECISIONS_DATABASE_URL", "postgresql://postgres:secret@127.0.0.1:1/x", "PostgreSQL"),
        ("DECISIONS_REDIS_URL", "redis://127.0.0.1:1/0", "Redis"),
        ("DECISIONS_KAFKA_BOOTSTRAP", "127.0.0.1:1", "Kafka"),
    ],
)
def test_unreachable_service_is_one_clear_line(
    tmp_path: Path, services: dict[str, str], setting: str, url: str, service: str
) -> None:
    env = _env(tmp_path)
    env.update(
        {
            "DECISIONS_DATABASE_URL": services["database_url"],
            "DECISIONS_REDIS_URL": services["redis_url"],
            "DECISIONS_KAFKA_BOOTSTRAP": services["kafka_bootstrap"],
        }
    )
    env[setting] = url
    done = subprocess.run(
        [sys.executable, "-m", "decisions.cli.main", "up"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    shown = url.replace(":secret@", ":***@")
    assert lines[-1].startswith(f"decisions: cannot reach {service} at {shown}"), lines
    assert setting in lines[-1]
    assert "secret" not in done.stderr
