"""One ``simulate`` run's state and what its phases share: the robots and their swarms,
the messages each robot is expected to get, the replies counted on the run's reply channel,
Redis operations retried through failovers, the SLO metrics and the clean-up."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any

from redis.exceptions import RedisClusterException, RedisError

from wsctl.ops.compat import Participation, classify, explain, writes_conn_id
from wsctl.ops.deployment import Deployment
from wsctl.ops.drain import undrain_instance
from wsctl.ops.histogram import Histogram
from wsctl.ops.simulate.options import Progress, SimulateOptions
from wsctl.ops.simulate.report import Phase, PhaseSkipped, SimulateReport
from wsctl.ops.simulate.robots import ProcessSwarm, RobotSwarm, make_message
from wsctl.protocol.batch import (
    BATCH_VERSION,
    Batch,
    BatchReply,
    Item,
    decode_any_reply,
    pack_batch,
)
from wsctl.protocol.envelopes import Envelope, Op, ProtocolError, encode
from wsctl.registry.instances import liveness
from wsctl.registry.model import Entry, utcnow
from wsctl.registry.store import DeleteOutcome
from wsctl.tasks import settle, wait_within

__all__ = [
    "NOT_SPEAKING",
    "PUBLISH_BATCH",
    "RETRY_ATTEMPTS",
    "RETRY_DELAY",
    "Simulation",
]

PUBLISH_BATCH = 500
# paced sends (--rate) go out in this many steps per second: small bursts, low queueing
PACING_STEPS = 200
RETRY_ATTEMPTS = 60
RETRY_DELAY = 0.25


# Instances whose robots the deliver phase skips: they do not take part in the control protocol
# (robots of this run connected to them, so they are up). An instance with a fresh liveness
# record that does not listen is a wsctl-protocol gateway in trouble: deliver checks it, and fails.
NOT_SPEAKING = frozenset({Participation.NO_CONTROL_PROTOCOL, Participation.DOWN_OR_UNKNOWN})


class _Replies:
    """Counts replies on the run's reply channel (subscribed before anything is sent)."""

    def __init__(self, store: Deployment, channel: str) -> None:
        self.store = store
        self.channel = channel
        self.status: dict[str, str] = {}
        self.reasons: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._arrived = asyncio.Event()  # set whenever a reply arrives

    async def arrival(self, timeout: float) -> None:
        """Wait until a reply arrives (or ``timeout`` seconds pass, whichever first)."""
        self._arrived.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._arrived.wait()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen())
        await wait_within(self._ready.wait(), 10)

    async def _listen(self) -> None:
        def state(subscribed: bool, _: BaseException | None) -> None:
            if subscribed:
                self._ready.set()

        async for data in self.store.subscription(self.channel, state):
            self._arrived.set()
            with contextlib.suppress(ProtocolError):
                reply = decode_any_reply(data)
                if isinstance(reply, BatchReply):
                    # items are keyed "{batch id}:{item id}", as single replies to items
                    # forwarded to a version-1 owner are
                    prefix = reply.id + ":"
                    for ident in reply.delivered:
                        self.status[prefix + ident] = "delivered"
                    for failed in reply.failed:
                        self.status[prefix + failed.id] = failed.status.value
                        if failed.reason:
                            self.reasons[failed.reason[:80]] += 1
                    continue
                self.status[reply.id] = reply.status.value
                if reply.reason:
                    self.reasons[reply.reason[:80]] += 1

    async def stop(self) -> None:
        if self._task is not None:
            await settle(self._task)


