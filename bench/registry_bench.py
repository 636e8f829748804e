"""Registry benchmarks: wsctl versus the script a user would write by hand, in the same run.

* list:  `wsctl list connections -o jsonl` vs SCAN + pipelined HGETALL + JSON lines (the floor);
         peak RSS of wsctl at N/10 and N entries (flat memory means streaming works).
* reap:  `wsctl reap` (atomic compare-and-delete + fsync'ed backup) over N entries, half stale,
         vs a naive SCAN + pipelined HGET + pipelined DEL (unsafe, no backup).
* --cluster also runs both on a real 3-master/3-replica cluster and prints cluster/single.

Servers are started from the bundled redis-server on 127.0.0.1 and stopped at the end.
Each measurement is run --repeat times (default 3), wsctl and its floor alternating; the
medians are compared.

Run: python bench/registry_bench.py [--entries 200000] [--cluster] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

# The hand-written floors share how they connect: url=... or nodes=host:port,...
FLOOR_CONNECT = r"""
import json, sys, redis
from datetime import datetime
from redis.cluster import RedisCluster, ClusterNode
env = dict(a.split("=", 1) for a in sys.argv[1:])
if env.get("nodes"):
    r = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", int(p.split(":")[1])) for p in env["nodes"].split(",")], decode_responses=True)
else:
    r = redis.Redis.from_url(env["url"], decode_responses=True)
"""

# ...and how they walk the registry: SCAN in batches of 1000, flush() per batch.
FLOOR_WALK = r"""
for key in r.scan_iter(match="ws_conn:*", count=1000):
    batch.append(key)
    if len(batch) >= 1000:
        flush(); batch = []
if batch:
    flush()
"""

FLOOR_LIST = (
    FLOOR_CONNECT
    + r"""
out = sys.stdout
batch = []
def flush():
    pipe = r.pipeline(transaction=False)
    for k in batch:
        pipe.hgetall(k)
    for k, v in zip(batch, pipe.execute()):
        out.write(json.dumps({"key": k, **v}) + "\n")
"""
    + FLOOR_WALK
)

FLOOR_REAP = (
    FLOOR_CONNECT
    + r"""
now = datetime.now()
batch = []
deleted = 0
def flush():
    global deleted
    pipe = r.pipeline(transaction=False)
    for k in batch:
        pipe.hget(k, "last_heartbeat")
    stale = [k for k, hb in zip(batch, pipe.execute()) if hb and (now - datetime.fromisoformat(hb)).total_seconds() > 90]
    pipe = r.pipeline(transaction=False)
    for k in stale:
        pipe.delete(k)
    deleted += sum(pipe.execute())
"""
    + FLOOR_WALK
    + r"""
print(deleted, file=sys.stderr)
"""
)

RSS_WRAPPER = r"""
import resource, sys
from wsctl.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
finally:
    sys.stderr.write("maxrss_kb=%d\n" % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def populate(client: object, n: int, stale_fraction: float) -> None:
    """Seed-style entries (naive local ISO, every timestamp distinct as the seed's code writes
    them: the worst case for wsctl's timestamp caches), written with pipelines."""
    now = datetime.now()
    pipe = client.pipeline(transaction=False)  # type: ignore[attr-defined]
    cutoff = int(n * stale_fraction)
    for i in range(n):
        age = timedelta(seconds=600 if i < cutoff else 0, microseconds=i)
        hb = (now - age).isoformat()
        pipe.hset(
            f"ws_conn:robot-{i:07d}",
            mapping={
                "instance_id": f"gw-{i % 4}",
                "robot_id": f"robot-{i:07d}",
                "connected_at": hb,
                "last_heartbeat": hb,
                "status": "connected",
                "websocket_state": "active",
            },
        )
        if i % 5000 == 4999:
            pipe.execute()
            pipe = client.pipeline(transaction=False)  # type: ignore[attr-defined]
    pipe.execute()


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True
    )
    return time.perf_counter() - start, done.stderr


def versus(keys: int, t_wsctl: float, floor_name: str, t_floor: float) -> str:
    """``wsctl 2.45s (81540 keys/s), floor 2.39s (83823 keys/s), ratio 1.03``."""
    return (
        f"wsctl {t_wsctl:6.2f}s ({keys / t_wsctl:8.0f} keys/s), "
        f"{floor_name} {t_floor:6.2f}s ({keys / t_floor:8.0f} keys/s), "
        f"ratio {t_wsctl / t_floor:4.2f}"
    )


