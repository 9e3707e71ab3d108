"""Prometheus metrics of the worker (the API keeps its own in ``api``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter("decisions_events_processed_total", "Events processed", ["type"])
DEAD_LETTERED = Counter("decisions_events_dead_lettered_total", "Events sent to the DLQ",
                        ["reason"])
DUPLICATES = Counter("decisions_events_duplicates_total", "Duplicate events dropped")
ERASED_DROPPED = Counter("decisions_events_erased_total",
                         "Events of erased users from before their erasure, dropped")
DECISIONS = Counter("decisions_rule_fired_total", "Rules fired", ["ruleset", "rule"])
LATENCY = Histogram(
    "decisions_event_latency_seconds", "Event time to effects stored (processing latency)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
PRODUCE_TO_DECISION = Histogram(
    "decisions_produce_to_decision_seconds",
    "Kafka record timestamp (produced) to the decision's effects stored in Redis",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
BATCH_SECONDS = Histogram("decisions_batch_seconds", "Time to process one batch")
LAG = Gauge("decisions_consumer_lag", "Records behind the end of the assigned partitions")
PARTITION_LAG = Gauge("decisions_consumer_partition_lag",
                      "Records behind the end of one assigned partition (set with the total)",
                      ["topic", "partition"])
GRANTED = Counter("decisions_actions_granted_total",
                  "Actions granted by fired rules (offers, recommendations, segments)",
                  ["ruleset", "rule", "kind"])
RULESET_VERSION = Gauge("decisions_ruleset_active_version", "Active version", ["ruleset"])
RETRIES = Counter("decisions_dependency_retries_total", "Batch retries after a dependency failed",
                  ["service"])
SCORER_ERRORS = Counter("decisions_scorer_errors_total",
                        "Model scorer failures (the event is decided without scores)", ["stage"])
ASSIGNED = Gauge("decisions_assigned_partitions", "Partitions this worker process owns")
REBALANCES = Counter("decisions_rebalances_total", "Partition assignments received")
PHASE_SECONDS = Histogram(
    "decisions_batch_phase_seconds",
    "Time per batch in each step (parse, customers, state_rules, actions, ...)",
    ["phase"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
# the model scorer's (decisions.runtime.ml.scoring)
SCORE_MISSING = Counter(
    "decisions_model_score_missing_total",
    "Events a model could not score (no active version, failed load or failed prediction)",
    ["model"],
)
MODEL_VERSION = Gauge(
    "decisions_model_active_version", "Model version a worker scores with (0: none)", ["model"]
)
LOAD_FAILURES = Counter(
    "decisions_model_load_failures_total", "Model versions that failed to load", ["model"]
)
FEATURE_PSI = Gauge(
    "decisions_model_feature_psi",
    "Population stability index of a feature, training rows vs the last day of live traffic",
    ["model", "feature"],
)
SCORE_PSI = Gauge(
    "decisions_model_score_psi",
    "Population stability index of the score, training rows vs the last day of live traffic",
    ["model"],
)
