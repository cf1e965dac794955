"""Training from fleet data (DESIGN §7.4): jobs queued in SQL and claimed by workers, datasets
frozen as versions, candidates evaluated against the serving version and registered behind a
gate, and the lineage from a version back to its data."""
