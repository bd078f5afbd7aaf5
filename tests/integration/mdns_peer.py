"""A ``Discovery`` without a node, for the mDNS tests. Runs only inside a test namespace.

    python mdns_peer.py --id ID --name NAME --port P --users U --conns C
                        [--interface IF]... [--host H] [--reannounce S]

stdout: JSON lines ``{"event": "started", "name": ...}`` and
``{"event": "change", "node_id": ..., "node": {...} | null}``.
stdin: ``load U C`` sets the load announced; ``quit`` or EOF unregisters and exits.

    python mdns_peer.py --raw KEY=VALUE ... --port P [--interface IF]...

registers a service with exactly that TXT record (malformed on purpose), then
waits for ``quit``/EOF like the above.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import trio


def _in_own_netns() -> bool:
    """True only inside a namespace the tests made (``/run/netns/chinwag-*``)."""
    try:
        own = os.stat("/proc/self/ns/net").st_ino
        made = [
            os.stat(os.path.join("/run/netns", name)).st_ino
            for name in os.listdir("/run/netns")
            if name.startswith("chinwag-")
        ]
    except OSError:
        return False
    return own in made


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def lines() -> trio.abc.ReceiveChannel[str]:
    send, receive = trio.open_memory_channel[str](16)

    async def read() -> None:
        stdin = trio.lowlevel.FdStream(os.dup(0))
        buf = b""
        async with send, stdin:
            while chunk := await stdin.receive_some(4096):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    await send.send(line.decode().strip())

    trio.lowlevel.spawn_system_task(read)
    return receive


async def run_discovery(args: argparse.Namespace) -> None:
    from chinwag.node.discovery import Discovery

    load = [args.users, args.conns]

    def on_change(node_id: str, node: object) -> None:
        emit(
            event="change",
            node_id=node_id,
            node=None if node is None else dataclasses.asdict(node),  # type: ignore[call-overload]
        )

    discovery = Discovery(
        node_id=args.id,
        name=args.name,
        port=args.port,
        host=args.host,
        interfaces=args.interface or None,
        load=lambda: (load[0], load[1]),
        on_change=on_change,
        reannounce_every=args.reannounce,
    )
    commands = await lines()
    async with trio.open_nursery() as nursery:
        await nursery.start(discovery.run)
        emit(event="started", name=args.name)
        async for line in commands:
            if line.startswith("load "):
                _, users, conns = line.split()
                load[:] = [int(users), int(conns)]
            elif line == "quit":
                break
        nursery.cancel_scope.cancel()
    emit(event="stopped", stats=discovery.statistics())


async def run_raw(args: argparse.Namespace) -> None:
    from zeroconf import ServiceInfo, Zeroconf

    from chinwag.node.discovery import SERVICE_TYPE, resolve_interfaces

    interfaces = resolve_interfaces(args.interface) if args.interface else None
    props = dict(item.split("=", 1) for item in args.raw)
    info = ServiceInfo(
        SERVICE_TYPE,
        f"raw-{os.getpid()}.{SERVICE_TYPE}",
        port=args.port,
        properties=props,
        parsed_addresses=interfaces or ["127.0.0.1"],
    )
    zc = await trio.to_thread.run_sync(lambda: Zeroconf(interfaces=interfaces or ["127.0.0.1"]))
    try:
        await trio.to_thread.run_sync(zc.register_service, info)
        emit(event="started", name=info.name)
        async for line in await lines():
            if line == "quit":
                break
    finally:
        await trio.to_thread.run_sync(zc.close)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--id")
    parser.add_argument("--name", default="peer")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--users", type=int, default=0)
    parser.add_argument("--conns", type=int, default=0)
    parser.add_argument("--host")
    parser.add_argument("--interface", action="append", default=[])
    parser.add_argument("--reannounce", type=float, default=0.5)
    parser.add_argument("--raw", nargs="+")
    args = parser.parse_args()
    if not _in_own_netns():
        print("mdns_peer: refusing to run mDNS outside a test network namespace", file=sys.stderr)
        return 3
    trio.run(run_raw if args.raw else run_discovery, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
