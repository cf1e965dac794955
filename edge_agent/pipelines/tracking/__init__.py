"""Tracking for camera pipelines: ``tracker.py`` links detections into tracks,
``geometry.py`` holds zones and counting lines, ``lifecycle.py`` turns both into events."""
