"""The `redis.url` forms (pure: no network) and how the settings judge them."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.config import Redis as RedisSettings
from sidecar.config import load_settings
from sidecar.config.redis_urls import SentinelUrl, check_redis_url, parse_sentinel_url, redacted_url
from sidecar.errors import ConfigError
from tests.helpers import write_config


def test_a_sentinel_url_names_the_sentinels_the_master_and_the_database() -> None:
    parsed = parse_sentinel_url(
        "redis+sentinel://app:s%40cret@10.0.0.1:26380,sentinel-b,[::1]:26381/orders/2"
        "?sentinel_password=other"
    )
    assert parsed == SentinelUrl(
        sentinels=(("10.0.0.1", 26380), ("sentinel-b", 26379), ("::1", 26381)),
        master="orders",
        db=2,
        username="app",
        password="s@cret",
        sentinel_password="other",
    )
    assert "s@cret" not in repr(parsed)
    assert "other" not in repr(parsed)


def test_a_sentinel_url_without_credentials_or_database() -> None:
    parsed = parse_sentinel_url("redis+sentinel://127.0.0.1:26379/mymaster")
    assert parsed == SentinelUrl(sentinels=(("127.0.0.1", 26379),), master="mymaster")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+sentinel://127.0.0.1:26379", "must name the master"),
        ("redis+sentinel://127.0.0.1:26379/", "must name the master"),
        ("redis+sentinel://127.0.0.1:26379/m/zero", "must be a number"),
        ("redis+sentinel://127.0.0.1:26379/m/0/extra", "must name the master"),
        ("redis+sentinel://127.0.0.1:99999/m", "port must be a number"),
        ("redis+sentinel://127.0.0.1:x/m", "port must be a number"),
        ("redis+sentinel://127.0.0.1:26379,/m", "needs a host"),
        ("redis+sentinel://127.0.0.1/m?password=x", "unknown option(s) password"),
    ],
)
def test_a_bad_sentinel_url_says_what_is_wrong(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        parse_sentinel_url(url)


@pytest.mark.parametrize(
    ("url", "cluster", "problem"),
    [
        ("http://127.0.0.1:6379", False, "must be a redis://"),
        ("redis://127.0.0.1:7000/3", True, "only database 0"),
        ("unix:///run/redis.sock", True, "redis:// or rediss:// URL of one node"),
        ("redis+sentinel://127.0.0.1/m", True, "not a cluster"),
    ],
)
def test_urls_that_do_not_fit_the_mode(url: str, cluster: bool, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        check_redis_url(url, cluster=cluster)


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "rediss://:pw@cache.internal:6380/1",
        "unix:///run/redis.sock",
        "redis+sentinel://a:26379,b:26379/mymaster/0",
    ],
)
def test_urls_for_one_server_or_sentinel(url: str) -> None:
    check_redis_url(url, cluster=False)


@pytest.mark.parametrize("url", ["redis://127.0.0.1:7000", "rediss://:pw@node:7000/0"])
def test_urls_for_a_cluster(url: str) -> None:
    check_redis_url(url, cluster=True)


@pytest.mark.parametrize(
    ("redis", "problem"),
    [
        (
            {"url": "redis://:hunter2@node:7000/3", "cluster": True},
            "redis.url: a Redis Cluster has only database 0 (redis.cluster is true)",
        ),
        (
            {"url": "redis+sentinel://:hunter2@s1:26379"},
            "redis.url: must name the master: redis+sentinel://host:port[,host:port]/master[/db]",
        ),
    ],
)
def test_the_configuration_names_a_bad_redis_url_without_echoing_it(
    tmp_path: Path, redis: dict[str, object], problem: str
) -> None:
    path = write_config(tmp_path / "sidecar.yaml", {"redis": redis})
    with pytest.raises(ConfigError) as caught:
        load_settings(path, complete=False)
    assert caught.value.problems == [problem]


def test_settings_accept_a_multi_host_sentinel_url() -> None:
    url = "redis+sentinel://:pw@s1:26379,s2:26379/mymaster/0"
    assert RedisSettings(url=url).url == url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:pw@host:6379/0", "redis://user:***@host:6379/0"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        (
            "redis+sentinel://:pw@s1:26379,s2:26379/m/0?sentinel_password=spw",
            "redis+sentinel://:***@s1:26379,s2:26379/m/0?sentinel_password=***",
        ),
    ],
)
def test_redacted_urls_keep_everything_but_the_passwords(url: str, shown: str) -> None:
    assert redacted_url(url) == shown
