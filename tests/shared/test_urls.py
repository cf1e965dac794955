"""One parser of broker URLs for both sides."""

from __future__ import annotations

import pytest

from shared.errors import ContractError
from shared.urls import MqttUrl, parse_mqtt_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://broker", MqttUrl("broker", 1883, tls=False)),
        ("mqtts://broker", MqttUrl("broker", 8883, tls=True)),
        ("mqtt://127.0.0.1:1884/", MqttUrl("127.0.0.1", 1884, tls=False)),
        ("mqtts://u:p%40ss%3Aw@b:9", MqttUrl("b", 9, tls=True, username="u", password="p@ss:w")),
        ("mqtt://agent%2F1@b", MqttUrl("b", 1883, tls=False, username="agent/1")),
    ],
)
def test_urls_both_sides_accept(url: str, expected: MqttUrl) -> None:
    assert parse_mqtt_url(url) == expected


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("tcp://broker:1883", "scheme 'tcp'"),
        ("http://broker", "scheme 'http'"),
        ("mqtt://", "no host"),
        ("mqtt://broker/topic", "path or query"),
        ("mqtt://broker?x=1", "path or query"),
        ("mqtt://broker:99999", "invalid port"),
        ("mqtt://broker:port", "invalid port"),
    ],
)
def test_anything_else_is_refused_saying_what_was_expected(url: str, complaint: str) -> None:
    with pytest.raises(ContractError, match=complaint):
        parse_mqtt_url(url)


def test_the_printed_form_never_shows_the_password() -> None:
    url = parse_mqtt_url("mqtts://press-3:s3cret@broker:8883")
    assert str(url) == "mqtts://press-3@broker:8883"
    assert "s3cret" not in repr(url)
    assert url.password == "s3cret"
