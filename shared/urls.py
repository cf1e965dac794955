"""The one parser of broker URLs, for both sides: ``mqtt://`` and ``mqtts://`` (TLS).

``mqtt[s]://[user[:password]@]host[:port]``; user and password are percent-decoded (so a
password may hold ``@`` or ``:`` written as ``%40``/``%3A``); the port defaults to 1883, or
8883 with TLS. Anything else (another scheme, a path, a query, a bad port) is refused with a
ContractError that says what was expected and never repeats the password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from shared.errors import ContractError

_SCHEMES = {"mqtt": (False, 1883), "mqtts": (True, 8883)}
_EXPECTED = "expected mqtt:// or mqtts://[user[:password]@]host[:port]"
_CREDENTIALS = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^@/\s]*@")


@dataclass(frozen=True, slots=True)
class MqttUrl:
    """A broker's address and the credentials a URL carried."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        """The URL without its password (what logs and errors may show)."""
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}@" if self.username is not None else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


def parse_mqtt_url(url: str) -> MqttUrl:
    """Split a broker URL; raise ContractError naming what is wrong."""
    parts = urlsplit(url)
    scheme = _SCHEMES.get(parts.scheme)
    if scheme is None:
        raise ContractError(f"broker URL scheme {parts.scheme!r} is not supported: {_EXPECTED}")
    if not parts.hostname:
        raise ContractError(f"broker URL has no host: {_EXPECTED}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ContractError(f"broker URL has a path or query: {_EXPECTED}")
    try:
        port = parts.port
    except ValueError:
        raise ContractError(f"broker URL has an invalid port: {_EXPECTED}") from None
    tls, default_port = scheme
    return MqttUrl(
        host=parts.hostname,
        port=port if port is not None else default_port,
        tls=tls,
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


def hide_passwords(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***`` (a URL quoted in an
    error message keeps its user, host and port, never its password)."""
    return _CREDENTIALS.sub(r"\g<head>:***@", text)
