"""``python -m edge_agent --config FILE``: run the agent (``aiot edge run`` does the same)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from edge_agent.agent import run
from edge_agent.config import load_config
from shared.errors import AiotError, ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge_agent", description=__doc__)
    parser.add_argument("--config", "-c", type=Path, required=True, help="agent YAML file")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--exit-when-done",
        action="store_true",
        help="stop once every finite source has ended and the outbox is empty",
    )
    parser.add_argument("--validate", action="store_true", help="check the config and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"invalid config: {exc}", file=sys.stderr)
        return 2
    if args.validate:
        print(f"{args.config}: OK")
        return 0
    try:
        run(config, exit_when_done=args.exit_when_done)
    except AiotError as exc:
        logging.getLogger("edge_agent").error("cannot run: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
