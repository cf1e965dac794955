"""`aiot models ...`: build the models the platform ships with."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Models the platform ships with.", no_args_is_help=True)


@app.command()
def build(
    out: Annotated[
        Path | None, typer.Option(help="Target dir (default: the models package).")
    ] = None,
    if_missing: Annotated[bool, typer.Option(help="Only build what is missing or stale.")] = False,
) -> None:
    """Train and export the shipped ONNX models and write their manifest (deterministic)."""
    import models
    from models.build import build_all, ensure_built

    target = out or Path(models.__file__).resolve().parent
    manifest = ensure_built(target) if if_missing else build_all(target)
    typer.echo(f"models ready: {manifest}")
