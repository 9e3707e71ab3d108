"""The stream worker, split along its seams:

- ``loop``: the Worker — clients, the consume loop, retries, records decided one at a time
  after a batch failed on its data;
- ``batch``: one batch staged, decided and handed to its durable half;
- ``checkpoint``: staged / in flight / settled batches and the offsets committed;
- ``records``: Kafka records to events (or dead letters);
- ``sinks``: Redis effects, the actions and dead-letter topics, the decision log;
- ``timers``: deadlines that become timer events;
- ``housekeeping``: the thread that fires timers, spots reloads, prunes the archive;
- ``stats``: what a worker counted.

The decision itself is ``decisions.runtime.decide``, shared with try-it and backtests.
"""

from decisions.runtime.worker.loop import Worker, run_worker
from decisions.runtime.worker.stats import Stats

__all__ = ["Stats", "Worker", "run_worker"]
