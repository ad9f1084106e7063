"""Mailbox PINs: plain digits (as an installer types them into the table, as
FreePBX's voicemail.conf keeps them) or a hashed form, compared in constant time.

Hashed forms (`pbx_extension.vm_pin`, `pbx_mailbox.pin`, and the PIN an owner sets
from the phone, kept in the feature's state):

- `sha256$SALT$HEX`: HEX = SHA-256 of SALT then the PIN (UTF-8), lower-case hex;
  SALT 1-64 characters of [A-Za-z0-9./+=-].
- `pbkdf2_sha256$ITERATIONS$SALT$HEX`: PBKDF2-HMAC-SHA256 (RFC 8018) of the PIN
  with that SALT (UTF-8) and 1..MAX_ITERATIONS iterations, 32 bytes as hex. The PIN
  an owner sets from the phone is kept this way (ITERATIONS iterations, a fresh
  16-character salt). `python -m pbx_core.features.voicemail.pins 1234` prints
  this form of a PIN, to paste into a table.

A PIN of 4-10 digits has at most 10^10 values: a hash keeps it from whoever reads a
table or a backup at a glance, not from a search; the lock-out after wrong PINs
(sec_ban_failures) is what stops guessing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sys

MIN_NEW, MAX_NEW = 4, 10  # digits of a PIN set from the phone
ITERATIONS = 10_000  # for a PIN set from the phone (milliseconds on the board)
MAX_ITERATIONS = 100_000  # a table's hashed PIN may ask no more (the event loop waits)
_SALT = r"[A-Za-z0-9./+=-]{1,64}"
SHA256 = re.compile(rf"sha256\$({_SALT})\$([0-9a-f]{{64}})")
PBKDF2 = re.compile(rf"pbkdf2_sha256\$([0-9]{{1,6}})\$({_SALT})\$([0-9a-f]{{64}})")
DIGITS = re.compile(r"[0-9]{1,12}")


def form(stored: str) -> str | None:
    """Which form `stored` is (`plain`, `sha256`, `pbkdf2_sha256`); None: none."""
    if DIGITS.fullmatch(stored):
        return "plain"
    if SHA256.fullmatch(stored):
        return "sha256"
    found = PBKDF2.fullmatch(stored)
    if found and 1 <= int(found.group(1)) <= MAX_ITERATIONS:
        return "pbkdf2_sha256"
    return None


def matches(stored: str, entry: str) -> bool:
    """Whether the digits `entry` are the PIN `stored` (any form), in constant time
    for a given form; a stored value of no known form matches nothing."""
    if not entry or not entry.isascii():
        return False
    kind = form(stored)
    if kind == "plain":
        return hmac.compare_digest(stored.encode(), entry.encode())
    if kind == "sha256":
        salt, want = SHA256.fullmatch(stored).groups()  # type: ignore[union-attr]  # form() said so
        got = hashlib.sha256((salt + entry).encode()).hexdigest()
        return hmac.compare_digest(got, want)
    if kind == "pbkdf2_sha256":
        rounds, salt, want = PBKDF2.fullmatch(stored).groups()  # type: ignore[union-attr]  # form() said so
        got = hashlib.pbkdf2_hmac("sha256", entry.encode(), salt.encode(), int(rounds)).hex()
        return hmac.compare_digest(got, want)
    return False


def valid(new: str) -> bool:
    """Whether `new` may be set from the phone: 4-10 digits."""
    return new.isascii() and new.isdigit() and MIN_NEW <= len(new) <= MAX_NEW


def hashed(pin: str) -> str:
    """The PBKDF2 form of `pin` with a fresh salt."""
    salt = secrets.token_hex(8)
    digest = hashlib.pbkdf2_hmac("sha256", pin.encode(), salt.encode(), ITERATIONS).hex()
    return f"pbkdf2_sha256${ITERATIONS}${salt}${digest}"


def main(argv: list[str]) -> int:
    """Print the hashed form of the PIN given (4-10 digits)."""
    if len(argv) != 1 or not valid(argv[0]):
        print("usage: python -m pbx_core.features.voicemail.pins PIN (4-10 digits)")
        return 2
    print(hashed(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
