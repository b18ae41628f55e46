"""The Audit log pages over real TLS: a record's bodies side by side only for a key with
`sidecar:audit`; a `sidecar:read` session sees the record's metadata and no body."""

from __future__ import annotations

import ssl

from sidecar.keys.scopes import AUDIT, READ
from tests.authsupport import call
from tests.conftest import ProxyFactory
from tests.dashboardsupport import start_dashboard
from tests.helpers import wait_until

SECRET_BODY = "body-only-an-auditor-sees"


async def test_bodies_only_with_the_audit_scope(
    start_proxy: ProxyFactory, client_ssl: ssl.SSLContext
) -> None:
    dashboard = await start_dashboard(start_proxy, client_ssl)
    orders = await dashboard.key("audit-orders", "orders:read", "orders:write")
    posted = await call(
        dashboard.proxy, "/v1/orders/2", key=orders, method="POST", json={"note": SECRET_BODY}
    )
    assert posted.status == 200
    auditor, reader = dashboard.browser(), dashboard.browser()
    try:
        await auditor.sign_in(await dashboard.key("audit-auditor", READ, AUDIT))
        await reader.sign_in(await dashboard.key("audit-reader", READ))

        async def listed() -> bool:
            return posted.request_id in (await auditor.get("/audit?method=POST")).text

        await wait_until(listed, within=5)  # the writers batch: kept soon, not at once
        whole = await auditor.get(f"/audit/{posted.request_id}")
        assert whole.status == 200
        assert SECRET_BODY in whole.text
        assert "Raw body" in whole.text
        assert "Mapped body" in whole.text
        assert "Response body" in whole.text
        metadata_only = await reader.get(f"/audit/{posted.request_id}")
        assert metadata_only.status == 200
        assert SECRET_BODY not in metadata_only.text
        assert "POST" in metadata_only.text
        assert SECRET_BODY not in (await reader.get("/audit")).text
        assert orders not in whole.text
    finally:
        await auditor.session.close()
        await reader.session.close()
