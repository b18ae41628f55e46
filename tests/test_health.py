"""SPEC §3 and §11: the plain-HTTP health port serves /healthz, /readyz, /metrics, nothing else.

`proxy.session` is used for plain HTTP here: its TLS settings only apply to https URLs.
"""

from __future__ import annotations

import pytest

from tests.conftest import Proxy, ProxyFactory
from tests.helpers import free_port

# SPEC §11 names these; more checks may come, and each must be named in the answer too.
CHECKS = {"config", "certificate", "redis", "draining"}


async def test_healthz_answers_200(proxy: Proxy) -> None:
    async with proxy.session.get(proxy.health_url + "/healthz") as response:
        assert response.status == 200


async def test_readyz_is_200_with_every_check_ok(proxy: Proxy) -> None:
    async with proxy.session.get(proxy.health_url + "/readyz") as response:
        assert response.status == 200
        document = await response.json()
    assert set(document["checks"]) >= CHECKS
    assert set(document["checks"].values()) == {"ok"}


async def test_readyz_is_503_naming_redis_when_redis_is_down(start_proxy: ProxyFactory) -> None:
    proxy: Proxy = await start_proxy(
        redis={"url": f"redis://127.0.0.1:{free_port()}/0", "timeout_s": 0.2}
    )
    async with proxy.session.get(proxy.health_url + "/readyz") as response:
        assert response.status == 503
        document = await response.json()
    # Only what is actually broken is reported as failing.
    assert set(document["checks"]) >= CHECKS
    failing = {name for name, result in document["checks"].items() if result != "ok"}
    assert failing == {"redis"}
    assert document["failing"] == ["redis"]


async def test_metrics_count_requests_in_prometheus_text(proxy: Proxy) -> None:
    async with proxy.request("GET", "/public/counted") as response:
        assert response.status == 200
    async with proxy.session.get(proxy.health_url + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    assert "# TYPE sidecar_requests_total counter" in text
    assert 'sidecar_requests_total{route="/public/**",status="200"} 1.0' in text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/public/x"),
        ("GET", "/healthz/extra"),
        ("GET", "/metrics.txt"),
        ("GET", "/admin"),
    ],
)
async def test_other_paths_on_the_health_port_are_404(proxy: Proxy, method: str, path: str) -> None:
    async with proxy.session.request(method, proxy.health_url + path) as response:
        assert response.status == 404


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/nothing-here"])
async def test_health_port_sends_no_hsts(proxy: Proxy, path: str) -> None:
    async with proxy.session.get(proxy.health_url + path) as response:
        assert response.status in (200, 404)
        assert "Strict-Transport-Security" not in response.headers
