"""MQTT -> SQL ingest: at-least-once from the broker, exactly-once in effect in the database.

``worker.py`` holds the MQTT session and the writer thread; ``parse.py`` turns messages into
rows or dead letters (pure); ``writers.py`` stores a batch in ONE transaction on SQLite or
PostgreSQL, idempotent on event id and summary window; ``store.py`` waits out database
outages and isolates the one message the database refuses; ``acks.py`` acknowledges what
committed, to the broker and to each agent (DESIGN §3, §5).
"""