def wsctl_env(target: dict[str, str], state: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WSCTL_", "REDIS_"))}
    env["WSCTL_STATE_DIR"] = state
    if "nodes" in target:
        env.update({"REDIS_USE_CLUSTER": "true", "REDIS_NODES": target["nodes"]})
    else:
        env["WSCTL_REDIS_URL"] = target["url"]
    return env


def flush(client: object, cluster: bool) -> None:
    if cluster:
        client.flushall(target_nodes="primaries")  # type: ignore[attr-defined]
    else:
        client.flushall()  # type: ignore[attr-defined]


def run_suite(
    name: str,
    client: object,
    target: dict[str, str],
    n: int,
    cluster: bool,
    state: str,
    repeat: int,
    only: tuple[str, ...] = ("list", "reap"),
    reap_args: tuple[str, ...] = (),
) -> dict[str, float]:
    env = wsctl_env(target, state)
    args = [f"{k}={v}" for k, v in target.items()]
    results: dict[str, float] = {}

    # list, at N/10 and N, with peak RSS; wsctl and the floor alternate, medians are compared
    for size in (n // 10, n) if "list" in only else ():
        flush(client, cluster)
        populate(client, size, 0.5)
        wsctl_times, floor_times, rss = [], [], 0
        for _ in range(repeat):
            t, err = timed(
                [sys.executable, "-c", RSS_WRAPPER, "list", "connections", "-o", "jsonl"], env
            )
            wsctl_times.append(t)
            rss = max(rss, int(err.strip().split("maxrss_kb=")[-1]))
            floor_times.append(timed([sys.executable, "-c", FLOOR_LIST, *args], env)[0])
        t_wsctl, t_floor = statistics.median(wsctl_times), statistics.median(floor_times)
        print(
            f"[{name}] list {size:>7} entries: {versus(size, t_wsctl, 'floor', t_floor)}, "
            f"wsctl peak RSS {rss / 1024:6.1f} MiB (medians of {repeat})"
        )
        results[f"list_{size}_ratio"] = t_wsctl / t_floor
        results[f"list_{size}_s"] = t_wsctl
        results[f"list_{size}_rss_mib"] = rss / 1024
    if "list" in only:
        print(
            f"[{name}] list peak RSS {n} vs {n // 10}: "
            f"{results[f'list_{n}_rss_mib'] / results[f'list_{n // 10}_rss_mib']:.2f}x (1.0 = flat)"
        )

    if "reap" not in only:
        return results
    # reap: the same data for both, populated afresh before every run
    backup = Path(state) / "bench-backup.jsonl"
    reap_times, naive_times = [], []
    for _ in range(repeat):
        flush(client, cluster)
        populate(client, n, 0.5)
        reap_times.append(
            timed(
                [
                    *(sys.executable, "-m", "wsctl", "reap", "--backup", str(backup)),
                    *("-o", "json", *reap_args),
                ],
                env,
            )[0]
        )
        backup.unlink(missing_ok=True)
        flush(client, cluster)
        populate(client, n, 0.5)
        naive_times.append(timed([sys.executable, "-c", FLOOR_REAP, *args], env)[0])
    t_reap, t_naive = statistics.median(reap_times), statistics.median(naive_times)
    print(
        f"[{name}] reap {n} entries (half stale): {versus(n, t_reap, 'naive', t_naive)} "
        f"(target <= 1.5; wsctl is atomic and writes a backup; medians of {repeat})"
    )
    results["reap_ratio"] = t_reap / t_naive
    results["reap_s"] = t_reap
    flush(client, cluster)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--cluster", action="store_true", help="Also run on a 3+3 cluster.")
    parser.add_argument(
        "--repeat", type=int, default=3, help="Runs per measurement; medians are compared."
    )
    parser.add_argument("--only", choices=("list", "reap"), help="Run one of the two measurements.")
    parser.add_argument(
        "--reap-args", default="", help="Extra arguments for `wsctl reap` (split on spaces)."
    )
    args = parser.parse_args()
    only = (args.only,) if args.only else ("list", "reap")
    reap_args = tuple(args.reap_args.split())

    import redis
    from redis.cluster import ClusterNode, RedisCluster

    from wsctl.sandbox.redis_servers import RedisClusterProcesses, RedisServer

    with tempfile.TemporaryDirectory() as state:
        with RedisServer() as server:
            client = redis.Redis(port=server.port, decode_responses=True)
            single = run_suite(
                "single",
                client,
                {"url": server.url},
                args.entries,
                False,
                state,
                args.repeat,
                only,
                reap_args,
            )
            client.close()
        if args.cluster:
            with RedisClusterProcesses() as cluster:
                cclient = RedisCluster(
                    startup_nodes=[ClusterNode("127.0.0.1", n.port) for n in cluster.nodes],
                    decode_responses=True,
                )
                multi = run_suite(
                    "cluster",
                    cclient,
                    {"nodes": cluster.startup},
                    args.entries,
                    True,
                    state,
                    args.repeat,
                    only,
                    reap_args,
                )
                cclient.close()
            for key in (f"list_{args.entries}_s", "reap_s"):
                if key in multi and key in single:
                    print(f"cluster/single {key}: {multi[key] / single[key]:.2f}")
        print(json.dumps({"single": single}, indent=None))


if __name__ == "__main__":
    main()
