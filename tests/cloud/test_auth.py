"""Auth through the real app: API keys with scopes, agents with their enrollment credentials."""

from __future__ import annotations

import base64
import re
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cli.main import app as aiot
from cloud_api.auth import SCOPES, Scope, scope_allows
from cloud_api.broker_config import write_broker_config
from cloud_api.config import Settings
from cloud_api.credentials import create_broker_user
from cloud_api.passwords import mosquitto_hash, verify_mosquitto_hash
from cloud_api.tables import AgentRow
from shared.errors import ConflictError
from shared.messages import encode
from shared.topics import Channel
from tests.cloud.conftest import AppFactory
from tests.cloud.helpers import (
    Publisher,
    client_as,
    make_batch,
    make_status,
    new_api_key,
    topic,
    unique_agent_id,
    wait_until,
)
from tests.cloud.test_registry import MODEL_FILE, upload

# One representative route per scope: (scope it needs, method, path, body).
ROUTES: list[tuple[Scope, str, str, dict[str, Any] | None]] = [
    ("read", "GET", "/api/v1/events", None),
    ("read", "GET", "/api/v1/stats/bandwidth", None),
    ("operate", "POST", "/api/v1/models/vib/versions", None),
    ("admin", "POST", "/api/v1/agents", {"agent_id": "scope-probe"}),
    ("admin", "GET", "/api/v1/keys", None),
]


@pytest.fixture
def api(make_api: AppFactory) -> Iterator[TestClient]:
    with make_api(ingest_enabled=False) as client:
        yield client


def enroll(api: TestClient, agent_id: str, **labels: str) -> str:
    response = api.post("/api/v1/agents", json={"agent_id": agent_id, "labels": labels})
    assert response.status_code == 201, response.text
    password: str = response.json()["password"]
    return password


# -- passwords in Mosquitto's format ---------------------------------------------------------


def test_password_hash_is_mosquitto_passwds_format(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwd), "agent-1", "s3cret pass"], check=True
    )
    theirs = passwd.read_text().strip().partition(":")[2]
    ours = mosquitto_hash("s3cret pass")
    shape = r"\$7\$101\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}=="
    assert re.fullmatch(shape, theirs)
    assert re.fullmatch(shape, ours)
    assert verify_mosquitto_hash("s3cret pass", theirs)
    assert verify_mosquitto_hash("s3cret pass", ours)
    assert not verify_mosquitto_hash("s3cret pasS", theirs)
    assert not verify_mosquitto_hash("s3cret pass", "$6$plain-sha512$xyz")
    assert not verify_mosquitto_hash("s3cret pass", "$7$101$not base64!$")


# -- API keys --------------------------------------------------------------------------------


def test_no_unknown_or_revoked_key_gets_401(api: TestClient) -> None:
    token = new_api_key(api, "read", "dash")
    assert client_as(api, token).get("/api/v1/events").status_code == 200

    missing = client_as(api).get("/api/v1/events")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert "no credentials" in missing.json()["detail"]
    key_id = token.split("_")[1]
    forged = token[:-4] + "AAAA"
    for bad in (forged, "aiot_000000000000_secret"):
        response = client_as(api, bad).get("/api/v1/events")
        assert response.status_code == 401
        assert response.json()["detail"] == "unknown API key"
    malformed = client_as(api, "not-a-key").get("/api/v1/events")
    assert malformed.status_code == 401
    assert malformed.json()["detail"].startswith("malformed API key")

    assert api.delete(f"/api/v1/keys/{key_id}").status_code == 200
    revoked = client_as(api, token).get("/api/v1/events")
    assert revoked.status_code == 401
    assert revoked.json()["detail"] == f"API key '{key_id}' (dash) has been revoked"
    assert api.delete("/api/v1/keys/000000000000").status_code == 404


