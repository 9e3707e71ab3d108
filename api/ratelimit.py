"""Per-API-key rate limiting: a token bucket kept in Redis (``d:rl:<key prefix>``), leased.

The bucket refills at ``rate`` tokens a second up to ``burst``; each request spends one.
Redis's own clock is used, so every API process shares one bucket per key. When Redis
cannot be asked the request is let through (fail open): rate limiting protects the
service, it must not take the storefront down with it.

**Leases.** Asking Redis for every request costs a script run per read (about half of
Redis's CPU per read). So a process takes a small block of tokens in one script call —
the tokens of :data:`LEASE_OF_RATE` seconds at the key's rate, at least 1, at most
:data:`MAX_LEASE` and never more than the bucket holds — spends one on the request that
asked and the rest locally, and drops what it has not spent within :data:`LEASE_SECONDS`
(measured from before the call was sent). Tokens are never returned.

The limit is never exceeded: in any time span, a key is admitted at most ``burst + rate ×
span`` requests, across all processes. Leased tokens still spendable somewhere count as
taken, and the bucket cannot refill over them: the script keeps, per lease period
(:data:`LEASE_SECONDS` of Redis's clock), the tokens leased beyond the one spent at once;
a lease granted in period *E* ends before period *E* + 2 starts, so until then those
tokens lower the bucket's ceiling (``burst`` minus what is still leased out). Without
that, a bucket refilled to ``burst`` while leases are outstanding would let a key through
``burst`` plus the leases at once. The price: with several processes, a key may be
refused a little early (tokens lost with an unspent lease, a burst ceiling lowered for at
most two lease periods). A key whose block is one token — any rate below 2 / LEASE_OF_RATE
= 40 per second, or a burst of 1 — is limited exactly as without leases.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from decisions.core import keys

LEASE_OF_RATE = 0.05  # a block is the tokens of 50 ms at the key's rate ...
MAX_LEASE = 32  # ... but never more than this
LEASE_SECONDS = 0.1  # leased tokens not spent within this are lost
LEASE_MS = int(LEASE_SECONDS * 1000)

# KEYS: bucket hash. ARGV: rate (tokens/s), burst, wanted (tokens), lease period (ms).
# Returns {granted, wait_ms}: granted >= 1 admits the request that asked (one token) and
# leases the rest; 0 refuses it, and wait_ms says when a token is due.
# Hash fields: tokens, ts (ms of the last update), ep (lease period of ts), cur and prev
# (tokens leased out beyond the first in period ep and ep - 1).
BUCKET_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local period = tonumber(ARGV[4])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts', 'ep', 'cur', 'prev')
local tokens = tonumber(b[1])
local ts = tonumber(b[2])
local ep = tonumber(b[3])
local cur = tonumber(b[4]) or 0
local prev = tonumber(b[5]) or 0
if tokens == nil or ts == nil or ep == nil then
  tokens = burst; ts = now; ep = math.floor(now / period); cur = 0; prev = 0
end
if now < ts then now = ts end
-- refill up to a ceiling lowered by the tokens still leased out: leases of period ep and
-- ep - 1 until ep ends, of period ep until ep + 1 ends, none after
local function refill(from, to, ceiling)
  if to > from then
    tokens = math.min(ceiling, tokens + (to - from) * rate / 1000)
  end
end
local e1 = (ep + 1) * period
local e2 = (ep + 2) * period
refill(ts, math.min(now, e1), burst - cur - prev)
refill(math.max(ts, e1), math.min(now, e2), burst - cur)
refill(math.max(ts, e2), now, burst)
local epoch = math.floor(now / period)
if epoch == ep + 1 then
  prev = cur; cur = 0
elseif epoch > ep + 1 then
  prev = 0; cur = 0
end
local granted = 0
local wait_ms = 0
if tokens >= 1 then
  granted = math.min(wanted, math.floor(tokens))
  tokens = tokens - granted
  cur = cur + granted - 1
else
  wait_ms = math.ceil((1 - tokens) * 1000 / rate)
  if burst - cur - prev < 1 then
    -- the ceiling itself is below one token until leases end
    local free_at = (epoch + 1) * period
    if burst - cur < 1 then free_at = (epoch + 2) * period end
    wait_ms = wait_ms + free_at - now
  end
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now),
           'ep', tostring(epoch), 'cur', tostring(cur), 'prev', tostring(prev))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 2 * period + 1000)
return {granted, wait_ms}
"""


