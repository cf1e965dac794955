"""The house holds (DESIGN §2): imports flow one way, read from every module's syntax tree.

CLI -> edge_agent | cloud_api -> shared. ``shared`` imports neither side; the two sides never
import each other; ``models`` may import the edge's pre- and postprocessing, never the cloud;
and a source never imports the inference runtime (sources read devices, nothing more).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("shared", "edge_agent", "cloud_api", "models", "cli", "bench")

FORBIDDEN: dict[str, tuple[str, ...]] = {
    "shared": ("edge_agent", "cloud_api", "models", "cli", "bench"),
    "edge_agent": ("cloud_api", "models", "cli", "bench"),
    "cloud_api": ("edge_agent", "cli", "bench"),
    "models": ("cloud_api", "cli", "bench"),
    "edge_agent.sources": ("edge_agent.inference",),
}
"""Importer prefix -> the module prefixes it must never import."""


def modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            yield name, path


def imported(path: Path, module: str) -> set[str]:
    """Every module a file imports, at any depth (inside functions too), made absolute."""
    found: set[str] = set()
    package = module.split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_the_tree_has_the_packages_this_test_reads() -> None:
    names = {name for name, _ in modules()}
    for package in PACKAGES:
        assert package in names
    assert "edge_agent.sources" in names


@pytest.mark.parametrize(("importer", "forbidden"), sorted(FORBIDDEN.items()))
def test_imports_flow_one_way(importer: str, forbidden: tuple[str, ...]) -> None:
    wrong = sorted(
        f"{name} imports {target}"
        for name, path in modules()
        if within(name, importer)
        for target in imported(path, name)
        if any(within(target, banned) for banned in forbidden)
    )
    assert wrong == []


def test_updates_see_pipelines_only_through_their_protocol() -> None:
    """The updater, installer and health watch read a pipeline as ``ServingPipeline`` (name,
    model slot, a copy of its inference record), never as a class whose privates they could use."""
    classes = {"Pipeline", "SensorPipeline", "VisionPipeline"}
    wrong = sorted(
        f"{name} imports {target}"
        for name, path in modules()
        if within(name, "edge_agent.updates")
        for target in imported(path, name)
        if target.rsplit(".", 1)[-1] in classes
    )
    assert wrong == []


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The rule can fail: a module that imports across the wall is found, relative or not."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from cloud_api import db\n    import edge_agent.agent\n")
    assert {"cloud_api", "cloud_api.db", "edge_agent.agent"} <= imported(probe, "shared.probe")
    relative = tmp_path / "rel.py"
    relative.write_text("from ..inference import runtime\n")
    found = imported(relative, "edge_agent.sources.rel")
    assert "edge_agent.inference.runtime" in found
