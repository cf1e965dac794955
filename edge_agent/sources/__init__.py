"""Sources of samples (sensors, cameras, replays).

``registry.build_source`` picks the implementation by the config's ``type``. This package
init imports nothing, so the config can use the simulator's fault names without a cycle.
"""
