"""What the tasks and flows need from Prefect's settings and the environment."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL

from dropship.errors import ConfigError
from dropship.machines.userdata import WorkerSpec
from dropship.orchestrator import client_env
from tasks.resources import BUILDERS_POOL


def api_url() -> str:
    url = PREFECT_API_URL.value()
    if not url:
        raise ConfigError(
            "build machines need a Prefect API server to take work from: set PREFECT_API_URL "
            "(or use `dropship demo`, which starts one)"
        )
    return str(url)


def machine_client_env() -> tuple[tuple[str, str], ...]:
    """Prefect client settings for every machine's worker, asked of this process's server once
    (`dropship.orchestrator.client_env` keeps the answer): a request here saves several per target."""
    auth = PREFECT_API_AUTH_STRING.value()  # Prefect's legacy accessor unwraps the SecretStr
    return tuple(sorted(client_env(api_url(), str(auth) if auth else None).items()))


def local_worker(queue: str) -> WorkerSpec:
    """A worker for a local machine: this interpreter, so it has dropship installed."""
    return WorkerSpec(
        api_url=api_url(),
        pool=BUILDERS_POOL,
        queue=queue,
        launcher=[sys.executable, "-m", "tasks.machine_worker"],
        env=dict(machine_client_env()),
    )


def default_workdir() -> Path:
    return Path(os.environ.get("DROPSHIP_HOME", Path.home() / ".local/share/dropship"))
