"""The composition root: `pbx run`. Imports everything; nothing imports it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import struct
import sys
from pathlib import Path
from typing import Any

from pbx_core import logsetup, paths
from pbx_core.features.registry import FEATURES
from pbx_core.media.engine import MediaEngine
from pbx_core.pbx.cdr import CdrWriter
from pbx_core.pbx.control import ControlServer
from pbx_core.pbx.engine import Engine
from pbx_core.pbx.sipserver import SipServer
from pbx_core.store import schema as sch
from pbx_core.store.errors import StoreError
from pbx_core.store.feature_schema import SchemaClash, register_features
from pbx_core.store.generations import Store
from pbx_core.store.state import StateStore
from pbx_core.transport.manager import parse_listen
from pbx_core.transport.trace import Trace
from pbx_core.version import version_string

log = logging.getLogger("pbx")

GC_THRESHOLDS = (10_000, 20, 20)


def run(args: argparse.Namespace) -> int:
    logsetup.configure(
        logging.getLogger(),
        "%(asctime)s %(name)s %(levelname)s %(message)s",
        syslog=args.syslog,
        tag="pbx",
    )
    if not os.path.exists(args.config):
        print(f"pbx run: configuration {args.config!r} not found", file=sys.stderr)
        return 2
    try:
        for text in args.listen:
            parse_listen(text)  # a typo is refused before the configuration is read
    except ValueError as exc:
        print(f"pbx run: {exc}", file=sys.stderr)
        return 2
    try:
        trace = Trace(args.trace) if args.trace else None
    except OSError as exc:
        print(f"pbx run: cannot open trace file: {exc}", file=sys.stderr)
        return 2
    try:  # the features' own tables and settings, before the store is read
        register_features(FEATURES)
    except SchemaClash as exc:
        print(f"pbx run: {exc}", file=sys.stderr)
        return 2
    try:
        store = Store(args.config, runtime_dir=paths.runtime_dir())
    except (StoreError, OSError) as exc:
        print(f"pbx run: cannot load the configuration:\n{exc}", file=sys.stderr)
        return 2
    log.info("configuration %s (%s) loaded", args.config, store.kind)
    # A listener naming no port (the default one too) is on the setting sip_port, read
    # at start: a new value applies at the next restart, as the RTP range does.
    sip_port = int(store.snapshot.settings.get("sip_port", sch.SETTINGS["sip_port"].default))
    listens = [parse_listen(text, sip_port) for text in (args.listen or ["0.0.0.0"])]
    state_path = Path(args.state) if args.state else paths.state_db()
    try:
        state: StateStore | None = StateStore(state_path)
    except StoreError as exc:
        log.warning("no state database (%s): calls are not accounted", exc)
        state = None
    try:
        control = Path(args.control) if args.control else paths.control_socket()
        # A CDR keeps the time zone setting in force when its call ended (its local times).
        zone = lambda: store.snapshot.settings.get("timezone")  # noqa: E731  # the one in force
        cdr = CdrWriter(state, timezone=zone) if state is not None else None
        asyncio.run(_serve(listens, trace, store, control, args.media_address, cdr, state))
    except OSError as exc:
        print(f"pbx run: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
        if state is not None:
            state.close()
        if trace:
            trace.close()
    return 0


def _reload(store: Store, engine: Engine) -> bool:
    if store.reload():
        engine.reloaded()
        return True
    return False


# How often the daemon looks for a new configuration generation (one readlink/stat).
RELOAD_POLL = 2.0


async def _watch_config(store: Store, engine: Engine) -> None:
    """Swap to a new generation when one is committed; calls and registrations live
    in RAM and are untouched. A broken new configuration leaves the old in force.
    Expired registrations are swept on the same beat."""
    while True:
        await asyncio.sleep(RELOAD_POLL)
        engine.registrar.expire(asyncio.get_running_loop().time())
        try:
            if store.reload():
                engine.reloaded()
                log.info("configuration reloaded: %s", store.generation)
        except (StoreError, OSError) as exc:
            log.error("new configuration rejected, keeping the old one: %s", exc)  # noqa: TRY400  # the store's message is the story


def _status(server: SipServer, store: Store, started: float, engine: Engine) -> dict[str, Any]:
    loop = server.loop
    return {
        "version": version_string(),
        "uptime": round(loop.time() - started, 1),
        "pid": os.getpid(),
        "sip": [f"{h}:{p}" for h, p in server.transports.addresses],
        "config": {"path": str(store.path), "kind": store.kind, "generation": store.generation},
        "transactions": len(server.layer),
        "tcp_connections": len(server.transports.connections),
        "messages": dict(server.transports.stats),
        **engine.status(),
    }


def _primary_address(listens: list[tuple[str, int]]) -> str:
    """The address phones send RTP to: the SIP listener's own when it is specific,
    else the one this host uses towards its default gateway (from /proc/net/route;
    a connected UDP socket sends nothing), else loopback."""
    for host, _port in listens:
        if host not in ("0.0.0.0", "::"):
            return host
    try:
        with open("/proc/net/route", encoding="ascii") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if len(fields) > 2 and fields[1] == "00000000":
                    gw = socket.inet_ntoa(struct.pack("<I", int(fields[2], 16)))
                    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                        probe.connect((gw, 9))
                        return str(probe.getsockname()[0])
    except (OSError, ValueError):
        pass
    return "127.0.0.1"


def _toggles(engine: Engine, request: dict[str, Any]) -> dict[str, Any]:
    """{"cmd": "toggles", "extension": "101"} shows an extension's feature toggles;
    with "set": "feature.toggle" and "value" (true/false, text, null) it changes one,
    as the phone's code would (the console's way to them while the daemon runs)."""
    ext = request.get("extension")
    if not isinstance(ext, str) or engine.snap.user(ext, engine.domain) is None:
        raise ValueError(f"no extension {ext!r}")
    name = request.get("set")
    if name is not None:
        if not isinstance(name, str):
            raise ValueError("set takes feature.toggle")  # a protocol error
        engine.features.set_by_name(ext, name, request.get("value"))
    return {"extension": ext, "toggles": engine.features.toggles(ext)}


async def _serve(
    listens: list[tuple[str, int]],
    trace: Trace | None,
    store: Store,
    control_path: Path,
    media_address: str | None = None,
    cdr: CdrWriter | None = None,
    state: StateStore | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = SipServer(loop, None, trace)
    settings = store.snapshot.settings
    address = media_address or _primary_address(listens)
    # RTP is received on every address of the host (as Asterisk binds it): phones
    # outside the LAN reach us through external_media_address, which a router
    # forwards here unchanged, or which may be an address of this very host.
    # The range is read at start: a new one applies at the next restart.
    media = MediaEngine(
        loop,
        address,
        int(settings.get("rtp_port_min", 10000)),
        int(settings.get("rtp_port_max", 20000)),
        bind="::" if ":" in address else "0.0.0.0",
    )
    engine = Engine(server, store, media, cdr, FEATURES, state)
    started = loop.time()
    control = ControlServer(
        control_path,
        {
            "ping": lambda _r: {"pong": loop.time()},
            "status": lambda _r: _status(server, store, started, engine),
            "reload": lambda _r: {"reloaded": _reload(store, engine)},
            "toggles": lambda r: _toggles(engine, r),
        },
    )
    try:
        # Bind before the task group: a port in use is a plain OSError for run().
        for host, port in listens:
            await server.transports.listen(host, port)
        await control.start()
        async with asyncio.TaskGroup() as tasks:
            server.transports.tasks = tasks
            engine.features.tasks = tasks  # the feature applications' owner
            engine.start()
            where = " ".join(f"{h}:{p}" for h, p in server.transports.addresses)
            print(
                f"{version_string()}: PBX ready, SIP on {where} (UDP, TCP)",
                file=sys.stderr,
                flush=True,
            )
            # The start-up objects live forever: keep them out of every GC pass.
            gc.freeze()
            # Each message and call allocates thousands of short-lived objects; with
            # the default thresholds (700, 10, 10) full passes over every live call
            # took 20-25 % of a call's CPU under load (bench/profile_pbx.py). Cycles
            # are still collected, just in larger, rarer batches.
            gc.set_threshold(*GC_THRESHOLDS)
            watcher = tasks.create_task(_watch_config(store, engine))
            await stop.wait()
            log.info("shutting down")
            engine.features.stop_apps()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    finally:
        control.close()
        engine.close()
        media.close()
        server.close()