class Simulation:
    """One run's state (robots, swarms, expected messages, the report) and its phases.

    Use :func:`wsctl.ops.simulate.run.simulate`, which validates the options first."""

    def __init__(
        self, store: Deployment, options: SimulateOptions, progress: Progress | None
    ) -> None:
        self.store = store
        self.options = options
        self.progress = progress or (lambda phase, text: None)
        self.run_id = uuid.uuid4().hex[:8]
        self.robot_ids = [f"sim-{self.run_id}-{n}" for n in range(options.robots)]
        self.swarms: list[RobotSwarm | ProcessSwarm] = []
        self.swarm_of: dict[str, int] = {}
        self.url_of: dict[str, str] = {}
        self.instance_of_url: dict[str, str] = {}
        self.expected: dict[str, set[int]] = {r: set() for r in self.robot_ids}
        self.replies = _Replies(store, store.keys.reply_channel(f"sim-{self.run_id}"))
        self.report = SimulateReport(self.run_id, options.robots, list(options.gateways))
        self.rng = random.Random(self.run_id)
        self.next_seq: dict[str, int] = {}
        self.redis_errors = 0
        self.unsent = 0
        # instances that do not listen on their control channel -> why (found before deliver)
        self.not_listening: dict[str, str] = {}
        self.participation: dict[str, Participation] = {}
        self.speaks_batches: set[str] = set()  # instances whose liveness record says protocol 2
        self.seen_entries: dict[str, Entry] = {}
        self.chaos: dict[str, Any] = {}
        self.drained: str | None = None  # the instance this run drained (undrained at the end)

    # ---------------------------------------------------------------- helpers
    async def stats(self) -> dict[str, Any]:
        """Every swarm's robots, connect and latency histograms and failures, merged."""
        merged: dict[str, Any] = {
            "robots": {},
            "connect": Histogram(),
            "latency": Histogram(),
            "last_at": 0.0,
        }
        failures: dict[str, str] = {}
        failed = 0
        for swarm in self.swarms:
            part = await swarm.snapshot()
            merged["robots"].update(part["robots"])
            merged["connect"].merge(Histogram.from_json(part["connect"]))
            merged["latency"].merge(Histogram.from_json(part["latency"]))
            failures.update(part["connect_failures"])
            merged["last_at"] = max(merged["last_at"], float(part.get("last_at", 0.0)))
            failed += part["connect_failed"]
        merged["connect_failures"] = failures
        merged["connect_failed"] = failed
        return merged

    async def retrying(self, make: Callable[[], Any], what: str) -> Any:
        """Run a Redis operation, retrying through failovers (bounded: about 15 s)."""
        last: BaseException | None = None
        for _ in range(RETRY_ATTEMPTS):
            try:
                return await make()
            except (RedisError, RedisClusterException, OSError) as exc:
                last = exc
                self.redis_errors += 1
                # a refresh that fails too is one more failure the next attempt meets
                with contextlib.suppress(Exception):
                    await self.store.refresh_topology()
                await asyncio.sleep(RETRY_DELAY)
        raise RuntimeError(f"{what}: Redis kept failing: {last}") from last

    async def entries(self) -> dict[str, Entry]:
        """The run's robots' registry entries by robot id (read in chunks, retried)."""
        found: dict[str, Entry] = {}
        keys = [self.store.keys.conn_key(r) for r in self.robot_ids]
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            for entry in await self.retrying(partial(self.store.read_keys, chunk), "read"):
                found[entry.robot_id] = entry
        return found

    async def publish_messages(
        self, sends: list[tuple[str, str, int]], rate: float = 0.0
    ) -> list[str]:
        """Publish (robot_id, via_instance, seq) messages in pipelines; returns the keys their
        replies come back under.

        Each message is stamped with its send time as it is published. Consecutive messages
        for one instance that speaks batches go in one batch envelope (protocol v2; key
        ``{batch id}:{item id}``), others as single envelopes (key: the envelope id). With
        ``rate`` > 0, at most that many per second (in PACING_STEPS steps a second); else all at once.
        """
        ids: list[str] = []
        step = PUBLISH_BATCH if rate <= 0 else max(1, min(PUBLISH_BATCH, int(rate / PACING_STEPS)))
        started = time.perf_counter()
        origin = f"simulate-{self.run_id}"
        for start in range(0, len(sends), step):
            if rate > 0:
                delay = started + start / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            batch: list[tuple[str, str]] = []
            groups: dict[str, list[Item]] = {}
            for robot_id, via, seq in sends[start : start + step]:
                message = make_message(self.run_id, seq, self.options.payload_bytes)
                if via in self.speaks_batches:
                    items = groups.setdefault(via, [])
                    items.append(Item(str(len(items)), robot_id, message))
                    continue
                envelope = Envelope(
                    op=Op.SEND,
                    robot_id=robot_id,
                    message=message,
                    reply_to=self.replies.channel,
                    origin=origin,
                )
                ids.append(envelope.id)
                batch.append((self.store.keys.control_channel(via), encode(envelope)))
            for via, items in groups.items():
                envelope_batch = Batch(
                    items=tuple(items), reply_to=self.replies.channel, origin=origin
                )
                ids.extend(f"{envelope_batch.id}:{item.id}" for item in items)
                # large payloads: the batch in parts that each fit one message (an item of a
                # message within 1 MiB always fits: none is left over)
                packed, _ = pack_batch(envelope_batch)
                channel = self.store.keys.control_channel(via)
                batch.extend((channel, text) for _, text in packed)
            try:
                await self.retrying(partial(self.store.publish_many, batch), "publish")
            except RuntimeError:
                self.unsent += len(batch)  # counted as lost: the run goes on
        return ids

    def expect_seq(self, robot_id: str) -> int:
        """The next message number for a robot, recorded as expected."""
        seq = self.next_seq.get(robot_id, 0)
        self.next_seq[robot_id] = seq + 1
        self.expected[robot_id].add(seq)
        return seq

    async def phase(self, name: str, body: Callable[[], Any]) -> Phase:
        """Run one phase, report its progress and add its result to the report: a phase that
        raises fails (or is skipped, for :class:`PhaseSkipped`) and the run goes on."""
        self.progress(name, "running")
        started = time.perf_counter()
        skipped = False
        try:
            ok, detail, metrics = await body()
        except PhaseSkipped as exc:
            ok, detail, metrics, skipped = True, str(exc), {}, True
        except Exception as exc:  # a failed phase is a FAILED line of the report; the run goes on
            ok, detail, metrics = False, f"{type(exc).__name__}: {exc}"[:300], {}
        phase = Phase(name, ok, detail, time.perf_counter() - started, metrics, skipped)
        self.report.phases.append(phase)
        self.progress(name, ("skipped: " if skipped else "ok: " if ok else "FAILED: ") + detail)
        return phase

    async def check_listeners(self) -> None:
        """Find the instances of this run that nobody listens for on their control channel,
        and what kind they are (see :mod:`wsctl.ops.compat`), before anything is sent."""
        keys = self.store.keys
        conn_ids = writes_conn_id(self.seen_entries.values())
        now = utcnow()
        for instance_id in sorted(set(self.instance_of_url.values())):
            listening = await self.retrying(
                partial(self.store.is_listening, instance_id), "listeners"
            )
            record = await self.retrying(
                partial(self.store.instance_record, instance_id), "liveness records"
            )
            state = liveness(record, now, self.options.liveness_timeout)
            if record is not None and record.protocol >= BATCH_VERSION:
                self.speaks_batches.add(instance_id)
            kind = classify(listening, state, conn_ids.get(instance_id))
            self.participation[instance_id] = kind
            if kind in NOT_SPEAKING:
                self.not_listening[instance_id] = explain(
                    instance_id, keys.control_channel(instance_id), kind
                )

    def not_listening_text(self) -> str:
        """The instances that do not listen on their control channel, for a phase's detail."""
        urls = {i: u for u, i in self.instance_of_url.items()}
        names = ", ".join(f"{i} ({urls.get(i, '?')})" for i in self.not_listening)
        first = next(iter(self.not_listening.values()), "")
        count = len(self.not_listening)
        return f"{count} instance(s) do not listen on their control channel: {names}; e.g. {first}"

    async def swarm_parts(self) -> list[dict[str, Any]]:
        """Each swarm's own snapshot (robots, histograms), unmerged."""
        return [await swarm.snapshot() for swarm in self.swarms]

    def slo_metrics(self) -> dict[str, float]:
        """The metrics SLOs are judged on (latency percentiles, lost, delivered_pct...);
        a value that was not measured is absent, so an SLO on it fails rather than passes."""
        metrics: dict[str, float] = {}
        # a latency of nothing measured is unknown, not 0 ms (an SLO on it then fails)
        for key in ("p50", "p90", "p99", "max"):
            if key in self.report.latency_ms and self.report.latency_ms.get("count"):
                metrics[key] = float(self.report.latency_ms[key])
            if key in self.report.connect_ms and self.report.connect_ms.get("count"):
                metrics[f"connect_{key}"] = float(self.report.connect_ms[key])
        deliver = next((p for p in self.report.phases if p.name == "deliver"), None)
        if deliver is not None and deliver.metrics:
            sent = deliver.metrics["sent"] or 1
            metrics["lost"] = deliver.metrics["lost"]
            metrics["rejected"] = deliver.metrics.get("rejected", 0)
            metrics["duplicated"] = deliver.metrics["duplicated"]
            metrics["out_of_order"] = deliver.metrics["out_of_order"]
            metrics["delivered_pct"] = 100.0 * deliver.metrics["delivered"] / sent
        connect = next((p for p in self.report.phases if p.name == "connect"), None)
        if connect is not None and connect.metrics:
            metrics["connect_failed"] = connect.metrics["failed"]
        return metrics

    async def cleanup(self) -> None:
        """Close the run's robots and remove the run's entries that remain (fenced deletes)."""
        # clean-up after a run that may have failed: each step is tried whatever the others did
        for swarm in self.swarms:
            with contextlib.suppress(Exception):  # one swarm failing to close stops no other
                await wait_within(swarm.close_all(), 30)
            if isinstance(swarm, ProcessSwarm):
                swarm.stop()
        await self.replies.stop()
        if self.drained is not None:  # a drained gateway of the fleet takes robots again
            with contextlib.suppress(Exception):  # best effort, like the rest of the clean-up
                await undrain_instance(self.store, self.drained)
        with contextlib.suppress(Exception):  # the run's entries that remain: best effort too
            left = list((await self.entries()).values())
            if left:
                results = await self.retrying(lambda: self.store.delete_observed(left), "clean-up")
                self.report.cleaned_up = results.count(DeleteOutcome.DELETED)
