"""One wording of validation errors, for config files and refused messages."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edge_agent.config_types import StrictConfig
from edge_agent.validation import first_error, key_path


class Inner(StrictConfig):
    level: float


class Outer(StrictConfig):
    items: list[Inner]


def error_of(data: object) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        Outer.model_validate(data)
    return caught.value


def test_key_path_dots_keys_and_brackets_positions() -> None:
    assert key_path(("pipelines", 0, "source", "type")) == "pipelines[0].source.type"
    assert key_path(()) == ""


def test_first_error_names_the_key_the_value_and_how_many_more() -> None:
    exc = error_of({"items": [{"level": "high"}, {"level": "low"}]})
    assert first_error(exc) == (
        "items[0].level: Input should be a valid number, unable to parse string as a number "
        "(got 'high') (and 1 more)"
    )


def test_an_unknown_key_is_named_as_such_and_a_missing_one_without_a_value() -> None:
    assert first_error(error_of({"items": [], "itmes": []})) == "itmes: unknown key"
    assert first_error(error_of({})) == "items: Field required"


def test_a_long_value_is_cut() -> None:
    message = first_error(error_of({"items": [{"level": "x" * 1000}]}))
    assert len(message) < 250
    assert message.endswith("...)")
