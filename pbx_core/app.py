"""The composition root: `pbx run`. Imports everything; nothing imports it."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from pbx_core.pbx.sipserver import SipServer
from pbx_core.transport.manager import parse_listen
from pbx_core.transport.trace import Trace
from pbx_core.version import version_string

log = logging.getLogger("pbx")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if not os.path.isdir(args.config):
        print(f"pbx run: configuration directory {args.config!r} not found", file=sys.stderr)
        return 2
    try:
        listens = [parse_listen(text) for text in (args.listen or ["0.0.0.0:5060"])]
    except ValueError as exc:
        print(f"pbx run: {exc}", file=sys.stderr)
        return 2
    try:
        trace = Trace(args.trace) if args.trace else None
    except OSError as exc:
        print(f"pbx run: cannot open trace file: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(listens, trace))
    except OSError as exc:
        print(f"pbx run: {exc}", file=sys.stderr)
        return 1
    finally:
        if trace:
            trace.close()
    return 0


async def _serve(listens: list[tuple[str, int]], trace: Trace | None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with asyncio.TaskGroup() as tasks:
        server = SipServer(loop, tasks, trace)
        try:
            for host, port in listens:
                await server.transports.listen(host, port)
            where = " ".join(f"{h}:{p}" for h, p in server.transports.addresses)
            print(
                f"{version_string()}: PBX ready, SIP on {where} (UDP, TCP)",
                file=sys.stderr,
                flush=True,
            )
            await stop.wait()
            log.info("shutting down")
        finally:
            server.close()
