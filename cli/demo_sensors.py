"""The demo's real-protocol and real-data sensor pipelines, and the models they run.

- **press**: the simulated hydraulic press served over Modbus TCP (``modbus_machine.py``),
  polled at 10 Hz by the agent's ``modbus`` source; a worn-pump fault now and then.
- **water-flow**: river's WaterFlow recording (real hourly flow in a pipeline branch, with
  three low-flow incidents and a pumping peak), replayed by the ``csv`` source at an hour a
  second, looping.

Both run scorers learnt at start with ``fit-normal``'s code from normal data: the press's
from its own physics, the water flow's from a stretch between its incidents.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cli.modbus_machine import ADDRESSES, CHANNELS, ModbusMachine, normal_readings

PRESS_RATE_HZ = 10.0
PRESS_WINDOW, PRESS_HOP = 20, 10
PRESS_FAULT_EVERY_S, PRESS_FAULT_LASTS_S = 45.0, 12.0
WATER_NORMAL_ROWS = slice(300, 850)
"""Hours between the second low-flow incident and the third (none in them)."""
WATER_WINDOW, WATER_HOP = 12, 3
WATER_SPEED = 3600.0


@dataclass(frozen=True)
class DemoSensors:
    press: ModbusMachine
    manifest: Path
    water_csv: Path | None


def start_sensors(workdir: Path, port: int) -> DemoSensors:
    """Learn both machines' normal, write the models, start the press; stop it when done."""
    from models.normal import fit_normal
    from models.normal_files import write_model
    from models.window_features import WindowSpec

    out = workdir / "models"
    spec = WindowSpec(CHANNELS, PRESS_WINDOW, PRESS_HOP, PRESS_RATE_HZ)
    press_normal = normal_readings(600, PRESS_RATE_HZ)
    write_model(fit_normal(press_normal, spec, name="press-normal", version="1.0.0"), out)
    water_csv = _water_flow_csv()
    if water_csv is not None:
        from edge_agent.sources.csv import CsvSourceConfig
        from models.normal_files import read_normal_csv

        config = CsvSourceConfig(type="csv", path=water_csv, timestamp="Time")
        channels, values, _ = read_normal_csv(config)
        water = WindowSpec(channels, WATER_WINDOW, WATER_HOP, 1 / 3600)
        fitted = fit_normal(values[WATER_NORMAL_ROWS], water, name="water-normal", version="1.0.0")
        write_model(fitted, out)
    press = ModbusMachine(
        port, fault_every_s=PRESS_FAULT_EVERY_S, fault_lasts_s=PRESS_FAULT_LASTS_S
    )
    press.start()
    return DemoSensors(press, out / "manifest.json", water_csv)


def _water_flow_csv() -> Path | None:
    """The recording river ships, or None without river (the pipeline is then left out)."""
    try:
        from river.datasets import WaterFlow
    except ImportError:
        return None
    return Path(WaterFlow().path)  # type: ignore[no-untyped-call]


def sensor_pipelines_yaml(sensors: DemoSensors, summary_every_s: float) -> str:
    """The ``pipelines:`` entries of the press and of the water-flow replay."""
    channels = "".join(
        f"        {name}: {{address: {ADDRESSES[name]}, data_type: float32}}\n" for name in CHANNELS
    )
    yaml = f"""\
  - name: press
    source:
      type: modbus
      host: 127.0.0.1
      port: {sensors.press.port}
      rate_hz: {PRESS_RATE_HZ}
      channels:
{channels}    window: {{size: {PRESS_WINDOW}, hop: {PRESS_HOP}}}
    model: {{name: press-normal, manifest: {sensors.manifest}}}
    summary_interval_s: {summary_every_s}
"""
    if sensors.water_csv is not None:
        yaml += f"""\
  - name: water-flow
    source: {{type: csv, path: {sensors.water_csv}, timestamp: Time, speed: {WATER_SPEED},
             loop: true, rebase: true}}
    window: {{size: {WATER_WINDOW}, hop: {WATER_HOP}, rate_hz: {1 / 3600}}}
    model: {{name: water-normal, manifest: {sensors.manifest}}}
    summary_interval_s: {summary_every_s}
"""
    return yaml
