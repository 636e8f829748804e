"""SCAN over a single node or every primary of a cluster, streaming keys."""

from __future__ import annotations

from collections.abc import AsyncIterator

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError, TimeoutError

from wsctl.redis.target import AsyncClient

__all__ = ["scan_keys"]


async def scan_keys(
    client: AsyncClient, match: str, count: int, unreachable: dict[str, str] | None = None
) -> AsyncIterator[str]:
    """SCAN for ``match``; on a cluster, every primary in turn (redis-py's ``scan`` with
    ``target_nodes``). A primary that cannot be reached is skipped and reported in
    ``unreachable`` (node -> reason) instead of failing the whole walk, so a cluster with
    uncovered slots can still be listed and reaped; callers say which nodes were missed.
    Without ``unreachable`` any failure propagates.
    """
    if not isinstance(client, RedisCluster):
        async for key in client.scan_iter(match=match, count=count):
            yield key
        return
    for node in list(client.get_primaries()):
        cursor = 0
        try:
            while True:
                cursors, keys = await client.scan(
                    cursor=cursor, match=match, count=count, target_nodes=node
                )
                for key in keys:
                    yield str(key)
                cursor = int(cursors[node.name]) if isinstance(cursors, dict) else int(cursors)
                if not cursor:
                    break
        except (ConnectionError, TimeoutError, OSError) as exc:
            if unreachable is None:
                raise
            unreachable[node.name] = str(exc)[:200]
