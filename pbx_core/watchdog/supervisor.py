"""`pbx watchdog`: the supervisor init starts instead of `pbx run` (docs/architecture.md, Watchdog).

Theory of operation. One process, one loop, no threads. The loop sleeps in select()
on a self-pipe that signal handlers (SIGCHLD, SIGTERM, SIGINT) write to, and wakes for
the next due event: a health check, a feed of /dev/watchdog, a delayed restart.

    WAITING --delay--> STARTING --first good check--> HEALTHY
       ^                  |  start timeout               | `failures` bad checks in a row
       |                  v                              v
       +------------- child exited <------- SIGKILL -----+
       |  more than `limit` restarts within `window`
       v
    GAVE_UP (no feeding: the hardware resets the box; without hardware, retry later)

The hardware watchdog is fed while the PBX is healthy, and during a bounded recovery
(WAITING/STARTING, within the restart limit and the start timeout); never while a
check is failing or after giving up. So a hung PBX, a crash loop, a hung supervisor
(nobody feeds) and a killed supervisor (closed without the magic 'V') all end in a
hardware reset. SIGTERM/SIGINT stop the PBX (SIGTERM, then SIGKILL after
`stop_timeout`) and do the magic close. Every decision is logged with its reason.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import enum
import errno
import logging
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pbx_core import logsetup, paths
from pbx_core.store.errors import StoreError
from pbx_core.watchdog import health
from pbx_core.watchdog.device import WatchdogDevice
from pbx_core.watchdog.policy import RestartPolicy

log = logging.getLogger("pbx.watchdog")

PR_SET_PDEATHSIG = 1
START_POLL = 0.25  # how often a starting PBX is pinged until it answers


class State(enum.Enum):
    WAITING = "waiting"
    STARTING = "starting"
    HEALTHY = "healthy"
    GAVE_UP = "gave up"
    STOPPING = "stopping"


@dataclass(frozen=True)
class Timings:
    timeout: int = 30  # hardware watchdog timeout, s
    feed_interval: float = 5.0
    check_interval: float = 5.0
    check_timeout: float = 3.0
    failures: int = 2  # bad checks in a row that make the PBX unhealthy
    start_timeout: float = 60.0
    stop_timeout: float = 10.0

    def problems(self) -> list[str]:
        out = []
        if self.timeout < 2:
            out.append("--timeout must be at least 2 s")
        if not 0 < self.feed_interval < self.timeout:
            out.append("--feed-interval must be above 0 and below --timeout")
        if self.check_interval <= 0 or self.check_timeout <= 0 or self.start_timeout <= 0:
            out.append("--check-interval, --check-timeout and --start-timeout must be above 0")
        if self.failures < 1:
            out.append("--failures must be at least 1")
        if self.stop_timeout < 0:
            out.append("--stop-timeout must not be negative")
        return out


def pbx_command() -> list[str]:
    """This very program: the frozen binary, or the interpreter with `-m pbx_core`."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "pbx_core"]


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the supervisor dies, so a killed
    supervisor never leaves an orphan PBX holding the SIP port for the next one."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _describe_exit(rc: int) -> str:
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        return f"killed by {name}"
    return f"exited with status {rc}"


