"""Analytics: hourly rollups (the write path ingest keeps), aggregates (read path), bandwidth."""
