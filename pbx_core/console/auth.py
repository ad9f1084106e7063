"""The admin password: a salted PBKDF2-SHA256 hash in the setting `admin_password`.

An empty or absent setting means the factory password, which works for one login
only: the console makes the user choose a new one before anything else. A factory
reset (the factory tables have no such row) brings the factory password back; so does
the failsafe offered on the console right after boot (physical access).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

FACTORY_PASSWORD = "admin"  # noqa: S105  # documented default, must be changed at first login
SETTING = "admin_password"
ITERATIONS = 60_000  # ~50 ms on the wafer PC's Atom; a login is rare
MIN_LENGTH = 6
SCHEME = "pbkdf2_sha256"


def hash_password(password: str, *, iterations: int = ITERATIONS) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"{SCHEME}${iterations}${salt.hex()}${digest.hex()}"


def verify(password: str, stored: str | None) -> bool:
    """Does `password` match the stored hash (or the factory password if none)?"""
    if not stored:
        return hmac.compare_digest(password.encode(), FACTORY_PASSWORD.encode())
    try:
        scheme, iters, salt, digest = stored.split("$")
        if scheme != SCHEME:
            return False
        got = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), int(iters))
    except ValueError:
        return False  # a mangled setting locks nobody in: the failsafe resets it
    return hmac.compare_digest(got.hex(), digest)


def is_hash(value: str) -> bool:
    parts = value.split("$")
    return len(parts) == 4 and parts[0] == SCHEME and parts[1].isdigit()


def password_problem(password: str) -> str | None:
    if len(password) < MIN_LENGTH:
        return f"at least {MIN_LENGTH} characters, please"
    if password == FACTORY_PASSWORD:
        return "that is the factory password"
    if not password.isprintable():
        return "printable characters only"
    return None
