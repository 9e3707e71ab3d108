"""Budgets, counted in Redis: reserved when an offer is granted, atomically across workers.

A ruleset's budgets and its rules' live in one hash per ruleset (``keys.budget``: spent
cents and grants per campaign) with the offer ids reserved lately beside it
(``keys.budget_reservations``); both carry the hash tag ``{budget:<ruleset>}``, so one
script call checks and reserves the ruleset's and the rule's budgets at once, on one slot.

Granting an offer that has budgets is two steps, because the shopper's own keys (the offer
store's caps, ``decisions.runtime.offers``) sit on another slot:

1. ``reserve``: for every budget of the offer, refuse when its cost would take the spent
   amount past ``amount`` or the grants past ``grants``; else add it to all of them and
   remember the offer id. A budget is never overshot: the check and the add are one
   script. An offer id already reserved (a replayed event) is not counted again.
2. the offer store's script stores the offer, or refuses it (an active offer of the rule,
   a frequency cap). Refused, the reservation is given back (``release``, idempotent too).

Between 1 and a release, the reservation holds budget the offer will not use: near the
limit another grant may be refused that would have fitted (never the other way round).
Reservations are remembered for ``KEEP_MS`` (8 days); a replay of a grant older than
that would count it again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from decisions.core import keys
from decisions.core.resp.pipeline import RawPipeline, RawScript
from rulesets.budget import Budget, budget_of, money

KEEP_MS = 8 * 86_400_000
OK, AGAIN = "ok", "again"

# KEYS: budget hash, reservations zset. ARGV: now_ms, offer_id, cost (cents), then per
# budget: campaign, most cents (0: none), most grants (0: none). Returns "ok", "again"
# (already reserved) or "<cents|grants>:<campaign>" (that limit would be passed).
RESERVE = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - KEEP_MS)
if redis.call('ZSCORE', KEYS[2], ARGV[2]) then return 'again' end
local cost = tonumber(ARGV[3])
for i = 4, #ARGV, 3 do
  local c, most_cents, most_grants = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  if most_grants > 0 and tonumber(redis.call('HGET', KEYS[1], c .. '|grants') or 0) + 1
      > most_grants then return 'grants:' .. c end
  if most_cents > 0 and tonumber(redis.call('HGET', KEYS[1], c .. '|cents') or 0) + cost
      > most_cents then return 'cents:' .. c end
end
local seen = {}
for i = 4, #ARGV, 3 do
  if not seen[ARGV[i]] then  -- two budgets of one campaign share one count
    seen[ARGV[i]] = true
    redis.call('HINCRBY', KEYS[1], ARGV[i] .. '|grants', 1)
    redis.call('HINCRBY', KEYS[1], ARGV[i] .. '|cents', cost)
  end
end
redis.call('ZADD', KEYS[2], now, ARGV[2])
return 'ok'
""".replace("KEEP_MS", str(KEEP_MS))

# KEYS and ARGV as RESERVE's. Gives back a reservation still remembered; returns 1, or 0
# when there was none (released before, or never made).
RELEASE = """
if redis.call('ZREM', KEYS[2], ARGV[2]) == 0 then return 0 end
local cost, seen = tonumber(ARGV[3]), {}
for i = 4, #ARGV, 3 do
  if not seen[ARGV[i]] then
    seen[ARGV[i]] = true
    redis.call('HINCRBY', KEYS[1], ARGV[i] .. '|grants', -1)
    redis.call('HINCRBY', KEYS[1], ARGV[i] .. '|cents', -cost)
  end
end
return 1
"""


def refusal(reply: str, budgets: Sequence[Budget]) -> str:
    """The decision's reason for a refused reservation: "budget spent: ..."."""
    which, _, campaign = reply.partition(":")
    budget = next((b for b in budgets if b.campaign == campaign), None)
    if budget is None:
        return f"budget spent: {campaign}"
    if which == "grants":
        return f"budget spent: campaign {campaign} granted its {budget.grants} offers"
    return (f"budget spent: campaign {campaign} has less than this offer's cost left of "
            f"{money(budget.amount_cents)}")


def would_refuse(budgets: Sequence[Budget], spent: Mapping[str, int], cost: int) -> str:
    """The reservation's check, without reserving (dry runs): why an offer of ``cost``
    would be refused given what is ``spent`` (``BudgetStore.spent``), or ""."""
    for b in budgets:
        if b.grants and spent.get(f"{b.campaign}|grants", 0) + 1 > b.grants:
            return refusal(f"grants:{b.campaign}", budgets)
        if b.amount_cents and spent.get(f"{b.campaign}|cents", 0) + cost > b.amount_cents:
            return refusal(f"cents:{b.campaign}", budgets)
    return ""


