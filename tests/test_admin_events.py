"""SPEC §16: every admin action is an event in `sidecar:admin-events` — through the API
(actor: the admin key) and through the CLI (actor `cli:<user>`) — and none holds a secret;
`sidecar admin-events tail` reads them back."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from sidecar.storage.embedded import EmbeddedRedis
from tests.adminsupport import admin_events, start_admin
from tests.conftest import ProxyFactory
from tests.helpers import write_config
from tests.keysupport import FAST_KEYS, sidecar_cli


async def test_an_api_action_is_an_event_naming_its_actor_and_no_secret(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis
) -> None:
    admin = await start_admin(start_proxy)
    keeper = await admin.issue("keeper", "sidecar:keys")
    body = {"name": "billing", "scopes": ["orders:read"]}
    async with admin.request("POST", "/admin/v1/keys", keeper.key, json=body) as response:
        assert response.status == 201
        request_id = response.headers["X-Request-Id"]
        made = await response.json()
    events = await admin_events(redis_client)
    created = [event for event in events if event["request_id"] == request_id]
    assert len(created) == 1
    event = created[0]
    assert event["action"] == "key_created"
    assert event["actor"] == {"kind": "key", "name": "keeper", "key_id": keeper.record.key_id}
    assert (event["actor_key_name"], event["actor_key_id"]) == ("keeper", keeper.record.key_id)
    assert event["target"] == "billing"
    assert event["client_ip"] == "127.0.0.1"
    assert event["detail"]["key_id"] == made["id"]
    raw = str(await redis_client.xrange("sidecar:admin-events"))
    for secret in (made["key"], keeper.key):
        assert secret not in raw
        assert secret.split("_")[3][:16] not in raw


@pytest.mark.slow
async def test_cli_actions_are_events_and_admin_events_tail_shows_them(
    tmp_path: Path, redis_server: EmbeddedRedis, redis_client: aioredis.Redis
) -> None:
    config = str(
        write_config(
            tmp_path / "sidecar.yaml",
            {
                "redis": {"url": redis_server.url},
                "keys": FAST_KEYS,
                "audit": {"spool_dir": str(tmp_path / "spool")},
            },
        )
    )
    made = await sidecar_cli(
        "keys", "create", "--name", "ops", "--scope", "sidecar:read", "--json", "--config", config
    )
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)["key"]
    revoked = await sidecar_cli("keys", "revoke", "ops", "--config", config)
    assert revoked.returncode == 0, revoked.stderr
    refused = await sidecar_cli(
        "keys", "create", "--name", "x", "--scope", "sidecar:everything", "--config", config
    )
    assert refused.returncode == 2
    assert "--scope" in refused.stderr
    events = await admin_events(redis_client)
    assert [event["action"] for event in events] == ["key_created", "key_revoked"]
    actor = {"kind": "cli", "name": f"cli:{getpass.getuser()}", "key_id": None}
    assert all(event["actor"] == actor and event["target"] == "ops" for event in events)
    tail = await sidecar_cli("admin-events", "tail", "-n", "5", "--json", "--config", config)
    assert tail.returncode == 0, tail.stderr
    lines = [json.loads(line) for line in tail.stdout.splitlines()]
    assert lines == events
    text = await sidecar_cli("admin-events", "tail", "--config", config)
    assert "key_revoked" in text.stdout
    assert f"by=cli:{getpass.getuser()}" in text.stdout
    for output in (
        tail.stdout,
        text.stdout,
        str(await redis_client.xrange("sidecar:admin-events")),
    ):
        assert key not in output