def bucket_key(key_prefix: str) -> str:
    return keys.rate_limit(key_prefix)


def lease_size(rate: float, burst: int) -> int:
    """Tokens asked for in one script call: LEASE_OF_RATE seconds of the rate, 1 to
    MAX_LEASE, never more than the burst."""
    return max(1, min(MAX_LEASE, burst, math.floor(rate * LEASE_OF_RATE)))


class LeaseCall:
    """A lease call in flight: a future of the tokens granted, how many were asked for,
    and how many of them concurrent requests have reserved meanwhile."""

    __slots__ = ("future", "reserved", "wanted")

    def __init__(self, future: asyncio.Future[int], wanted: int) -> None:
        self.future = future
        self.wanted = wanted
        self.reserved = 0


class Lease:
    """The tokens one process holds of one key's bucket (event loop only: no lock).

    ``tokens`` may be spent until ``until`` (monotonic clock). While a lease call is in
    flight (``asking``), concurrent requests reserve the tokens it will bring instead of
    each asking the script; once its block is all reserved, the next request starts
    another lease call.
    """

    __slots__ = ("asking", "current", "previous", "tokens", "until", "window")

    def __init__(self) -> None:
        self.tokens = 0
        self.until = 0.0
        self.asking: LeaseCall | None = None
        # this process's requests for the key in the current and the previous lease period
        self.window = 0
        self.current = 0
        self.previous = 0

    def count(self, now: float) -> None:
        """One more request of this key in this process."""
        window = int(now / LEASE_SECONDS)
        if window != self.window:
            self.previous = self.current if window == self.window + 1 else 0
            self.current = 0
            self.window = window
        self.current += 1

    def wanted(self, block: int) -> int:
        """Tokens to ask for: what this process is likely to spend within a quarter of a
        lease (a quarter of its requests of the last period or so), 1 to ``block``. A key
        that reaches a process less than ~40 times a second asks for one token at a time:
        it loses none and holds none back from the other processes."""
        return max(1, min(block, (self.previous + self.current) // 4))

    def take(self, now: float) -> bool:
        """Spend a leased token, if one is left and the lease has not ended."""
        if self.tokens and now < self.until:
            self.tokens -= 1
            return True
        return False

    def ask(self, loop: asyncio.AbstractEventLoop, wanted: int) -> LeaseCall:
        call = self.asking = LeaseCall(loop.create_future(), wanted)
        return call

    def granted(self, call: LeaseCall, granted: int, sent_at: float, now: float) -> None:
        """The lease call sent at ``sent_at`` got ``granted`` tokens: one for the request
        that asked, then one per reservation, the rest to spend until the lease ends.
        Tokens still held from another call are kept, until the earlier of both ends."""
        left = max(0, granted - 1 - call.reserved)
        until = sent_at + LEASE_SECONDS
        if self.tokens and now < self.until:
            self.tokens += left
            self.until = min(self.until, until)
        else:
            self.tokens, self.until = left, until
        self._done(call)
        if not call.future.done():
            call.future.set_result(granted)

    def failed(self, call: LeaseCall, exc: BaseException) -> None:
        """The lease call failed: its reservations fail the same way."""
        self._done(call)
        if not call.future.done():
            call.future.set_exception(exc if isinstance(exc, Exception)
                                      else ConnectionError("the lease call was cancelled"))
            call.future.exception()  # seen, even when nobody had reserved

    def _done(self, call: LeaseCall) -> None:
        if self.asking is call:
            self.asking = None


@dataclass(slots=True)
class Verdict:
    allowed: bool
    retry_after: int  # whole seconds, at least 1 when refused

    @classmethod
    def from_reply(cls, reply: list[int] | tuple[int, int]) -> Verdict:
        """A script reply ``{granted, wait_ms}``: granted >= 1 admits the request."""
        granted, wait_ms = int(reply[0]), int(reply[1])
        if granted > 0:
            return ALLOW
        return cls(False, max(1, -(-wait_ms // 1000)))


ALLOW = Verdict(True, 0)
