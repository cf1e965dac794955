"""`aiot models fit-normal`: a CSV of normal operation in, a model an agent can load out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from cli.main import app
from edge_agent.inference.config import ModelConfig
from edge_agent.inference.slot import resolve_model
from models.manifest import load_manifest
from models.normal import run_onnx


def _write_csv(path: Path, rows: int, *, fault_from: int | None = None) -> None:
    rng = np.random.default_rng(4)
    t = np.arange(rows) / 100.0
    temp = 60 + 0.5 * np.sin(t / 3) + rng.normal(scale=0.05, size=rows)
    current = 12 + np.sin(2 * np.pi * 5 * t) + rng.normal(scale=0.1, size=rows)
    if fault_from is not None:
        current[fault_from:] += 2.5 * np.sin(2 * np.pi * 17 * t[fault_from:])
    lines = ["time,temp,current"] + [
        f"{a:.2f},{b:.4f},{c:.4f}" for a, b, c in zip(t, temp, current, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")


def test_fit_normal_writes_a_model_the_agent_resolves(tmp_path: Path) -> None:
    _write_csv(tmp_path / "normal.csv", 20_000)
    out = tmp_path / "models"
    result = CliRunner().invoke(
        app,
        ["models", "fit-normal", str(tmp_path / "normal.csv"), "--name", "press-normal",
         "--window", "100", "--hop", "50", "--timestamp", "time", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "chose" in result.output
    (card,) = load_manifest(out / "manifest.json")
    assert card.task == "score"
    assert card.channels == ["temp", "current"]
    assert card.threshold is not None
    assert card.fit is not None
    assert card.fit.false_alarm_rate <= 0.05
    spec = resolve_model(ModelConfig(name="press-normal", manifest=out / "manifest.json"))
    assert spec.path == out / "press-normal-1.0.0.onnx"

    _write_csv(tmp_path / "faulty.csv", 2_000, fault_from=1_000)
    rows = np.loadtxt(tmp_path / "faulty.csv", delimiter=",", skiprows=1)[:, 1:]
    windows = np.stack([rows[i : i + 100].T for i in range(0, 1_900, 100)]).astype(np.float32)
    scores = run_onnx(spec.path.read_bytes(), windows)
    assert np.mean(scores[:10] > card.threshold) <= 0.2
    assert np.all(scores[10:] > card.threshold)


def test_a_second_model_keeps_the_first_in_the_manifest(tmp_path: Path) -> None:
    _write_csv(tmp_path / "normal.csv", 10_000)
    out = tmp_path / "models"
    for name in ("press-a", "press-b"):
        args = ["models", "fit-normal", str(tmp_path / "normal.csv"), "--name", name,
                "--window", "50", "--timestamp", "time", "--out", str(out)]  # fmt: skip
        assert CliRunner().invoke(app, args).exit_code == 0
    assert [c.name for c in load_manifest(out / "manifest.json")] == ["press-a", "press-b"]


def test_bad_normal_data_is_named_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "normal.csv").write_text("time,temp\n0,20\n1,hot\n")
    args = ["models", "fit-normal", str(tmp_path / "normal.csv"), "--name", "x",
            "--window", "10", "--timestamp", "time", "--out", str(tmp_path)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "normal.csv:3" in result.output


def test_too_little_normal_data_says_what_is_needed(tmp_path: Path) -> None:
    _write_csv(tmp_path / "normal.csv", 300)
    args = ["models", "fit-normal", str(tmp_path / "normal.csv"), "--name", "x",
            "--window", "100", "--timestamp", "time", "--out", str(tmp_path)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "need at least" in result.output
