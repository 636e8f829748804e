"""The screens ``wsctl top`` opens over its main view: an instance's robots, a robot's entry
and history, a yes/no question, and a one-line prompt. What they read and do goes through
the app (:class:`TopActions`, which :class:`wsctl.cli.tui.app.TopApp` is)."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, ClassVar, Protocol

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.coordinate import Coordinate
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Input, Label, Static

from wsctl.cli.columns import printable
from wsctl.cli.topview import id_cell

__all__ = [
    "TITLE_ID_MAX",
    "ConfirmScreen",
    "InstanceScreen",
    "PromptScreen",
    "RobotScreen",
    "TopActions",
    "cell",
]

# Ids in titles, questions and notifications are cut past this many characters.
TITLE_ID_MAX = 64


class TopActions(Protocol):
    """What the screens ask of ``wsctl top``'s app: its reads, its confirmed actions, the
    robot glob, and the guard that turns an unexpected error into the app's end."""

    robot_glob: str

    async def guarded(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work``; an unexpected error ends the app."""

    async def robot_lines(self, robot_id: str) -> list[str]:
        """A robot's entry and history as lines."""
        ...

    async def instance_robots(self, instance: str) -> tuple[list[dict[str, Any]], int]:
        """An instance's robots (the first few, by id) and how many matched."""
        ...

    def confirm_kick(self, robot_id: str) -> None:
        """Ask, then kick the robot."""

    def confirm_drain(self, instance: str) -> None:
        """Ask, then drain the instance."""

    def confirm_undrain(self, instance: str) -> None:
        """Ask, then undrain the instance."""


def cell(text: str, style: str | None = None) -> Text:
    """One line of text in a table cell or title, cut with an ellipsis where it does not fit."""
    return Text(text, style=style or "", no_wrap=True, overflow="ellipsis")


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; ``y`` confirms, ``n`` or Escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "Cancel", show=False),
    ]
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical { width: 70; max-width: 100%; height: auto; border: thick $warning;
        padding: 0 1; background: $surface; }
    ConfirmScreen Label { width: 100%; }
    """

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        """The question and the keys that answer it."""
        with Vertical():
            yield Label(Text(self.question))
            yield Label(Text("y: yes    n: no", style="bold"))

    def action_answer(self, yes: bool) -> None:
        """Close with the answer."""
        self.dismiss(yes)


class PromptScreen(ModalScreen[str | None]):
    """One line of input (a glob); Enter applies it, Escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    PromptScreen { align: center middle; }
    PromptScreen > Vertical { width: 70; max-width: 100%; height: auto; border: thick $accent;
        padding: 0 1; background: $surface; }
    """

    def __init__(self, prompt: str, value: str) -> None:
        super().__init__()
        self.prompt, self.value = prompt, value

    def compose(self) -> ComposeResult:
        """The prompt and its input line."""
        with Vertical():
            yield Label(Text(self.prompt))
            yield Input(value=self.value, id="prompt")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter: the text typed."""
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        """Escape: nothing changes."""
        self.dismiss(None)


class RobotScreen(Screen[None]):
    """One robot: its entry (``wsctl show``) and its history (``wsctl history``)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("k", "kick", "Kick"),
        Binding("r", "reload", "Reload"),
    ]
    DEFAULT_CSS = """
    RobotScreen #robot-title { height: 1; background: $primary-background; }
    RobotScreen #robot-body { text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def __init__(self, top: TopActions, robot_id: str) -> None:
        super().__init__()
        self.top, self.robot_id = top, robot_id

    def compose(self) -> ComposeResult:
        """Title, the entry and history (loaded in the background), keys."""
        yield Static(cell(f"robot {id_cell(self.robot_id, TITLE_ID_MAX)}"), id="robot-title")
        with VerticalScroll():
            yield Static(Text("loading..."), id="robot-body")
        yield Footer()

    def on_mount(self) -> None:
        """Read the entry and the history."""
        self.action_reload()

    def action_reload(self) -> None:
        """Read the entry and the history again."""
        self.run_worker(self.top.guarded(self._load()), exit_on_error=False, exclusive=True)

    async def _load(self) -> None:
        lines = await self.top.robot_lines(self.robot_id)
        self.query_one("#robot-body", Static).update(Text("\n".join(lines)))

    def action_kick(self) -> None:
        """Kick this robot, after a confirmation."""
        self.top.confirm_kick(self.robot_id)


class InstanceScreen(Screen[None]):
    """One instance's robots (their registry entries, the first
    :data:`wsctl.cli.tui.app.ROBOTS_SHOWN` by id,
    matching the robot glob); Enter opens a robot."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("k", "kick", "Kick"),
        Binding("d", "drain", "Drain"),
        Binding("u", "undrain", "Undrain"),
        Binding("r", "reload", "Reload"),
    ]
    DEFAULT_CSS = """
    InstanceScreen #instance-title { height: 1; background: $primary-background;
        text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def __init__(self, top: TopActions, instance_id: str) -> None:
        super().__init__()
        self.top, self.instance_id = top, instance_id

    def compose(self) -> ComposeResult:
        """Title, the robots table, keys."""
        yield Static(
            cell(f"robots of {id_cell(self.instance_id, TITLE_ID_MAX)}: loading..."),
            id="instance-title",
        )
        table: DataTable[Text] = DataTable(id="robots", cursor_type="row", zebra_stripes=True)
        table.add_columns("ROBOT", "STATE", "HEARTBEAT", "CONNECTED")
        yield table
        yield Footer()

    def on_mount(self) -> None:
        """Read the robots."""
        self.action_reload()

    def action_reload(self) -> None:
        """Read the robots again."""
        self.run_worker(self.top.guarded(self._load()), exit_on_error=False, exclusive=True)

    async def _load(self) -> None:
        from wsctl.durations import human_duration

        rows, matched = await self.top.instance_robots(self.instance_id)
        table = self.query_one("#robots", DataTable)
        table.clear()
        # the robot's id never pushes its state and ages off the screen
        limit = max(16, (table.size.width or self.app.size.width) - 40)
        for row in rows:
            state = str(row["state"])
            table.add_row(
                cell(id_cell(row["robot_id"], limit)),
                cell(state, "green" if state == "online" else "red"),
                cell(human_duration(row.get("heartbeat_age_s"))),
                cell(human_duration(row.get("connected_for_s"))),
                key=str(row["robot_id"]),
            )
        glob = self.top.robot_glob
        shown = f"first {len(rows)} of {matched}" if matched > len(rows) else f"{matched}"
        title = f"robots of {id_cell(self.instance_id, TITLE_ID_MAX)}: {shown}"
        if glob:
            title += f" matching {printable(glob)}"
        self.query_one("#instance-title", Static).update(cell(title))

    def _robot(self) -> str | None:
        table = self.query_one("#robots", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key
        return str(key.value)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on a robot: its entry and history."""
        self.app.push_screen(RobotScreen(self.top, str(event.row_key.value)))

    def action_kick(self) -> None:
        """Kick the highlighted robot, after a confirmation."""
        robot = self._robot()
        if robot is not None:
            self.top.confirm_kick(robot)

    def action_drain(self) -> None:
        """Drain this instance, after a confirmation."""
        self.top.confirm_drain(self.instance_id)

    def action_undrain(self) -> None:
        """Undrain this instance, after a confirmation."""
        self.top.confirm_undrain(self.instance_id)
