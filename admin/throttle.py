"""Login throttling in Redis: failures counted per user name and per client address.

Keys (prefix ``d:admin:``): ``d:admin:fail:u:<name>`` and ``d:admin:fail:ip:<address>``,
each a counter that expires ``lockout_seconds`` after its first failure. A user name is
locked after ``max_failures`` (``DECISIONS_ADMIN_LOGIN_MAX_FAILURES``, 5); an address after
``max_per_address`` (``DECISIONS_ADMIN_LOGIN_MAX_FAILURES_PER_ADDRESS``, 20): a marketing
team usually signs in from one office or VPN address, and one person's typos or one
guesser must not lock the whole team out, while the per-name limit still stops guessing
one account (see docs/admin.md).
"""

from __future__ import annotations

from typing import Any

from decisions.core import keys


class LoginThrottle:
    def __init__(self, client: Any, max_failures: int, lockout_seconds: int,
                 max_per_address: int) -> None:
        self.client = client
        self.max_failures = max_failures
        self.max_per_address = max_per_address
        self.lockout = lockout_seconds

    def _keys(self, username: str, address: str) -> list[str]:
        return [keys.admin_failures(username=username), keys.admin_failures(address=address)]

    def locked_for(self, username: str, address: str) -> int:
        """Seconds until sign-in is allowed again (0: allowed now)."""
        wait = 0
        limits = (self.max_failures, self.max_per_address)
        for key, limit in zip(self._keys(username, address), limits, strict=True):
            count = self.client.get(key)
            if count is not None and int(count) >= limit:
                wait = max(wait, int(self.client.ttl(key)), 1)
        return wait

    def failed(self, username: str, address: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key in self._keys(username, address):
            pipe.incr(key)
            pipe.expire(key, self.lockout, nx=True)
        pipe.execute()

    def succeeded(self, username: str) -> None:
        self.client.delete(keys.admin_failures(username=username))
