"""The HTTP boundary: who may send a body, how much of it, what errors and metrics show.

What a server does before it reads a body only shows on a socket, so those tests run the app
on uvicorn and speak HTTP/1.1 themselves: they send the head, and the body only as far as
they choose. A server that waited for (or buffered) the body would never answer.
"""

from __future__ import annotations

import base64
import json
import random
import re
import socket
import string
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from onnx import TensorProto, helper, numpy_helper

from cli.server import serve_in_thread
from cloud_api.auth import Scope, create_api_key
from cloud_api.config import Settings
from cloud_api.errors import INTERNAL, SERVER_PATH, Redactor
from cloud_api.main import create_app
from cloud_api.metrics import METHODS, OTHER_METHOD, UNMATCHED
from cloud_api.routes.models import FORM_OVERHEAD
from tests.cloud.conftest import AppFactory
from tests.cloud.helpers import client_as
from tests.cloud.test_registry import MODEL_FILE, upload

MODEL_LIMIT = 400_000
"""max_model_bytes of the served app: an upload body may have this plus FORM_OVERHEAD."""
JSON_LIMIT = 64 * 1024
HUGE = 1 << 30
"""A Content-Length no test ever sends."""


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: nothing here depends on the database (test_auth covers PostgreSQL)."""
    return f"sqlite:///{tmp_path / 'cloud.db'}"


@dataclass
class Served:
    """The app on uvicorn in this process."""

    app: FastAPI
    url: str

    @property
    def address(self) -> tuple[str, int]:
        host, _, port = self.url.removeprefix("http://").partition(":")
        return host, int(port)

    def key(self, scope: Scope, name: str = "") -> str:
        with self.app.state.sessionmaker() as session:
            _, token = create_api_key(session, name=name or f"served-{scope}", scope=scope)
        return token


@pytest.fixture
def served(settings: Settings) -> Iterator[Served]:
    changes = {
        "ingest_enabled": False,
        "rollout_enabled": False,
        "max_model_bytes": MODEL_LIMIT,
        "stream_poll_s": 0.05,
        "stream_heartbeat_s": 0.1,
        "stream_recheck_s": 0.2,
    }
    app = create_app(settings.model_copy(update=changes))
    with serve_in_thread(app) as url:
        yield Served(app, url)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Wire:
    """One HTTP/1.1 connection on which the test writes exactly the bytes it means to."""

    def __init__(self, served: Served) -> None:
        self.sock = socket.create_connection(served.address, timeout=15)
        self.host = served.url.removeprefix("http://")

    def head(self, method: str, path: str, headers: dict[str, str]) -> None:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())

    def chunk(self, data: bytes) -> None:
        """One chunk of a chunked body (never the last, empty one: the body stays open)."""
        self.sock.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def answer(self) -> Answer:
        """The response; a socket timeout (a failure) if the server waits for more body."""
        data = b""
        while b"\r\n\r\n" not in data:
            data += self._recv()
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        while len(body) < int(headers.get("content-length", "0")):
            body += self._recv()
        return Answer(int(status_line.split()[1]), headers, body)

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        assert data, "the server closed the connection without an answer"
        return data

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def wire(served: Served) -> Iterator[Wire]:
    connection = Wire(served)
    yield connection
    connection.close()


def multipart_head(boundary: str) -> bytes:
    """A model upload's form up to the file's first byte."""
    return (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="version"\r\n\r\n1.0.0\r\n'
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="model.onnx"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()


UPLOAD = "/api/v1/models/vib/versions"
FORM = {"Content-Type": "multipart/form-data; boundary=b0undary"}
JSON = {"Content-Type": "application/json"}
# Asks for "100 Continue" before sending: a server that meant to read the body would send it.
EXPECT = {"Expect": "100-continue"}


# -- authentication and scope come before the body ------------------------------------------


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_anonymous_body_gets_401_unread(served: Served, wire: Wire, framing: str) -> None:
    if framing == "content-length":
        wire.head("POST", "/api/v1/keys", {**JSON, **EXPECT, "Content-Length": str(HUGE)})
    else:
        wire.head("POST", "/api/v1/keys", {**JSON, "Transfer-Encoding": "chunked"})
        wire.chunk(b"[" * 65536)  # never closed: the JSON parser would wait for the rest
    answer = wire.answer()
    assert answer.status == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert "no credentials" in answer.json()["detail"]


def test_malformed_or_unknown_credentials_get_401_unread(served: Served, wire: Wire) -> None:
    nul_user = base64.b64encode(b"gw\x00-1:password").decode()
    credentials = {"Authorization": f"Basic {nul_user}"}
    wire.head("POST", UPLOAD, {**FORM, **EXPECT, **credentials, "Content-Length": str(HUGE)})
    answer = wire.answer()
    assert answer.status == 401
    assert answer.json()["detail"] == ("malformed Basic credentials: the user name is no agent id")


def test_key_without_the_scope_gets_403_before_its_body(served: Served, wire: Wire) -> None:
    reader = {"Authorization": f"Bearer {served.key('read', 'reader')}"}
    wire.head("POST", UPLOAD, {**FORM, **EXPECT, **reader, "Content-Length": str(HUGE)})
    answer = wire.answer()
    assert answer.status == 403
    assert answer.json()["detail"] == ("this route needs scope 'operate'; key 'reader' has 'read'")


def test_upload_to_a_malformed_model_name_is_422_before_its_body(
    served: Served, wire: Wire
) -> None:
    operate = {"Authorization": f"Bearer {served.key('operate')}"}
    length = str(MODEL_LIMIT)  # within the limit: only the name is wrong
    wire.head(
        "POST",
        "/api/v1/models/bad%00name/versions",
        {**FORM, **EXPECT, **operate, "Content-Length": length},
    )
    answer = wire.answer()
    assert answer.status == 422
    (problem,) = answer.json()["detail"]  # the path's pattern, checked before the body
    assert problem["loc"] == ["path", "name"]


# -- every body has a limit, enforced while it arrives ---------------------------------------


def test_content_length_over_the_json_limit_is_413_before_the_body(
    served: Served, wire: Wire
) -> None:
    admin = {"Authorization": f"Bearer {served.key('admin')}"}
    wire.head(
        "POST", "/api/v1/keys", {**JSON, **EXPECT, **admin, "Content-Length": str(JSON_LIMIT + 1)}
    )
    answer = wire.answer()
    assert answer.status == 413
    assert answer.json()["detail"] == (
        f"request body is larger than this route's limit of {JSON_LIMIT} bytes"
    )


def test_content_length_over_the_upload_limit_is_413_before_the_body(
    served: Served, wire: Wire
) -> None:
    operate = {"Authorization": f"Bearer {served.key('operate')}"}
    length = MODEL_LIMIT + FORM_OVERHEAD + 1
    wire.head("POST", UPLOAD, {**FORM, **EXPECT, **operate, "Content-Length": str(length)})
    answer = wire.answer()
    assert answer.status == 413
    assert f"a model's limit of {MODEL_LIMIT} bytes" in answer.json()["detail"]


def test_chunked_json_over_the_limit_is_413_while_it_streams(served: Served, wire: Wire) -> None:
    admin = {"Authorization": f"Bearer {served.key('admin')}"}
    wire.head("POST", "/api/v1/keys", {**JSON, **admin, "Transfer-Encoding": "chunked"})
    for _ in range(5):  # 80 KiB of an array that is never closed
        wire.chunk(b"[" * 16 * 1024)
    answer = wire.answer()
    assert answer.status == 413
    assert f"limit of {JSON_LIMIT} bytes" in answer.json()["detail"]


def test_chunked_upload_over_the_limit_is_413_while_it_streams(served: Served, wire: Wire) -> None:
    operate = {"Authorization": f"Bearer {served.key('operate')}"}
    wire.head("POST", UPLOAD, {**FORM, **operate, "Transfer-Encoding": "chunked"})
    wire.chunk(multipart_head("b0undary"))
    for _ in range((MODEL_LIMIT + FORM_OVERHEAD) // 65536 + 1):  # past the limit, never ended
        wire.chunk(bytes(65536))
    answer = wire.answer()
    assert answer.status == 413
    assert f"a model's limit of {MODEL_LIMIT} bytes" in answer.json()["detail"]
    assert not any((served.app.state.settings.data_dir / "artifacts").glob("**/*.onnx"))


def test_chunked_bodies_within_the_limit_are_served(served: Served) -> None:
    operate = {"Authorization": f"Bearer {served.key('operate')}"}
    content = MODEL_FILE.read_bytes()
    assert len(content) < MODEL_LIMIT
    boundary = "b0undary"
    body = multipart_head(boundary) + content + f"\r\n--{boundary}--\r\n".encode()
    chunks = (body[i : i + 8192] for i in range(0, len(body), 8192))  # no Content-Length
    response = httpx.post(f"{served.url}{UPLOAD}", content=chunks, headers={**FORM, **operate})
    assert response.status_code == 201, response.text
    assert response.json()["sha256"]


def test_largest_valid_deployment_fits_its_routes_limit(make_api: AppFactory) -> None:
    ids = [f"{i:04d}".ljust(64, "a") for i in range(10_000)]  # as many and as long as allowed
    body = {"model": "m", "version": "1", "pipeline": "p", "target": {"agent_ids": ids}}
    with make_api(ingest_enabled=False) as api:
        response = api.post("/api/v1/deployments", json=body)
        assert len(response.request.content) > JSON_LIMIT
        assert response.status_code == 404, response.text  # read and validated: no such model
        body["target"] = {"agent_ids": [*ids, "one-too-many"]}
        assert api.post("/api/v1/deployments", json=body).status_code == 422


# -- streams end when their key is revoked ---------------------------------------------------


def test_revoked_keys_stream_ends(served: Served) -> None:
    token = served.key("read", "dashboard")
    key_id = token.split("_")[1]
    stream = f"{served.url}/api/v1/events/stream"
    admin = {"Authorization": f"Bearer {served.key('admin')}"}
    with httpx.Client(base_url=served.url, headers=admin, timeout=15) as http:
        with http.stream("GET", stream, headers={"Authorization": f"Bearer {token}"}) as live:
            assert live.status_code == 200
            lines = live.iter_lines()
            assert next(lines) == ": keep-alive"  # the stream is open
            assert http.delete(f"/api/v1/keys/{key_id}").status_code == 200
            # Heartbeats keep coming until the stream ends by itself, saying why.
            deadline = time.monotonic() + 15
            rest = []
            for line in lines:
                rest.append(line)
                assert time.monotonic() < deadline, "the revoked key's stream is still open"
        assert f": stream ended: API key '{key_id}' (dashboard) has been revoked" in rest
        again = http.get(stream, headers={"Authorization": f"Bearer {token}"})
        assert again.status_code == 401

        password = http.post("/api/v1/agents", json={"agent_id": "gw-1"}).json()["password"]
        agent = http.get(stream, auth=("gw-1", password))  # Basic replaces the admin key
        assert agent.status_code == 403  # agents do not stream: no agent stream to end


# -- metrics labels stay bounded -------------------------------------------------------------


def test_metrics_labels_stay_bounded_whatever_clients_send(make_api: AppFactory) -> None:
    rng = random.Random(9)

    def word(length: int) -> str:
        return "".join(rng.choices(string.ascii_letters + string.digits, k=length))

    with make_api(ingest_enabled=False) as api:
        anonymous = client_as(api)
        for _ in range(50):
            method = word(6).upper()
            assert api.request(method, "/api/v1/events").status_code == 405
            api.request(rng.choice(["GET", "POST"]), f"/{word(12)}/{word(4)}")
            anonymous.get(f"/api/v1/{word(10)}")
        series = [
            line for line in api.get("/metrics").text.splitlines()
            if line.startswith("aiot_http_requests_total{")
        ]  # fmt: skip
    labels = [dict(re.findall(r'(\w+)="([^"]*)"', line)) for line in series]
    methods = {label["method"] for label in labels}
    routes = {label["route"] for label in labels}
    assert methods <= METHODS | {OTHER_METHOD}
    assert OTHER_METHOD in methods
    assert UNMATCHED in routes
    assert "/api/v1/events" in routes
    assert len(routes) < 10, routes  # 150 random paths and methods, a handful of series


# -- errors say what is wrong, never where the server keeps its files -----------------------


def external_data_model(location: str) -> bytes:
    """A valid ONNX graph whose weights live in a file beside it, which the upload lacks."""
    weights = numpy_helper.from_array(np.ones((4, 4), dtype=np.float32), name="W")
    weights.data_location = TensorProto.EXTERNAL
    weights.ClearField("raw_data")
    entry = weights.external_data.add()
    entry.key, entry.value = "location", location
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "g", [x], [y], [weights]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()  # type: ignore[no-any-return]


def test_error_bodies_carry_no_server_paths(make_api: AppFactory, settings: Settings) -> None:
    with make_api(ingest_enabled=False) as api:
        # ONNX Runtime names the missing weights file by its absolute path on the server.
        status, body = upload(api, "ext", "1.0.0", external_data_model("weights.bin"))
        assert status == 422
        detail = str(body["detail"])
        assert "External data path does not exist" in detail
        assert SERVER_PATH in detail
        assert str(settings.data_dir) not in detail
        assert tempfile.gettempdir() not in detail

        # An artifact gone from disk is an error of the server: a 500 that says only that.
        status, body = upload(api, "vib", "1.0.0", MODEL_FILE.read_bytes())
        assert status == 201, body
        for artifact in (settings.data_dir / "artifacts").glob("**/*.onnx"):
            artifact.unlink()
        with TestClient(api.app, raise_server_exceptions=False) as raw:
            raw.headers.update(api.headers)
            failed = raw.get("/api/v1/models/vib/versions/1.0.0/artifact")
        assert failed.status_code == 500
        assert failed.json() == INTERNAL


def test_redactor_replaces_paths_under_server_roots_only() -> None:
    redactor = Redactor(["/srv/aiot/data", "/srv/aiot", "data"])
    assert redactor.text('cannot read "/srv/aiot/data/uploads/tmp1.upload": gone') == (
        f'cannot read "{SERVER_PATH}": gone'
    )
    assert redactor.text("at /srv/aiot/code.py, line 3") == f"at {SERVER_PATH}, line 3"
    assert redactor.text("see data/uploads/x and metadata") == f"see {SERVER_PATH} and metadata"
    unchanged = "rotate with POST /api/v1/agents/gw/credentials; /srv/aiotx is not ours; data"
    assert redactor.text(unchanged) == unchanged
    assert redactor.value({"detail": ["/srv/aiot", 3]}) == {"detail": [SERVER_PATH, 3]}


def test_anonymous_api_paths_are_401_even_without_a_route(api: TestClient) -> None:
    anonymous = client_as(api)
    assert anonymous.get("/api/v1/no-such-thing").status_code == 401
    assert anonymous.get("/no-such-thing").status_code == 404
    assert api.get("/api/v1/no-such-thing").status_code == 404
