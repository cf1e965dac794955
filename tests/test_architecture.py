"""The house holds (DESIGN §2): imports flow one way, read from every module's syntax tree.

CLI -> edge_agent | cloud_api -> shared. ``shared`` imports neither side; the two sides never
import each other; ``models`` may import the edge's pre- and postprocessing, never the cloud;
a source never imports the inference runtime (sources read devices, nothing more), nor the
config that assembles it (the registry imports every source: that would be a cycle); the
edge's config base is a leaf; and one module of the edge builds paho clients.
The schema of ``models/manifest.json`` is a light leaf of the edge (a gateway reads it), and
the detector's model card never imports its torch trainer (the trainer imports the card).
In the cloud, the rollout state machine imports no SQL and no MQTT, and domain code (liveness,
queries, analytics, rollouts) never imports the API layer that shapes its answers.
Ingest's parsing is pure (no SQL, no MQTT) and its writers know no MQTT.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("shared", "edge_agent", "cloud_api", "models", "cli", "bench")

API_LAYER = ("cloud_api.routes", "cloud_api.deps", "fastapi")
"""Domain code returns plain values and rows; only the routes shape them for the API."""
PURE_ROLLOUT = (
    "sqlalchemy", "paho", "cloud_api.db", "cloud_api.tables", "cloud_api.queries",
    "cloud_api.mqtt", "cloud_api.rollout.store", "cloud_api.rollout.worker", *API_LAYER,
)  # fmt: skip
"""The rollout state machine and desired states are pure: no SQL, no MQTT."""

FORBIDDEN: dict[str, tuple[str, ...]] = {
    "shared": ("edge_agent", "cloud_api", "models", "cli", "bench"),
    "edge_agent": ("cloud_api", "models", "cli", "bench"),
    "cloud_api": ("edge_agent", "cli", "bench"),
    "models": ("cloud_api", "cli", "bench"),
    "edge_agent.sources": (
        "edge_agent.inference",
        "edge_agent.config",
        "edge_agent.pipelines",
        "edge_agent.delivery",
    ),
    "edge_agent.config_types": ("edge_agent",),
    "edge_agent.inference.manifest": (
        "cv2",
        "numpy",
        "onnxruntime",
        "edge_agent.inference.postprocess",
        "edge_agent.inference.runtime",
        "edge_agent.inference.slot",
    ),
    "models.detector": ("models.detector_net", "torch"),
    "models.scenes": ("models.detector", "models.detector_net", "torch"),
    "cloud_api.rollout.machine": PURE_ROLLOUT,
    "cloud_api.rollout.desired": PURE_ROLLOUT,
    "cloud_api.liveness": ("cloud_api.schemas", *API_LAYER),
    "cloud_api.rollout": API_LAYER,
    "cloud_api.queries": API_LAYER,
    "cloud_api.analytics": API_LAYER,
    "cloud_api.ingest.parse": ("sqlalchemy", "paho", "cloud_api.tables", "cloud_api.db"),
    "cloud_api.ingest.writers": ("paho", "cloud_api.mqtt"),
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


def imported(path: Path, module: str, *, typing_only: bool = True) -> set[str]:
    """Every module a file imports, at any depth (inside functions too), made absolute;
    without ``typing_only``, not those imported only for type checking."""
    found: set[str] = set()
    package = module.split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    tree = ast.parse(path.read_text(), filename=str(path))
    if not typing_only:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
                node.body = []
    for node in ast.walk(tree):
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


PAHO_FACTORY = "edge_agent.mqtt_client"
"""The edge's one paho client factory (``make_client``)."""


def builds_a_paho_client(path: Path) -> bool:
    """Whether a file calls paho's ``Client(...)`` (as ``mqtt.Client`` or a bare ``Client``)."""
    if not any(within(name, "paho") for name in imported(path, path.stem)):
        return False
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == "Client":
                return True
    return False


def test_one_module_of_the_edge_builds_paho_clients() -> None:
    builders = sorted(
        name
        for name, path in modules()
        if within(name, "edge_agent") and builds_a_paho_client(path)
    )
    assert builders == [PAHO_FACTORY]


def test_the_checker_sees_a_paho_client_built_elsewhere(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import paho.mqtt.client as mqtt\nc = mqtt.Client(2, client_id='x')\n")
    assert builds_a_paho_client(probe)
    probe.write_text("from edge_agent.mqtt_client import make_client\nc = make_client(u)\n")
    assert not builds_a_paho_client(probe)


MAX_MODULE_LINES = 500
EXPLAINED_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def test_no_module_is_two_nouns() -> None:
    """Past 400 lines a module says why in its docstring ("over 400 lines: ..."); never 500."""
    wrong = []
    for name, path in modules():
        text = path.read_text()
        lines = text.count("\n")
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if lines > MAX_MODULE_LINES:
            wrong.append(f"{name}: {lines} lines")
        elif lines > EXPLAINED_MODULE_LINES and "over 400 lines" not in docstring.lower():
            wrong.append(f"{name}: {lines} lines and no reason in its docstring")
    assert wrong == []


def test_no_function_is_longer_than_a_screen() -> None:
    wrong = sorted(
        f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for name, path in modules()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    )
    assert wrong == []


def import_cycles(graph: dict[str, set[str]]) -> list[str]:
    """Each cycle found by a depth-first walk, written ``a -> b -> a``."""
    cycles: list[str] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*trail[trail.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return cycles


def test_no_import_cycles_between_modules() -> None:
    """No module imports, even lazily inside a function, a module that imports it back (a
    function-level import is a cycle hidden, not broken). Type-checking imports are free."""
    paths = {name: path for name, path in modules() if path.name != "__init__.py"}
    graph = {
        name: {
            target
            for target in imported(path, name, typing_only=False)
            if target in paths and target != name
        }
        for name, path in paths.items()
    }
    assert import_cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a -> b -> c -> a"]
