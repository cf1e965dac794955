"""Analytics: hourly rollups (write path), aggregates (read path), bandwidth saved."""
