"""MQTT topic layout: built and parsed here only.

Every agent owns the subtree ``aiot/v1/agents/{agent_id}/``. Agents publish ``events``,
``summary``, ``status`` (retained, Last Will ``offline``), ``samples`` and ``escalations``;
the cloud publishes ``acks`` (which batches it stored), ``desired`` (retained),
``escalations/result`` and ``config`` (retained: the agent's remote configuration overlay).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from shared.errors import ContractError

ROOT = "aiot/v1/agents"
_AGENT_ID_BODY = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
AGENT_ID_PATTERN = f"^{_AGENT_ID_BODY}$"
_AGENT_ID = re.compile(_AGENT_ID_BODY)


class Channel(StrEnum):
    """The last part(s) of an agent topic."""

    EVENTS = "events"
    SUMMARY = "summary"
    STATUS = "status"
    SAMPLES = "samples"
    ESCALATIONS = "escalations"
    ACKS = "acks"
    DESIRED = "desired"
    ESCALATION_RESULT = "escalations/result"
    CONFIG = "config"


def check_agent_id(agent_id: str) -> str:
    """Return ``agent_id`` if it may be used as a topic level, else raise ContractError."""
    if not _AGENT_ID.fullmatch(agent_id):
        raise ContractError(
            f"agent id {agent_id!r} must be 1-64 characters of letters, digits, '_', '.', '-' "
            "and start with a letter or digit"
        )
    return agent_id


@dataclass(frozen=True, slots=True)
class Topic:
    """One agent's topic for one channel, e.g. ``aiot/v1/agents/press-3/events``."""

    agent_id: str
    channel: Channel

    def __post_init__(self) -> None:
        check_agent_id(self.agent_id)

    def __str__(self) -> str:
        return f"{ROOT}/{self.agent_id}/{self.channel.value}"

    @classmethod
    def parse(cls, topic: str) -> Topic:
        """Parse a concrete topic; raise ContractError if it is not one of ours."""
        prefix = ROOT + "/"
        if not topic.startswith(prefix):
            raise ContractError(f"topic {topic!r} is not under {ROOT}/")
        agent_id, sep, rest = topic[len(prefix) :].partition("/")
        if not sep:
            raise ContractError(f"topic {topic!r} has no channel")
        try:
            channel = Channel(rest)
        except ValueError:
            raise ContractError(f"topic {topic!r} has unknown channel {rest!r}") from None
        return cls(agent_id, channel)


def subscription(channel: Channel, *, agent_id: str = "+", share_group: str | None = None) -> str:
    """A subscription filter for one channel of one agent or, with ``+``, of every agent.

    With ``share_group`` the filter is an MQTT 5 shared subscription (``$share/group/...``),
    so that several ingest processes split the messages between them.
    """
    if agent_id != "+":
        check_agent_id(agent_id)
    topic_filter = f"{ROOT}/{agent_id}/{channel.value}"
    if share_group is None:
        return topic_filter
    if not re.fullmatch(r"[A-Za-z0-9_-]+", share_group):
        raise ContractError(f"share group {share_group!r} must be letters, digits, '_' or '-'")
    return f"$share/{share_group}/{topic_filter}"


def agent_subtree(agent_id: str) -> str:
    """The filter that covers everything of one agent (used for broker ACLs)."""
    return f"{ROOT}/{check_agent_id(agent_id)}/#"
