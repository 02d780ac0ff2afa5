"""Prefect flows: `release` (orchestrator) and `build` (runs on a build machine).

Importing them makes every log line of the process redacted
(`dropship.redaction`): a flow run started by a worker logs no URL password.
"""

from dropship.redaction import redact_logs

redact_logs()
