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
    """One named `/readyz` check: `run` returns None when ready, else why not."""

    name: str
    run: CheckFn


async def readiness(checks: Sequence[ReadinessCheck]) -> tuple[bool, dict[str, str]]:
    """Run every check (all of them, so the answer names each failing one)."""
    results: dict[str, str] = {}
    for check in checks:
        try:
            problem = await check.run()
        except Exception as exc:  # a check that blows up is a failing check, not a 500
            problem = f"check failed: {type(exc).__name__}"
        results[check.name] = "ok" if problem is None else problem
    return all(result == "ok" for result in results.values()), results


def create_health_app(checks: Sequence[ReadinessCheck], metrics: Metrics) -> web.Application:
    """The health port's app: `/healthz`, `/readyz` (running `checks`) and `/metrics`."""

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        ready, results = await readiness(checks)
        failing = sorted(name for name, result in results.items() if result != "ok")
        body = {"status": "ready" if ready else "not ready", "checks": results}
        if failing:
            body["failing"] = failing  # type: ignore[assignment]
        return web.json_response(body, status=200 if ready else 503)

    async def metrics_page(_request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    return app
