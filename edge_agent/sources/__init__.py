"""Sources of samples (sensors, cameras, replays, simulators).

``registry.py`` declares every source type once and builds one by its config's ``type``.
This package init imports nothing, so importing one source never imports them all.
"""
