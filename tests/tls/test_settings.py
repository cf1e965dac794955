"""The TLS and password settings of both sides: what they accept, what they refuse (naming
the key or file), and the Mosquitto TLS listener that `aiot cloud broker-config` writes."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from cloud_api.config import load_settings
from edge_agent.config import load_config
from shared.errors import ConfigError
from shared.tls import TlsFiles, client_context, explain
from tests.tls.agents import agent_config
from tests.tls.certs import Pki


def _edge(tmp_path: Path, mqtt: str) -> str:
    try:
        load_config(agent_config(tmp_path, "settings-1", mqtt))
    except ConfigError as exc:
        return str(exc)
    return "OK"


@pytest.mark.parametrize(
    ("mqtt", "expected"),
    [
        ("  url: mqtts://a@h\n  password_file: p\n", "OK"),
        ("  url: mqtts://h\n  username: a\n  password_env: AIOT_PW\n", "OK"),
        ("  url: mqtt://h\n  tls: {ca_file: ca.pem}\n", "use mqtts:// for TLS"),
        ("  url: mqtts://h\n  tls: {cert_file: c.pem}\n", "give cert_file and key_file together"),
        ("  url: mqtts://a@h\n  password_file: p\n  password_env: X\n", "not both"),
        ("  url: mqtts://a:pw@h\n  password_file: p\n", "the URL holds a password"),
        ("  url: mqtts://h\n  password_file: p\n", "a password needs a username"),
        ("  url: mqtts://a@h\n  password_env: 1X\n", "mqtt.password_env: String should match"),
        ("  url: mqtts://h\n  tls: {ca: x}\n", "mqtt.tls.ca: unknown key"),
    ],
)
def test_edge_broker_settings(tmp_path: Path, mqtt: str, expected: str) -> None:
    assert expected in _edge(tmp_path, mqtt)


def test_the_edge_reads_a_password_from_its_file_or_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pw").write_text("from-file\n")
    config = load_config(agent_config(tmp_path, "pw-1", "  url: mqtt://a@h\n  password_file: pw\n"))
    assert config.mqtt.endpoint().password == "from-file"
    monkeypatch.setenv("AIOT_TEST_PW", "from-env")
    config = load_config(
        agent_config(
            tmp_path, "pw-2", "  url: mqtt://h\n  username: a\n  password_env: AIOT_TEST_PW\n"
        )
    )
    endpoint = config.mqtt.endpoint()
    assert (endpoint.username, endpoint.password) == ("a", "from-env")
    monkeypatch.delenv("AIOT_TEST_PW")
    with pytest.raises(ConfigError, match="password_env AIOT_TEST_PW: the variable is not set"):
        config.mqtt.endpoint()


def test_cloud_settings_refuse_what_does_not_fit(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("x")
    with pytest.raises(ConfigError, match="AIOT_MQTT_CERT_FILE and AIOT_MQTT_KEY_FILE together"):
        load_settings(mqtt_cert_file=tmp_path / "c.pem")
    with pytest.raises(ConfigError, match="holds a password and AIOT_MQTT_PASSWORD"):
        load_settings(mqtt_url="mqtt://u:p@h", mqtt_password_file=tmp_path / "pw")
    with pytest.raises(ConfigError, match=r"AIOT_MQTT_CONTROL_PASSWORD\* is given without"):
        load_settings(mqtt_control_password="x")
    settings = load_settings(
        mqtt_url="mqtts://ingest@h",
        mqtt_password_file=tmp_path / "pw",
        mqtt_control_url="mqtts://control@h",
        mqtt_control_password="y",
    )
    assert settings.ingest_broker().password == "x"
    assert settings.control_broker().password == "y"
    assert "'y'" not in repr(settings)


def test_a_tls_file_that_cannot_be_used_is_named(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(ConfigError, match=f"ca_file {tmp_path / 'no.pem'}: cannot read it"):
        client_context(TlsFiles(ca_file=tmp_path / "no.pem"))
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="holds no PEM certificate"):
        client_context(TlsFiles(ca_file=tmp_path / "junk.pem"))
    mismatched = TlsFiles(ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.server_key)
    with pytest.raises(ConfigError, match=r"unusable \(KEY_VALUES_MISMATCH"):
        client_context(mismatched)
    context = client_context(
        TlsFiles(ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key)
    )
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (10, "has expired"),
        (9, "is not valid yet"),
        (20, "is signed by a CA we do not trust (the system's CAs)"),
        (62, "is not valid for this host name"),
        (64, "is not valid for this IP address"),
        (99, "was refused (some reason)"),
    ],
)
def test_a_verify_code_says_why(code: int, expected: str) -> None:
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_code, error.verify_message = code, "some reason"
    # Nothing listens on port 1: the certificate is named by its address.
    text = explain(error, files=TlsFiles(), peer="the broker", address=("127.0.0.1", 1))
    assert text == f"the broker's certificate at 127.0.0.1:1 {expected}"


def test_broker_config_writes_a_tls_listener(tmp_path: Path, pki: Pki) -> None:
    db = f"sqlite:///{tmp_path / 'cloud.db'}"
    out = tmp_path / "broker"
    args = ["cloud", "broker-config", "--out", str(out), "--db", db, "--port", "8883"]
    tls = [
        "--cafile",
        str(pki.ca),
        "--certfile",
        str(pki.server_cert),
        "--keyfile",
        str(pki.server_key),
    ]
    result = CliRunner().invoke(app, [*args, *tls, "--require-certificate"])
    assert result.exit_code == 0, result.output
    conf = (out / "mosquitto.conf").read_text()
    assert (
        f"listener 8883 0.0.0.0\ncafile {pki.ca}\ncertfile {pki.server_cert}\n"
        f"keyfile {pki.server_key}\ntls_version tlsv1.2\nrequire_certificate true\n"
    ) in conf
    result = CliRunner().invoke(app, [*args, "--cafile", str(pki.ca)])
    assert result.exit_code == 2
    assert "a TLS listener needs --cafile, --certfile and --keyfile" in result.output


def test_the_tls_config_in_the_readme_is_valid(tmp_path: Path) -> None:
    readme = Path(__file__).resolve().parents[2] / "README.md"
    section = readme.read_text().split("## TLS and secrets", 1)[1]
    block = section.split("```yaml", 1)[1].split("```", 1)[0]
    agent_config(tmp_path, "readme-1", "  url: mqtt://h\n")  # its pipelines, reused below
    path = tmp_path / "readme.yaml"
    base = (tmp_path / "readme-1.yaml").read_text().split("pipelines:", 1)[1]
    path.write_text("agent_id: readme-1\n" + block + "pipelines:" + base)
    loaded = load_config(path)
    assert loaded.mqtt.tls is not None
    assert loaded.mqtt.tls.key_file == Path("/etc/aiot/press-3.key")
    assert loaded.cloud is not None
    assert loaded.cloud.tls is not None


def test_cloud_settings_name_a_tls_file_that_cannot_be_used(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(ConfigError, match=r"AIOT_MQTT_CA_FILE: ca_file .*no\.pem: cannot read it"):
        load_settings(mqtt_url="mqtts://h", mqtt_ca_file=tmp_path / "no.pem")
    with pytest.raises(ConfigError, match=r"AIOT_MQTT_CERT_FILE: cert_file .* with key_file"):
        load_settings(
            mqtt_url="mqtts://h", mqtt_cert_file=pki.client_cert, mqtt_key_file=pki.server_key
        )
    # Without an mqtts:// URL the files are not used, so not read.
    assert load_settings(mqtt_ca_file=tmp_path / "no.pem").mqtt_ca_file is not None


def test_the_cloud_download_password_may_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloud = (
        "cloud:\n  api_url: https://cloud.example\n  username: pw-3\n"
        "  password_env: AIOT_CLOUD_PW\n  tls: {ca_file: ca.pem}\n"
    )
    path = agent_config(tmp_path, "pw-3", "  url: mqtt://h\n")
    path.write_text(path.read_text().replace("pipelines:", cloud + "pipelines:"))
    config = load_config(path).cloud
    assert config is not None
    monkeypatch.setenv("AIOT_CLOUD_PW", "from-env")
    assert config.read_password() == "from-env"
    assert config.tls is not None
    assert config.tls.files().ca_file == tmp_path / "ca.pem"
    path.write_text(path.read_text().replace("https://", "http://"))
    with pytest.raises(ConfigError, match="use https:// for TLS"):
        load_config(path)
