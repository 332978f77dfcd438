"""Streaming engine: ring buffer -> rolling windows -> quality gate -> model (issue 7)."""
