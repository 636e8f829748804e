"""``wsctl simulate``: real robots over real WebSockets, checking the fleet and its registry.

Phases (each a pass/fail check): connect, registered, deliver, heartbeat, churn (optional),
disconnect. Deliver is skipped (or, with ``require_delivery``, failed at once) when instances
do not listen on their control channel, e.g. gateways written the original design's way; their
robots can send an application heartbeat (``robot_heartbeat``), as such fleets need. Robot ids are ``sim-<run>-<n>`` so runs never collide; whatever happens, the run's
robots disconnect and the run's registry entries are removed (compare-and-delete), never other
robots'. Returns a :class:`SimulateReport`; printing is the CLI's job.

Robots follow a drain (close code 1012) to the next gateway, as real robots do; with
``reconnect`` they reconnect after any close. With
``chaos`` (``drain`` or ``kill``) one gateway (the first) is drained, or SIGKILLed through the
``kill_gateway`` callback the sandbox provides, while the deliver phase publishes; the phase then
reports messages lost to the victim's robots, lost in flight to the victim, lost to other
instances' robots (must be 0), and the seconds until every robot is registered again.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from redis.exceptions import RedisClusterException, RedisError

from wsctl.durations import counted
from wsctl.errors import UsageError
from wsctl.ops.capacity import check_open_files
from wsctl.ops.compat import Participation, classify, explain, writes_conn_id
from wsctl.ops.deployment import Deployment
from wsctl.ops.drain import check_instance, start_drain, undrain_instance
from wsctl.ops.histogram import Histogram
from wsctl.ops.ramp import combine as combine_ramps
from wsctl.ops.ramp import describe as describe_ramp
from wsctl.ops.robots import ProcessSwarm, RobotSwarm, make_message
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
    "SLO_METRICS",
    "Phase",
    "PhaseSkipped",
    "Progress",
    "SimulateOptions",
    "SimulateReport",
    "Simulation",
    "Slo",
    "parse_slo",
    "simulate",
]

Progress = Callable[[str, str], None]
PUBLISH_BATCH = 500
# paced sends (--rate) go out in this many steps per second: small bursts, low queueing
PACING_STEPS = 200
RETRY_ATTEMPTS = 60
RETRY_DELAY = 0.25


@dataclass(frozen=True)
class Slo:
    """``metric op value`` such as ``p99<50ms``, ``lost==0``, ``delivered_pct>=99.9``."""

    text: str
    metric: str
    op: str
    value: float

    def check(self, metrics: dict[str, float]) -> tuple[bool, float | None]:
        """Judge ``metrics`` against this objective.

        Returns (met, the measured value); a metric that was not measured fails, with None."""
        actual = metrics.get(self.metric)
        if actual is None:
            return False, None
        ok = {
            "<": actual < self.value,
            "<=": actual <= self.value,
            ">": actual > self.value,
            ">=": actual >= self.value,
            "==": actual == self.value,
        }[self.op]
        return ok, actual


SLO_METRICS = (
    "p50",
    "p90",
    "p99",
    "max",
    "connect_p50",
    "connect_p99",
    "lost",
    "rejected",
    "duplicated",
    "out_of_order",
    "delivered_pct",
    "connect_failed",
)
_SLO_RE = re.compile(r"^\s*([a-z_0-9]+)\s*(<=|>=|==|<|>)\s*([0-9.]+)\s*(ms|s|%)?\s*$")


def parse_slo(text: str) -> Slo:
    """Parse an SLO; latencies need a unit (``ms`` or ``s``) and are held in milliseconds."""
    match = _SLO_RE.match(text)
    if not match:
        raise UsageError(f"bad --slo {text!r}: expected like 'p99<50ms' or 'lost==0'")
    metric, op, number, unit = match.groups()
    if metric not in SLO_METRICS:
        raise UsageError(
            f"bad --slo {text!r}: unknown metric {metric!r} ({', '.join(SLO_METRICS)})"
        )
    if metric in _COUNT_METRICS and unit is not None:
        raise UsageError(
            f"bad --slo {text!r}: {metric} is a count of messages or robots; give it without "
            f"a unit (e.g. '{metric}==0')"
        )
    if metric in _PERCENT_METRICS and unit not in (None, "%"):
        raise UsageError(f"bad --slo {text!r}: {metric} is a percentage (e.g. '{metric}>=99.9')")
    if metric in _LATENCY_METRICS and unit not in ("ms", "s"):
        # a bare number (`p99<5`) used to mean ms silently: 5 ms or 5 s is the operator's call
        raise UsageError(
            f"bad --slo {text!r}: {metric} is a latency; give its unit, ms or s "
            f"(e.g. '{metric}<50ms')"
        )
    try:
        value = float(number) * (1000.0 if unit == "s" else 1.0)
    except ValueError:
        raise UsageError(f"bad --slo {text!r}: {number!r} is not a number") from None
    return Slo(text.strip(), metric, op, value)


_LATENCY_METRICS = frozenset({"p50", "p90", "p99", "max", "connect_p50", "connect_p99"})
_COUNT_METRICS = frozenset({"lost", "rejected", "duplicated", "out_of_order", "connect_failed"})
_PERCENT_METRICS = frozenset({"delivered_pct"})


@dataclass
class SimulateOptions:
    """Everything one ``simulate`` run needs: fleet, load, phase timeouts, SLOs and chaos."""

    robots: int = 200
    gateways: list[str] = field(default_factory=list)
    messages: int = 3
    duration: float = 35.0
    ramp: float = 1000.0
    churn: float = 0.0
    payload_bytes: int = 0
    rate: float = 0.0  # deliver-phase messages per second; 0 sends them all at once
    processes: int = 1
    auth_secret: str | None = None
    slos: list[Slo] = field(default_factory=list)
    deliver_timeout: float = 30.0
    settle_timeout: float = 10.0
    # robots send this text frame every robot_heartbeat_every seconds (None: they send nothing)
    robot_heartbeat: str | None = None
    robot_heartbeat_every: float = 5.0
    require_delivery: bool = False  # instances that do not listen fail deliver instead of skipping
    # deliver phase: the share of robots whose messages are injected at an instance other than
    # their owner (forwarded once); the rest go straight to the owner
    non_owner_share: float = 0.75
    liveness_timeout: float = 90.0  # judges the gateways' liveness records
    # robots reconnect after any close, not only a drain's 1012 (jittered backoff, next gateway)
    reconnect: bool = False
    chaos: str | None = None  # "drain" or "kill" one gateway during the deliver phase
    # SIGKILLs the gateway at this URL (the sandbox's); True if it did
    kill_gateway: Callable[[str], bool] | None = None


CHAOS_ACTIONS = ("drain", "kill")
CHAOS_SETTLE = 60.0  # seconds for every robot to be registered again after the chaos
CHAOS_REPLY_GRACE = 5.0  # seconds to wait for late replies once every robot is back


# Instances whose robots the deliver phase skips: they do not take part in the control protocol
# (robots of this run connected to them, so they are up). An instance with a fresh liveness
# record that does not listen is a wsctl-protocol gateway in trouble: deliver checks it, and fails.
NOT_SPEAKING = frozenset({Participation.NO_CONTROL_PROTOCOL, Participation.DOWN_OR_UNKNOWN})


class PhaseSkipped(Exception):
    """Raised by a phase that cannot be checked against this fleet; the message says why."""


@dataclass
class Phase:
    """One phase's result: passed, failed (``ok`` False) or skipped (ok, with the reason
    in ``detail``), with its duration and measurements."""

    name: str
    ok: bool  # False only when the check failed (a skipped phase is ok, and says why)
    detail: str
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False

    @property
    def status(self) -> str:
        """``passed``, ``failed`` or ``skipped``: the one word the report shows."""
        return "skipped" if self.skipped else "passed" if self.ok else "failed"

    def as_dict(self) -> dict[str, Any]:
        """The phase as the stable JSON object of ``simulate -o json``."""
        return {
            "name": self.name,
            "ok": self.ok,
            "status": self.status,
            "detail": self.detail,
            "seconds": round(self.seconds, 3),
            "metrics": self.metrics,
        }


@dataclass
class SimulateReport:
    """A whole run: its phases, latency and connect histograms, SLO verdicts, how many
    left-over entries the clean-up removed, and a fatal error if one ended the run early."""

    run_id: str
    robots: int
    gateways: list[str]
    phases: list[Phase] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)
    connect_ms: dict[str, float] = field(default_factory=dict)
    slos: list[dict[str, Any]] = field(default_factory=list)
    cleaned_up: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the run ended without error, ran phases, and every phase and SLO passed."""
        return (
            self.error is None
            and bool(self.phases)
            and all(p.ok for p in self.phases)
            and all(s["ok"] for s in self.slos)
        )

    @property
    def failed(self) -> list[str]:
        """Names of what failed (phases, ``slo TEXT``, ``error``), for the one-line summary."""
        names = [p.name for p in self.phases if not p.ok]
        names += [f"slo {s['slo']}" for s in self.slos if not s["ok"]]
        if self.error:
            names.append("error")
        return names

    def as_dict(self) -> dict[str, Any]:
        """The report as the ``wsctl.simulate/1`` JSON document."""
        return {
            "schema": "wsctl.simulate/1",
            "run_id": self.run_id,
            "ok": self.ok,
            "robots": self.robots,
            "gateways": self.gateways,
            "phases": [p.as_dict() for p in self.phases],
            "latency_ms": self.latency_ms,
            "connect_ms": self.connect_ms,
            "slos": self.slos,
            "failed": self.failed,
            "skipped": [p.name for p in self.phases if p.skipped],
            "cleaned_up": self.cleaned_up,
            "error": self.error,
        }


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

    Use :func:`simulate`, which validates the options first."""

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
    async def _stats(self) -> dict[str, Any]:
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

    async def _retrying(self, make: Callable[[], Any], what: str) -> Any:
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

    async def _entries(self) -> dict[str, Entry]:
        found: dict[str, Entry] = {}
        keys = [self.store.keys.conn_key(r) for r in self.robot_ids]
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            for entry in await self._retrying(partial(self.store.read_keys, chunk), "read"):
                found[entry.robot_id] = entry
        return found

    async def _publish(self, sends: list[tuple[str, str, int]], rate: float = 0.0) -> list[str]:
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
                await self._retrying(partial(self.store.publish_many, batch), "publish")
            except RuntimeError:
                self.unsent += len(batch)  # counted as lost: the run goes on
        return ids

    def _next_seq(self, robot_id: str) -> int:
        """The next message number for a robot, recorded as expected."""
        seq = self.next_seq.get(robot_id, 0)
        self.next_seq[robot_id] = seq + 1
        self.expected[robot_id].add(seq)
        return seq

    async def _phase(self, name: str, body: Callable[[], Any]) -> Phase:
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
            listening = await self._retrying(
                partial(self.store.is_listening, instance_id), "listeners"
            )
            record = await self._retrying(
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

    def _not_listening_text(self) -> str:
        urls = {i: u for u, i in self.instance_of_url.items()}
        names = ", ".join(f"{i} ({urls.get(i, '?')})" for i in self.not_listening)
        first = next(iter(self.not_listening.values()), "")
        count = len(self.not_listening)
        return f"{count} instance(s) do not listen on their control channel: {names}; e.g. {first}"

    # ---------------------------------------------------------------- phases
    async def phase_connect(self) -> tuple[bool, str, dict[str, Any]]:
        """Connect every robot, spread round robin over the gateways at the ramp rate, slower
        while the gateways accept fewer (:mod:`wsctl.ops.ramp`; a timed-out handshake is
        tried again at the slower rate).

        Passes when all connected; measures connect latency and reports the ramp."""
        opts = self.options
        per_swarm: list[list[tuple[str, str]]] = [[] for _ in self.swarms]
        for n, robot_id in enumerate(self.robot_ids):
            url = opts.gateways[n % len(opts.gateways)]
            self.url_of[robot_id] = url
            self.swarm_of[robot_id] = n % len(self.swarms)
            per_swarm[n % len(self.swarms)].append((robot_id, url))
        rate = opts.ramp / len(self.swarms) if opts.ramp > 0 else 0.0
        started = time.perf_counter()
        results = await asyncio.gather(
            *(s.connect(a, rate) for s, a in zip(self.swarms, per_swarm, strict=True))
        )
        seconds = time.perf_counter() - started
        connected = sum(r["connected"] for r in results)
        stats = await self._stats()
        self.report.connect_ms = stats["connect"].summary_ms()
        ramp = combine_ramps([r["ramp"] for r in results])
        metrics = {
            "connected": connected,
            "failed": opts.robots - connected,
            "rate_per_s": round(connected / seconds, 1) if seconds else 0.0,
            **{f"connect_{k}_ms": v for k, v in self.report.connect_ms.items() if k != "count"},
            **ramp,
        }
        if connected != opts.robots:
            sample = next(iter(stats["connect_failures"].values()), "")
            return (
                False,
                f"{opts.robots - connected} of {opts.robots} robots failed to connect ({sample}); "
                f"{describe_ramp(ramp)}",
                metrics,
            )
        return (
            True,
            f"{connected} robots in {seconds:.2f}s ({metrics['rate_per_s']}/s); "
            f"{describe_ramp(ramp)}",
            metrics,
        )

    async def phase_registered(self) -> tuple[bool, str, dict[str, Any]]:
        """Wait (up to the settle timeout) until every robot has a registry entry, and
        check each is owned by the instance behind the gateway it connected to."""
        deadline = time.monotonic() + self.options.settle_timeout
        while True:
            entries = self.seen_entries = await self._entries()
            missing = [r for r in self.robot_ids if r not in entries or not entries[r].instance_id]
            if not missing or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        by_url: dict[str, Counter[str]] = {}
        for robot_id, entry in entries.items():
            by_url.setdefault(self.url_of[robot_id], Counter())[entry.instance_id or ""] += 1
        self.instance_of_url = {url: c.most_common(1)[0][0] for url, c in by_url.items()}
        wrong = [
            r
            for r, e in entries.items()
            if e.instance_id != self.instance_of_url.get(self.url_of[r])
        ]
        distinct = len(set(self.instance_of_url.values())) == len(self.instance_of_url)
        metrics = {
            "registered": len(entries),
            "missing": len(missing),
            "wrong_instance": len(wrong),
            "instances": dict(sorted(self.instance_of_url.items())),
        }
        if missing:
            return (
                False,
                f"{len(missing)} robots have no registry entry (e.g. {missing[0]})",
                metrics,
            )
        if wrong or not distinct:
            return (
                False,
                f"{counted(len(wrong), 'entry', 'entries')} naming another instance than the one "
                "connected to",
                metrics,
            )
        return (
            True,
            f"all {len(entries)} entries name the instance their robot connected to",
            metrics,
        )

    async def phase_deliver(self) -> tuple[bool, str, dict[str, Any]]:
        """Publish the messages on control channels (mostly at a non-owner, so they are
        forwarded) and check each robot got its own, exactly once and in order.

        Skipped when no instance listens; with ``chaos`` set, drains or kills a gateway
        meanwhile and reports the losses by cause."""
        opts = self.options
        if self.not_listening and opts.require_delivery:
            return False, "delivery required, but " + self._not_listening_text(), {}
        instances = sorted(set(self.instance_of_url.values()) - set(self.not_listening))
        if not instances:
            raise PhaseSkipped("not checked: " + self._not_listening_text())
        # robots on instances that do not listen cannot be reached through the control channel
        robot_ids = [r for r in self.robot_ids if self.instance_of_url[self.url_of[r]] in instances]
        sends: list[tuple[str, str, int]] = []
        via_owner = 0
        share = opts.non_owner_share
        for n, robot_id in enumerate(robot_ids):
            owner = self.instance_of_url[self.url_of[robot_id]]
            others = [i for i in instances if i != owner]
            # robots whose messages go through a non-owner instance (forwarding), spread
            # evenly: robot n does when floor((n + 1) * share) > floor(n * share)
            through_other = int((n + 1) * share) > int(n * share)
            via = others[n % len(others)] if (through_other and others) else owner
            via_owner += via == owner
            for _ in range(opts.messages):
                sends.append((robot_id, via, self._next_seq(robot_id)))
        total = len(sends)
        started = time.perf_counter()
        first_sent = time.time()
        answered_before = len(self.replies.status)  # replies are keyed by unique ids
        chaos = None
        if opts.chaos:
            publish_s = total / opts.rate if opts.rate > 0 else 0.0
            chaos = asyncio.create_task(self._chaos(publish_s * 0.3))
        ids = await self._publish(sends, opts.rate)
        deadline = time.monotonic() + opts.deliver_timeout
        while time.monotonic() < deadline:
            if len(self.replies.status) - answered_before >= total and (
                chaos is None or chaos.done()
            ):
                break
            if chaos is not None and chaos.done():
                # replies to messages lost with a killed gateway never come: wait a little
                deadline = min(deadline, self.chaos.get("done_at", 0.0) + CHAOS_REPLY_GRACE)
            await self.replies.arrival(0.05)
        if chaos is not None:
            await chaos  # bounded by CHAOS_SETTLE
        await asyncio.sleep(0.2)  # frames are written before replies; let the last ones land
        seconds = time.perf_counter() - started
        stats = await self._stats()
        # throughput over the time from the first publish to the last message a robot
        # received (what bench/socketio's clients measure too), not the waits for replies
        span = stats["last_at"] - first_sent if stats["last_at"] > first_sent else seconds
        self.report.latency_ms = stats["latency"].summary_ms()
        delivered = duplicated = out_of_order = 0
        victim = self.chaos.get("victim")
        via_of = {(r, seq): v for r, v, seq in sends}
        lost_kinds: Counter[str] = Counter()
        for robot_id in robot_ids:
            got = stats["robots"][robot_id]["received"]
            delivered += len(set(got) & self.expected[robot_id])
            duplicated += len(got) - len(set(got))
            on_victim = self.instance_of_url[self.url_of[robot_id]] == victim
            if not on_victim:  # a moved robot may see a message overtake another: not a fault
                out_of_order += stats["robots"][robot_id]["out_of_order"]
            for seq in self.expected[robot_id] - set(got):
                if on_victim:
                    lost_kinds["victim_robots"] += 1
                elif via_of.get((robot_id, seq)) == victim:
                    lost_kinds["in_flight_to_victim"] += 1
                else:
                    lost_kinds["other_robots"] += 1
        statuses = Counter(self.replies.status.get(i, "no_reply") for i in ids)
        # refused with a reply (e.g. larger than the gateways' limit) is not lost: the sender
        # was told; lost is what vanished without a word
        rejected = statuses.get("rejected", 0)
        lost = max(0, total - delivered - rejected)
        metrics = {
            "sent": total,
            "delivered": delivered,
            "rejected": rejected,
            "lost": lost,
            "duplicated": duplicated,
            "out_of_order": out_of_order,
            "via_owner": via_owner * opts.messages,
            "via_other": (len(robot_ids) - via_owner) * opts.messages,
            "robots_not_tested": len(self.robot_ids) - len(robot_ids),
            "replies": dict(statuses),
            "unsent": self.unsent,
            "redis_errors": self.redis_errors,
            "throughput_per_s": round(delivered / span, 1) if span > 0 else 0.0,
            "delivery_seconds": round(span, 3),
            "latency_ms": self.report.latency_ms,
        }
        ok = lost == 0 and rejected == 0 and duplicated == 0 and out_of_order == 0
        latency = (
            f"p99 {self.report.latency_ms['p99']} ms"
            if self.report.latency_ms.get("count")
            else "no latency (nothing delivered)"
        )
        detail = (
            f"{delivered}/{total} delivered, {rejected} rejected, {lost} lost, "
            f"{duplicated} duplicated, {out_of_order} out of order; {latency}"
        )
        if opts.chaos:
            ok, chaos_detail = self._chaos_verdict(
                metrics, lost_kinds, rejected, duplicated, out_of_order
            )
            detail += chaos_detail
        if not ok and self.replies.reasons:
            detail += f" (e.g. {self.replies.reasons.most_common(1)[0][0]})"
        if self.not_listening:
            detail += (
                f"; {len(self.robot_ids) - len(robot_ids)} robots not tested: "
                + self._not_listening_text()
            )
        troubled = [
            explain(i, self.store.keys.control_channel(i), kind)
            for i, kind in self.participation.items()
            if kind is Participation.ALIVE_NOT_LISTENING
        ]
        if troubled and not ok:
            detail += "; " + "; ".join(troubled)
        return ok, detail, metrics

    def _chaos_verdict(
        self,
        metrics: dict[str, Any],
        lost_kinds: Counter[str],
        rejected: int,
        duplicated: int,
        out_of_order: int,
    ) -> tuple[bool, str]:
        """Losing what was in flight to the victim (or to its robots while they move) is what
        the chaos costs; losing anything else, or robots that never come back, is a fault."""
        chaos = {
            **{k: v for k, v in self.chaos.items() if k != "done_at"},
            "lost_victim_robots": lost_kinds["victim_robots"],
            "lost_in_flight_to_victim": lost_kinds["in_flight_to_victim"],
            "lost_other_robots": lost_kinds["other_robots"],
        }
        metrics["chaos"] = chaos
        back = chaos.get("reregistered_s")
        ok = (
            lost_kinds["other_robots"] == 0
            and duplicated == 0
            and out_of_order == 0
            and back is not None
            and not chaos.get("error")
        )
        text = f"; chaos {chaos.get('action')} of {chaos.get('victim')}: " + (
            f"every robot registered again in {back:.2f}s"
            if back is not None
            else f"{chaos.get('not_back', '?')} robots not registered again"
        )
        text += (
            f", lost {lost_kinds['victim_robots']} to its robots, "
            f"{lost_kinds['in_flight_to_victim']} in flight to it, "
            f"{lost_kinds['other_robots']} to other robots"
        )
        if chaos.get("error"):
            text += f" ({chaos['error']})"
        return ok, text

    async def _chaos(self, delay: float) -> None:
        """Drain or kill the first gateway ``delay`` seconds into the deliver phase, then wait
        (bounded) until every robot is registered on another instance."""
        opts = self.options
        url = opts.gateways[0]
        victim = self.instance_of_url.get(url, "")
        on_victim = [r for r in self.robot_ids if self.url_of[r] == url]
        self.chaos = {"action": opts.chaos, "victim": victim, "robots_on_victim": len(on_victim)}
        await asyncio.sleep(delay)
        started = time.monotonic()
        try:
            if opts.chaos == "drain":
                await check_instance(self.store, victim)
                batch = max(1, len(on_victim) // 5)
                origin = f"simulate-{self.run_id}"
                await start_drain(self.store, victim, batch, 0.2, origin)
                self.drained = victim
            elif opts.kill_gateway is None or not opts.kill_gateway(url):
                raise RuntimeError(f"cannot kill the gateway at {url}")
        except Exception as exc:  # a chaos action that failed is a result of the report
            self.chaos["error"] = f"{type(exc).__name__}: {exc}"[:200]
            self.chaos["done_at"] = time.monotonic()
            return
        deadline = started + CHAOS_SETTLE
        while True:
            entries = await self._entries()
            away = [
                r for r in self.robot_ids if r not in entries or entries[r].instance_id == victim
            ]
            if not away or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        if away:
            self.chaos["not_back"] = len(away)
            self.chaos["not_back_sample"] = away[:10]
        else:
            self.chaos["reregistered_s"] = round(time.monotonic() - started, 3)
        self.chaos["done_at"] = time.monotonic()

    async def phase_heartbeat(self) -> tuple[bool, str, dict[str, Any]]:
        """Check every robot's ``last_heartbeat`` advances within ``duration`` seconds,
        which proves the owners keep their entries alive."""
        before = {r: e.fields.get("last_heartbeat") for r, e in (await self._entries()).items()}
        deadline = time.monotonic() + self.options.duration
        stuck = list(before)
        while stuck and time.monotonic() < deadline:
            await asyncio.sleep(min(0.5, max(0.05, deadline - time.monotonic())))
            now = await self._entries()
            stuck = [
                r for r in stuck if r not in now or now[r].fields.get("last_heartbeat") == before[r]
            ]
        metrics = {
            "advanced": len(before) - len(stuck),
            "not_advanced": len(stuck),
            "robot_heartbeats_sent": sum(
                int(p.get("heartbeats_sent", 0)) for p in await self._swarm_parts()
            ),
        }
        if stuck:
            detail = (
                f"{len(stuck)} robots' last_heartbeat did not advance within "
                f"{self.options.duration:g}s"
            )
            return False, detail + self._heartbeat_hint(stuck), metrics
        return True, "every last_heartbeat advanced", metrics

    async def _swarm_parts(self) -> list[dict[str, Any]]:
        return [await swarm.snapshot() for swarm in self.swarms]

    def _heartbeat_hint(self, stuck: list[str]) -> str:
        """Why heartbeats did not advance, when the robots' gateways do not speak wsctl's
        protocol: such gateways refresh last_heartbeat only when a robot sends a message."""
        foreign = set(self.not_listening)
        on_foreign = [r for r in stuck if self.instance_of_url.get(self.url_of[r]) in foreign]
        if not on_foreign:
            return ""
        names = ", ".join(sorted({self.instance_of_url[self.url_of[r]] for r in on_foreign}))
        if self.options.robot_heartbeat is None:
            return (
                f"; {len(on_foreign)} of them are on {names}, which do not speak wsctl's "
                "control protocol: such gateways refresh last_heartbeat only when a robot "
                "sends a message, and these robots sent none; rerun with --robot-heartbeat "
                "TEXT (what your robots send as a heartbeat)"
            )
        return (
            f"; {len(on_foreign)} of them are on {names}, which do not speak wsctl's control "
            f"protocol and did not refresh last_heartbeat when the robots sent "
            f"{self.options.robot_heartbeat!r} every {self.options.robot_heartbeat_every:g}s"
        )

    async def phase_churn(self) -> tuple[bool, str, dict[str, Any]]:
        """Move random robots to another gateway (``churn`` per second, at most 10 s) and
        check messages sent to them afterwards still arrive at the new owner."""
        opts = self.options
        gateways = opts.gateways
        churned: dict[str, str] = {}
        sent: list[tuple[str, str, int]] = []  # (envelope id, robot id, seq)
        end = time.monotonic() + min(opts.duration, 10.0)
        interval = 1.0 / opts.churn
        reconnect_failed = 0
        for _ in range(100_000):
            if time.monotonic() >= end:
                break
            robot_id = self.rng.choice(self.robot_ids)
            choices = [g for g in gateways if g != self.url_of[robot_id]] or gateways
            new_url = self.rng.choice(choices)
            if await self.swarms[self.swarm_of[robot_id]].reconnect(robot_id, new_url):
                self.url_of[robot_id] = new_url
                churned[robot_id] = new_url
                if self.not_listening:
                    await asyncio.sleep(interval)
                    continue  # no messages: not every instance listens (see the detail)
                # a message right after the move, injected at a random instance
                seq = self._next_seq(robot_id)
                via = self.instance_of_url[self.rng.choice(gateways)]
                (envelope_id,) = await self._publish([(robot_id, via, seq)])
                sent.append((envelope_id, robot_id, seq))
            else:
                reconnect_failed += 1
            await asyncio.sleep(interval)
        deadline = time.monotonic() + opts.settle_timeout
        while True:
            entries = await self._entries()
            not_following = [
                r
                for r, url in churned.items()
                if r not in entries or entries[r].instance_id != self.instance_of_url[url]
            ]
            answered = all(i in self.replies.status for i, _, _ in sent)
            if (not not_following and answered) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.2)
        stats = await self._stats()
        # accounted for: the robot got it, or a reply said plainly that it was not delivered
        delivered = refused = unaccounted = 0
        for envelope_id, robot_id, seq in sent:
            if seq in stats["robots"][robot_id]["received"]:
                delivered += 1
            elif self.replies.status.get(envelope_id, "delivered") != "delivered":
                refused += 1
            else:
                unaccounted += 1
        metrics = {
            "reconnects": len(churned),
            "reconnect_failed": reconnect_failed,
            "registry_not_following": len(not_following),
            "messages": len(sent),
            "delivered": delivered,
            "refused_with_reply": refused,
            "unaccounted": unaccounted,
        }
        ok = not not_following and reconnect_failed == 0 and unaccounted == 0
        messages = (
            f"churn messages: {delivered} delivered, {refused} refused with a reply, "
            f"{unaccounted} unaccounted"
            if not self.not_listening
            else "no churn messages sent: " + self._not_listening_text()
        )
        return (
            ok,
            f"{len(churned)} robots moved, registry followed "
            f"{len(churned) - len(not_following)}/{len(churned)}; {messages}",
            metrics,
        )

    async def phase_disconnect(self) -> tuple[bool, str, dict[str, Any]]:
        """Close every robot and check their entries are gone within the settle timeout
        (nothing left behind by a clean disconnect)."""
        await asyncio.gather(*(s.close_all() for s in self.swarms))
        deadline = time.monotonic() + self.options.settle_timeout
        while True:
            left = await self._entries()
            if not left or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        if left:
            owners = Counter(e.instance_id for e in left.values())
            return (
                False,
                f"{counted(len(left), 'entry', 'entries')} left behind (by instance: "
                f"{dict(owners)})",
                {"left": len(left)},
            )
        return True, "every robot closed and every entry of the run is gone", {"left": 0}

    # ---------------------------------------------------------------- run
    async def run(self) -> SimulateReport:
        """Run the phases in order and return the report; whatever happens, the robots
        disconnect and the run's leftover entries are removed (compare-and-delete)."""
        opts = self.options
        try:
            beat = (
                (opts.robot_heartbeat, opts.robot_heartbeat_every)
                if opts.robot_heartbeat is not None
                else None
            )
            # robots follow a drain's 1012 to the next gateway, as every robot should; with
            # --reconnect (or --chaos) they reconnect after any close
            again, any_close = list(opts.gateways), bool(opts.reconnect or opts.chaos)
            for _ in range(opts.processes if opts.processes > 1 else 1):
                self.swarms.append(
                    ProcessSwarm(self.run_id, opts.auth_secret, beat, again, any_close)
                    if opts.processes > 1
                    else RobotSwarm(self.run_id, opts.auth_secret, beat, again, any_close)
                )
            await self.replies.start()
            steps = [
                ("connect", self.phase_connect),
                ("registered", self.phase_registered),
                ("deliver", self.phase_deliver),
                ("heartbeat", self.phase_heartbeat),
            ]
            if opts.churn > 0:
                steps.append(("churn", self.phase_churn))
            for name, body in steps:
                if name == "deliver":
                    # before anything is sent: which instances cannot take part
                    await self.check_listeners()
                phase = await self._phase(name, body)
                if not phase.ok and name in ("connect", "registered"):
                    break  # later phases depend on these; go straight to clean-up
                if not phase.ok and name == "deliver" and self.options.require_delivery:
                    break  # a fast failure: delivery was required and cannot be checked
            await self._phase("disconnect", self.phase_disconnect)
            metrics = self.slo_metrics()
            for slo in opts.slos:
                ok, actual = slo.check(metrics)
                self.report.slos.append({"slo": slo.text, "ok": ok, "actual": actual})
        finally:
            await self.cleanup()
        return self.report

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
            left = list((await self._entries()).values())
            if left:
                results = await self._retrying(lambda: self.store.delete_observed(left), "clean-up")
                self.report.cleaned_up = results.count(DeleteOutcome.DELETED)


