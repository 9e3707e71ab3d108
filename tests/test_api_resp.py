"""The multiplexed Redis client of the read path, against the real Redis of the session."""

from __future__ import annotations

import asyncio

import pytest

from decisions.core.resp.multiplexed import FastRedis, RespError


def test_pipelines_errors_and_a_late_reply(services: dict[str, str]) -> None:
    async def scenario() -> None:
        client = FastRedis(services["redis_url"], timeout=0.05)
        try:
            assert await client.execute("PING") == b"PONG"
            replies = await asyncio.gather(*[
                client.pipeline([("SET", f"resp:{i}", i), ("GET", f"resp:{i}")])
                for i in range(50)])
            assert [r[1] for r in replies] == [str(i).encode() for i in range(50)]
            with pytest.raises(RespError, match="WRONGTYPE"):
                await client.pipeline([("SET", "resp:s", "x"), ("HGET", "resp:s", "f")])
            # a reply later than the timeout fails that call only; the next call gets its
            # own reply, not the late one
            with pytest.raises(TimeoutError):
                await client.execute("BLPOP", "resp:empty", "0.2")
            await asyncio.sleep(0.25)
            assert await client.execute("ECHO", "mine") == b"mine"
        finally:
            await client.execute("DEL", *[f"resp:{i}" for i in range(50)], "resp:s")
            await client.close()

    asyncio.run(scenario())


def test_unreachable_redis_fails_fast() -> None:
    from tests.api_helpers import dead_port

    async def scenario() -> None:
        client = FastRedis(f"redis://127.0.0.1:{dead_port()}/0", timeout=0.05)
        with pytest.raises(OSError):
            await client.execute("PING")
        await client.close()

    asyncio.run(scenario())


def test_one_deadline_timer_serves_every_call(services: dict[str, str]) -> None:
    """Calls in flight share one timer per connection: each still fails at its own
    deadline, and calls made after a timeout are timed (and answered) as usual."""

    async def scenario() -> None:
        client = FastRedis(services["redis_url"], timeout=0.05)
        try:
            await client.execute("PING")
            loop = asyncio.get_running_loop()
            started = loop.time()
            # the ECHOs are answered after the BLPOP, so all three are late
            stuck = [client.execute("BLPOP", "resp:none", "0.15"),
                     client.execute("ECHO", "a"), client.execute("ECHO", "b")]
            results = await asyncio.gather(*stuck, return_exceptions=True)
            assert all(isinstance(r, TimeoutError) for r in results), results
            assert loop.time() - started < 0.14  # at the deadline, not at the late replies
            await asyncio.sleep(0.2)
            assert await client.execute("ECHO", "after") == b"after"
            with pytest.raises(TimeoutError):
                await client.execute("BLPOP", "resp:none", "0.1")
        finally:
            await client.close()

    asyncio.run(scenario())
