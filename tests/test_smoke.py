from __future__ import annotations

from tests.conftest import Proxy
from tests.upstream import UpstreamServer


async def test_public_route_is_forwarded_with_security_headers(
    proxy: Proxy, upstream: UpstreamServer
) -> None:
    async with proxy.request("GET", "/public/hello?a=1") as response:
        assert response.status == 200
        body = await response.json()
        assert response.headers["Strict-Transport-Security"].startswith("max-age=31536000")
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Request-Id"]
        assert response.headers["X-Upstream"] == "yes"
        assert "X-Hop" not in response.headers
    assert body["path"] == "/public/hello?a=1"
    assert upstream.seen[0].headers["X-Forwarded-Proto"] == "https"
