"""Our two Redis clients for the hot paths, both speaking RESP through hiredis:

- ``pipeline``: ``RawPipeline`` / ``RawScript``, synchronous pipelines on a connection of a
  redis-py pool (the worker: state scripts, effects, popularity counters);
- ``multiplexed``: ``FastRedis``, an asyncio client that sends every command written in one
  event-loop iteration in one socket write (the API's read path).

Everything else (admin, erasure, export, the CLI) uses redis-py directly.
"""
