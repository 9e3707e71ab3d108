"""The worker's spans (tracing on): one per traced event, with a child per step.

An event is traced when its record carries a sampled W3C ``traceparent`` header (the
API's producer span): the worker follows the producer's sampling decision and starts no
trace of its own. Its span, ``<topic> process``, is a child of that producer span, and
has children for the steps that decided it: ``state`` (its chunk's state script in
Redis), ``scores`` (the models, when an active rule reads a score), ``rules`` (every
active ruleset), ``actions``, ``effects`` (the batch's Redis write: what the API serves),
``publish`` (actions topic, until the broker acked) and ``archive`` (the batch's
PostgreSQL write).

The steps of a batch interleave its events (state in chunks on a helper thread, rules
event by event, then actions, Redis, Kafka and PostgreSQL for the whole batch), so no
span can be "current" while its step runs. The times are taken as the batch runs
(``time_ns``, and only in a batch that holds a traced event) and the spans are written
with them at once when the batch is durable. A batch that fails writes none: its replay
does (the records carry the same headers).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from decisions.core.events import Event
from decisions.core.tracing import Tracing

if TYPE_CHECKING:
    from opentelemetry.trace import SpanContext

Key = tuple[str, str]  # (user id, event id)
Window = tuple[int, int]  # start, end (ns since the epoch)


@dataclass
class Traced:
    """A traced event of the batch and the times of its own steps."""

    parent: SpanContext  # the producer's span (the record's traceparent)
    trace_id: str
    topic: str
    partition: int
    offset: int
    event_type: str
    event_id: str
    state: Window | None = None
    scores: Window | None = None
    rules: Window | None = None
    fired: int = 0


@dataclass
class BatchTrace:
    tracing: Tracing
    started: int = field(default_factory=time.time_ns)
    events: dict[Key, Traced] = field(default_factory=dict)
    steps: dict[str, Window] = field(default_factory=dict)  # the batch's shared steps

    def add(self, record: Any, event: Event, parent: SpanContext) -> None:
        self.events[(event.user_id, event.event_id)] = Traced(
            parent, self.tracing.trace_id(parent), record.topic, record.partition,
            record.offset, event.type, event.event_id)

    def trace_id(self, event: Event) -> str | None:
        traced = self.events.get((event.user_id, event.event_id))
        return traced.trace_id if traced is not None else None

    def step(self, name: str, start: int) -> None:
        self.steps[name] = (start, time.time_ns())

    def timed(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` timing itself as the step ``name`` (it runs on a helper thread)."""
        def run(*args: Any) -> Any:
            start = time.time_ns()
            try:
                return fn(*args)
            finally:
                self.step(name, start)
        return run

    def timed_state(self, apply: Callable[[list[Event]], Any]) -> Callable[[list[Event]], Any]:
        """A state chunk timing itself for the traced events it holds."""
        def run(events: list[Event]) -> Any:
            start = time.time_ns()
            try:
                return apply(events)
            finally:
                window = (start, time.time_ns())
                for event in events:
                    traced = self.events.get((event.user_id, event.event_id))
                    if traced is not None:
                        traced.state = window
        return run

    def emit(self) -> None:
        """Write the spans of the batch's traced events, now that it is durable."""
        from opentelemetry.trace import SpanKind

        tracing = self.tracing
        end = time.time_ns()
        for traced in self.events.values():
            span = tracing.child(traced.parent)
            own = {"state": traced.state, "scores": traced.scores, "rules": traced.rules}
            for name, window in (*own.items(), *self.steps.items()):
                if window is not None:
                    tracing.record(name, tracing.child(span), span, window[0], window[1])
            tracing.record(
                f"{traced.topic} process", span, traced.parent, self.started, end, {
                    "messaging.system": "kafka", "messaging.operation.type": "process",
                    "messaging.destination.name": traced.topic,
                    "messaging.destination.partition.id": str(traced.partition),
                    "messaging.kafka.offset": traced.offset,
                    "decisions.event_id": traced.event_id,
                    "decisions.event_type": traced.event_type,
                    "decisions.rules_fired": traced.fired}, SpanKind.CONSUMER)
