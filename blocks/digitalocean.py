"""Credentials and connection settings for DigitalOcean droplets."""

from __future__ import annotations

from urllib.parse import urlparse

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from dropship.errors import ConfigError
from dropship.machines.bootstrap import PYPI
from dropship.machines.digitalocean import DigitalOceanSettings
from dropship.secretref import resolve_secret


def _loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    return host == "localhost" or host.startswith("127.") or host == "::1"


class DigitalOceanCredentials(Block):
    """The API token, how build droplets are reached, and how their worker reaches Prefect."""

    _block_type_name = "dropship digitalocean credentials"
    _block_type_slug = "dropship-digitalocean-credentials"
    _description = "DigitalOcean API token and droplet connection settings for dropship's build machines."

    token_env: str | None = Field(
        default=None, description="Name of an environment variable of the orchestrator holding the API token."
    )
    token_file: str | None = Field(
        default=None, description="Path on the orchestrator of a file (mode 0600) holding the API token."
    )
    token: SecretStr | None = Field(
        default=None,
        description="DigitalOcean API token (read and write). Only when no builder can reach this Prefect server: "
        "anyone with its API credential can read it; prefer token_env or token_file.",
    )
    endpoint: str = Field(
        default="https://api.digitalocean.com", description="API endpoint; the emulator's URL in tests."
    )
    ssh_port: int = Field(default=22, description="SSH port of the droplets.")
    ssh_user: str = Field(default="root", description="User the orchestrator logs in as.")
    vpcs: dict[str, str] = Field(
        default_factory=dict,
        description="Region slug -> VPC uuid the droplets of that region join; a region not named uses the "
        "account's default VPC.",
    )
    private_network: bool = Field(default=True, description="Reach droplets on their private address.")
    ssh_key: str | None = Field(
        default=None,
        description="Name or fingerprint of a long-lived account SSH key to send instead of registering one per run "
        "(its private half must then be the run's client key).",
    )
    worker_api_url: str | None = Field(
        default=None,
        description="Prefect API URL as the droplets reach it (e.g. the orchestrator's private address or name); "
        "defaults to this process's PREFECT_API_URL, refused when that is loopback (a droplet's loopback is its "
        "own, with the emulator too).",
    )
    api_auth_string: SecretStr | None = Field(
        default=None,
        description="PREFECT_API_AUTH_STRING for the workers (a self-hosted server with "
        "PREFECT_SERVER_API_AUTH_STRING); written only to a root-only file on each droplet.",
    )
    api_key: SecretStr | None = Field(
        default=None, description="PREFECT_API_KEY for the workers (Prefect Cloud); written only to a root-only file."
    )
    package_index: str = Field(
        default=PYPI,
        description="Python package index the droplets install dropship's "
        "dependencies from (pinned to the orchestrator's versions); an address the droplets reach, never loopback.",
    )
    ready_timeout: float = Field(default=300.0, description="Seconds a droplet may take to become active.")
    ssh_timeout: float = Field(
        default=300.0, description="Seconds an active droplet may take to answer SSH with its pinned host key."
    )
    poll_interval: float = Field(default=2.0, description="First interval between status checks while droplets boot.")

    def settings(self) -> DigitalOceanSettings:
        return DigitalOceanSettings(
            token=resolve_secret(
                "DigitalOcean token",
                value=self.token.get_secret_value() if self.token else None,
                file=self.token_file,
                env=self.token_env,
            ).strip(),
            endpoint=self.endpoint,
            ssh_port=self.ssh_port,
            ssh_user=self.ssh_user,
            vpcs=dict(self.vpcs),
            private_network=self.private_network,
            ssh_key=self.ssh_key,
            ready_timeout=self.ready_timeout,
            poll_interval=self.poll_interval,
        )

    def worker_url(self, default: str) -> str:
        """The API URL droplets use; never a loopback one (a droplet's loopback is its own, the emulator's too)."""
        url = self.worker_api_url or default
        if _loopback(url):
            raise ConfigError(
                f"droplets cannot reach Prefect at {url} (a loopback address): set worker_api_url in the "
                "DigitalOceanCredentials block to an address the droplets reach"
            )
        return url

    def index_url(self) -> str:
        """The package index droplets install from; never a loopback one (a droplet's loopback is its own)."""
        if _loopback(self.package_index):
            raise ConfigError(
                f"droplets cannot reach the package index at {self.package_index} (a loopback address): set "
                "package_index in the DigitalOceanCredentials block to an index the droplets reach"
            )
        return self.package_index
