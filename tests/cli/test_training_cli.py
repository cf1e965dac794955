"""`aiot cloud train` queues a job in the database (its id on stdout), and refuses bad input
with the option and the problem."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cli.main import app
from cloud_api.db import create_db_engine, create_sessionmaker
from cloud_api.training import jobs

BASE = ["cloud", "train", "--pipeline", "spindle-vibration", "--trainer", "vibration-classifier",
        "--base-model", "vibration-anomaly", "--base-version", "1.0.0"]  # fmt: skip


def test_train_queues_a_job_and_refuses_bad_options(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cloud.db'}"
    runner = CliRunner()
    done = runner.invoke(
        app,
        [*BASE, "--db", db, "--agent", "press-1", "--label-source", "person",
         "--options", '{"seed": 3}', "--gate", '{"max_recall_drop": 0.05}'],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    job_id = int(done.stdout.strip())
    engine = create_db_engine(db)
    with create_sessionmaker(engine)() as session:
        row = jobs.get_job(session, job_id)
        assert row is not None
        spec = jobs.spec_of(row)
    engine.dispose()
    assert (row.state, row.created_by) == ("queued", "cli")
    assert spec.selector.agents == ["press-1"]
    assert spec.selector.label_sources == ["person"]
    assert spec.options == {"seed": 3}
    assert spec.gate.max_recall_drop == 0.05

    for extra, problem in [
        (["--options", '{"seeds": 1}'], "options.seeds"),
        (["--options", "[1]"], "--options: give a JSON object"),
        (["--gate", "{nope"], "--gate: not JSON"),
        (["--label-source", "rumour"], "selector.label_sources.0"),
        # Another queued job's candidate: it could never be registered.
        (["--version", f"1.0.0-job{job_id}"], f"is the candidate of training job {job_id}"),
    ]:
        refused = runner.invoke(app, [*BASE, "--db", db, *extra])
        assert refused.exit_code == 2, refused.output
        assert problem in refused.output
