"""Cluster facts: the topology from CLUSTER NODES (pure), keys per primary, slot-map refresh."""

from __future__ import annotations

from typing import Any

from redis.asyncio.cluster import RedisCluster

from wsctl.redis.scan import scan_keys
from wsctl.redis.target import AsyncClient

__all__ = [
    "CLUSTER_SLOTS",
    "cluster_facts",
    "cluster_topology",
    "keys_per_node",
    "refresh_topology",
]

CLUSTER_SLOTS = 16384


def _ranges(slots: list[int]) -> list[str]:
    """``[0, 1, 2, 7]`` -> ``["0-2", "7"]``."""
    out: list[str] = []
    start = prev = None
    for slot in slots:
        if start is None:
            start = prev = slot
        elif slot == (prev or 0) + 1:
            prev = slot
        else:
            out.append(f"{start}-{prev}" if start != prev else str(start))
            start = prev = slot
    if start is not None:
        out.append(f"{start}-{prev}" if start != prev else str(start))
    return out


def cluster_topology(nodes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Primaries (with their replicas and slot counts) and uncovered slots from a parsed
    CLUSTER NODES reply. Pure."""
    covered = bytearray(CLUSTER_SLOTS)
    primaries: dict[str, dict[str, Any]] = {}
    by_id: dict[str, str] = {}
    replicas: list[tuple[str, str, bool]] = []
    for address, info in nodes.items():
        flags = str(info.get("flags", ""))
        failed = "fail" in flags.split(",") or not info.get("connected", True)
        if "master" in flags:
            slots = 0
            for pair in info.get("slots", []):
                first, last = int(pair[0]), int(pair[-1])
                if not failed:  # a failed primary's slots are not served until a failover
                    for slot in range(first, last + 1):
                        covered[slot] = 1
                slots += last - first + 1
            primaries[address] = {
                "node": address,
                "slots": slots,
                "failed": failed,
                "replicas": [],
            }
            by_id[str(info.get("node_id", ""))] = address
        elif "slave" in flags or "replica" in flags:
            replicas.append((address, str(info.get("master_id", "")), failed))
    for address, master_id, failed in replicas:
        owner = by_id.get(master_id)
        if owner is not None:
            primaries[owner]["replicas"].append({"node": address, "failed": failed})
    uncovered = [slot for slot in range(CLUSTER_SLOTS) if not covered[slot]]
    return {
        "primaries": sorted(primaries.values(), key=lambda p: str(p["node"])),
        "replica_count": len(replicas),
        "uncovered_slots": len(uncovered),
        "uncovered_ranges": _ranges(uncovered)[:20],
    }


async def cluster_facts(client: AsyncClient) -> dict[str, Any] | None:
    """Topology of a cluster (None for a single node)."""
    if not isinstance(client, RedisCluster):
        return None
    nodes = await client.cluster_nodes()
    return cluster_topology(nodes)


async def keys_per_node(client: AsyncClient, match: str, count: int = 1000) -> dict[str, int]:
    """How many keys match on each primary (a single node reports itself). Streams SCAN."""
    if not isinstance(client, RedisCluster):
        kwargs = client.connection_pool.connection_kwargs
        name = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        total = 0
        async for _ in client.scan_iter(match=match, count=count):
            total += 1
        return {str(name): total}
    counts: dict[str, int] = {node.name: 0 for node in client.get_primaries()}
    async for key in scan_keys(client, match, count, unreachable={}):
        counts[client.nodes_manager.get_node_from_slot(client.keyslot(key)).name] += 1
    return counts


async def refresh_topology(client: AsyncClient) -> None:
    """Re-read the cluster's slot map (after a node failure); a no-op on a single node."""
    if isinstance(client, RedisCluster):
        await client.nodes_manager.initialize()
