"""Local machines' workers get the orchestrator's client settings (tasks/settings.py)."""

from __future__ import annotations

from pathlib import Path


def test_a_local_machines_worker_skips_csrf_tokens_the_server_does_not_want(prefect_server: str) -> None:
    from tasks.settings import local_worker, machine_client_env

    assert dict(machine_client_env()) == {"PREFECT_CLIENT_CSRF_SUPPORT_ENABLED": "false"}
    worker = local_worker("q")
    assert worker.env["PREFECT_CLIENT_CSRF_SUPPORT_ENABLED"] == "false"
    assert worker.api_url == prefect_server


def test_the_probe_carries_the_api_auth_string_the_workers_use(tmp_path: Path) -> None:
    """A server that asks for an auth string: the probe sends it (Prefect's accessor hands over a str)."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from dropship.prefect_server import LocalPrefectServer
    from tasks.settings import machine_client_env

    with LocalPrefectServer(tmp_path / "p", extra_env={"PREFECT_SERVER_API_AUTH_STRING": "admin:pw"}) as server:
        with temporary_settings({PREFECT_API_URL: server.api_url, PREFECT_API_AUTH_STRING: "admin:pw"}):
            assert dict(machine_client_env()) == {"PREFECT_CLIENT_CSRF_SUPPORT_ENABLED": "false"}
