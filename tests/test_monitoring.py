"""The shipped Grafana dashboard and Prometheus alert rules name only metrics the running
stack really exports: the API's /metrics and a worker process's metrics port, scraped
after one event went through both."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.testclient import TestClient

from decisions.core.settings import Settings
from tests.api_helpers import KeyMaker, auth
from tests.helpers import event, import_starter, minutes, now, wait_for
from tests.test_worker_processes import free_ports
from tests.test_worker_support import fast, start_worker, stop

pytest_plugins = ["tests.api_fixtures"]

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "docs" / "monitoring"
DASHBOARD = MONITORING / "grafana" / "decisions.json"
ALERTS = MONITORING / "prometheus" / "alerts.yml"

# PromQL words that are not metric names
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "rate", "irate", "increase", "delta", "idelta", "deriv",
    "histogram_quantile", "abs", "absent", "ceil", "floor", "clamp_min", "clamp_max",
    "avg_over_time", "max_over_time", "min_over_time", "sum_over_time", "changes", "resets",
    "label_replace", "vector", "scalar", "time", "and", "or", "unless", "bool", "offset",
    "by", "without", "on", "ignoring", "group_left", "group_right",
}
# series Prometheus makes itself, not exported by any target
PROMETHEUS_SERIES = {"up"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values, strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b\d+(\.\d+)?(e[+-]?\d+)?\b", "", expr)  # numbers
    return set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr)) - PROMQL_WORDS


def exported_names(page: str) -> set[str]:
    """Every series name a /metrics page can carry: its samples, and each declared family
    (a labelled family shows its samples only once a label set was seen)."""
    names: set[str] = set()
    suffixes = {"counter": ("_total", "_created"), "gauge": ("",),
                "histogram": ("_bucket", "_sum", "_count", "_created"),
                "summary": ("", "_sum", "_count", "_created")}
    for line in page.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            if kind == "counter":  # declared with or without its _total
                name = name.removesuffix("_total")
            names.update(name + s for s in suffixes.get(kind, ("",)))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def dashboard_queries() -> list[str]:
    data = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in data["panels"] for t in p.get("targets", [])]


def alert_queries() -> list[str]:
    data = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in data["groups"] for rule in group["rules"]]


def test_metric_names_of_promql() -> None:
    expr = ('histogram_quantile(0.99, sum by (route, le) (rate(decisions_api_request_seconds'
            '_bucket{job=~"$api_job", status=~"5.."}[$__rate_interval]))) / on (route) '
            'sum(x_total) > 1e3 and up{job="w"} == 0')
    assert metric_names(expr) == {"decisions_api_request_seconds_bucket", "x_total", "up"}


def test_dashboard_and_alerts_are_well_formed() -> None:
    dash = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        if p["type"] != "row":
            assert p["targets"] and p["description"], p["title"]
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            assert rule["alert"].startswith("Decisions"), rule
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule
            assert rule["annotations"]["summary"], rule
    for expr in dashboard_queries() + alert_queries():
        assert metric_names(expr), expr  # every query selects something


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - a local test server
        return str(resp.read().decode())


@pytest.mark.slow
def test_every_query_names_an_exported_metric(
    client: TestClient, make_key: KeyMaker, api_settings: Settings, tmp_path: Path
) -> None:
    settings = fast(api_settings)
    import_starter(settings)
    port = free_ports(1)
    worker = start_worker(settings, tmp_path / "worker.log",
                          DECISIONS_WORKER_METRICS_PORT=str(port),
                          DECISIONS_WORKER_LAG_INTERVAL_SECONDS="0.2")
    try:
        key = make_key("offers:read", "events:write")
        t0 = now() - minutes(3)
        events: list[dict[str, Any]] = [
            event("page_view", "u-mon", t0, page="checkout"),
            event("add_to_cart", "u-mon", t0 + minutes(1), product_id="p-1", price=250.0,
                  quantity=1),
        ]
        assert client.post("/v1/events", json=events, headers=auth(key)).status_code == 202

        def offered() -> bool:
            r = client.get("/v1/users/u-mon/offers", headers=auth(key))
            return any(o["rule"] == "high-value-cart" for o in r.json()["offers"])

        wait_for(offered, timeout=60, interval=0.3)

        def worker_page() -> str | None:
            try:
                page = scrape(f"http://127.0.0.1:{port}/metrics")
            except OSError:
                return None
            return page if "decisions_consumer_partition_lag{" in page else None

        worker_metrics = wait_for(worker_page, timeout=30, interval=0.3)
        api_metrics = client.get("/metrics").text
    finally:
        stop(worker)
    exported = exported_names(api_metrics) | exported_names(worker_metrics) | PROMETHEUS_SERIES
    # what the dashboard's main panels rest on is there with samples, not only declared
    for series in ("decisions_api_request_seconds_bucket{", "decisions_events_processed_total{",
                   "decisions_rule_fired_total{", "decisions_actions_granted_total{",
                   "decisions_event_latency_seconds_bucket{"):
        assert series in api_metrics + worker_metrics, series
    missing = {
        (source, name)
        for source, queries in (("dashboard", dashboard_queries()), ("alerts", alert_queries()))
        for expr in queries for name in metric_names(expr) - exported
    }
    assert not missing, sorted(missing)
