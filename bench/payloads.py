"""The scenarios and their bodies: a POST of 1 KiB JSON answered with 1 KiB JSON, and a
small GET answered with a small JSON document.

The request body passes the sidecar's data guard untouched (no card-like digit runs, no
field named like a credential), so the guard inspects it but never rewrites it: the
benchmark measures the inspection, not a rewrite.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

ROUTE_PATH = "/v1/orders/bench"
GET_PATH = "/v1/orders/123"
POST, GET = "post", "get"


@dataclass(frozen=True, slots=True)
class Scenario:
    """One kind of request every target is measured with."""

    name: str
    method: str
    path: str
    body: bytes | None  # the request body; None: none sent


def _order() -> dict[str, object]:
    return {
        "order_ref": "ord-2026-bench",
        "customer": {"name": "Ada Lovelace", "email": "ada@example.test", "tier": "gold"},
        "shipping": {
            "street": "12 Analytical Engine Lane",
            "city": "London",
            "postcode": "NW1 6XE",
            "country": "GB",
        },
        "items": [
            {"sku": f"SKU-{n:03d}", "qty": n % 3 + 1, "price_cents": 1000 + n, "gift": n % 2 == 0}
            for n in range(8)
        ],
        "notes": "leave at the door; ring twice",
        "currency": "GBP",
    }


def _pad_to(document: dict[str, object], size: int) -> bytes:
    """Pad with a filler string so the encoded document is exactly `size` bytes."""
    document["filler"] = ""
    base = len(json.dumps(document, separators=(",", ":")).encode())
    document["filler"] = "x" * max(0, size - base)
    return json.dumps(document, separators=(",", ":")).encode()


REQUEST_BODY = _pad_to(_order(), 1024)
RESPONSE_BODY = _pad_to({"status": "accepted", "order": _order()}, 1024)
# The upstream's answer to a GET: a small order, as a typical read endpoint returns.
SMALL_RESPONSE_BODY = json.dumps(
    {"order_ref": "ord-123", "status": "shipped", "total_cents": 8036, "currency": "GBP"},
    separators=(",", ":"),
).encode()

SCENARIOS = {
    POST: Scenario(POST, "POST", ROUTE_PATH, REQUEST_BODY),
    GET: Scenario(GET, "GET", GET_PATH, None),
}
