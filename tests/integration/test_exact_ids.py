"""Every command that reads or acts on what a registry holds takes an id by its exact bytes:
ids wsctl would never create (control characters, over 256 bytes, bytes that are not UTF-8)
can be in a registry (written by another program, restored from a file), and ``show`` lists
them and points at ``history``; ``history``, ``send``, ``kick``, ``ping``, ``--robots-from``
and ``events --robot`` take them as they are, never refusing them as bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Backend, ainvoke, open_test_store
from tests.fleet import running_fleet
from tests.seedlike import seed_store_connection

ODD_IDS = {
    "control": "ctl\x1b]0;x\x07bot",
    "not-utf8": "nu\udcff\udcfe",
    "long": "r" * 300,
}


@pytest.mark.parametrize("robot_id", ODD_IDS.values(), ids=ODD_IDS.keys())
async def test_history_takes_every_id_that_show_and_doctor_take(
    single: Backend, robot_id: str
) -> None:
    async with open_test_store(single) as store:
        await seed_store_connection(store.client, robot_id, "gw-gone")
        removed = await ainvoke(["registry", "rm", robot_id], single.env)  # writes an event
        assert removed.code == 0, removed
        await seed_store_connection(store.client, robot_id, "gw-gone")
    shown = await ainvoke(["show", robot_id], single.env)
    assert shown.code == 0 and "wsctl history ROBOT" in shown.out, shown
    doctor = await ainvoke(["doctor", robot_id], single.env)
    assert doctor.code != 2, doctor
    history = await ainvoke(["history", robot_id, "-o", "jsonl"], single.env)
    assert history.code == 0, history
    rows = [json.loads(line) for line in history.out.splitlines()]
    assert [r["event"] for r in rows] == ["removed"]
    events = await ainvoke(["events", "--robot", robot_id, "-o", "jsonl"], single.env)
    assert events.code == 0 and [json.loads(x)["event"] for x in events.out.splitlines()] == [
        "removed"
    ]


@pytest.mark.parametrize("robot_id", ODD_IDS.values(), ids=ODD_IDS.keys())
async def test_send_kick_and_robots_from_take_a_registered_id_by_its_exact_bytes(
    single: Backend, robot_id: str, tmp_path: Path
) -> None:
    """The registry names gw-a, which holds no such socket: every command reaches it and
    says so (not connected), none refuses the id."""
    ids = tmp_path / "ids.txt"
    ids.write_bytes(robot_id.encode("utf-8", "surrogateescape") + b"\n")
    async with running_fleet(single.env, names=("gw-a",)), open_test_store(single) as store:
        await seed_store_connection(store.client, robot_id, "gw-a")
        sent = await ainvoke(["send", robot_id, "hi", "-o", "json"], single.env)
        assert sent.code == 1 and json.loads(sent.out)["status"] == "not_connected", sent
        await seed_store_connection(store.client, robot_id, "gw-a")
        kicked = await ainvoke(["kick", robot_id, "-o", "json"], single.env)
        assert kicked.code == 1 and json.loads(kicked.out)["status"] == "not_connected", kicked
        await seed_store_connection(store.client, robot_id, "gw-a")
        fanned = await ainvoke(["send", "hi", "--robots-from", str(ids), "-o", "json"], single.env)
        assert fanned.code == 1, fanned
        assert json.loads(fanned.out)["not_connected"] == 1


async def test_ping_takes_an_instance_id_by_its_exact_bytes(single: Backend) -> None:
    pinged = await ainvoke(["ping", "gw\x1b[2J", "-o", "json"], single.env)
    assert pinged.code == 5, pinged
    assert json.loads(pinged.out)["status"] == "instance_unreachable"


async def test_what_send_kick_ping_and_set_say_names_an_odd_id_by_its_shell_word(
    single: Backend,
) -> None:
    """An id holding bytes that are not UTF-8 or control characters was printed in the
    Python-like escape (`nu\\xff\\xfe: not registered`), which reads like an id holding the
    text `\\xff`; what people read names it as its `$'...'` word, as tables and errors do.
    `registry set` also echoed a value whole (a 100 KB note: a 100 KB line)."""
    robot_id = ODD_IDS["not-utf8"]
    sent = await ainvoke(["send", robot_id, "hi"], single.env)
    assert sent.code == 4 and sent.out == "$'nu\\xff\\xfe': not registered (no registry entry)\n"
    kicked = await ainvoke(["kick", robot_id], single.env)
    assert kicked.code == 4 and kicked.out.startswith("$'nu\\xff\\xfe': not registered"), kicked
    pinged = await ainvoke(["ping", "gw\x1b[2J"], single.env)
    assert pinged.code == 5 and pinged.out.startswith("$'gw\\x1b[2J': instance unreachable")
    note = "n" * 100_000
    created = await ainvoke(
        ["registry", "set", robot_id, "instance_id=gw-x", f"note={note}", "--create"], single.env
    )
    assert created.code == 0, created
    (line,) = created.err.splitlines()
    assert line.startswith("set $'nu\\xff\\xfe': robot_id=$'nu\\xff\\xfe', "), line[:80]
    assert line.endswith("nnn… (100,000 chars)") and len(line) < 1000, line[-80:]


async def test_show_names_odd_values_by_their_shell_words_and_cuts_long_ones(
    single: Backend,
) -> None:
    """`show` printed its values in the escape that reads like the text (`robot_id
    nu\\xff\\xfe`) and whole: a 20 KB instance id was a 20 KB line. Values are now shell
    words, cut like table cells (JSON keeps them whole)."""
    robot_id, owner = ODD_IDS["not-utf8"], "g" * 20_000
    async with open_test_store(single) as store:
        await seed_store_connection(store.client, robot_id, owner)
    shown = await ainvoke(["show", robot_id], single.env)
    assert shown.code == 0, shown
    lines = shown.out.splitlines()
    assert "robot_id                $'nu\\xff\\xfe'" in lines
    assert max(len(line) for line in lines) < 600
    assert any(line.endswith("ggg… (20,000 chars)") for line in lines)
    assert "2 cell(s) longer than" in shown.err
    whole = await ainvoke(["show", robot_id, "-o", "json"], single.env)
    assert json.loads(whole.out)["instance_id"] == owner


async def test_the_empty_id_shows_as_two_quotes_not_a_blank_cell(single: Backend) -> None:
    """The key that is the bare prefix (`ws_conn:`) is the empty robot id: tables showed it
    as a blank cell, which reads as no robot at all; it is `''`, what bash takes back."""
    async with open_test_store(single) as store:
        await seed_store_connection(store.client, "", "gw-gone")
    listed = await ainvoke(["list", "robots"], single.env)
    assert listed.code == 0, listed
    (row,) = [line for line in listed.out.splitlines() if "gw-gone" in line]
    assert row.split()[0] == "''", row
