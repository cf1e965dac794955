"""Which events an action acts on: state, label, kind, zone, line, direction and one
attribute condition such as ``occupancy >= 5`` (pure; parsed once, when the config loads).

"Switch the signal when the queue in zone A reaches 5" is
``{on: [instant], kinds: [zone], zones: [A], when: "occupancy >= 5"}``. A condition
compares one event attribute with a number (``>=``, ``>``, ``<=``, ``<``, ``==``, ``!=``)
or a word (``==``, ``!=``; a yes/no attribute compares with true/yes or false/no, as in
``agree == no`` on an escalation's reconciled event); an event without the attribute, or
with a value of another kind, does not match.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass

from shared.messages import Event

_CONDITION = re.compile(
    r"^\s*(?P<name>[A-Za-z_][A-Za-z0-9_.:-]{0,63})\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<value>\S.*?)\s*$"
)
_NUMERIC: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt,
    "==": operator.eq, "!=": operator.ne,
}  # fmt: skip


_TRUTH = {"true": True, "yes": True, "false": False, "no": False}
"""How a condition names the values of a yes/no attribute: ``agree == no``."""


@dataclass(frozen=True, slots=True)
class Condition:
    """``<attribute> <op> <value>``, as written in the config."""

    name: str
    op: str
    value: float | str

    @classmethod
    def parse(cls, text: str) -> Condition:
        """Raise ValueError naming what is wrong (pydantic reports it with the key)."""
        match = _CONDITION.match(text)
        if match is None:
            raise ValueError(
                f"{text!r} is not a condition: expected <attribute> <op> <value> with op one of "
                ">=, >, <=, <, ==, != (like 'occupancy >= 5')"
            )
        name, op, raw = match["name"], match["op"], match["value"].strip("'\"")
        try:
            value: float | str = float(raw)
        except ValueError:
            if op not in ("==", "!="):
                raise ValueError(f"{text!r}: {op} needs a number, not {raw!r}") from None
            value = raw
        return cls(name, op, value)

    def holds(self, event: Event) -> bool:
        actual = event.attributes.get(self.name)
        if actual is None:
            return False
        if isinstance(actual, bool):  # a yes/no attribute (an escalation's ``agree``)
            truth = _TRUTH.get(str(self.value).lower())
            return (
                truth is not None
                and self.op in ("==", "!=")
                and (actual == truth) == (self.op == "==")
            )
        if isinstance(self.value, str):
            return (str(actual) == self.value) == (self.op == "==")
        if not isinstance(actual, int | float):
            return False
        return _NUMERIC[self.op](float(actual), self.value)


def check_condition(text: str) -> str:
    """A pydantic validator: the condition parses (its error names the key)."""
    Condition.parse(text)
    return text


@dataclass(frozen=True, slots=True)
class EventSelector:
    """An action's choice of events; ``None`` for a criterion means any."""

    states: frozenset[str]
    labels: frozenset[str] | None = None
    kinds: frozenset[str] | None = None
    zones: frozenset[str] | None = None
    lines: frozenset[str] | None = None
    directions: frozenset[str] | None = None
    condition: Condition | None = None

    @classmethod
    def of(
        cls,
        *,
        on: Collection[str],
        labels: Collection[str] | None = None,
        kinds: Collection[str] | None = None,
        zones: Collection[str] | None = None,
        lines: Collection[str] | None = None,
        directions: Collection[str] | None = None,
        when: str | None = None,
    ) -> EventSelector:
        def opt(values: Collection[str] | None) -> frozenset[str] | None:
            return frozenset(values) if values is not None else None

        return cls(
            frozenset(on), opt(labels), opt(kinds), opt(zones), opt(lines), opt(directions),
            Condition.parse(when) if when is not None else None,
        )  # fmt: skip

    def wants(self, event: Event) -> bool:
        if event.state not in self.states:
            return False
        if self.labels is not None and event.label not in self.labels:
            return False
        if self.kinds is not None and event.kind not in self.kinds:
            return False
        attributes = event.attributes
        for chosen, key in (
            (self.zones, "zone"),
            (self.lines, "line"),
            (self.directions, "direction"),
        ):
            if chosen is not None and attributes.get(key) not in chosen:
                return False
        return self.condition is None or self.condition.holds(event)
