"""The live screen of ``wsctl top``: alerts at the top, the instances, the registry summary
and the newest events; an instance opens its robots, a robot its entry and history; kicks,
drains and undrains behind a confirmation. Built on Textual (``pip install 'wsctl[tui]'``).

Two workers feed it: the refresh loop (:meth:`wsctl.ops.top_collector.Collector.refresh` every
``interval`` seconds, O(instances + new events)) and the registry scan (one bounded
:meth:`wsctl.ops.top_scan.RegistryScanner.step` at a time, paced to ``scan_rate`` keys a second).
A Redis that stops answering is an alert; the last data stays on the screen with its age.
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar

from rich.text import Text
from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.coordinate import Coordinate
from textual.widgets import DataTable, Footer, Static

from wsctl.cli.columns import printable
from wsctl.cli.topview import (
    alert_lines,
    event_cells,
    fit_lines,
    fitting_columns,
    header_parts,
    id_cell,
    instance_cells,
    instance_columns,
    instance_row,
    registry_lines,
)
from wsctl.cli.tui.screens import (
    TITLE_ID_MAX,
    ConfirmScreen,
    InstanceScreen,
    PromptScreen,
    RobotScreen,
    cell,
)
from wsctl.errors import EXIT_INTERNAL, WsctlError
from wsctl.ops.top import Snapshot
from wsctl.ops.top_collector import REDIS_ERRORS, Collector
from wsctl.shell import clip

__all__ = ["KICK_REASON", "SORTS", "TopApp"]

KICK_REASON = "kicked from wsctl top"
DRAIN_BATCH = 50
DRAIN_INTERVAL = 1.0
ROBOTS_SHOWN = 500
# Instance rows drawn, first in the sort order: drawing a row costs about 0.3 ms, and a
# registry left by thousands of gone pods must not make every refresh block the keys.
INSTANCES_SHOWN = 500
HISTORY_SHOWN = 50
EVENTS_SHOWN = 100
MAX_ALERT_LINES = 4
# Columns a vertical scrollbar takes; the registry panel's lines leave its gutter and one more.
SCROLLBAR = 2
REGISTRY_MARGIN = SCROLLBAR + 1
# A notification longer than this is cut (an action's message naming a 10 KB id).
NOTE_MAX = 600

# the instance table's orders: name, sort key of a flattened row, descending
SORTS: list[tuple[str, Callable[[dict[str, Any]], Any], bool]] = [
    ("instance", lambda r: r["instance_id"], False),
    ("robots", lambda r: r.get("robots") or 0, True),
    ("delivered/s", lambda r: r.get("delivered_per_s") or 0.0, True),
    ("state", lambda r: (r["state"] == "alive", r["instance_id"]), False),
]

_STATE_STYLE = {"alive": "green", "deaf": "bold red", "dead": "bold red", "unknown": "yellow"}


class TopApp(App[None]):
    """``wsctl top``'s screen. ``failure``: an unexpected error that ended it (the CLI
    reports it in one line); ``messages``: what actions said (also shown as notifications)."""

    TITLE = "wsctl top"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit_top", "Quit"),
        Binding("ctrl+c", "quit_top", "Quit", show=False, priority=True),
        Binding("s", "sort", "Sort"),
        Binding("slash", "filter_instances", "Filter"),
        Binding("g", "robot_glob", "Robot glob"),
        Binding("d", "drain", "Drain"),
        Binding("u", "undrain", "Undrain"),
    ]
    CSS = """
    #header { height: auto; max-height: 3; background: $primary-background;
        text-wrap: nowrap; text-overflow: ellipsis; }
    #alerts { height: auto; max-height: 5; text-wrap: nowrap; text-overflow: ellipsis;
        padding: 0 0; }
    #instances { height: 1fr; min-height: 5; border-top: hkey $accent; }
    #bottom { height: 1fr; min-height: 6; }
    #registry-box { width: 1fr; border-top: hkey $accent; scrollbar-gutter: stable; }
    #registry { text-wrap: nowrap; text-overflow: ellipsis; }
    #events { width: 1fr; border-top: hkey $accent; }
    """

    def __init__(
        self,
        collector: Collector,
        *,
        where: str,
        interval: float,
        scan_rate: int,
        timeout: float,
    ) -> None:
        super().__init__()
        self.collector = collector
        self.store = collector.store
        self.where = where
        self.interval = interval
        self.scan_rate = max(1, scan_rate)
        self.timeout = timeout
        self.failure: BaseException | None = None
        self.note: str | None = None
        self.messages: list[str] = []
        self.snapshot: Snapshot | None = None
        self.refreshes = 0
        self.sort_index = 0
        self.instance_glob = ""
        self.robot_glob = ""
        self._headers: list[str] = []
        self._width: int | None = None

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        """Header, alerts, instances, registry and events side by side, keys."""
        yield Static(cell("wsctl top: connecting..."), id="header")
        yield Static(Text(""), id="alerts")
        instances: DataTable[Text] = DataTable(
            id="instances", cursor_type="row", zebra_stripes=True
        )
        instances.border_title = "instances"
        yield instances
        with Horizontal(id="bottom"):
            with VerticalScroll(id="registry-box") as box:
                box.border_title = "registry"
                box.can_focus = False
                yield Static(Text("registry: first scan under way"), id="registry")
            events: DataTable[Text] = DataTable(id="events", cursor_type="none", show_cursor=False)
            events.border_title = "events"
            events.can_focus = False
            yield events
        yield Footer()

    def on_mount(self) -> None:
        """Set up the tables and start the refresh loop and the registry scan."""
        table = self.query_one("#instances", DataTable)
        table.focus()
        self.query_one("#events", DataTable).add_columns(
            "TIME", "EVENT", "ROBOT", "INSTANCE", "DETAIL"
        )
        self.run_worker(self.guarded(self._refresh_loop()), name="refresh", exit_on_error=False)
        self.run_worker(self.guarded(self._scan_loop()), name="scan", exit_on_error=False)

    async def guarded(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work``; an unexpected error ends the app (the CLI reports it in one line)."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the screen's boundary: a bug ends it, said by the CLI
            if not self.is_running:
                return  # the app is closing: its widgets go first, so drawing can fail
            self.failure = exc
            self.exit(return_code=EXIT_INTERNAL)

    async def _refresh_loop(self) -> None:
        while True:
            snapshot = await self.collector.refresh()
            if not self.is_running:
                return  # closing while the refresh was out: its widgets are going
            self.refreshes += 1
            self.show(snapshot)
            await asyncio.sleep(self.interval)

    async def _scan_loop(self) -> None:
        scanner = self.collector.scanner
        pause = scanner.count / self.scan_rate  # each SCAN call visits about ``count`` keys
        while True:
            try:
                await scanner.step()
            except REDIS_ERRORS:  # the refresh says Redis is away; resume the pass later
                await asyncio.sleep(self.interval)
                continue
            await asyncio.sleep(pause)

    # ------------------------------------------------------------------ drawing
    def show(self, snapshot: Snapshot) -> None:
        """Draw one snapshot."""
        self.snapshot = snapshot
        data = snapshot.as_dict()
        parts = header_parts(data, self.where, self.interval)
        lines = fit_lines(parts, max(20, self._columns()))  # every part shown, none cut
        self.query_one("#header", Static).update(cell("\n".join(lines), "bold"))
        self._show_alerts(data)
        self._show_instances(data)
        # from the screen's size, known at once after a resize (the panels' sizes follow on
        # the next layout): the registry panel is half the width, less its scrollbar gutter
        width = max(20, self._columns() // 2 - REGISTRY_MARGIN)
        self.query_one("#registry", Static).update(
            Text("\n".join(registry_lines(data["registry"], width)), no_wrap=True)
        )
        self._show_events(data)

    def _show_alerts(self, data: dict[str, Any]) -> None:
        lines = alert_lines(data)
        text = Text(no_wrap=True, overflow="ellipsis")
        if not lines:
            text.append("no alerts", style="green")
        shown = lines if len(lines) <= MAX_ALERT_LINES else lines[: MAX_ALERT_LINES - 1]
        for i, (severity, line) in enumerate(shown):
            if i:
                text.append("\n")
            style = "bold red" if severity == "error" else "yellow"
            text.append(f"{severity.upper()}: {line}", style=style)
        if len(shown) < len(lines):
            text.append(f"\n+{len(lines) - len(shown)} more alerts (wsctl top --once)")
        self.query_one("#alerts", Static).update(text)

    def _instance_rows(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        rows = [instance_row(i) for i in data["instances"]]
        if self.instance_glob:
            rows = [r for r in rows if fnmatch.fnmatchcase(r["instance_id"], self.instance_glob)]
        _, key, reverse = SORTS[self.sort_index]
        return sorted(rows, key=key, reverse=reverse)

    def _show_instances(self, data: dict[str, Any]) -> None:
        table = self.query_one("#instances", DataTable)
        selected = self.selected_instance()
        every_row = self._instance_rows(data)
        rows = every_row[:INSTANCES_SHOWN]  # drawing is the cost of a refresh: bounded
        every = instance_columns()
        width = self._columns() - SCROLLBAR  # the table spans the screen, less its scrollbar
        texts = [instance_cells(row, every) for row in rows]
        limit = max(16, width // 3)  # a long id never pushes the state and counts off the screen
        for row, cells_text in zip(rows, texts, strict=True):
            cells_text[0] = id_cell(row["instance_id"], limit)
        columns = fitting_columns(instance_columns(), texts, width, pad=2)
        if [c.header for c in columns] != self._headers:
            table.clear(columns=True)
            table.add_columns(*(c.header for c in columns))
            self._headers = [c.header for c in columns]
        table.clear()
        for row, cells_text in zip(rows, texts, strict=True):
            cells = []
            for column, value in zip(columns, cells_text, strict=False):
                style = _STATE_STYLE.get(value) if column.key == "state" else None
                cells.append(
                    Text(
                        value,
                        style=style or "",
                        no_wrap=True,
                        overflow="ellipsis",
                        justify="right" if column.justify == "right" else "left",
                    )
                )
            table.add_row(*cells, key=row["instance_id"])
        if selected is not None:
            ids = [r["instance_id"] for r in rows]
            if selected in ids:
                table.move_cursor(row=ids.index(selected), animate=False)
        title = f"instances ({len(every_row):,}) sort: {SORTS[self.sort_index][0]}"
        if len(every_row) > len(rows):
            title += f", first {len(rows):,} shown (/ filters)"
        if self.instance_glob:
            title += f", filter: {printable(self.instance_glob)}"
        table.border_title = title

    def _show_events(self, data: dict[str, Any]) -> None:
        table = self.query_one("#events", DataTable)
        table.clear()
        events = data["events"]
        if self.robot_glob:
            events = [
                e
                for e in events
                if fnmatch.fnmatchcase(str(e.get("robot_id") or ""), self.robot_glob)
            ]
        for row in reversed(events[-EVENTS_SHOWN:]):  # newest first
            table.add_row(*(cell(c) for c in event_cells(row)))
        title = "events, newest first"
        if self.robot_glob:
            title += f" (robots {printable(self.robot_glob)})"
        table.border_title = title

    def selected_instance(self) -> str | None:
        """The instance the cursor is on, if any."""
        table = self.query_one("#instances", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key
        return None if key.value is None else str(key.value)

    def _redraw(self) -> None:
        if self.snapshot is not None:
            self.show(self.snapshot)

    # ------------------------------------------------------------------ keys
    # keys that act on the instance table, only where it is on the screen (an instance's screen
    # has its own d and u; on a robot's screen or a question they would act unseen)
    _MAIN_ACTIONS = frozenset({"sort", "filter_instances", "drain", "undrain"})

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """A key acts only where what it acts on is shown: sort, filter, drain and undrain on
        the instance table; the robot glob there and on an instance's robots."""
        stack = self.screen_stack
        main = stack[0] if stack else None
        if action in self._MAIN_ACTIONS:
            return self.screen is main
        if action == "robot_glob":
            return self.screen is main or isinstance(self.screen, InstanceScreen)
        return True

    def on_resize(self, event: events.Resize) -> None:
        """A new terminal size: draw the last data again for it (the columns that fit, the
        header's lines) without waiting for the next refresh. This runs before Textual's own
        handler takes the new size: the event's size is the one to draw for."""
        self._width = event.size.width
        self._redraw()

    def _columns(self) -> int:
        """The terminal's width (the last resize's, else the app's)."""
        return self._width or self.size.width

    def action_quit_top(self) -> None:
        """q or Ctrl-C: leave, restoring the terminal."""
        self.exit(return_code=0)

    def action_sort(self) -> None:
        """Next sort order of the instance table."""
        self.sort_index = (self.sort_index + 1) % len(SORTS)
        self._redraw()

    def action_filter_instances(self) -> None:
        """Ask for an instance glob (empty: every instance)."""

        def apply(value: str | None) -> None:
            if value is not None:
                self.instance_glob = value
                self._redraw()

        self.push_screen(
            PromptScreen("instances matching (glob, empty: all):", self.instance_glob), apply
        )

    def action_robot_glob(self) -> None:
        """Ask for a robot glob: the events shown and an instance's robots match it."""

        def apply(value: str | None) -> None:
            if value is not None:
                self.robot_glob = value
                self._redraw()
                if isinstance(self.screen, InstanceScreen):
                    self.screen.action_reload()

        self.push_screen(
            PromptScreen("robots matching (glob, empty: all):", self.robot_glob), apply
        )

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on an instance: its robots."""
        if event.data_table.id == "instances" and event.row_key.value is not None:
            self.push_screen(InstanceScreen(self, str(event.row_key.value)))

    def action_drain(self) -> None:
        """Drain the highlighted instance, after a confirmation."""
        instance = self.selected_instance()
        if instance is not None:
            self.confirm_drain(instance)

    def action_undrain(self) -> None:
        """Undrain the highlighted instance, after a confirmation."""
        instance = self.selected_instance()
        if instance is not None:
            self.confirm_undrain(instance)

    # ------------------------------------------------------------------ actions
    def say(self, message: str, error: bool = False) -> None:
        """Tell the operator what an action did (a notification; kept in :attr:`messages`)."""
        text = clip(printable(message[:NOTE_MAX]), NOTE_MAX, len(message))
        self.messages.append(text)
        self.notify(text, severity="error" if error else "information", markup=False)

    def _act(self, work: Coroutine[Any, Any, str]) -> None:
        async def run() -> None:
            try:
                self.say(await work)
                # the screen the action came from shows what it did (an entry gone, a robot
                # left), not what was there before
                screen = self.screen
                if isinstance(screen, RobotScreen | InstanceScreen):
                    screen.action_reload()
            except asyncio.CancelledError:
                raise
            except WsctlError as exc:
                self.say(exc.message, error=True)
            except REDIS_ERRORS as exc:
                self.say(self.collector.describe(exc), error=True)

        self.run_worker(self.guarded(run()), exit_on_error=False)

    def confirm_kick(self, robot_id: str) -> None:
        """Ask, then kick ``robot_id`` (``wsctl kick``: its owner closes it with 4002)."""

        def answered(yes: bool | None) -> None:
            if yes:
                self._act(self._kick(robot_id))

        self.push_screen(
            ConfirmScreen(
                f"Kick {id_cell(robot_id, TITLE_ID_MAX)}? Its owner closes its socket (4002)."
            ),
            answered,
        )

    async def _kick(self, robot_id: str) -> str:
        from wsctl.ops.kick import kick_robot

        outcome = await kick_robot(
            self.store.client,
            self.store.keys,
            robot_id,
            KICK_REASON,
            liveness_timeout=self.timeout,
        )
        return outcome.summary()

    def confirm_drain(self, instance: str) -> None:
        """Ask, then drain ``instance`` (``wsctl drain``, without following it here: its
        robots leave its row as they move)."""

        def answered(yes: bool | None) -> None:
            if yes:
                self._act(self._drain(instance))

        self.push_screen(
            ConfirmScreen(
                f"Drain {id_cell(instance, TITLE_ID_MAX)}? It refuses new robots and closes "
                "its robots "
                f"(1012) in batches of {DRAIN_BATCH} every {DRAIN_INTERVAL:g}s."
            ),
            answered,
        )

    async def _drain(self, instance: str) -> str:
        from wsctl.ops.drain import check_instance, start_drain

        await check_instance(self.store, instance)
        robots = await start_drain(self.store, instance, DRAIN_BATCH, DRAIN_INTERVAL, "top")
        return f"{id_cell(instance, TITLE_ID_MAX)} is draining: {len(robots)} robot(s) to close"

    def confirm_undrain(self, instance: str) -> None:
        """Ask, then undrain ``instance``."""

        def answered(yes: bool | None) -> None:
            if yes:
                self._act(self._undrain(instance))

        self.push_screen(
            ConfirmScreen(f"Undrain {id_cell(instance, TITLE_ID_MAX)}? It accepts robots again."),
            answered,
        )

    async def _undrain(self, instance: str) -> str:
        from wsctl.ops.drain import undrain_instance

        held = await undrain_instance(self.store, instance)
        return f"{id_cell(instance, TITLE_ID_MAX)} accepts robots again ({held} held)"

    # ------------------------------------------------------------------ reads
    async def instance_robots(self, instance: str) -> tuple[list[dict[str, Any]], int]:
        """The first :data:`ROBOTS_SHOWN` robots (by id) whose entries name ``instance``,
        matching the robot glob, and how many matched (one registry scan)."""
        from wsctl.ops.listing import ConnectionFilter, SortKey, top_connection_rows

        top = await top_connection_rows(
            self.store,
            self.robot_glob or None,
            ConnectionFilter(instance=instance),
            self.timeout,
            SortKey.robot,
            ROBOTS_SHOWN,
        )
        return top.result(), top.seen

    async def robot_lines(self, robot_id: str) -> list[str]:
        """``wsctl show ROBOT`` and ``wsctl history ROBOT`` as lines."""
        from wsctl.cli.output import human_value
        from wsctl.durations import human_duration
        from wsctl.ops.events import robot_history
        from wsctl.ops.views import connection_row
        from wsctl.registry.instances import liveness
        from wsctl.registry.model import utcnow

        try:
            entry = await self.store.get(robot_id)
            history = await robot_history(
                self.store.client, self.store.keys, robot_id, HISTORY_SHOWN
            )
        except REDIS_ERRORS as exc:
            return [self.collector.describe(exc)]
        lines: list[str] = []
        if entry is None:
            lines.append("no registry entry")
        else:
            now = utcnow()
            row = connection_row(entry, now, self.timeout)
            owner = None
            if entry.instance_id:
                record = self.collector.records.get(entry.instance_id)
                owner = liveness(record, now, self.timeout).value
            for key in ("instance_id", "state", "reason", "conn_id"):
                lines.append(f"{key:<18} {printable(human_value(row.get(key)))}")
            lines.append(f"{'heartbeat_age':<18} {human_duration(row.get('heartbeat_age_s'))}")
            lines.append(f"{'connected_for':<18} {human_duration(row.get('connected_for_s'))}")
            lines.append(f"{'owner_liveness':<18} {owner or '-'}")
            for name, value in sorted(entry.fields.items()):
                lines.append(f"field {printable(name):<12} {printable(str(value))}")
        lines.append("")
        lines.append(
            f"history (newest {HISTORY_SHOWN}, oldest first):" if history else "history: none"
        )
        for event in history:
            lines.append("  " + "  ".join(c for c in event_cells(event.as_row()) if c))
        return lines
