"""Rule evaluation benchmark (issue 3, item 9), one core, no services needed.

    .venv/bin/python benchmarks/rules_eval.py                 # ~1.5 min
    .venv/bin/python benchmarks/rules_eval.py --events 10000  # quicker

Prints, for a generated 50-rule ruleset over a realistic event mix:
- ours: ``build_fact`` (event + ~50 state features + customer + scores) and
  ``RuleEngine.evaluate`` (index lookup, derived predicates, assert/retract under one
  sid, matches with reasons), per event;
- raw durable_rules C core: the facts our engine posts, made ahead of time, to the same
  chunks, through the same assert / read matches / retract loop, bare — our own overhead
  on top of the engine;
- raw durable_rules, the same compiled conditions posted directly: ready-made facts
  (derived values already in them) asserted and retracted on a bare ``durable.engine.Host``
  — once the very facts our engine posts (only the keys the rules read), once the whole
  flat fact (every scalar, as a direct user of durable_rules would post it);
then, for three 500-rule rulesets, the compile-and-load time, the evaluation rate and the
raw C core rate for the same facts (durable_rules' own share):
- 10 campaigns of 50 rules with one-day active windows, one active today;
- shop-shaped (see ``shop``): 50 untargeted rules and 450 targeted at a page, a category
  or a few products, all active — the property index's case;
- the worst case: 500 untargeted rules all active at once (every event of a type meets
  all of its rules; ~13x the matches per event of the 50-rule set). No index can help
  here, and durable_rules' C core alone is below half our 50-rule rate.
Targets: our overhead < 30% over the raw figure; 500 rules compile+load < 1 s and
evaluate at >= half the 50-rule rate. Every shape asserts that our engine fires exactly
what the raw loop fires.

Measured interleaved, so that a ratio compares like with like on a shared or noisy
machine: every measure (ours and raw, every shape) takes its turn on each slice of
``--slice`` events, in an order that rotates, for ``--rounds`` passes over the events. A
rate is a round's events over its slices' total time; printed are the median of the
rounds and, for ratios and overheads, the median of the rounds' own ratios with their
range. Besides, per shape, work no clock changes: rules met and fired, durable_rules posts
and the bytes posted per event. ``--instructions SHAPE`` runs one shape alone for
callgrind (see docs/rules.md).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from durable import engine as durable

from decisions.core.events import Event
from decisions.runtime.engine import RuleEngine
from decisions.simulate.dryrun import blank_state
from rulesets.compile import CompiledRuleset, compile_ruleset
from rulesets.facts import build_fact
from rulesets.validate import validate

MIX = {"page_view": 40, "product_view": 30, "click": 8, "add_to_cart": 10,
       "remove_from_cart": 2, "search": 8, "purchase": 2}
CATEGORIES = ["shoes", "shirts", "bags", "watches", "toys", "books"]
TIERS = ["bronze", "silver", "gold"]
DAY0 = datetime(2026, 11, 26, tzinfo=UTC)


def condition(rng: random.Random, pick: int) -> dict[str, Any]:
    if pick == 0:
        return {"field": "state.cart_value", "op": "gt", "value": rng.choice([50, 100, 200])}
    if pick == 1:
        return {"field": "state.count_product_view_1h", "op": "gte", "value": rng.randint(1, 5)}
    if pick == 2:
        return {"field": "state.since_page_checkout", "op": "within",
                "value": rng.choice([300, 900])}
    if pick == 3:
        return {"field": "customer.tier", "op": "in", "value": rng.sample(TIERS, 2)}
    if pick == 4:
        return {"field": "user.segments", "op": "contains", "value": rng.choice(["vip", "new"])}
    if pick == 5:
        lo = rng.choice([0.2, 0.4, 0.6])
        return {"field": "score.purchase_intent", "op": "between", "value": [lo, lo + 0.3]}
    if pick == 6:
        return {"field": "state.order_count", "op": rng.choice(["eq", "gt"]), "value": 0}
    if pick == 7:
        return {"field": "customer.country", "op": "eq", "value": rng.choice(["DE", "FR"])}
    if pick == 8:
        return {"field": "state.days_since_last_purchase", "op": "gt",
                "value": rng.choice([30, 60])}
    if pick == 9:
        return {"field": "state.session_product_views", "op": "gte", "value": rng.randint(1, 4)}
    if pick == 10:
        return {"field": "time.hour", "op": "between", "value": [8, 20]}
    return {"not": {"field": "state.recent_categories", "op": "contains",
                    "value": rng.choice(CATEGORIES)}}


def ruleset(n: int, seed: int = 1, campaigns: int = 1) -> dict[str, Any]:
    """``n`` rules; with ``campaigns`` > 1 they belong to campaigns active one day each, the
    first on the benchmark's day (how rule counts grow: season after season)."""
    rng = random.Random(seed)
    rules = []
    for i in range(n):
        types = rng.sample(list(MIX), rng.choice([1, 1, 2]))
        conds: list[dict[str, Any]] = [{"field": "event.type", "op": "in", "value": types}]
        conds += [condition(rng, k) for k in rng.sample(range(12), rng.randint(1, 3))]
        if "product_view" in types and rng.random() < 0.3:
            conds.append({"field": "event.category", "op": "eq", "value": rng.choice(CATEGORIES)})
        action = ({"discount": {"percent": rng.choice([5, 10, 15])}} if rng.random() < 0.6 else
                  {"recommend": {"strategy": "covisit", "slot": f"slot{i % 4}"}})
        rule = {"name": f"rule-{i}", "priority": rng.randint(0, 100),
                "when": {"all": conds}, "then": [action]}
        if campaigns > 1:
            day = DAY0 + timedelta(days=i % campaigns)
            rule["active"] = {"from": day.isoformat(), "until": (day + timedelta(days=1)).isoformat()}
        rules.append(rule)
    return validate({"name": f"bench-{n}", "rules": rules})


