"""Passwords in Mosquitto's own PBKDF2-SHA512 format, so the broker checks what we store.

``mosquitto_passwd`` (2.0) writes ``$7$<iterations>$<base64 salt>$<base64 hash>`` with a
12-byte salt, a 64-byte PBKDF2-HMAC-SHA512 derived key and 101 iterations. We store agent
and service passwords in exactly that form: ``aiot cloud broker-config`` then writes the
broker's password file from the database without ever knowing a password, and the API
verifies an agent's HTTP Basic credentials against the same hash.

101 iterations is Mosquitto's default and cheap (about 0.13 ms per check here, so the API
verifies on every request without a cache). Stretching protects guessable passwords; ours
are 32 random bytes generated here, which no amount of iterations makes any safer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

MOSQUITTO_ITERATIONS = 101
SALT_BYTES = 12
_PREFIX = "$7$"


def new_password() -> str:
    """A random password with 256 bits of entropy, safe in URLs and YAML."""
    return secrets.token_urlsafe(32)


def mosquitto_hash(
    password: str, *, iterations: int = MOSQUITTO_ITERATIONS, salt: bytes | None = None
) -> str:
    """``password`` hashed as ``mosquitto_passwd -H sha512-pbkdf2`` would hash it."""
    if not password:
        raise ValueError("an empty password cannot be hashed")
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    derived = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"{_PREFIX}{iterations}${_b64(salt)}${_b64(derived)}"


def verify_mosquitto_hash(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored``, compared in constant time; False if malformed."""
    try:
        iterations, salt, expected = _parse(stored)
    except ValueError:
        return False
    derived = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return hmac.compare_digest(derived, expected)


def _parse(stored: str) -> tuple[int, bytes, bytes]:
    if not stored.startswith(_PREFIX):
        raise ValueError("not a $7$ (PBKDF2-SHA512) hash")
    iterations, _, rest = stored[len(_PREFIX) :].partition("$")
    salt, _, derived = rest.partition("$")
    try:
        return int(iterations), base64.b64decode(salt, validate=True), base64.b64decode(derived)
    except (binascii.Error, ValueError):
        raise ValueError("malformed $7$ hash") from None


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
