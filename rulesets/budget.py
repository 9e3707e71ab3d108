"""Budgets: how much discount, and how many offers, a ruleset or a rule may grant in total.

A ruleset or a rule may say ``budget: {amount: 10000, grants: 500, campaign: "bf-2026"}``
(either limit or both). Every offer the ruleset (or the rule) grants is *reserved* against
its budgets when it is granted, atomically across worker processes
(``decisions.runtime.budgets``); an offer that would take a budget past a limit is not
granted (the decision is recorded, refused with the reason). Spending is counted per
campaign: publishing a version with a higher limit and the same campaign resumes a spent
rule; a new campaign name starts from nothing. ``campaign`` defaults to the ruleset's name
(ruleset budget) or ``<ruleset>/<rule>`` (rule budget).

What an offer costs the budget, in cents: an amount discount its amount; a percent discount
that percent of the shopper's cart value when it was granted (at least of its
``min_basket``), since what the shopper will redeem is not known yet.

This module only holds the language's side; the counting lives in the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Budget:
    campaign: str  # spending is counted per campaign (a new name starts from nothing)
    amount_cents: int = 0  # the most discount, in cents (0: no money limit)
    grants: int = 0  # the most offers (0: no count limit)

    def describe(self) -> str:
        parts = []
        if self.amount_cents:
            parts.append(f"{money(self.amount_cents)} of discount")
        if self.grants:
            parts.append(f"{self.grants} offers")
        return f"budget {self.campaign} ({' and '.join(parts)})"


def budget_of(spec: Any, default_campaign: str) -> Budget | None:
    """A validated ``budget`` object (or None) as a ``Budget``."""
    if not spec:
        return None
    amount = round(float(spec.get("amount") or 0) * 100)
    grants = int(spec.get("grants") or 0)
    if amount <= 0 and grants <= 0:
        return None
    return Budget(str(spec.get("campaign") or default_campaign), amount, grants)


def cost_cents(discount: dict[str, Any], cart_value: Any) -> int:
    """What an offer's discount terms cost a budget when granted (see the module)."""
    value = float(discount.get("value") or 0)
    if discount.get("type") == "amount":
        return round(value * 100)
    try:
        basis = max(float(cart_value or 0), float(discount.get("min_basket") or 0))
    except (TypeError, ValueError):
        basis = 0.0
    return round(basis * value)  # value % of basis, in cents


def money(cents: int) -> str:
    return f"${cents / 100:,.2f}"
