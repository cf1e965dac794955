"""Topic layout: built and parsed in one place, refusing what is not ours."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import ContractError
from shared.topics import AGENT_ID_PATTERN, Channel, Topic, agent_subtree, subscription


@pytest.mark.parametrize("channel", list(Channel))
def test_topics_round_trip(channel: Channel) -> None:
    topic = Topic("press-line-3", channel)
    assert str(topic) == f"aiot/v1/agents/press-line-3/{channel.value}"
    assert Topic.parse(str(topic)) == topic


@pytest.mark.parametrize(
    "bad",
    [
        "other/v1/agents/a/events",
        "aiot/v1/agents/a",
        "aiot/v1/agents/a/unknown",
        "aiot/v1/agents/+/events",
        "aiot/v1/agents/#/events",
        "aiot/v1/agents//events",
    ],
)
def test_foreign_topics_are_refused(bad: str) -> None:
    with pytest.raises(ContractError):
        Topic.parse(bad)


@pytest.mark.parametrize("agent_id", ["", "a/b", "a+b", "a#", "-lead", "x" * 65, "sp ace", "gw1\n"])
def test_agent_ids_that_would_break_topics_are_refused(agent_id: str) -> None:
    with pytest.raises(ContractError):
        Topic(agent_id, Channel.EVENTS)


def test_subscriptions() -> None:
    assert subscription(Channel.EVENTS) == "aiot/v1/agents/+/events"
    assert subscription(Channel.DESIRED, agent_id="gw1") == "aiot/v1/agents/gw1/desired"
    assert (
        subscription(Channel.EVENTS, share_group="ingest")
        == "$share/ingest/aiot/v1/agents/+/events"
    )
    assert agent_subtree("gw1") == "aiot/v1/agents/gw1/#"
    with pytest.raises(ContractError):
        subscription(Channel.EVENTS, share_group="bad/group")


@given(st.from_regex(AGENT_ID_PATTERN, fullmatch=True))
def test_every_valid_agent_id_round_trips(agent_id: str) -> None:
    topic = Topic(agent_id, Channel.STATUS)
    assert Topic.parse(str(topic)) == topic
