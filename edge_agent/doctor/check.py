"""One finding of ``aiot edge doctor``: what was checked, whether it passed, and the fix."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Check:
    """A check's outcome; ``ok`` None means it did not apply (nothing to check, skipped)."""

    name: str
    ok: bool | None
    detail: str
    fix: str = ""

    @classmethod
    def passed(cls, name: str, detail: str) -> Check:
        return cls(name, True, detail)

    @classmethod
    def failed(cls, name: str, detail: str, fix: str) -> Check:
        return cls(name, False, detail, fix)

    @classmethod
    def skipped(cls, name: str, detail: str) -> Check:
        return cls(name, None, detail)
