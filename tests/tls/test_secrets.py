"""Secrets never appear in what the platform prints: `validate-config`, the agent's log with a
password file and with a password in the URL, a refused login, a failing TLS connect of the
cloud's ingest, an invalid cloud setting. Every output is grepped for the password."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from cloud_api.config import load_settings
from shared.errors import ConfigError
from tests.integration.conftest import AgentProcess
from tests.tls.agents import agent_config, wait_for_line
from tests.tls.certs import Pki
from tests.tls.conftest import StartBroker

AIOT = Path(sys.executable).parent / "aiot"
SECRET = "s3cret-" + uuid.uuid4().hex  # what no output may hold


def _validate(config: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["edge", "validate-config", str(config)])
    return result.exit_code, result.output


def test_validate_config_warns_about_readable_secrets_and_never_prints_them(
    tmp_path: Path, pki: Pki
) -> None:
    password = tmp_path / "password"
    password.write_text(SECRET)
    password.chmod(0o644)
    key = tmp_path / "client.key"
    key.write_bytes(pki.client_key.read_bytes())
    key.chmod(0o640)
    config = agent_config(
        tmp_path,
        "secrets-1",
        "  url: mqtts://agent@broker.example:8883\n"
        "  password_file: password\n"
        f"  tls: {{ca_file: '{pki.ca}', cert_file: '{pki.client_cert}', key_file: client.key}}\n",
    )
    code, output = _validate(config)
    assert code == 0, output
    assert f"warning: secrets-1.yaml:4: mqtt.password_file: {password} holds a secret" in output
    assert "(mode 0644): chmod 600" in output
    assert f"mqtt.tls.key_file: {key} holds a secret and is readable" in output
    assert SECRET not in output


def test_a_password_in_the_url_is_warned_about_and_not_printed(tmp_path: Path) -> None:
    config = agent_config(
        tmp_path,
        "secrets-2",
        f"  url: mqtt://agent:{SECRET}@127.0.0.1:1883\n  tls: {{insecure: true}}\n",
    )
    code, output = _validate(config)
    assert code == 2, output  # tls: with mqtt://
    assert "use mqtts:// for TLS" in output
    config.write_text(config.read_text().replace("mqtt://", "mqtts://"))
    config.chmod(0o644)
    code, output = _validate(config)
    assert code == 0, output
    assert "mqtt.url: holds a password: move it to password_file or password_env" in output
    assert "mqtt.tls.insecure: no certificate is verified" in output
    assert f"warning: {config}: {config} holds a secret" in output
    assert SECRET not in output


def test_a_missing_password_file_is_an_error_naming_the_file(tmp_path: Path) -> None:
    config = agent_config(
        tmp_path, "secrets-3", "  url: mqtt://agent@127.0.0.1:1883\n  password_file: nowhere\n"
    )
    code, output = _validate(config)
    assert code == 2
    assert f"mqtt.password_file: {tmp_path / 'nowhere'}: cannot read it" in output


@pytest.mark.integration
def test_the_agent_never_logs_its_password(
    tls_broker: StartBroker, pki: Pki, tmp_path: Path
) -> None:
    broker = tls_broker(users={"agent": "the-right-one"})
    (tmp_path / "password").write_text(SECRET)
    (tmp_path / "password").chmod(0o600)
    base = f"  tls: {{ca_file: '{pki.ca}'}}\n"
    from_file = agent_config(
        tmp_path, "from-file", f"  url: mqtts://agent@127.0.0.1:{broker.port}\n"
        "  password_file: password\n" + base,
    )  # fmt: skip
    in_url = agent_config(
        tmp_path, "in-url", f"  url: mqtts://agent:{SECRET}@127.0.0.1:{broker.port}\n" + base
    )
    logs = []
    for config in (from_file, in_url):
        log = tmp_path / f"{config.stem}.log"
        agent = AgentProcess(config, log)
        agent.start()
        try:
            logs.append(wait_for_line(log, "refused the connection"))
        finally:
            agent.stop()
    assert "the password is written in the URL" in logs[1]
    for text in logs:
        assert "Not authorized" in text or "Bad user name or password" in text
        assert SECRET not in text


@pytest.mark.integration
def test_cloud_ingest_never_prints_its_password(
    tls_broker: StartBroker, pki: Pki, tmp_path: Path
) -> None:
    broker = tls_broker(users={"ingest": "the-right-one"})
    env = {**os.environ, "AIOT_MQTT_PASSWORD": SECRET, "PYTHONUNBUFFERED": "1"}
    outputs: list[str] = []
    for ca, expected in ((pki.wrong_ca, "TLS: the broker"), (pki.ca, "refused ingest")):
        log = tmp_path / f"ingest-{len(outputs)}.log"
        command = [
            str(AIOT), "cloud", "ingest", "--db", f"sqlite:///{tmp_path / 'cloud.db'}",
            "--mqtt", f"mqtts://ingest@127.0.0.1:{broker.port}", "--mqtt-ca-file", str(ca),
        ]  # fmt: skip
        with log.open("wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            outputs.append(wait_for_line(log, expected))
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        outputs[-1] = log.read_text()
    for text in outputs:
        assert SECRET not in text


def test_an_invalid_cloud_setting_does_not_repeat_the_password(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(mqtt_url=f"mqtt://ingest:{SECRET}@host:99999")
    assert "AIOT_MQTT_URL" in str(error.value)
    assert SECRET not in str(error.value)
    (tmp_path / "empty").write_text("")
    with pytest.raises(ConfigError, match=r"AIOT_MQTT_PASSWORD_FILE .*empty: the file is empty"):
        load_settings(mqtt_password_file=tmp_path / "empty")


def test_an_invalid_url_is_quoted_without_its_password(tmp_path: Path) -> None:
    config = agent_config(tmp_path, "secrets-4", f"  url: mqtt://agent:{SECRET}@host:99999\n")
    code, output = _validate(config)
    assert code == 2
    assert "mqtt.url: Value error, broker URL has an invalid port" in output
    assert "(got 'mqtt://agent:***@host:99999')" in output
    assert SECRET not in output
