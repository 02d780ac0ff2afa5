"""Prefect flows: `release` (orchestrator) and `build` (runs on a build machine)."""