@pytest.mark.parametrize("scope", SCOPES)
def test_each_scope_reaches_exactly_its_routes(api: TestClient, scope: Scope) -> None:
    client = client_as(api, new_api_key(api, scope, f"{scope}-key"))
    for needs, method, path, body in ROUTES:
        response = client.request(method, path, json=body)
        if scope_allows(scope, needs):
            assert response.status_code not in {401, 403}, (scope, path, response.text)
        else:
            assert response.status_code == 403, (scope, path)
            assert response.json()["detail"] == (
                f"this route needs scope {needs!r}; key '{scope}-key' has {scope!r}"
            )


def test_operate_key_uploads_a_model(api: TestClient) -> None:
    client = client_as(api, new_api_key(api, "operate"))
    status, body = upload(client, "vib", "1.0.0", MODEL_FILE.read_bytes())
    assert status == 201, body


def test_health_metrics_and_docs_stay_open(api: TestClient) -> None:
    anonymous = client_as(api)
    assert anonymous.get("/healthz").status_code == 200
    assert anonymous.get("/metrics").status_code == 200
    assert anonymous.get("/docs").status_code == 200
    schema = anonymous.get("/openapi.json").json()
    assert {"HTTPBearer", "HTTPBasic"} <= set(schema["components"]["securitySchemes"])
    assert schema["paths"]["/api/v1/events"]["get"]["security"]


def test_auth_disabled_makes_every_request_admin(make_api: AppFactory) -> None:
    with make_api(ingest_enabled=False, auth_enabled=False) as api:
        anonymous = client_as(api)
        assert anonymous.get("/api/v1/keys").status_code == 200
        assert anonymous.post("/api/v1/agents", json={"agent_id": "lap-1"}).status_code == 201


def test_key_commands(api: TestClient, settings: Settings) -> None:
    runner = CliRunner()
    db = ["--db", settings.database_url]
    created = runner.invoke(
        aiot, ["cloud", "create-key", "--name", "ops", "--scope", "operate", *db]
    )
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    client = client_as(api, token)
    assert client.get("/api/v1/events").status_code == 200
    assert client.get("/api/v1/keys").status_code == 403

    listed = runner.invoke(aiot, ["cloud", "list-keys", *db])
    key_id = token.split("_")[1]
    assert key_id in listed.stdout
    assert "operate" in listed.stdout
    assert token.split("_", 2)[2][:8] not in listed.stdout

    assert runner.invoke(aiot, ["cloud", "revoke-key", key_id, *db]).exit_code == 0
    assert client.get("/api/v1/events").status_code == 401
    assert runner.invoke(aiot, ["cloud", "revoke-key", "000000000000", *db]).exit_code == 1
    bad = runner.invoke(aiot, ["cloud", "create-key", "--name", "x", "--scope", "root", *db])
    assert bad.exit_code == 2
    assert "unknown scope 'root'" in bad.stderr


# -- agents ----------------------------------------------------------------------------------


def test_enrollment_returns_credentials_once(api: TestClient) -> None:
    response = api.post("/api/v1/agents", json={"agent_id": "press-1", "labels": {"site": "p1"}})
    assert response.status_code == 201
    body = response.json()
    assert body["username"] == "press-1"
    assert body["topics"] == "aiot/v1/agents/press-1/#"
    assert body["public_key"] == api.get("/api/v1/signing-key").json()
    assert len(body["password"]) >= 40
    again = api.post("/api/v1/agents", json={"agent_id": "press-1"})
    assert again.status_code == 409
    assert "enrolled already" in again.json()["detail"]
    assert api.get("/api/v1/agents/press-1").json()["reason"] == "enrolled; has not connected yet"
    assert body["password"] not in str(api.get("/api/v1/agents").json())
    for bad in ({"agent_id": "a/b"}, {"agent_id": "x", "labels": {"k": 1}}, {"agent_id": ""}):
        assert api.post("/api/v1/agents", json=bad).status_code == 422