PAGES = ["home", "category", "product", "cart", "checkout"]


def shop(seed: int = 4) -> dict[str, Any]:
    """500 rules shaped like a shop's: how a ruleset grows past 50 is by targeting. 50
    untargeted rules (the 50-rule set), then 100 for a page (page views), 150 for a
    product category (product views, cart adds and removals) and 200 for a few products
    (1-5 of 500; product views and cart adds), each with 1-3 further conditions like the
    untargeted ones; all active at once. Categories and pages are those of the event
    mix, so many rules share each value (25 per category, 20 per page)."""
    rng = random.Random(seed)
    rules = list(ruleset(50)["rules"])
    for i in range(450):
        target: dict[str, Any]
        if i < 100:
            types = ["page_view"]
            target = {"field": "event.page", "op": "eq", "value": PAGES[i % len(PAGES)]}
        elif i < 250:
            types = rng.sample(["product_view", "add_to_cart", "remove_from_cart"],
                               rng.choice([1, 1, 2]))
            target = {"field": "event.category", "op": "eq",
                      "value": CATEGORIES[i % len(CATEGORIES)]}
        else:
            types = rng.sample(["product_view", "add_to_cart"], rng.choice([1, 2]))
            target = {"field": "event.product_id", "op": "in",
                      "value": [f"p-{rng.randrange(500)}" for _ in range(rng.randint(1, 5))]}
        conds: list[dict[str, Any]] = [{"field": "event.type", "op": "in", "value": types},
                                       target]
        conds += [condition(rng, k) for k in rng.sample(range(12), rng.randint(1, 3))]
        action = ({"discount": {"percent": rng.choice([5, 10, 15])}} if rng.random() < 0.6 else
                  {"recommend": {"strategy": "covisit", "slot": f"slot{i % 4}"}})
        rules.append({"name": f"shop-{i}", "priority": rng.randint(0, 100),
                      "when": {"all": conds}, "then": [action]})
    return validate({"name": "bench-shop", "rules": rules})


