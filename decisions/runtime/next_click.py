"""The ``next_click`` strategy: the products a shopper is likely to click next.

Learned from the stream by the worker, per product click (``learn``, called from
``PopularityBatch``; nothing but sums, so it runs at stream speed and commutes):

- **Sequential rules** (Ludewig & Jannach, *Evaluation of session-based recommendation
  algorithms*, 2018): a click on product *b* counts for each of the ``STEPS`` products
  clicked before it in the session, by 1/distance (the paper's 10 steps gain nothing
  over 5 on real shop clicks, and cost twice the increments). ``d:sr:<a>`` holds the products
  clicked after *a* with those weights (the best ``KEEP`` kept).
- **Returns**: ``d:returns:s{rt<n>}`` (16 shards, summed) count the clicks after a
  session's first (``next``) and those going back to a product already clicked in the
  session (``return``). On real shop clicks about a third do, a quarter to the very
  product just viewed.

To rank (``rank``), with the session's clicks newest first (``state.session_products``:
s_0 the product just clicked) and recency weights w_d = 1/(d + 1) over the newest
``WINDOW``, each product p scores

    (1 - a) * sum_d w_d P(p | s_d) / sum_d w_d   +   a * sum_{d: s_d = p} w_d / sum_d w_d

P(p | s) being p's weight in ``d:sr:<s>`` over the sum of the best ``READ`` there (the
first sum runs over the products with rules), and *a* the share of returns learned from
the stream. So a product the shopper is looking at or keeps coming back to is in the
list where the odds of its being clicked next put it, beside what usually follows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from operator import itemgetter

from decisions.core import keys

STEPS = 5  # a click counts for the products up to this many clicks before it
WINDOW = 10  # the newest session clicks a list is made from
KEEP = 100  # products kept per d:sr key (the weakest trimmed)
READ = 20  # products read per d:sr key when ranking
PREFIX = keys.successors("")

Increments = dict[str, dict[str, float]]
Ranked = Callable[[str, int], list[tuple[str, float]]]  # key, n -> its best n + 1


def learn(increments: Increments, product: str, session: Sequence[str]) -> bool | None:
    """Count a click on ``product`` whose session clicks, newest first, are ``session``
    (``session[0]`` is this click). Returns whether it went back to a product of the
    session, None for a session's first click."""
    if not session or session[0] != product:
        return None  # the state has no session list for this click
    for distance in range(1, min(len(session), STEPS + 1)):
        increments[PREFIX + session[distance]][product] += 1.0 / distance
    if len(session) == 1:
        return None
    return product in session[1:]


def return_share(next_clicks: float, returns: float) -> float:
    """The share of clicks going back to a product of the session, from the stream's
    counts (a half while there are none: no opinion)."""
    return (returns + 1.0) / (next_clicks + 2.0)


def rank(session: Sequence[str], share: float, ranked: Ranked, n: int) -> list[str]:
    """The best ``n`` products after ``session`` (newest first), best first."""
    window = session[:WINDOW]
    if not window:
        return []
    follows: dict[str, float] = defaultdict(float)
    returns: dict[str, float] = defaultdict(float)
    with_rules = 0.0
    total = 0.0
    for d, product in enumerate(window):
        w = 1.0 / (d + 1)
        total += w
        returns[product] += w
        rules = ranked(PREFIX + product, READ - 1)
        mass = sum(score for _, score in rules)
        if mass <= 0:
            continue
        with_rules += w
        scale = w / mass
        for other, score in rules:
            follows[other] += score * scale
    scores: dict[str, float] = defaultdict(float)
    if with_rules:
        explore = (1.0 - share) / with_rules
        for product, value in follows.items():
            scores[product] += value * explore
    back = share / total
    for product, value in returns.items():
        scores[product] += value * back
    # ties (rare: scores are sums of floats) stay in the order met: the newer clicks'
    # followers first, each key's in Redis' order, so lists are reproducible
    best = sorted(scores.items(), key=itemgetter(1), reverse=True)[:n]
    return [product for product, _ in best]