def test_agent_reads_only_its_own_data(api: TestClient) -> None:
    password = enroll(api, "agent-a")
    enroll(api, "agent-b")
    agent_a = client_as(api, basic=("agent-a", password))

    assert agent_a.get("/api/v1/events", params={"agent_id": "agent-a"}).status_code == 200
    other = agent_a.get("/api/v1/events", params={"agent_id": "agent-b"})
    assert other.status_code == 403
    assert other.json()["detail"] == (
        "agent 'agent-a' may read only its own data, not that of agent 'agent-b'"
    )
    assert agent_a.get("/api/v1/events").status_code == 403
    assert agent_a.get("/api/v1/agents/agent-a").status_code == 200
    assert agent_a.get("/api/v1/agents/agent-b").status_code == 403
    for method, path in [
        ("GET", "/api/v1/agents"),
        ("GET", "/api/v1/models"),
        ("GET", "/api/v1/stats/bandwidth"),
        ("GET", "/api/v1/events/stream"),
        ("POST", "/api/v1/agents"),
        ("DELETE", "/api/v1/agents/agent-b/credentials"),
    ]:
        response = agent_a.request(method, path, params={"agent_id": "agent-a"})
        assert response.status_code == 403, (method, path)
        assert "may not use this route" in response.json()["detail"]


def test_agent_downloads_artifacts_with_its_credentials(api: TestClient) -> None:
    content = MODEL_FILE.read_bytes()
    assert upload(api, "vib", "1.0.0", content)[0] == 201
    password = enroll(api, "gw-1")
    artifact = "/api/v1/models/vib/versions/1.0.0/artifact"

    agent = client_as(api, basic=("gw-1", password))
    assert agent.get("/api/v1/models/vib/versions/1.0.0").json()["sha256"]
    assert agent.get(artifact).content == content
    wrong = client_as(api, basic=("gw-1", password + "x")).get(artifact)
    assert wrong.status_code == 401
    assert wrong.json()["detail"] == "agent 'gw-1': unknown, revoked or wrong password"
    assert client_as(api, basic=("nobody", password)).get(artifact).status_code == 401


def test_malformed_credentials_are_401_before_any_sql(api: TestClient) -> None:
    # A NUL byte in a Basic user name used to reach PostgreSQL, which refused it: a 500.
    password = enroll(api, "gw-nul")
    own = "/api/v1/agents/gw-nul"

    def basic(raw: bytes) -> str:
        return "Basic " + base64.b64encode(raw).decode()

    not_an_id = "malformed Basic credentials: the user name is no agent id"
    cases = {
        basic(b"gw-nul\x00:" + password.encode()): not_an_id,
        basic(b"\x00" * 12 + b":x"): not_an_id,
        basic(b"g" * 65 + b":x"): not_an_id,
        basic(b"gw-nul"): "malformed Basic credentials: expected <agent id>:<password>",
        "Basic not*base64": "malformed Basic credentials: not base64 of ASCII text",
        basic(b"gw-nul:" + password.encode() + b"\x00"): (
            "malformed Basic credentials: the password has control characters"
        ),
        basic(b"gw-nul:" + password.encode() + b"x"): (
            "agent 'gw-nul': unknown, revoked or wrong password"
        ),
        "Bearer aiot_" + "\x00" * 12 + "_secret": (
            "malformed API key: expected aiot_<12 hex digits>_<secret>"
        ),
        "Bearer aiot_0123456789ab_se\x00cret": (
            "malformed API key: expected aiot_<12 hex digits>_<secret>"
        ),
        "Digest username=gw-nul": (
            "unsupported Authorization scheme: send 'Bearer <API key>' or Basic"
        ),
    }
    anonymous = client_as(api)
    for header, detail in cases.items():
        response = anonymous.get(own, headers={"Authorization": header})
        assert response.status_code == 401, (header, response.text)
        assert response.json() == {"detail": detail}, header
        assert response.headers["www-authenticate"] == 'Bearer realm="aiot"'
    assert (
        anonymous.get(
            own, headers={"Authorization": basic(f"gw-nul:{password}".encode())}
        ).status_code
        == 200
    )


