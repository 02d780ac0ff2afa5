"""Secrets resolved on the orchestrator, from a source only it can read.

Open-source Prefect has one API credential: whoever holds it (every build
machine's worker does) can read every block, SecretStr fields included. So a
block can hold a *reference* instead of the secret: the name of an
environment variable of the orchestrator, or the path of a file on it that
only its user can read. The secret is read when it is used, on the
orchestrator, and never stored in Prefect.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from dropship.errors import ConfigError


def resolve_secret(what: str, *, value: str | None, file: str | None, env: str | None) -> str:
    """The secret `what` from exactly one of: an env variable name, a private file, or the value itself."""
    given = [name for name, v in (("value", value), ("file", file), ("env", env)) if v]
    if len(given) > 1:
        raise ConfigError(
            f"{what}: set only one of the secret itself, a file or an environment variable, not {' and '.join(given)}"
        )
    if env:
        secret = os.environ.get(env, "")
        if not secret:
            raise ConfigError(f"{what}: environment variable {env} is empty or unset on this orchestrator: export it")
        return secret
    if file:
        path = Path(file)
        try:
            info = path.stat()
        except OSError as exc:
            raise ConfigError(
                f"{what}: cannot read {path} on this orchestrator ({exc.strerror}): create it, mode 0600"
            ) from exc
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"{what}: {path} is readable by other users (mode {stat.S_IMODE(info.st_mode):o}): chmod 600 it"
            )
        try:
            secret = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{what}: cannot read {path}: {exc}") from exc
        if not secret.strip():
            raise ConfigError(f"{what}: {path} is empty")
        return secret
    if value:
        return value
    raise ConfigError(f"{what}: no secret configured: set a file or an environment variable holding it")
