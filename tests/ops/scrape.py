"""Reading a process's ``/metrics`` and probes over HTTP, as Prometheus and Kubernetes do."""

from __future__ import annotations

import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def get(url: str) -> tuple[int, str]:
    """(status, body) of a GET; an HTTP error status is returned, not raised, and nothing
    listening yet is status 0."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:  # it holds the connection
            return error.code, error.read().decode()
    except urllib.error.URLError:
        return 0, ""


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(text: str, name: str, **labels: str) -> float | None:
    """One sample's value, or None if the exposition has no such sample."""
    return samples(text).get((name, frozenset(labels.items())))
