"""The health port: `/healthz`, `/readyz`, `/metrics`, and nothing else. Plain HTTP, no HSTS."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from sidecar.metrics import Metrics

# A check answers None when healthy, else a short reason an operator can act on.
CheckFn = Callable[[], Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class ReadinessCheck:
    """One named `/readyz` check: `run` returns None when ready, else why not.

    A check that is not `gating` is shown in the answer's `checks` but never makes `/readyz`
    fail: it reports on something the process serves without (the archive, whose backlog
    waits in Redis), and a load balancer must not take every replica out for it."""

    name: str
    run: CheckFn
    gating: bool = True


async def readiness(checks: Sequence[ReadinessCheck]) -> tuple[list[str], dict[str, str]]:
    """Run every check (all of them, so the answer names each failing one): the gating checks
    that fail, and every check's result."""
    results: dict[str, str] = {}
    failing: list[str] = []
    for check in checks:
        try:
            problem = await check.run()
        except Exception as exc:  # a check that blows up is a failing check, not a 500
            problem = f"check failed: {type(exc).__name__}"
        results[check.name] = "ok" if problem is None else problem
        if problem is not None and check.gating:
            failing.append(check.name)
    return sorted(failing), results


def create_health_app(checks: Sequence[ReadinessCheck], metrics: Metrics) -> web.Application:
    """The health port's app: `/healthz`, `/readyz` (running `checks`) and `/metrics`."""

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        failing, results = await readiness(checks)
        body = {"status": "not ready" if failing else "ready", "checks": results}
        if failing:
            body["failing"] = failing  # type: ignore[assignment]
        return web.json_response(body, status=503 if failing else 200)

    async def metrics_page(_request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    return app