def inputs(count: int, seed: int = 2) -> list[tuple[Event, dict[str, Any], dict[str, Any],
                                                   dict[str, float]]]:
    rng = random.Random(seed)
    base = DAY0 + timedelta(hours=8)
    types = list(MIX)
    weights = [MIX[t] for t in types]
    out = []
    for i in range(count):
        etype = rng.choices(types, weights)[0]
        props: dict[str, Any] = {}
        if etype == "page_view":
            props = {"page": rng.choice(PAGES)}
        elif etype in ("product_view", "add_to_cart", "remove_from_cart"):
            props = {"product_id": f"p-{rng.randrange(500)}", "category": rng.choice(CATEGORIES),
                     "price": round(rng.uniform(5, 300), 2), "quantity": 1}
        elif etype == "click":
            props = {"element": "banner"}
        elif etype == "search":
            props = {"query": "red shoes"}
        else:
            props = {"order_id": f"o-{i}", "total": 120.0, "items": []}
        event = Event(f"e-{i}", etype, f"u-{rng.randrange(5000)}",
                      base + timedelta(seconds=i * 3), props)
        state = blank_state()
        state.update({
            "cart_value": rng.choice([0, 0, 40.0, 120.0, 260.0]),
            "cart_items": rng.randint(0, 4), "order_count": rng.choice([0, 0, 1, 3]),
            "count_product_view_1h": rng.randint(0, 8),
            "session_product_views": rng.randint(0, 6),
            "days_since_last_purchase": rng.choice([-1, 10, 45, 90]),
            "recent_categories": rng.sample(CATEGORIES, rng.randint(0, 3)),
            "recent_products": [f"p-{rng.randrange(500)}" for _ in range(5)],
            "segments": rng.choice([[], ["vip"]]),
        })
        if rng.random() < 0.3:
            state["since_page_checkout"] = rng.choice([60, 600, 3000])
        customer = {"tier": rng.choice(TIERS), "country": rng.choice(["DE", "FR", "US"]),
                    "consent": True, "segments": rng.choice([[], ["new"]])}
        scores = {"purchase_intent": rng.random()} if rng.random() < 0.8 else {}
        out.append((event, state, customer, scores))
    return out


Timed = Callable[[int, int], tuple[float, int]]  # events lo..hi -> (seconds, rules fired)


def ours(compiled: CompiledRuleset, data: list[Any]) -> Timed:
    """``build_fact`` + ``RuleEngine.evaluate`` over a slice of ``data``, one engine that
    stays loaded (as in a worker)."""
    engine = RuleEngine()
    engine.load(compiled)

    def run(lo: int, hi: int) -> tuple[float, int]:
        fired = 0
        evaluate = engine.evaluate
        started = time.perf_counter()
        for event, state, customer, scores in data[lo:hi]:
            fired += len(evaluate(compiled, event, build_fact(event, state, customer, scores)))
        return time.perf_counter() - started, fired

    return run


class _Host(durable.Host):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.fired = 0

    def get_action(self, action_name: str) -> Any:
        def run(c: Any) -> None:
            self.fired += 1

        return run


Posts = list[list[tuple[int, dict[str, Any]]]]  # per event: (chunk, fact posted to it)


def posted_facts(compiled: CompiledRuleset, data: list[Any], whole: bool = False) -> Posts:
    """Per event, the chunks our engine posts it to (the index's choice, in season) and
    the fact it posts to each (only the keys the chunk reads, or, ``whole``, every scalar
    of the flat fact), made ahead of time: not timed."""
    out = []
    for i, (event, state, customer, scores) in enumerate(data):
        fact = build_fact(event, state, customer, scores)
        posts = []
        for chunk in compiled.chunks_for(event.type, fact):
            lo, hi = compiled.chunks_of(event.type)[chunk].span
            if not lo <= fact["ts_ms"] < hi:
                continue
            reads = compiled.chunks_of(event.type)[chunk].reads
            posted = {k: v for k, v in fact.items() if (whole or k in reads)
                      and v is not None and not isinstance(v, list | dict)}
            for key, check in compiled.chunks_of(event.type)[chunk].derived.items():
                posted[key] = 1 if check(fact) else 0
            posted["sid"] = "0"
            posted["id"] = f"f{i}"
            posts.append((chunk, posted))
        out.append(posts)
    return out


