"""The model registry through the real app: upload, sign, list, download, and refusals."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi.testclient import TestClient
from sqlalchemy import func, select

import models
from cloud_api.config import Settings
from cloud_api.registry import load_or_create_signing_key
from cloud_api.tables import ModelVersionRow
from shared.errors import ModelError
from shared.golden import check_golden, golden_input, golden_reference
from shared.signing import SignedManifest, decode_public_key, verify
from tests.cloud.conftest import AppFactory

MODELS = Path(models.__file__).resolve().parent
MODEL_FILE = MODELS / "vibration-anomaly-1.0.0.onnx"
SHIPPED = next(
    entry
    for entry in json.loads((MODELS / "manifest.json").read_text())["models"]
    if entry["name"] == "vibration-anomaly"
)


def upload(
    client: TestClient, name: str, version: str, content: bytes, **fields: str
) -> tuple[int, dict[str, object]]:
    response = client.post(
        f"/api/v1/models/{name}/versions",
        data={"version": version, **fields},
        files={"file": ("model.onnx", content, "application/octet-stream")},
    )
    return response.status_code, response.json()


def rows(client: TestClient) -> int:
    with client.app.state.sessionmaker() as session:  # type: ignore[attr-defined]
        return int(session.scalar(select(func.count()).select_from(ModelVersionRow)) or 0)


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.fixture
def api(make_api: AppFactory) -> Iterator[TestClient]:
    with make_api(ingest_enabled=False) as client:
        yield client


def test_upload_sign_list_and_download(api: TestClient, settings: Settings) -> None:
    content = MODEL_FILE.read_bytes()
    status, body = upload(
        api, "vibration-anomaly", "1.0.0", content, task="vibration-anomaly", labels="a, b"
    )
    assert status == 201, body
    assert body["sha256"] == SHIPPED["sha256"] == hashlib.sha256(content).hexdigest()
    assert body["size"] == SHIPPED["size"]
    assert body["inputs"] == SHIPPED["inputs"]
    assert body["outputs"] == SHIPPED["outputs"]
    assert body["labels"] == ["a", "b"]

    key = api.get("/api/v1/signing-key").json()
    signed = SignedManifest.model_validate(body["signed_manifest"])
    assert signed.key_id == key["key_id"]
    manifest = verify(signed, decode_public_key(key["public_key"]))
    assert (manifest.name, manifest.version, manifest.sha256) == (
        "vibration-anomaly",
        "1.0.0",
        SHIPPED["sha256"],
    )

    got = api.get("/api/v1/models/vibration-anomaly/versions/1.0.0").json()
    assert got["signed_manifest"] == body["signed_manifest"]
    listed = api.get("/api/v1/models").json()
    assert [(m["name"], [v["version"] for v in m["versions"]]) for m in listed] == [
        ("vibration-anomaly", ["1.0.0"])
    ]
    download = api.get("/api/v1/models/vibration-anomaly/versions/1.0.0/artifact")
    assert download.status_code == 200
    assert download.content == content
    assert api.get("/api/v1/models/vibration-anomaly/versions/9.9.9").status_code == 404

    key_file = settings.data_dir / "signing-key.pem"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600


def test_signing_key_survives_a_restart(make_api: AppFactory) -> None:
    with make_api(ingest_enabled=False) as first:
        before = first.get("/api/v1/signing-key").json()
    with make_api(ingest_enabled=False) as second:
        assert second.get("/api/v1/signing-key").json() == before


def test_duplicate_version_is_a_conflict(api: TestClient, settings: Settings) -> None:
    content = MODEL_FILE.read_bytes()
    assert upload(api, "vib", "1.0.0", content)[0] == 201
    artifacts = files_under(settings.data_dir / "artifacts")
    status, body = upload(api, "vib", "1.0.0", content)
    assert status == 409
    assert "exists already" in str(body["detail"])
    assert files_under(settings.data_dir / "artifacts") == artifacts
    assert rows(api) == 1


def test_not_onnx_is_refused_and_nothing_is_written(api: TestClient, settings: Settings) -> None:
    status, body = upload(api, "vib", "1.0.0", b"this is not a model" * 100)
    assert status == 422
    assert "not a loadable ONNX model" in str(body["detail"])
    assert files_under(settings.data_dir / "artifacts") == []
    assert files_under(settings.data_dir / "uploads") == []
    assert rows(api) == 0


@pytest.mark.parametrize(
    ("name", "version", "expected"),
    [
        ("%2E%2E", "1.0.0", 422),  # ".." reaches the handler and is refused
        ("..%2Fx", "1.0.0", 404),  # a slash never matches one path segment
        (".hidden", "1.0.0", 422),
        ("vib", "../../etc", 422),
        ("vib", "a/b", 422),
        ("vib", "", 422),
    ],
)
def test_traversal_names_are_refused(
    api: TestClient, settings: Settings, name: str, version: str, expected: int
) -> None:
    status, _ = upload(api, name, version, MODEL_FILE.read_bytes())
    assert status == expected
    assert files_under(settings.data_dir / "artifacts") == []
    assert files_under(settings.data_dir / "uploads") == []
    assert rows(api) == 0


@pytest.mark.parametrize("limit", [1000, MODEL_FILE.stat().st_size - 1])
def test_oversized_upload_is_refused(make_api: AppFactory, settings: Settings, limit: int) -> None:
    # 1000 is refused from Content-Length alone; size - 1 only while counting the copy.
    with make_api(ingest_enabled=False, max_model_bytes=limit) as client:
        status, body = upload(client, "vib", "1.0.0", MODEL_FILE.read_bytes())
        assert status == 413
        assert f"limit of {limit} bytes" in str(body["detail"])
        assert files_under(settings.data_dir / "artifacts") == []
        assert files_under(settings.data_dir / "uploads") == []
        assert rows(client) == 0


def test_manifest_carries_a_golden_self_test_that_the_model_passes(api: TestClient) -> None:
    import onnxruntime

    status, body = upload(api, "vib", "1.0.0", MODEL_FILE.read_bytes())
    assert status == 201, body
    manifest = SignedManifest.model_validate(body["signed_manifest"]).manifest
    assert manifest.golden_input == golden_reference()
    assert manifest.golden_output is not None
    assert len(manifest.golden_output) == 6  # the first output: 6 class probabilities
    session = onnxruntime.InferenceSession(str(MODEL_FILE), providers=["CPUExecutionProvider"])
    window = golden_input(manifest.golden_input, manifest.inputs[0])
    check_golden(manifest, session.run(None, {manifest.inputs[0].name: window})[0])
    # Another model's output does not pass: the self-test can fail.
    with pytest.raises(ModelError, match="self-test"):
        check_golden(manifest, np.zeros((1, 6), dtype=np.float32))


def nan_on_golden_input_model() -> bytes:
    """log(-x): NaN for every golden input value (they are in [0, 1)), -inf at 0."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["minus"]), helper.make_node("Log", ["minus"], ["y"])],
        "nan",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    serialized: bytes = model.SerializeToString()
    return serialized