def test_rotation_and_revocation(api: TestClient) -> None:
    old = enroll(api, "gw-2")
    rotated = api.post("/api/v1/agents/gw-2/credentials")
    assert rotated.status_code == 200
    new = rotated.json()["password"]
    own = "/api/v1/agents/gw-2"
    assert client_as(api, basic=("gw-2", old)).get(own).status_code == 401
    assert client_as(api, basic=("gw-2", new)).get(own).status_code == 200

    assert api.delete("/api/v1/agents/gw-2/credentials").status_code == 204
    assert client_as(api, basic=("gw-2", new)).get(own).status_code == 401
    assert api.post("/api/v1/agents/nobody/credentials").status_code == 404
    assert api.delete("/api/v1/agents/nobody/credentials").status_code == 404
    # Revoked credentials may be issued again.
    assert client_as(api, basic=("gw-2", enroll(api, "gw-2"))).get(own).status_code == 200


def test_service_user_names_and_agent_ids_do_not_mix(api: TestClient) -> None:
    with api.app.state.sessionmaker() as session:  # type: ignore[attr-defined]
        create_broker_user(session, username="ingest", role="ingest")
    refused = api.post("/api/v1/agents", json={"agent_id": "ingest"})
    assert refused.status_code == 409
    assert "service user" in refused.json()["detail"]
    assert api.post("/api/v1/agents", json={"agent_id": "control"}).status_code == 409
    enroll(api, "gw-3")
    make_session = api.app.state.sessionmaker  # type: ignore[attr-defined]
    with make_session() as session, pytest.raises(ConflictError, match="enrolled agent"):
        create_broker_user(session, username="gw-3", role="control")


def test_broker_config_files(api: TestClient, tmp_path: Path) -> None:
    enroll(api, "gw-4")
    revoked = "gw-5"
    enroll(api, revoked)
    api.delete(f"/api/v1/agents/{revoked}/credentials")
    with api.app.state.sessionmaker() as session:  # type: ignore[attr-defined]
        create_broker_user(session, username="ingest", role="ingest")
        files = write_broker_config(session, tmp_path / "broker", port=1884)
    out = tmp_path / "broker"
    assert stat.S_IMODE((out / "passwd").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "acl").stat().st_mode) == 0o644
    assert (files.agents, files.service_users) == (1, 1)
    users = [line.partition(":")[0] for line in (out / "passwd").read_text().splitlines()]
    assert users == ["ingest", "gw-4"]
    acl = (out / "acl").read_text()
    assert "user gw-4\ntopic write aiot/v1/agents/gw-4/events\n" in acl
    assert "pattern" not in acl
    assert revoked not in acl
    conf = (out / "mosquitto.conf").read_text()
    assert "listener 1884 0.0.0.0\nallow_anonymous false\n" in conf
    assert f"acl_file {out.resolve() / 'acl'}" in conf
    assert sorted(p.name for p in out.iterdir()) == ["acl", "mosquitto.conf", "passwd"]


@pytest.mark.integration
def test_ingest_and_enrollment_keep_each_others_columns(
    make_api: AppFactory, publisher: Publisher
) -> None:
    agent = unique_agent_id()
    with make_api() as api:
        publisher.publish(topic(agent, Channel.STATUS), encode(make_status(agent)), retain=True)
        wait_until(lambda: api.get(f"/api/v1/agents/{agent}").status_code == 200, what="status")
        password = enroll(api, agent, site="plant-1")
        view = api.get(f"/api/v1/agents/{agent}").json()
        assert view["state"] == "online"
        assert view["outbox_depth"] == 7

        publisher.publish(topic(agent, Channel.EVENTS), encode(make_batch(agent, 2)))
        publisher.publish(topic(agent, Channel.STATUS), encode(make_status(agent, outbox_depth=3)))
        own = client_as(api, basic=(agent, password))
        wait_until(
            lambda: own.get(f"/api/v1/agents/{agent}").json()["outbox_depth"] == 3,
            what="the second status",
        )
        events = own.get("/api/v1/events", params={"agent_id": agent}).json()["items"]
        assert len(events) == 2
        with api.app.state.sessionmaker() as session:  # type: ignore[attr-defined]
            row = session.get(AgentRow, agent)
            assert row is not None
            assert row.labels == {"site": "plant-1"}
