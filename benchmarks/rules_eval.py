"""Rule evaluation benchmark (issue 3, item 9), one core, no services needed.

    .venv/bin/python benchmarks/rules_eval.py                 # ~30 s
    .venv/bin/python benchmarks/rules_eval.py --events 20000  # quicker

Prints, for a generated 50-rule ruleset over a realistic event mix:
- ours: ``build_fact`` (event + ~90 state features + customer + scores) and
  ``RuleEngine.evaluate`` (derived predicates, assert/retract under one sid, matches with
  reasons), per event;
- raw durable_rules C core: the facts our engine posts, made ahead of time, through the
  same assert / read matches / retract loop, bare — our own overhead on top of the engine;
- raw durable_rules, the same compiled conditions posted directly: ready-made facts
  (derived values already in them) asserted and retracted on a bare ``durable.engine.Host``
  — once the very facts our engine posts (only the keys the rules read), once the whole
  flat fact (every scalar, as a direct user of durable_rules would post it);
then the compile-and-load time of a 500-rule ruleset and its evaluation rate.
Targets: our overhead < 30% over the raw figure; 500 rules compile+load < 1 s and
evaluate at >= half the 50-rule rate. 500 rules are measured twice: as 10 campaigns with
one-day active windows (one active; matches per event as with 50 rules) and all active at
once (ten times the matches per event: every match costs, whatever the engine).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from durable import engine as durable

from decisions.engine import RuleEngine, build_fact
from decisions.events import Event
from rulesets.compile import CompiledRuleset, compile_ruleset
from rulesets.dryrun import blank_state
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
            props = {"page": rng.choice(["home", "category", "product", "cart", "checkout"])}
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


def ours(compiled: CompiledRuleset, data: list[Any]) -> tuple[float, int]:
    engine = RuleEngine()
    engine.load(compiled)
    fired = 0
    started = time.perf_counter()
    for event, state, customer, scores in data:
        fired += len(engine.evaluate(compiled, event, build_fact(event, state, customer, scores)))
    return len(data) / (time.perf_counter() - started), fired


class _Host(durable.Host):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.fired = 0

    def get_action(self, action_name: str) -> Any:
        def run(c: Any) -> None:
            self.fired += 1

        return run


def posted_facts(compiled: CompiledRuleset, data: list[Any],
                 whole: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """The facts our engine posts (or, ``whole``, every scalar of the flat fact), made
    ahead of time: not timed."""
    out = []
    for i, (event, state, customer, scores) in enumerate(data):
        fact = build_fact(event, state, customer, scores)
        reads = compiled.reads_by_type.get(event.type, ())
        posted = {k: v for k, v in fact.items()
                  if (whole or k in reads) and v is not None and not isinstance(v, list | dict)}
        for key, check in compiled.derived_by_type.get(event.type, {}).items():
            posted[key] = 1 if check(fact) else 0
        posted["sid"] = "0"
        posted["id"] = f"f{i}"
        out.append((event.type, posted))
    return out


def raw(compiled: CompiledRuleset, facts: list[tuple[str, dict[str, Any]]]) -> tuple[float, int]:
    host = _Host()
    names: dict[str, list[str]] = {}
    for etype, chunks in compiled.by_type.items():
        for i, definition in enumerate(chunks):
            name = compiled.durable_name(etype, i)
            host.set_rulesets({name: copy.deepcopy(definition)})
            names.setdefault(etype, []).append(name)
    started = time.perf_counter()
    for etype, posted in facts:
        for name in names.get(etype, ()):
            try:
                host.assert_fact(name, posted)
            except durable.MessageNotHandledException:
                pass
            finally:
                host.retract_fact(name, posted)
    return len(facts) / (time.perf_counter() - started), host.fired


def raw_core(compiled: CompiledRuleset,
             facts: list[tuple[str, dict[str, Any]]]) -> tuple[float, int]:
    """The same facts through durable_rules' C core, the loop our engine uses, bare."""
    import orjson

    from decisions.engine import _run

    engine = RuleEngine()
    engine.load(compiled)
    names = {t: [compiled.durable_name(t, i) for i in range(len(c))]
             for t, c in compiled.by_type.items()}
    handles = engine._handles
    bodies = [(t, orjson.dumps(f).decode()) for t, f in facts]
    fired: list[str] = []
    started = time.perf_counter()
    for etype, body in bodies:
        for name in names.get(etype, ()):
            _run(handles[name], body, fired)
    return len(facts) / (time.perf_counter() - started), len(fired)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
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
          f"Python {platform.python_version()}")
    data = inputs(args.events)
    doc50 = ruleset(50)
    c50 = compile_ruleset(doc50, 1)
    ours(c50, data[:2000])  # warm up
    docs500 = {"10 campaigns of 50 rules, one active today": ruleset(500, 3, 10),
               "all 500 active (10x the matches per event)": ruleset(500, 3)}
    loads, compiled500 = {}, {}
    for label, doc in docs500.items():
        started = time.perf_counter()
        compiled500[label] = compile_ruleset(doc, 1)
        RuleEngine().load(compiled500[label])
        loads[label] = time.perf_counter() - started
    # interleaved, best of each: load from other work on the machine hits all alike
    same, whole = posted_facts(c50, data), posted_facts(c50, data, whole=True)
    measures: dict[str, Any] = {
        "ours": lambda: ours(c50, data), "host": lambda: raw(c50, same),
        "whole": lambda: raw(c50, whole), "core": lambda: raw_core(c50, same),
        **{label: (lambda c=c: ours(c, data)) for label, c in compiled500.items()},
    }
    results: dict[str, list[tuple[float, int]]] = {k: [] for k in measures}
    for _ in range(args.runs):
        for key, measure in measures.items():
            results[key].append(measure())
    rate = {k: max(r[0] for r in v) for k, v in results.items()}
    fired = {k: v[0][1] for k, v in results.items()}
    assert fired["ours"] == fired["host"] == fired["whole"] == fired["core"], fired
    rate50 = rate["ours"]
    chunks = sum(len(c) for c in c50.by_type.values())
    print(f"\n50 rules ({chunks} durable rulesets over {len(c50.by_type)} event types), "
          f"{len(data)} events, mix {MIX}; {fired['ours'] / len(data):.2f} rules fire per "
          f"event; best of {args.runs} interleaved runs")
    print(f"  ours: build_fact + RuleEngine.evaluate        {rate50:>9,.0f} events/s")
    print(f"  raw durable_rules Host, the same facts posted {rate['host']:>9,.0f} events/s  "
          f"(our overhead {100 * (1 - rate50 / rate['host']):+.0f}%)")
    print(f"  raw durable_rules Host, whole flat fact       {rate['whole']:>9,.0f} events/s")
    print(f"  raw durable_rules C core, the same facts      {rate['core']:>9,.0f} events/s  "
          f"(our overhead {100 * (1 - rate50 / rate['core']):+.0f}%: fact building, derived "
          "predicates, reasons)")
    print("\n500 rules:")
    for label in docs500:
        print(f"  {label}: compile + load {loads[label] * 1000:.0f} ms (target < 1000); "
              f"{fired[label] / len(data):.2f} fire per event")
        print(f"    ours                                        {rate[label]:>9,.0f} events/s  "
              f"({rate[label] / rate50:.2f}x the 50-rule rate; target >= 0.5)")

if __name__ == "__main__":
    main()
