"""``decisions recommend evaluate``: a strategy's offline figures on a session click log.

Learns from the training clicks through the worker's own code, replays the test
sessions click by click and prints HR@K, MRR@K, NDCG@K and coverage beside the
popularity and last-item-successor baselines (``decisions.simulate.recommendations``).
It needs a Redis of its own: a private embedded one unless one is configured
(``--redis-url`` or ``DECISIONS_REDIS_URL``), which must then be empty, or emptied
with ``--flush``: what it learns would otherwise mix with what is there.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import redis

from decisions.core.db import redact
from decisions.core.errors import ConfigError, ServiceUnavailable, ValidationError
from decisions.core.resp import cluster
from decisions.core.settings import Settings
from decisions.runtime.recommend import STRATEGIES
from decisions.simulate.clicklog import Session, read_sessions
from decisions.simulate.recommendations import Baselines, Scores, learn, replay

DEFAULT_STRATEGY = "next_click"


def register(sub: Any) -> None:
    recommend = sub.add_parser("recommend", help="evaluate recommendation strategies offline")
    verbs = recommend.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True
    evaluate = verbs.add_parser(
        "evaluate",
        help="learn from a click log, replay another click by click, score the lists",
        description="Learns from the training clicks through the worker's own code, then "
        "replays each test session click by click and scores the list the storefront "
        "would be served after every click but the last against the next click. Input: "
        "TSV with a header SessionId, ItemId, Time (Unix seconds), or the product's "
        "event JSONL (product views and clicks grouped by user).",
    )
    evaluate.add_argument("--train", type=Path, required=True, help="click log to learn from")
    evaluate.add_argument("--test", type=Path, required=True, help="click log to replay")
    evaluate.add_argument("--k", type=_positive, default=10, help="list length (default 10)")
    evaluate.add_argument("--strategy", choices=sorted(STRATEGIES), default=DEFAULT_STRATEGY,
                          help=f"strategy to evaluate (default {DEFAULT_STRATEGY})")
    evaluate.add_argument("--lists", type=Path, metavar="OUT.csv",
                          help="write every list scored: SessionId;Position;Recommendations")
    evaluate.add_argument("--redis-url", help="a Redis to learn in (default: "
                          "DECISIONS_REDIS_URL, else a private embedded one)")
    evaluate.add_argument("--flush", action="store_true",
                          help="empty the configured Redis first (it must be empty otherwise)")
    evaluate.set_defaults(handler=cmd_evaluate)


def _positive(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {raw!r}")
    return value


class Bar:
    """A progress bar on stderr (redrawn on a terminal; one line at the end otherwise)."""

    def __init__(self, label: str, total: int, unit: str, out: TextIO | None = None) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.out = out or sys.stderr
        self.started = time.perf_counter()
        self.tty = self.out.isatty()
        self._drawn = -1.0

    def __call__(self, done: int) -> None:
        now = time.perf_counter()
        if self.tty and (done >= self.total or now - self._drawn > 0.1):
            self._drawn = now
            self.out.write("\r" + self._line(done, now))
            self.out.flush()

    def _line(self, done: int, now: float) -> str:
        share = done / self.total if self.total else 1.0
        filled = int(share * 30)
        return (f"{self.label:<9} [{'#' * filled}{'.' * (30 - filled)}] {done:,}/{self.total:,} "
                f"{self.unit}  {now - self.started:.1f} s")

    def close(self) -> None:
        line = self._line(self.total, time.perf_counter())
        self.out.write(("\r" + line if self.tty else line) + "\n")
        self.out.flush()


@contextmanager
def _private_redis(args: argparse.Namespace, settings: Settings) -> Iterator[redis.Redis]:
    url = args.redis_url or settings.redis_url
    if url:
        client = cluster.connect(url, settings.redis_cluster, socket_timeout=60)
        try:
            held = int(client.dbsize())
        except redis.RedisError as exc:
            setting = "--redis-url" if args.redis_url else "DECISIONS_REDIS_URL"
            raise ServiceUnavailable("Redis", redact(url), setting, str(exc)) from None
        if held and not args.flush:
            raise ConfigError(
                f"the Redis at {redact(url)} holds {held:,} key{'s' * (held != 1)}: the "
                "evaluation learns into Redis and must start empty. Pass --flush to empty "
                "it first (only if nothing there is needed), or unset DECISIONS_REDIS_URL "
                "to use a private embedded one")
        if args.flush:
            client.flushdb()
        try:
            yield client
        finally:
            client.close()
        return
    from decisions.cli.stack.embedded import EmbeddedStack

    var = Path(settings.var_dir) / f"recommend-evaluate-{_stamp()}"
    stack = EmbeddedStack(var)
    try:
        client = redis.Redis.from_url(stack.start_redis(), socket_timeout=60)
        try:
            yield client
        finally:
            client.close()
    finally:
        stack.stop()
        shutil.rmtree(var, ignore_errors=True)


def _stamp() -> str:
    import os

    return f"{os.getpid()}-{int(time.time())}"


def _pairs(sessions: list[Session]) -> int:
    return sum(len(s.items) - 1 for s in sessions if len(s.items) > 1)


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    train = read_sessions(args.train)
    test = read_sessions(args.test)
    if not train:
        raise ValidationError(f"{args.train}: no clicks to learn from")
    if not _pairs(test):
        raise ValidationError(f"{args.test}: no session of two or more clicks to replay")
    k, strategy = args.k, args.strategy
    base = Baselines(train)
    catalog = len(base.popularity)
    ours = Scores(strategy, k)
    popular = Scores("popularity", k)
    successors = Scores("last-item successors", k)
    top = base.popular(k)
    lists: list[tuple[str, int, list[str]]] = []

    def scored(session: Session, position: int, products: list[str]) -> None:
        target = session.items[position + 1]
        ours.add(products, target)
        popular.add(top, target)
        successors.add(base.after(session.items[position], k), target)
        if args.lists:
            lists.append((session.session_id, position, products))

    train_clicks = sum(len(s.items) for s in train)
    test_clicks = sum(len(s.items) for s in test)
    print(f"strategy {strategy}, K = {k}")
    with _private_redis(args, settings) as client:
        bar = Bar("learning", train_clicks, "clicks")
        started = time.perf_counter()
        learn(client, train, strategy, bar)
        bar.close()
        learn_seconds = time.perf_counter() - started
        bar = Bar("replaying", test_clicks, "clicks")
        seconds = replay(client, test, strategy, k, scored, bar)
        bar.close()
    print(f"train {args.train}: {train_clicks:,} clicks, {len(train):,} sessions, "
          f"{catalog:,} products; learned in {learn_seconds:.1f} s")
    print(f"test {args.test}: {test_clicks:,} clicks, {len(test):,} sessions, "
          f"{ours.lists:,} lists scored in {seconds:.1f} s "
          f"({1000 * seconds / max(ours.lists, 1):.2f} ms per list)")
    print()
    print(f"{'':<24}{'HR@' + str(k):>9}{'MRR@' + str(k):>9}{'NDCG@' + str(k):>9}{'coverage':>10}")
    for row in (ours, popular, successors):
        f = row.figures(catalog)
        print(f"{row.name:<24}{f['hr']:>9.4f}{f['mrr']:>9.4f}{f['ndcg']:>9.4f}"
              f"{f['coverage']:>10.1%}")
    if args.lists:
        _write_lists(args.lists, test, lists)
        print(f"\nlists written to {args.lists} ({len(lists):,} rows)")
    return 0


def _write_lists(path: Path, sessions: list[Session],
                 lists: list[tuple[str, int, list[str]]]) -> None:
    order = {s.session_id: n for n, s in enumerate(sessions)}
    lists.sort(key=lambda row: (order[row[0]], row[1]))
    try:
        with path.open("w", newline="", encoding="utf-8") as f:
            out = csv.writer(f, delimiter=";", lineterminator="\n")
            out.writerow(["SessionId", "Position", "Recommendations"])
            for session_id, position, products in lists:
                out.writerow([session_id, position, ",".join(products)])
    except OSError as exc:
        raise ValidationError(f"cannot write {path}: {exc.strerror}") from None
