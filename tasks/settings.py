"""Names shared by the tasks and flows, and what they need from Prefect's settings."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from prefect.settings import PREFECT_API_URL

from dropship.errors import ConfigError
from dropship.machines.userdata import WorkerSpec

from deployments import BUILDERS_POOL, MACHINES_LIMIT, PUBLISH_LIMIT  # noqa: F401 - re-exported names

BUILD_FLOW = "build"
BUILD_DEPLOYMENT = f"{BUILD_FLOW}/build"


def api_url() -> str:
    url = PREFECT_API_URL.value()
    if not url:
        raise ConfigError(
            "build machines need a Prefect API server to take work from: set PREFECT_API_URL "
            "(or use `dropship demo`, which starts one)"
        )
    return str(url)


def local_worker(queue: str) -> WorkerSpec:
    """A worker for a local machine: this interpreter, so it has dropship installed."""
    return WorkerSpec(api_url=api_url(), pool=BUILDERS_POOL, queue=queue, prefect=[sys.executable, "-m", "prefect"], env={})


def ensure_concurrency_limit(name: str, limit: int) -> None:
    """Create the global concurrency limit if it is missing (an existing one is left as configured).

    `concurrency(..., strict=True)` refuses to run without the limit, which is
    what we want once it exists: a typo must not silently mean "no lock".
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
            except ObjectAlreadyExists:
                pass  # another release created it meanwhile


def default_workdir() -> Path:
    return Path(os.environ.get("DROPSHIP_HOME", Path.home() / ".local/share/dropship"))