async def simulate(
    store: Deployment, options: SimulateOptions, progress: Progress | None = None
) -> SimulateReport:
    """Check a fleet end to end with real robots: see the module docstring for the phases.

    Raises UsageError for options that contradict each other; every other failure is a
    result in the returned :class:`SimulateReport`."""
    if not options.gateways:
        raise UsageError("no gateways to simulate against")
    if options.chaos is not None:
        if options.chaos not in CHAOS_ACTIONS:
            raise UsageError(f"--chaos {options.chaos!r}: use drain or kill")
        if len(options.gateways) < 2:
            raise UsageError("--chaos needs at least two gateways (robots move to the others)")
        if options.churn > 0:
            raise UsageError("--chaos and --churn exclude each other")
    if not 0.0 <= options.non_owner_share <= 1.0:
        raise UsageError("--non-owner-share must be between 0 and 1")
    if options.robots < 1 or options.messages < 0 or options.processes < 1:
        raise UsageError("--robots and --processes must be at least 1, --messages at least 0")
    if options.robot_heartbeat is not None and not (
        0 < options.robot_heartbeat_every < options.duration
    ):
        raise UsageError(
            f"--robot-heartbeat-every must be above 0 and below the heartbeat phase's "
            f"--duration ({options.duration:g}s), so that a heartbeat can land within it"
        )
    # the open files the robots need (a sandbox simulate starts is checked by its caller)
    check_open_files(options.robots, options.processes, None)
    return await Simulation(store, options, progress).run()
