"""What the stored events add up to: hourly rollups (kept by ingest) and what reads them."""
