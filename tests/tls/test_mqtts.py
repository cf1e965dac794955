"""An agent and ingest over mqtts:// against Mosquitto with TLS: events stored, with a CA file
and a password file, with mutual TLS; a wrong CA, an expired certificate or a missing or
expired client certificate refused with one line that names the certificate and why."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest

from edge_agent.mqtt_client import make_client
from shared.urls import parse_mqtt_url
from tests.integration.conftest import AgentProcess, wait_until
from tests.services import Mosquitto
from tests.tls.agents import FAULTS, agent_config, ingest_from_settings, wait_for_line
from tests.tls.certs import Pki
from tests.tls.conftest import StartBroker

pytestmark = pytest.mark.integration

EVENTS = 2 * len(FAULTS)  # a start and an end per fault


def _run_agent(config: Path, log: Path) -> AgentProcess:
    agent = AgentProcess(config, log)
    agent.start()
    return agent


def test_agent_and_ingest_over_mqtts_with_password_files_store_events(
    tls_broker: StartBroker, pki: Pki, tmp_path: Path
) -> None:
    agent_id = f"tls-{uuid.uuid4().hex[:8]}"
    agent_password, ingest_password = uuid.uuid4().hex, uuid.uuid4().hex
    broker = tls_broker(users={agent_id: agent_password, "ingest": ingest_password})
    (tmp_path / "agent-password").write_text(agent_password + "\n")
    (tmp_path / "ingest-password").write_text(ingest_password)
    config = agent_config(
        tmp_path,
        agent_id,
        f"  url: mqtts://{agent_id}@127.0.0.1:{broker.port}\n"
        "  password_file: agent-password\n"
        f"  tls: {{ca_file: '{pki.ca}'}}\n",
    )
    with ingest_from_settings(
        tmp_path,
        mqtt_url=f"mqtts://ingest@127.0.0.1:{broker.port}",
        mqtt_password_file=tmp_path / "ingest-password",
        mqtt_ca_file=pki.ca,
    ) as ingest:
        ingest.wait_connected()
        agent = _run_agent(config, tmp_path / "agent.log")
        try:
            wait_until(lambda: ingest.events_stored >= EVENTS, 90, "the agent's events stored")
        finally:
            agent.stop()
    log = (tmp_path / "agent.log").read_text()
    assert f"connected to 127.0.0.1:{broker.port} as aiot-edge-{agent_id}" in log
    assert "TLS:" not in log


def test_mutual_tls_with_client_certificates_stores_events(
    tls_broker: StartBroker, pki: Pki, tmp_path: Path
) -> None:
    agent_id = f"mtls-{uuid.uuid4().hex[:8]}"
    broker = tls_broker(mutual=True)
    config = agent_config(
        tmp_path,
        agent_id,
        f"  url: mqtts://localhost:{broker.port}\n"
        f"  tls: {{ca_file: '{pki.ca}', cert_file: '{pki.client_cert}', "
        f"key_file: '{pki.client_key}'}}\n",
    )
    with ingest_from_settings(
        tmp_path,
        mqtt_url=f"mqtts://127.0.0.1:{broker.port}",
        mqtt_ca_file=pki.ca,
        mqtt_cert_file=pki.client_cert,
        mqtt_key_file=pki.client_key,
    ) as ingest:
        ingest.wait_connected()
        agent = _run_agent(config, tmp_path / "agent.log")
        try:
            wait_until(lambda: ingest.events_stored >= EVENTS, 90, "the agent's events stored")
        finally:
            agent.stop()


@pytest.mark.parametrize(
    ("expired", "ca", "expected"),
    [
        (False, "wrong_ca", "CN=aiot test broker (issued by CN=aiot test CA, valid "),
        (True, "ca", "CN=aiot old broker (issued by CN=aiot test CA, valid "),
    ],
    ids=["wrong-ca", "expired"],
)
def test_the_agent_refuses_a_broker_certificate_once_naming_it_and_why(
    tls_broker: StartBroker, pki: Pki, tmp_path: Path, expired: bool, ca: str, expected: str
) -> None:
    broker = tls_broker(expired=expired)
    ca_file = getattr(pki, ca)
    config = agent_config(
        tmp_path,
        "refused-1",
        f"  url: mqtts://127.0.0.1:{broker.port}\n"
        "  reconnect_min_s: 1\n  reconnect_max_s: 1\n"
        f"  tls: {{ca_file: '{ca_file}'}}\n",
        duration_s=600,
    )
    log = tmp_path / "agent.log"
    agent = _run_agent(config, log)
    try:
        wait_for_line(log, "TLS: ")
        # Three more attempts fail the same way; the log says so once.
        wait_for_line(log, "cannot be reached")
        wait_until(lambda: agent_attempts(broker.workdir) >= 4, 30, "four attempts at the broker")
    finally:
        agent.stop()
    text = log.read_text()
    lines = [line for line in text.splitlines() if "TLS: " in line]
    assert len(lines) == 1, text
    assert f"the broker 127.0.0.1:{broker.port}'s certificate {expected}" in lines[0]
    if expired:
        assert lines[0].endswith("has expired")
    else:
        assert f"is signed by a CA we do not trust (ca_file {pki.wrong_ca})" in lines[0]


def agent_attempts(workdir: Path) -> int:
    """TLS handshakes Mosquitto saw fail (its log line per refused connection)."""
    text = (workdir / "mosquitto.log").read_text(errors="replace")
    return text.count("OpenSSL Error") + text.count("Client <unknown> disconnected")


@pytest.mark.parametrize(
    ("client_cert", "expected"),
    [
        (None, "the broker 127.0.0.1:{port} wants a client certificate and we sent none"),
        (
            "expired",
            "the broker 127.0.0.1:{port} refused our client certificate {cert}: it has expired",
        ),
    ],
    ids=["missing", "expired"],
)
def test_ingest_without_a_valid_client_certificate_says_why(
    tls_broker: StartBroker,
    pki: Pki,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    client_cert: str | None,
    expected: str,
) -> None:
    broker = tls_broker(mutual=True)
    files: dict[str, object] = {}
    if client_cert == "expired":
        files = {"mqtt_cert_file": pki.expired_client_cert, "mqtt_key_file": pki.expired_client_key}
    caplog.set_level(logging.ERROR, logger="cloud_api.mqtt")
    with ingest_from_settings(
        tmp_path, mqtt_url=f"mqtts://127.0.0.1:{broker.port}", mqtt_ca_file=pki.ca, **files
    ) as ingest:
        wait_until(lambda: any("TLS: " in r.message for r in caplog.records), 30, "a TLS error")
        assert not ingest.connected
    messages = [r.message for r in caplog.records if "TLS: " in r.message]
    assert messages[0].startswith(
        "TLS: " + expected.format(port=broker.port, cert=pki.expired_client_cert)
    )


def test_a_certificate_for_another_host_is_refused_naming_the_host_check(
    tls_broker: StartBroker, pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = tls_broker(elsewhere=True)
    caplog.set_level(logging.ERROR, logger="cloud_api.mqtt")
    with ingest_from_settings(
        tmp_path, mqtt_url=f"mqtts://127.0.0.1:{broker.port}", mqtt_ca_file=pki.ca
    ) as ingest:
        wait_until(lambda: any("TLS: " in r.message for r in caplog.records), 30, "a TLS error")
        assert not ingest.connected
    messages = [r.message for r in caplog.records if "TLS: " in r.message]
    assert messages[0].startswith(
        f"TLS: the broker 127.0.0.1:{broker.port}'s certificate CN=elsewhere (issued by "
    )
    assert messages[0].endswith("is not valid for this IP address")


def test_mqtts_to_a_plain_port_says_the_handshake_was_cut(
    broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="edge_agent.mqtt_client")
    client = make_client(
        parse_mqtt_url(f"mqtts://127.0.0.1:{broker.port}"), client_id="plain-1", protocol="5"
    )
    client.connect_async("127.0.0.1", broker.port)
    client.loop_start()
    try:
        wait_until(lambda: any("TLS: " in r.message for r in caplog.records), 30, "a TLS error")
    finally:
        client.loop_stop()
    messages = [r.message for r in caplog.records if "TLS: " in r.message]
    assert messages == [
        f"TLS: the broker 127.0.0.1:{broker.port} closed the connection in the TLS handshake "
        "(a plain mqtt:// or http:// port, or a server that refused us without saying why: "
        "see its log)"
    ]
