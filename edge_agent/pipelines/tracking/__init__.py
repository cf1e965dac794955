"""Tracking for camera pipelines: detections become tracks, tracks become events."""
