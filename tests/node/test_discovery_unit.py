"""Discovery without a network: TXT parsing and validation, recommend, the state
machine that keeps the node list, the zeroconf->trio bridge, interface choice.

Nothing here opens a zeroconf socket; the tests that need one stub ``Zeroconf``
out so that a regression fails loudly instead of touching a real interface.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import pytest
import trio
import trio.testing
from zeroconf import ServiceInfo, ServiceStateChange

from chinwag.cli import discover_cmd
from chinwag.cli.common import CliError
from chinwag.node import discovery
from chinwag.node.discovery import (
    SERVICE_TYPE,
    DiscoveredNode,
    Discovery,
    DiscoveryError,
    parse_info,
    parse_record,
    parse_txt,
    recommend,
    resolve_interfaces,
)
from chinwag.protocol.addresses import node_id_text

ID_A = node_id_text(bytes(range(32)))
ID_B = node_id_text(bytes(range(1, 33)))
ID_OWN = node_id_text(bytes(32))


def txt(**fields: str | bytes | None) -> dict[bytes, bytes | None]:
    base: dict[str, str | bytes | None] = {
        "id": ID_A,
        "name": "kitchen",
        "v": "1",
        "path": "/",
        "users": "3",
        "conns": "5",
    }
    base.update(fields)
    out: dict[bytes, bytes | None] = {}
    for key, value in base.items():
        if value is not None or key in fields:
            out[key.encode()] = value.encode() if isinstance(value, str) else value
    return out


def drop(key: str) -> dict[bytes, bytes | None]:
    props = txt()
    del props[key.encode()]
    return props


@pytest.fixture
def no_zeroconf(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open zeroconf in these tests is a bug: fail, never touch a NIC."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("zeroconf must not start in a unit test")

    monkeypatch.setattr(discovery, "Zeroconf", refuse)


# ---------------------------------------------------------------- TXT parsing


def test_a_well_formed_record_gives_a_node() -> None:
    node = parse_record(txt(), ["10.77.0.5"], 7600)
    assert node == DiscoveredNode(ID_A, "kitchen", "http://10.77.0.5:7600", 1, 3, 5)


def test_path_other_than_root_is_part_of_the_url() -> None:
    node = parse_record(txt(path="/chat"), ["10.77.0.5"], 80)
    assert node is not None and node.url == "http://10.77.0.5:80/chat"


def test_a_tls_node_is_dialled_over_https() -> None:
    node = parse_record(txt(tls="1"), ["10.77.0.5"], 7600)
    assert node is not None and node.url == "https://10.77.0.5:7600"
    node = parse_record(txt(tls="0"), ["10.77.0.5"], 7600)
    assert node is not None and node.url == "http://10.77.0.5:7600"


def test_ipv4_is_preferred_and_ipv6_is_bracketed() -> None:
    node = parse_record(txt(), ["fd00::1", "10.77.0.5"], 1)
    assert node is not None and node.url == "http://10.77.0.5:1"
    node = parse_record(txt(), ["fd00::1"], 1)
    assert node is not None and node.url == "http://[fd00::1]:1"


def test_unusable_addresses_are_skipped() -> None:
    node = parse_record(txt(), ["0.0.0.0", "224.0.0.251", "fe80::1", "10.77.0.9"], 1)
    assert node is not None and node.url == "http://10.77.0.9:1"
    assert parse_record(txt(), ["0.0.0.0", "255.255.255.255", "fe80::1", "junk"], 1) is None


def test_unknown_keys_are_ignored_and_keys_are_case_insensitive() -> None:
    props = txt(extra="whatever")
    props[b"ID"] = props.pop(b"id")
    node = parse_record(props, ["10.77.0.5"], 1)
    assert node is not None and node.node_id == ID_A


def test_first_spelling_of_a_key_wins() -> None:
    props = {b"ID": ID_A.encode(), **txt(id=ID_B)}
    node = parse_record(props, ["10.77.0.5"], 1)
    assert node is not None and node.node_id == ID_A


@pytest.mark.parametrize(
    "props",
    [
        drop("id"),
        txt(id=ID_A.upper()),
        txt(id=ID_A[:-1]),
        txt(id=ID_A + "a"),
        txt(id=ID_A[:-4] + "===="),
        txt(id=ID_A[:-1] + "1"),  # not base32
        txt(id=None),  # key without '='
        drop("name"),
        txt(name=""),
        txt(name="Kitchen"),
        txt(name="a" * 64),
        txt(name="bad name"),
        drop("v"),
        txt(v="0"),
        txt(v="x"),
        txt(v="+1"),
        txt(v=" 1"),
        txt(v="12345"),
        drop("users"),
        txt(users="-1"),
        txt(users="1e3"),
        txt(users="1_000"),
        txt(users="\u0663"),  # an Arabic-Indic digit: int() takes it, we do not
        txt(users="1234567890"),
        txt(users=""),
        drop("conns"),
        txt(conns="0x10"),
        txt(path="chat"),
        txt(path="/a b"),
        txt(path="/a?b"),
        txt(path="/" + "a" * 100),
        txt(path=""),
        txt(name=b"\xff\xfe"),
        txt(id=b"\xc3"),
        {b"\xff": b"x", **txt()},  # a key that is not ASCII
    ],
)
def test_malformed_records_are_refused(props: dict[bytes, bytes | None]) -> None:
    assert parse_record(props, ["10.77.0.5"], 7600) is None


@pytest.mark.parametrize("port", [0, -1, 65536, None])
def test_bad_ports_are_refused(port: int | None) -> None:
    assert parse_record(txt(), ["10.77.0.5"], port) is None


def test_no_address_is_refused() -> None:
    assert parse_record(txt(), [], 7600) is None


def test_parse_txt_decodes_and_lowercases() -> None:
    assert parse_txt({b"ID": b"x", b"flag": None}) == {"id": "x"}
    assert parse_txt({b"id": b"\xff"}) is None


def test_parse_info_reads_a_zeroconf_record() -> None:
    info = ServiceInfo(
        SERVICE_TYPE,
        f"kitchen-x.{SERVICE_TYPE}",
        port=7600,
        properties={"id": ID_A, "name": "kitchen", "v": "1", "users": "0", "conns": "2"},
        parsed_addresses=["10.77.0.5"],
    )
    assert parse_info(info) == DiscoveredNode(ID_A, "kitchen", "http://10.77.0.5:7600", 1, 0, 2)


# ---------------------------------------------------------------- recommend


def node(node_id: str, name: str, users: int, conns: int) -> DiscoveredNode:
    return DiscoveredNode(node_id, name, f"http://10.77.0.1:{users + 1}", 1, users, conns)


def test_recommend_picks_the_lowest_load() -> None:
    assert recommend([]) is None
    busy, quiet, quieter = node(ID_A, "a", 9, 1), node(ID_B, "b", 2, 50), node(ID_OWN, "c", 2, 7)
    assert recommend([busy, quiet, quieter]) is quieter
    assert recommend([busy]) is busy
    # Ties are broken deterministically (name, then id), whatever the order.
    twin_a, twin_b = node(ID_A, "x", 1, 1), node(ID_B, "y", 1, 1)
    assert recommend([twin_b, twin_a]) is twin_a


# ---------------------------------------------------------------- interfaces


def test_interfaces_ip_literals_pass_and_names_resolve() -> None:
    assert resolve_interfaces(["10.77.0.1", "127.0.0.1", "10.77.0.1"]) == [
        "10.77.0.1",
        "127.0.0.1",
    ]
    assert "127.0.0.1" in resolve_interfaces(["lo"])


@pytest.mark.parametrize("bad", [["no-such-if0"], [], ["10.77.0.300"]])
def test_unknown_interfaces_are_an_error_never_all_interfaces(bad: list[str]) -> None:
    with pytest.raises(DiscoveryError):
        resolve_interfaces(bad)


def test_instance_name_is_one_short_label() -> None:
    name = discovery._instance_name("my.node_" + "x" * 60, ID_A)
    label = name.removesuffix("." + SERVICE_TYPE)
    assert "." not in label and len(label.encode()) <= 63 and label.endswith(ID_A[:16])


def make_discovery(host: str | None, interfaces: list[str] | None) -> Discovery:
    return Discovery(
        node_id=ID_OWN,
        name="own",
        port=7600,
        host=host,
        interfaces=interfaces,
        load=lambda: (0, 0),
        on_change=lambda node_id, node: None,
    )


def test_plan_keeps_a_loopback_node_off_the_lan() -> None:
    assert make_discovery("127.0.0.1", None)._plan() == (["127.0.0.1"], ["127.0.0.1"])
    assert make_discovery("127.0.0.1", [])._plan() == (["127.0.0.1"], ["127.0.0.1"])
    assert make_discovery("localhost", None)._plan() == (["127.0.0.1"], ["127.0.0.1"])


def test_plan_a_node_on_one_address_stays_on_its_interface() -> None:
    assert make_discovery("10.77.0.1", None)._plan() == (["10.77.0.1"], ["10.77.0.1"])


def test_plan_announces_the_listening_address_or_the_interfaces() -> None:
    assert make_discovery("10.77.0.1", ["127.0.0.1"])._plan() == (["127.0.0.1"], ["10.77.0.1"])
    assert make_discovery("0.0.0.0", ["127.0.0.1"])._plan() == (["127.0.0.1"], ["127.0.0.1"])
    interfaces, addresses = make_discovery("0.0.0.0", None)._plan()
    assert interfaces is None and addresses


def test_plan_refuses_an_unknown_interface() -> None:
    with pytest.raises(DiscoveryError):
        make_discovery("0.0.0.0", ["no-such-if0"])._plan()


async def test_run_refuses_an_unknown_interface_before_any_socket(no_zeroconf: None) -> None:
    with pytest.raises(DiscoveryError, match="no-such-if0"):
        await make_discovery("0.0.0.0", ["no-such-if0"]).run()


async def test_discover_once_refuses_an_unknown_interface(no_zeroconf: None) -> None:
    with pytest.raises(DiscoveryError):
        await discovery.discover_once(0.1, ["no-such-if0"])


# ---------------------------------------------------------------- bridge


async def test_bridge_delivers_and_never_raises() -> None:
    send, receive = trio.open_memory_channel[tuple[str, bool]](1)
    bridge = discovery._Bridge(trio.lowlevel.current_trio_token(), send)
    name = f"a.{SERVICE_TYPE}"
    bridge(name=name, state_change=ServiceStateChange.Added, zeroconf=None, service_type="x")
    bridge(name=name, state_change=ServiceStateChange.Removed)  # channel full: dropped
    bridge(name=123, state_change=ServiceStateChange.Added)  # junk: dropped
    bridge(name="x" * 300, state_change=ServiceStateChange.Added)  # too long: dropped
    bridge()  # nothing at all: dropped
    await trio.testing.wait_all_tasks_blocked()
    assert receive.receive_nowait() == (name, False)
    assert bridge.dropped == 4
    await receive.aclose()
    bridge(name=name, state_change=ServiceStateChange.Updated)  # closed: dropped
    await trio.testing.wait_all_tasks_blocked()
    assert bridge.dropped == 5


def test_bridge_after_trio_has_gone_does_not_raise() -> None:
    async def grab() -> tuple[trio.lowlevel.TrioToken, trio.MemorySendChannel[Any]]:
        send, _ = trio.open_memory_channel[tuple[str, bool]](1)
        return trio.lowlevel.current_trio_token(), send

    token, send = trio.run(grab)
    bridge = discovery._Bridge(token, send)
    bridge(name=f"a.{SERVICE_TYPE}", state_change=ServiceStateChange.Added)
    assert bridge.dropped == 1


# ---------------------------------------------------------------- the tracker


def info(node_id: str, name: str = "n", users: int = 0, port: int = 7600) -> ServiceInfo:
    return ServiceInfo(
        SERVICE_TYPE,
        f"{name}-{node_id[:8]}.{SERVICE_TYPE}",
        port=port,
        properties={"id": node_id, "name": name, "v": "1", "users": str(users), "conns": "0"},
        parsed_addresses=["10.77.0.5"],
    )


class FakeNetwork:
    """Answers lookups from a dict; a lookup can be held until released."""

    def __init__(self) -> None:
        self.records: dict[str, ServiceInfo | None] = {}
        self.hold: dict[str, trio.Event] = {}
        self.lookups = 0

    async def resolve(self, name: str) -> ServiceInfo | None:
        self.lookups += 1
        if name in self.hold:
            await self.hold[name].wait()
        record = self.records.get(name)
        if isinstance(record, Exception):
            raise record
        return record


class Harness:
    def __init__(self, own_id: str | None = ID_OWN) -> None:
        self.net = FakeNetwork()
        self.changes: list[tuple[str, DiscoveredNode | None]] = []
        self.tracker = discovery._Tracker(
            own_id=own_id, resolve=self.net.resolve, on_change=self.on_change
        )
        self.send, self.receive = trio.open_memory_channel[tuple[str, bool]](64)

    def on_change(self, node_id: str, node: DiscoveredNode | None) -> None:
        self.changes.append((node_id, node))

    async def event(self, name: str, removed: bool = False) -> None:
        await self.send.send((name, removed))
        await trio.testing.wait_all_tasks_blocked()


@pytest.fixture
async def harness(nursery: trio.Nursery) -> Harness:
    h = Harness()
    nursery.start_soon(h.tracker.run, h.receive)
    await trio.testing.wait_all_tasks_blocked()
    return h


async def test_added_updated_removed(harness: Harness) -> None:
    record = info(ID_A, "alpha", users=3)
    harness.net.records[record.name] = record
    await harness.event(record.name)
    assert [n.users_online for n in harness.tracker.nodes()] == [3]
    assert harness.changes[-1][0] == ID_A and harness.changes[-1][1] is not None

    harness.net.records[record.name] = info(ID_A, "alpha", users=1)
    await harness.event(record.name)
    assert harness.tracker.nodes()[0].users_online == 1
    assert len(harness.changes) == 2

    await harness.event(record.name)  # the same again: no change reported
    assert len(harness.changes) == 2

    await harness.event(record.name, removed=True)
    assert harness.tracker.nodes() == [] and harness.changes[-1] == (ID_A, None)


async def test_our_own_node_id_is_skipped(harness: Harness) -> None:
    record = info(ID_OWN, "me")
    harness.net.records[record.name] = record
    await harness.event(record.name)
    assert harness.tracker.nodes() == [] and harness.changes == []


async def test_malformed_records_are_counted_and_dropped(harness: Harness) -> None:
    good = info(ID_A, "alpha")
    harness.net.records[good.name] = good
    await harness.event(good.name)
    # The same service now says something malformed: it is no longer listed.
    bad = ServiceInfo(
        SERVICE_TYPE,
        good.name,
        port=7600,
        properties={"id": "NOT-AN-ID", "name": "alpha", "v": "1", "users": "0", "conns": "0"},
        parsed_addresses=["10.77.0.5"],
    )
    harness.net.records[good.name] = bad
    await harness.event(good.name)
    assert harness.tracker.nodes() == [] and harness.tracker.malformed == 1
    # A lookup that raises (a name zeroconf refuses) is malformed too.
    harness.net.records["weird"] = ValueError("bad name")  # type: ignore[assignment]
    await harness.event("weird")
    assert harness.tracker.malformed == 2


async def test_no_answer_keeps_what_we_knew(harness: Harness) -> None:
    record = info(ID_A, "alpha")
    harness.net.records[record.name] = record
    await harness.event(record.name)
    harness.net.records[record.name] = None
    await harness.event(record.name)
    assert len(harness.tracker.nodes()) == 1 and harness.tracker.unresolved == 1


async def test_a_removal_during_a_lookup_is_not_undone(harness: Harness) -> None:
    record = info(ID_A, "alpha")
    harness.net.records[record.name] = record
    harness.net.hold[record.name] = trio.Event()
    await harness.event(record.name)
    await harness.event(record.name, removed=True)
    harness.net.hold.pop(record.name).set()
    await trio.testing.wait_all_tasks_blocked()
    assert harness.tracker.nodes() == [] and harness.changes == []


async def test_a_slow_old_lookup_does_not_overwrite_a_newer_one(harness: Harness) -> None:
    old = info(ID_A, "alpha", users=9)
    harness.net.records[old.name] = old
    gate = harness.net.hold[old.name] = trio.Event()
    await harness.event(old.name)  # lookup 1 held, sees users=9
    harness.net.records[old.name] = info(ID_A, "alpha", users=1)
    del harness.net.hold[old.name]
    await harness.event(old.name)  # lookup 2 runs at once: users=1
    assert harness.tracker.nodes()[0].users_online == 1
    harness.net.records[old.name] = old
    gate.set()  # lookup 1 finishes late with the stale answer
    await trio.testing.wait_all_tasks_blocked()
    assert harness.tracker.nodes()[0].users_online == 1


async def test_two_services_claiming_one_id(harness: Harness) -> None:
    first, second = info(ID_A, "alpha"), info(ID_A, "alpha2")
    harness.net.records.update({first.name: first, second.name: second})
    await harness.event(first.name)
    await harness.event(second.name)
    assert len(harness.tracker.nodes()) == 1
    await harness.event(first.name, removed=True)
    assert len(harness.tracker.nodes()) == 1  # still claimed by the second
    await harness.event(second.name, removed=True)
    assert harness.tracker.nodes() == []


async def test_a_service_that_changes_its_id(harness: Harness) -> None:
    record = info(ID_A, "alpha")
    harness.net.records[record.name] = record
    await harness.event(record.name)
    moved = ServiceInfo(
        SERVICE_TYPE,
        record.name,
        port=7600,
        properties={"id": ID_B, "name": "alpha", "v": "1", "users": "0", "conns": "0"},
        parsed_addresses=["10.77.0.5"],
    )
    harness.net.records[record.name] = moved
    await harness.event(record.name)
    assert [n.node_id for n in harness.tracker.nodes()] == [ID_B]
    assert (ID_A, None) in harness.changes


async def test_tracked_services_are_bounded(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(discovery, "MAX_SERVICES", 3)
    names = []
    for i in range(5):
        record = info(node_id_text(os.urandom(32)), f"n{i}")
        harness.net.records[record.name] = record
        names.append(record.name)
        await harness.event(record.name)
    assert len(harness.tracker.nodes()) == 3 and harness.tracker.overflow == 2
    await harness.event(names[0], removed=True)  # room again
    await harness.event(names[4])
    assert len(harness.tracker.nodes()) == 3


async def test_a_failing_on_change_does_not_stop_discovery(nursery: trio.Nursery) -> None:
    h = Harness()

    def boom(node_id: str, node: DiscoveredNode | None) -> None:
        raise RuntimeError("callback bug")

    h.tracker._on_change = boom
    nursery.start_soon(h.tracker.run, h.receive)
    first, second = info(ID_A, "alpha"), info(ID_B, "beta")
    h.net.records.update({first.name: first, second.name: second})
    await h.event(first.name)
    await h.event(second.name)
    assert len(h.tracker.nodes()) == 2


# ---------------------------------------------------------------- the CLI


def cli_args(**kw: Any) -> argparse.Namespace:
    return argparse.Namespace(**{"timeout": 3.0, "interface": [], "json": False, **kw})


def fake_nodes() -> list[DiscoveredNode]:
    return [node(ID_A, "busy", 7, 9), node(ID_B, "quiet", 1, 2)]


@pytest.fixture
def fake_discover(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, Any]]:
    calls: list[tuple[float, Any]] = []

    async def discover_once(timeout: float, interfaces: Any) -> list[DiscoveredNode]:
        calls.append((timeout, interfaces))
        return fake_nodes()

    monkeypatch.setattr(discover_cmd, "discover_once", discover_once)
    return calls


def test_cli_json(fake_discover: list[Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert discover_cmd.cmd_discover(cli_args(json=True, interface=["lo"])) == 0
    assert fake_discover == [(3.0, ["lo"])]
    out = json.loads(capsys.readouterr().out)
    assert [set(o) for o in out] == [
        {"node_id", "name", "url", "users_online", "connections", "recommended"}
    ] * 2
    assert [(o["name"], o["recommended"]) for o in out] == [("busy", False), ("quiet", True)]
    assert out[1]["users_online"] == 1 and out[1]["connections"] == 2


def test_cli_text_marks_the_recommended(
    fake_discover: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert discover_cmd.cmd_discover(cli_args()) == 0
    assert fake_discover == [(3.0, None)]
    lines = capsys.readouterr().out.splitlines()
    star = [line for line in lines if line.startswith("* ")]
    assert len(star) == 2 and "quiet" in star[0] and ID_B[:12] in star[0]
    assert "users online 1" in star[0] and "connections 2" in star[0]
    assert any(line.startswith("  busy") for line in lines)


@pytest.mark.parametrize("timeout", [0.0, -1.0, 61.0, float("nan"), float("inf")])
def test_cli_refuses_bad_timeouts(fake_discover: list[Any], timeout: float) -> None:
    with pytest.raises(CliError) as caught:
        discover_cmd.cmd_discover(cli_args(timeout=timeout))
    assert caught.value.exit_code == 2 and fake_discover == []


def test_cli_unknown_interface_is_a_clear_error(no_zeroconf: None) -> None:
    with pytest.raises(CliError, match="no-such-if0") as caught:
        discover_cmd.cmd_discover(cli_args(interface=["no-such-if0"]))
    assert caught.value.exit_code == 2


def test_cli_parser_registers_discover() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    discover_cmd.register(sub)
    args = parser.parse_args(["discover", "--interface", "a", "--interface", "b", "--json"])
    assert args.interface == ["a", "b"] and args.json and args.timeout == 3.0
    assert args.handler is discover_cmd.cmd_discover


# ---------------------------------------------------------------- discover's browse window


async def test_a_lookup_in_flight_when_the_window_ends_is_still_listed(autojump_clock) -> None:
    # `chinwag discover --timeout 2` once missed a node on a loaded machine:
    # its service was seen but the lookup was still running at the deadline.
    h = Harness()
    record = info(ID_A, "alpha")
    h.net.records[record.name] = record
    gate = h.net.hold[record.name] = trio.Event()

    async def answer_late() -> None:
        await trio.sleep(1.5)
        gate.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer_late)
        await h.send.send((record.name, False))
        started = trio.current_time()
        nodes = await discovery.browse_window(h.tracker, h.receive, window=1.0, settle=2.0)
    assert [n.node_id for n in nodes] == [ID_A]
    assert trio.current_time() - started == pytest.approx(1.5)


async def test_the_wait_for_lookups_after_the_window_is_bounded(autojump_clock) -> None:
    h = Harness()
    held, quick = info(ID_A, "alpha"), info(ID_B, "beta")
    h.net.records.update({held.name: held, quick.name: quick})
    h.net.hold[held.name] = trio.Event()  # never answered
    await h.send.send((held.name, False))
    await h.send.send((quick.name, False))
    started = trio.current_time()
    nodes = await discovery.browse_window(h.tracker, h.receive, window=1.0, settle=2.0)
    assert [n.node_id for n in nodes] == [ID_B]
    assert trio.current_time() - started == pytest.approx(3.0)


async def test_with_nothing_in_flight_the_window_ends_on_time(autojump_clock) -> None:
    h = Harness()
    record = info(ID_A, "alpha")
    h.net.records[record.name] = record
    await h.send.send((record.name, False))
    started = trio.current_time()
    nodes = await discovery.browse_window(h.tracker, h.receive, window=1.0, settle=2.0)
    assert [n.node_id for n in nodes] == [ID_A]
    assert trio.current_time() - started == pytest.approx(1.0)
