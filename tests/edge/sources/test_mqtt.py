"""The mqtt source: field paths and raw payloads, sensor times, late readings, a broker that
goes away. Integration tests run against a real Mosquitto (tests/conftest.py)."""

from __future__ import annotations

import json
import math
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import ValidationError

from edge_agent.sources.mqtt import MessageParser, MqttSource, MqttSourceConfig, parse_path
from edge_agent.sources.windows import WindowConfig
from tests.edge.sources.collect import Collector
from tests.services import Mosquitto


def config(**keys: Any) -> MqttSourceConfig:
    keys.setdefault("topic", "plant/line1")
    keys.setdefault("channels", {"temp": "payload.temp"})
    return MqttSourceConfig.model_validate({"type": "mqtt", **keys})


@pytest.mark.parametrize(
    ("path", "keys"),
    [
        ("$", ()),
        ("temp", ("temp",)),
        ("payload.temp", ("payload", "temp")),
        ("data[0].value", ("data", 0, "value")),
        ("[2]", (2,)),
        ("m[1][0]", ("m", 1, 0)),
    ],
)
def test_field_paths(path: str, keys: tuple[object, ...]) -> None:
    assert parse_path(path) == keys


@pytest.mark.parametrize("path", ["", ".a", "a..b", "a[x]", "a[0", "a]"])
def test_a_malformed_field_path_is_a_config_error_naming_the_channel(path: str) -> None:
    with pytest.raises(ValidationError, match="channels"):
        config(channels={"temp": path})


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"url": "http://broker"}, "url"),
        ({"topic": None}, "channels temp have no topic"),
        ({"timestamp": "$"}, "timestamp"),
        ({"channels": {}}, "channels"),
        ({"max_delay_s": -1}, "max_delay_s"),
        ({"qos": 2}, "qos"),
    ],
)
def test_bad_keys_are_refused_by_name(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        config(**keys)


def parse(cfg: MqttSourceConfig, topic: str, payload: object, arrived: float = 50.0) -> Any:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return MessageParser(cfg).parse(topic, body, arrived)


def test_numbers_come_from_field_paths_and_the_time_from_a_field() -> None:
    cfg = config(channels={"temp": "payload.temp", "vib": "data[0].value"}, timestamp="payload.ts")
    got = parse(cfg, "plant/line1", {"payload": {"temp": 21.5, "ts": 1700000000.5},
                                      "data": [{"value": 3}]})  # fmt: skip
    assert (got.ts, got.values) == (1700000000.5, [21.5, 3.0])


@pytest.mark.parametrize(
    ("stamp", "seconds"),
    [(1700000000, 1700000000.0), (1700000000250, 1700000000.25),
     ("2023-11-14T22:13:20Z", 1700000000.0), ("1700000000.5", 1700000000.5)],
)  # fmt: skip
def test_times_in_seconds_milliseconds_or_iso(stamp: object, seconds: float) -> None:
    cfg = config(channels={"x": "x"}, timestamp="t")
    assert parse(cfg, "plant/line1", {"x": 1, "t": stamp}).ts == seconds


def test_without_a_time_field_the_arrival_time_is_the_reading_time() -> None:
    assert parse(config(), "plant/line1", {"payload": {"temp": 1}}, arrived=77.0).ts == 77.0


def test_raw_payloads_on_topics_of_their_own() -> None:
    cfg = config(
        topic=None,
        channels={"temp": {"topic": "s/+/temp"}, "rpm": {"topic": "s/m1/rpm", "path": "$"}},
    )
    temp = parse(cfg, "s/m1/temp", b" +21.5 ").values
    assert temp[0] == 21.5
    assert math.isnan(temp[1])
    rpm = parse(cfg, "s/m1/rpm", b"1480").values
    assert math.isnan(rpm[0])
    assert rpm[1] == 1480


@pytest.mark.parametrize(
    ("payload", "keys", "error", "message"),
    [
        ({"payload": {"temp": "hot"}}, {}, ValueError, "channel temp: 'hot' is not a number"),
        ({"payload": {"temp": None}}, {}, ValueError, "channel temp: null is not a number"),
        ({"payload": {"temp": [1]}}, {}, ValueError, r"channel temp: \[1\] is not a number"),
        ({"other": 1}, {}, LookupError, "no channel's field"),
        (b"not json", {}, LookupError, "no channel's field"),
        ({"payload": {"temp": 1}}, {"timestamp": "ts"}, ValueError, "timestamp missing"),
        ({"payload": {"temp": 1}, "ts": "noon"}, {"timestamp": "ts"}, ValueError, "'noon'"),
    ],
)
def test_a_message_without_a_usable_number_says_why(
    payload: object, keys: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        parse(config(**keys), "plant/line1", payload)


# -- against a real broker ----------------------------------------------------------------


def publisher(url_port: int) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.connect("127.0.0.1", url_port)
    client.loop_start()
    return client


def publish(client: mqtt.Client, topic: str, payload: object) -> None:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    client.publish(topic, body, qos=1).wait_for_publish(timeout=5)


def stop_publisher(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


@pytest.mark.integration
def test_readings_from_a_broker_are_reordered_and_windowed(broker: Mosquitto) -> None:
    topic = f"test/{uuid.uuid4().hex}/machine"
    source = MqttSource(
        config(url=broker.url, topic=topic, channels={"temp": "v.temp", "amps": "v.amps"},
               timestamp="ts", max_delay_s=2.0, qos=1)
    )  # fmt: skip
    window = WindowConfig(size=4, rate_hz=10)
    pub = publisher(broker.port)
    try:
        with Collector(source, window) as run:
            assert source.subscribed.wait(10)
            t0 = 1_700_000_000.0
            order = [0, 2, 1, 3, 5, 4, 6, 7, 8, 9]  # out of order within the delay
            for i in order:
                publish(pub, topic, {"ts": t0 + i / 10, "v": {"temp": 20 + i, "amps": i}})
            run.wait_for(lambda: len(run.ts) == 10)
            # Older than readings already released: late beyond repair.
            publish(pub, topic, {"ts": t0 + 0.55, "v": {"temp": 0, "amps": 0}})
            publish(pub, topic, b"garbage")
            publish(pub, topic, {"ts": t0 + 1, "v": {"temp": "n/a"}})
            run.wait_for(lambda: sum(source.health.bad.values()) == 3)
    finally:
        stop_publisher(pub)
    assert run.ts == [t0 + i / 10 for i in range(10)]
    assert run.values[:, 0].tolist() == [20 + i for i in range(10)]
    assert [w.data[1].tolist() for w in run.windows] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert source.health.snapshot() == {
        "readings": 10, "gaps": 0, "missed": 0,
        "bad_late": 1, "bad_missing": 1, "bad_unparseable": 1,
    }  # fmt: skip


@pytest.mark.integration
def test_a_broker_that_goes_away_is_a_gap_and_reading_resumes(own_broker: Mosquitto) -> None:
    topic = f"test/{uuid.uuid4().hex}/temp"
    source = MqttSource(
        config(url=own_broker.url, topic=topic, channels={"temp": "$"},
               reconnect_min_s=1, reconnect_max_s=1)
    )  # fmt: skip
    with Collector(source) as run:
        assert source.subscribed.wait(10)
        pub = publisher(own_broker.port)
        publish(pub, topic, b"1.5")
        run.wait_for(lambda: len(run.ts) == 1)
        stop_publisher(pub)
        own_broker.stop()
        run.wait_for(lambda: source.health.gaps == 1)
        own_broker.start()
        assert source.subscribed.wait(15)  # paho reconnected and subscribed again
        pub = publisher(own_broker.port)
        publish(pub, topic, b"2.5")
        run.wait_for(lambda: len(run.ts) == 2)
        stop_publisher(pub)
    assert run.values[:, 0].tolist() == [1.5, 2.5]
    assert source.health.gaps == 1
    assert source.health.is_connected
    assert run.ts[1] > run.ts[0]
    assert run.ts[1] <= time.time()
