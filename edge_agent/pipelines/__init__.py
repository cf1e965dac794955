"""Pipelines: a source's samples through a model, filters and the event lifecycle to events
(``sensor.py`` for sensor windows, ``vision.py`` for camera frames)."""