@dataclass
class Remaining:
    """What is left of one budget (for the admin and the CLI)."""

    scope: str  # "ruleset" or "rule <name>"
    campaign: str
    amount_cents: int  # the limit (0: none)
    grants: int  # the limit (0: none)
    spent_cents: int
    granted: int

    @property
    def spent(self) -> bool:
        return bool((self.grants and self.granted >= self.grants)
                    or (self.amount_cents and self.spent_cents >= self.amount_cents))

    def to_dict(self) -> dict[str, Any]:
        return {"scope": self.scope, "campaign": self.campaign,
                "amount": self.amount_cents / 100 if self.amount_cents else None,
                "grants": self.grants or None, "spent_amount": self.spent_cents / 100,
                "granted": self.granted,
                "left_amount": (max(0, self.amount_cents - self.spent_cents) / 100
                                if self.amount_cents else None),
                "left_grants": max(0, self.grants - self.granted) if self.grants else None,
                "spent": self.spent}

    def line(self) -> str:
        parts = []
        if self.amount_cents:
            parts.append(f"{money(max(0, self.amount_cents - self.spent_cents))} of "
                         f"{money(self.amount_cents)} left")
        if self.grants:
            parts.append(f"{max(0, self.grants - self.granted)} of {self.grants} offers left")
        state = " — SPENT: the rule grants nothing until the budget is raised" \
            if self.spent else ""
        return f"{self.scope} (campaign {self.campaign}): {', '.join(parts)}{state}"


class BudgetStore:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._reserve = RawScript(RESERVE)
        self._release = RawScript(RELEASE)

    @staticmethod
    def _call(ruleset: str, offer_id: str, cost: int, budgets: Sequence[Budget],
              now_ms: int) -> tuple[list[str], list[Any]]:
        args: list[Any] = [now_ms, offer_id, cost]
        for b in budgets:
            args += [b.campaign, b.amount_cents, b.grants]
        return [keys.budget(ruleset), keys.budget_reservations(ruleset)], args

    def queue_reserve(self, pipe: RawPipeline, ruleset: str, offer_id: str, cost: int,
                      budgets: Sequence[Budget], now_ms: int) -> None:
        pipe.script(self._reserve, *self._call(ruleset, offer_id, cost, budgets, now_ms))

    def queue_release(self, pipe: RawPipeline, ruleset: str, offer_id: str, cost: int,
                      budgets: Sequence[Budget], now_ms: int) -> None:
        pipe.script(self._release, *self._call(ruleset, offer_id, cost, budgets, now_ms))

    def reserve(self, ruleset: str, offer_id: str, cost: int, budgets: Sequence[Budget],
                now_ms: int) -> str:
        pipe = RawPipeline(self.client)
        self.queue_reserve(pipe, ruleset, offer_id, cost, budgets, now_ms)
        return _text(pipe.execute()[0])

    def release(self, ruleset: str, offer_id: str, cost: int, budgets: Sequence[Budget],
                now_ms: int) -> bool:
        pipe = RawPipeline(self.client)
        self.queue_release(pipe, ruleset, offer_id, cost, budgets, now_ms)
        return bool(pipe.execute()[0])

    def spent(self, ruleset: str) -> dict[str, int]:
        """The hash as ``<campaign>|cents`` / ``<campaign>|grants`` -> number."""
        raw = self.client.hgetall(keys.budget(ruleset))
        return {_text(k): int(v) for k, v in raw.items()}

    def remaining(self, document: dict[str, Any]) -> list[Remaining]:
        """What is left of the budgets a ruleset document sets (ruleset's first)."""
        name = document["name"]
        wanted: list[tuple[str, Budget]] = []
        if (b := budget_of(document.get("budget"), name)) is not None:
            wanted.append(("ruleset", b))
        for rule in document.get("rules") or []:
            if (b := budget_of(rule.get("budget"), f"{name}/{rule['name']}")) is not None:
                wanted.append((f"rule {rule['name']}", b))
        if not wanted:
            return []
        spent = self.spent(name)
        return [Remaining(scope, b.campaign, b.amount_cents, b.grants,
                          spent.get(f"{b.campaign}|cents", 0),
                          spent.get(f"{b.campaign}|grants", 0)) for scope, b in wanted]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