def _names(compiled: CompiledRuleset, data: list[Any]) -> list[dict[int, str]]:
    return [dict(enumerate(c.name for c in compiled.chunks_of(event.type)))
            for event, *_ in data]


def raw(compiled: CompiledRuleset, data: list[Any], facts: Posts) -> Timed:
    host = _Host()
    for chunk in compiled.chunks.values():
        host.set_rulesets({chunk.name: copy.deepcopy(chunk.definition)})
    work = [[(names[chunk], posted) for chunk, posted in posts]
            for names, posts in zip(_names(compiled, data), facts, strict=True)]

    def run(lo: int, hi: int) -> tuple[float, int]:
        before = host.fired
        started = time.perf_counter()
        for posts in work[lo:hi]:
            for name, posted in posts:
                try:
                    host.assert_fact(name, posted)
                except durable.MessageNotHandledException:
                    pass
                finally:
                    host.retract_fact(name, posted)
        return time.perf_counter() - started, host.fired - before

    return run


def raw_core(compiled: CompiledRuleset, data: list[Any], facts: Posts) -> Timed:
    """The same facts to the same chunks through durable_rules' C core, the loop our
    engine uses, bare: what durable_rules itself costs. (Posted under the short key names
    the engine's rulesets know them by, as the engine posts them.)"""
    import orjson


    engine = RuleEngine()
    engine.load(compiled)
    handles = engine._handles
    work = [[(handles[names[chunk]], orjson.dumps(engine.durable_fact(compiled, posted)).decode(),
              orjson.dumps({"sid": posted["sid"], "id": posted["id"]}).decode())
             for chunk, posted in posts]
            for names, posts in zip(_names(compiled, data), facts, strict=True)]

    def run(lo: int, hi: int) -> tuple[float, int]:
        fired: list[str] = []
        started = time.perf_counter()
        for posts in work[lo:hi]:
            for handle, body, retract in posts:
                _run(handle, body, retract, fired)
        return time.perf_counter() - started, len(fired)

    return run


def met(compiled: CompiledRuleset, data: list[Any]) -> tuple[float, float]:
    """Rules per event: those in the chunks it is posted to (the index's choice, in
    season), and those listening to its event type at all."""
    meets = listens = 0
    for event, state, customer, scores in data:
        fact = build_fact(event, state, customer, scores)
        chunks = compiled.chunks_of(event.type)
        spans = [c.span for c in chunks]
        meets += sum(len(chunks[i].definition) for i in compiled.chunks_for(event.type, fact)
                     if spans[i][0] <= fact["ts_ms"] < spans[i][1])
        listens += sum(1 for r in compiled.rules.values() if event.type in r.event_types)
    return meets / len(data), listens / len(data)


def posting(compiled: CompiledRuleset, facts: Posts) -> tuple[float, float]:
    """Work per event that no clock or load changes: durable_rules posts (assert +
    retract) and bytes of JSON posted (short key names, as the engine posts them)."""
    import orjson

    engine = RuleEngine()
    engine.load(compiled)
    posts = sum(len(p) for p in facts)
    size = sum(len(orjson.dumps(engine.durable_fact(compiled, posted)))
               for p in facts for _, posted in p)
    engine.unload(compiled)
    return posts / len(facts), size / len(facts)


SHAPES = {
    "campaigns": "10 campaigns of 50 rules, one active today",
    "shop": "shop-shaped: 50 untargeted + 450 for a page, category or products, all active",
    "worst": "worst case: all 500 untargeted and active at once",
}


def shape_document(shape: str) -> dict[str, Any]:
    return {"50": lambda: ruleset(50), "campaigns": lambda: ruleset(500, 3, 10),
            "shop": shop, "worst": lambda: ruleset(500, 3)}[shape]()


