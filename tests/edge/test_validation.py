"""One wording of validation errors, for config files and refused messages."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edge_agent.config_types import StrictConfig
from edge_agent.validation import explain, first_error, key_path


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


def test_first_error_names_the_key_and_how_many_more_never_the_value() -> None:
    exc = error_of({"items": [{"level": "s3cret"}, {"level": "low"}]})
    message = first_error(exc)
    assert message == (
        "items[0].level: Input should be a valid number, unable to parse string as a number "
        "(and 1 more)"
    )
    assert "s3cret" not in message


def test_an_unknown_key_is_named_as_such_and_a_missing_one_as_required() -> None:
    assert first_error(error_of({"items": [], "itmes": []})) == "itmes: unknown key"
    assert first_error(error_of({})) == "items: Field required"


def test_a_config_error_quotes_a_scalar_value_but_not_a_list() -> None:
    scalar = error_of({"items": [{"level": "high"}]}).errors()[0]
    assert explain(scalar, quote_input=True).endswith("(got 'high')")
    listed = error_of({"items": [{"level": [1, 2]}]}).errors()[0]
    assert "got" not in explain(listed, quote_input=True)
