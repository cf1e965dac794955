"""MQTT -> SQL ingest: the worker (``worker.py``)."""
