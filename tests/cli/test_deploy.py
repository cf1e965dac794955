"""`aiot deploy --shadow`: the request body it builds is a shadow strategy the API accepts."""

from __future__ import annotations

import pytest
import typer

from cli.deploy import deployment_request, shadow_strategy
from cloud_api.deployment_schemas import DeploymentStrategy


def _strategy(shadow: dict[str, object] | None) -> DeploymentStrategy:
    body = deployment_request(
        model="m", version="2", pipeline="p", agents=["a-1"], labels=[], canary=0.5,
        healthy_s=10.0, agent_timeout_s=60.0, shadow=shadow,
    )  # fmt: skip
    return DeploymentStrategy.model_validate(body["strategy"])


def test_without_shadow_the_strategy_is_a_canary() -> None:
    assert shadow_strategy(False, 1.0, 300.0, None) is None
    assert _strategy(None).kind == "canary"


def test_shadow_options_become_the_strategy_s_shadow_and_its_rule() -> None:
    strategy = _strategy(shadow_strategy(True, 0.25, 120.0, 0.9))
    assert strategy.kind == "shadow"
    assert strategy.shadow is not None
    assert (strategy.shadow.share, strategy.shadow.window_s) == (0.25, 120.0)
    assert strategy.shadow.promote_if is not None
    assert strategy.shadow.promote_if.agreement_min == 0.9
    manual = _strategy(shadow_strategy(True, 1.0, 300.0, None))
    assert manual.shadow is not None
    assert manual.shadow.promote_if is None  # an operator promotes or discards


def test_a_promotion_rule_without_shadow_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as exited:
        shadow_strategy(False, 1.0, 300.0, 0.9)
    assert exited.value.exit_code == 2
    assert "--promote-agreement needs --shadow" in capsys.readouterr().err
