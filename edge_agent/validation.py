"""How the edge words a pydantic ``ValidationError``: where (the key path) and what is wrong.

One wording for the config file (``edge_agent.config`` adds the file and the line) and for
the messages the agent refuses (desired states, acks), so an operator reads the same thing
in both places. Only the config's errors quote the value given: a refused message's values
came over the network and are not echoed into logs and the status.
"""

from __future__ import annotations

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from shared.urls import hide_passwords


def key_path(loc: tuple[int | str, ...]) -> str:
    """``pipelines[0].source.type``: keys joined by dots, list positions in brackets."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def explain(error: ErrorDetails, *, quote_input: bool) -> str:
    """What is wrong; with ``quote_input``, also the value given when it is a scalar."""
    if error["type"] == "extra_forbidden":
        return "unknown key"
    value = error.get("input")
    if not quote_input or error["type"] == "missing" or isinstance(value, dict | list):
        return error["msg"]
    shown = hide_passwords(repr(value)) if isinstance(value, str) else repr(value)
    return f"{error['msg']} (got {shown})"


def first_error(exc: ValidationError) -> str:
    """The first error of a refused message as ``key.path: what is wrong``, and how many more
    there are (a whole report is too long to publish or log)."""
    errors = exc.errors()
    if not errors:
        return str(exc)
    first = errors[0]
    where = key_path(first["loc"]) or "(message)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {explain(first, quote_input=False)}{more}"
