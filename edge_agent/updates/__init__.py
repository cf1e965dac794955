"""Model updates: the updater thread, installing, health windows, the store, downloads."""
