"""Local machines' workers get the orchestrator's client settings (tasks/settings.py)."""

from __future__ import annotations


def test_a_local_machines_worker_skips_csrf_tokens_the_server_does_not_want(prefect_server: str) -> None:
    from tasks.settings import local_worker, machine_client_env

    assert dict(machine_client_env()) == {"PREFECT_CLIENT_CSRF_SUPPORT_ENABLED": "false"}
    worker = local_worker("q")
    assert worker.env["PREFECT_CLIENT_CSRF_SUPPORT_ENABLED"] == "false"
    assert worker.api_url == prefect_server
