"""The Kubernetes manifests probe the endpoints the processes serve, on the ports they serve
them: the ingest workers' and the agent's ``/livez`` and ``/readyz``, on a pod address."""

from __future__ import annotations

from typing import Any

import yaml

from tests.deploy.test_k8s import container, find


def probes(spec: dict[str, Any]) -> dict[str, tuple[str, int]]:
    ports = {port["name"]: port["containerPort"] for port in spec["ports"]}
    return {
        kind: (spec[kind]["httpGet"]["path"], ports[spec[kind]["httpGet"]["port"]])
        for kind in ("livenessProbe", "readinessProbe")
    }


def test_ingest_workers_are_probed_on_their_metrics_port() -> None:
    main = container(find("StatefulSet", "aiot-ingest"))
    args = main["args"]
    port = int(args[args.index("--metrics-port") + 1])
    assert args[args.index("--metrics-host") + 1] == "0.0.0.0"
    assert probes(main) == {"livenessProbe": ("/livez", port), "readinessProbe": ("/readyz", port)}


def test_the_agent_is_probed_on_its_exporter() -> None:
    main = container(find("Deployment", "aiot-edge"))
    config = yaml.safe_load(find("ConfigMap", "aiot-edge")["data"]["edge.yaml"])
    port = config["metrics"]["port"]
    assert config["metrics"]["host"] == "0.0.0.0"
    assert probes(main) == {"livenessProbe": ("/livez", port), "readinessProbe": ("/readyz", port)}
