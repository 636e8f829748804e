"""The app's sends while the reply inbox has lost its subscription and cannot subscribe again
(real redis-server, two real gateways, real robots): acknowledged sends wait for it, with every
later message to their robots, and publishes to other robots are not held behind them.

The inbox is kept away with Redis's pub/sub ACL (the reply channels denied, the control
channels allowed), the one way to hold it off while Redis serves every other command: a frozen
Redis (SIGSTOP) does not end a subscription (redis-py's read of a subscribed connection waits
without a deadline; measured: subscribed throughout a 4 s freeze), and every command, a
publish included, waits for the thaw alike."""

from __future__ import annotations

import asyncio

from tests.conftest import Backend, open_test_store
from tests.fleet import running_fleet, wait_for
from tests.robot_clients import frames, registered, robots
from wsctl.gateway.outcomes import SendOutcome
from wsctl.sandbox.redis_servers import RedisServer


async def test_a_publish_is_not_held_behind_sends_waiting_for_the_reply_inbox() -> None:
    with RedisServer() as server:
        backend = Backend("own", {"WSCTL_REDIS_URL": server.url}, single=server)
        async with (
            running_fleet(backend.env) as fleet,
            open_test_store(backend) as store,
        ):
            core = fleet["gw-a"].core
            urls = {"x": fleet["gw-b"].ws_url, "y": fleet["gw-b"].ws_url}
            async with robots(urls) as conns:
                await wait_for(lambda: registered(store, list(urls)))
                try:
                    await store.client.execute_command(
                        "ACL", "SETUSER", "default", "resetchannels", "&ws_ctl:*"
                    )
                    await store.client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
                    await wait_for(lambda: not core.inbox.subscribed)
                    await asyncio.sleep(0.3)  # it tried again, and was refused the channel
                    assert not core.inbox.subscribed
                    acked = asyncio.ensure_future(core.send("x", "a1", timeout=10.0))
                    behind = asyncio.ensure_future(core.publish("x", "p1", timeout=10.0))
                    other = asyncio.ensure_future(core.publish("y", "p2", timeout=10.0))
                    published = await asyncio.wait_for(other, 2.0)
                    assert published.outcome is SendOutcome.PUBLISHED, published
                    assert await frames(conns["y"]) == ["p2"]
                    assert not acked.done() and not behind.done()
                    assert await frames(conns["x"], wait=0.2) == []  # p1 stays behind a1
                finally:
                    await store.client.execute_command("ACL", "SETUSER", "default", "allchannels")
                result = await asyncio.wait_for(acked, 5.0)
                assert result.outcome is SendOutcome.DELIVERED, result
                assert (await asyncio.wait_for(behind, 5.0)).outcome is SendOutcome.PUBLISHED
                assert await frames(conns["x"]) == ["a1", "p1"]
