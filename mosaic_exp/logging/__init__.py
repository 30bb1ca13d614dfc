"""Run records: environment capture, JSON metric files (the source of truth), W&B / CSV loggers."""
