"""mosaic-exp."""
