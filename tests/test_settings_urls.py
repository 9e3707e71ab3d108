"""Service URL settings: any junk stops a command with one line naming the setting.

Hypothesis generates both free text and URL-shaped strings (schemes, hosts, ports, options
drawn from plausible and broken parts); every one must either be accepted or refused with
a ``ConfigError`` of one line that names the setting. Accepted ones are then used the way
the commands use them (a connection attempt to a port where nothing listens): that too
ends in one line, never a traceback.
"""

from __future__ import annotations

import contextlib
import io
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decisions.cli.main import main
from decisions.cli.up import check_redis
from decisions.core.errors import ConfigError, ServiceUnavailable
from decisions.core.settings import Settings

SETTINGS = {
    "DECISIONS_DATABASE_URL": "database_url",
    "DECISIONS_REDIS_URL": "redis_url",
    "DECISIONS_KAFKA_BOOTSTRAP": "kafka_bootstrap",
}
SCHEMES = ["postgresql", "postgres", "postgresql+psycopg", "postgresql+asyncpg", "mysql",
           "sqlite", "redis", "rediss", "unix", "http", "PLAINTEXT", "", "post gres", "ü"]
HOSTS = ["127.0.0.1", "localhost", "[::1]", "[::1", "", "h st", "db.example", "%zz", "::"]
PORTS = ["", ":", ":0", ":1", ":5432", ":65535", ":65536", ":-1", ":abc", ":99999999999"]
PATHS = ["", "/", "/db", "/0", "/a/b", "/%00", "/ü", "/16"]
QUERIES = ["", "?", "?sslmode=disable", "?sslmode=nope", "?foo=bar", "?host=/tmp",
           "?connect_timeout=x", "?db=x", "?=", "?&&"]
USERS = ["", "u@", "u:p@", "u:p:q@", ":@", "@", "u:p@x@"]


def url_shaped() -> st.SearchStrategy[str]:
    parts = st.tuples(st.sampled_from(SCHEMES), st.sampled_from(["://", ":/", ":", "//"]),
                      st.sampled_from(USERS), st.sampled_from(HOSTS), st.sampled_from(PORTS),
                      st.sampled_from(PATHS), st.sampled_from(QUERIES))
    return parts.map("".join)


def bootstrap_shaped() -> st.SearchStrategy[str]:
    server = st.tuples(st.sampled_from(["", "PLAINTEXT://", "http://"]),
                       st.sampled_from(HOSTS), st.sampled_from(PORTS),
                       st.sampled_from(["", "/", "/x"])).map("".join)
    return st.lists(server, min_size=1, max_size=3).map(",".join)


JUNK = st.one_of(st.text(max_size=60), url_shaped(), bootstrap_shaped())


def one_line_naming(message: str, setting: str) -> bool:
    return "\n" not in message and setting in message and "Traceback" not in message


@settings(max_examples=300, deadline=None)
@given(setting=st.sampled_from(sorted(SETTINGS)), value=JUNK)
def test_junk_is_accepted_or_refused_in_one_line_naming_the_setting(setting: str,
                                                                     value: str) -> None:
    try:
        loaded = Settings.from_env({setting: value})
    except ConfigError as exc:
        assert one_line_naming(str(exc), setting), str(exc)
        assert exc.code == "config_error"
    else:
        assert value == "" or getattr(loaded, SETTINGS[setting]) == value


@pytest.mark.parametrize(("setting", "value", "says"), [
    ("DECISIONS_DATABASE_URL", "mysql://root:pw@db/shop", "mysql:// is not PostgreSQL"),
    ("DECISIONS_DATABASE_URL", "not-a-url", "not a URL"),
    ("DECISIONS_DATABASE_URL", "postgresql://h:abc/db", "Port could not be cast"),
    ("DECISIONS_DATABASE_URL", "postgresql://u:pw@h/db?foo=1", 'invalid connection option "foo"'),
    # libpq would stop reading at the NUL and connect to the default port instead
    ("DECISIONS_DATABASE_URL", "postgresql://127.0.0.1:1/%00", "a NUL character"),
    ("DECISIONS_REDIS_URL", "http://cache:6379", "http:// is not a Redis URL"),
    ("DECISIONS_REDIS_URL", "redis://cache:70000/0", "Port out of range"),
    ("DECISIONS_KAFKA_BOOTSTRAP", "broker:port", "is not host:port"),
    ("DECISIONS_KAFKA_BOOTSTRAP", "b1:9092,,b2:9092", "an empty server"),
])
def test_named_mistakes(setting: str, value: str, says: str,
                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(setting, value)
        assert main(["users", "list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"decisions: {setting}=") and says in err
    assert err.count("\n") == 1
    assert "pw" not in err  # a password in the URL is never printed


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(user=st.sampled_from(USERS), path=st.sampled_from(PATHS),
       query=st.sampled_from(QUERIES), scheme=st.sampled_from(["postgresql", "postgres"]))
def test_accepted_database_urls_fail_to_connect_in_one_line(user: str, path: str, query: str,
                                                             scheme: str) -> None:
    url = f"{scheme}://{user}127.0.0.1:{closed_port()}{path}{query}"
    try:
        Settings.from_env({"DECISIONS_DATABASE_URL": url})
    except ConfigError:
        return  # refused up front (covered above)
    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(err):
        mp.setenv("DECISIONS_DATABASE_URL", url)
        mp.delenv("DECISIONS_REDIS_URL", raising=False)
        mp.delenv("DECISIONS_KAFKA_BOOTSTRAP", raising=False)
        code = main(["users", "list"])
    assert code == 1, url
    assert one_line_naming(err.getvalue().strip(), "DECISIONS_DATABASE_URL"), err.getvalue()


@settings(max_examples=40, deadline=None)
@given(user=st.sampled_from(USERS), path=st.sampled_from(PATHS),
       query=st.sampled_from(QUERIES), scheme=st.sampled_from(["redis", "rediss"]))
def test_accepted_redis_urls_fail_to_connect_in_one_line(user: str, path: str, query: str,
                                                          scheme: str) -> None:
    url = f"{scheme}://{user}127.0.0.1:{closed_port()}{path}{query}"
    try:
        Settings.from_env({"DECISIONS_REDIS_URL": url})
    except ConfigError:
        return
    with pytest.raises(ServiceUnavailable) as caught:
        check_redis(url)
    assert one_line_naming(str(caught.value), "DECISIONS_REDIS_URL")
