#!/usr/bin/env python3
"""The floor under issue 12's CPU target: what the card's stack costs per
1:1 message before any chinwag logic runs.

Each component is measured alone, with no chinwag code, in the shape a real
client drives the node (one frame per WebSocket message, an ack per
received WebSocket message):

* ``ws``: a bare trio-websocket echo server in its own process (each received
  WebSocket message is answered by one), driven by an asyncio ``websockets``
  client that keeps ``--window`` messages in flight. Reported: server CPU
  (utime+stime from /proc) per 1,000 messages received plus 1,000 sent.
  The same echo written on wsproto alone (the engine under trio-websocket)
  is measured too, to show what the library's own machinery costs.
* ``cbor``: cbor2 decode of a ``send`` frame and encode of a ``msg`` frame.
* ``sign``: Ed25519 signature (cryptography) over a 200-byte envelope.
* ``lmdb``: two puts (the receiver's queue, the sender's copy) in a write
  transaction committed every ``--batch`` messages, sync on, on disk.

A 1:1 message in real-client shape takes three WebSocket messages into the
node (the ``send``, the receiver's ``ack``, the sender's ``ack`` of its
copy) and two out (the receiver's ``msg``, the sender's ``ok`` with its
copy), three frame decodes and three encodes, one signature and two puts.
The floor is the sum; it leaves out everything the node itself must do
(routing, sessions, sequence numbers, the history index, the event loop's
bookkeeping for five sockets' worth of readiness).

    python bench/floor.py                 # all parts, 20,000 messages
    python bench/floor.py --messages 50000 --window 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


# ------------------------------------------------------------ ws echo server
def serve(port_file: str) -> None:
    import trio
    from trio_websocket import ConnectionClosed, serve_websocket

    async def handler(request: Any) -> None:
        ws = await request.accept(subprotocol="chinwag.cbor.v1")
        try:
            while True:
                await ws.send_message(await ws.get_message())
        except ConnectionClosed:
            pass

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
            await trio.Path(port_file).write_text(str(server.port))

    trio.run(main)


def serve_wsproto(port_file: str) -> None:
    """The same echo on wsproto (the protocol engine under trio-websocket),
    driven straight from the socket: no reader task, no channel."""
    import trio
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Request

    async def handler(stream: trio.SocketStream) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        async with stream:
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    return
                ws.receive_data(data)
                out = bytearray()
                for event in ws.events():
                    if isinstance(event, Request):
                        out += ws.send(AcceptConnection(subprotocol="chinwag.cbor.v1"))
                    elif isinstance(event, BytesMessage):
                        out += ws.send(BytesMessage(data=event.data))
                    elif isinstance(event, CloseConnection):
                        return
                if out:
                    await stream.send_all(out)

    async def main() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        await trio.Path(port_file).write_text(str(listeners[0].socket.getsockname()[1]))
        await trio.serve_listeners(handler, listeners)

    trio.run(main)


async def drive(port: int, messages: int, window: int, payload: bytes) -> float:
    from websockets.asyncio.client import connect

    async with connect(
        f"ws://127.0.0.1:{port}/",
        subprotocols=["chinwag.cbor.v1"],  # type: ignore[list-item]
        compression=None,
        ping_interval=None,
    ) as ws:
        started = time.perf_counter()
        in_flight = 0
        sent = received = 0
        while received < messages:
            while in_flight < window and sent < messages:
                await ws.send(payload)
                sent += 1
                in_flight += 1
            await asyncio.wait_for(ws.recv(), 30)
            received += 1
            in_flight -= 1
        return time.perf_counter() - started


def measure_ws(args: argparse.Namespace, payload: bytes, server: str = "trio-websocket") -> float:
    """Server CPU seconds per 1,000 echoed WebSocket messages."""
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        cmd = [sys.executable, __file__, "--serve", str(port_file), "--server", server]
        proc = subprocess.Popen(cmd)
        try:
            deadline = time.monotonic() + 30
            while not port_file.exists() or not port_file.read_text():
                if time.monotonic() > deadline:
                    raise TimeoutError("echo server did not start")
                time.sleep(0.05)
            port = int(port_file.read_text())
            asyncio.run(drive(port, 1000, args.window, payload))  # warm-up
            cpu0 = cpu_seconds(proc.pid)
            asyncio.run(drive(port, args.messages, args.window, payload))
            cpu = cpu_seconds(proc.pid) - cpu0
        finally:
            proc.terminate()
            proc.wait(10)
    return 1000 * cpu / args.messages


# ------------------------------------------------------------ in-process parts
def per_1000(fn: Any, count: int) -> float:
    started = time.process_time()
    for _ in range(count):
        fn()
    return 1000 * (time.process_time() - started) / count


def measure_parts(args: argparse.Namespace) -> dict[str, float]:
    import cbor2
    import lmdb
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    send = cbor2.dumps({"t": "send", "rid": 12345, "to": "r1", "text": "x" * 64})
    msg = {
        "t": "msg",
        "seq": 123456,
        "id": 1 << 40,
        "origin": "n" * 52,
        "from": {"u": "s1", "n": "n" * 52},
        "to": {"u": "r1", "n": "n" * 52},
        "ts": 1_700_000_000_000,
        "kind": "text",
        "body": {"text": "x" * 64},
    }
    ack = cbor2.dumps({"t": "ack", "seq": 123456})

    def cbor_round() -> None:
        cbor2.loads(send)
        cbor2.loads(ack)
        cbor2.loads(ack)
        cbor2.dumps(msg)
        cbor2.dumps(msg)
        cbor2.dumps({"t": "ok", "rid": 12345, "id": 1 << 40, "seq": 123456})

    key = Ed25519PrivateKey.generate()
    envelope = os.urandom(200)
    results = {
        "cbor_cpu_s_per_1000": per_1000(cbor_round, args.messages),
        "sign_cpu_s_per_1000": per_1000(lambda: key.sign(envelope), args.messages),
    }
    with tempfile.TemporaryDirectory() as tmp:
        env = lmdb.open(tmp, map_size=1 << 30, sync=True)
        record = cbor2.dumps(msg)
        started = time.process_time()
        seq = 0
        for _ in range(args.messages // args.batch):
            with env.begin(write=True) as txn:
                for _ in range(args.batch):
                    seq += 1
                    txn.put(b"r1" + seq.to_bytes(8, "big"), record)
                    txn.put(b"s1" + seq.to_bytes(8, "big"), record)
        results["lmdb_cpu_s_per_1000"] = 1000 * (time.process_time() - started) / seq
        env.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64, help="messages per LMDB commit")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--server", default="trio-websocket", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        (serve if args.server == "trio-websocket" else serve_wsproto)(args.serve)
        return 0
    import cbor2

    payload = cbor2.dumps({"t": "send", "rid": 12345, "to": "r1", "text": "x" * 64})
    result: dict[str, Any] = {
        "ws_echo_cpu_s_per_1000": measure_ws(args, payload),
        "wsproto_echo_cpu_s_per_1000": measure_ws(args, payload, "wsproto"),
    }
    result.update(measure_parts(args))
    # 5 WebSocket messages (3 in, 2 out) = 2.5 echo round trips' worth.
    result["floor_cpu_s_per_1000"] = (
        2.5 * result["ws_echo_cpu_s_per_1000"]
        + result["cbor_cpu_s_per_1000"]
        + result["sign_cpu_s_per_1000"]
        + result["lmdb_cpu_s_per_1000"]
    )
    result["load_avg_1min"] = os.getloadavg()[0]
    print(json.dumps({k: round(v, 4) for k, v in result.items()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