class Supervisor:
    def __init__(
        self,
        child_args: list[str],
        control: Path,
        device_path: str | None,
        timings: Timings,
        policy: RestartPolicy,
        config: str,
        factory: str | None,
    ) -> None:
        self.child_args = child_args
        self.control = control
        self.device_path = device_path
        self.t = timings
        self.policy = policy
        self.config = config
        self.factory = factory
        self.device: WatchdogDevice | None = None
        self.child: subprocess.Popen[bytes] | None = None
        self.state = State.WAITING
        self.due = 0.0  # WAITING: start; STARTING/HEALTHY: next check; GAVE_UP: retry
        self.start_deadline = 0.0
        self.failures = 0
        self.target: tuple[str, int] | None = None
        self.next_feed = 0.0
        self.feeding = False
        self.stop_requested = ""
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    # ------------------------------------------------------------------ plumbing
    def _on_signal(self, signum: int, _frame: object) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.stop_requested = signal.Signals(signum).name

    def _install_signals(self) -> None:
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def _sleep_until(self, when: float) -> None:
        timeout = max(0.0, when - time.monotonic())
        if self.stop_requested:
            return
        with contextlib.suppress(InterruptedError):
            ready, _, _ = select.select([self.wake_r], [], [], timeout)
            if ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.wake_r, 512)

    # ------------------------------------------------------------------ the device
    def _open_device(self) -> None:
        if self.device_path is None:
            log.warning("hardware watchdog disabled (--device none): supervising without one")
            return
        try:
            self.device = WatchdogDevice.open(self.device_path, self.t.timeout)
        except OSError as e:
            log.warning(
                "cannot open %s (%s): supervising without a hardware watchdog",
                self.device_path,
                e.strerror,
            )
            return
        if self.device is None:
            log.warning("no hardware watchdog at %s: supervising without one", self.device_path)
            return
        log.info("hardware watchdog %s armed: %s", self.device_path, self.device.note)
        if self.device.timeout is not None and self.device.timeout <= self.t.feed_interval:
            log.warning(
                "the device's timeout %d s is not above the feed interval %g s",
                self.device.timeout,
                self.t.feed_interval,
            )

    def _may_feed(self) -> tuple[bool, str]:
        if self.state is State.HEALTHY:
            if self.failures:
                return False, f"health check failing ({self.failures} in a row)"
            return True, "the PBX is healthy"
        if self.state in (State.WAITING, State.STARTING):
            return True, "starting the PBX (within the restart limit)"
        if self.state is State.GAVE_UP:
            return False, "gave up restarting the PBX"
        return False, "stopping"

    def _feed(self, now: float) -> None:
        ok, why = self._may_feed()
        if ok != self.feeding and self.device is not None:
            if ok:
                log.info("feeding the hardware watchdog: %s", why)
            else:
                left = f"; the box resets within {self.device.timeout or '?'} s unless it recovers"
                log.warning("not feeding the hardware watchdog: %s%s", why, left)
        self.feeding = ok
        if ok and now >= self.next_feed:
            if self.device is not None:
                try:
                    self.device.feed()
                except OSError as e:
                    log.error("cannot feed %s: %s", self.device_path, e.strerror)  # noqa: TRY400  # errno says it all
            self.next_feed = now + self.t.feed_interval

    # ------------------------------------------------------------------ the PBX
    def _config_path(self) -> str:
        """The configuration to run on. A generation root without a generation gets
        the factory tables committed first, so a later console commit is seen by the
        running daemon; if that fails the PBX runs on the factory tables."""
        if self.factory is None or Path(self.config, "current").is_symlink():
            return self.config
        if Path(self.config).is_dir() and any(
            p.name != "lost+found" and not p.name.startswith(".") and not p.name.startswith("gen-")
            for p in Path(self.config).iterdir()
        ):
            return self.config  # a plain dbtext directory: use it as it is
        from pbx_core.store.generations import (  # noqa: PLC0415  # only on first boot
            ConcurrentCommitError,
            Generations,
        )

        try:
            # Only while there is still none: the console may have committed meanwhile.
            gen = Generations(self.config).commit_dir(self.factory, expect=None)
        except ConcurrentCommitError:
            return self.config
        except (StoreError, OSError) as e:
            log.error(  # noqa: TRY400  # the store's message is the story
                "cannot commit the factory configuration to %s (%s): running on %s",
                self.config,
                e,
                self.factory,
            )
            return self.factory
        log.info(
            "no configuration in %s yet: committed the factory tables as %s", self.config, gen.name
        )
        return self.config

    def _spawn(self, now: float) -> None:
        cmd = [*pbx_command(), "run", "--config", self._config_path(), *self.child_args]
        cmd += ["--control", str(self.control)]
        try:
            self.child = subprocess.Popen(cmd, preexec_fn=_die_with_parent, close_fds=True)  # noqa: S603, PLW1509  # our own binary; preexec is only prctl, before exec, single-threaded
        except OSError as e:
            log.error("cannot start %s: %s", cmd[0], e.strerror)  # noqa: TRY400  # errno says it all
            self._exited(now, f"could not be started ({e.strerror})")
            return
        log.info("started pbx run (pid %d): %s", self.child.pid, " ".join(cmd))
        self.state = State.STARTING
        self.start_deadline = now + self.t.start_timeout
        self.due = now + START_POLL
        self.failures = 0
        self.target = None

    def _exited(self, now: float, what: str) -> None:
        self.child = None
        if self.stop_requested:
            return
        if self.policy.record(now):
            n = self.policy.recent(now)
            log.warning(
                "pbx run %s: restarting in %g s (restart %d of at most %d within %g s)",
                what,
                self.policy.delay,
                n,
                self.policy.limit,
                self.policy.window,
            )
            self.state = State.WAITING
            self.due = now + self.policy.delay
            return
        self.state = State.GAVE_UP
        self.due = self.policy.retry_at(now)
        if self.device is not None:
            after = "the hardware watchdog will reset the box"
        else:
            after = f"no hardware watchdog: trying again in {self.due - now:.0f} s"
        log.error(
            "pbx run %s: %d restarts within %g s is a crash loop; giving up, %s",
            what,
            self.policy.limit,
            self.policy.window,
            after,
        )

    def _kill(self, reason: str) -> None:
        assert self.child is not None  # noqa: S101  # only called with a child
        log.error("pbx run (pid %d) is unhealthy: %s; killing it", self.child.pid, reason)
        with contextlib.suppress(ProcessLookupError):
            self.child.kill()  # SIGKILL also ends a stopped (SIGSTOP) process
        rc = self.child.wait()
        self._exited(time.monotonic(), f"was killed ({reason}; {_describe_exit(rc)})")

    def _check(self, now: float) -> None:
        assert self.child is not None  # noqa: S101  # checks run only with a child
        if self.state is State.STARTING:
            result = health.ping(self.control, min(self.t.check_timeout, 1.0))
            if result.ok:
                self.target = health.sip_target(self.control, self.t.check_timeout)
                result = health.check(self.control, self.target, self.t.check_timeout)
            if result.ok:
                log.info(
                    "pbx run (pid %d) is healthy: %s after %.1f s",
                    self.child.pid,
                    result.reason,
                    now - (self.start_deadline - self.t.start_timeout),
                )
                self.state = State.HEALTHY
                self.due = time.monotonic() + self.t.check_interval
            elif time.monotonic() >= self.start_deadline:
                self._kill(f"not healthy {self.t.start_timeout:g} s after start ({result.reason})")
            else:
                self.due = time.monotonic() + START_POLL
            return
        result = health.check(self.control, self.target, self.t.check_timeout)
        if result.ok:
            if self.failures:
                log.info("health check passes again after %d failure(s)", self.failures)
            self.failures = 0
        else:
            self.failures += 1
            log.warning(
                "health check failed (%d of %d): %s", self.failures, self.t.failures, result.reason
            )
            if self.failures >= self.t.failures:
                self._kill(result.reason)
                return
        self.due = time.monotonic() + self.t.check_interval

    # ------------------------------------------------------------------ the loop
    def run(self) -> int:
        self._install_signals()
        self._open_device()
        log.info(
            "supervising pbx run: check every %g s (deadline %g s, %d failures), restart "
            "after %g s, at most %d restarts within %g s",
            self.t.check_interval,
            self.t.check_timeout,
            self.t.failures,
            self.policy.delay,
            self.policy.limit,
            self.policy.window,
        )
        self.due = time.monotonic()
        try:
            while not self.stop_requested:
                now = time.monotonic()
                if self.child is not None and (rc := self.child.poll()) is not None:
                    self._exited(now, _describe_exit(rc))
                if self.state is State.WAITING and now >= self.due:
                    self._spawn(now)
                elif self.state in (State.STARTING, State.HEALTHY) and now >= self.due:
                    self._check(now)
                elif self.state is State.GAVE_UP and now >= self.due and self.device is None:
                    log.info("trying pbx run again after the crash-loop pause")
                    self.state = State.WAITING
                now = time.monotonic()
                self._feed(now)
                wake = self.due
                if self.feeding:
                    wake = min(wake, self.next_feed)
                self._sleep_until(wake)
        finally:
            self._shutdown()
        return 0

    def _shutdown(self) -> None:
        self.state = State.STOPPING
        why = self.stop_requested or "an error"
        if self.child is not None and self.child.poll() is None:
            log.info("%s: stopping pbx run (pid %d)", why, self.child.pid)
            self.child.terminate()
            try:
                self.child.wait(self.t.stop_timeout)
            except subprocess.TimeoutExpired:
                log.warning("pbx run did not stop within %g s: killing it", self.t.stop_timeout)
                self.child.kill()
                self.child.wait()
        if self.device is not None:
            if self.stop_requested:
                self.device.magic_close()
                log.info("%s: hardware watchdog stopped (magic close)", why)
            else:
                self.device.abandon()
                log.error("supervisor failed: hardware watchdog left running")
        os.close(self.wake_r)
        os.close(self.wake_w)


