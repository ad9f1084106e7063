"""The first thing `pbx console` does, before any heavy import: make the line harmless.

init starts the console on the serial line with the kernel's cooked settings, where
Ctrl-C, Ctrl-\\ and Ctrl-Z are turned into signals for the process and Ctrl-D ends
input. Starting Python and importing the console takes seconds on the box; `pbx remote`
(or an impatient person) types Ctrl-C all the while, and a console killed before it
could put the line in raw mode is restarted by init only to be killed again. So the
console ignores the keyboard signals from its first instruction on (its wrapper script,
/usr/sbin/pbx-console, already does so before `exec`, and ignored signals survive
`exec`) and takes the signals and the line editing away from the line discipline;
`terminal.raw_tty` then makes the line fully raw. Only this module's few imports come
first: it must stay import-light.
"""

from __future__ import annotations

import contextlib
import signal
import termios

# The signals a terminal line can send (VINTR, VQUIT, VSUSP).
KEYBOARD_SIGNALS = (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP)


def protect(fd: int | None) -> None:
    """Ignore the keyboard signals; on the tty `fd` (if it is one) turn off signal
    keys, line buffering (so Ctrl-D is no end of input), echo and XON/XOFF."""
    for sig in KEYBOARD_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    if fd is None:
        return
    try:
        attrs = termios.tcgetattr(fd)
    except (termios.error, OSError):
        return  # not a tty (a pipe, a socket): nothing turns bytes into signals there
    attrs[0] &= ~(termios.IXON | termios.IXOFF)
    attrs[3] &= ~(termios.ISIG | termios.ICANON | termios.ECHO | termios.IEXTEN)
    attrs[6][termios.VMIN] = 1
    attrs[6][termios.VTIME] = 0
    with contextlib.suppress(termios.error, OSError):
        termios.tcsetattr(fd, termios.TCSANOW, attrs)


def release() -> None:
    """Default handling of the keyboard signals again (for the maintenance shell: an
    ignored SIGINT would be inherited by it and everything it runs)."""
    for sig in KEYBOARD_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
