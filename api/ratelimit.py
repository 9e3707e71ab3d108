"""Per-API-key rate limiting: a token bucket kept in Redis (``d:rl:<key prefix>``).

The bucket refills at ``rate`` tokens a second up to ``burst``; each request takes one.
Redis's own clock is used, so every API process shares one bucket per key. When Redis
cannot be asked the request is let through (fail open): rate limiting protects the
service, it must not take the storefront down with it.
"""

from __future__ import annotations

from dataclasses import dataclass

RATE_LIMIT_PREFIX = "d:rl:"

# KEYS: bucket hash. ARGV: rate (tokens/s), burst. Returns {allowed 0|1, wait_ms}.
BUCKET_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1])
local ts = tonumber(b[2])
if tokens == nil or ts == nil then tokens = burst; ts = now end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
local allowed = 0
local wait_ms = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait_ms = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {allowed, wait_ms}
"""


def bucket_key(key_prefix: str) -> str:
    return RATE_LIMIT_PREFIX + key_prefix


@dataclass(slots=True)
class Verdict:
    allowed: bool
    retry_after: int  # whole seconds, at least 1 when refused

    @classmethod
    def from_reply(cls, reply: list[int] | tuple[int, int]) -> Verdict:
        allowed, wait_ms = int(reply[0]), int(reply[1])
        if allowed:
            return ALLOW
        return cls(False, max(1, -(-wait_ms // 1000)))


ALLOW = Verdict(True, 0)