def instructions(shape: str, count: int) -> None:
    """Only ``build_fact`` + ``RuleEngine.evaluate`` of one shape over the first ``count``
    of 6,000 events (always generated in full): run under callgrind with two counts, the
    difference of the totals is the evaluation's instructions (see docs/rules.md).
    ``fact``: ``build_fact`` alone (its share of every shape)."""
    data = inputs(max(count, 6000))[:count]
    if shape == "fact":
        for event, state, customer, scores in data:
            build_fact(event, state, customer, scores)
        print(f"fact: {count} events")
        return
    compiled = compile_ruleset(shape_document(shape), 1)
    _, fired = ours(compiled, data)(0, count)
    print(f"{shape}: {count} events, {fired} rules fired")


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    """The median of the rounds, then their range."""
    return f"{fmt.format(statistics.median(values))} (rounds {fmt.format(min(values))} to " \
           f"{fmt.format(max(values))})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=5,
                        help="passes over the events; every measure runs once per slice")
    parser.add_argument("--slice", type=int, default=1000,
                        help="events per measure before the next one takes its turn")
    parser.add_argument("--instructions", choices=["50", *SHAPES, "fact"], metavar="SHAPE",
                        help="only evaluate SHAPE (50, campaigns, shop, worst; fact: "
                             "build_fact alone) over --events events, for callgrind")
    args = parser.parse_args()
    if args.instructions:
        instructions(args.instructions, args.events)
        return
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    print(f"machine: {platform.machine()}, {cpu}, nproc {os.cpu_count()}, pinned to one core; "
          f"Python {platform.python_version()}; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    data = inputs(args.events)
    c50 = compile_ruleset(shape_document("50"), 1)
    loads, compiled500 = {}, {}
    for shape in SHAPES:
        doc = shape_document(shape)
        started = time.perf_counter()
        compiled500[shape] = compile_ruleset(doc, 1)
        engine = RuleEngine()
        engine.load(compiled500[shape])
        loads[shape] = time.perf_counter() - started
        engine.unload(compiled500[shape])
    same, whole = posted_facts(c50, data), posted_facts(c50, data, whole=True)
    same500 = {shape: posted_facts(c, data) for shape, c in compiled500.items()}
    measures: dict[str, Timed] = {
        "ours": ours(c50, data), "host": raw(c50, data, same),
        "whole": raw(c50, data, whole), "core": raw_core(c50, data, same),
        **{shape: ours(c, data) for shape, c in compiled500.items()},
        **{"core " + shape: raw_core(c, data, same500[shape]) for shape, c in compiled500.items()},
    }
    for measure in measures.values():  # warm up: every engine once, not timed
        measure(0, min(args.slice, len(data)))
    # Interleaved: every measure takes its turn on each slice of the events, in an order
    # that rotates, round after round; a rate is per round (its slices' total time). Load
    # from elsewhere on the machine, frequency changes and the like hit all measures of a
    # round alike, so the ratios of one round compare like with like.
    keys = list(measures)
    seconds = {k: [0.0] * args.rounds for k in keys}
    fired = {k: [0] * args.rounds for k in keys}
    turn = 0
    for r in range(args.rounds):
        for lo in range(0, len(data), args.slice):
            hi = min(lo + args.slice, len(data))
            turn += 1
            for k in keys[turn % len(keys):] + keys[:turn % len(keys)]:
                took, n = measures[k](lo, hi)
                seconds[k][r] += took
                fired[k][r] += n
    rates = {k: [len(data) / t for t in v] for k, v in seconds.items()}
    rate = {k: statistics.median(v) for k, v in rates.items()}
    total = {k: v[0] for k, v in fired.items()}
    for k, v in fired.items():
        assert len(set(v)) == 1, (k, v)  # the same every round
    assert total["ours"] == total["host"] == total["whole"] == total["core"], total
    for shape in SHAPES:  # the index and the skipped seasons fire exactly what posting
        assert total[shape] == total["core " + shape], (shape, total)  # to every chunk would

    def per_round(a: str, b: str) -> list[float]:
        return [x / y for x, y in zip(rates[a], rates[b], strict=True)]

    def overhead(raw_key: str) -> str:
        values = [100 * (1 - x) for x in per_round("ours", raw_key)]
        return spread(values, "{:+.0f}%")

    rate50 = rate["ours"]
    chunks = len(c50.chunks)
    meets, listens = met(c50, data)
    posts, size = posting(c50, same)
    print(f"\n{len(data)} events, mix {MIX}; {args.rounds} rounds, each measure in turn on "
          f"slices of {args.slice} events; events/s: median of the rounds; ratios: median of "
          "the rounds' ratios (min-max)")
    print(f"\n50 rules ({chunks} durable rulesets over {len(c50.types)} event types); "
          f"{total['ours'] / len(data):.2f} rules fire per event; an event meets {meets:.1f} "
          f"of the {listens:.1f} rules on its event type, {posts:.2f} posts of "
          f"{size:.0f} bytes")
    print(f"  ours: build_fact + RuleEngine.evaluate        {rate50:>9,.0f} events/s  "
          f"(rounds {min(rates['ours']):,.0f} to {max(rates['ours']):,.0f})")
    print(f"  raw durable_rules Host, the same facts posted {rate['host']:>9,.0f} events/s  "
          f"(our overhead {overhead('host')})")
    print(f"  raw durable_rules Host, whole flat fact       {rate['whole']:>9,.0f} events/s")
    print(f"  raw durable_rules C core, the same facts      {rate['core']:>9,.0f} events/s  "
          f"(our overhead {overhead('core')}: fact building, derived predicates, reasons)")
    print("\n500 rules (target: compile + load < 1000 ms, >= 0.5x the 50-rule rate):")
    for shape, compiled in compiled500.items():
        ratios = per_round(shape, "ours")
        ratio = statistics.median(ratios)
        verdict = ("met in every round" if min(ratios) >= 0.5 else
                   "met (median)" if ratio >= 0.5 else "MISSED")
        core = rate["core " + shape]
        chunks = len(compiled.chunks)
        meets, listens = met(compiled, data)
        posts, size = posting(compiled, same500[shape])
        print(f"  {SHAPES[shape]}:\n    compile + load {loads[shape] * 1000:.0f} ms into {chunks} "
              f"durable rulesets; {total[shape] / len(data):.2f} fire per event; an event "
              f"meets {meets:.1f} of the {listens:.1f} rules on its event type, {posts:.2f} "
              f"posts of {size:.0f} bytes")
        print(f"    ours                                        {rate[shape]:>9,.0f} events/s  "
              f"({spread(ratios, '{:.2f}x')} the 50-rule rate: {verdict})")
        print(f"    raw durable_rules C core, the same facts    {core:>9,.0f} events/s  "
              f"({spread(per_round('core ' + shape, 'ours'), '{:.2f}x')} our 50-rule rate; ours is "
              f"{spread([100 * x for x in per_round(shape, 'core ' + shape)], '{:.0f}%')} of "
              "it)")


def _run(handle: int, body: str, retract: str, fired: list[str]) -> None:
    """The engine's assert / match / retract loop on one prepared post, without the rest of
    ``RuleEngine.evaluate`` (for ``--instructions`` and the raw-post measure)."""
    import durable_rules_engine as core

    try:
        code, state_handle = core.assert_fact(handle, body)
        if code in (0, 3):  # 1: matched nothing
            started = core.start_action_for_state(handle, state_handle if code == 0 else 0)
            if started:
                message = started[1]
                while message:
                    fired.append(message[2:message.index('"', 2)])  # {"<rule>": ...}
                    message = core.complete_and_start_action(handle, state_handle)
    finally:
        core.retract_fact(handle, retract)


if __name__ == "__main__":
    main()

