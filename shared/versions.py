"""Model versions in order, one rule for every part that compares them.

Versions are free text on the wire (``ModelRef.version``), so text order is the trap:
"1.10.0" sorts before "1.9.0". A version that PEP 440 reads ("1.10.0", "2.0.0rc1", "3")
is ordered by ``packaging.version``; any other spelling sorts before all of them, by its text.
"""

from __future__ import annotations

from packaging.version import InvalidVersion, Version

_NONE = Version("0")


def version_key(version: str) -> tuple[bool, Version, str]:
    """A sort key: ``max(versions, key=version_key)`` is the newest version."""
    try:
        return True, Version(version), version
    except InvalidVersion:
        return False, _NONE, version