def test_a_model_whose_golden_output_is_not_finite_is_refused(
    api: TestClient, settings: Settings
) -> None:
    """Its agents' self-test could never pass, and a manifest holds finite numbers only."""
    status, body = upload(api, "vib", "1.0.0", nan_on_golden_input_model())
    assert status == 422
    assert "golden self-test output" in str(body["detail"])
    assert "not finite" in str(body["detail"])
    assert files_under(settings.data_dir / "artifacts") == []
    assert rows(api) == 0


@pytest.mark.parametrize(
    ("fields", "named"),
    [({"task": "t" * 65}, "task"), ({"labels": "ok,bad\x00label"}, "label")],
)
def test_task_and_labels_the_manifest_cannot_hold_are_refused(
    api: TestClient, settings: Settings, fields: dict[str, str], named: str
) -> None:
    status, body = upload(api, "vib", "1.0.0", MODEL_FILE.read_bytes(), **fields)
    assert status == 422
    assert named in str(body["detail"])
    assert files_under(settings.data_dir / "artifacts") == []
    assert rows(api) == 0


@pytest.mark.parametrize(
    ("header", "status", "part"),
    [
        ("bytes=100-", 206, slice(100, None)),
        ("bytes=0-9", 206, slice(0, 10)),
        ("bytes=-16", 206, slice(-16, None)),
        ("bytes=10-999999999", 206, slice(10, None)),
        ("bytes=999999999-", 416, None),
        ("bytes=9-3", 416, None),
        ("items=0-1", 416, None),
        ("bytes=a-b", 416, None),
        ("bytes=0-1,5-6", 200, slice(None)),
    ],
)
def test_artifact_download_resumes_with_a_range(
    make_api: AppFactory, header: str, status: int, part: slice | None
) -> None:
    content = MODEL_FILE.read_bytes()
    with make_api(ingest_enabled=False, rollout_enabled=False) as client:
        assert upload(client, "vibration-anomaly", "2.0.0", content)[0] == 201
        url = "/api/v1/models/vibration-anomaly/versions/2.0.0/artifact"
        response = client.get(url, headers={"Range": header})
        assert response.status_code == status, response.text
        assert response.headers["accept-ranges"] == "bytes"
        if part is None:
            assert response.headers["content-range"] == f"bytes */{len(content)}"
            return
        assert response.content == content[part]
        if status == 206:
            first = part.indices(len(content))[0]
            last = first + len(response.content) - 1
            assert response.headers["content-range"] == f"bytes {first}-{last}/{len(content)}"
        # A resumed download that no longer matches the ETag gets the whole file.
        stale = client.get(url, headers={"Range": "bytes=100-", "If-Range": '"other"'})
        assert (stale.status_code, stale.content) == (200, content)


def test_workers_starting_together_all_get_the_one_signing_key(tmp_path: Path) -> None:
    """API workers of `serve --workers N` start at once and may all find no key: one key is
    made, every worker signs with it, it is 0600 and no temp file is left."""
    start = threading.Barrier(8)
    keys: list[bytes] = []

    def worker() -> None:
        start.wait()
        key = load_or_create_signing_key(tmp_path)
        keys.append(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(keys) == 8
    assert len(set(keys)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["signing-key.pem"]
    assert stat.S_IMODE((tmp_path / "signing-key.pem").stat().st_mode) == 0o600
