"""``decisions recommend evaluate`` on real session clicks, against a real Redis.

The slice: the first 5,000 clicks of ``../shared/data/sessions/clicks_train.tsv`` and the
first 1,500 of ``clicks_valid.tsv`` (1,129 lists), copied into ``tests/data/sessions/``.
The baselines' figures on it were checked by hand with a separate script (successors:
275 hits, reciprocal ranks summing to 182.411; popularity: 66 hits, 22.415).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from decisions.cli.main import main
from decisions.simulate.clicklog import read_sessions
from decisions.simulate.recommendations import Baselines, Scores, learn, replay

DATA = Path(__file__).resolve().parent / "data" / "sessions"
LISTS = 1129


def _head(source: Path, lines: int, target: Path) -> Path:
    with source.open() as f:
        target.write_text("".join(next(f) for _ in range(lines)))
    return target


@pytest.fixture
def slice_files(tmp_path: Path) -> tuple[Path, Path]:
    return (_head(DATA / "clicks_train_head.tsv", 5001, tmp_path / "train.tsv"),
            _head(DATA / "clicks_valid_head.tsv", 1501, tmp_path / "valid.tsv"))


def test_next_click_beats_the_baselines_on_a_real_slice(
        slice_files: tuple[Path, Path], redis_client: redis.Redis) -> None:
    train, test = (read_sessions(p) for p in slice_files)
    base = Baselines(train)
    ours, popular, successors = Scores("next_click", 10), Scores("pop", 10), Scores("succ", 10)
    top = base.popular(10)

    def scored(session: object, position: int, products: list[str]) -> None:
        items = session.items  # type: ignore[attr-defined]
        assert len(products) == 10
        ours.add(products, items[position + 1])
        popular.add(top, items[position + 1])
        successors.add(base.after(items[position], 10), items[position + 1])

    assert learn(redis_client, train, "next_click") == 5000
    replay(redis_client, test, "next_click", 10, scored)
    assert ours.lists == popular.lists == successors.lists == LISTS
    assert (successors.hits, round(successors.rr, 3)) == (275, 182.411)  # hand-checked
    assert (popular.hits, round(popular.rr, 3)) == (66, 22.415)
    assert ours.hits > 1.5 * successors.hits and ours.rr > 1.5 * successors.rr
    assert ours.hits > 5 * popular.hits


def test_the_command_prints_the_figures_and_writes_the_lists(
        slice_files: tuple[Path, Path], redis_client: redis.Redis, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    url = redis_client.connection_pool.connection_kwargs
    redis_url = f"redis://{url['host']}:{url['port']}/{url.get('db', 0)}"
    train, test = slice_files
    out_csv = tmp_path / "lists.csv"
    redis_client.set("someone-else", "1")
    argv = ["recommend", "evaluate", "--train", str(train), "--test", str(test), "--k", "5",
            "--lists", str(out_csv), "--redis-url", redis_url]
    assert main(argv) == 2  # a Redis holding keys is never flushed unless told to
    assert "holds 1 key:" in capsys.readouterr().err
    assert redis_client.get("someone-else") == b"1"

    assert main([*argv, "--flush"]) == 0
    printed = capsys.readouterr().out
    assert f"{LISTS:,} lists scored" in printed and "ms per list" in printed
    rows = {line.split()[0]: line.split()[-4:] for line in printed.splitlines()
            if line.startswith(("next_click", "popularity", "last-item"))}
    assert set(rows) == {"next_click", "popularity", "last-item"}
    assert float(rows["next_click"][0]) > float(rows["last-item"][0]) > float(rows["popularity"][0])
    assert "HR@5" in printed and "NDCG@5" in printed and "coverage" in printed

    lines = out_csv.read_text().splitlines()
    assert lines[0] == "SessionId;Position;Recommendations"
    assert len(lines) == 1 + LISTS
    sessions = read_sessions(test)
    first = next(s for s in sessions if len(s.items) > 1)
    session_id, position, products = lines[1].split(";")
    assert (session_id, position) == (first.session_id, "0")
    assert len(products.split(",")) == 5
    # one row per position of every session of two or more clicks, in order
    expected = [(s.session_id, str(p)) for s in sessions for p in range(len(s.items) - 1)]
    assert [tuple(line.split(";")[:2]) for line in lines[1:]] == expected


def test_click_logs_in_both_formats_and_their_errors(tmp_path: Path) -> None:
    tsv = tmp_path / "clicks.tsv"
    tsv.write_text("SessionId\tItemId\tTime\n1\ta\t10\n2\tc\t5\n1\tb\t20.5\n")
    assert [(s.session_id, s.items) for s in read_sessions(tsv)] == [("2", ["c"]),
                                                                    ("1", ["a", "b"])]
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text(
        '{"event_id": "e1", "type": "product_view", "user_id": "u1", '
        '"ts": "2026-01-01T00:00:02Z", "properties": {"product_id": "p-2"}}\n'
        '{"event_id": "e2", "type": "page_view", "user_id": "u1", '
        '"ts": "2026-01-01T00:00:01Z", "properties": {"page": "home"}}\n'
        '{"event_id": "e3", "type": "click", "user_id": "u1", '
        '"ts": "2026-01-01T00:00:01Z", "properties": {"element": "x", "product_id": "p-1"}}\n')
    assert [(s.session_id, s.items) for s in read_sessions(jsonl)] == [("u1", ["p-1", "p-2"])]

    bad = tmp_path / "bad.tsv"
    bad.write_text("SessionId\tItemId\tTime\n1\ta\tyesterday\n")
    with pytest.raises(Exception, match="bad.tsv") as info:
        read_sessions(bad)
    assert "line 2: Time: expected Unix seconds" in str(info.value)
    bad.write_text("Session\tItem\n")
    with pytest.raises(Exception, match="missing SessionId, ItemId, Time"):
        read_sessions(bad)


def test_a_private_embedded_redis_when_none_is_configured(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("DECISIONS_REDIS_URL", raising=False)
    monkeypatch.setenv("DECISIONS_VAR_DIR", str(tmp_path / "var"))
    train = tmp_path / "train.tsv"
    # after a, shoppers went to b twice and to c once
    train.write_text("SessionId\tItemId\tTime\n1\ta\t1\n1\tb\t2\n2\ta\t3\n2\tb\t4\n"
                     "3\ta\t5\n3\tc\t6\n")
    test = tmp_path / "test.tsv"
    test.write_text("SessionId\tItemId\tTime\n9\ta\t100\n9\tc\t101\n")
    assert main(["recommend", "evaluate", "--train", str(train), "--test", str(test),
                 "--k", "1"]) == 0
    printed = capsys.readouterr().out
    # one list, after a: successors say b (a miss), popularity a (a miss)
    rows = {line.split()[0]: line.split()[-4:] for line in printed.splitlines()
            if line.startswith(("popularity", "last-item"))}
    assert rows["last-item"][:3] == ["0.0000"] * 3 and rows["popularity"][:3] == ["0.0000"] * 3
    assert "1 lists scored" in printed
    assert not list((tmp_path / "var").glob("recommend-evaluate-*"))  # stopped, removed
