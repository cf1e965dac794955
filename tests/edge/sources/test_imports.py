"""Each device library is imported by its own source module only (DESIGN §2: one module per
noun), so the agent runs, and the other sources import, without the ones a gateway lacks."""

from __future__ import annotations

import pytest

from tests.test_architecture import imported, modules, within

OWNERS = {
    "pymodbus": "edge_agent.sources.modbus",
    "asyncua": "edge_agent.sources.opcua",
}
"""Third-party package -> the only module of the agent that may import it."""


@pytest.mark.parametrize(("package", "owner"), sorted(OWNERS.items()))
def test_a_device_library_is_imported_by_its_source_only(package: str, owner: str) -> None:
    importers = sorted(
        name
        for name, path in modules()
        if within(name, "edge_agent")
        and any(within(target, package) for target in imported(path, name))
    )
    assert importers == [owner]