def setup_logging(syslog: bool) -> None:
    root = logging.getLogger("pbx.watchdog")
    root.propagate = False
    logsetup.configure(root, "pbx watchdog: %(message)s", syslog=syslog, tag="pbx-watchdog")


def main(args: argparse.Namespace) -> int:
    setup_logging(args.syslog)
    timings = Timings(
        timeout=args.timeout,
        feed_interval=args.feed_interval,
        check_interval=args.check_interval,
        check_timeout=args.check_timeout,
        failures=args.failures,
        start_timeout=args.start_timeout,
        stop_timeout=args.stop_timeout,
    )
    problems = timings.problems()
    try:
        policy = RestartPolicy(args.restart_delay, args.window, args.limit)
    except ValueError as e:
        problems.append(str(e))
    if problems:
        for p in problems:
            print(f"pbx watchdog: {p}", file=sys.stderr)
        return 2
    if not os.path.exists(args.config) and args.factory is None:
        print(f"pbx watchdog: configuration {args.config!r} not found", file=sys.stderr)
        return 2
    child_args: list[str] = []
    for listen in args.listen:
        child_args += ["--listen", listen]
    if args.trace:
        child_args += ["--trace", args.trace]
    if args.syslog:
        child_args.append("--syslog")
    control = Path(args.control) if args.control else paths.control_socket()
    device = None if args.device == "none" else args.device
    try:
        sup = Supervisor(child_args, control, device, timings, policy, args.config, args.factory)
        return sup.run()
    except OSError as e:
        if e.errno == errno.EINTR:
            return 0
        print(f"pbx watchdog: {e}", file=sys.stderr)
        return 1
