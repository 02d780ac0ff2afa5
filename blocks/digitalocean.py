"""Credentials and connection settings for DigitalOcean droplets."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from dropship.machines.digitalocean import DigitalOceanSettings
from dropship.secretref import resolve_secret


class DigitalOceanCredentials(Block):
    """The API token and how build droplets are reached and run their worker."""

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
    endpoint: str = Field(default="https://api.digitalocean.com", description="API endpoint; the emulator's URL in tests.")
    ssh_port: int = Field(default=22, description="SSH port of the droplets.")
    ssh_user: str = Field(default="root", description="User the orchestrator logs in as.")
    vpc_uuid: str | None = Field(default=None, description="VPC the droplets join (private networking).")
    private_network: bool = Field(default=True, description="Reach droplets on their private address.")
    api_url: str | None = Field(
        default=None,
        description="Prefect API URL as the droplets reach it (the orchestrator's private address); "
        "defaults to this process's PREFECT_API_URL.",
    )
    ready_timeout: float = Field(default=300.0, description="Seconds a droplet may take to become active.")
    poll_interval: float = Field(default=2.0, description="Seconds between status checks while a droplet boots.")
    worker_command: list[str] = Field(
        default_factory=lambda: ["/opt/dropship/bin/prefect"],
        description="The Prefect CLI on the droplet image (a snapshot with dropship installed).",
    )

    def settings(self) -> DigitalOceanSettings:
        return DigitalOceanSettings(
            token=resolve_secret(
                "DigitalOcean token", value=self.token.get_secret_value() if self.token else None,
                file=self.token_file, env=self.token_env,
            ).strip(),
            endpoint=self.endpoint, ssh_port=self.ssh_port,
            ssh_user=self.ssh_user, vpc_uuid=self.vpc_uuid, private_network=self.private_network,
            ready_timeout=self.ready_timeout, poll_interval=self.poll_interval,
        )
